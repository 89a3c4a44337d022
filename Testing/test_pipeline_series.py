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


def test_a_series_written_by_the_command_line_reads_back_and_input_sidecars_stay_theirs(series_model, breast,
                                                                                         tmp_path, monkeypatch, capsys):
    """A DCE result keeps its frames in its own sidecar (the report is ``<name>.report.json``), and an output
    whose frame sidecar would land on an input's (``dwi.nrrd`` beside ``dwi.nii.gz``) is refused before any work."""
    from MRISynthesisLib.cli import main
    from MRISynthesisLib.volume import read_volume, write_volume

    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(series_model))
    files = {k: write_volume(breast.sequences[k], tmp_path / f"{k.lower()}.nii.gz") for k in BREAST}
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}  # the images and the DWI's and DCE's sidecars
    args = ["synthesize", "--model", "seq2seq", "--target", "DCE", "--register", "none", "--device", "cpu", "--quiet",
            "--input", *(f"{k}={files[k]}" for k in ("T1", "T2", "DWI"))]
    out = tmp_path / "synth-dce.nii.gz"
    assert main([*args, "--out", str(out), "--real", str(files["DCE"])]) == 0
    back = read_volume(out)  # its sidecar holds its frames, not the report
    assert back.shape == breast.sequences["DCE"].shape
    assert [f["time_min"] for f in back.frames] == pytest.approx([f["time_min"] for f in breast.sequences["DCE"].frames])
    assert "metrics" in (tmp_path / "synth-dce.report.json").read_text()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "dwi.nrrd")]) == 2
    refused = capsys.readouterr().err
    assert "would overwrite an input file" in refused and "dwi.json" in refused
    assert not (tmp_path / "dwi.nrrd").exists()
    assert all(p.read_bytes() == content for p, content in before.items())
