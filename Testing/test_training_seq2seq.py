"""Seq2Seq recipe: pairs drawn per step, the loss falls, runs resume exactly, the perceptual policy."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.training import checkpoint
from MRISynthesisLib.training.data import CaseCache, PhantomSource, load_cases
from MRISynthesisLib.training.recipes import recipe_for
from MRISynthesisLib.training.trainer import TrainOptions, train

CPU = torch.device("cpu")
SMALL = dict(model="seq2seq", data="phantom:brain:3", steps_per_epoch=2, checkpoint_every=1, batch_size=1,
             recipe_options={"perceptual": "random"})


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    source = PhantomSource("brain", [31, 32], sequences=("T1", "T1ce", "T2", "FLAIR"), scheme="percentile",
                           resolution=4.0)
    return load_cases(source, source.names(), CaseCache(folder))


def _recipe(**options):
    torch.manual_seed(0)
    recipe = recipe_for("seq2seq")("lite", CPU, **{"perceptual": "random", **options})
    recipe.crop = {"lite": (32, 32)}
    return recipe


def test_batches_draw_one_source_and_another_target_reproducibly(cases):
    recipe = _recipe()
    pairs = set()
    for seed in range(12):
        a = recipe.make_batch(cases, np.random.default_rng(seed), 2)
        b = recipe.make_batch(cases, np.random.default_rng(seed), 2)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert a["inputs"].shape == (2, 12, 32, 32) and a["source"][0] != a["target"][0]
        assert (a["source"] == a["source"][0]).all()  # one pair per batch: the model takes one target code
        pairs.add((int(a["source"][0]), int(a["target"][0])))
    assert len(pairs) >= 4


def test_the_loss_falls_on_a_fixed_batch(cases):
    recipe = _recipe()
    batch = recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng(3), 2))
    first = recipe.train_step(batch)
    assert {"translation_l1", "self_l1", "cycle_l1", "adversarial", "translation_perceptual", "discriminator"} <= set(first)
    for _ in range(8):
        last = recipe.train_step(batch)
    assert last["translation_l1"] < first["translation_l1"] and last["self_l1"] < first["self_l1"]
    prediction, target, mask = recipe.predict(batch)
    assert prediction.shape == target.shape == (2, 1, 32, 32)


def test_perceptual_policy_and_bad_options():
    import torchvision.models as tvm
    from MRISynthesisLib.perceptual import checkpoint_path

    if not checkpoint_path(tvm.VGG19_Weights.IMAGENET1K_V1).exists():
        with pytest.raises(InputError, match="vgg19-dcbb9e9d.pth.*--without-perceptual"):
            recipe_for("seq2seq")("lite", CPU)
    off = recipe_for("seq2seq")("lite", CPU, perceptual="off")
    assert off.perceptual is None and "--without-perceptual" in off.notes[0]
    with pytest.raises(InputError, match="breast"):
        recipe_for("seq2seq")("lite", CPU, anatomy="breast", perceptual="off")
    with pytest.raises(InputError, match="unknown perceptual backbone"):
        recipe_for("seq2seq")("lite", CPU, perceptual="vgg")


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(TrainOptions(out=str(straight), steps=3, **SMALL), progress=False)
    interrupted.mkdir()
    shutil.copytree(straight / "cache", interrupted / "cache")
    train(TrainOptions(out=str(interrupted), steps=1, **SMALL), progress=False)
    train(TrainOptions(out=str(interrupted), steps=3, resume=True, **SMALL), progress=False)
    a, b = (checkpoint.load(f / "checkpoints" / "last.pt")["recipe"]["networks"] for f in (straight, interrupted))
    for net in ("generator", "discriminator"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net
