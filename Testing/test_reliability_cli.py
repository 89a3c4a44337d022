"""Reliability of every command that reads the user's files (issue 12): each bad input gives exit 2, one
``error:`` line on stderr naming the problem, no traceback, every file under the test folder byte-identical
afterwards and no file added to it (no partial output).

``CASES`` is the table of (subcommand, bad input) pairs. The pairs left out, and why:

* Already covered through the CLI with the same contract: ``check`` against a missing, empty, truncated,
  text or 2D file, NaN, Inf, constant, a wrong sequence name and mismatched geometry
  (``test_cli.test_check_errors``); ``synthesize --out`` equal to an input (``test_pipeline.
  test_synthesize_command``); ``batch --out`` inside ``--data`` and ``--data`` missing
  (``test_batch.test_bad_requests``); ``compare --data`` missing (``test_cli.test_subprocess_error_has_no_
  traceback``); ``train --data`` missing (``test_training.test_train_command_errors``); ``evaluate --json``
  equal to an input (``test_evaluate_cmd``, every input in turn).
* Output equal to an input, unwritable output folder: ``check`` writes nothing.
* Mismatched geometry: ``register`` exists to fix it; ``synthesize`` registers its inputs; ``batch`` and
  ``compare`` resample the inputs onto the reference in physical space (``--register none`` trusts the
  BraTS co-registration, it does not require identical headers); so does ``rank``, onto its model's grid.
* Negative-only volumes: ``register`` (mutual information) and ``evaluate`` (metrics on any intensities:
  z-scored or difference images are legitimate) are defined for them; only the models need MR magnitudes.
* A 4D file of one frame is read as the 3D volume it holds, which is right wherever a 3D volume is
  expected; it is a bad input only where a series is (``check`` with DCE/DWI). The brain models take no
  series, and a breast run would only repeat the same check (``inputs.check_volume``) at ten times the cost.
* A missing file inside a case folder is an absent sequence, which is what ``batch`` is for and what
  ``compare``/``rank``/``train`` report by name (``test_training.test_folder_source_checks_cases``).
* Sequence names: ``register``, ``evaluate``, ``export`` and ``evaluate-gan`` take none; folder commands
  take them from file names (an unknown suffix is not a sequence file), so the wrong-name case is a
  manifest CSV.
* ``export`` reads a run folder and ``evaluate-gan`` a patch file (.npz), not images: of the image kinds
  only the file-level ones (missing, empty, truncated, not the right format) and non-finite values apply.
* ``demo``, ``phantom``, ``generate``, ``evaluate-models`` and ``models`` read no user file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import bundle_untrained, hash_tree, make_volume
from test_cli import assert_one_error_line, run_cli
from MRISynthesisLib.patches import save_patches
from MRISynthesisLib.volume import Volume, write_volume

SHAPE = (16, 16, 16)
SPACING = (2.0, 2.0, 2.0)
SUFFIX = {"T1": "t1n", "T1ce": "t1c", "T2": "t2w", "FLAIR": "t2f"}


def good_volume(seed: int, *, low: float = 100.0, high: float = 1000.0, spacing=SPACING) -> Volume:
    return make_volume(SHAPE, spacing=spacing, seed=seed, low=low, high=high)


# --------------------------------------------------------------------- bad image files: write, return needles
def _raw_nifti(array: np.ndarray, path: Path) -> None:
    """Shapes a Volume cannot hold (2D, 5D, 4D of one frame), written as the file a user might have."""
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


def _with(path: Path, change) -> None:
    array = good_volume(11).array.copy()
    change(array)
    write_volume(good_volume(11).with_array(array), path)


def bad_missing(path):
    path.unlink(missing_ok=True)
    return ["file not found"]


def bad_empty(path):
    path.write_bytes(b"")
    return ["file is empty"]


def bad_truncated(path):
    write_volume(good_volume(12), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return ["corrupt or truncated"]


def bad_text(path):
    path.write_text("patient notes, not an image\n")
    return ["cannot be read as an image"]


def bad_2d(path):
    _raw_nifti(np.random.default_rng(1).uniform(100, 1000, (16, 16)), path)
    return ["2D"]


def bad_5d(path):
    _raw_nifti(np.random.default_rng(2).uniform(100, 1000, (16, 16, 16, 2, 2)), path)
    return ["5D"]


def bad_one_voxel(path):
    write_volume(Volume(np.full((1, 1, 1), 500.0)), path)
    return ["(1, 1, 1)", "not a 3D volume"]


def bad_nan(path):
    _with(path, lambda a: a.__setitem__((3, 4, 5), np.nan))
    return ["1 NaN"]


def bad_inf(path):
    _with(path, lambda a: a.__setitem__((3, 4, 5), -np.inf))
    return ["1 Inf"]


def bad_constant(path):
    write_volume(good_volume(13).with_array(np.full(SHAPE, 7.0)), path)
    return ["same value"]


def bad_negative(path):
    write_volume(good_volume(14, low=-1000.0, high=-100.0), path)
    return ["negative"]


def bad_one_frame(path):
    _raw_nifti(np.random.default_rng(3).uniform(100, 1000, (16, 16, 16, 1)), path)
    return ["4D series", "one 3D frame"]


def bad_other_grid(path):
    write_volume(good_volume(15, spacing=(2.0, 2.0, 3.0)), path)
    return ["not on the grid", "spacing"]


IMAGE_FILE = (bad_empty, bad_truncated, bad_text, bad_2d, bad_5d)
IMAGE_CONTENT = (bad_one_voxel, bad_nan, bad_inf, bad_constant)


# --------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    bundle_untrained(folder, "unet-ct1")
    bundle_untrained(folder, "seq2seq")
    bundle_untrained(folder, "mp-gan", anatomy="breast", file="mp-gan-breast-lite-dcgan.pt", inputs=("T2", "DCE"),
                     targets=("T2", "DCE"), normalization="percentile", voxel_size_mm=1.5,
                     build_overrides={"patch_size": 32, "variant": "dcgan"})
    return folder


@pytest.fixture(autouse=True)
def _models_dir(models, monkeypatch):
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(models))


def _can_create_in(folder: Path) -> bool:
    try:
        (folder / ".probe").mkdir()
    except OSError:
        return False
    (folder / ".probe").rmdir()
    return True


@pytest.fixture
def unwritable(tmp_path):
    """A folder nothing can be created in: read-only permissions, or for root (who ignores them) /sys,
    where the kernel refuses new entries even to root."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if _can_create_in(folder):
        folder.chmod(0o755)
        folder.rmdir()
        folder = Path("/sys")
        assert folder.is_dir() and not _can_create_in(folder), "no folder found that refuses new files"
    listing = sorted(os.listdir(folder))
    yield folder
    assert sorted(os.listdir(folder)) == listing  # nothing was written there either
    if folder != Path("/sys"):
        folder.chmod(0o755)


