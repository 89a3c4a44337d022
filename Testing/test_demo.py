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
                     series={"DWI": 2, "DCE": 6})
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


def test_demo_names_the_models_it_has_no_weights_for(breast_models, tmp_path):
    said = []
    with pytest.raises(InputError, match="no step for model tc-mgan"):
        run_demo(tmp_path / "d", "breast", model="tc-mgan", device="cpu", say=said.append)
    with pytest.raises(InputError, match="no bundled weights for the brain demo"):
        run_demo(tmp_path / "d", "brain", device="cpu", say=said.append)
    assert sum("no bundled weights yet" in line for line in said) == 4
