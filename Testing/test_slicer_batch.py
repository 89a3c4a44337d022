"""Headless ``batch.py`` (Slicer --python-script) on a real MRML scene (slicer-core): Slicer's reader and
writer are stood in for by the library's, which is what they do for NIfTI; everything else is the script."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import slicer  # slicer-core: MRML and slicer.util, no application

MODULE_DIR = Path(__file__).resolve().parents[1] / "MRISynthesis"
sys.path.insert(0, str(MODULE_DIR))

from conftest import bundle_untrained  # noqa: E402
from MRISynthesisLib.phantom import sample  # noqa: E402
from MRISynthesisLib.volume import read_volume, write_volume  # noqa: E402


@pytest.fixture()
def batch(monkeypatch):
    from MRISynthesisSlicerLib.nodes import node_from_volume, volume_from_node

    scene = slicer.vtkMRMLScene()
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer.util, "loadVolume",
                        lambda path: node_from_volume(scene, read_volume(path), Path(path).name), raising=False)
    monkeypatch.setattr(slicer.util, "saveNode",
                        lambda node, path: bool(write_volume(volume_from_node(node), path)), raising=False)
    spec = importlib.util.spec_from_file_location("mrisynthesis_batch", MODULE_DIR / "MRISynthesisSlicerLib" / "batch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_series_target_is_read_compared_and_written_whole(batch, tmp_path, monkeypatch):
    breast = ("T1", "T2", "DWI", "DCE")
    models = tmp_path / "models"
    models.mkdir()
    bundle_untrained(models, "seq2seq", anatomy="breast", inputs=breast, targets=breast,
                     normalization="percentile", series={"DWI": 2, "DCE": 6})
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(models))
    subject = sample("breast", 4, resolution=4.0)
    files = {seq: write_volume(subject.sequences[seq], tmp_path / f"{seq}.nii.gz") for seq in breast}
    before = {seq: path.read_bytes() for seq, path in files.items()}
    out, error_map = tmp_path / "dce.synthesized.nii.gz", tmp_path / "dce-error.nii.gz"
    code = batch.main(["--model", "seq2seq", "--target", "DCE", "--out", str(out), "--register", "none",
                       "--device", "cpu", "--real", str(files["DCE"]), "--error-map", str(error_map),
                       "--input", f"T1={files['T1']}", "--input", f"T2={files['T2']}", "--input", f"DWI={files['DWI']}"])
    assert code == 0
    synthesized = read_volume(out)
    assert synthesized.shape == subject.sequences["DCE"].shape  # every frame, not the one a browser shows
    assert read_volume(error_map).shape == subject.sequences["DCE"].shape
    assert len({float(np.abs(frame).sum()) for frame in synthesized.array}) > 1
    report = tmp_path / "dce.synthesized.report.json"  # the command line's name for the report, and its content
    saved = json.loads(report.read_text())
    assert saved["output"] == str(out.resolve()) and saved["error_map"]["file"] == str(error_map)
    assert isinstance(saved["metrics"]["metrics"]["psnr"]["volume"], float)  # full precision, nested as the CLI's
    assert isinstance(saved["provenance"]["warnings"], list) and "registrations" in saved
    assert {seq: path.read_bytes() for seq, path in files.items()} == before


def test_an_error_map_without_the_real_target_is_refused(batch, tmp_path, capsys):
    t1 = write_volume(sample("brain", 5, resolution=4.0).sequences["T1"], tmp_path / "t1.nii.gz")
    code = batch.main(["--model", "unet-ct1", "--target", "T1ce", "--out", str(tmp_path / "out.nii.gz"),
                       "--error-map", str(tmp_path / "err.nii.gz"), "--input", f"T1={t1}"])
    assert code == 2
    assert "--error-map needs --real" in capsys.readouterr().err
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_reader_failure_exits_with_1_and_its_traceback(batch, tmp_path, monkeypatch, capsys):
    """slicer.util.loadVolume raises RuntimeError on a file it cannot read; Slicer run with --python-script
    only exits when the script tells it to, so the script must return, not raise."""
    t1 = write_volume(sample("brain", 5, resolution=4.0).sequences["T1"], tmp_path / "t1.nii.gz")

    def unreadable(path):
        raise RuntimeError(f"Failed to load node from file: {path}")
    monkeypatch.setattr(slicer.util, "loadVolume", unreadable, raising=False)
    code = batch.main(["--model", "unet-ct1", "--target", "T1ce", "--out", str(tmp_path / "out.nii.gz"),
                       "--input", f"T1={t1}", "--input", f"T2={t1}", "--input", f"FLAIR={t1}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "Failed to load node from file" in err
    assert not (tmp_path / "out.nii.gz").exists()


def test_leave_exits_slicer_through_slicer_util_exit(batch, monkeypatch):
    exits = []
    monkeypatch.setattr(slicer, "app", object(), raising=False)
    monkeypatch.setattr(slicer.util, "exit", exits.append, raising=False)
    batch.leave(3)
    assert exits == [3]
    monkeypatch.setattr(slicer, "app", None, raising=False)
    with pytest.raises(SystemExit) as raised:
        batch.leave(2)
    assert raised.value.code == 2


def test_a_result_with_a_blank_part_is_written_with_its_warning_printed(batch, tmp_path, monkeypatch, capsys):
    from MRISynthesisLib.volume import Volume

    models = tmp_path / "models"
    models.mkdir()
    bundle_untrained(models, "unet-ct1", voxel_size_mm=4.0)
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(models))
    subject = sample("brain", 3, resolution=4.0)
    flair = subject.sequences["FLAIR"]
    n = flair.spatial_shape[0]
    origin = np.asarray(flair.origin) + flair.direction_matrix @ (0.0, 0.0, (n // 2) * flair.spacing[2])
    slab = Volume(flair.array[n // 2:], flair.spacing, tuple(origin), flair.direction)  # the upper half only
    files = {"T1": write_volume(subject.sequences["T1"], tmp_path / "t1.nii.gz"),
             "T2": write_volume(subject.sequences["T2"], tmp_path / "t2.nii.gz"),
             "FLAIR": write_volume(slab, tmp_path / "flair.nii.gz")}
    code = batch.main(["--model", "unet-ct1", "--target", "T1ce", "--out", str(tmp_path / "t1ce.nii.gz"),
                       "--register", "none", "--device", "cpu", *(a for k, v in files.items() for a in ("--input", f"{k}={v}"))])
    assert code == 0
    printed = capsys.readouterr().out
    assert "warning: FLAIR covers" in printed and (tmp_path / "t1ce.nii.gz").is_file()