def write_case(root: Path, name: str, sequences=("T1", "T1ce", "T2", "FLAIR"), seed: int = 0) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for k, seq in enumerate(sequences):
        write_volume(good_volume(seed + k), folder / f"{name}-{SUFFIX[seq]}.nii.gz")
    return folder


def write_manifest_with_wrong_name(root: Path) -> Path:
    """A case,sequence,path CSV whose second row names a sequence that does not exist (T3)."""
    for k, seq in enumerate(("T1", "T2")):
        write_volume(good_volume(k), root / f"{seq}.nii.gz")
    csv = root / "cases.csv"
    csv.write_text("case,sequence,path\nC1,T1,T1.nii.gz\nC1,T3,T2.nii.gz\n")
    return csv


# --------------------------------------------------------------------- the commands, each with its bad input slot
def cmd_check(tmp, bad, slot="T2"):
    write_volume(good_volume(1), tmp / "t1.nii.gz")
    path = tmp / f"{slot.lower()}.nii.gz"
    return ["check", "--input", f"T1={tmp / 't1.nii.gz'}", f"{slot}={path}"], [path.name, *bad(path)]


def cmd_register(tmp, bad, which="moving"):
    fixed, moving = tmp / "t1.nii.gz", tmp / "t2.nii.gz"
    write_volume(good_volume(1), fixed)
    write_volume(good_volume(2), moving)
    path = moving if which == "moving" else fixed
    return (["register", "--fixed", fixed, "--moving", moving, "--transform", "rigid", "--out", tmp / "out"],
            [path.name, *bad(path)])


def _synth_files(tmp):
    files = {seq: tmp / f"{seq.lower()}.nii.gz" for seq in ("T1", "T2", "FLAIR", "T1ce")}
    for k, path in enumerate(files.values()):
        write_volume(good_volume(k), path)
    return files


def _synthesize_args(files, out, *extra):
    return ["synthesize", "--model", "unet-ct1", "--input", *(f"{s}={files[s]}" for s in ("T1", "T2", "FLAIR")),
            "--target", "T1ce", "--out", out, "--register", "none", "--device", "cpu", "--quiet", *extra]


def cmd_synthesize(tmp, bad, slot="T2"):
    files = _synth_files(tmp)
    args = _synthesize_args(files, tmp / "synth-t1c.nii.gz")
    if slot == "real":
        args += ["--real", files["T1ce"]]
    return args, [files[slot if slot != "real" else "T1ce"].name, *bad(files[slot if slot != "real" else "T1ce"])]


