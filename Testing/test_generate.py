"""MP-GAN generation and its evaluation: 1-NN two-sample accuracy, FID policy, DCE kinetics, the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import bundle_untrained
from MRISynthesisLib.cli import main
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.gan_eval import dce_statistics, fid, fid_weights_path, one_nn_accuracy
from MRISynthesisLib.generate_cmd import generate, run_evaluate_gan
from MRISynthesisLib.volume import read_volume
from MRISynthesisLib.patches import load_patches, save_patches


def test_one_nn_accuracy_is_a_half_for_one_set_and_near_one_for_different_sets():
    rng = np.random.default_rng(0)
    one = rng.normal(size=(400, 7, 8, 8)).astype(np.float32)
    assert 0.4 < one_nn_accuracy(one[:200], one[200:]) < 0.6
    assert one_nn_accuracy(one[:200], one[200:] + 3.0) > 0.95
    with pytest.raises(InputError, match="at least 2 patches"):
        one_nn_accuracy(one[:1], one[1:5])
    with pytest.raises(InputError, match=r"\(N, 7, S, S\)"):
        one_nn_accuracy(one[:, :3], one[:, :3])


def _with_curve(curve, n=4, size=16):
    patches = np.full((n, 7, size, size), -1.0, np.float32)
    patches[:, 1:6] = np.asarray(curve, np.float32)[None, :, None, None]
    return patches


def test_dce_statistics_tell_washout_from_persistent_enhancement():
    washing = dce_statistics(_with_curve([-0.5, 0.5, 0.3, 0.1, 0.0]))
    rising = dce_statistics(_with_curve([-0.5, 0.0, 0.2, 0.3, 0.4]))
    assert washing.washout_fraction == 1.0 and washing.mean_time_to_peak == 1.0
    assert rising.washout_fraction == 0.0 and rising.mean_time_to_peak == 4.0


def test_fid_is_unavailable_without_its_weights_and_computed_with_local_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rng = np.random.default_rng(1)
    a, b = (rng.uniform(-1, 1, (6, 7, 32, 32)).astype(np.float32) for _ in range(2))
    missing = fid(a, b)
    assert not missing.available and "pt_inception-2015-12-05-6726825d.pth" in missing.message

    # weights made here: pytorch-fid's own architecture with untrained parameters (values meaningless)
    from pytorch_fid import inception
    made, original = [], inception._inception_v3
    with monkeypatch.context() as patch:
        patch.setattr(inception, "_inception_v3", lambda *args, **kw: made.append(original(*args, **kw)) or made[-1])
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kw: made[-1].state_dict())
        torch.manual_seed(0)
        network = inception.fid_inception_v3()
    fid_weights_path().parent.mkdir(parents=True)
    torch.save(network.state_dict(), fid_weights_path())
    same, different = fid(a, a), fid(a, b + 0.5)
    assert same.available and abs(same.value) < 1e-3 and different.value > same.value


@pytest.fixture()
def models(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    bundle_untrained(folder, "mp-gan", anatomy="breast", file="mp-gan-breast-lite-dcgan.pt", inputs=("T2", "DCE"),
                     targets=("T2", "DCE"), normalization="percentile", voxel_size_mm=1.5,
                     build_overrides={"patch_size": 32, "variant": "dcgan"})
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(folder))
    return folder


def test_generate_command_writes_patches_sheet_and_channels(models, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--class", "malignant", "--n", "5", "--out", str(out), "--seed", "3", "--nifti"]) == 0
    patches, classes = load_patches(out / "patches.npz")
    assert patches.shape == (5, 7, 32, 32) and (classes == 1).all()
    assert (out / "sheet.png").stat().st_size > 0 and (out / "malignant-Sub.nii.gz").exists()
    from MRISynthesisLib.generate_cmd import generator_entry
    mm = generator_entry("dcgan").voxel_size_mm  # the patches' voxels are the generator's, not 1 mm
    assert read_volume(out / "malignant-Sub.nii.gz").spacing == pytest.approx((mm, mm, mm))
    again = generate("malignant", 5, seed=3)
    assert np.array_equal(again, patches)
    assert not np.allclose(generate("benign", 5, seed=3), patches)  # the class conditions the output
    assert main(["generate", "--model", "unet-ct1", "--class", "benign", "--n", "2", "--out", str(tmp_path / "x")]) == 2
    assert "not a generator" in capsys.readouterr().err
    assert main(["generate", "--class", "benign", "--n", "0", "--out", str(tmp_path / "y")]) == 2
    assert "--n must be from 1 to" in capsys.readouterr().err
    assert main(["generate", "--class", "benign", "--n", "1000000000000", "--out", str(tmp_path / "y")]) == 2
    assert "--n must be from 1 to 10000" in capsys.readouterr().err
    assert main(["generate", "--class", "benign", "--n", "1", "--seed", str(2 ** 70), "--out", str(tmp_path / "y")]) == 2
    assert "--seed must be from 0 to 2**32 - 1" in capsys.readouterr().err
    assert main(["generate", "--variant", "wgan", "--class", "benign", "--n", "2", "--out", str(tmp_path / "z")]) == 2
    assert "no bundled MP-GAN wgan weights" in capsys.readouterr().err


def test_evaluate_gan_reports_each_class_from_a_patch_file(models, tmp_path, capsys):
    real = np.concatenate([generate(c, 6, seed=50 + k) for k, c in enumerate(("benign", "malignant", "healthy"))])
    save_patches(tmp_path / "real.npz", real, np.repeat([0, 1, 2], 6))
    report = run_evaluate_gan(str(tmp_path / "real.npz"), tmp_path / "eval", n=6, say=lambda m: None)
    assert set(report["classes"]) == {"benign", "malignant", "healthy"}
    row = report["classes"]["benign"]
    assert 0.0 <= row["one_nn_accuracy"] <= 1.0 and "washout_fraction" in row["generated_kinetics"]
    if not fid_weights_path().exists():
        assert row["fid"] is None and "pt_inception" in row["fid_note"]
    assert json.loads((tmp_path / "eval" / "evaluate-gan.json").read_text())["variant"] == "dcgan"
    assert main(["evaluate-gan", "--real", str(tmp_path / "real.npz"), "--n", "6"]) == 0
    assert "1-NN" in capsys.readouterr().out


def test_manifest_figures_and_verdict_of_an_evaluation():
    from MRISynthesisLib.generate_cmd import manifest_metrics

    kinetics = lambda w: {"washout_fraction": w}
    row = lambda acc, real_w, gen_w: {"one_nn_accuracy": acc, "real_patches": 10, "fid": None, "fid_note": "x",
                                      "real_kinetics": kinetics(real_w), "generated_kinetics": kinetics(gen_w)}
    good = {"real": "phantom:breast", "classes": {"benign": row(0.6, 0.0, 0.1), "malignant": row(0.7, 0.5, 0.4)}}
    assert manifest_metrics(good)["verdict"].startswith("1-NN accuracy below 0.8") and \
        "washout proportions of benign and malignant within 15 pp" in manifest_metrics(good)["verdict"]
    bad = {"real": "x.npz", "classes": {"benign": row(0.9, 0.0, 0.3), "malignant": row(0.7, 0.5, 0.4)}}
    figures = manifest_metrics(bad)
    assert "NOT below" in figures["verdict"] and "NOT within" in figures["verdict"]
    assert figures["benign: washout real / generated"] == "0.00 / 0.30 (30 pp)"


def test_held_out_real_subjects_never_overlap_the_training_seeds():
    from MRISynthesisLib.generate_cmd import held_out_seeds
    from MRISynthesisLib.training.recipes import recipe_for
    from MRISynthesisLib.training.trainer import source_for

    seeds = held_out_seeds(400)
    assert len(seeds) == len(set(seeds)) == 400 and seeds[:30] == list(range(200, 230))
    training = source_for("phantom:breast:400", recipe_for("mp-gan"), "lite", 0).seeds
    assert not set(seeds) & set(training)
    with pytest.raises(InputError, match="training seeds"):
        held_out_seeds(9800)
    with pytest.raises(InputError, match="integer"):
        run_evaluate_gan("phantom:breast:many", None)


def test_a_real_patch_file_written_from_phantom_subjects_keeps_their_name(models, tmp_path):
    from MRISynthesisLib.patches import patch_source

    rng = np.random.default_rng(0)
    patches = rng.uniform(-1, 1, (6, 7, 32, 32)).astype(np.float32)
    path = save_patches(tmp_path / "real.npz", patches, np.array([0, 0, 1, 1, 2, 2]), source="phantom:breast:150")
    assert patch_source(path) == "phantom:breast:150"
    assert patch_source(save_patches(tmp_path / "plain.npz", patches, np.zeros(6, np.int64))) is None
    report = run_evaluate_gan(str(path), None, n=4)
    assert report["real"] == "phantom:breast:150" and report["real_file"] == str(path)


def test_a_patch_file_whose_labels_count_or_range_is_wrong_is_refused(tmp_path):
    """A class array of another length (an IndexError once), a bare .npy, or raw intensities instead of the
    normalised [-1, 1] (1-NN then calls obviously different sets indistinguishable) are refused by name."""
    patches = np.zeros((4, 7, 32, 32), np.float32)
    from MRISynthesisLib.patches import CHANNELS, CLASSES
    np.savez(tmp_path / "short.npz", patches=patches, classes=np.zeros(2, int), channels=np.array(CHANNELS),
             class_names=np.array(CLASSES))  # as another tool might write it
    with pytest.raises(InputError, match="4 patches but 2 class labels"):
        load_patches(tmp_path / "short.npz")
    save_patches(tmp_path / "raw.npz", patches + 100.0, np.zeros(4, int))
    with pytest.raises(InputError, match=r"range over \[100, 100\], not the normalised \[-1, 1\]"):
        load_patches(tmp_path / "raw.npz")
    np.save(tmp_path / "bare.npy", patches)
    with pytest.raises(InputError, match="bare.npy: not a patch file"):
        load_patches(tmp_path / "bare.npy")
