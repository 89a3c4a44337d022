"""TC-MGAN recipe: segmenter warm-up then frozen, the generator's L1 warm-up (lite), WGAN-GP critic steps, the
loss falls, exact resume."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.training import checkpoint
from MRISynthesisLib.training.data import CaseCache, PhantomSource, load_cases
from MRISynthesisLib.training.recipes import recipe_for
from MRISynthesisLib.training import trainer
from MRISynthesisLib.training.export import export_run
from MRISynthesisLib.training.trainer import TrainOptions, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    source = PhantomSource("brain", [41, 42], sequences=("T2", "FLAIR", "T1ce", "T1"), scheme="zscore", resolution=3.0)
    return load_cases(source, source.names(), CaseCache(tmp_path_factory.mktemp("cases")))


def _recipe(**options):
    torch.manual_seed(0)
    return recipe_for("tc-mgan")("lite", CPU, **options)


def test_batches_draw_a_target_per_sample(cases):
    recipe = _recipe()
    batch = recipe.make_batch(cases, np.random.default_rng(0), 8)
    assert batch["inputs"].shape == (8, 1, 128, 128) and batch["targets"].shape == (8, 3, 128, 128)
    assert len(set(batch["target"].tolist())) > 1
    chosen = recipe._chosen(recipe.to_tensors(batch))
    k = int(batch["target"][0])
    assert torch.equal(chosen[0, 0], torch.from_numpy(batch["targets"][0, k]))


def test_segmenter_trains_first_then_stays_frozen(cases):
    recipe = _recipe(segmenter_steps=2, reconstruction_steps=0, critic_steps=2)
    batch = recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng(1), 4))
    generator_before = {k: v.clone() for k, v in recipe.networks["generator"].state_dict().items()}
    first = recipe.train_step(batch)
    assert set(first) == {"loss", "segmenter_dice_loss"}
    assert all(torch.equal(v, recipe.networks["generator"].state_dict()[k]) for k, v in generator_before.items())
    recipe.train_step(batch)
    frozen = {k: v.clone() for k, v in recipe.networks["segmenter"].state_dict().items()}
    gan = recipe.train_step(batch)
    assert {"adversarial", "classification", "l1", "segmentation", "critic", "gradient_penalty"} <= set(gan)
    assert all(torch.equal(v, recipe.networks["segmenter"].state_dict()[k]) for k, v in frozen.items())
    assert not any(p.requires_grad for p in recipe.networks["segmenter"].parameters())


def test_the_generator_warm_up_trains_l1_alone_before_the_gan(cases):
    recipe = _recipe(segmenter_steps=1, reconstruction_steps=2, critic_steps=1)
    counts = {"critic": 0, "generator": 0, "segmenter": 0}
    for key in counts:
        recipe.optimizers[key].register_step_post_hook(lambda *a, k=key: counts.__setitem__(k, counts[k] + 1))
    batch = recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng(4), 4))
    assert set(recipe.train_step(batch)) == {"loss", "segmenter_dice_loss"}
    warm = [recipe.train_step(batch) for _ in range(2)]
    assert all(set(w) == {"loss", "l1"} for w in warm)
    assert counts == {"critic": 0, "generator": 2, "segmenter": 1}
    recipe.end_of_epoch()  # the rate schedule waits for the GAN
    assert recipe.schedulers["generator"].last_epoch == 0
    assert "adversarial" in recipe.train_step(batch) and counts["critic"] == 1
    recipe.end_of_epoch()
    assert recipe.schedulers["generator"].last_epoch == 1
    assert _recipe().reconstruction_steps > 0 and recipe_for("tc-mgan")("paper", CPU).reconstruction_steps == 0


def test_the_warm_up_l1_falls_on_a_fixed_batch(cases):
    recipe = _recipe(segmenter_steps=0, reconstruction_steps=24)
    batch = recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng(5), 4))
    losses = [recipe.train_step(batch)["l1"] for _ in range(24)]  # whole 128 x 128 slices: a slower start
    assert losses[-1] < 0.8 * losses[0]


def test_critic_steps_per_generator_step(cases):
    recipe = _recipe(segmenter_steps=0, reconstruction_steps=0, critic_steps=3)
    counts = {"critic": 0, "generator": 0}
    for key in counts:
        recipe.optimizers[key].register_step_post_hook(lambda *a, k=key: counts.__setitem__(k, counts[k] + 1))
    recipe.train_step(recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng(2), 4)))
    assert counts == {"critic": 3, "generator": 1}


def test_the_generator_l1_falls_on_a_fixed_batch(cases):
    recipe = _recipe(segmenter_steps=0, reconstruction_steps=0, critic_steps=1)
    batch = recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng(3), 4))
    # L1 weighs 0.1 beside the critic's term: it stays flat for the first dozen steps, then falls
    losses = [recipe.train_step(batch)["l1"] for _ in range(24)]
    assert losses[-1] < 0.97 * losses[0]


def test_bad_options():
    with pytest.raises(InputError, match="brain model"):
        recipe_for("tc-mgan")("lite", CPU, anatomy="breast")
    with pytest.raises(InputError, match="critic_steps must be at least 1"):
        recipe_for("tc-mgan")("lite", CPU, critic_steps=0)
    with pytest.raises(InputError, match="reconstruction_steps must be 0 or more"):
        recipe_for("tc-mgan")("lite", CPU, reconstruction_steps=-1)


def test_a_resumed_run_crosses_the_warm_up_exactly(tmp_path):
    options = dict(model="tc-mgan", data="phantom:brain:3", steps_per_epoch=2, checkpoint_every=1, batch_size=2,
                   recipe_options={"segmenter_steps": 1, "reconstruction_steps": 1, "critic_steps": 1})
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(TrainOptions(out=str(straight), steps=4, **options), progress=False)
    interrupted.mkdir()
    shutil.copytree(straight / "cache", interrupted / "cache")
    train(TrainOptions(out=str(interrupted), steps=1, **options), progress=False)
    train(TrainOptions(out=str(interrupted), steps=3, resume=True, **options), progress=False)
    train(TrainOptions(out=str(interrupted), steps=4, resume=True, **options), progress=False)  # from the GAN on
    entry = export_run(straight, which="last", folder=tmp_path / "models")
    assert entry.training["warm_up_steps"] == 2 and entry.training["steps"] == 4  # the GAN began after step 2
    rows = list(csv.reader((interrupted / "metrics.csv").open(newline="")))
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert all(len(r) == len(rows[0]) for r in rows)  # each phase logs other losses, under the one header
    logged = list(csv.DictReader((interrupted / "metrics.csv").open(newline="")))
    assert logged[0]["segmenter_dice_loss"] and not logged[0]["adversarial"]  # step 1: the segmenter
    assert logged[1]["l1"] and not logged[1]["adversarial"]  # step 2: L1 alone
    assert all(float(row[k]) == float(row[k]) for row in logged[2:] for k in ("adversarial", "critic", "l1"))
    a, b = (checkpoint.load(f / "checkpoints" / "last.pt")["recipe"] for f in (straight, interrupted))
    assert a["steps_done"] == b["steps_done"] == 4
    for net in a["networks"]:
        assert all(torch.equal(a["networks"][net][k], b["networks"][net][k]) for k in a["networks"][net]), net


def test_early_stopping_waits_for_the_gan_phase_patience(tmp_path, monkeypatch):
    """A warm-up that stops improving does not end the run: the GAN gets its own epochs of patience."""
    recipe_cls = recipe_for("tc-mgan")
    monkeypatch.setattr(recipe_cls, "patience", {"lite": 2, "paper": 2})
    flat = {"val_psnr": 20.0, "val_ssim": 0.5, "example": (np.zeros((4, 4)),) * 3}
    monkeypatch.setattr(recipe_cls, "validate", lambda recipe, batches: dict(flat))  # never improves after step 1
    result = train(TrainOptions(model="tc-mgan", data="phantom:brain:3", out=str(tmp_path / "run"), steps=20,
                                steps_per_epoch=1, checkpoint_every=1, batch_size=2,
                                recipe_options={"segmenter_steps": 1, "reconstruction_steps": 3, "critic_steps": 1}),
                   progress=False)
    assert result["steps"] == 4 + 2  # stale since step 1, but the GAN (from step 4 on) waits 2 epochs
