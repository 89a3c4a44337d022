"""Maps: IMPORTANT-Net's error map (values, clipping, default scale, geometry) and its colours, Seq2Seq's
imaging-differentiation map, and the comparison PNG."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.image import imread

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.maps import differentiation_map, error_map, error_rgb, write_comparison_png
from MRISynthesisLib.volume import Volume

from conftest import make_volume, sha256

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _same_grid(a: Volume, b: Volume) -> bool:
    return a.spacing == b.spacing and a.origin == b.origin and a.direction == b.direction and a.shape == b.shape


# --------------------------------------------------------------------- error map
def test_error_map_is_the_clipped_absolute_error_on_the_real_grid():
    real = make_volume((5, 6, 7), seed=1)
    synth = make_volume((5, 6, 7), seed=2)
    result = error_map(real, synth, max_error=300.0)
    expected = np.clip(np.abs(real.array.astype(float) - synth.array), 0, 300.0)
    assert result.max_error == 300.0
    assert _same_grid(result.volume, real)
    np.testing.assert_allclose(result.volume.array, expected, rtol=1e-6)
    assert result.volume.array.max() == pytest.approx(300.0)  # errors above max are clipped, not dropped
    assert (np.abs(real.array - synth.array) > 300).any()


def test_error_map_default_scale_is_the_99th_percentile_inside_the_mask():
    real = make_volume((5, 6, 7), seed=3)
    synth = make_volume((5, 6, 7), seed=4)
    mask = np.zeros(real.shape, bool)
    mask[1:4, 2:5, 1:6] = True
    error = np.abs(real.array.astype(float) - synth.array)
    result = error_map(real, synth, mask=mask)
    assert result.max_error == pytest.approx(np.percentile(error[mask], 99))
    # the mask only sets the scale: voxels outside it keep their error
    assert result.volume.array[~mask].max() > 0


def test_error_map_of_identical_volumes_is_zero_with_a_valid_scale():
    real = make_volume((5, 6, 7), seed=5)
    result = error_map(real, real)
    assert result.max_error > 0 and not result.volume.array.any()


def test_error_map_errors():
    real = make_volume((5, 6, 7))
    with pytest.raises(InputError, match=re.escape("real and synth differ in shape: (5, 6, 7) vs (5, 6, 8)")):
        error_map(real, make_volume((5, 6, 8)))
    with pytest.raises(InputError, match="`max_error` must be positive"):
        error_map(real, real, max_error=0)


def test_error_rgb_goes_from_blue_to_red_and_clips():
    rgb = error_rgb(np.array([[0.0, 50.0, 100.0, 250.0]]), 100.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    zero, middle, top, above = (rgb[0, i].astype(int) for i in range(4))
    assert zero[2] > 100 and zero[0] < 30 and zero[1] < 30  # blue
    assert top[0] > 100 and top[2] < 30 and top[1] < 30  # red
    assert middle[1] > 200  # jet's green in the middle
    assert np.array_equal(top, above)
    with pytest.raises(InputError, match="NaN"):
        error_rgb(np.array([[np.nan]]), 1.0)


# --------------------------------------------------------------------- differentiation map
def test_differentiation_map_is_the_mean_absolute_error_over_sources():
    real = make_volume((4, 5, 6), seed=10)
    predictions = {"T1": make_volume((4, 5, 6), seed=11), "T2": make_volume((4, 5, 6), seed=12),
                   "FLAIR": make_volume((4, 5, 6), seed=13)}
    result = differentiation_map(predictions, real, target="T1ce")
    expected = np.mean([np.abs(p.array.astype(float) - real.array) for p in predictions.values()], axis=0)
    np.testing.assert_allclose(result.array, expected, rtol=1e-6)
    assert _same_grid(result, real)
    one = differentiation_map({"T2": predictions["T2"]}, real)
    np.testing.assert_allclose(one.array, np.abs(predictions["T2"].array - real.array), rtol=1e-6)


def test_differentiation_map_errors():
    real = make_volume((4, 5, 6))
    with pytest.raises(InputError, match="at least one prediction"):
        differentiation_map({}, real)
    with pytest.raises(InputError, match=re.escape("real and prediction from T2 differ in shape: (4, 5, 6) vs (4, 5, 7)")):
        differentiation_map({"T1": make_volume((4, 5, 6)), "T2": make_volume((4, 5, 7))}, real)
    with pytest.raises(InputError, match="target 'T1ce' itself"):
        differentiation_map({"T1ce": real}, real, target="T1ce")


# --------------------------------------------------------------------- comparison PNG
def test_comparison_png_is_written(tmp_path):
    real = make_volume((5, 40, 36), seed=20)
    synth = real.with_array(real.array * 0.9)
    inputs = {"T1": make_volume((5, 40, 36), seed=21), "T2": make_volume((5, 40, 36), seed=22)}
    path = write_comparison_png(inputs, real, synth, tmp_path / "compare.png", title="case 1")
    assert path == tmp_path / "compare.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape[1] > 3 * image.shape[0]  # one row of 5 panels
    assert not list(tmp_path.glob(".partial-*"))
    again = write_comparison_png({}, real, synth, tmp_path / "slice0.png", error=error_map(real, synth), slice_index=0)
    assert again.read_bytes()[:8] == PNG_SIGNATURE


def test_comparison_png_errors_and_never_overwrites_an_input(tmp_path):
    real = make_volume((5, 40, 36), seed=20)
    with pytest.raises(InputError, match="slice_index 5 is outside"):
        write_comparison_png({}, real, real, tmp_path / "a.png", slice_index=5)
    with pytest.raises(InputError, match="output folder does not exist"):
        write_comparison_png({}, real, real, tmp_path / "missing" / "a.png")
    with pytest.raises(InputError, match=re.escape("input T1 differ in shape")):
        write_comparison_png({"T1": make_volume((5, 40, 35))}, real, real, tmp_path / "a.png")
    source = tmp_path / "t1.nii.gz"
    source.write_bytes(b"not really an image")
    before = sha256(source)
    with pytest.raises(InputError, match="overwrite an input"):
        write_comparison_png({}, real, real, source, protect=[source])
    assert sha256(source) == before


def _stored_sagittally(volume: Volume) -> Volume:
    """The same voxels at the same places, stored with the left-right axis first and the anterior-posterior
    one flipped, as a sagittal 3D acquisition's file holds them."""
    import SimpleITK as sitk

    image = sitk.PermuteAxes(volume.to_sitk(), [2, 0, 1])
    return Volume.from_sitk(sitk.Flip(image, [False, True, False]))


