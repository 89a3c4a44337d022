"""Training: the loss falls, a resumed run ends where an uninterrupted one does, folders and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from MRISynthesisLib.cli import main
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.training import checkpoint
from MRISynthesisLib.training.data import CaseCache, FolderSource, split_cases
from MRISynthesisLib.training.recipes import recipe_for
from MRISynthesisLib.training.trainer import TrainOptions, train
from MRISynthesisLib.volume import Volume, read_volume, write_volume

SMALL = dict(data="phantom:brain:3", steps_per_epoch=4, checkpoint_every=2, batch_size=1)


@pytest.fixture(scope="module")
def cache_seed_dir(tmp_path_factory):
    """One short run whose case cache later runs reuse (building phantom cases is the slow part)."""
    out = tmp_path_factory.mktemp("run")
    train(TrainOptions(model="unet-ct1", out=str(out), steps=2, **SMALL), progress=False)
    return out


def _reuse_cache(src, dst) -> None:
    import shutil
    shutil.copytree(src / "cache", dst / "cache")


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")["recipe"]["networks"]["generator"]


def test_unet_ct1_loss_falls(tmp_path, cache_seed_dir):
    _reuse_cache(cache_seed_dir, tmp_path)
    # a fixed batch: the optimiser must reduce its loss within a few steps
    recipe_cls = recipe_for("unet-ct1")
    from MRISynthesisLib.training.data import CaseCache, load_cases
    cases = load_cases(None, [p.stem for p in sorted((tmp_path / "cache").glob("*.npz"))][:1], CaseCache(tmp_path / "cache"))
    torch.manual_seed(0)
    recipe = recipe_cls("lite", torch.device("cpu"))
    recipe.patch = {"lite": (32, 32, 32)}
    batch = recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng(0), 2))
    losses = [recipe.train_step(batch)["loss"] for _ in range(6)]
    assert losses[-1] < losses[0]


def test_resumed_run_equals_uninterrupted_run(tmp_path, cache_seed_dir):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    for folder in (straight, interrupted):
        folder.mkdir()
        _reuse_cache(cache_seed_dir, folder)
    train(TrainOptions(model="unet-ct1", out=str(straight), steps=4, **SMALL), progress=False)
    train(TrainOptions(model="unet-ct1", out=str(interrupted), steps=2, command="mri-synthesis train --steps 2",
                       **SMALL), progress=False)
    train(TrainOptions(model="unet-ct1", out=str(interrupted), steps=4, resume=True,
                       command="mri-synthesis train --steps 4 --resume", **SMALL), progress=False)
    # the run's record (and so its model card) keeps every invocation, in order
    assert json.loads((interrupted / "run.json").read_text())["options"]["command"] == \
        "mri-synthesis train --steps 2 ; then mri-synthesis train --steps 4 --resume"
    a, b = _weights(straight), _weights(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = (interrupted / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4  # header + one row per step, none repeated
    split = json.loads((straight / "split.json").read_text())
    assert not set(split["train"]) & set(split["validation"])


def test_run_folder_rules(tmp_path, cache_seed_dir):
    with pytest.raises(InputError, match="already holds checkpoints; pass --resume"):
        train(TrainOptions(model="unet-ct1", out=str(cache_seed_dir), steps=2, **SMALL), progress=False)
    run_json = json.loads((cache_seed_dir / "run.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({**run_json, "model": "seq2seq"}))
    with pytest.raises(InputError, match="holds a run of seq2seq"):
        train(TrainOptions(model="unet-ct1", out=str(other), steps=2, **SMALL), progress=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train(TrainOptions(model="unet-ct1", out=str(tmp_path / "empty"), steps=2, resume=True, **SMALL), progress=False)


def test_a_resume_continues_with_the_runs_own_options_or_is_refused(tmp_path, cache_seed_dir):
    """Other data, seed, batch size or network options would not continue the run (its split, batches and
    networks): refused before anything changes, run.json included."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cache_seed_dir, run)
    before = (run / "run.json").read_text()
    others = {"seed": 3, "batch_size": 2, "data": "phantom:brain:4",
              "recipe_options": {"norm_kind": "instance"}}
    for key, value in others.items():
        options = {**SMALL, key: value}
        with pytest.raises(InputError, match="continues with its own options; this one was started with"):
            train(TrainOptions(model="unet-ct1", out=str(run), steps=3, resume=True, command="x --resume", **options),
                  progress=False)
        assert (run / "run.json").read_text() == before, key
    # the same run spelled otherwise, recorded by an older version (no anatomy or validation fraction): resumed
    record = json.loads(before)
    for key in ("anatomy", "validation_fraction"):
        record["options"].pop(key)
    (run / "run.json").write_text(json.dumps(record))
    summary = train(TrainOptions(model="unet-ct1", out=str(run), steps=3, resume=True, command="x --resume",
                                 **{**SMALL, "recipe_options": {"loss": "mixed"}}), progress=False)  # the default
    assert summary["steps"] == 3


