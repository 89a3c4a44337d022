"""MP-GAN: breast lesion patches (classes, channels, washout) and the DCGAN/WGAN recipe."""

from __future__ import annotations

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
    pools = [extract_patches(c.volumes, c.labels, c.mask, rng, size=32, healthy=5) for c in cases]
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
    with pytest.raises(InputError, match="not a patch file"):
        load_patches(tmp_path / "missing.npz")


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
    assert state["step"] == 2 and set(state["recipe"]["networks"]) == {"generator", "adversary"}
