"""Imaging-differentiation maps of one case (library and ``mri-synthesis maps``): Eq. 5 on the case's own
translations, on the reference grid, series included; bad input refused; inputs untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import bundle_untrained, hash_files, slab_of
from MRISynthesisLib.cli import main
from MRISynthesisLib.differentiation import case_differentiation_maps
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.inference import Cancelled
from MRISynthesisLib.phantom import sample
from MRISynthesisLib.pipeline import prepare
from MRISynthesisLib.rank_cmd import translator
from MRISynthesisLib.volume import read_volume, write_volume
from MRISynthesisLib.weights import find, load_model

BREAST = ("T1", "T2", "DWI", "DCE")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained lite models at 4 mm: brain Seq2Seq, breast Seq2Seq (whole series) and U-Net cT1."""
    folder = tmp_path_factory.mktemp("models")
    bundle_untrained(folder, "seq2seq")
    bundle_untrained(folder, "seq2seq", anatomy="breast", inputs=BREAST, targets=BREAST, normalization="percentile",
                     series={"DWI": 2, "DCE": 6})
    bundle_untrained(folder, "unet-ct1")
    return folder


@pytest.fixture(scope="module")
def brain():
    return sample("brain", 7, resolution=4.0)


def test_maps_are_eq5_of_each_single_source_translation_on_the_reference_grid(models, brain):
    inputs = {s: brain.sequences[s] for s in ("T1", "T1ce", "T2")}
    before = {s: v.array.copy() for s, v in inputs.items()}
    result = case_differentiation_maps(inputs, "seq2seq", register="none", device="cpu", weights_folder=models)
    assert set(result.maps) == set(inputs)
    reference = inputs["T1"]
    for md in result.maps.values():  # each map overlays the reference
        assert md.shape == reference.shape
        np.testing.assert_allclose(md.spacing, reference.spacing)
        np.testing.assert_allclose(md.origin, reference.origin)
        np.testing.assert_allclose(md.direction, reference.direction)
        assert md.array.min() >= 0 and md.array.max() > 0
    assert {(t["source"], t["target"]) for t in result.translations} == {
        (a, b) for a in inputs for b in inputs if a != b}
    assert all(np.isfinite(t["psnr"]) and -1 <= t["ssim"] <= 1 for t in result.translations)
    for name, array in before.items():
        np.testing.assert_array_equal(inputs[name].array, array)

    # Eq. 5 again, from the case prepared with its sequences in another order and translated pair by pair
    entry = find("seq2seq", None, "brain", models)
    order = ("T2", "T1ce", "T1")
    prepared = prepare(inputs, order, "T1", "none", entry.voxel_size_mm, None, entry.normalization, entry.foreground)
    normalised = dict(zip(order, prepared.stacked))
    translate = translator(entry, load_model(entry, models, "cpu"), "cpu")
    for target in inputs:
        errors = [np.abs(translate(normalised, source, target) - normalised[target]) for source in inputs
                  if source != target]
        expected = np.where(prepared.mask, np.mean(errors, axis=0), 0.0)
        np.testing.assert_allclose(result.on_work_grid[target][1], expected, atol=1e-5)
        assert result.foreground_means[target] == pytest.approx(float(expected[prepared.mask].mean()), rel=1e-5)
    assert result.provenance["reference"] == "T1" and "Eq. 5" in result.provenance["map"]
    assert "[-1, 1]" in result.provenance["units"]
    # the phantom's sequences as acquired, taken as aligned (registration 'none'): named in the warnings
    assert sorted(w.split()[0] for w in result.provenance["warnings"] if "does not look aligned" in w) == ["T1ce", "T2"]


