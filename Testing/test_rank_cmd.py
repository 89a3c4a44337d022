"""``rank``: subjects translated pair by pair with an any-to-any model, outputs written, predictions reused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import bundle_untrained
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.maps import differentiation_maps
from MRISynthesisLib.rank_cmd import run_rank
from MRISynthesisLib.volume import read_volume

EVERY = ("T1", "T1ce", "T2", "FLAIR")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An untrained lite Seq2Seq at 4 mm and an untrained U-Net cT1 (not any-to-any)."""
    folder = tmp_path_factory.mktemp("models")
    bundle_untrained(folder, "seq2seq")
    bundle_untrained(folder, "unet-ct1")
    return folder


def test_rank_writes_tables_charts_and_maps_and_reuses_predictions(models, tmp_path, monkeypatch):
    out = tmp_path / "rank"
    notes = []
    result = run_rank("phantom:brain:2", "seq2seq", out, device="cpu", bootstrap=20, lpips_backbone="random",
                      progress=False, weights_folder=models, say=notes.append)
    assert result.sequences == EVERY and result.terms == ("psnr", "ssim", "lpips")
    assert (result.pair_counts[~np.eye(4, dtype=bool)] == 2).all()
    for name in ("ranking.csv", "ranking.json", "pairs.csv", "ranking.png", "adjacency.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "ranking.json").read_text())
    assert [row["sequence"] for row in saved["table"]] == list(EVERY) and "C_d_low" in saved["table"][0]
    subject = sorted((out / "maps").iterdir())[0]
    md = read_volume(subject / "Md-T1ce.nii.gz")
    assert md.array.max() > 0 and (subject / "Md-T1ce.png").exists()
    assert len(list((out / "predictions").rglob("*.npy"))) == 2 * 12
    contrast = result.extra["md_enhancing_over_normal"]
    assert contrast["sequence"] == "T1ce" and all(v > 0 for v in contrast["subjects"].values())
    assert np.isfinite(contrast["pooled"]) and contrast["pooled"] > 0  # a ratio of pooled means (tested below)
    assert contrast["normal"] == "brain tissue without labels"  # the phantom knows its intracranial tissue

    # a rerun translates nothing again
    import MRISynthesisLib.rank_cmd as rank_cmd

    def no_translation(*args, **kwargs):
        raise AssertionError("a cached prediction was recomputed")
    monkeypatch.setattr(rank_cmd, "translator", lambda *a: no_translation)
    again = run_rank("phantom:brain:2", "seq2seq", out, device="cpu", bootstrap=0, lpips_backbone=None,
                     progress=False, weights_folder=models, say=notes.append)
    assert again.terms == ("psnr", "ssim") and any("LPIPS unavailable" in n for n in notes)
    assert np.allclose(again.raw["psnr"], result.raw["psnr"], equal_nan=True)

    # the same translations scored within the brain alone (as skull-stripped data): other figures, said so
    brain = run_rank("phantom:brain:2", "seq2seq", out, device="cpu", bootstrap=0, lpips_backbone=None,
                     progress=False, weights_folder=models, score_within="organ", say=notes.append)
    assert result.extra["scored_within"] == "foreground" and brain.extra["scored_within"] == "brain tissue"
    off_diagonal = ~np.eye(4, dtype=bool)
    assert not np.allclose(brain.raw["psnr"][off_diagonal], result.raw["psnr"][off_diagonal])
    assert json.loads((out / "ranking.json").read_text())["scored_within"] == "brain tissue"
    with pytest.raises(InputError, match="score_within must be one of foreground, organ"):
        run_rank("phantom:brain:2", "seq2seq", out, device="cpu", progress=False, weights_folder=models,
                 score_within="brain")


def test_rank_refuses_a_model_that_is_not_any_to_any(models, tmp_path):
    with pytest.raises(InputError, match="ranking needs an any-to-any model"):
        run_rank("phantom:brain:2", "unet-ct1", tmp_path / "r", device="cpu", progress=False, weights_folder=models)
    with pytest.raises(InputError, match="no bundled weights for tc-mgan"):
        run_rank("phantom:brain:2", "tc-mgan", tmp_path / "r", device="cpu", progress=False, weights_folder=models)
    with pytest.raises(InputError, match="cannot rank breast subjects"):
        run_rank("phantom:breast:2", "seq2seq", tmp_path / "r", anatomy="brain", device="cpu", progress=False,
                 weights_folder=models)


def test_differentiation_map_is_the_mean_error_of_the_other_sources():
    real = {"A": np.zeros((2, 2, 2)), "B": np.ones((2, 2, 2))}
    predictions = {("B", "A"): np.full((2, 2, 2), 0.5), ("A", "B"): np.full((2, 2, 2), 3.0)}
    mask = np.ones((2, 2, 2), bool)
    mask[0] = False
    maps = differentiation_maps(real, predictions, mask)
    assert np.allclose(maps["A"][1], 0.5) and np.allclose(maps["B"][1], 2.0) and (maps["A"][0] == 0).all()


def test_rank_command(models, tmp_path, monkeypatch, capsys):
    from MRISynthesisLib.cli import main

    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(models))
    assert main(["rank", "--data", "phantom:brain:2", "--model", "seq2seq", "--out", str(tmp_path / "r"),
                 "--bootstrap", "0", "--device", "cpu", "--progress-lines"]) == 0
    printed = capsys.readouterr().out
    assert all(s in printed for s in EVERY) and "C_d" in printed
    # what the Slicer panel's worker reads: one line per translated pair, rising to 1
    fractions = [float(line.split()[1]) for line in printed.splitlines() if line.startswith("PROGRESS ")]
    assert len(fractions) == 2 * len(EVERY) * (len(EVERY) - 1)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert main(["rank", "--data", "phantom:brain:2", "--model", "unet-ct1", "--out", str(tmp_path / "u"), "--quiet"]) == 2
    assert "any-to-any" in capsys.readouterr().err


