"""compare: every eligible model on complete cases, side by side, with BraSyn SSIM and an HTML report."""

from __future__ import annotations

import json

import pytest

from conftest import bundle_untrained
from MRISynthesisLib.cli import main
from MRISynthesisLib.compare import run_compare, summarise
from MRISynthesisLib.errors import InputError

EVERY = ("T1", "T1ce", "T2", "FLAIR")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    bundle_untrained(folder, "unet-ct1")
    bundle_untrained(folder, "seq2seq")
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    assert main(["phantom", "--anatomy", "brain", "--n", "2", "--seed", "80", "--resolution", "4", "--registered",
                 "--out", str(root), "--quiet"]) == 0
    incomplete = sorted(p for p in root.iterdir())[1]
    (incomplete / f"{incomplete.name}-t2f.nii.gz").unlink()
    return root


def test_compare_reports_every_eligible_model_per_target(models, dataset, tmp_path):
    log = []
    report = run_compare(dataset, tmp_path / "cmp", device="cpu", weights_folder=models, progress=False,
                         say=log.append)
    rows = report["rows"]
    assert {r["case"] for r in rows} == {"MRIS-BRAIN-00080"} and any("not complete" in line for line in log)
    pairs = {(r["target"], r["model"]) for r in rows}
    assert pairs == {("T1ce", "unet-ct1"), *((t, "seq2seq") for t in EVERY)}
    assert all(r["brasyn_ssim_non_tumour"] is not None and -1 <= r["brasyn_ssim_non_tumour"] <= 1 for r in rows)
    assert set(report["best"]) == set(EVERY) and report["best"]["T1"] == "seq2seq"
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert len(saved["rows"]) == 5 and (tmp_path / "cmp" / "compare.csv").read_text().count("\n") == 6
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "Research use only" in page
    if report["notes"]:
        assert all(r["lpips"] is None for r in rows) and "LPIPS unavailable" in page


def test_best_model_is_the_highest_mean_psnr():
    rows = [{"target": "T1ce", "model": "a", "psnr": 20.0, "ssim": 0.5, "nmse": 0.5, "mae": 0.1},
            {"target": "T1ce", "model": "b", "psnr": 23.0, "ssim": 0.4, "nmse": 0.4, "mae": 0.1},
            {"target": "T1ce", "model": "a", "psnr": 21.0, "ssim": 0.5, "nmse": 0.5, "mae": 0.1}]
    means, best = summarise(rows)
    assert best == {"T1ce": "b"} and [m["cases"] for m in means] == [2, 1]


def test_nothing_complete_is_an_error(models, tmp_path):
    root = tmp_path / "cases"
    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", "81", "--resolution", "4", "--registered",
                 "--out", str(root), "--quiet"]) == 0
    case = next(root.iterdir())
    (case / f"{case.name}-t1c.nii.gz").unlink()
    with pytest.raises(InputError, match="no complete case"):
        run_compare(root, tmp_path / "o", device="cpu", weights_folder=models, progress=False, say=lambda m: None)