def test_slabs_are_compared_pair_by_pair_where_both_have_data(models, brain):
    """A T2 slab and a FLAIR slab that do not meet, beside a whole T1: T1 and each slab are translated and
    scored where both have data, the two slabs not at all (named in the warnings), and each map averages the
    sources with data at each voxel, zero where its own sequence has none (as the ranking treats folder
    cases), instead of being refused for want of a voxel that all three cover."""
    t2, flair = brain.sequences["T2"], brain.sequences["FLAIR"]
    n2, nf = t2.spatial_shape[0], flair.spatial_shape[0]
    inputs = {"T1": brain.sequences["T1"], "T2": slab_of(t2, 0, n2 // 2 - 1), "FLAIR": slab_of(flair, nf // 2 + 1, nf)}
    result = case_differentiation_maps(inputs, "seq2seq", register="none", device="cpu", weights_folder=models)
    assert {(t["source"], t["target"]) for t in result.translations} == {
        ("T1", "T2"), ("T2", "T1"), ("T1", "FLAIR"), ("FLAIR", "T1")}
    assert any("neither translated into the other: FLAIR and T2" in w for w in result.provenance["warnings"])

    entry = find("seq2seq", None, "brain", models)
    order = tuple(inputs)
    prepared = prepare(inputs, order, "T1", "none", entry.voxel_size_mm, None, entry.normalization, entry.foreground,
                       joint=False)
    inside, mask = prepared.inside, prepared.mask
    assert not (mask & inside["T2"] & inside["FLAIR"]).any() and (mask & inside["T2"]).any()
    normalised = dict(zip(order, prepared.stacked))
    translate = translator(entry, load_model(entry, models, "cpu"), "cpu")
    error = {(s, t): np.abs(translate(normalised, s, t) - normalised[t]) for s, t in
             [("T2", "T1"), ("FLAIR", "T1"), ("T1", "T2")]}
    md_t1 = result.on_work_grid["T1"][1]
    only_t2, only_flair = mask & inside["T2"], mask & inside["FLAIR"]
    np.testing.assert_allclose(md_t1[only_t2], error[("T2", "T1")][only_t2], atol=1e-5)
    np.testing.assert_allclose(md_t1[only_flair], error[("FLAIR", "T1")][only_flair], atol=1e-5)
    assert not md_t1[mask & ~inside["T2"] & ~inside["FLAIR"]].any()  # no source has data there
    md_t2 = result.on_work_grid["T2"][1]
    np.testing.assert_allclose(md_t2[only_t2], error[("T1", "T2")][only_t2], atol=1e-5)
    assert not md_t2[~inside["T2"]].any()
    assert result.foreground_means["T2"] == pytest.approx(float(md_t2[only_t2].mean()), rel=1e-5)
    psnr = {(t["source"], t["target"]): t["psnr"] for t in result.translations}
    assert np.isfinite(list(psnr.values())).all()


def test_a_series_enters_whole_and_its_map_is_one_volume_on_the_reference_grid(models):
    breast = sample("breast", 3, resolution=4.0)
    inputs = {s: breast.sequences[s] for s in ("T1", "DWI", "DCE")}
    result = case_differentiation_maps(inputs, "seq2seq", register="none", device="cpu", weights_folder=models)
    assert result.provenance["weights"] == "seq2seq-breast-lite.pt"  # the inputs told the anatomy
    for name, md in result.maps.items():
        assert not md.is_series and md.shape == inputs["T1"].shape, name
    assert len(result.translations) == 6


def test_bad_input_is_refused_by_name(models, brain):
    one = {"T1": brain.sequences["T1"]}
    with pytest.raises(InputError, match="give at least two of T1, T1ce, T2, FLAIR"):
        case_differentiation_maps(one, device="cpu", weights_folder=models)
    with pytest.raises(InputError, match="does not take PD"):
        case_differentiation_maps({**one, "PD": brain.sequences["PD"]}, anatomy="brain", device="cpu",
                                  weights_folder=models)
    pair = {**one, "T2": brain.sequences["T2"]}
    with pytest.raises(InputError, match="making imaging-differentiation maps needs an any-to-any model"):
        case_differentiation_maps(pair, "unet-ct1", device="cpu", weights_folder=models)
    with pytest.raises(InputError, match="unknown registration preset"):
        case_differentiation_maps(pair, register="elastic", device="cpu", weights_folder=models)
    with pytest.raises(InputError, match="reference sequence FLAIR is not among the inputs"):
        case_differentiation_maps(pair, reference="FLAIR", anatomy="brain", device="cpu", weights_folder=models)
    nan = pair["T2"].with_array(np.where(pair["T2"].array > 0, np.nan, 0.0).astype(np.float32))
    with pytest.raises(InputError, match="NaN"):
        case_differentiation_maps({**one, "T2": nan}, anatomy="brain", device="cpu", weights_folder=models)


def test_cancelling_stops_and_returns_nothing(models, brain):
    inputs = {s: brain.sequences[s] for s in ("T1", "T2")}
    seen = []

    def progress(fraction, message):
        seen.append(message)
        return not message.startswith("translating")
    with pytest.raises(Cancelled):
        case_differentiation_maps(inputs, register="none", anatomy="brain", device="cpu", weights_folder=models, progress=progress)
    assert seen[-1].startswith("translating")


def test_the_maps_command_writes_volumes_heatmaps_and_a_report_and_never_an_input(models, brain, tmp_path,
                                                                                   monkeypatch, capsys):
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(models))
    files = {s: write_volume(brain.sequences[s], tmp_path / f"{s}.nii.gz") for s in ("T1", "T1ce", "FLAIR")}
    before = hash_files(files.values())
    out = tmp_path / "maps"
    args = ["maps", "--input", *[f"{s}={p}" for s, p in files.items()], "--out", str(out), "--register", "none",
            "--device", "cpu", "--quiet"]
    assert main(args) == 0
    report = json.loads((out / "maps.json").read_text())
    assert set(report["maps"]) == set(files) and len(report["translations"]) == 6
    for name, entry in report["maps"].items():
        md = read_volume(entry["volume"])
        assert md.shape == brain.sequences["T1"].shape and (out / f"Md-{name}.png").stat().st_size > 0
        assert entry["foreground_mean"] > 0
    printed = capsys.readouterr().out
    most = max(report["maps"], key=lambda n: report["maps"][n]["foreground_mean"])
    assert f"least predictable from the others: {most}" in printed
    assert report["provenance"]["notice"].startswith("Research use only")
    assert hash_files(files.values()) == before

    # an input that sits where a map would be written is refused, untouched; so is a single sequence
    clash = tmp_path / "clash"
    clash.mkdir()
    t1 = write_volume(brain.sequences["T1"], clash / "Md-T1.nii.gz")
    guarded = hash_files([t1])
    assert main(["maps", "--input", f"T1={t1}", f"T1ce={files['T1ce']}", "--out", str(clash), "--device", "cpu",
                 "--quiet"]) == 2
    assert "would overwrite an input file" in capsys.readouterr().err and hash_files([t1]) == guarded
    assert main(["maps", "--input", f"T1={files['T1']}", "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert "at least two" in capsys.readouterr().err and not (tmp_path / "none").exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    assert main(["maps", "--input", f"T1={files['T1']}", f"T1ce={files['T1ce']}", "--out", str(a_file),
                 "--quiet"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and a_file.read_text() == "not a folder"


def test_inputs_that_fit_a_brain_and_a_breast_model_alike_need_the_anatomy_said(models):
    """T1 and T2 fit the brain and the breast Seq2Seq alike: picking one silently ran breast images through
    brain weights. The caller is asked; with the anatomy said, that anatomy's weights run."""
    from MRISynthesisLib.pipeline import synthesize

    breast = sample("breast", 3, resolution=4.0)
    inputs = {s: breast.sequences[s] for s in ("T1", "T2")}
    with pytest.raises(InputError, match=r"brain and the breast weights of seq2seq both take T1, T2.*--anatomy brain\|breast"):
        find("seq2seq", None, None, models, available=("T1", "T2"))
    with pytest.raises(InputError, match="say which anatomy"):
        case_differentiation_maps(inputs, "seq2seq", register="none", device="cpu", weights_folder=models)
    assert find("seq2seq", None, "breast", models, available=("T1", "T2")).anatomy == "breast"
    assert find("seq2seq", None, None, models, available=("T1", "DCE")).anatomy == "breast"  # the inputs tell
    result = synthesize({"T1": inputs["T1"]}, "T2", "seq2seq", anatomy="breast", register="none", device="cpu",
                        weights_folder=models)
    assert result.provenance["weights"] == find("seq2seq", None, "breast", models).file


def test_inputs_that_neither_anatomy_can_run_on_get_both_needs_not_a_question():
    """T1 alone fits the brain and the breast IMPORTANT-Net alike, and neither can run on it: asking for the
    anatomy only led to a second error naming what was missing."""
    with pytest.raises(InputError, match=r"important-net needs T1, T1ce, FLAIR \(brain\) or T1, DWI, DCE \(breast\); "
                                         r"given: T1$"):
        find("important-net", "T2", None, available=("T1",))
    assert find("important-net", "T2", None, available=("T1", "T1ce", "FLAIR")).anatomy == "brain"
