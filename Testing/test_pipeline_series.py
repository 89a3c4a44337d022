"""Whole 4D series in and out (Seq2Seq breast): DWI and DCE enter with every frame, a DCE or DWI target
comes out as a series, compared with a real series frame by frame; the wrong shapes are refused."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import bundle_untrained
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.pipeline import synthesize

BREAST = ("T1", "T2", "DWI", "DCE")


@pytest.fixture(scope="module")
def series_model(tmp_path_factory):
    """An untrained Seq2Seq breast model that takes and makes whole DWI and DCE series."""
    folder = tmp_path_factory.mktemp("seq2seq-breast")
    bundle_untrained(folder, "seq2seq", anatomy="breast", inputs=BREAST, targets=BREAST, normalization="percentile",
                     series={"DWI": 2, "DCE": 6})
    return folder


@pytest.fixture(scope="module")
def breast():
    from MRISynthesisLib.phantom.breast import sample_breast
    return sample_breast(5, resolution=4.0)


def _run(inputs, target, folder, **options):
    return synthesize(inputs, target, "seq2seq", anatomy="breast", register="none", device="cpu",
                      weights_folder=folder, **options)


def test_a_dce_target_has_the_real_series_frames_and_is_compared_frame_by_frame(series_model, breast):
    inputs = {k: breast.sequences[k] for k in ("T1", "T2", "DWI")}
    before = {k: v.array.copy() for k, v in inputs.items()}
    real = breast.sequences["DCE"]
    result = _run(inputs, "DCE", series_model, real=real)
    frames = real.shape[0]
    assert result.volume.shape == (frames, *breast.sequences["T1"].spatial_shape)
    assert result.provenance["frames"] == frames
    # frames differ from each other: each is its own decoder step, not one frame copied
    assert not np.allclose(result.volume.array[0], result.volume.array[-1])
    assert result.metrics["n_frames"] == frames and len(result.metrics["per_frame"]) == frames
    ssim = [f["metrics"]["ssim"]["volume"] for f in result.metrics["per_frame"]]
    assert result.metrics["metrics"]["ssim"]["volume"] == pytest.approx(np.mean(ssim))
    errors = result.error_map.volume
    assert errors.shape == result.volume.shape and errors.array.max() <= result.error_map.max_error + 1e-6
    assert all(np.array_equal(before[k], inputs[k].array) for k in inputs)


def test_without_a_real_series_the_frames_are_the_manifests_or_asked_for(series_model, breast):
    inputs = {k: breast.sequences[k] for k in ("T1", "T2", "DCE")}
    assert _run(inputs, "DWI", series_model).volume.shape[0] == 2
    assert _run(inputs, "DWI", series_model, phases=3).volume.shape[0] == 3


def test_a_3d_target_from_series_alone_lands_on_the_finer_grid(series_model, breast):
    """No T1 to register to: the reference is the series with the finest voxels (DCE, not the coarse DWI)."""
    inputs = {k: breast.sequences[k] for k in ("DWI", "DCE")}
    result = _run(inputs, "T2", series_model, real=breast.sequences["T2"])
    assert result.provenance["reference"] == "DCE"
    assert result.volume.shape == breast.sequences["DCE"].spatial_shape and "n_frames" not in result.metrics


def test_series_shapes_the_model_cannot_take_are_refused(series_model, breast):
    seq = breast.sequences
    inputs = {k: seq[k] for k in ("T1", "T2", "DWI")}
    with pytest.raises(InputError, match="real DCE must be a 4D series"):
        _run(inputs, "DCE", series_model, real=seq["DCE"].frame(1))
    with pytest.raises(InputError, match="3 frames of DCE asked for, but the real series .* has"):
        _run(inputs, "DCE", series_model, real=seq["DCE"], phases=3)
    with pytest.raises(InputError, match="makes T2 as a 3D volume, not a series of 4 frames"):
        _run({k: seq[k] for k in ("T1", "DCE")}, "T2", series_model, phases=4)
    with pytest.raises(InputError, match="positive integer"):
        _run(inputs, "DCE", series_model, phases=0)
    one_phase = seq["DCE"].with_array(seq["DCE"].array[:1], frames=seq["DCE"].frames[:1])
    with pytest.raises(InputError, match="DCE must be a 4D series"):
        _run({"T1": seq["T1"], "DCE": one_phase}, "T2", series_model)