def cmd_evaluate(tmp, bad, slot="synth"):
    real, synth = tmp / "real.nii.gz", tmp / "synth.nii.gz"
    write_volume(good_volume(1), real)
    write_volume(good_volume(2), synth)
    (tmp / "out").mkdir()
    path = synth if slot == "synth" else real
    return (["evaluate", "--real", real, "--synth", synth, "--json", tmp / "out" / "metrics.json"],
            [path.name, *bad(path)])


def _cases(tmp, *, complete: bool, n: int):
    root = tmp / "cases"
    for k in range(n):
        write_case(root, f"C{k + 1}", ("T1", "T1ce", "T2", "FLAIR") if complete or k else ("T1", "T2", "FLAIR"),
                   seed=10 * k)
    return root, root / "C1" / "C1-t2w.nii.gz"


def cmd_rank(tmp, bad):
    root, path = _cases(tmp, complete=True, n=2)
    return (["rank", "--data", root, "--model", "seq2seq", "--out", tmp / "rank", "--bootstrap", "0", "--device",
             "cpu", "--quiet"], [path.name, *bad(path)])


def cmd_batch(tmp, bad):
    root, path = _cases(tmp, complete=False, n=1)
    return (["batch", "--data", root, "--out", tmp / "batch", "--model", "seq2seq", "--device", "cpu", "--quiet"],
            ["C1", path.name, *bad(path)])


def cmd_compare(tmp, bad):
    root, path = _cases(tmp, complete=True, n=1)
    return (["compare", "--data", root, "--out", tmp / "compare", "--models", "seq2seq", "--device", "cpu",
             "--quiet"], ["C1", path.name, *bad(path)])


def cmd_train(tmp, bad):
    root, path = _cases(tmp, complete=True, n=2)
    return (["train", "--model", "unet-ct1", "--data", root, "--out", tmp / "run", "--steps", "1", "--workers", "0",
             "--device", "cpu", "--quiet"], [path.name, *bad(path)])


FOLDER_COMMANDS = {"rank": cmd_rank, "batch": cmd_batch, "compare": cmd_compare, "train": cmd_train}


# --------------------------------------------------------------------- export: a run folder made by hand
def write_run(folder: Path) -> Path:
    """What ``train`` leaves for ``export``: run.json, split.json and a checkpoint of an untrained U-Net."""
    from MRISynthesisLib.models import build

    (folder / "checkpoints").mkdir(parents=True)
    options = {"data": "phantom:brain:2", "seed": 0, "batch_size": 1, "anatomy": "brain", "recipe_options": {}}
    (folder / "run.json").write_text(json.dumps({"model": "unet-ct1", "config": "lite", "options": options}))
    (folder / "split.json").write_text(json.dumps({"train": ["a"], "validation": ["b"]}))
    torch.manual_seed(0)
    state = {"step": 1, "best_psnr": 10.0, "recipe": {"networks": {"generator": build("unet-ct1", "lite").state_dict()}}}
    torch.save(state, folder / "checkpoints" / "best.pt")
    return folder


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "text": b"not a checkpoint\n"}[how])


def cmd_export(tmp, what):
    run = write_run(tmp / "run")
    needles = {"missing run": [str(tmp / "nowhere"), "no run.json"], "empty run.json": ["run.json", "empty"],
               "text run.json": ["run.json", "not valid JSON"], "truncated run.json": ["run.json", "not valid JSON"],
               "empty checkpoint": ["best.pt", "corrupt or truncated"],
               "truncated checkpoint": ["best.pt", "corrupt or truncated"],
               "text checkpoint": ["best.pt", "corrupt or truncated"]}[what]
    kind, _, target = what.partition(" ")
    if target == "run.json":
        _damage(run / "run.json", kind) if kind != "text" else (run / "run.json").write_text("model: unet-ct1\n")
    elif target == "checkpoint":
        _damage(run / "checkpoints" / "best.pt", kind)
    else:
        run = tmp / "nowhere"
    return ["export", "--run", run, "--out", tmp / "exported"], needles


