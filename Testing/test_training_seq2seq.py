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


@pytest.fixture(scope="module")
def breast_cases(tmp_path_factory):
    """Breast cases whose DCE series differ in length (6 phases, and 5 in the last two, as a protocol with
    one post-contrast phase fewer) beside a 2-frame DWI."""
    from dataclasses import replace

    folder = tmp_path_factory.mktemp("breast-cases")
    source = PhantomSource("breast", [41, 42, 43, 44], sequences=("T1", "T2", "DWI", "DCE"), scheme="percentile",
                           resolution=4.0)
    cases = load_cases(source, source.names(), CaseCache(folder))
    return cases[:2] + [replace(c, volumes={**c.volumes, "DCE": c.volumes["DCE"][:5]}) for c in cases[2:]]


def _recipe(**options):
    torch.manual_seed(0)
    recipe = recipe_for("seq2seq")("lite", CPU, **{"perceptual": "random", **options})
    recipe.crop = {"lite": (32, 32)}
    return recipe


def test_phantom_cases_know_their_organ_brain_or_breasts_and_the_cache_keeps_it(cases, breast_cases, tmp_path):
    for case in cases:
        organ = case.organ
        assert organ is not None and organ.shape == case.mask.shape and organ.dtype == bool
        # inside the head, but not all of it: scalp, skull and muscle are left out
        assert (organ & ~case.mask).sum() < 0.01 * organ.sum() and 0.3 < organ.sum() / case.mask.sum() < 0.95
        assert np.isin(np.unique(case.labels[case.labels > 0]), [1, 2, 3]).all()
        assert organ[case.labels > 0].all()  # the tumour is brain
    cache = CaseCache(tmp_path)
    cache.save(cases[0])
    assert np.array_equal(cache.load(cases[0].name).organ, cases[0].organ)
    breast = breast_cases[0]  # the breast phantom's organ: its breasts' interior, not the thorax
    assert breast.organ is not None and (breast.organ & ~breast.mask).sum() < 0.01 * breast.organ.sum()
    assert 0.05 < breast.organ.sum() / breast.mask.sum() < 0.6


def test_a_cache_entry_of_an_older_format_is_rebuilt(cases, tmp_path):
    cache = CaseCache(tmp_path)
    cache.save(cases[0])
    with np.load(cache.path(cases[0].name)) as data:  # as the first format wrote it: no format, no organ
        old = {k: data[k] for k in data.files if k not in ("format", "organ")}
    np.savez_compressed(cache.path(cases[0].name), **old)
    assert cache.load(cases[0].name) is None and not cache.path(cases[0].name).exists()


def test_batches_draw_a_target_and_one_to_three_other_sources_reproducibly(cases):
    recipe = _recipe()
    pairs, sizes = set(), set()
    for seed in range(24):
        a = recipe.make_batch(cases, np.random.default_rng(seed), 2)
        b = recipe.make_batch(cases, np.random.default_rng(seed), 2)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert a["inputs"].shape == (2, 12, 32, 32) and a["source"][0] != a["target"][0]
        for key in ("source", "target", "available"):  # one draw per batch: the model takes one target code
            assert (a[key] == a[key][0]).all(), key
        available = a["available"][0]
        assert available[a["target"][0]] == 0 and available[a["source"][0]] == 1
        pairs.add((int(a["source"][0]), int(a["target"][0])))
        sizes.add(int(available.sum()))
    assert len(pairs) >= 4 and sizes == {1, 2, 3}


def test_several_sources_enter_together_in_the_order_inference_gives_them(cases):
    recipe = _recipe()
    batch = recipe.make_batch(cases, np.random.default_rng(0), 2)
    batch["target"][:], batch["source"][:], batch["available"][:] = 0, 3, (0, 1, 0, 1)  # T1ce + FLAIR -> T1
    tensors = recipe.to_tensors(batch)
    fused = recipe._sources(tensors)
    assert fused.shape == (2, 2, 3, 32, 32)
    np.testing.assert_array_equal(fused[:, 0].flatten(1).numpy(), batch["inputs"][:, 3:6].reshape(2, -1))
    np.testing.assert_array_equal(fused[:, 1].flatten(1).numpy(), batch["inputs"][:, 9:12].reshape(2, -1))
    # the generator sees both: changing only T1ce changes the T1 it makes
    with torch.no_grad():
        before = recipe.networks["generator"](fused, "T1")
        fused[:, 0] += 0.5
        after = recipe.networks["generator"](fused, "T1")
    assert not torch.allclose(before, after)
    result = recipe.train_step(tensors)
    assert np.isfinite(result["translation_l1"]) and np.isfinite(result["cycle_l1"])


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


def test_without_the_adversarial_term_there_is_no_discriminator(cases):
    recipe = recipe_for("seq2seq")("lite", CPU, perceptual="off", adversarial=False)
    assert "discriminator" not in recipe.networks and "discriminator" not in recipe.optimizers
    assert any("--without-adversarial" in note for note in recipe.notes)
    result = recipe.train_step(recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng(4), 2)))
    assert "adversarial" not in result and "discriminator" not in result
    assert np.isfinite(result["translation_l1"])


