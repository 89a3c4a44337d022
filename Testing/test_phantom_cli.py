"""`mri-synthesis phantom`: case folders in the documented naming, truth.json, montage, bad options."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from MRISynthesisLib.cli import main
from MRISynthesisLib.sequences import discover_case
from MRISynthesisLib.volume import read_volume


def test_brain_cases_in_brats_2023_naming(tmp_path, capsys):
    assert main(["phantom", "--anatomy", "brain", "--n", "2", "--seed", "40", "--out", str(tmp_path),
                 "--resolution", "4", "--png", "--quiet"]) == 0
    cases = sorted(p.name for p in tmp_path.iterdir())
    assert cases == ["MRIS-BRAIN-00040", "MRIS-BRAIN-00041"]
    folder = tmp_path / cases[0]
    found = discover_case(folder)
    assert set(found) == {"T1", "T1ce", "T2", "FLAIR", "PD", "seg"}
    assert found["T1ce"].name == "MRIS-BRAIN-00040-t1c.nii.gz"
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["seed"] == 40 and truth["field_strength_T"] in (1.5, 3.0)
    assert set(truth["transforms_reference_to_sequence"]) == {"T1", "T1ce", "T2", "FLAIR", "PD"}
    seg = read_volume(found["seg"])
    t1 = read_volume(found["T1"])
    assert seg.spatial_shape == t1.spatial_shape
    assert set(np.unique(seg.array)) <= {0.0, 1.0, 2.0, 3.0}
    import SimpleITK as sitk
    header = sitk.ImageFileReader()
    header.SetFileName(str(found["seg"]))
    header.ReadImageInformation()
    assert header.GetPixelID() == sitk.sitkUInt16  # a label map by its type, as segmentations are stored
    assert (folder / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(folder) in capsys.readouterr().out


def test_breast_case_has_series_with_sidecars(tmp_path):
    assert main(["phantom", "--anatomy", "breast", "--seed", "3", "--out", str(tmp_path), "--resolution", "3",
                 "--quiet"]) == 0
    folder = tmp_path / "MRIS-BREAST-00003"
    found = discover_case(folder)
    assert set(found) == {"T1", "T2", "DCE", "DWI", "ADC", "seg"}
    dce = read_volume(found["DCE"])
    assert dce.is_series and dce.shape[0] == 6 and dce.frames[1]["time_min"] > 0
    dwi = read_volume(found["DWI"])
    assert [f["b_value"] for f in dwi.frames] == [0.0, 800.0]
    assert json.loads((folder / "truth.json").read_text())["lesion_class"] in ("healthy", "benign", "malignant")


@pytest.mark.parametrize("args, message", [
    (["--anatomy", "brain", "--n", "0"], "--n must be at least 1"),
    (["--anatomy", "brain", "--seed", "-1"], "--seed must be non-negative"),
    (["--anatomy", "brain", "--resolution", "0.01"], "resolution"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["phantom", "--out", str(tmp_path / "out"), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_anatomy_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["phantom", "--anatomy", "knee", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "'knee'" in err[0]


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    result = subprocess.run([sys.executable, "-m", "MRISynthesisLib", "phantom", "--anatomy", "brain", "--out",
                             str(target), "--resolution", "6", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {target}: exists and is not a folder"
    assert target.read_text() == "keep me"


def test_a_case_folder_holding_a_users_files_is_not_replaced(tmp_path, capsys):
    """Writing a case replaces its folder; one that holds files the phantom did not write (the user's notes)
    is refused by name and left as it was. A folder of the phantom's own files is rewritten."""
    out = tmp_path / "cases"
    args = ["phantom", "--anatomy", "brain", "--n", "1", "--seed", "3", "--resolution", "8", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert main(args) == 0  # its own files only: rewritten
    notes = out / "MRIS-BRAIN-00003" / "my-notes.txt"
    notes.write_text("keep me")
    capsys.readouterr()
    assert main(args) == 2
    assert "holds files the phantom did not write (my-notes.txt)" in capsys.readouterr().err
    assert notes.read_text() == "keep me"
