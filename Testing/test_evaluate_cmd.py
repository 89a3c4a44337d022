"""``run_evaluate``: the evaluate command's logic on real files (table, JSON, LPIPS status, input checks,
never writing over an input)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.evaluate_cmd import run_evaluate
from MRISynthesisLib.metrics import evaluate
from MRISynthesisLib.volume import Volume, read_volume, write_volume

from conftest import make_volume, sha256

SHAPE = (8, 9, 10)


@pytest.fixture
def case(tmp_path):
    real = make_volume(SHAPE, seed=1)
    noise = np.random.default_rng(2).normal(0, 30, SHAPE)
    paths = {"real": write_volume(real, tmp_path / "real.nii.gz"),
             "synth": write_volume(real.with_array(real.array + noise), tmp_path / "synth.nii.gz")}
    mask = np.zeros(SHAPE, np.float32)
    mask[2:6, 3:7, 2:8] = 2
    paths["mask"] = write_volume(real.with_array(mask), tmp_path / "seg.nii.gz")
    return paths


def _run(*args, **kwargs) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = run_evaluate(*args, out=lines.append, **kwargs)
    return code, lines


def test_prints_a_table_and_writes_json(case, tmp_path):
    code, lines = _run(case["real"], case["synth"], json_path=tmp_path / "metrics.json")
    assert code == 0
    text = "\n".join(lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    assert re.match(r"metric\s+\| whole volume\s+\| slice-wise mean ± sd", lines[header])
    for i, label in enumerate(("SSIM", "PSNR (dB)", "NMSE", "MSE", "MAE"), start=1):
        assert re.match(rf"{re.escape(label)}\s+\| [-\d.e+]+\s+\| [-\d.e+]+ ± [-\d.e+]+$", lines[header + i])
    # LPIPS: a status line; these 9x10 slices (and a machine without AlexNet's weights) give no number
    lpips_line = next(line for line in lines if line.startswith("LPIPS"))
    assert "unavailable: " in lpips_line
    assert "Research use only" in text

    document = json.loads((tmp_path / "metrics.json").read_text())
    expected = evaluate(read_volume(case["real"]), read_volume(case["synth"]))
    assert document["real"] == str(case["real"]) and document["mask"] is None
    assert document["data_range"] == pytest.approx(expected["data_range"])
    assert document["data_range_source"] == "real max - min"
    for name, values in expected["metrics"].items():
        assert document["metrics"][name] == pytest.approx(values), name
    assert f"{document['metrics']['ssim']['volume']:.4f}" in text
    assert document["lpips"]["available"] is False and document["lpips"]["value"] is None
    assert document["lpips"]["message"]


def test_identical_volumes_give_inf_psnr_in_table_and_json(case, tmp_path):
    code, lines = _run(case["real"], case["real"], json_path=tmp_path / "same.json")
    assert code == 0
    assert re.match(r"PSNR \(dB\)\s+\| inf\s+\| inf ± n/a", next(line for line in lines if line.startswith("PSNR")))
    text = (tmp_path / "same.json").read_text()
    assert "Infinity" not in text and "NaN" not in text  # strict JSON
    document = json.loads(text)
    assert document["metrics"]["psnr"] == {"volume": "inf", "slice_mean": "inf", "slice_sd": None}


def test_mask_and_data_range(case, tmp_path):
    code, lines = _run(case["real"], case["synth"], mask_path=case["mask"], json_path=tmp_path / "m.json",
                       data_range=1000.0)
    assert code == 0
    document = json.loads((tmp_path / "m.json").read_text())
    assert document["mask"] == str(case["mask"]) and document["masked"] is True
    assert document["n_voxels"] == 4 * 4 * 6 and document["slices"] == [2, 3, 4, 5]
    assert document["data_range"] == 1000.0 and document["data_range_source"] == "given"
    assert any(f"96 voxels in {case['mask']}" in line for line in lines)


def test_mismatched_geometry_names_both_files(case, tmp_path):
    real = read_volume(case["real"])
    moved = write_volume(Volume(real.array, real.spacing, (0.0, 0.0, 0.0), real.direction), tmp_path / "moved.nii.gz")
    with pytest.raises(InputError, match="origin") as err:
        run_evaluate(case["real"], moved, out=lambda line: None)
    assert str(case["real"]) in str(err.value) and str(moved) in str(err.value)
    other_size = write_volume(make_volume((8, 9, 11)), tmp_path / "size.nii.gz")
    with pytest.raises(InputError, match="size") as err:
        run_evaluate(case["real"], case["synth"], mask_path=other_size, out=lambda line: None)
    assert str(case["real"]) in str(err.value) and str(other_size) in str(err.value)


@pytest.mark.parametrize("which", ["real", "synth", "mask"])
def test_json_path_equal_to_an_input_is_refused_and_the_input_unchanged(case, tmp_path, which):
    before = {name: sha256(path) for name, path in case.items()}
    for target in (case[which], tmp_path / "sub" / ".." / case[which].name):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(InputError, match="overwrite an input"):
            run_evaluate(case["real"], case["synth"], mask_path=case["mask"], json_path=target, out=lambda line: None)
    assert {name: sha256(path) for name, path in case.items()} == before


def test_bad_inputs(case, tmp_path):
    quiet = {"out": lambda line: None}
    empty = write_volume(read_volume(case["mask"]).with_array(np.zeros(SHAPE)), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="mask selects no voxel"):
        run_evaluate(case["real"], case["synth"], mask_path=empty, **quiet)
    nan = np.array(read_volume(case["synth"]).array)
    nan[1, 2, 3] = np.nan
    bad = write_volume(read_volume(case["synth"]).with_array(nan), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match=re.escape(f"{bad}: contains 1 NaN")):
        run_evaluate(case["real"], bad, **quiet)
    constant = write_volume(read_volume(case["real"]).with_array(np.full(SHAPE, 7.0)), tmp_path / "constant.nii.gz")
    with pytest.raises(InputError, match=f"{re.escape(str(constant))}: every voxel has the same value"):
        run_evaluate(constant, case["synth"], **quiet)
    assert run_evaluate(constant, case["synth"], data_range=100.0, **quiet) == 0
    with pytest.raises(InputError, match="file not found"):
        run_evaluate(tmp_path / "nothing.nii.gz", case["synth"], **quiet)
    with pytest.raises(InputError, match="output folder does not exist"):
        run_evaluate(case["real"], case["synth"], json_path=tmp_path / "no" / "m.json", **quiet)


def test_the_json_beside_a_3d_input_can_be_written_again(case, tmp_path):
    """``synth.json`` beside ``synth.nii.gz`` is a report of an earlier run, not the volume's frame sidecar
    (a 3D image has none): rerunning the same command rewrites it. A series' sidecar stays protected
    (``test_pipeline_series``)."""
    report = tmp_path / "synth.json"
    assert _run(case["real"], case["synth"], json_path=report)[0] == 0
    assert _run(case["real"], case["synth"], json_path=report)[0] == 0
    assert json.loads(report.read_text())["real"] == str(case["real"])


def test_slice_wise_figures_are_over_axial_slices_whatever_axis_the_file_stores_them_along(tmp_path):
    """A sagittal or coronal 3D acquisition stores its slices along x or y: the slice-wise mean is still over
    the patient's axial planes, so one pair stored two ways gives one table."""
    rng = np.random.default_rng(0)
    real = rng.uniform(100, 200, (12, 16, 20)).astype(np.float32)  # (z, y, x), axial storage, RAS-like
    synth = (real + rng.normal(0, 10, real.shape)).astype(np.float32)
    axial = {"real": tmp_path / "ra.nii.gz", "synth": tmp_path / "sa.nii.gz"}
    write_volume(Volume(real, (1, 1, 1)), axial["real"])
    write_volume(Volume(synth, (1, 1, 1)), axial["synth"])
    # the same voxels stored with the superior axis as the array's last one (voxel axis x points superior)
    turned = (0, 0, 1, 0, 1, 0, 1, 0, 0)
    coronal = {"real": tmp_path / "rc.nii.gz", "synth": tmp_path / "sc.nii.gz"}
    write_volume(Volume(np.ascontiguousarray(np.moveaxis(real, 0, 2)), (1, 1, 1), direction=turned), coronal["real"])
    write_volume(Volume(np.ascontiguousarray(np.moveaxis(synth, 0, 2)), (1, 1, 1), direction=turned),
                 coronal["synth"])
    tables = []
    for files in (axial, coronal):
        lines = []
        run_evaluate(files["real"], files["synth"], out=lines.append)
        tables.append([line for line in lines if "±" in line or "axial slices" in line])
    assert tables[0] == tables[1] and "of 12 axial slices" in tables[0][-1]


def test_a_slice_where_a_metric_is_undefined_is_left_out_of_its_slice_wise_mean():
    """NMSE of a slice whose real voxels are all zero (a slab zero-padded to the grid) is undefined: that
    slice is left out instead of refusing the evaluation."""
    rng = np.random.default_rng(1)
    real = rng.uniform(1, 2, (8, 10, 10)).astype(np.float32)
    real[0] = 0.0
    synth = real + 0.1
    mask = np.ones(real.shape, bool)
    result = evaluate(real, synth, mask, data_range=2.0)
    nmse = result["metrics"]["nmse"]
    assert np.isfinite(nmse["slice_mean"]) and np.isfinite(nmse["volume"])