def test_enhancing_contrast_of_an_md_map():
    from MRISynthesisLib.rank_cmd import enhancing_contrast

    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1, 1, 1] = 3
    mask = np.ones((4, 4, 4), bool)
    md = np.ones((4, 4, 4), np.float32)
    md[1, 1, 1] = 6.0
    assert enhancing_contrast(md, labels, mask) == pytest.approx(6.0)
    assert enhancing_contrast(md, np.zeros_like(labels), mask) is None
    breast = np.zeros_like(labels)
    breast[1, 1, 1], breast[2, 2, 2] = 2, 3  # a malignant lesion enhances in DCE; a cyst does not
    md[2, 2, 2] = 11.0
    assert enhancing_contrast(md, breast, mask, (1, 2)) == pytest.approx(6.0)  # the cyst is in neither region
    # "normal brain": within the organ only, so large errors on the scalp do not dilute the contrast
    organ = np.zeros_like(mask)
    organ[:, 1:3, 1:3] = True
    md = np.ones((4, 4, 4), np.float32)
    md[1, 1, 1] = 6.0
    md[0, 0, 0] = 64.0  # an unlabelled scalp voxel: (62 + 64) / 63 makes a mean of 2 over the foreground
    assert enhancing_contrast(md, labels, mask) == pytest.approx(3.0)
    assert enhancing_contrast(md, labels, mask, organ=organ) == pytest.approx(6.0)


def test_enhancing_contrast_over_several_cases_weighs_their_voxels():
    from MRISynthesisLib.rank_cmd import contrast_of, enhancing_and_normal_sums

    mask = np.ones((4, 4, 4), bool)
    small, large = np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)
    small[0, 0, 0] = 3
    large[:2] = 3  # 32 enhancing voxels, 32 normal
    md_small, md_large = np.ones((4, 4, 4)), np.ones((4, 4, 4))
    md_small[0, 0, 0] = 20.0
    md_large[:2] = 2.0
    sums = [enhancing_and_normal_sums(md_small, small, mask), enhancing_and_normal_sums(md_large, large, mask)]
    assert sums[0] == (20.0, 1, 63.0, 63) and contrast_of(sums[:1]) == pytest.approx(20.0)
    # (20 + 64) / 33 inside over (63 + 32) / 95 outside: the large lesion outweighs the single bright voxel
    assert contrast_of(sums) == pytest.approx(84 / 33)
    assert contrast_of([]) is None


