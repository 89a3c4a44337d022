"""batch: every missing sequence of a BraTS-layout folder, the BraSyn layout, resuming, failures go on."""

from __future__ import annotations

import shutil

import pytest

from conftest import bundle_untrained, hash_tree
from MRISynthesisLib.batch import output_name, run_batch
from MRISynthesisLib.selection import choose_model, explain, infer_anatomy
from MRISynthesisLib.cli import main
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.volume import read_volume

EVERY = ("T1", "T1ce", "T2", "FLAIR")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    bundle_untrained(folder, "unet-ct1", metrics={"unet-ct1 PSNR": "22.0 ± 0.5"})
    bundle_untrained(folder, "seq2seq", metrics={"T1ce: seq2seq PSNR": "20.0 ± 0.5"})
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    assert main(["phantom", "--anatomy", "brain", "--n", "4", "--seed", "70", "--resolution", "4", "--registered",
                 "--out", str(root), "--quiet"]) == 0
    cases = sorted(p for p in root.iterdir() if p.is_dir())
    (cases[0] / f"{cases[0].name}-t1c.nii.gz").unlink()                     # one missing: T1ce
    for suffix in ("t1c", "t2f"):                                            # two missing: T1ce, FLAIR
        (cases[1] / f"{cases[1].name}-{suffix}.nii.gz").unlink()
    (cases[3] / f"{cases[3].name}-t1c.nii.gz").unlink()                     # missing T1ce, and
    (cases[3] / f"{cases[3].name}-t2w.nii.gz").write_bytes(b"not an image")  # an unreadable input: the others go on
    for case in cases:
        (case / "truth.json").unlink(missing_ok=True)
    return root


def test_brasyn_layout_and_the_choice_of_models(models, dataset, tmp_path):
    before = hash_tree(dataset)
    out = tmp_path / "brasyn"
    log = []
    results = run_batch(dataset, out, brasyn=True, device="cpu", progress=False, weights_folder=models, say=log.append)
    status = {r.case: r.status for r in results}
    names = sorted(status)
    assert [status[n] for n in names] == ["written", "written", "nothing to do", "failed"]
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([f"{names[0]}-t1c.nii.gz", f"{names[1]}-t1c.nii.gz", f"{names[1]}-t2f.nii.gz"])
    sibling = read_volume(dataset / names[0] / f"{names[0]}-t1n.nii.gz")
    made = read_volume(out / f"{names[0]}-t1c.nii.gz")
    assert made.spatial_shape == sibling.spatial_shape and made.spacing == sibling.spacing
    assert made.origin == sibling.origin and made.direction == sibling.direction
    assert any("unet-ct1 (best measured" in line for line in log)           # 22 dB beats 20 dB
    assert any(names[1] in line and "seq2seq" in line for line in log)       # the U-Net needs FLAIR
    assert any("t2w" in line and "FAILED" in line for line in log)
    assert hash_tree(dataset) == before                                      # inputs untouched

    again = run_batch(dataset, out, brasyn=True, device="cpu", progress=False, weights_folder=models, say=log.append)
    assert {r.case: r.status for r in again}[names[0]] == "skipped"


def test_default_layout_writes_case_folders_with_provenance(models, dataset, tmp_path):
    out = tmp_path / "out"
    run_batch(dataset, out, model="seq2seq", device="cpu", progress=False, weights_folder=models, say=lambda m: None)
    case = sorted(p.name for p in dataset.iterdir())[0]
    assert (out / case / f"{case}-t1c.nii.gz").exists() and (out / case / f"{case}-t1c.report.json").exists()
    log = []  # a rerun asking for another model skips what is there, and says which model made it
    run_batch(dataset, out, model="unet-ct1", device="cpu", progress=False, weights_folder=models, say=log.append)
    assert f"{case}: already written, skipped (made by seq2seq; --overwrite to make them with unet-ct1)" in log