def cmd_resume(tmp, what):
    """``train --resume`` into a run folder whose run.json or last checkpoint is damaged."""
    run = write_run(tmp / "run")
    (run / "checkpoints" / "best.pt").rename(run / "checkpoints" / "last.pt")
    kind, _, target = what.partition(" ")
    if target == "run.json":
        _damage(run / "run.json", kind) if kind != "text" else (run / "run.json").write_text("model: unet-ct1\n")
        needles = ["run.json", "empty" if kind == "empty" else "not valid JSON"]
    else:
        _damage(run / "checkpoints" / "last.pt", kind)
        needles = ["last.pt", "corrupt or truncated"]
    return ["train", "--model", "unet-ct1", "--data", "phantom:brain:2", "--out", run, "--resume", "--steps", "2",
            "--batch-size", "1", "--workers", "0", "--quiet"], needles  # the run's own options, as a resume must


# --------------------------------------------------------------------- evaluate-gan: a real patch file
def write_patches(path: Path, change=None) -> Path:
    patches = np.random.default_rng(4).uniform(-1, 1, (6, 7, 32, 32)).astype(np.float32)
    if change is not None:
        change(patches)
    return save_patches(path, patches, np.repeat([0, 1, 2], 2))


def cmd_evaluate_gan(tmp, what):
    path = tmp / "real.npz"
    write_patches(path)
    needles = {"missing": ["file not found"], "empty": ["file is empty"], "truncated": ["not a patch file"],
               "text": ["not a patch file"], "nan": ["NaN"], "inf": ["Inf"], "2d": ["(N, 7, S, S)"]}[what]
    if what == "missing":
        path.unlink()
    elif what in ("empty", "truncated", "text"):
        _damage(path, what)
    elif what == "2d":
        np.savez(path, patches=np.zeros((6, 32, 32), np.float32), classes=np.zeros(6, np.int64),
                 channels=np.array(["T2"]), class_names=np.array(["benign"]))
        needles = ["other channels"]
    else:
        write_patches(path, lambda p: p.__setitem__((1, 2, 3, 4), np.nan if what == "nan" else np.inf))
    return ["evaluate-gan", "--real", path, "--n", "2", "--out", tmp / "gan"], [path.name, *needles]


# --------------------------------------------------------------------- the table
def _case(command, maker, *extra, label=None):
    name = label or maker.__name__.removeprefix("bad_")
    return pytest.param(lambda tmp: command(tmp, maker, *extra), id=f"{command.__name__[4:]}-{name}")


CASES = [
    # check: what test_cli does not cover yet
    *(_case(cmd_check, b) for b in (bad_5d, bad_one_voxel, bad_negative)),
    _case(cmd_check, bad_one_frame, "DCE"),
    # register: the moving file, and the fixed one for a content problem
    *(_case(cmd_register, b) for b in (bad_missing, *IMAGE_FILE, *IMAGE_CONTENT)),
    *(_case(cmd_register, b, "fixed", label=f"fixed-{b.__name__[4:]}") for b in (bad_missing, bad_one_voxel, bad_nan)),
    # synthesize: an input, and the real target given for metrics
    *(_case(cmd_synthesize, b) for b in (bad_missing, *IMAGE_FILE, *IMAGE_CONTENT, bad_negative)),
    *(_case(cmd_synthesize, b, "real", label=f"real-{b.__name__[4:]}") for b in (bad_missing, bad_truncated, bad_nan)),
    # evaluate: the synthesized file (a constant synthesized volume is legitimate: the real one must vary)
    *(_case(cmd_evaluate, b) for b in (bad_missing, *IMAGE_FILE, bad_one_voxel, bad_nan, bad_inf, bad_other_grid)),
    _case(cmd_evaluate, bad_constant, "real", label="real-constant"),
    # folder commands: one case's T2 is bad
    *(_case(cmd, b) for cmd in FOLDER_COMMANDS.values() for b in (*IMAGE_FILE, *IMAGE_CONTENT, bad_negative)),
    # training needs one grid per case; rank resamples every case onto its model's grid, as synthesize does
    _case(cmd_train, bad_other_grid),
    *(pytest.param(lambda tmp, w=w: cmd_export(tmp, w), id=f"export-{w.replace(' ', '-')}")
      for w in ("missing run", "empty run.json", "text run.json", "truncated run.json", "empty checkpoint",
                "truncated checkpoint", "text checkpoint")),
    *(pytest.param(lambda tmp, w=w: cmd_resume(tmp, w), id=f"train-resume-{w.replace(' ', '-')}")
      for w in ("empty run.json", "text run.json", "truncated run.json", "truncated checkpoint", "text checkpoint")),
    *(pytest.param(lambda tmp, w=w: cmd_evaluate_gan(tmp, w), id=f"evaluate-gan-{w}")
      for w in ("missing", "empty", "truncated", "text", "nan", "inf", "2d")),
]


