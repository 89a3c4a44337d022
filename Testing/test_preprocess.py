"""Preprocessing: crop/pad and normalisation invert exactly, resampling keeps values and geometry, masks."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.preprocess import (CropPad, Normalization, air_level, crop_or_pad, foreground_mask, is_magnitude,
                                        mask_image, without_outliers,
                                        reference_grid, resample_to, undo_crop_or_pad)
from MRISynthesisLib.volume import Volume

from conftest import OBLIQUE, ORIGIN, SPACING, make_volume, rotation_matrix

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILL = -7.0

sizes = st.integers(1, 12)
spatial_shapes = st.tuples(sizes, sizes, sizes)
lead_axes = st.one_of(st.just(()), st.tuples(st.integers(1, 3)))


def _distinct(shape) -> np.ndarray:
    """Distinct positive values, so a voxel in the wrong place is noticed."""
    return np.arange(1, int(np.prod(shape)) + 1, dtype=np.float32).reshape(shape)


def _kept_region(spatial, target):
    """Slices of the original array that survive a centre crop (computed here from the spec, not the code)."""
    return tuple(slice((s - t) // 2 if s > t else 0, ((s - t) // 2 if s > t else 0) + min(s, t))
                 for s, t in zip(spatial, target))


def _padded_mask(spatial, target):
    """True where crop_or_pad's output holds padding (extra voxel after the centre on odd differences)."""
    mask = np.ones(target, bool)
    inner = tuple(slice((t - s) // 2 if t > s else 0, ((t - s) // 2 if t > s else 0) + min(s, t))
                  for s, t in zip(spatial, target))
    mask[inner] = False
    return mask


# --------------------------------------------------------------------- crop / pad
@SETTINGS
@given(lead=lead_axes, spatial=spatial_shapes, target=spatial_shapes)
def test_crop_or_pad_then_undo_restores_kept_region(lead, spatial, target):
    x = _distinct(lead + spatial)
    x_copy = x.copy()
    y, record = crop_or_pad(x, target, fill=FILL)
    assert y.shape == lead + target
    assert y.dtype == x.dtype
    assert record == CropPad(spatial, target, record.crop_before, record.pad_before)
    # padding is where the spec says, and holds the fill value
    pad = np.broadcast_to(_padded_mask(spatial, target), y.shape)
    assert np.all(y[pad] == FILL)
    assert not np.any(y[~pad] == FILL)
    back = undo_crop_or_pad(y, record, fill=FILL)
    assert back.shape == x.shape
    kept = np.zeros(spatial, bool)
    kept[_kept_region(spatial, target)] = True
    kept = np.broadcast_to(kept, x.shape)
    np.testing.assert_array_equal(back[kept], x[kept])
    assert np.all(back[~kept] == FILL)
    np.testing.assert_array_equal(x, x_copy)  # input untouched


@SETTINGS
@given(lead=lead_axes, spatial=spatial_shapes, target=spatial_shapes, seed=st.integers(0, 2**16))
def test_crop_or_pad_of_undo_gives_back_model_output(lead, spatial, target, seed):
    _, record = crop_or_pad(np.zeros(lead + spatial, np.float32), target)
    y = np.random.default_rng(seed).normal(size=lead + target).astype(np.float32)
    y_copy = y.copy()
    again, record2 = crop_or_pad(undo_crop_or_pad(y, record, fill=FILL), target, fill=FILL)
    assert record2 == record
    pad = np.broadcast_to(_padded_mask(spatial, target), y.shape)
    # every voxel that maps to the original grid comes back bit for bit; padding voxels have no
    # place on the original grid, so they come back as the fill value
    np.testing.assert_array_equal(again[~pad], y[~pad])
    assert np.all(again[pad] == FILL)
    if not pad.any():
        np.testing.assert_array_equal(again, y)
    np.testing.assert_array_equal(y, y_copy)


@SETTINGS
@given(lead=lead_axes, spatial=spatial_shapes, extra=st.tuples(*[st.integers(0, 5)] * 3),
       dtype=st.sampled_from([np.float32, np.float64, np.int16]))
def test_pure_padding_round_trip_is_exact(lead, spatial, extra, dtype):
    x = _distinct(lead + spatial).astype(dtype)
    target = tuple(s + e for s, e in zip(spatial, extra))
    y, record = crop_or_pad(x, target, fill=0)
    assert record.crop_before == (0, 0, 0)
    assert record.pad_before == tuple(e // 2 for e in extra)
    back = undo_crop_or_pad(y, record)
    assert back.dtype == x.dtype
    np.testing.assert_array_equal(back, x)


def test_crop_or_pad_odd_difference_puts_extra_voxel_after_centre():
    y, record = crop_or_pad(np.arange(1, 6, dtype=float)[None, None, :], (1, 1, 8))
    np.testing.assert_array_equal(y[0, 0], [0, 1, 2, 3, 4, 5, 0, 0])
    assert record.pad_before == (0, 0, 1)
    y, record = crop_or_pad(np.arange(1, 9, dtype=float)[None, None, :], (1, 1, 5))
    np.testing.assert_array_equal(y[0, 0], [2, 3, 4, 5, 6])
    assert record.crop_before == (0, 0, 1)


def test_crop_or_pad_output_does_not_alias_input():
    x = _distinct((4, 5, 6))
    y, _ = crop_or_pad(x, (4, 5, 6))
    y[...] = 0
    np.testing.assert_array_equal(x, _distinct((4, 5, 6)))


def test_crop_or_pad_errors():
    x = np.zeros((4, 5, 6))
    with pytest.raises(InputError, match="more axes"):
        crop_or_pad(x, (1, 4, 5, 6))
    with pytest.raises(InputError, match="positive"):
        crop_or_pad(x, (4, 0, 6))
    _, record = crop_or_pad(x, (8, 8, 8))
    with pytest.raises(InputError, match="recorded size"):
        undo_crop_or_pad(np.zeros((8, 8, 7)), record)


# --------------------------------------------------------------------- normalisation
shapes_for_norm = st.tuples(st.integers(2, 8), st.integers(2, 8), st.integers(2, 8))


def _intensity_arrays():
    """Scanner-like intensities: 0..4000 in steps of 0.01 (no subnormal ranges that overflow float32)."""
    return hnp.arrays(np.float32, shapes_for_norm, elements=st.integers(0, 400_000).map(lambda v: v / 100))


def _assert_inverts(norm: Normalization, x: np.ndarray, where=None):
    back = norm.invert(norm.apply(x))
    assert back.dtype == np.float32
    where = np.ones(x.shape, bool) if where is None else where
    atol = 1e-5 * max(float(np.abs(x).max()), 1.0)
    np.testing.assert_allclose(back[where], x[where], rtol=1e-5, atol=atol)


@SETTINGS
@given(x=_intensity_arrays())
def test_zscore_without_clip_inverts(x):
    if np.ptp(x) == 0:
        with pytest.raises(InputError, match="no intensity variation"):
            Normalization.zscore(x, clip=False)
        return
    x_copy = x.copy()
    norm = Normalization.zscore(x, clip=False)
    assert norm.kind == "zscore" and norm.low is None and norm.high is None
    _assert_inverts(norm, x)
    np.testing.assert_array_equal(x, x_copy)


@SETTINGS
@given(x=_intensity_arrays(), lower=st.floats(0, 10), upper=st.floats(90, 100), factor=st.sampled_from([1.0, 2.0]))
def test_percentile_without_clip_inverts(x, lower, upper, factor):
    lo, hi = np.percentile(x, [lower, upper])
    if hi * factor <= lo:
        with pytest.raises(InputError, match="no intensity range"):
            Normalization.percentile(x, lower=lower, upper=upper, upper_factor=factor, clip=False)
        return
    x_copy = x.copy()
    norm = Normalization.percentile(x, lower=lower, upper=upper, upper_factor=factor, clip=False)
    _assert_inverts(norm, x)
    np.testing.assert_array_equal(x, x_copy)


@SETTINGS
@given(x=_intensity_arrays(), kind=st.sampled_from(["zscore", "percentile"]), cutoff=st.floats(0.5, 5))
def test_clipped_normalisation_is_bounded_and_inverts_unclipped_voxels(x, kind, cutoff):
    if kind == "zscore":
        if np.ptp(x) == 0:
            return
        norm = Normalization.zscore(x, cutoff=cutoff)
    else:
        lo, hi = np.percentile(x, [5, 95])
        if hi <= lo:
            return
        norm = Normalization.percentile(x, lower=5, upper=95)
    assert (norm.low, norm.high) == (-1.0, 1.0)
    y = norm.apply(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.min() >= -1.0 and y.max() <= 1.0
    unclipped = np.abs((x.astype(np.float64) - norm.offset) / norm.scale) < 1 - 1e-6
    _assert_inverts(norm, x, unclipped)
    clipped_high = (x.astype(np.float64) - norm.offset) / norm.scale > 1
    assert np.all(y[clipped_high] == 1.0)


def test_clipping_happens_on_outliers():
    x = np.linspace(0, 1000, 6 * 7 * 8).reshape(6, 7, 8)
    x[0, 0, 0] = 1e6
    norm = Normalization.percentile(x, lower=0.5, upper=99.5)
    y = norm.apply(x)
    assert y[0, 0, 0] == 1.0
    assert norm.invert(y)[0, 0, 0] < 1e5  # clipped: the outlier cannot come back
    unclipped = Normalization.percentile(x, lower=0.5, upper=99.5, clip=False)
    assert unclipped.apply(x)[0, 0, 0] > 1.0


def test_seq2seq_percentile_convention():
    x = np.linspace(0, 1000, 6 * 7 * 8).reshape(6, 7, 8)
    norm = Normalization.percentile(x, lower=0, upper=99, upper_factor=2)
    p99 = np.percentile(x, 99)
    np.testing.assert_allclose(norm.apply(np.array([0.0, p99, 2 * p99])), [-1.0, 0.0, 1.0], atol=1e-6)
    brasyn = Normalization.percentile(x, out_range=(0.0, 1.0))
    lo, hi = np.percentile(x, [0.5, 99.5])
    np.testing.assert_allclose(brasyn.apply(np.array([lo, hi])), [0.0, 1.0], atol=1e-6)


def test_zscore_uses_foreground_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 5, (6, 7, 8))
    mask = np.zeros(x.shape, bool)
    mask[1:5, 1:6, 1:7] = True
    x[mask] = rng.normal(1000, 100, int(mask.sum()))
    norm = Normalization.zscore(x, mask, cutoff=4, clip=False)
    y = norm.apply(x)[mask].astype(np.float64)
    assert abs(y.mean()) < 1e-5
    assert y.std() == pytest.approx(0.25, rel=1e-4)
    assert norm.to_dict() == {"kind": "zscore", "offset": norm.offset, "scale": norm.scale, "low": None, "high": None}


@pytest.mark.parametrize("sign", [1, -1])
def test_one_corrupt_voxel_moves_neither_the_mask_nor_the_normalisation(sign):
    """Mean, SD and histogram thresholds are measured without spikes; images without any are measured
    as they are (the very same values)."""
    from MRISynthesisLib.phantom.brain import sample_brain

    t2 = sample_brain(3, resolution=4.0).sequences["T2"].array
    values = t2.ravel()
    assert without_outliers(values) is values
    corrupt = t2.copy()
    corrupt[tuple(n // 2 for n in t2.shape)] = sign * 1000 * np.percentile(t2, 99)
    clean_mask, mask = foreground_mask(t2), foreground_mask(corrupt)
    assert (clean_mask != mask).sum() <= 1
    clean, spiked = Normalization.zscore(t2, clean_mask), Normalization.zscore(corrupt, clean_mask)
    assert spiked.offset == pytest.approx(clean.offset, rel=0.01)
    assert spiked.scale == pytest.approx(clean.scale, rel=0.01)
    assert without_outliers(np.array([0.0, 1.0] * 50 + [1e9, -1e9])).tolist() == [0.0, 1.0] * 50


@pytest.mark.parametrize("build", [
    lambda x, m: Normalization.zscore(np.full_like(x, 3.0)),
    lambda x, m: Normalization.percentile(np.full_like(x, 3.0)),
    lambda x, m: Normalization.zscore(x, np.zeros_like(m)),
    lambda x, m: Normalization.percentile(x, np.zeros_like(m)),
    lambda x, m: Normalization.zscore(x, m[:-1]),
    lambda x, m: Normalization.zscore(np.where(m, np.nan, x)),
    lambda x, m: Normalization.percentile(np.where(m, np.nan, x)),
    lambda x, m: Normalization.zscore(np.where(m, np.inf, x)),
    lambda x, m: Normalization.zscore(x, cutoff=0),
    lambda x, m: Normalization.percentile(x, lower=50, upper=10),
    lambda x, m: Normalization.percentile(x, lower=0, upper=101),
])
def test_normalisation_errors(build):
    x = np.random.default_rng(1).uniform(0, 100, (4, 5, 6))
    m = np.zeros(x.shape, bool)
    m[1, 1, 1] = True
    with pytest.raises(InputError):
        build(x, m)


@pytest.mark.parametrize("build, message", [
    (lambda x: Normalization.zscore(np.ones_like(x)), "no intensity variation"),
    # float32 constants: their float32 SD is not exactly 0
    (lambda x: Normalization.zscore(np.full((6, 7, 8), 1234.567, np.float32)), "no intensity variation"),
    (lambda x: Normalization.zscore(Volume(np.full((3, 3, 3), 2427.2852)).array), "no intensity variation"),
    (lambda x: Normalization.percentile(np.full((6, 7, 8), 1234.567, np.float32)), "no intensity range"),
    (lambda x: Normalization.zscore(x, np.zeros(x.shape, bool)), "mask is empty"),
    (lambda x: Normalization.zscore(np.full_like(x, np.nan)), "NaN"),
])
def test_normalisation_error_messages(build, message):
    with pytest.raises(InputError, match=message):
        build(np.arange(24.0).reshape(2, 3, 4))


# --------------------------------------------------------------------- resampling
def test_resample_identity_on_same_grid(oblique_volume):
    before = oblique_volume.array.copy()
    for interpolation in ("linear", "nearest", "bspline"):
        out = resample_to(oblique_volume, oblique_volume, interpolation=interpolation)
        assert out.shape == oblique_volume.shape
        assert out.spacing == oblique_volume.spacing and out.origin == oblique_volume.origin
        assert out.direction == oblique_volume.direction
        np.testing.assert_allclose(out.array, oblique_volume.array, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(oblique_volume.array, before)


def test_resample_onto_exactly_its_own_grid_returns_the_volume_itself_without_a_copy(oblique_volume):
    """A 512 x 512 x 300 input already on the reference grid costs no 300 MiB copies (Volumes are immutable)."""
    assert resample_to(oblique_volume, oblique_volume) is oblique_volume
    nudged = Volume(np.zeros(oblique_volume.shape), oblique_volume.spacing,
                    tuple(np.add(oblique_volume.origin, (1e-4, 0.0, 0.0))), oblique_volume.direction)
    out = resample_to(oblique_volume, nudged)  # not exactly the grid: resampled, on the reference's geometry
    assert out is not oblique_volume and out.origin == nudged.origin
    inner = (slice(1, -1),) * 3  # the outermost voxels' centres may fall just outside the field of view
    np.testing.assert_allclose(out.array[inner], oblique_volume.array[inner], rtol=0, atol=1.0)  # values ~100-1000
    shifted = resample_to(oblique_volume, oblique_volume, transform=sitk.TranslationTransform(3, (0.5, 0.0, 0.0)))
    assert shifted is not oblique_volume and not np.allclose(shifted.array, oblique_volume.array)


@pytest.mark.parametrize("interpolation", ["linear", "nearest", "bspline"])
def test_resampling_in_slabs_gives_the_whole_volume_result(oblique_volume, interpolation, monkeypatch):
    """Large outputs are filled a few slices at a time; the values must not depend on the slab size."""
    from MRISynthesisLib import preprocess

    series = Volume(np.stack([oblique_volume.array, 2 * oblique_volume.array]), oblique_volume.spacing,
                    oblique_volume.origin, oblique_volume.direction)
    ref = reference_grid((0.6, 0.7, 0.8), (11, 9, 13), origin=(ORIGIN[0] + 0.3, ORIGIN[1] - 0.2, ORIGIN[2] + 0.4),
                         direction=tuple(rotation_matrix((1.0, 0.0, 1.0), 20.0).ravel()))
    motion = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.05, -0.03, 0.02, (0.4, -0.3, 0.2))
    whole = [resample_to(v, ref, interpolation=interpolation, transform=motion) for v in (oblique_volume, series)]
    monkeypatch.setattr(preprocess, "SLAB_VOXELS", 2 * 11 * 9)  # two slices per slab, the last one alone
    slabs = [resample_to(v, ref, interpolation=interpolation, transform=motion) for v in (oblique_volume, series)]
    for a, b in zip(whole, slabs):
        assert a.shape == b.shape and a.origin == b.origin == ref.origin
        np.testing.assert_allclose(b.array, a.array, rtol=1e-6, atol=1e-4)
    assert np.ptp(whole[0].array) > 0


def test_resample_nearest_keeps_label_values():
    rng = np.random.default_rng(2)
    labels = rng.choice([0, 1, 2, 5], size=(6, 7, 8)).astype(np.float32)
    vol = Volume(labels, SPACING, ORIGIN, OBLIQUE)
    ref = reference_grid((0.7, 0.7, 0.9), (9, 10, 17), origin=(ORIGIN[0] + 0.3, ORIGIN[1] - 0.2, ORIGIN[2] + 0.4),
                         direction=tuple(rotation_matrix((0.0, 1.0, 1.0), 33.0).ravel()))
    out = resample_to(vol, ref, interpolation="nearest")
    assert out.spatial_shape == (17, 10, 9)
    values = set(np.unique(out.array).tolist())
    assert values <= {0.0, 1.0, 2.0, 5.0}
    assert len(values) >= 3  # the grids overlap: real labels were sampled
    linear = resample_to(vol, ref, interpolation="linear")
    assert not set(np.unique(linear.array).tolist()) <= {0.0, 1.0, 2.0, 5.0}  # what nearest avoids


def test_resample_series_frame_by_frame():
    frames = [{"t": 0}, {"t": 60}, {"t": 120}]
    series = make_volume((3, 6, 7, 8), seed=3, frames=frames)
    ref = reference_grid((1.0, 1.0, 1.5), (5, 6, 7), origin=ORIGIN, direction=OBLIQUE)
    out = resample_to(series, ref)
    assert out.is_series and out.shape == (3, 7, 6, 5)
    assert [dict(f) for f in out.frames] == frames
    assert out.spacing == ref.spacing and out.direction == ref.direction
    for i in range(3):
        np.testing.assert_array_equal(out.array[i], resample_to(series.frame(i), ref).array)
    assert not np.allclose(out.array[0], out.array[1])


def test_resample_onto_a_series_reference_uses_its_grid():
    vol = make_volume((6, 7, 8), seed=4)
    ref_series = make_volume((2, 6, 7, 8), seed=5)
    out = resample_to(vol, ref_series)
    assert out.shape == (6, 7, 8)
    np.testing.assert_allclose(out.array, vol.array, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shift_xyz", [(2, 1, 0), (0, 0, 1), (1, 2, 3)])
def test_resample_integer_translation_shifts_array(oblique_volume, shift_xyz):
    vol = oblique_volume
    offset = vol.direction_matrix @ (np.array(SPACING) * np.array(shift_xyz))
    ref = Volume(np.zeros(vol.shape), vol.spacing, tuple(np.array(vol.origin) + offset), vol.direction)
    out = resample_to(vol, ref, default_value=-1.0).array
    dx, dy, dz = shift_xyz
    z, y, x = vol.shape
    np.testing.assert_allclose(out[: z - dz, : y - dy, : x - dx], vol.array[dz:, dy:, dx:], rtol=1e-5, atol=1e-3)
    outside = np.ones(vol.shape, bool)
    outside[: z - dz, : y - dy, : x - dx] = False
    assert outside.any() and np.all(out[outside] == -1.0)
    # the same shift expressed as a transform from the reference to the volume's space
    moved = resample_to(vol, vol, transform=sitk.TranslationTransform(3, tuple(offset)), default_value=-1.0)
    np.testing.assert_allclose(moved.array, out, rtol=1e-5, atol=1e-3)


def test_resample_unknown_interpolation(oblique_volume):
    with pytest.raises(InputError, match="unknown interpolation 'cubic'"):
        resample_to(oblique_volume, oblique_volume, interpolation="cubic")


def test_reference_grid():
    grid = reference_grid((1.0, 2.0, 3.0), (4, 5, 6), origin=(1, 2, 3))
    assert grid.shape == (6, 5, 4) and grid.size_xyz == (4, 5, 6)
    assert grid.spacing == (1.0, 2.0, 3.0) and grid.origin == (1.0, 2.0, 3.0)


# --------------------------------------------------------------------- foreground
def _sphere_phantom(seed=0, n=24, radius=7.0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:n, :n, :n]
    c = (n - 1) / 2
    sphere = (zz - c) ** 2 + (yy - c) ** 2 + (xx - c) ** 2 <= radius**2
    image = np.where(sphere, 1000.0, 100.0) + rng.normal(0, 60, sphere.shape)
    return image.astype(np.float32), sphere


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_foreground_mask_finds_bright_sphere():
    image, sphere = _sphere_phantom()
    before = image.copy()
    mask = foreground_mask(image)
    assert mask.dtype == bool and mask.shape == image.shape
    assert _dice(mask, sphere) > 0.95
    np.testing.assert_array_equal(image, before)
    vol_mask = foreground_mask(Volume(image, SPACING, ORIGIN, OBLIQUE))
    np.testing.assert_array_equal(vol_mask, mask)


def test_foreground_mask_keeps_largest_component_and_fills_holes():
    image, sphere = _sphere_phantom(seed=1)
    image[1:3, 1:3, 1:3] = 1000.0  # a small bright speck away from the sphere
    c = 12
    image[c - 1:c + 1, c - 1:c + 1, c - 1:c + 1] = 100.0  # a dark hole inside it
    mask = foreground_mask(image)
    assert not mask[1:3, 1:3, 1:3].any()
    assert mask[c - 1:c + 1, c - 1:c + 1, c - 1:c + 1].all()
    raw = foreground_mask(image, fill_holes=False, largest_component=False)
    assert raw[1:3, 1:3, 1:3].all()
    assert not raw[c - 1:c + 1, c - 1:c + 1, c - 1:c + 1].any()


def test_foreground_mask_of_series_uses_mean():
    image, sphere = _sphere_phantom(seed=2)
    series = Volume(np.stack([image, image * 0.5]))
    assert _dice(foreground_mask(series), sphere) > 0.95


def test_body_mask_keeps_dark_tissue_that_otsu_drops():
    """Air, dark tissue (fat-suppressed breast) and a small bright organ: the body is the two tissues."""
    rng = np.random.default_rng(3)
    zz, yy, xx = np.mgrid[:32, :48, :48]
    body = (yy - 24) ** 2 + (xx - 24) ** 2 <= 20**2
    organ = body & ((yy - 24) ** 2 + (xx - 24) ** 2 <= 8**2)
    image = np.where(organ, 900.0, np.where(body, 180.0, 0.0)) + np.abs(rng.normal(0, 15, body.shape))
    assert _dice(foreground_mask(image), body) > 0.97
    assert _dice(foreground_mask(image, method="otsu"), body) < 0.5  # Otsu splits tissue from tissue
    with pytest.raises(InputError, match="unknown foreground method 'air'"):
        foreground_mask(image, method="air")


def test_body_masks_of_breast_t1_and_t2_agree():
    """The failure that made breast subjects unscorable: T1 and T2 masks of one subject must overlap."""
    from MRISynthesisLib import phantom
    from MRISynthesisLib.training.data import aligned_sequences

    subject = phantom.sample("breast", 8, resolution=3.0)
    aligned = aligned_sequences(subject, ("T1", "T2"))
    truth = sum(f.array for f in subject.fractions.values()) > 0.5
    t1, t2 = foreground_mask(aligned["T1"]), foreground_mask(aligned["T2"])
    assert _dice(t1, t2) > 0.85 and _dice(t2, truth) > 0.85


@pytest.mark.parametrize("value, message", [(None, "constant"), (np.nan, "NaN"), (np.inf, "Inf")])
def test_foreground_mask_errors(value, message):
    array = np.full((6, 7, 8), 5.0, np.float32)
    if value is not None:
        array[2:4, 2:4, 2:4] = 100.0
        array[1, 2, 3] = value
    with pytest.raises(InputError, match=message):
        foreground_mask(array)
    with pytest.raises(InputError, match=message):
        foreground_mask(Volume(array))


def test_the_foreground_of_a_shifted_or_z_scored_image_is_the_magnitudes_one():
    """Negative voxels mean a normalised or shifted image, whose air is not its darkest level."""
    from MRISynthesisLib.phantom.brain import sample_brain

    t1 = sample_brain(4, resolution=4.0).sequences["T1"].array
    body = foreground_mask(t1)
    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice(foreground_mask(t1 - 5000.0), body) > 0.99  # the air's noise sits on both sides of its median
    tissue = t1[body]
    z_scored = np.where(body, (t1 - tissue.mean()) / tissue.std(), 0.0)
    assert (z_scored[body] < 0).mean() > 0.3  # a good part of the head lies below the air's 0
    assert dice(foreground_mask(z_scored), body) > 0.99


def test_a_few_negative_voxels_from_interpolation_do_not_unmake_the_foreground():
    """Another tool's B-spline or sinc resampling leaves a few slightly negative voxels at sharp edges of a
    magnitude image: still a magnitude image, its air still the darkest level (in a slab of a few slices,
    whose top and bottom faces are mostly head, taking it for a z-scored image lost the whole head)."""
    from MRISynthesisLib.phantom.brain import sample_brain

    t1 = sample_brain(4, resolution=4.0).sequences["T1"].array
    body = foreground_mask(t1)
    middle = t1.shape[0] // 2
    slab, slab_body = t1[middle - 3:middle + 3], body[middle - 3:middle + 3]
    undershoot = slab.copy()
    undershoot.flat[np.flatnonzero(slab_body)[::997]] = -0.05 * float(slab.max())
    assert is_magnitude(undershoot) and not is_magnitude(slab - 5000.0)
    mask = foreground_mask(undershoot)
    assert 2 * (mask & slab_body).sum() / (mask.sum() + slab_body.sum()) > 0.97


def test_the_air_of_a_slab_is_found_where_the_slab_is_uniform():
    """A slab of a few slices whose top and bottom faces cut through the head: air is the level of the
    uniform side faces, not the median of faces that are mostly tissue."""
    from MRISynthesisLib.phantom.brain import sample_brain

    t1 = sample_brain(4, resolution=4.0).sequences["T1"].array
    body = foreground_mask(t1)
    middle = t1.shape[0] // 2
    slab, slab_body = t1[middle - 3:middle + 3], body[middle - 3:middle + 3]
    tissue = slab[slab_body]
    z_scored = (slab - tissue.mean()) / tissue.std()  # over the whole slab, air below 0
    assert air_level(z_scored) == pytest.approx(float(np.median(z_scored[:, :, 0])), abs=0.05)
    mask = foreground_mask(z_scored)
    assert 2 * (mask & slab_body).sum() / (mask.sum() + slab_body.sum()) > 0.97




@pytest.mark.parametrize("method", ["otsu", "body"])
@pytest.mark.parametrize("scale", [1e-30, 1e12])
def test_the_foreground_is_the_same_at_any_intensity_scale(method, scale):
    """Otsu's float32 moments overflow near 1e12 and underflow near 1e-30: the mask must not change."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:32, :32, :32]
    head = ((z - 16) ** 2 + (y - 16) ** 2 + (x - 16) ** 2) < 12 ** 2
    image = np.where(head, 1000.0 + 300.0 * (x > 16), 20.0) + rng.normal(0, 10, head.shape)
    image = np.abs(image).astype(np.float32)
    expected = foreground_mask(image, method=method)
    np.testing.assert_array_equal(foreground_mask((image * np.float32(scale)).astype(np.float32), method=method),
                                  expected)


def test_the_mask_of_several_sequences_does_not_depend_on_the_scale_each_was_stored_at():
    """A plain mean let the brightest-stored sequence decide the mask: a T2 stored ten times brighter moved
    it (and the normalisation measured in it). On one scale, every sequence counts alike at any scale."""
    from MRISynthesisLib.phantom.brain import sample_brain
    from MRISynthesisLib.training.data import aligned_sequences

    aligned = {k: v.array for k, v in aligned_sequences(sample_brain(5, resolution=4.0), ("T1", "T2", "FLAIR")).items()}
    before = {k: v.copy() for k, v in aligned.items()}
    for method in ("body", "otsu"):
        expected = foreground_mask(mask_image(list(aligned.values())), method=method)
        for factor in (10.0, 0.01):
            rescaled = {**aligned, "T2": aligned["T2"] * np.float32(factor)}
            np.testing.assert_allclose(mask_image(list(rescaled.values())), mask_image(list(aligned.values())),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(foreground_mask(mask_image(list(rescaled.values())), method=method),
                                          expected)
        tissue = aligned["FLAIR"][expected]
        z_scored = {**aligned, "FLAIR": (aligned["FLAIR"] - tissue.mean()) / tissue.std()}  # air below 0
        mask = foreground_mask(mask_image(list(z_scored.values())), method=method)
        assert _dice(mask, expected) > 0.98
    for k in aligned:
        np.testing.assert_array_equal(aligned[k], before[k])
    series = np.stack([aligned["T1"], 2 * aligned["T1"]])  # a series counts by its mean over time
    np.testing.assert_allclose(mask_image([series, aligned["T2"]]), mask_image([aligned["T1"], aligned["T2"]]),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="NaN"):
        mask_image([aligned["T1"], np.full_like(aligned["T2"], np.nan)])


def test_a_one_slice_slab_among_whole_head_sequences_does_not_turn_its_air_into_body():
    """A slab's scale is taken within its field of view: over the whole grid, the zeros filled in around one
    slice put its 99th percentile in the air's noise, and that slice's air was counted as body."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:48, :48, :48]
    head = ((z - 24) ** 2 / 21 ** 2 + (y - 24) ** 2 / 18 ** 2 + (x - 24) ** 2 / 15 ** 2) < 1

    def acquired(level: float) -> np.ndarray:
        return np.abs(np.where(head, level, 0) + rng.normal(0, level / 30, head.shape)).astype(np.float32)
    inside = np.zeros(head.shape, bool)
    inside[24] = True
    slab = np.where(inside, acquired(500.0), 0.0).astype(np.float32)
    mask = foreground_mask(mask_image([acquired(1000.0), acquired(300.0), slab], [None, None, inside]))
    assert (mask & ~head).sum() < 10 and _dice(mask, head) > 0.99