def test_a_series_map_is_averaged_over_its_frames():
    real = {"DCE": np.zeros((3, 2, 2, 2)), "T2": np.zeros((2, 2, 2))}
    predictions = {("T2", "DCE"): np.stack([np.full((2, 2, 2), v) for v in (1.0, 2.0, 6.0)]),
                   ("DCE", "T2"): np.ones((2, 2, 2))}
    maps = differentiation_maps(real, predictions, np.ones((2, 2, 2), bool))
    assert maps["DCE"].shape == (2, 2, 2) and np.allclose(maps["DCE"], 3.0)


def test_breast_ranking_translates_whole_series_with_their_frame_counts(tmp_path):
    breast = ("T1", "T2", "DWI", "DCE")
    models = tmp_path / "models"
    models.mkdir()
    bundle_untrained(models, "seq2seq", anatomy="breast", inputs=breast, targets=breast, normalization="percentile",
                     series={"DWI": 2, "DCE": 6})
    out = tmp_path / "rank"
    result = run_rank("phantom:breast:1", "seq2seq", out, device="cpu", bootstrap=0, lpips_backbone=None,
                      progress=False, weights_folder=models, say=lambda _: None)
    assert result.sequences == breast and (result.pair_counts[~np.eye(4, dtype=bool)] == 1).all()
    subject = next((out / "predictions").iterdir())
    assert np.load(subject / "T2-to-DCE.npy").shape[0] == 6 and np.load(subject / "DCE-to-DWI.npy").shape[0] == 2
    assert np.load(subject / "DWI-to-T1.npy").ndim == 3
    md = read_volume(next((out / "maps").iterdir()) / "Md-DCE.nii.gz")
    assert md.array.ndim == 3 and md.array.max() > 0
    assert result.extra["md_enhancing_over_normal"]["sequence"] == "DCE"


def test_a_folder_of_cases_is_ranked_on_the_models_grid_registered_when_asked(models, tmp_path):
    """Cases as acquired (own grids, motion, 2 mm) are registered onto T1 and resampled to the model's 4 mm;
    a rerun into the same folder with another registration is refused instead of reusing stale translations."""
    from MRISynthesisLib.cli import main
    from MRISynthesisLib.training.data import FolderSource

    data = tmp_path / "cases"
    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", "31", "--resolution", "2", "--out", str(data),
                 "--quiet"]) == 0
    (case,) = sorted(p.name for p in data.iterdir())

    def t1_t1ce_correlation(register: str) -> float:
        built = FolderSource(data, sequences=EVERY, scheme="percentile", require_all=False, voxel_size_mm=4.0,
                             register=register).build(case)
        assert built.volumes["T2"].shape == built.mask.shape  # one grid for every sequence
        a, b = built.volumes["T1"][built.mask], built.volumes["T1ce"][built.mask]
        return float(np.corrcoef(a, b)[0, 1])
    assert t1_t1ce_correlation("rigid") > t1_t1ce_correlation("none") + 0.05  # T1ce's motion undone

    out = tmp_path / "rank"
    run_rank(str(data), "seq2seq", out, anatomy="brain", device="cpu", bootstrap=0, lpips_backbone=None,
             progress=False, weights_folder=models, register="rigid", say=lambda line: None)
    md = read_volume(out / "maps" / case / "Md-T1ce.nii.gz")
    np.testing.assert_allclose(md.spacing, (4.0, 4.0, 4.0))  # the model's grid, not the cases' 2 mm
    import json
    assert json.loads((out / "preparation.json").read_text())["orientation"] is None  # the untrained bundle's
    with pytest.raises(InputError, match="made with another register"):
        run_rank(str(data), "seq2seq", out, anatomy="brain", device="cpu", bootstrap=0, lpips_backbone=None,
                 progress=False, weights_folder=models, register="none", say=lambda line: None)
    with pytest.raises(InputError, match="unknown registration preset"):
        run_rank(str(data), "seq2seq", tmp_path / "r2", anatomy="brain", device="cpu", progress=False,
                 weights_folder=models, register="elastic")
    with pytest.raises(InputError, match="--register rigid is for a folder of cases"):
        run_rank("phantom:brain:1", "seq2seq", tmp_path / "r3", device="cpu", progress=False, weights_folder=models,
                 register="rigid")

    # a folder from before the preparation record: its caches cannot be trusted
    (out / "preparation.json").unlink()
    with pytest.raises(InputError, match="from an earlier version that did not record how they were made"):
        run_rank(str(data), "seq2seq", out, anatomy="brain", device="cpu", bootstrap=0, lpips_backbone=None,
                 progress=False, weights_folder=models, register="rigid", say=lambda line: None)

    # a sequence whose header puts it away from T1 is named with its case, not left as an empty image
    from MRISynthesisLib.volume import write_volume
    t2_file = next((data / case).glob("*-t2w.nii.gz"))
    t2 = read_volume(t2_file)
    write_volume(t2.__class__(t2.array, t2.spacing, tuple(o + 1000.0 for o in t2.origin), t2.direction), t2_file)
    with pytest.raises(InputError, match=f"case {case}: T2 does not overlap the field of view of T1"):
        FolderSource(data, sequences=EVERY, scheme="percentile", require_all=False, voxel_size_mm=4.0).build(case)