def assert_refused(capsys, tmp: Path, argv, needles) -> str:
    """Exit 2, one error line with every needle, no traceback, and not one file changed or added."""
    before = hash_tree(tmp)
    code, out, err = run_cli(capsys, *argv)
    line = assert_one_error_line(code, out, err, *needles)
    assert hash_tree(tmp) == before
    return line


@pytest.mark.parametrize("make", CASES)
def test_bad_input_is_refused(tmp_path, capsys, make):
    argv, needles = make(tmp_path)
    assert_refused(capsys, tmp_path, argv, needles)


# --------------------------------------------------------------------- sequence names, outputs onto inputs
def test_wrong_sequence_names(tmp_path, capsys):
    files = _synth_files(tmp_path)
    out = tmp_path / "synth.nii.gz"
    args = _synthesize_args(files, out)
    assert_refused(capsys, tmp_path, [a if a != f"T2={files['T2']}" else f"T3={files['T2']}" for a in args],
                   ["unknown sequence name 'T3'"])
    assert_refused(capsys, tmp_path, [a if a != "T1ce" else "T1cee" for a in args], ["unknown sequence name 'T1cee'"])
    csv = write_manifest_with_wrong_name(tmp_path)
    for argv in (["batch", "--data", csv, "--out", tmp_path / "b", "--quiet"],
                 ["compare", "--data", csv, "--out", tmp_path / "c", "--quiet"],
                 ["rank", "--data", csv, "--out", tmp_path / "r", "--quiet"],
                 ["train", "--model", "unet-ct1", "--data", csv, "--out", tmp_path / "t", "--quiet"]):
        assert_refused(capsys, tmp_path, argv, [csv.name, "unknown sequence name 'T3'"])


def test_register_output_onto_the_fixed_file(tmp_path, capsys):
    """``<moving>-registered.nii.gz`` in the inputs' folder is the fixed file itself: refused before any work."""
    fixed, moving = tmp_path / "t2-registered.nii.gz", tmp_path / "t2.nii.gz"
    write_volume(good_volume(1), fixed)
    write_volume(good_volume(2), moving)
    assert_refused(capsys, tmp_path, ["register", "--fixed", fixed, "--moving", moving, "--out", tmp_path],
                   [fixed.name, "would overwrite an input"])


def test_synthesize_error_map_onto_an_input(tmp_path, capsys):
    files = _synth_files(tmp_path)
    args = _synthesize_args(files, tmp_path / "synth.nii.gz", "--real", files["T1ce"], "--error-map", files["FLAIR"])
    assert_refused(capsys, tmp_path, args, [files["FLAIR"].name, "would overwrite an input"])


def test_synthesize_refuses_to_replace_the_report_of_another_output(tmp_path, capsys, monkeypatch):
    """``o.nii.gz`` and ``o.nrrd`` share ``o.report.json``: the second run would erase the first's provenance."""
    files = _synth_files(tmp_path)
    monkeypatch.chdir(tmp_path)  # the output named as typed, relative; the check later runs from elsewhere
    code, _, err = run_cli(capsys, *_synthesize_args(files, "o.nii.gz"))
    assert code == 0, err
    monkeypatch.chdir(files["T1"].anchor)
    report = tmp_path / "o.report.json"
    assert json.loads(report.read_text())["output"] == str(tmp_path / "o.nii.gz")
    assert_refused(capsys, tmp_path, _synthesize_args(files, tmp_path / "o.nrrd"),
                   ["o.report.json: holds the report of", "o.nii.gz", "choose another name"])
    code, _, err = run_cli(capsys, *_synthesize_args(files, tmp_path / "o.nii.gz"))  # the same output: rewritten
    assert code == 0, err


@pytest.mark.parametrize("command", ["rank", "compare", "train"])
def test_output_folder_inside_the_data_folder(tmp_path, capsys, command):
    """Their outputs are folders: inside ``--data`` they would be read as case folders by the next run."""
    make = FOLDER_COMMANDS[command]
    argv, _ = make(tmp_path, lambda path: [])
    argv[argv.index("--out") + 1] = tmp_path / "cases" / "results"
    assert_refused(capsys, tmp_path, argv, ["inside the input folder"])


