"""compare: every eligible model on complete cases, side by side, with BraSyn SSIM and an HTML report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    log, steps = [], []
    report = run_compare(dataset, tmp_path / "cmp", device="cpu", weights_folder=models, progress=False,
                         on_step=lambda fraction, message: steps.append((fraction, message)), say=log.append)
    rows = report["rows"]
    # one step before each synthesis, as fractions of the whole run (the panel's progress bar); the
    # incomplete case is skipped without steps
    assert len(steps) == len(rows) and [f for f, _ in steps] == sorted(f for f, _ in steps)
    assert steps[0] == (0.0, "MRIS-BRAIN-00080: seq2seq -> T1") and all(0 <= f < 0.5 for f, _ in steps)
    assert {r["case"] for r in rows} == {"MRIS-BRAIN-00080"} and any("not complete" in line for line in log)
    pairs = {(r["target"], r["model"]) for r in rows}
    assert pairs == {("T1ce", "unet-ct1"), *((t, "seq2seq") for t in EVERY)}
    assert all(r["brasyn_ssim_non_tumour"] is not None and -1 <= r["brasyn_ssim_non_tumour"] <= 1 for r in rows)
    assert set(report["best"]) == set(EVERY) and report["best"]["T1"] == "seq2seq"
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert len(saved["rows"]) == 5 and (tmp_path / "cmp" / "compare.csv").read_text().count("\n") == 6
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "Research use only" in page
    assert "not complete, left out: MRIS-BRAIN-00081: missing FLAIR" in saved["notes"] and saved["failures"] == []
    assert "MRIS-BRAIN-00081" in page  # the case left out is named in the report, not only on the console
    assert not [note for note in saved["notes"] if "aligned" in note]  # the phantom's --registered cases are
    if [note for note in report["notes"] if note.startswith("LPIPS")]:
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


def _compare_and_table_for_one_held_out_subject(folder: str) -> None:
    """Child-process half of the next test: prints {"compare": row, "table": model's means} as JSON.

    Run in a fresh process because ANTs' registration is repeatable only when single-threaded and
    seeded from its first use in a process on (ITK reads its thread count once)."""
    from ants.config import set_ants_deterministic
    from sklearn.dummy import DummyRegressor

    from MRISynthesisLib import quality
    from MRISynthesisLib.weights import read_manifest

    set_ants_deterministic(True, 1)
    folder = Path(folder)
    seed = quality.HELD_OUT_SEEDS[0]
    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", str(seed), "--resolution", "4",
                 "--out", str(folder / "cases"), "--quiet"]) == 0
    report = run_compare(folder / "cases", folder / "cmp", models=("unet-ct1",), register="rigid", device="cpu",
                         progress=False, say=lambda m: None)
    constant = DummyRegressor().fit([[0.0]], [0.0])
    quality.fit_baselines = lambda entry, target, seeds=None, **_: quality.Baselines(constant, constant)
    table = quality.evaluate_entry(read_manifest()[0], "T1ce", seeds=(seed,), say=lambda m: None)["unet-ct1"]
    print(json.dumps({"compare": report["rows"][0], "table": {k: v["mean"] for k, v in table.items()}}))


def test_compare_reproduces_the_quality_table_for_the_same_subject_and_model(tmp_path):
    """The weights issue's table (``evaluate-models``) scores a model on held-out phantom subjects as
    acquired (each sequence on its own grid, registered rigidly). ``compare`` on the same subject written
    to disk, with ``--register rigid``, must give the model's same four numbers: one metric code path,
    not two. The table's voxel-wise baselines are not what is checked, so they are replaced by constant
    predictors to keep the test short. Registration is made repeatable in a child process (single
    thread, fixed seed): otherwise two runs of the table itself differ by up to ~0.15 dB. What remains
    is the NIfTI round trip of the subject (float32 on disk): ~1e-4 dB, hence the tolerances; skipping
    the registration of the real target alone moves PSNR by ~0.8 dB."""
    models = tmp_path / "models"
    models.mkdir()
    bundle_untrained(models, "unet-ct1")
    testing = Path(__file__).parent
    env = {**os.environ, "MRISYNTHESIS_MODELS_DIR": str(models), "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(testing), str(testing.parent)])}
    child = subprocess.run([sys.executable, "-c", "import test_compare as t; "
                            f"t._compare_and_table_for_one_held_out_subject({str(tmp_path)!r})"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    numbers = json.loads(child.stdout.strip().splitlines()[-1])
    row, table = numbers["compare"], numbers["table"]
    assert row["model"] == "unet-ct1" and row["target"] == "T1ce"
    assert row["psnr"] == pytest.approx(table["psnr"], abs=0.01)
    for metric in ("ssim", "nmse", "mae"):
        assert row[metric] == pytest.approx(table[metric], rel=1e-3, abs=1e-4), metric  # SSIM can be near 0


def test_cases_with_and_without_a_segmentation_share_one_table_and_a_failed_case_is_reported(models, tmp_path,
                                                                                               capsys, monkeypatch):
    """A case with a segmentation adds tumour-region columns the first case lacks (the CSV once crashed after
    all the work); a case that fails is left out of the report, named in its notes, and the exit code is 2."""
    data = tmp_path / "cases"
    assert main(["phantom", "--anatomy", "brain", "--n", "4", "--seed", "85", "--resolution", "4", "--registered",
                 "--out", str(data), "--quiet"]) == 0
    first, second, third, fourth = sorted(data.iterdir())
    next(first.glob("*-seg.nii.gz")).unlink()  # the first case, whose row names the columns, has no tumour labels
    (next(third.glob("*-t2w.nii.gz"))).write_bytes(b"not an image")
    t1 = next(fourth.glob("*-t1n.nii.gz"))  # two files for T1: which one is meant cannot be told
    (fourth / t1.name.replace("-t1n.", "-t1.")).write_bytes(t1.read_bytes())
    out = tmp_path / "cmp"
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(models))
    code = main(["compare", "--data", str(data), "--out", str(out), "--models", "unet-ct1", "--device", "cpu",
                 "--quiet"])
    assert code == 2 and "2 case(s) failed" in capsys.readouterr().err
    header = (out / "compare.csv").read_text().splitlines()[0]
    assert "brasyn_ssim_tumour" in header
    saved = json.loads((out / "compare.json").read_text())
    assert {r["case"] for r in saved["rows"]} == {first.name, second.name}
    assert len(saved["failures"]) == 2 and "two files for T1" in saved["failures"][1]
    assert all(any(case.name in note for note in saved["notes"]) for case in (third, fourth))


def test_cases_taken_as_aligned_that_are_not_are_named_once_per_case(tmp_path):
    """compare's default registration is 'none': a case as acquired (the phantom's motion) gets one line per
    moved sequence in the notes and the console, checked once for the case, not once per model and target."""
    models = tmp_path / "models"
    models.mkdir()
    bundle_untrained(models, "unet-ct1")
    bundle_untrained(models, "seq2seq")
    data = tmp_path / "acquired"
    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", "82", "--resolution", "4", "--out", str(data),
                 "--quiet"]) == 0
    log = []
    report = run_compare(data, tmp_path / "cmp", device="cpu", weights_folder=models, progress=False, say=log.append)
    named = sorted(note.split(": ", 1)[1].split()[0] for note in report["notes"] if "does not look aligned" in note)
    assert named == ["FLAIR", "T1ce", "T2"]
    assert len([line for line in log if "does not look aligned" in line]) == 3
    # every sequence of a case is an input and a real target: the warning says both
    assert all("counts as synthesis error where it is the real target" in note for note in report["notes"]
               if "does not look aligned" in note)
    assert len(report["rows"]) == 5  # five syntheses, the check made once