def test_numbers_out_of_range_are_refused_before_any_work(tmp_path, capsys):
    for flag, value, needle in (("--seed", "-1", "--seed must be between 0 and 2**32 - 1"),
                                ("--batch-size", "0", "--batch-size must be at least 1"),
                                ("--batch-size", "-1", "--batch-size must be at least 1"),
                                ("--workers", "-1", "--workers must be 0 or more")):
        assert main(["train", "--model", "unet-ct1", "--data", "phantom:brain:2", "--out", str(tmp_path / "r"),
                     flag, value, "--quiet"]) == 2
        assert needle in capsys.readouterr().err
        assert not (tmp_path / "r").exists()


def test_a_new_run_in_the_folder_of_an_attempt_that_never_trained_records_itself(tmp_path, cache_seed_dir):
    """An attempt refused before its first checkpoint leaves run.json and perhaps a cache: the next run into
    that folder records its own options, and cases cached from other data are not reused."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()  # a folder the user made: a refused attempt leaves what it wrote there
    assert main(["train", "--model", "unet-ct1", "--data", str(tmp_path / "no-such-folder"), "--out", str(run),
                 "--quiet"]) == 2
    shutil.copytree(cache_seed_dir / "cache", run / "cache")
    record = json.loads((cache_seed_dir / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "options": {**record["options"], "data": "elsewhere"}}))
    stale = run / "cache" / "stale-case.npz"
    stale.write_bytes(b"")
    train(TrainOptions(model="unet-ct1", out=str(run), steps=1, command="mri-synthesis train again", **SMALL),
          progress=False)
    options = json.loads((run / "run.json").read_text())["options"]
    assert options["data"] == SMALL["data"] and options["command"] == "mri-synthesis train again"
    assert not stale.exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    broken = tmp_path / "last.pt"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(InputError, match="corrupt or truncated"):
        checkpoint.load(broken)


def test_init_from_a_checkpoint_starts_the_generator_there(tmp_path, cache_seed_dir):
    # without --init-from this run would repeat the cached one exactly (same seed, data and steps)
    _reuse_cache(cache_seed_dir, tmp_path)
    said = []
    train(TrainOptions(model="unet-ct1", out=str(tmp_path), steps=2,
                       init_from=str(cache_seed_dir / "checkpoints" / "last.pt"), **SMALL), progress=False, say=said.append)
    assert any("starts from" in line and "last.pt" in line for line in said)
    before, after = _weights(cache_seed_dir), _weights(tmp_path)
    moved_from_start = max(float((after[k] - before[k]).abs().max()) for k in before if before[k].is_floating_point())
    assert 0 < moved_from_start
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["options"]["init_from"].endswith("last.pt") and run["initialised_from"].endswith("last.pt")
    from MRISynthesisLib.training.export import export_run
    entry = export_run(tmp_path, which="last", folder=tmp_path / "models")
    assert entry.training["initialised_from"] == run["initialised_from"]
    assert entry.orientation == "RAS"  # trained on the brain phantom, stored RAS: inputs are turned to it
    card = (tmp_path / "models" / "unet-ct1-brain-lite.md").read_text()
    assert "Orientation: voxel axes turned to RAS" in card
    assert f"Fine-tuned: the generator started from `{run['initialised_from']}`" in card


def test_init_from_bundled_picks_the_variant_this_run_trains():
    """MP-GAN bundles a DCGAN and a WGAN: the run's --variant (its export's file name) says which to start from."""
    from MRISynthesisLib.training.initial_weights import initial_state
    from MRISynthesisLib.training.recipes import recipe_for

    recipe = recipe_for("mp-gan")
    for variant in ("dcgan", "wgan"):
        stem = recipe.file_stem("breast", "lite", {"variant": variant})
        _, described = initial_state("bundled", "mp-gan", "lite", "breast", stem=stem)
        assert described.startswith(f"mp-gan-breast-lite-{variant}.pt (sha256 "), described
    with pytest.raises(InputError, match="several bundled mp-gan weights fit"):
        initial_state("bundled", "mp-gan", "lite", "breast")


def test_export_into_a_folder_with_a_damaged_manifest_writes_nothing(tmp_path, cache_seed_dir):
    from MRISynthesisLib.training.export import export_run

    models = tmp_path / "models"
    models.mkdir()
    (models / "manifest.json").write_text("{ not json")
    with pytest.raises(InputError, match="not a valid weights manifest"):
        export_run(cache_seed_dir, which="last", folder=models)
    assert sorted(p.name for p in models.iterdir()) == ["manifest.json"]


def test_init_from_bundled_loads_the_verified_bundled_generator():
    from MRISynthesisLib.models import build
    from MRISynthesisLib.training.initial_weights import apply_initial_state, initial_state
    from MRISynthesisLib.weights import find, load_model

    state, described = initial_state("bundled", "unet-ct1", "lite", "brain")
    assert described.startswith("unet-ct1-brain-lite.pt (sha256 ")
    net = build("unet-ct1", "lite")
    apply_initial_state(net, state, described)
    bundled = load_model(find("unet-ct1", anatomy="brain")).state_dict()
    assert all(torch.equal(net.state_dict()[k], bundled[k]) for k in bundled)


def test_init_from_refuses_what_does_not_fit(tmp_path):
    from MRISynthesisLib.models import build
    from MRISynthesisLib.training.initial_weights import apply_initial_state, initial_state
    from MRISynthesisLib.weights import models_dir

    with pytest.raises(InputError, match="lite configuration.*--config lite"):
        initial_state("bundled", "unet-ct1", "paper", "brain")
    with pytest.raises(InputError, match="several bundled mp-gan weights"):
        initial_state("bundled", "mp-gan", "lite", "breast")
    with pytest.raises(InputError, match="no such weight file"):
        initial_state(str(tmp_path / "missing.pt"), "unet-ct1", "lite", "brain")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not weights")
    with pytest.raises(InputError, match="cannot be loaded as weights"):
        initial_state(str(broken), "unet-ct1", "lite", "brain")
    other, described = initial_state(str(models_dir() / "important-net-brain-lite.pt"), "unet-ct1", "lite", "brain")
    with pytest.raises(InputError, match="do not fit this run's network"):
        apply_initial_state(build("unet-ct1", "lite"), other, described)
    with pytest.raises(InputError, match="starts a new run"):
        train(TrainOptions(model="unet-ct1", out=str(tmp_path / "r"), steps=2, resume=True, init_from="bundled", **SMALL),
              progress=False)
    assert not (tmp_path / "r").exists()
    assert main(["train", "--model", "unet-ct1", "--data", "phantom:brain:3", "--out", str(tmp_path / "r2"),
                 "--init-from", str(tmp_path / "missing.pt")]) == 2
    assert not (tmp_path / "r2").exists()


def test_folder_source_checks_cases(tmp_path):
    assert main(["phantom", "--anatomy", "brain", "--n", "2", "--seed", "50", "--resolution", "3", "--out",
                 str(tmp_path / "cases"), "--quiet"]) == 0
    source = FolderSource(tmp_path / "cases", sequences=("T1", "T2", "FLAIR", "T1ce"), scheme="zscore")
    assert source.names() == ["MRIS-BRAIN-00050", "MRIS-BRAIN-00051"]
    with pytest.raises(InputError, match="not on the grid of T1"):  # the phantom's T2 has thick slices
        source.build("MRIS-BRAIN-00050")
    (tmp_path / "cases" / "MRIS-BRAIN-00051" / "MRIS-BRAIN-00051-t2f.nii.gz").unlink()
    with pytest.raises(InputError, match="case MRIS-BRAIN-00051: missing FLAIR"):
        FolderSource(tmp_path / "cases", sequences=("T1", "FLAIR"), scheme="zscore")
    with pytest.raises(InputError, match="no such data folder"):
        FolderSource(tmp_path / "nowhere", sequences=("T1",), scheme="zscore")


def test_a_folder_case_with_a_slab_is_normalised_within_each_field_of_view_as_synthesis_does(tmp_path):
    """A case resampled onto one grid (ranking, or training with a voxel size): a sequence covering part of
    the head is z-scored by the tissue it shows, not by the zeros filled in around it, as ``pipeline.prepare``
    does at synthesis; and one whose field of view holds none of the head is named."""
    from MRISynthesisLib.preprocess import coverage_on
    from MRISynthesisLib.volume import Volume, read_volume, write_volume

    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", "52", "--resolution", "3", "--registered",
                 "--out", str(tmp_path / "cases"), "--quiet"]) == 0
    case = "MRIS-BRAIN-00052"
    flair_file = tmp_path / "cases" / case / f"{case}-t2f.nii.gz"
    flair = read_volume(flair_file)
    n = flair.spatial_shape[0]
    origin = np.asarray(flair.origin) + flair.direction_matrix @ (0.0, 0.0, (n // 2) * flair.spacing[2])
    slab = Volume(flair.array[n // 2:], flair.spacing, tuple(origin), flair.direction)
    write_volume(slab, flair_file)
    built = FolderSource(tmp_path / "cases", sequences=("T1", "T2", "FLAIR"), scheme="zscore", voxel_size_mm=3.0,
                         require_all=False).build(case)
    t1 = read_volume(tmp_path / "cases" / case / f"{case}-t1n.nii.gz")
    inside = built.mask & coverage_on(slab, t1)
    assert 0.2 < inside.sum() / built.mask.sum() < 0.8
    z = built.volumes["FLAIR"]
    assert abs(float(z[inside].mean())) < 0.1  # the zeros outside the slab did not enter its statistics
    # the case remembers each sequence's field of view (through its cache too): training centres its samples,
    # and ranking scores its pairs, only where the slab has data
    np.testing.assert_array_equal(built.inside["FLAIR"], coverage_on(slab, t1))
    assert built.inside["T1"].all() and np.array_equal(built.trainable, inside)
    cache = CaseCache(tmp_path / "cache")
    cache.save(built)
    np.testing.assert_array_equal(cache.load(case).covers("T2", "FLAIR"), built.inside["FLAIR"])
    corner = Volume(flair.array[:, :2, :2].copy(), flair.spacing, flair.origin, flair.direction)  # air only
    write_volume(corner, flair_file)
    with pytest.raises(InputError, match=f"case {case}: FLAIR covers none of the case's foreground"):
        FolderSource(tmp_path / "cases", sequences=("T1", "T2", "FLAIR"), scheme="zscore", voxel_size_mm=3.0,
                     require_all=False).build(case)


def test_split_is_by_subject_and_needs_two():
    train_names, val = split_cases([f"c{i}" for i in range(10)], 0.2, seed=1)
    assert len(val) == 2 and not set(train_names) & set(val) and len(train_names) == 8
    with pytest.raises(InputError, match="at least 2 cases"):
        split_cases(["only"], 0.2, seed=1)


def test_train_command_errors(tmp_path, capsys):
    assert main(["train", "--model", "unet-ct1", "--data", "phantom:brain:1", "--out", str(tmp_path / "r")]) == 2
    assert "at least 2 subjects" in capsys.readouterr().err
    assert main(["train", "--model", "unet-ct1", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "no such data folder" in capsys.readouterr().err


def test_a_brats_layout_folder_from_the_phantom_command_trains(tmp_path):
    cases = tmp_path / "cases"
    assert main(["phantom", "--anatomy", "brain", "--n", "2", "--seed", "60", "--resolution", "4", "--registered",
                 "--out", str(cases), "--quiet"]) == 0
    assert (cases / "MRIS-BRAIN-00060" / "MRIS-BRAIN-00060-t1c.nii.gz").exists()
    summary = train(TrainOptions(model="unet-ct1", out=str(tmp_path / "run"), data=str(cases), steps=2,
                                 steps_per_epoch=2, checkpoint_every=2, batch_size=1), progress=False)
    assert summary["steps"] == 2
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert sorted(split["train"] + split["validation"]) == ["MRIS-BRAIN-00060", "MRIS-BRAIN-00061"]
    from MRISynthesisLib.training.export import export_run
    assert export_run(tmp_path / "run", which="last", folder=tmp_path / "models").voxel_size_mm == 4.0
    card = (tmp_path / "models" / "unet-ct1-brain-lite.md").read_text()  # the user's data, not the phantom
    assert f"Trained on the cases of `{cases}`" in card and "physics phantom" not in card
    assert "## Measured\n" in card and "Learnt from 1 cases only" in card


def test_folder_cases_of_different_voxel_sizes_train_only_resampled_onto_one(tmp_path, monkeypatch):
    """A network learns anatomy in voxels, and its weights record one voxel size that the pipeline resamples
    a user's inputs to: cases at 3 and 4 mm are refused with what to do, and train with --voxel-size, which
    the exported weights then record."""
    from MRISynthesisLib.training.export import export_run

    cases = tmp_path / "cases"
    for seed, resolution in ((62, "4"), (63, "3")):
        assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", str(seed), "--resolution", resolution,
                     "--registered", "--out", str(cases), "--quiet"]) == 0
    options = dict(model="unet-ct1", data=str(cases), steps=2, steps_per_epoch=2, checkpoint_every=2, batch_size=1)
    with monkeypatch.context() as patched:  # refused from the headers, before any case is read and cached
        patched.setattr(FolderSource, "build", lambda self, name: pytest.fail(f"{name} was read"))
        with pytest.raises(InputError, match="different voxel sizes .*pass --voxel-size"):
            train(TrainOptions(out=str(tmp_path / "mixed"), **options), progress=False)
    assert not (tmp_path / "mixed").exists()
    stretched = tmp_path / "stretched"  # 4 x 4 x 8 mm voxels: the weights record one size for every direction
    for case in cases.iterdir():
        (stretched / case.name).mkdir(parents=True)
        for file in case.glob("*.nii.gz"):
            volume = read_volume(file)
            write_volume(Volume(volume.array, (4.0, 4.0, 8.0), volume.origin, volume.direction),
                         stretched / case.name / file.name)
    with monkeypatch.context() as patched:
        patched.setattr(FolderSource, "build", lambda self, name: pytest.fail(f"{name} was read"))
        with pytest.raises(InputError, match="voxels are far from isotropic .*4 x 4 x 8 mm.*pass --voxel-size"):
            train(TrainOptions(out=str(tmp_path / "stretched-run"), **{**options, "data": str(stretched)}),
                  progress=False)
    from MRISynthesisLib.training.data import shared_voxel_size
    from MRISynthesisLib.training.trainer import MAX_ANISOTROPY_3D

    assert shared_voxel_size({"a": (4, 4, 8), "b": (8, 4, 4)}) == 4.0  # slice models keep the in-plane size
    assert shared_voxel_size({"a": (0.9375, 0.9375, 1.0)}, max_anisotropy=MAX_ANISOTROPY_3D) == 0.9375
    assert shared_voxel_size({"a": (1.0, 1.0, 1.2)}, max_anisotropy=MAX_ANISOTROPY_3D) == 1.0
    assert main(["train", "--model", "unet-ct1", "--data", str(cases), "--out", str(tmp_path / "run"), "--steps", "2",
                 "--steps-per-epoch", "2", "--checkpoint-every", "2", "--batch-size", "1", "--workers", "0",
                 "--voxel-size", "4", "--quiet"]) == 0
    import shutil
    shutil.rmtree(tmp_path / "run" / "cache")  # the voxel size asked for is in run.json
    assert export_run(tmp_path / "run", which="last", folder=tmp_path / "models").voxel_size_mm == 4.0
    with pytest.raises(InputError, match="prepared with --voxel-size 4.0; resume with the same"):
        train(TrainOptions(out=str(tmp_path / "run"), **options, resume=True, voxel_size_mm=3.0), progress=False)
    with pytest.raises(InputError, match="--voxel-size is for a folder of cases"):
        train(TrainOptions(out=str(tmp_path / "p"), **{**options, "data": "phantom:brain:2"}, voxel_size_mm=2.0),
              progress=False)


def test_a_folder_case_is_refused_when_its_segmentation_is_on_another_grid(tmp_path):
    """TC-MGAN's tumour-consistency loss and the samplers read the labels voxel for voxel with the images."""
    from MRISynthesisLib.preprocess import resample_to
    from MRISynthesisLib.volume import read_volume, write_volume

    cases = tmp_path / "cases"
    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", "64", "--resolution", "4", "--registered",
                 "--out", str(cases), "--quiet"]) == 0
    seg_file = next((cases / "MRIS-BRAIN-00064").glob("*-seg.nii.gz"))
    seg = read_volume(seg_file)
    finer = seg.__class__(np.zeros(tuple(2 * n for n in seg.spatial_shape), np.float32),
                          tuple(s / 2 for s in seg.spacing), seg.origin, seg.direction)
    write_volume(resample_to(seg, finer, interpolation="nearest"), seg_file)
    source = FolderSource(cases, sequences=("T1", "T1ce"), scheme="zscore")
    with pytest.raises(InputError, match=r"case MRIS-BRAIN-00064: its segmentation \(.*-seg.nii.gz\) is not on the "
                                         "grid of T1"):
        source.build("MRIS-BRAIN-00064")
    two_frames = seg.__class__(np.stack([seg.array, seg.array]), seg.spacing, seg.origin, seg.direction)
    write_volume(two_frames, seg_file)  # one label per voxel, or it is no segmentation
    with pytest.raises(InputError, match=r"case MRIS-BRAIN-00064: segmentation .*-seg.nii.gz: expected a 3D volume"):
        source.build("MRIS-BRAIN-00064")