def test_a_case_with_a_slab_is_scored_and_mapped_only_where_its_sequences_have_data(models, tmp_path):
    """A folder case whose FLAIR covers half the head: each pair is scored where both of its sequences have
    data, M_d(FLAIR) is zero outside the slab, and elsewhere M_d of a sequence averages only the sources
    with data there (a translation from a slab's blank part measures nothing)."""
    from MRISynthesisLib.cli import main
    from MRISynthesisLib.ranking import score_pair
    from MRISynthesisLib.training.data import CaseCache
    from MRISynthesisLib.volume import Volume, write_volume

    data = tmp_path / "cases"
    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", "33", "--resolution", "2", "--registered",
                 "--out", str(data), "--quiet"]) == 0
    (case,) = sorted(p.name for p in data.iterdir())
    flair_file = next((data / case).glob("*-t2f.nii.gz"))
    flair = read_volume(flair_file)
    n = flair.spatial_shape[0]
    origin = np.asarray(flair.origin) + flair.direction_matrix @ (0.0, 0.0, (n // 2) * flair.spacing[2])
    write_volume(Volume(flair.array[n // 2:], flair.spacing, tuple(origin), flair.direction), flair_file)

    out = tmp_path / "rank"
    result = run_rank(str(data), "seq2seq", out, anatomy="brain", device="cpu", bootstrap=0, lpips_backbone=None,
                      progress=False, weights_folder=models, say=lambda line: None)
    cached = CaseCache(out / "cache").load(case)
    slab = cached.inside["FLAIR"]
    assert 0.2 < (cached.mask & slab).sum() / cached.mask.sum() < 0.8
    md_flair = read_volume(out / "maps" / case / "Md-FLAIR.nii.gz").array
    assert not md_flair[~slab].any() and md_flair[cached.mask & slab].any()

    def prediction(source, target):
        return np.load(out / "predictions" / case / f"{source}-to-{target}.npy")
    t1 = cached.volumes["T1"]
    md_t1 = read_volume(out / "maps" / case / "Md-T1.nii.gz").array
    outside = cached.mask & ~slab
    expected = (np.abs(prediction("T1ce", "T1") - t1) + np.abs(prediction("T2", "T1") - t1)) / 2
    np.testing.assert_allclose(md_t1[outside], expected[outside], rtol=1e-4, atol=1e-6)

    order = list(result.sequences)
    scored = score_pair(t1, prediction("FLAIR", "T1"), cached.mask & slab, lpips_backbone=None)
    assert result.raw["psnr"][order.index("FLAIR"), order.index("T1")] == pytest.approx(scored["psnr"], rel=1e-5)
    whole = score_pair(t1, prediction("FLAIR", "T1"), cached.mask, lpips_backbone=None)
    assert abs(whole["psnr"] - scored["psnr"]) > 0.01  # the blank half would have counted


def test_a_brats_2021_folder_ranks_what_its_cases_hold_and_a_changed_case_is_not_reused(models, tmp_path):
    """BraTS 2021 naming labels the enhancing tumour 4 (2023: 3): the M_d contrast counts it. The anatomy is
    told from the files; a sequence no case has is left out and said, not ranked on no pair; and once a
    case's file is removed or replaced, the folder's cached cases and translations are refused."""
    import shutil

    from MRISynthesisLib.cli import main
    from MRISynthesisLib.volume import write_volume

    made = tmp_path / "made"
    assert main(["phantom", "--anatomy", "brain", "--n", "1", "--seed", "34", "--resolution", "2", "--registered",
                 "--out", str(made), "--quiet"]) == 0
    (case,) = sorted(p.name for p in made.iterdir())
    data = tmp_path / "cases" / "BraTS2021_00034"
    data.mkdir(parents=True)
    for suffix_2023, suffix_2021 in (("t1n", "t1"), ("t1c", "t1ce"), ("t2w", "t2"), ("seg", "seg")):
        shutil.copy(made / case / f"{case}-{suffix_2023}.nii.gz", data / f"BraTS2021_00034_{suffix_2021}.nii.gz")
    seg = read_volume(data / "BraTS2021_00034_seg.nii.gz")
    assert (seg.array == 3).any()
    write_volume(seg.with_array(np.where(seg.array == 3, 4, seg.array).astype(np.float32)),
                 data / "BraTS2021_00034_seg.nii.gz")

    said = []
    out = tmp_path / "rank"
    result = run_rank(str(tmp_path / "cases"), "seq2seq", out, device="cpu", bootstrap=0, lpips_backbone=None,
                      progress=False, weights_folder=models, say=said.append)
    assert any("ranking with the brain model" in line for line in said)
    assert result.sequences == ("T1", "T1ce", "T2") and any("FLAIR: in no case, so not ranked" in n for n in result.notes)
    contrast = result.extra["md_enhancing_over_normal"]
    assert list(contrast["subjects"]) == ["BraTS2021_00034"] and contrast["pooled"] > 0

    # a case added since is prepared afresh beside the cached one; a case's file removed makes the folder stale
    shutil.copytree(data, tmp_path / "cases" / "BraTS2021_00035")
    for path in (tmp_path / "cases" / "BraTS2021_00035").iterdir():
        path.rename(path.with_name(path.name.replace("00034", "00035")))
    again = run_rank(str(tmp_path / "cases"), "seq2seq", out, device="cpu", bootstrap=0, lpips_backbone=None,
                     progress=False, weights_folder=models, say=said.append)
    assert (again.pair_counts[~np.eye(3, dtype=bool)] == 2).all()
    (data / "BraTS2021_00034_t2.nii.gz").unlink()
    with pytest.raises(InputError, match="made from other files: case BraTS2021_00034: T2 removed"):
        run_rank(str(tmp_path / "cases"), "seq2seq", out, device="cpu", bootstrap=0, lpips_backbone=None,
                 progress=False, weights_folder=models, say=said.append)


def test_label_4_is_enhancing_tumour_only_in_a_brats_2021_named_segmentation():
    """BraTS 2021 labels the enhancing tumour 4; in BraTS 2024's post-treatment gliomas, named as 2023's, 4 is
    the resection cavity, which does not enhance."""
    from types import SimpleNamespace

    from MRISynthesisLib.rank_cmd import enhancing_labels

    def case(seg):
        return SimpleNamespace(meta={"files": {"seg": seg}} if seg else {})
    assert enhancing_labels("brain", case("/d/BraTS2021_00001/BraTS2021_00001_seg.nii.gz")) == (4,)
    assert enhancing_labels("brain", case("/d/BraTS-GLI-02073-100/BraTS-GLI-02073-100-seg.nii.gz")) == (3,)
    assert enhancing_labels("brain", case(None)) == (3,)  # the phantom
    assert enhancing_labels("breast", case("/d/c_seg.nii.gz")) == (1, 2)