def test_upright_gives_axial_slices_of_a_file_stored_in_any_plane():
    from MRISynthesisLib.volume import upright

    rng = np.random.default_rng(3)
    axial = Volume(rng.uniform(0, 1, (6, 20, 16)).astype(np.float32), (0.9, 1.1, 3.0), (10.0, -5.0, 2.0))
    sagittal = _stored_sagittally(axial)
    assert sagittal.shape != axial.shape and not np.allclose(sagittal.direction_matrix, np.eye(3))
    back = upright(sagittal)
    np.testing.assert_array_equal(back.array, axial.array)
    np.testing.assert_allclose(back.spacing, axial.spacing)
    np.testing.assert_allclose(back.origin, axial.origin, atol=1e-6)
    np.testing.assert_allclose(back.direction_matrix, np.eye(3), atol=1e-9)
    assert upright(axial) is axial


def test_the_comparison_png_shows_axial_slices_whatever_plane_the_files_were_stored_in(tmp_path):
    rng = np.random.default_rng(4)
    real = Volume(rng.uniform(0, 1, (6, 40, 36)).astype(np.float32), (1.0, 1.0, 2.0))
    synth = real.with_array(real.array * 0.8)
    axial = imread(write_comparison_png({"T1": real}, real, synth, tmp_path / "axial.png"))
    turned = {name: _stored_sagittally(v) for name, v in (("real", real), ("synth", synth))}
    stored = imread(write_comparison_png({"T1": turned["real"]}, turned["real"], turned["synth"],
                                         tmp_path / "sagittal.png"))
    np.testing.assert_array_equal(stored, axial)


def test_figures_count_an_explicit_slice_from_the_inferior_end_whatever_the_storage(tmp_path):
    """The same slice index shows the same axial slice for a file stored axially and one stored sagittally,
    in the comparison PNG and in the heatmap, and a bare array beside a real Volume turns with it."""
    from MRISynthesisLib.maps import write_heatmap_png

    rng = np.random.default_rng(5)
    real = Volume(rng.uniform(0, 1, (6, 40, 36)).astype(np.float32), (1.0, 1.0, 2.0))
    heat = real.with_array(rng.uniform(0, 1, real.shape).astype(np.float32))
    turned_real, turned_heat = _stored_sagittally(real), _stored_sagittally(heat)
    a = imread(write_comparison_png({}, real, real.array * 0.5, tmp_path / "a.png", slice_index=4))
    b = imread(write_comparison_png({}, turned_real, turned_real.array * 0.5, tmp_path / "b.png", slice_index=4))
    np.testing.assert_array_equal(a, b)
    c = imread(write_heatmap_png(real.array, heat.array, tmp_path / "c.png", slice_index=4, spacing=real.spacing,
                                 direction=real.direction))
    d = imread(write_heatmap_png(turned_real.array, turned_heat.array, tmp_path / "d.png", slice_index=4,
                                 spacing=turned_real.spacing, direction=turned_real.direction))
    np.testing.assert_array_equal(c, d)
    other = imread(write_heatmap_png(real.array, heat.array, tmp_path / "e.png", slice_index=1, spacing=real.spacing,
                                     direction=real.direction))
    assert not np.array_equal(c, other)  # the index does choose the slice