def test_bad_requests(models, dataset, tmp_path):
    with pytest.raises(InputError, match="inside the input folder"):
        run_batch(dataset, dataset / "results", weights_folder=models, progress=False)
    with pytest.raises(InputError, match="no such data folder"):
        run_batch(tmp_path / "nowhere", tmp_path / "o", weights_folder=models, progress=False)
    with pytest.raises(InputError, match="no bundled model makes T1ce from nothing"):
        choose_model("T1ce", set(), "brain", "best", models)
    with pytest.raises(InputError, match="unet-ct1 cannot make T1ce"):
        choose_model("T1ce", {"T1", "T2"}, "brain", "unet-ct1", models)
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case,sequence,path\nA,T1,a.nii.gz\nA,t1n,b.nii.gz\n")
    with pytest.raises(InputError, match="lists T1 twice"):
        run_batch(manifest, tmp_path / "o", weights_folder=models, progress=False)


def test_a_case_no_model_can_complete_is_skipped_with_the_reason(models, dataset, tmp_path):
    """Asked for the U-Net (T1+T2+FLAIR -> T1ce), the case missing T1ce and FLAIR cannot be done: that is
    said, with what the model lacks, and it is a skip, not a failure (the exit code stays clean for it)."""
    log = []
    results = {r.case: r for r in run_batch(dataset, tmp_path / "u", model="unet-ct1", brasyn=True, device="cpu",
                                             progress=False, weights_folder=models, say=log.append)}
    names = sorted(results)
    assert results[names[0]].status == "written"
    assert results[names[1]].status == "skipped" and "unet-ct1 cannot make T1ce" in results[names[1]].detail
    assert "unet-ct1 cannot make FLAIR" in results[names[1]].detail
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == [f"{names[0]}-t1c.nii.gz"]
    assert any(line.startswith(f"  skipped {names[1]}") for line in log)    # in the summary