@pytest.mark.parametrize("command", ["rank", "compare", "train", "batch"])
@pytest.mark.parametrize("where", ["manifest folder", "case folder", "above a case folder"])
def test_output_folder_holding_the_manifest_or_its_files(tmp_path, capsys, command, where):
    """With a manifest CSV as ``--data``: a report named like the manifest (compare.csv, ranking.csv) would
    replace it, and synthesized files would lie beside the acquired ones a later run reads as real."""
    make = FOLDER_COMMANDS[command]
    argv, _ = make(tmp_path, lambda path: [])
    root = Path(argv[argv.index("--data") + 1])
    manifest = root / "cases.csv"
    rows = ["case,sequence,path"] + [f"{case.name},{file.name.split('-')[-1].split('.')[0]},{case.name}/{file.name}"
                                     for case in sorted(root.iterdir()) for file in sorted(case.iterdir())]
    manifest.write_text("\n".join(rows) + "\n")
    argv[argv.index("--data") + 1] = manifest
    if where == "above a case folder":  # <out>/<case>/ is a case's own folder: the default layout writes there
        (tmp_path / "elsewhere").mkdir()
        manifest = manifest.rename(tmp_path / "elsewhere" / "cases.csv")
        manifest.write_text(manifest.read_text().replace(",C", f",{root}/C"))
        argv[argv.index("--data") + 1] = manifest
    argv[argv.index("--out") + 1] = {"manifest folder": root, "case folder": root / "C1"}.get(where, root)
    assert_refused(capsys, tmp_path, argv, ["holds the input manifest cases.csv or files it lists"])


# --------------------------------------------------------------------- unwritable output folder
def _out_into(argv, folder: Path, name: str):
    argv[argv.index("--out") + 1] = folder / name
    return argv


UNWRITABLE = {
    "register": lambda tmp, ro: _out_into(cmd_register(tmp, lambda p: [])[0], ro, "reg"),
    "synthesize": lambda tmp, ro: _out_into(cmd_synthesize(tmp, lambda p: [])[0], ro, "synth.nii.gz"),
    "evaluate": lambda tmp, ro: [*cmd_evaluate(tmp, lambda p: [])[0][:-1], ro / "metrics.json"],
    "rank": lambda tmp, ro: _out_into(cmd_rank(tmp, lambda p: [])[0], ro, "rank"),
    "batch": lambda tmp, ro: _out_into(cmd_batch(tmp, lambda p: [])[0], ro, "batch"),
    "compare": lambda tmp, ro: _out_into(cmd_compare(tmp, lambda p: [])[0], ro, "compare"),
    "train": lambda tmp, ro: _out_into(cmd_train(tmp, lambda p: [])[0], ro, "run"),
    "export": lambda tmp, ro: _out_into(cmd_export(tmp, "missing run")[0][:2] + [write_run(tmp / "r"), "--out", ""],
                                        ro, "models"),
    "evaluate-gan": lambda tmp, ro: _out_into(cmd_evaluate_gan(tmp, "missing")[0][:2] +
                                              [write_patches(tmp / "p.npz"), "--n", "2", "--out", ""], ro, "gan"),
}


@pytest.mark.parametrize("command", sorted(UNWRITABLE))
def test_unwritable_output_folder(tmp_path, capsys, unwritable, command):
    work = tmp_path / "work"
    work.mkdir()
    argv = UNWRITABLE[command](work, unwritable)
    assert_refused(capsys, work, argv, [str(unwritable)])


# --------------------------------------------------------------------- options refused before any output
def _existing_file(tmp: Path) -> Path:
    path = tmp / "a-file.nii.gz"
    write_volume(good_volume(0), path)
    return path


BAD_OPTIONS = {
    "demo-negative-seed": (lambda tmp: ["demo", "--seed", "-1", "--out", tmp / "d"], ["--seed -1", "held out"]),
    "demo-training-seed": (lambda tmp: ["demo", "--seed", "10000", "--out", tmp / "d"], ["training subjects"]),
    "demo-unknown-device": (lambda tmp: ["demo", "--device", "tpu", "--out", tmp / "d"], ["tpu"]),
    "demo-out-is-a-file": (lambda tmp: ["demo", "--out", _existing_file(tmp)], ["exists and is not a folder"]),
    "evaluate-models-negative-seed": (lambda tmp: ["evaluate-models", "--seeds", "-1"], ["--seeds", "held-out"]),
    "evaluate-models-json-not-json": (lambda tmp: ["evaluate-models", "--seeds", "7", "--json", _existing_file(tmp)],
                                      ["--json", ".json file"]),
    "rank-negative-bootstrap": (lambda tmp: ["rank", "--data", "phantom:brain:1", "--out", tmp / "r", "--bootstrap",
                                             "-1"], ["--bootstrap"]),
    "phantom-zero-resolution": (lambda tmp: ["phantom", "--anatomy", "brain", "--resolution", "0", "--out", tmp / "p"], ["--resolution"]),
    "phantom-nan-resolution": (lambda tmp: ["phantom", "--anatomy", "brain", "--resolution", "nan", "--out", tmp / "p"], ["--resolution"]),
    "evaluate-gan-out-is-a-file": (lambda tmp: ["evaluate-gan", "--out", _existing_file(tmp)],
                                   ["exists and is not a folder"]),
}


