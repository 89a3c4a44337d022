"""``mri-synthesis demo``: a held-out phantom subject through every bundled model that can, with outputs,
error maps, montages and a metrics table; models without weights are named and skipped."""

from __future__ import annotations

import json

import pytest

from conftest import bundle_untrained
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.synthesize_cmd import run_demo
from MRISynthesisLib.volume import read_volume

BREAST = ("T1", "T2", "DWI", "DCE")


@pytest.fixture()
def breast_models(tmp_path, monkeypatch):
    """Untrained breast IMPORTANT-Net (one frame of each series) and Seq2Seq (whole series), at 4 mm."""
    folder = tmp_path / "models"
    folder.mkdir()
    bundle_untrained(folder, "important-net", anatomy="breast", inputs=("T1", "DWI", "DCE"),
                     frames={"DWI": -1, "DCE": 1})
    bundle_untrained(folder, "seq2seq", anatomy="breast", inputs=BREAST, targets=BREAST, normalization="percentile",
                     series={"DWI": 2, "DCE": 6}, foreground="body")  # as the bundled one
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(folder))
    return folder


def test_breast_demo_runs_both_models_from_the_series_and_writes_every_output(breast_models, tmp_path):
    said = []
    summary = run_demo(tmp_path / "demo", "breast", device="cpu", seed=7, say=said.append)
    assert [(r["model"], r["target"]) for r in summary["results"]] == [("important-net", "T2"), ("seq2seq", "T2")]
    seq2seq = summary["results"][1]
    assert seq2seq["inputs"] == ["T1", "DWI", "DCE"]  # an any-to-any model gets every other sequence
    out = tmp_path / "demo"
    for stem in ("important-net-T2", "seq2seq-T2"):
        synthesized, error = read_volume(out / f"{stem}.nii.gz"), read_volume(out / f"{stem}-error.nii.gz")
        assert not synthesized.is_series and error.shape == synthesized.shape
        assert (out / f"{stem}.png").stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text())["results"][1]["psnr"] == pytest.approx(seq2seq["psnr"])
    assert any("seq2seq" in line and "T2" in line for line in said)  # the printed table
    maps = summary["differentiation_maps"]  # the subject's M_d maps by the any-to-any model, series whole
    assert maps["model"] == "seq2seq" and set(maps["maps"]) == set(BREAST)
    for name in BREAST:
        md = read_volume(out / "maps" / f"Md-{name}.nii.gz")
        assert not md.is_series and (out / "maps" / f"Md-{name}.png").stat().st_size > 0
    contrast = maps["enhancing_over_normal"]
    assert contrast["sequence"] == "DCE" and contrast["ratio"] > 0
    assert any(f"M_d(DCE) inside the enhancing tissue is {contrast['ratio']:.1f} times" in line for line in said)


def test_the_maps_ratio_of_the_demo_is_the_rank_commands_on_the_subjects_own_labels(tmp_path, monkeypatch):
    """Brain: the ratio is computed on the labels' grid, within the intracranial tissue; a model filter that
    is not the any-to-any one makes no maps."""
    from MRISynthesisLib.phantom import sample
    from MRISynthesisLib.rank_cmd import enhancing_contrast
    from MRISynthesisLib.training.data import organ_mask

    folder = tmp_path / "models"
    folder.mkdir()
    bundle_untrained(folder, "seq2seq")
    bundle_untrained(folder, "unet-ct1")
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(folder))
    said = []
    summary = run_demo(tmp_path / "demo", "brain", device="cpu", seed=7, say=said.append)
    maps = summary["differentiation_maps"]
    assert set(maps["maps"]) == {"T1", "T1ce", "T2", "FLAIR"}
    subject = sample("brain", 7, resolution=4.0)
    md = read_volume(tmp_path / "demo" / "maps" / "Md-T1ce.nii.gz")
    assert md.shape == subject.labels.shape
    expected = enhancing_contrast(md.array, subject.labels.array, md.array > 0, (3,), organ_mask(subject))
    assert maps["enhancing_over_normal"]["ratio"] == pytest.approx(expected, rel=1e-5)
    assert maps["enhancing_over_normal"]["normal"] == "brain tissue without labels"
    only = run_demo(tmp_path / "unet", "brain", model="unet-ct1", device="cpu", seed=7, say=said.append)
    assert "differentiation_maps" not in only and not (tmp_path / "unet" / "maps").exists()


def test_demo_names_the_models_it_has_no_weights_for(breast_models, tmp_path):
    said = []
    with pytest.raises(InputError, match="no step for model tc-mgan"):
        run_demo(tmp_path / "d", "breast", model="tc-mgan", device="cpu", say=said.append)
    with pytest.raises(InputError, match="no bundled weights for the brain demo"):
        run_demo(tmp_path / "d", "brain", device="cpu", say=said.append)
    assert sum("no bundled weights yet" in line for line in said) == 4