def test_duplicate_case_names_fail_both_folders_and_the_rest_goes_on(models, dataset, tmp_path):
    """A case copied into a second folder would write the same flat BraSyn file twice: both copies are
    reported, neither is guessed at, the other cases still run."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    first = sorted(p.name for p in dataset.iterdir())[0]
    shutil.copytree(data / first, data / "zz-copy")
    log = []
    results = {r.case: r for r in run_batch(data, tmp_path / "d", model="seq2seq", brasyn=True, device="cpu",
                                             progress=False, weights_folder=models, say=log.append)}
    assert results[first].status == results["zz-copy"].status == "failed"
    assert f"duplicate case name {first}" in results["zz-copy"].detail
    assert sorted(r.status for r in results.values()) == ["failed", "failed", "failed", "nothing to do", "written"]


def test_output_names_follow_the_siblings(tmp_path):
    assert output_name("BraTS2021_00001", {"T1": tmp_path / "BraTS2021_00001_t1.nii.gz"}, "T1ce") == \
        "BraTS2021_00001_t1ce.nii.gz"
    assert output_name("BraTS-GLI-00001-000", {"T1": tmp_path / "BraTS-GLI-00001-000-t1n.nii.gz"}, "T1ce") == \
        "BraTS-GLI-00001-000-t1c.nii.gz"
    # the name the files carry wins over the folder's: BraSyn matches outputs to cases by it
    assert output_name("folder-7", {"T1": tmp_path / "BraTS-GLI-00007-000-t1n.nii.gz",
                                    "T2": tmp_path / "BraTS-GLI-00007-000-t2w.nii.gz"}, "FLAIR") == \
        "BraTS-GLI-00007-000-t2f.nii.gz"
    # the siblings' format when they share a single-file one; NIfTI otherwise
    assert output_name("C", {"T1": tmp_path / "C-t1n.nrrd", "T2": tmp_path / "C-t2w.nrrd"}, "T1ce") == "C-t1c.nrrd"
    assert output_name("C", {"T1": tmp_path / "C-t1n.MHA"}, "T1ce") == "C-t1c.MHA"
    assert output_name("C", {"T1": tmp_path / "C-t1n.nrrd", "T2": tmp_path / "C-t2w.mha"}, "T1ce") == "C-t1c.nii.gz"
    assert output_name("C", {"T1": tmp_path / "C-t1n.mhd"}, "T1ce") == "C-t1c.nii.gz"


def test_batch_command_exit_code_reports_failures(models, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(models))
    assert main(["batch", "--data", str(dataset), "--out", str(tmp_path / "b"), "--brasyn", "--device", "cpu",
                 "--quiet"]) == 2  # one unreadable case
    good = tmp_path / "good"
    shutil.copytree(dataset, good, ignore=lambda d, names: [n for n in names if n.endswith("3")] if d == str(dataset) else [])
    cases = sorted(p.name for p in good.iterdir())
    assert len(cases) == 3
    assert main(["batch", "--data", str(good), "--out", str(tmp_path / "g"), "--brasyn", "--device", "cpu",
                 "--quiet"]) == 0


def test_explain_says_why_a_model_cannot_make_the_target(models):
    reasons = dict(explain("T1ce", {"T1", "T2"}, "brain", models))
    assert reasons["seq2seq-brain-lite.pt"] is None
    assert reasons["unet-ct1-brain-lite.pt"] == "unet-ct1 needs FLAIR as well"
    assert dict(explain("T2", {"T1", "T2", "FLAIR"}, "brain", models))["unet-ct1-brain-lite.pt"] == \
        "unet-ct1 makes T1ce, not T2"


def test_the_inputs_tell_the_anatomy_whose_models_to_offer(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    bundle_untrained(folder, "unet-ct1")
    bundle_untrained(folder, "important-net", anatomy="breast", inputs=("T1", "DWI", "DCE"),
                     frames={"DWI": -1, "DCE": 1})
    assert infer_anatomy({"T1", "DWI", "DCE"}, folder) == "breast"
    assert infer_anatomy({"T1", "DCE"}, folder) == "breast"
    assert infer_anatomy({"T1", "T2", "FLAIR"}, folder) == "brain"
    assert infer_anatomy({"T1"}, folder) == "brain"  # both take T1: the default
    assert infer_anatomy({"T1"}, folder, default="breast") == "breast"
    assert infer_anatomy({"PD"}, folder) == "brain" and infer_anatomy(set(), folder) == "brain"
    # sequences only one anatomy's models take count first: FLAIR and DCE tie, so brain
    assert infer_anatomy({"T1", "FLAIR", "DCE"}, folder) == "brain"
    assert infer_anatomy({"T1", "DWI", "DCE", "FLAIR"}, folder) == "breast"


def test_a_case_whose_input_covers_part_of_the_head_is_written_with_a_warning_in_the_summary(models, dataset, tmp_path):
    from MRISynthesisLib.volume import Volume, write_volume

    import numpy as np

    source = sorted(p for p in dataset.iterdir() if p.is_dir())[0]  # T1ce missing
    data = tmp_path / "data"
    shutil.copytree(source, data / source.name)
    flair_path = data / source.name / f"{source.name}-t2f.nii.gz"
    flair = read_volume(flair_path)
    n = flair.spatial_shape[0]
    origin = np.asarray(flair.origin) + flair.direction_matrix @ (0.0, 0.0, (n // 2) * flair.spacing[2])
    write_volume(Volume(flair.array[n // 2:], flair.spacing, tuple(origin), flair.direction), flair_path)  # upper half
    log = []
    [result] = run_batch(data, tmp_path / "out", device="cpu", progress=False, weights_folder=models, say=log.append)
    assert result.status == "written" and len(result.warnings) == 1
    assert result.warnings[0].startswith("T1ce: FLAIR covers")
    assert any(line.startswith(f"  warning {source.name}: T1ce: FLAIR covers") for line in log)  # in the summary
    full = run_batch(dataset, tmp_path / "full", device="cpu", progress=False, weights_folder=models, say=lambda m: None)
    assert all(r.warnings == [] for r in full)


def test_manifest_cases_whose_files_share_a_name_fail_only_for_the_flat_brasyn_folder(tmp_path):
    """Every patient's folder holding scan_t1.nii.gz, … gives every case the file-carried name "scan": the
    BraSyn folder would receive one scan-t1c.nii.gz for all of them, so both are failed by name there;
    elsewhere each case writes into a folder of its own manifest name and both go on."""
    from MRISynthesisLib.batch import list_cases

    rows = ["case,sequence,path"]
    for patient in ("pA", "pB"):
        for seq in ("t1", "t2", "flair"):
            rows.append(f"{patient},{seq},{patient}/scan_{seq}.nii.gz")
    manifest = tmp_path / "cases.csv"
    manifest.write_text("\n".join(rows) + "\n")
    flat = list_cases(manifest, brasyn=True)
    assert all("duplicate case name scan in cases pA, pB" in flat[p]["error"] for p in ("pA", "pB"))
    per_case = list_cases(manifest)
    assert sorted(per_case["pA"]) == ["FLAIR", "T1", "T2"] and "error" not in per_case["pB"]


def test_a_case_file_the_system_cannot_open_fails_that_case_only(tmp_path):
    """An OSError for one case's file (here a name over the file system's 255 bytes) is that case's failure,
    reported with the file, not the end of the run."""
    from MRISynthesisLib.batch import process_case

    long_file = tmp_path / ("a" * 300 + ".nii.gz")
    result = process_case("C1", {"T1": long_file, "T2": long_file}, tmp_path, anatomy="brain", model="best",
                          brasyn=False, register="none", device="cpu", overwrite=False, say=lambda line: None)
    assert result.status == "failed" and "File name too long" in result.detail and "a" * 300 in result.detail


def test_a_case_that_fails_part_way_leaves_none_of_its_outputs(models, dataset, tmp_path, monkeypatch):
    """The case missing T1ce and FLAIR: the first target is written, the second fails; the case is reported
    as failed and the file (and report) written for it are removed, so no output reads as its result."""
    import MRISynthesisLib.pipeline as pipeline

    real_synthesize, calls = pipeline.synthesize, []
    case = sorted(p for p in dataset.iterdir() if p.is_dir())[1]

    def second_fails(*args, **kwargs):
        if any(case.name in name for name in kwargs["input_names"].values()):
            calls.append(args[1])
            if len(calls) == 2:
                raise InputError(f"{args[1]}: does not overlap the field of view of T1")
        return real_synthesize(*args, **kwargs)
    monkeypatch.setattr(pipeline, "synthesize", second_fails)
    for brasyn in (False, True):
        calls.clear()
        out, log = tmp_path / f"out-{brasyn}", []
        results = run_batch(dataset, out, brasyn=brasyn, device="cpu", progress=False, weights_folder=models,
                            say=log.append)
        assert {r.case: r.status for r in results}[case.name] == "failed"
        assert not [p for p in out.rglob("*") if case.name in p.name and p.is_file()], brasyn
        assert any(line.startswith(f"{case.name}: removed what it had written") for line in log)
        assert len(calls) == 2


def test_a_case_taken_as_aligned_that_is_not_is_warned_of_once(models, tmp_path):
    """batch with registration 'none' on a case as acquired: the moved sequence is named once for the case,
    not once for each target made from it."""
    data = tmp_path / "acquired"
    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", "72", "--resolution", "4", "--out", str(data),
                 "--quiet"]) == 0
    case = next(p for p in data.iterdir() if p.is_dir())
    for suffix in ("t1c", "t2f"):  # two targets to make from T1 and T2
        (case / f"{case.name}-{suffix}.nii.gz").unlink()
    log = []
    results = run_batch(data, tmp_path / "out", register="none", device="cpu", progress=False, weights_folder=models,
                        say=log.append)
    assert [r.status for r in results] == ["written"] and len(results[0].outputs) == 2
    warned = [line for line in log if line.startswith(f"{case.name}: warning:") and "does not look aligned" in line]
    assert len(warned) == 1 and f"{case.name}: warning: T2 does not look aligned with T1" in warned[0]
    assert results[0].warnings == [warned[0].split(": warning: ", 1)[1]]  # and once in the closing summary
