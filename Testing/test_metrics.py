"""Metrics: agreement with scikit-image, exact values, masks, slice-wise statistics, regions, BraSyn SSIM,
PSNR infinity in JSON, input errors, and the deep-feature metrics offline (random backbone) and unavailable
(ImageNet weights missing: a message, never a number, never a download)."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from MRISynthesisLib import metrics
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.metrics import (METRICS, brasyn_ssim, data_range_of, enhancement_mask, evaluate, mae, mse, nmse,
                                     psnr, slicewise, ssim, to_json_safe, tumour_mask)
from MRISynthesisLib.perceptual import checkpoint_path, lpips_distance, missing_weights_message, vgg19_perceptual
from MRISynthesisLib.volume import Volume


FOREGROUND = (1, 2, 3, 4, 5, 6)


def _pair(shape=(8, 12, 10), noise=40.0, seed=0):
    rng = np.random.default_rng(seed)
    real = ndimage.gaussian_filter(rng.uniform(0, 1000, shape), 1.5)
    real = (real - real.min()) / np.ptp(real) * 1000
    return real, real + rng.normal(0, noise, shape)


def _block_volume(seed=0):
    """Slices 0 and 7 empty (0), a bright noisy block through slices 1-6: the foreground slices are 1-6."""
    rng = np.random.default_rng(seed)
    real = np.zeros((8, 16, 16))
    real[1:7, 3:13, 2:14] = 500 + rng.normal(0, 50, (6, 10, 12))
    synth = real + rng.normal(0, 20, real.shape)
    return real, synth


# --------------------------------------------------------------------- agreement with scikit-image
def test_ssim_and_psnr_equal_scikit_image_on_the_whole_volume():
    real, synth = _pair()
    span = float(real.max() - real.min())
    assert data_range_of(real) == pytest.approx(span)
    assert ssim(real, synth) == pytest.approx(structural_similarity(real, synth, data_range=span), rel=1e-12)
    assert psnr(real, synth) == pytest.approx(peak_signal_noise_ratio(real, synth, data_range=span), rel=1e-12)
    # an explicit range is used as given (here Seq2Seq's 2 for [-1, 1] images), not guessed from the data
    assert ssim(real, synth, data_range=2.0) == pytest.approx(structural_similarity(real, synth, data_range=2.0))
    assert psnr(real, synth, data_range=2.0) == pytest.approx(peak_signal_noise_ratio(real, synth, data_range=2.0))
    assert psnr(real, synth, data_range=2.0) < psnr(real, synth)


def test_metrics_accept_volumes_and_match_arrays(make_volume):
    real = make_volume((8, 9, 10))
    other = real.with_array(real.array + 5)
    assert mae(real, other) == pytest.approx(5.0, abs=1e-4)
    assert ssim(real, other) == pytest.approx(ssim(real.array, other.array))
    moved = Volume(other.array, other.spacing, (0.0, 0.0, 0.0), other.direction)
    with pytest.raises(InputError, match="synth is not on the grid of real: origin"):
        mae(real, moved)


# --------------------------------------------------------------------- exact values
def test_nmse_mse_mae_exact_values_on_tiny_arrays():
    real = np.array([[1.0, 2.0], [3.0, 4.0]])
    synth = np.array([[1.0, 2.0], [3.0, 6.0]])
    assert mse(real, synth) == pytest.approx(4 / 4)
    assert mae(real, synth) == pytest.approx(2 / 4)
    assert nmse(real, synth) == pytest.approx(4 / 30)  # ||y - G||^2 / ||y||^2, 1 + 4 + 9 + 16 = 30
    bottom = np.array([[False, False], [True, True]])
    assert mse(real, synth, mask=bottom) == pytest.approx(4 / 2)
    assert mae(real, synth, mask=bottom) == pytest.approx(2 / 2)
    assert nmse(real, synth, mask=bottom) == pytest.approx(4 / 25)
    assert psnr(real, synth, data_range=4.0) == pytest.approx(10 * math.log10(16 / 1))
    with pytest.raises(InputError, match="NMSE is undefined"):
        nmse(np.zeros((2, 2)), synth)


# --------------------------------------------------------------------- PSNR infinity
def test_psnr_of_identical_images_is_inf_without_warnings_and_json_safe():
    real, _ = _pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a division-by-zero RuntimeWarning would fail here
        assert psnr(real, real) == math.inf
        result = evaluate(real, real)
    assert result["metrics"]["psnr"]["volume"] == math.inf
    assert result["metrics"]["psnr"]["slice_mean"] == math.inf
    assert math.isnan(result["metrics"]["psnr"]["slice_sd"])
    assert result["metrics"]["ssim"]["volume"] == pytest.approx(1.0)
    text = json.dumps(to_json_safe(result), allow_nan=False)  # would raise on a bare inf or nan
    back = json.loads(text)
    assert back["metrics"]["psnr"] == {"volume": "inf", "slice_mean": "inf", "slice_sd": None}
    assert float(back["metrics"]["psnr"]["volume"]) == math.inf
    assert back["metrics"]["mse"]["volume"] == 0.0


# --------------------------------------------------------------------- input errors
@pytest.mark.parametrize("name", sorted(METRICS))
def test_mismatched_shapes_name_both_shapes(name):
    with pytest.raises(InputError, match=re.escape("real and synth differ in shape: (4, 5, 6) vs (4, 5, 7)")):
        METRICS[name](np.ones((4, 5, 6)), np.ones((4, 5, 7)))


def test_evaluate_mismatched_shapes_and_non_finite_voxels():
    real, synth = _pair()
    with pytest.raises(InputError, match=re.escape("(8, 12, 10) vs (8, 12, 9)")):
        evaluate(real, synth[..., :9])
    bad = synth.copy()
    bad[2, 3, 4] = np.nan
    with pytest.raises(InputError, match="synth contains 1 NaN voxel"):
        evaluate(real, bad)
    bad = real.copy()
    bad[0, 0, :2] = np.inf
    with pytest.raises(InputError, match="real contains 2 Inf voxel"):
        ssim(bad, synth)


def test_mask_errors():
    real, synth = _pair()
    with pytest.raises(InputError, match=re.escape("mask shape (8, 12, 9) does not match the images' shape (8, 12, 10)")):
        mse(real, synth, mask=np.ones((8, 12, 9), bool))
    with pytest.raises(InputError, match="mask is empty"):
        evaluate(real, synth, mask=np.zeros(real.shape, bool))


def test_constant_real_needs_an_explicit_data_range():
    constant = np.full((8, 8, 8), 3.0)
    other = constant + np.random.default_rng(1).normal(0, 1, constant.shape)
    for metric in (ssim, psnr):
        with pytest.raises(InputError, match="constant.*data range is 0"):
            metric(constant, other)
    assert np.isfinite(psnr(constant, other, data_range=10.0))
    with pytest.raises(InputError, match="`data_range` must be positive"):
        ssim(constant, other, data_range=0)


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(InputError, match=r"at least 7 voxels.*\(6, 9, 9\)"):
        ssim(np.random.default_rng(0).random((6, 9, 9)), np.zeros((6, 9, 9)))


# --------------------------------------------------------------------- masks
def test_masked_metrics_ignore_voxels_outside_the_mask():
    real, synth = _pair(shape=(14, 24, 24))
    mask = np.zeros(real.shape, bool)
    mask[5:9, 8:16, 8:16] = True
    # SSIM's map inside the mask sees a 7-voxel window: corrupt only voxels more than 3 voxels away from it
    far = ~ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3)), iterations=3)
    rng = np.random.default_rng(5)
    real2, synth2 = real.copy(), synth.copy()
    real2[far] += rng.uniform(100, 500, far.sum())
    synth2[far] -= rng.uniform(100, 500, far.sum())
    for name, metric in METRICS.items():
        kwargs = {"data_range": 1000.0} if name in ("ssim", "psnr") else {}
        before = metric(real, synth, mask=mask, **kwargs)
        after = metric(real2, synth2, mask=mask, **kwargs)
        assert after == pytest.approx(before, rel=1e-9, abs=1e-12), name
        assert metric(real2, synth2, **kwargs) != pytest.approx(metric(real, synth, **kwargs), rel=1e-3), name


def test_masked_ssim_is_the_mean_of_the_full_map_inside_the_mask():
    real, synth = _pair(shape=(10, 12, 12))
    mask = np.zeros(real.shape, bool)
    mask[3:6, 2:9, 4:10] = True
    _, full = structural_similarity(real, synth, data_range=1000.0, full=True)
    assert ssim(real, synth, mask=mask, data_range=1000.0) == pytest.approx(full[mask].mean())


def test_tumour_mask_is_every_label():
    seg = np.array([[[0, 1, 2, 4, 0]]])
    assert tumour_mask(seg).tolist() == [[[False, True, True, True, False]]]
    assert tumour_mask(Volume(seg)).sum() == 3


def test_enhancement_mask_finds_an_enhancing_blob():
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[:20, :32, :32]
    brain = (z - 10) ** 2 / 81 + (y - 16) ** 2 / 196 + (x - 16) ** 2 / 196 < 1
    t1 = np.where(brain, np.where(x < 16, 60.0, 120.0), 0.0) + rng.normal(0, 2, brain.shape)
    bright_in_both = (z - 10) ** 2 + (y - 8) ** 2 + (x - 20) ** 2 < 6
    t1[bright_in_both] += 100  # a structure bright without contrast: not enhancement
    blob = (z - 10) ** 2 + (y - 18) ** 2 + (x - 10) ** 2 < 10
    t1ce = t1 + rng.normal(0, 2, brain.shape)
    t1ce[blob] += 80
    found = enhancement_mask(t1ce, t1, brain)
    assert found[blob].mean() > 0.95
    assert found[~blob].sum() <= 3
    assert not found[~brain].any()
    assert not found[bright_in_both].any()
    # a higher threshold (in units of the [-1, 1] scale) keeps fewer voxels
    assert enhancement_mask(t1ce, t1, brain, threshold=0.9).sum() < found.sum()


# --------------------------------------------------------------------- slice-wise
def test_slicewise_matches_a_manual_loop_over_foreground_slices():
    real, synth = _block_volume()
    span = float(real.max() - real.min())
    manual = {
        "ssim": [structural_similarity(real[z], synth[z], data_range=span) for z in FOREGROUND],
        "psnr": [peak_signal_noise_ratio(real[z], synth[z], data_range=span) for z in FOREGROUND],
        "mse": [np.mean((real[z] - synth[z]) ** 2) for z in FOREGROUND],
        "mae": [np.mean(np.abs(real[z] - synth[z])) for z in FOREGROUND],
        "nmse": [np.sum((real[z] - synth[z]) ** 2) / np.sum(real[z] ** 2) for z in FOREGROUND],
    }
    result = evaluate(real, synth)
    assert result["slices"] == list(FOREGROUND) and result["n_slices"] == 6 and result["n_slices_total"] == 8
    for name, values in manual.items():
        stats = slicewise(name, real, synth)
        assert stats.indices == FOREGROUND
        assert stats.values == pytest.approx(values)
        assert stats.mean == pytest.approx(np.mean(values)) == result["metrics"][name]["slice_mean"]
        assert stats.sd == pytest.approx(np.std(values)) == result["metrics"][name]["slice_sd"]


def test_masked_slicewise_uses_the_mask_slices_and_voxels():
    real, synth = _block_volume()
    mask = np.zeros(real.shape, bool)
    mask[2:4, 5:9, 5:9] = True
    stats = slicewise("mae", real, synth, mask=mask)
    assert stats.indices == (2, 3)
    assert stats.values == pytest.approx([np.abs(real[z] - synth[z])[mask[z]].mean() for z in (2, 3)])
    result = evaluate(real, synth, mask=mask, data_range=600.0)
    assert result["n_voxels"] == 32 and result["masked"] and result["data_range"] == 600.0
    assert result["data_range_source"] == "given"
    assert result["metrics"]["mae"]["volume"] == pytest.approx(np.abs(real - synth)[mask].mean())


# --------------------------------------------------------------------- BraSyn
def test_brasyn_ssim_separates_tumour_and_non_tumour_errors():
    real, _ = _pair(shape=(20, 32, 32), seed=2)
    seg = np.zeros(real.shape, np.uint8)
    seg[4:16, 6:26, 6:26] = 2  # large against the 11-voxel window, whose context outside is zeroed
    rng = np.random.default_rng(4)
    bad_tumour = real.copy()
    bad_tumour[seg > 0] = rng.permutation(real[seg > 0])  # same intensities, so the same percentiles
    scores = brasyn_ssim(real, bad_tumour, seg)
    assert scores.tumour < 0.6 and scores.non_tumour == pytest.approx(1.0)
    bad_outside = real.copy()
    bad_outside[seg == 0] = rng.permutation(real[seg == 0])
    scores = brasyn_ssim(real, bad_outside, seg)
    assert scores.non_tumour < 0.6 and scores.tumour == pytest.approx(1.0)
    same = brasyn_ssim(real, real, seg)
    assert same.tumour == pytest.approx(1.0) and same.non_tumour == pytest.approx(1.0)
    # no segmentation: one number for the whole volume, none for a tumour
    whole = brasyn_ssim(real, bad_tumour)
    assert whole.tumour is None and 0.5 < whole.non_tumour < 1.0


def test_brasyn_ssim_is_invariant_to_each_volume_s_intensity_scale():
    """Each volume is rescaled by its own percentiles, so a synthesized volume in other units scores the same."""
    real, synth = _pair(shape=(12, 20, 20), noise=60.0)
    seg = np.zeros(real.shape, bool)
    seg[4:8, 6:12, 6:12] = True
    assert brasyn_ssim(real, synth * 3.5, seg).tumour == pytest.approx(brasyn_ssim(real, synth, seg).tumour)


# --------------------------------------------------------------------- inputs never change
def test_inputs_are_unchanged():
    real, synth = _pair(shape=(12, 32, 32))
    real, synth = real.astype(np.float32), synth.astype(np.float32)
    mask = real > 500
    copies = [real.copy(), synth.copy(), mask.copy()]
    evaluate(real, synth, mask)
    brasyn_ssim(real, synth, mask)
    enhancement_mask(synth, real, mask)
    lpips_distance(real, synth, backbone="random")
    for before, after in zip(copies, (real, synth, mask)):
        assert np.array_equal(before, after) and before.dtype == after.dtype


# --------------------------------------------------------------------- deep-feature metrics
def _slices_pair(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    real = ndimage.gaussian_filter(rng.uniform(0, 1, (3, 40, 36)), 2) * 1000
    return real, real + noise * np.ptp(real) * rng.standard_normal(real.shape)


@pytest.mark.parametrize("distance", [lambda a, b: lpips_distance(a, b, backbone="random"),
                                      lambda a, b: lpips_distance(a, b, net="vgg", backbone="random"),
                                      lambda a, b: vgg19_perceptual(a, b, backbone="random")],
                         ids=["lpips-alex", "lpips-vgg", "vgg19"])
def test_deep_metrics_with_random_backbone_are_zero_for_identical_and_grow_with_noise(distance):
    real, little = _slices_pair(0.02)
    _, much = _slices_pair(0.3)
    same = distance(real, real)
    assert same.available and same.value == 0.0 and same.n_slices == 3
    low, high = distance(real, little), distance(real, much)
    assert 0 < low.value < high.value
    assert distance(real, much).value == high.value  # seeded random weights: repeatable


def test_deep_metrics_refuse_unknown_options():
    real, synth = _slices_pair(0.1)
    with pytest.raises(InputError, match="unknown backbone 'imagenet1k'"):
        lpips_distance(real, synth, backbone="imagenet1k")
    with pytest.raises(InputError, match="unknown LPIPS network 'squeeze'"):
        lpips_distance(real, synth, net="squeeze", backbone="random")


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert torch.hub.get_dir() == str(tmp_path / "hub")

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize("distance, filename", [
    (lambda a, b: lpips_distance(a, b), "alexnet-owt-7be5be79.pth"),
    (lambda a, b: lpips_distance(a, b, net="vgg"), "vgg16-397923af.pth"),
    (lambda a, b: vgg19_perceptual(a, b), "vgg19-dcbb9e9d.pth"),
], ids=["lpips-alex", "lpips-vgg", "vgg19"])
def test_imagenet_backbone_without_its_checkpoint_is_unavailable(empty_torch_home, distance, filename):
    real, synth = _slices_pair(0.1)
    result = distance(real, synth)
    assert not result.available and result.value is None and result.sd is None
    assert filename in result.message and str(empty_torch_home) in result.message
    assert str(result).startswith("unavailable: ")
    assert not re.search(r"\d\.\d", str(result).split("(from")[0])  # no number reported
    assert not empty_torch_home.exists() or not any(empty_torch_home.iterdir())  # nothing fetched


def test_weights_check_sees_a_present_checkpoint(empty_torch_home):
    import torchvision.models as tvm

    weights = tvm.AlexNet_Weights.IMAGENET1K_V1
    assert checkpoint_path(weights) == empty_torch_home / "alexnet-owt-7be5be79.pth"
    assert "alexnet-owt-7be5be79.pth" in missing_weights_message(weights, "AlexNet", allow_download=False)
    assert missing_weights_message(weights, "AlexNet", allow_download=True) is None
    empty_torch_home.mkdir(parents=True)
    (empty_torch_home / "alexnet-owt-7be5be79.pth").touch()
    assert missing_weights_message(weights, "AlexNet", allow_download=False) is None


def test_deep_metrics_on_slices_too_small_for_the_network_are_unavailable():
    real, synth = _pair(shape=(4, 20, 40))
    result = lpips_distance(real, synth, backbone="random")
    assert not result.available and "20x40" in result.message


def test_perceptual_names_are_re_exported_from_metrics():
    assert metrics.lpips_distance is lpips_distance and metrics.vgg19_perceptual is vgg19_perceptual
    with pytest.raises(AttributeError):
        metrics.no_such_metric  # noqa: B018