@pytest.mark.parametrize("name", sorted(BAD_OPTIONS))
def test_bad_options_are_refused_before_any_output(tmp_path, capsys, name):
    """A bad option is one ``error:`` line and exit 2, never a traceback, and nothing is written first (the
    demo's inputs, an empty output folder, a ranking's cache)."""
    make, needles = BAD_OPTIONS[name]
    assert_refused(capsys, tmp_path, make(tmp_path), needles)


# --------------------------------------------------------------------- output paths checked before any work
def _a_regular_file(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("not a folder")
    return path


def _with_out(argv, value):
    argv = list(argv)
    argv[argv.index("--out") + 1] = value
    return argv


def _synthesize_with_real(tmp: Path, *extra):
    files = _synth_files(tmp)
    return _synthesize_args(files, tmp / "synth.nii.gz", "--real", files["T1ce"], *extra)


def _report_is_a_folder(tmp: Path):
    (tmp / "synth.report.json").mkdir()
    return _synthesize_args(_synth_files(tmp), tmp / "synth.nii.gz")


BAD_OUTPUTS = {
    "synthesize-out-under-a-file": (lambda tmp: _with_out(cmd_synthesize(tmp, lambda p: [])[0],
                                                          _a_regular_file(tmp) / "synth.nii.gz"), ["is not a folder"]),
    "synthesize-out-empty": (lambda tmp: _with_out(cmd_synthesize(tmp, lambda p: [])[0], ""), ["empty"]),
    "synthesize-out-png": (lambda tmp: _with_out(cmd_synthesize(tmp, lambda p: [])[0], tmp / "synth.png"),
                           ["synth.png", "unsupported output type"]),
    "synthesize-report-is-a-folder": (_report_is_a_folder, ["synth.report.json", "is a folder"]),
    "synthesize-error-map-png": (lambda tmp: _synthesize_with_real(tmp, "--error-map", tmp / "error.png"),
                                 ["error.png", "unsupported output type"]),
    "synthesize-error-map-folder-missing": (lambda tmp: _synthesize_with_real(tmp, "--error-map",
                                                                              tmp / "nowhere" / "e.nii.gz"),
                                            ["nowhere", "does not exist"]),
    "synthesize-error-map-under-a-file": (lambda tmp: _synthesize_with_real(tmp, "--error-map",
                                                                            _a_regular_file(tmp) / "e.nii.gz"),
                                          ["is not a folder"]),
    "evaluate-json-empty": (lambda tmp: [*cmd_evaluate(tmp, lambda p: [])[0][:-1], ""], ["empty"]),
    "evaluate-json-under-a-file": (lambda tmp: [*cmd_evaluate(tmp, lambda p: [])[0][:-1],
                                                _a_regular_file(tmp) / "m.json"], ["is not a folder"]),
    "register-out-empty": (lambda tmp: _with_out(cmd_register(tmp, lambda p: [])[0], ""), ["--out is empty"]),
    "evaluate-real-empty": (lambda tmp: ["evaluate", "--real", "", "--synth", tmp / "s.nii.gz"], ["--real is empty"]),
}


def _register_two_slices(tmp: Path):
    fixed, moving = tmp / "t1.nii.gz", tmp / "t2.nii.gz"
    thick = good_volume(1)
    write_volume(Volume(np.ascontiguousarray(thick.array[:2]), thick.spacing, thick.origin, thick.direction), fixed)
    write_volume(good_volume(2), moving)
    return ["register", "--fixed", fixed, "--moving", moving, "--out", tmp / "out"]


BAD_OUTPUTS["register-two-slices"] = (_register_two_slices, ["fixed volume has 2 voxels", "at least 4"])


@pytest.mark.parametrize("name", sorted(BAD_OUTPUTS))
def test_bad_output_paths_are_refused_before_any_work(tmp_path, capsys, monkeypatch, name):
    """An output under a file, empty, of a type that cannot be written, or where a folder stands: one
    ``error:`` line before the synthesis runs, so no result is left without its report or error map."""
    monkeypatch.chdir(tmp_path)  # an empty path read as "." would write here, where the check sees it
    make, needles = BAD_OUTPUTS[name]
    assert_refused(capsys, tmp_path, make(tmp_path), needles)


@pytest.mark.parametrize("command", ["batch", "compare", "synthesize"])
def test_only_synthesis_models_are_offered_where_a_sequence_is_synthesized(tmp_path, capsys, command):
    """``mp-gan`` makes lesion patches from noise, and an unknown name is no model: both are usage errors
    (``batch --model foo`` used to skip every case and exit 0)."""
    flag = "--models" if command == "compare" else "--model"
    for model in ("foo", "mp-gan"):
        code, _, err = run_cli(capsys, command, "--data", tmp_path, "--out", tmp_path / "o", flag, model,
                               *(["--input", "T1=x.nii.gz", "--target", "T2"] if command == "synthesize" else []))
        assert code == 2 and "invalid choice" in err and model in err
    assert not (tmp_path / "o").exists()


def test_an_unknown_phantom_anatomy_is_named(tmp_path, capsys):
    assert_refused(capsys, tmp_path, ["rank", "--data", "phantom:lung:2", "--out", tmp_path / "r"],
                   ["unknown phantom anatomy 'lung'", "brain and breast"])


def test_a_models_folder_that_does_not_exist_is_named(tmp_path, capsys, monkeypatch):
    """An environment variable pointing nowhere used to read as "no models bundled"."""
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(tmp_path / "nowhere"))
    assert_refused(capsys, tmp_path, ["models"], ["MRISYNTHESIS_MODELS_DIR", "no such folder of weights"])