def test_perceptual_policy_and_bad_options():
    import torchvision.models as tvm
    from MRISynthesisLib.perceptual import checkpoint_path

    if not checkpoint_path(tvm.VGG19_Weights.IMAGENET1K_V1).exists():
        with pytest.raises(InputError, match="vgg19-dcbb9e9d.pth.*--without-perceptual"):
            recipe_for("seq2seq")("lite", CPU)
    off = recipe_for("seq2seq")("lite", CPU, perceptual="off")
    assert off.perceptual is None and "--without-perceptual" in off.notes[0]
    with pytest.raises(InputError, match="Seq2Seq trains on brain or breast data, not prostate"):
        recipe_for("seq2seq")("lite", CPU, anatomy="prostate", perceptual="off")
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


def test_breast_batches_keep_series_whole_with_one_frame_layout_per_batch(breast_cases):
    recipe = _recipe(anatomy="breast")
    counts = {tuple(c.volumes[n].shape[0] if c.volumes[n].ndim == 4 else 1 for n in recipe.sequences)
              for c in breast_cases}
    assert len(counts) > 1, "the fixture should mix DCE lengths"
    layouts = set()
    for seed in range(10):
        batch = recipe.make_batch(breast_cases, np.random.default_rng(seed), 2)
        frames = batch["frames"]
        assert (frames == frames[0]).all() and tuple(frames[0]) in counts
        assert batch["inputs"].shape == (2, 3 * int(frames[0].sum()), 32, 32)
        layouts.add(tuple(frames[0]))
    assert layouts == counts


def test_breast_series_are_translated_whole_and_the_loss_falls(breast_cases):
    recipe = _recipe(anatomy="breast")
    dce, t2 = recipe.sequences.index("DCE"), recipe.sequences.index("T2")
    batch = recipe.make_batch(breast_cases, np.random.default_rng(1), 2)
    batch["source"][:], batch["target"][:], batch["available"][:] = t2, dce, np.eye(4, dtype=np.int64)[t2]  # T2 -> DCE
    batch = recipe.to_tensors(batch)
    first = recipe.train_step(batch)
    for _ in range(8):
        last = recipe.train_step(batch)
    assert last["translation_l1"] < first["translation_l1"]
    prediction, target, mask = recipe.predict(batch)
    phases = int(batch["frames"][0][dce])
    assert prediction.shape == target.shape == mask.shape == (2 * phases, 1, 32, 32)
    # frame k of the prediction is frame k of the real series: the real rows match the batch's DCE windows
    start = 3 * int(batch["frames"][0][:dce].sum())
    np.testing.assert_array_equal(target[1].numpy(), batch["inputs"][0, start + 4:start + 5].numpy())


def test_a_breast_run_exports_weights_that_take_and_make_whole_series(tmp_path):
    from MRISynthesisLib.training.export import export_run
    from MRISynthesisLib.weights import read_manifest

    run = tmp_path / "run"
    train(TrainOptions(model="seq2seq", data="phantom:breast:3", out=str(run), steps=1, steps_per_epoch=1,
                       checkpoint_every=1, batch_size=1, recipe_options={"perceptual": "off"}), progress=False)
    export_run(run, which="last", folder=tmp_path / "models")
    entry, = read_manifest(tmp_path / "models")
    assert entry.anatomy == "breast" and entry.series == {"DWI": 2, "DCE": 6}
    card = (tmp_path / "models" / entry.file).with_suffix(".md").read_text()
    assert "4D series: DWI (2 frames when synthesized), DCE (6 frames when synthesized)" in card


def test_widths_train_export_and_load_as_one_network(tmp_path, capsys):
    """``--widths``: the generator is built with them, the export records them, loading rebuilds them."""
    from MRISynthesisLib.cli import main
    from MRISynthesisLib.training.export import export_run
    from MRISynthesisLib.weights import load_model, read_manifest

    recipe = _recipe(channels=[8, 12, 20], adversarial=False)
    widths = {p.shape[0] for p in recipe.networks["generator"].parameters() if p.ndim == 4}
    assert {8, 12, 20} <= widths and not {16, 32, 48} & widths  # none of lite's own widths
    run = tmp_path / "run"
    assert main(["train", "--model", "seq2seq", "--data", "phantom:brain:3", "--out", str(run), "--steps", "1",
                 "--steps-per-epoch", "1", "--checkpoint-every", "1", "--batch-size", "1", "--workers", "0",
                 "--without-perceptual", "--without-adversarial", "--widths", "8,12,20", "--quiet"]) == 0
    export_run(run, which="last", folder=tmp_path / "models")
    entry, = read_manifest(tmp_path / "models")
    assert entry.build_overrides == {"channels": [8, 12, 20]}
    assert (tmp_path / "models" / entry.file).with_suffix(".md").read_text().startswith("# seq2seq (lite, widths 8-12-20)")
    net = load_model(entry, tmp_path / "models")
    trained = checkpoint.load(run / "checkpoints" / "last.pt")["recipe"]["networks"]["generator"]
    assert all(torch.allclose(v.float(), trained[k].float(), atol=1e-3, rtol=1e-2) for k, v in net.state_dict().items())
    for bad in ("8,12", "8,x,20", "8,0,20"):
        assert main(["train", "--model", "seq2seq", "--data", "phantom:brain:3", "--out", str(tmp_path / "r"),
                     "--widths", bad, "--quiet"]) == 2
        assert "--widths takes three positive integers" in capsys.readouterr().err
    assert main(["train", "--model", "tc-mgan", "--data", "phantom:brain:3", "--out", str(tmp_path / "r"),
                 "--widths", "8,12,20", "--quiet"]) == 2
    assert "--widths is for seq2seq" in capsys.readouterr().err and not (tmp_path / "r").exists()
