"""MP-GAN: breast lesion patches (classes, channels, washout) and the DCGAN/WGAN recipe."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.models.mp_gan import CHANNELS, CLASSES
from MRISynthesisLib.gan_eval import dce_statistics
from MRISynthesisLib.patches import extract_patches, load_patches, save_patches
from MRISynthesisLib.training import checkpoint
from MRISynthesisLib.training.data import CaseCache, PhantomSource, load_cases
from MRISynthesisLib.training.recipes import recipe_for
from MRISynthesisLib.training.trainer import TrainOptions, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from MRISynthesisLib.phantom.breast import sample_breast

    # one benign and one malignant subject (the class of a subject is drawn from its seed)
    wanted, seeds = {"benign": None, "malignant": None}, iter(range(60, 200))
    while None in wanted.values():
        seed = next(seeds)
        kind = sample_breast(seed, resolution=4.0).info.get("lesion_class")
        if kind in wanted and wanted[kind] is None:
            wanted[kind] = seed
    source = PhantomSource("breast", list(wanted.values()), sequences=("T2", "DCE"), scheme="percentile", resolution=1.5)
    return load_cases(source, source.names(), CaseCache(tmp_path_factory.mktemp("breast")))


def test_patches_have_the_models_channels_and_classes(cases, tmp_path):
    rng = np.random.default_rng(0)
    pools = [extract_patches(c.volumes, c.labels, c.organ_or_foreground, rng, size=32, healthy=5) for c in cases]
    patches = np.concatenate([p for p, _ in pools])
    classes = np.concatenate([c for _, c in pools])
    assert patches.shape[1:] == (len(CHANNELS), 32, 32) and patches.dtype == np.float32
    assert {CLASSES[k] for k in classes} == {"benign", "malignant", "healthy"}
    malignant, benign = patches[classes == 1], patches[classes == 0]
    assert dce_statistics(malignant).washout_fraction > dce_statistics(benign).washout_fraction
    path = save_patches(tmp_path / "train.npz", patches, classes)
    again, again_classes = load_patches(path)
    assert np.array_equal(again, patches) and np.array_equal(again_classes, classes)
    with pytest.raises(InputError, match="need T2"):
        extract_patches({"T2": cases[0].volumes["T2"], "DCE": cases[0].volumes["T2"]}, cases[0].labels,
                        cases[0].mask, rng)
    with pytest.raises(InputError, match="file not found"):
        load_patches(tmp_path / "missing.npz")


def _synthetic_case(lesion_slices):
    """T2 and a DCE series (all -1 but the lesion, which enhances), and labels from ``lesion_slices``:
    {z: [(label, y0, y1, x0, x1), ...]}."""
    shape = (12, 64, 64)
    labels = np.zeros(shape, np.uint8)
    for z, boxes in lesion_slices.items():
        for label, y0, y1, x0, x1 in boxes:
            labels[z, y0:y1, x0:x1] = label
    dce = np.full((5,) + shape, -1.0, np.float32)
    dce[1:, labels > 0] = 0.5
    return {"T2": np.zeros(shape, np.float32), "DCE": dce}, labels, np.ones(shape, bool)


def test_a_lesion_in_pieces_is_one_lesion_centred_on_its_centre_of_mass():
    # a malignant mass whose spicule fell off on resampling (a one-voxel gap) and a benign lesion far away
    volumes, labels, mask = _synthetic_case({5: [(2, 20, 30, 20, 30), (2, 31, 33, 20, 30), (1, 50, 54, 50, 54)],
                                             6: [(2, 20, 29, 20, 29)]})
    patches, classes = extract_patches(volumes, labels, mask, np.random.default_rng(0), size=32, healthy=0)
    assert sorted(classes.tolist()) == [0, 1]
    malignant = patches[classes == 1][0]
    # the patch centre (16, 16) is the mass's centre of mass: enhancing (post1 > -1) around it
    assert malignant[2, 14:18, 14:18].min() > 0
    assert len(extract_patches(volumes, labels, mask, np.random.default_rng(0), size=32, healthy=0,
                               per_lesion="slices")[0]) == 3  # two slices of the mass, one of the benign lesion
    with pytest.raises(InputError, match="per_lesion"):
        extract_patches(volumes, labels, mask, np.random.default_rng(0), size=32, per_lesion="all")


def test_no_patch_is_centred_where_the_dce_holds_no_data():
    """A DCE slab covering slices 0-5 of a case: the lesion centred on slice 8 gives no patch (its channels
    would be fill), the one on slice 3 does, and every healthy patch is centred inside the slab."""
    volumes, labels, mask = _synthetic_case({3: [(1, 20, 26, 20, 26)], 8: [(2, 40, 46, 40, 46)]})
    z, y, x = labels.shape
    volumes["T2"] = np.broadcast_to(np.arange(z, dtype=np.float32)[:, None, None], labels.shape).copy()
    covered = np.zeros(labels.shape, bool)
    covered[:6] = True
    patches, classes = extract_patches(volumes, labels, mask, np.random.default_rng(0), size=32, healthy=20,
                                       covered=covered)
    assert classes.tolist().count(0) == 1 and classes.tolist().count(1) == 0
    healthy = patches[classes == 2]
    assert len(healthy) == 20 and set(healthy[:, 0, 16, 16].tolist()) <= set(range(6))  # T2 codes the slice
    everywhere = extract_patches(volumes, labels, mask, np.random.default_rng(0), size=32, healthy=0)[1]
    assert sorted(everywhere.tolist()) == [0, 1]
    with pytest.raises(InputError, match="coverage must match"):
        extract_patches(volumes, labels, mask, np.random.default_rng(0), size=32, covered=covered[:3])


def _position_coded(case):
    """The case with T2 replaced by each voxel's flat (y, x) index, so a patch's centre says where it was cut."""
    z, y, x = case.mask.shape
    code = np.broadcast_to((np.arange(y)[:, None] * x + np.arange(x)[None, :]).astype(np.float32), (z, y, x))
    return replace(case, volumes={**case.volumes, "T2": np.ascontiguousarray(code)})


def test_healthy_patches_are_drawn_inside_the_breast_not_the_thorax(cases):
    # the paper samples healthy centres "inside the breast"; the phantom knows where its breasts are
    for case in cases:
        organ = case.organ
        assert organ is not None and organ.shape == case.mask.shape
        assert 0.05 < organ.sum() / case.mask.sum() < 0.6  # the breasts, not the thorax behind them
        assert organ[np.isin(case.labels, [1, 2])].mean() > 0.9  # lesions lie in the breast
    recipe = recipe_for("mp-gan")("lite", CPU, healthy_per_case=40)
    for case in cases:
        patches, classes = recipe._pool(_position_coded(case))
        healthy = patches[classes == CLASSES.index("healthy"), CHANNELS.index("T2")]
        assert len(healthy) == 40
        width = case.mask.shape[2]
        centres = healthy[:, 16, 16].astype(int)
        ys, xs = centres // width, centres % width
        # each centre is a breast voxel on some slice, and no healthy centre lies where no slice has breast
        assert case.organ.any(axis=0)[ys, xs].all()


def test_training_keeps_only_the_patches_and_draws_the_same_batches(cases):
    recipe = recipe_for("mp-gan")("lite", CPU)
    full = recipe.make_batch(cases, np.random.default_rng(3), 12)
    slim = recipe_for("mp-gan")("lite", CPU)
    prepared = [slim.prepare_case(c) for c in cases]
    assert all(not c.volumes and c.labels.size == 0 for c in prepared)
    again = slim.make_batch(prepared, np.random.default_rng(3), 12)
    assert all(np.array_equal(full[k], again[k]) for k in full)
    # lesions give several central slices each, and every class is drawn about as often
    _, classes = recipe._pool(cases[0])
    assert (classes != CLASSES.index("healthy")).sum() >= 2
    drawn = recipe.make_batch(cases, np.random.default_rng(4), 300)["labels"]
    assert np.bincount(drawn, minlength=3).min() > 70


@pytest.mark.parametrize("variant, adversary_steps", [("dcgan", 1), ("wgan", 5)])
def test_recipe_steps_per_variant(cases, variant, adversary_steps):
    torch.manual_seed(0)
    recipe = recipe_for("mp-gan")("lite", CPU, variant=variant)
    counts = {"adversary": 0, "generator": 0}
    for key in counts:
        recipe.optimizers[key].register_step_post_hook(lambda *a, k=key: counts.__setitem__(k, counts[k] + 1))
    batch = recipe.make_batch(cases, np.random.default_rng(0), 8)
    assert batch["inputs"].shape == (8, 7, 32, 32) and set(batch["labels"]) <= {0, 1, 2}
    tensors = recipe.to_tensors(batch)
    first = recipe.train_step(tensors)
    assert counts == {"adversary": adversary_steps, "generator": 1}
    if variant == "wgan":
        assert max(float(p.abs().max()) for p in recipe.networks["adversary"].parameters()) <= 0.01 + 1e-7
    else:
        losses = [recipe.train_step(tensors)["adversary"] for _ in range(5)]
        assert losses[-1] < first["adversary"]


def test_bad_options():
    with pytest.raises(InputError, match="unknown MP-GAN variant"):
        recipe_for("mp-gan")("lite", CPU, variant="vae")
    with pytest.raises(InputError, match="breast patches"):
        recipe_for("mp-gan")("lite", CPU, anatomy="brain")


def test_train_end_to_end_and_resume(tmp_path):
    options = dict(model="mp-gan", data="phantom:breast:2", steps_per_epoch=2, checkpoint_every=1, batch_size=4)
    run = tmp_path / "run"
    train(TrainOptions(out=str(run), steps=1, **options), progress=False)
    train(TrainOptions(out=str(run), steps=2, resume=True, **options), progress=False)
    state = checkpoint.load(run / "checkpoints" / "last.pt")
    assert state["step"] == 2 and set(state["recipe"]["networks"]) == {"generator", "generator_average", "adversary"}


class _Copying(torch.nn.Module):
    """A stand-in generator that returns given patches of the asked class, in order."""

    def __init__(self, patches: np.ndarray, classes: np.ndarray) -> None:
        super().__init__()
        self.patches, self.classes = torch.from_numpy(patches), torch.from_numpy(classes)

    def forward(self, z, labels):
        return self.patches[self.classes == int(labels[0])][:len(z)]


def test_validation_scores_real_lesions_once_each_by_the_1nn_test(cases):
    recipe = recipe_for("mp-gan")("lite", CPU)
    prepared = [recipe.prepare_case(c) for c in cases]
    [held] = recipe.validation_set(prepared, seed=0, batch_size=4, n_batches=2)
    real, classes = held["real"], held["classes"]
    lesion_classes = [CLASSES.index("benign"), CLASSES.index("malignant")]
    for k in lesion_classes:  # one centre patch per lesion; training has several slices of each
        centres = extract_patches(cases[0].volumes, cases[0].labels, cases[0].mask, np.random.default_rng(0),
                                  size=32, healthy=0)[1].tolist().count(k) + extract_patches(
            cases[1].volumes, cases[1].labels, cases[1].mask, np.random.default_rng(0), size=32, healthy=0)[1].tolist().count(k)
        assert (classes == k).sum() == centres
        assert sum((recipe._pool(c)[1] == k).sum() for c in cases) > centres
    assert (classes == CLASSES.index("healthy")).sum() == 2 * 4
    # copies of the real patches cannot be told apart; a blank generator is told apart every time
    recipe.networks[recipe.inference_network] = _Copying(real, classes)
    copied = recipe.validate([held])
    recipe.networks[recipe.inference_network] = _Copying(np.full_like(real, -1.0), classes)
    blank = recipe.validate([held])
    measured = [f"val_1nn_{CLASSES[k]}" for k in np.unique(classes) if (classes == k).sum() >= 2]
    assert measured and all(copied[m] == 0.0 and blank[m] >= 0.9 for m in measured)
    assert copied["val_1nn"] < 0.01 and blank["val_1nn"] >= 0.9
    assert set(recipe.validation_names) <= set(copied)
    # copies wash out as often as the real lesions; the score adds the gap to 1-NN's distance from 0.5
    assert copied["val_washout_gap"] == 0.0 and copied["val_score"] == pytest.approx(copied["val_1nn"] - 0.5)
    assert blank["val_score"] == pytest.approx(blank["val_1nn"] - 0.5 + blank["val_washout_gap"])


def test_validation_counts_a_washout_that_the_1nn_test_misses(cases):
    # generated lesions that look real (copies) but whose malignant enhancement never washes out
    recipe = recipe_for("mp-gan")("lite", CPU)
    [held] = recipe.validation_set([recipe.prepare_case(c) for c in cases], seed=0, batch_size=4, n_batches=2)
    held = {k: np.concatenate([v, v]) for k, v in held.items()}  # every class twice: measured, not NaN
    real, classes = held["real"], held["classes"]
    malignant = CLASSES.index("malignant")
    assert dce_statistics(real[classes == malignant]).washout_fraction > 0
    persistent = real.copy()
    post = [CHANNELS.index(c) for c in CHANNELS if c.startswith("T1_post")]
    persistent[:, post[-1]] = persistent[:, post].max(axis=1)  # the last phase stays at the peak
    recipe.networks[recipe.inference_network] = _Copying(real, classes)
    faithful = recipe.validate([held])
    recipe.networks[recipe.inference_network] = _Copying(persistent, classes)
    flat = recipe.validate([held])
    assert flat["val_washout_gap_malignant"] > 0.1 + faithful["val_washout_gap_malignant"]
    assert flat["val_score"] > faithful["val_score"]


def test_the_generator_average_follows_the_trained_generator_and_resumes(cases):
    torch.manual_seed(0)
    recipe = recipe_for("mp-gan")("lite", CPU)
    live, average = recipe.networks["generator"], recipe.networks[recipe.inference_network]
    batch = recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng(0), 8))
    recipe.train_step(batch)  # the first update copies the trained weights
    assert all(torch.equal(a, p) for a, p in zip(average.parameters(), live.parameters()))
    before = [p.detach().clone() for p in average.parameters()]
    recipe.train_step(batch)
    decay = recipe.average_decay
    for a, old, p in zip(average.parameters(), before, live.parameters()):
        assert torch.allclose(a, decay * old + (1 - decay) * p, atol=1e-6)
    assert any(not torch.equal(a, p) for a, p in zip(average.parameters(), live.parameters()))
    # its batch-norm statistics are its own: in eval mode it makes what it makes from batch statistics
    for _ in range(3):
        recipe.train_step(batch)
    recipe.state_dict()
    z, labels = torch.randn(256, recipe.latent_size), torch.arange(256) % len(CLASSES)
    with torch.no_grad():
        evaluated = average.eval()(z, labels)
        batch_statistics = copy.deepcopy(average).train()(z, labels)
        stale = copy.deepcopy(average).eval()
        live_statistics = {k: v for k, v in live.state_dict().items() if "running" in k}
        stale.load_state_dict({**average.state_dict(), **live_statistics})
        with_live_statistics = stale(z, labels)
    assert (evaluated - batch_statistics).abs().mean() < 0.5 * (with_live_statistics - batch_statistics).abs().mean()
    # a resumed recipe goes on averaging: its next update moves the average, it does not copy
    again = recipe_for("mp-gan")("lite", CPU)
    again.load_state_dict(recipe.state_dict())
    again.train_step(batch)
    resumed, trained = again.networks[again.inference_network], again.networks["generator"]
    assert any(not torch.equal(a, p) for a, p in zip(resumed.parameters(), trained.parameters()))


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
def test_learning_rates_hold_then_fall_linearly_to_zero_over_the_last_half_of_the_run():
    def rates(recipe):
        return {key: optimizer.param_groups[0]["lr"] for key, optimizer in recipe.optimizers.items()}

    for variant in ("dcgan", "wgan"):
        recipe = recipe_for("mp-gan")("lite", CPU, variant=variant)
        base = rates(recipe)["generator"]
        recipe.plan(total_steps=15, steps_per_epoch=2)  # 8 epochs, the last one short: decay over 4
        seen = []
        for _ in range(8):
            seen.append(rates(recipe))
            recipe.end_of_epoch()
        assert all(r["generator"] == r["adversary"] for r in seen)
        assert [r["generator"] / base for r in seen] == pytest.approx([1, 1, 1, 1, 1, 0.75, 0.5, 0.25])
        assert rates(recipe)["generator"] == 0
        # a resumed recipe plans the same run and goes on where the schedule was
        resumed = recipe_for("mp-gan")("lite", CPU, variant=variant)
        resumed.plan(total_steps=15, steps_per_epoch=2)
        resumed.load_state_dict({**recipe.state_dict(), "networks": {}})
        assert rates(resumed) == rates(recipe)
    paper = recipe_for("mp-gan")("paper", CPU)
    before = rates(paper)
    paper.plan(total_steps=100, steps_per_epoch=10)
    for _ in range(10):
        paper.end_of_epoch()
    assert rates(paper) == before and not paper.schedulers  # the paper's constant rates


def test_best_checkpoint_is_the_lowest_validation_score_and_export_says_so(tmp_path):
    import csv
    import json

    from MRISynthesisLib.training.export import export_run

    run = tmp_path / "run"
    summary = train(TrainOptions(model="mp-gan", data="phantom:breast:5", out=str(run), steps=4, steps_per_epoch=1,
                                 checkpoint_every=4, batch_size=4), progress=False)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    scores = [float(r["val_score"]) for r in rows]
    assert all(-0.5 <= v <= 1.5 for v in scores) and "val_psnr" not in rows[0]
    assert all(float(r["val_score"]) == pytest.approx(float(r["val_1nn"]) - 0.5 + float(r["val_washout_gap"]),
                                                      abs=1e-4) for r in rows)
    # the trainer planned the run: both learning rates reached 0 at its last step
    optimizers = checkpoint.load(run / "checkpoints" / "last.pt")["recipe"]["optimizers"]
    assert all(group["lr"] == 0 for o in optimizers.values() for group in o["param_groups"])
    best = checkpoint.load(run / "checkpoints" / "best.pt")
    assert best["selection"] == "val_score" and best["best_score"] == pytest.approx(min(scores))
    assert best["step"] == 1 + scores.index(min(scores))
    assert summary["selection"] == "val_score" and summary["best_score"] == pytest.approx(min(scores))
    # the weights written are the generator's running average (after 4 steps no longer the live weights)
    last = export_run(run, which="last", folder=tmp_path / "last")
    written = torch.load(tmp_path / "last" / last.file, weights_only=True)
    networks = checkpoint.load(run / "checkpoints" / "last.pt")["recipe"]["networks"]
    average, live = networks["generator_average"], networks["generator"]
    assert all(torch.equal(written[k], v.half()) for k, v in average.items() if v.is_floating_point())
    assert any(not torch.equal(written[k], v.half()) for k, v in live.items() if v.is_floating_point())
    entry = export_run(run, which="best", folder=tmp_path / "models")
    recorded = entry.training["best_validation"]
    assert recorded["figure"] == "val_score" and recorded["value"] == pytest.approx(min(scores), abs=1e-4)
    card = next((tmp_path / "models").glob("*.md")).read_text()
    assert f"{recipe_for('mp-gan').selection_label}: {recorded['value']}" in card
    assert json.loads((tmp_path / "models" / "manifest.json").read_text())["weights"][0]["training"]["best_validation"] == recorded
