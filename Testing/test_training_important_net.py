"""IMPORTANT-Net recipe: brain and breast batches, frame selection, the loss falls, the perceptual policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.training import checkpoint
from MRISynthesisLib.training.data import CaseCache, PhantomSource, load_cases
from MRISynthesisLib.training.recipes import recipe_for
from MRISynthesisLib.training.recipes.important_net import FRAMES, select_frames
from MRISynthesisLib.training.trainer import TrainOptions, train

CPU = torch.device("cpu")


def _cases(tmp_path_factory, anatomy, sequences, resolution):
    source = PhantomSource(anatomy, [51, 52], sequences=sequences, scheme="zscore", resolution=resolution)
    return load_cases(source, source.names(), CaseCache(tmp_path_factory.mktemp(anatomy)))


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    return _cases(tmp_path_factory, "brain", ("T1", "T1ce", "FLAIR", "T2"), 3.0)


def _recipe(anatomy="brain"):
    torch.manual_seed(0)
    recipe = recipe_for("important-net")("lite", CPU, anatomy=anatomy, perceptual="random")
    recipe.size = {"lite": (64, 64)}
    return recipe


def test_the_loss_falls_on_a_fixed_batch(brain):
    recipe = _recipe()
    batch = recipe.to_tensors(recipe.make_batch(brain, np.random.default_rng(0), 2))
    assert batch["inputs"].shape == (2, 3, 64, 64) and batch["targets"].shape == (2, 1, 64, 64)
    first = recipe.train_step(batch)
    assert {"adversarial", "l1", "reconstruction", "perceptual", "discriminator"} <= set(first)
    for _ in range(6):
        last = recipe.train_step(batch)
    assert last["l1"] < first["l1"] and last["reconstruction"] < first["reconstruction"]


def test_breast_task_sees_one_frame_of_each_series(tmp_path_factory):
    cases = _cases(tmp_path_factory, "breast", ("T1", "DWI", "DCE", "T2"), 4.0)
    assert cases[0].volumes["DCE"].ndim == 4
    recipe = _recipe("breast")
    assert recipe.inputs == ("T1", "DWI", "DCE") and recipe.targets == ("T2",)
    batch = recipe.make_batch(cases, np.random.default_rng(1), 2)
    assert batch["inputs"].shape == (2, 3, 64, 64)
    chosen = select_frames(cases[0].volumes)
    assert np.array_equal(chosen["DCE"], cases[0].volumes["DCE"][FRAMES["DCE"]])
    assert np.array_equal(chosen["DWI"], cases[0].volumes["DWI"][-1])


def test_select_frames_refuses_what_it_cannot_reduce():
    with pytest.raises(InputError, match="ADC is a 4D series"):
        select_frames({"ADC": np.zeros((2, 3, 4, 5))})
    with pytest.raises(InputError, match="DCE has 1 frame"):
        select_frames({"DCE": np.zeros((1, 3, 4, 5))})
    with pytest.raises(InputError, match="must be 3D or a 4D series"):
        select_frames({"T1": np.zeros((4, 5))})


def test_perceptual_policy():
    import torchvision.models as tvm
    from MRISynthesisLib.perceptual import checkpoint_path

    if not checkpoint_path(tvm.VGG19_Weights.IMAGENET1K_V1).exists():
        with pytest.raises(InputError, match="vgg19-dcbb9e9d.pth.*--without-perceptual"):
            recipe_for("important-net")("lite", CPU)
    off = recipe_for("important-net")("lite", CPU, perceptual="off")
    assert off.perceptual is None and "--without-perceptual" in off.notes[0]


def test_train_end_to_end_and_resume(tmp_path):
    options = dict(model="important-net", data="phantom:brain:3", steps_per_epoch=2, checkpoint_every=1,
                   batch_size=2, recipe_options={"perceptual": "off"})
    run = tmp_path / "run"
    train(TrainOptions(out=str(run), steps=1, **options), progress=False)
    train(TrainOptions(out=str(run), steps=2, resume=True, **options), progress=False)
    state = checkpoint.load(run / "checkpoints" / "last.pt")
    assert state["step"] == 2 and set(state["recipe"]["networks"]) == {"generator", "discriminator"}
