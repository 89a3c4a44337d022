"""The command-line contract: exit 0 / 2, one ``error: …`` line naming the file and problem, no traceback,
inputs never modified."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib import __version__
from MRISynthesisLib.cli import main
from MRISynthesisLib.volume import Volume, write_volume

from conftest import OBLIQUE, ORIGIN, SPACING, hash_files, hash_tree, make_volume

SUBCOMMANDS = ("demo", "phantom", "register", "synthesize", "evaluate", "rank", "train", "generate", "models", "check")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse exits for --help, --version and usage errors
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_subprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    root = str(Path(__file__).resolve().parents[1])  # the checkout's library, as in-process
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "MRISynthesisLib", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def assert_one_error_line(code: int, out: str, err: str, *needles: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert err.endswith("\n")
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


# --------------------------------------------------------------------- inputs for `check`
def _write(path: Path, volume: Volume) -> Path:
    return write_volume(volume, path)


def _t1(folder: Path) -> Path:
    return _write(folder / "t1.nii.gz", make_volume(seed=1))


def _array_file(folder: Path, name: str, fill) -> Path:
    array = make_volume(seed=2).array.copy()
    fill(array)
    return _write(folder / name, Volume(array, SPACING, ORIGIN, OBLIQUE))


def case_missing(tmp):
    missing = tmp / "missing-t2.nii.gz"
    return ["T1=" + str(_t1(tmp)), f"T2={missing}"], [str(missing), "file not found"]


def case_truncated(tmp):
    path = _write(tmp / "t2.nii.gz", make_volume(seed=3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return [f"T2={path}"], [str(path), "corrupt or truncated"]


def case_truncated_nrrd(tmp):
    path = _write(tmp / "t2.nrrd", make_volume(seed=3))
    path.write_bytes(path.read_bytes()[:-200])
    return [f"T2={path}"], [str(path), "corrupt or truncated"]


def case_sheared(tmp):
    import nibabel as nib

    affine = np.eye(4)
    affine[0, 1] = 0.5  # voxel axes not perpendicular: readable, but not a grid ITK or Slicer takes
    path = tmp / "t1-sheared.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).uniform(1, 2, (8, 8, 8)).astype(np.float32), affine), path)
    return [f"T1={path}"], [str(path), "affine is sheared", "resample it onto an orthogonal grid"]


def case_text_file(tmp):
    path = tmp / "flair.nii.gz"
    path.write_text("this is not an image\n")
    return [f"FLAIR={path}"], [str(path), "cannot be read as an image"]


def case_empty_file(tmp):
    path = tmp / "flair.nii.gz"
    path.write_bytes(b"")
    return [f"FLAIR={path}"], [str(path), "file is empty"]


def case_folder(tmp):
    path = tmp / "t1.nii.gz"
    path.mkdir()
    return [f"T1={path}"], [str(path), "is a folder"]


def case_unsupported(tmp):
    path = tmp / "t1.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return [f"T1={path}"], [str(path), "unsupported file type"]


def case_2d(tmp):
    path = tmp / "t1-2d.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 1, (7, 8)).astype(np.float32)), str(path))
    return [f"T1={path}"], [str(path), "2D"]


def case_single_slice(tmp):
    path = _write(tmp / "t1-slice.nii.gz", make_volume((1, 7, 8), seed=4))
    return [f"T1={path}"], [str(path), "not a 3D volume", "8, 7, 1"]


def case_series_for_3d(tmp):
    path = _write(tmp / "t1-4d.nii.gz", make_volume((2, 6, 7, 8), seed=5))
    return [f"T1={path}"], [str(path), "expected a 3D volume", "4D series"]


def case_3d_for_series(tmp):
    return [f"DWI={_t1(tmp)}"], ["t1.nii.gz", "DWI must be a 4D series"]


def case_nan(tmp):
    def fill(a):
        a[1, 2, 3] = np.nan
        a[2, 3, 4] = np.nan
    path = _array_file(tmp, "t2-nan.nii.gz", fill)
    return ["T1=" + str(_t1(tmp)), f"T2={path}"], [str(path), "2 NaN voxel"]


def case_inf(tmp):
    def fill(a):
        a[0, 0, 0] = np.inf
    path = _array_file(tmp, "t2-inf.nrrd", fill)
    return [f"T2={path}"], [str(path), "1 Inf voxel"]


def case_all_zero(tmp):
    path = _write(tmp / "flair-zero.mha", Volume(np.zeros((6, 7, 8))))
    return [f"FLAIR={path}"], [str(path), "every voxel has the same value (0.0)"]


def case_one_voxel(tmp):
    array = np.zeros((6, 7, 8), np.float32)
    array[3, 3, 3] = 100.0
    path = _write(tmp / "flair-marker.nii.gz", Volume(array))
    return [f"FLAIR={path}"], [str(path), "only 1 voxel(s) rise above its background value (0)", "at least 64"]


def case_label_map(tmp):
    array = np.zeros((6, 7, 8), np.float32)
    array[1:5, 2:6, 2:7] = 2.0
    array[2:4, 3:5, 3:6] = 4.0  # a tumour segmentation's labels in T2's place
    path = _write(tmp / "seg-as-t2.nii.gz", Volume(array))
    return [f"T2={path}"], [str(path), "holds only 3 distinct values (0, 2, 4): a label map or mask"]


def case_unknown_sequence(tmp):
    return [f"T3={_t1(tmp)}"], ["unknown sequence name 'T3'"]


def case_duplicate_sequence(tmp):
    a = _t1(tmp)
    b = _write(tmp / "other-t1.nii.gz", make_volume(seed=6))
    return [f"T1={a}", f"t1n={b}"], ["sequence T1 given twice", str(a), str(b)]


def case_no_equals(tmp):
    return [str(_t1(tmp))], ["expected SEQ=FILE", "t1.nii.gz"]


def case_mismatched_grid(tmp):
    a = _t1(tmp)
    b = _write(tmp / "t2.nii.gz", make_volume(spacing=(0.8, 1.1, 4.0), seed=7))
    return [f"T1={a}", f"T2={b}", "--same-grid"], [f"T2 ({b})", f"T1 ({a})", "not on the grid", "spacing"]


def case_mismatched_size(tmp):
    a = _t1(tmp)
    b = _write(tmp / "t2.nii.gz", make_volume((6, 7, 9), seed=8))
    return [f"T1={a}", f"T2={b}", "--same-grid"], [f"T2 ({b})", "not on the grid", "size"]


CHECK_ERRORS = [case_missing, case_truncated, case_truncated_nrrd, case_sheared, case_text_file, case_empty_file, case_folder,
                case_unsupported, case_2d, case_single_slice, case_series_for_3d, case_3d_for_series, case_nan,
                case_inf, case_all_zero, case_one_voxel, case_label_map, case_unknown_sequence, case_duplicate_sequence, case_no_equals,
                case_mismatched_grid, case_mismatched_size]


@pytest.mark.parametrize("make_case", CHECK_ERRORS, ids=lambda f: f.__name__[5:])
def test_check_errors(tmp_path, capsys, make_case):
    inputs, needles = make_case(tmp_path)
    before = hash_tree(tmp_path)
    code, out, err = run_cli(capsys, "check", "--input", *inputs)
    assert_one_error_line(code, out, err, *needles)
    assert "ok" not in out
    assert hash_tree(tmp_path) == before  # nothing modified, nothing written


def test_check_reports_every_bad_file(tmp_path, capsys):
    """A truncated T2 and a NaN FLAIR beside a good T1: both named, each on its own line, the good one listed,
    and no "ok" (checking stops at no file)."""
    (truncated,), truncated_needles = case_truncated(tmp_path)
    (_, nan_input), nan_needles = case_nan(tmp_path)
    before = hash_tree(tmp_path)
    code, out, err = run_cli(capsys, "check", "--input", f"T1={_t1(tmp_path)}", truncated,
                             nan_input.replace("T2=", "FLAIR="))
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), err
    assert all(needle in lines[0] for needle in truncated_needles), lines[0]
    assert all(needle in lines[1] for needle in nan_needles), lines[1]
    assert out.startswith("T1: ") and "ok" not in out
    assert hash_tree(tmp_path) == before


def test_check_mismatched_grid_is_fine_without_same_grid(tmp_path, capsys):
    inputs, _ = case_mismatched_grid(tmp_path)
    code, out, err = run_cli(capsys, "check", "--input", *inputs[:-1])
    assert code == 0, err
    assert err == ""
    assert out.splitlines()[-1] == "ok: every input is readable, finite and non-empty"


def test_check_success(tmp_path, capsys):
    t1 = _t1(tmp_path)
    t2 = _write(tmp_path / "t2.nrrd", make_volume(seed=9, low=5, high=6))
    dwi = _write(tmp_path / "dwi.nii.gz", make_volume((3, 6, 7, 8), seed=10, frames=[{"b": 0}, {"b": 500}, {"b": 1000}]))
    files = [t1, t2, dwi, tmp_path / "dwi.json"]
    before = hash_files(files)
    code, out, err = run_cli(capsys, "check", "--input", f"t1n={t1}", f"T2={t2}", f"dwi={dwi}", "--same-grid")
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("T1: 8x7x6 voxels at 0.8x1.1x3 mm, range [")
    assert lines[1].startswith("T2: 8x7x6 voxels")
    assert lines[2].startswith("DWI: 8x7x6 voxels at 0.8x1.1x3 mm, 3 frames, range [")
    lo, hi = (float(v) for v in re.search(r"range \[(.*), (.*)\]", lines[1]).groups())
    assert 5 <= lo < hi <= 6
    assert lines[3] == "ok: every input is readable, finite and non-empty, on one grid"
    assert hash_files(files) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dwi.json", "dwi.nii.gz", "t1.nii.gz", "t2.nrrd"]


# --------------------------------------------------------------------- help, usage, not-built commands
def test_help_lists_every_subcommand(capsys):
    code, out, err = run_cli(capsys, "--help")
    assert code == 0
    assert "Research use only" in out
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\s", out, re.MULTILINE), name


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"mri-synthesis {__version__}"


@pytest.mark.parametrize("args, needle", [
    ([], "required"),
    (["check"], "--input"),
    (["check", "--input"], "--input"),
    (["register", "--fixed", "a.nii.gz"], "--moving"),
    (["synthesize", "--model", "unet-ct1", "--input", "T1=a.nii.gz"], "--target"),
    (["synthesize", "--model", "m", "--input", "T1=a.nii.gz", "--target", "T1ce", "--out", "o.nii.gz"], "invalid choice"),
    (["generate", "--class", "ugly", "--n", "1", "--out", "x"], "invalid choice"),
    (["generate", "--class", "benign", "--n", "two", "--out", "x"], "invalid int value"),
    (["frobnicate"], "invalid choice"),
    (["check", "--input", "T1=a.nii.gz", "--bogus"], "unrecognized arguments"),
])
def test_usage_errors(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *args)
    line = assert_one_error_line(code, out, err, needle)
    assert re.search(r"\(see `mri-synthesis( [a-z-]+)? --help`\)$", line), line
    assert out == ""
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------- as a real process
def test_subprocess_error_has_no_traceback(tmp_path):
    inputs, needles = case_truncated(tmp_path)
    _, nan_needles = case_nan(tmp_path)
    nan_file = tmp_path / "t2-nan.nii.gz"
    before = hash_tree(tmp_path)
    for args, wanted in [(["check", "--input", *inputs], needles),
                         (["check", "--input", f"T2={nan_file}"], nan_needles),
                         (["compare", "--data", "missing-folder", "--out", "o"], ["no such data folder"]),
                         (["check"], ["--input"])]:
        proc = run_subprocess(*args, cwd=tmp_path)
        assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, *wanted)
    assert hash_tree(tmp_path) == before


def test_subprocess_success(tmp_path):
    t1 = _t1(tmp_path)
    proc = run_subprocess("check", "--input", f"T1={t1}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.splitlines()[-1].startswith("ok")
    help_ = run_subprocess("--help", cwd=tmp_path)
    assert help_.returncode == 0
    for name in SUBCOMMANDS:
        assert name in help_.stdout


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """`mri-synthesis models --json | head -1`: the reader closes the pipe; no traceback, and the status of a
    process SIGPIPE ends (141), not success: a batch piped so would have stopped part-way."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "MRISynthesisLib", "models", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.close()  # what `head` does once it has its line, here before the first one is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "Broken pipe" not in err, err