def test_a_negative_generation_seed_is_refused(tmp_path, capsys):
    assert_refused(capsys, tmp_path, ["generate", "--class", "benign", "--n", "2", "--seed", "-1", "--out",
                                      tmp_path / "g"], ["--seed must be from 0 to 2**32 - 1"])


def test_an_image_given_as_a_patch_file_is_named_as_such(tmp_path, capsys):
    image = _existing_file(tmp_path)
    assert_refused(capsys, tmp_path, ["evaluate-gan", "--real", image], [image.name, "not a patch file",
                                                                         "not an .npz archive"])


def test_a_refused_request_prints_no_progress_bar_first(tmp_path, capsys):
    """Without --quiet a bar would start before the pipeline's own checks: the refusal must be the only line."""
    files = _synth_files(tmp_path)
    for extra, needle in ((["--reference", "PD"], "reference sequence PD"), (["--device", "tpu"], "tpu")):
        args = [a for a in _synthesize_args(files, tmp_path / "synth.nii.gz") if a != "--quiet"] + extra
        assert_refused(capsys, tmp_path, args, [needle])
    args = [a for a in _synthesize_args(files, tmp_path / "synth.nii.gz") if a != "--quiet"]
    args[args.index("T1ce")] = "T2"
    assert_refused(capsys, tmp_path, args, ["no bundled weights for unet-ct1 -> T2"])


def test_an_unwritable_error_map_folder_is_refused_before_the_synthesized_volume_is_written(tmp_path, capsys,
                                                                                             unwritable):
    """Every output of ``synthesize`` is checked before the work: a writable --out beside an --error-map
    that cannot be written leaves no synthesized volume without its report and error map."""
    argv, _ = cmd_synthesize(tmp_path, lambda path: [], slot="real")
    assert_refused(capsys, tmp_path, [*argv, "--error-map", unwritable / "error.nii.gz"],
                   [str(unwritable), "not writable"])


def test_a_file_name_too_long_for_the_file_system_is_an_input_error(tmp_path, capsys):
    """A name over the file system's 255 bytes is the user's input: exit 2 naming it, not a traceback."""
    argv, _ = cmd_synthesize(tmp_path, lambda path: [])
    long_name = "a" * 300 + ".nii.gz"
    out = list(argv)
    out[out.index("--out") + 1] = tmp_path / long_name
    assert_refused(capsys, tmp_path, out, [long_name, "file name too long"])
    given = [a if not str(a).startswith("T2=") else f"T2={tmp_path / long_name}" for a in argv]
    assert_refused(capsys, tmp_path, given, [long_name, "file name too long"])



@pytest.mark.parametrize("damage, needle", [
    (lambda run: run["options"].pop("seed"), "damaged, it lacks options.seed"),
    (lambda run: run.update(options=[1]), "damaged, it lacks options"),
    (lambda run: run.update(config="huge"), "unknown configuration 'huge'"),
])
def test_export_names_what_a_damaged_run_record_lacks(tmp_path, capsys, damage, needle):
    run = write_run(tmp_path / "run")
    intact = (run / "run.json").read_text()
    record = json.loads(intact)
    damage(record)
    (run / "run.json").write_text(json.dumps(record))
    assert_refused(capsys, tmp_path, ["export", "--run", run, "--out", tmp_path / "exported"], [needle])
    (run / "run.json").write_text(intact)
    (run / "split.json").unlink()
    assert_refused(capsys, tmp_path, ["export", "--run", run, "--out", tmp_path / "exported"],
                   ["split.json: missing"])