def test_a_slab_stored_zero_padded_on_the_cases_grid_counts_only_where_it_has_data(tmp_path):
    """Co-registered releases store a partial-coverage sequence resampled into the T1's space, zero-padded to
    its grid: those whole planes of exact zeros are no data, for normalisation, sampling and ranking alike."""
    from MRISynthesisLib.volume import read_volume, write_volume

    cases = tmp_path / "cases"
    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", "65", "--resolution", "3", "--registered",
                 "--out", str(cases), "--quiet"]) == 0
    flair_file = next((cases / "MRIS-BRAIN-00065").glob("*-t2f.nii.gz"))
    flair = read_volume(flair_file)
    padded = flair.array.copy()
    n = padded.shape[0]
    padded[: n // 3] = 0
    padded[2 * n // 3:] = 0
    write_volume(flair.with_array(padded), flair_file)
    built = FolderSource(cases, sequences=("T1", "FLAIR"), scheme="zscore").build("MRIS-BRAIN-00065")
    rows = built.inside["FLAIR"].any(axis=(1, 2))
    assert not rows[: n // 3].any() and rows[n // 3: 2 * n // 3].all() and not rows[2 * n // 3:].any()
    assert built.inside["T1"].all()
    band = built.mask & built.inside["FLAIR"]
    assert abs(float(built.volumes["FLAIR"][band].mean())) < 0.1  # z-scored by the band's tissue alone


def test_slice_crops_smaller_than_the_body_cover_all_of_it_edges_included():
    """A 2D crop narrower than the body must, over many draws, reach the body's outermost columns and
    rows: centring every crop on the body's centroid never showed a model the edges it must synthesize."""
    from MRISynthesisLib.training.data import Case
    from MRISynthesisLib.training.sampling import random_slices

    shape = (4, 40, 100)
    mask = np.zeros(shape, bool)
    mask[:, 2:38, 1:99] = True  # a body nearly as wide as the slice, far wider than the 32-pixel crop
    columns = np.broadcast_to(np.arange(shape[2], dtype=np.float32), shape).copy()
    rows = np.broadcast_to(np.arange(shape[1], dtype=np.float32)[:, None], shape).copy()
    case = Case("c", {"X": columns, "Y": rows}, mask, np.zeros(shape, np.uint8), {})
    seen_x, seen_y = set(), set()
    rng = np.random.default_rng(0)
    for _ in range(60):
        batch = random_slices([case], rng, 2, ["X"], ["Y"], (32, 32), augment=False)
        seen_x.update(np.unique(batch["inputs"]).tolist())
        seen_y.update(np.unique(batch["targets"]).tolist())
    assert {1.0, 98.0} <= seen_x and {2.0, 37.0} <= seen_y


@pytest.mark.parametrize("kind", ["slices", "patches"])
def test_samples_are_centred_and_scored_only_where_every_sequence_has_data(kind):
    """A case with a slab sequence (data in the first 20 of 60 columns): every sample is centred where all
    sequences have data, and the mask returned to masked losses and validation leaves the blank part out."""
    from MRISynthesisLib.training.data import Case
    from MRISynthesisLib.training.sampling import random_patches, random_slices

    shape = (24, 24, 60)
    mask = np.zeros(shape, bool)
    mask[2:22, 2:22, 2:58] = True
    columns = np.broadcast_to(np.arange(shape[2], dtype=np.float32), shape).copy()
    slab = np.zeros(shape, bool)
    slab[..., :20] = True
    case = Case("c", {"X": columns, "Y": columns.copy()}, mask, np.zeros(shape, np.uint8), {},
                inside={"X": np.ones(shape, bool), "Y": slab})
    rng = np.random.default_rng(0)
    for _ in range(30):
        if kind == "slices":
            batch = random_slices([case], rng, 2, ["X"], ["Y"], (16, 16), augment=False)
        else:
            batch = random_patches([case], rng, 2, ["X"], ["Y"], (8, 8, 8), augment=False)
        centre = batch["inputs"][(slice(None), 0) + tuple(s // 2 for s in batch["inputs"].shape[2:])]
        assert (centre < 20).all()  # the column at each sample's centre lies in the slab
        assert batch["mask"].any() and (batch["inputs"][:, :1][batch["mask"] > 0] < 20).all()
