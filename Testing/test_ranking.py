"""Sequence ranking (Seq2Seq Eq. 4): hand-made matrices, normalisation invariances, perfect sources, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.ranking import PairScore, centralities, rank, rank_descending, score_pair, score_subject

SEQ = ("T1", "T1ce", "T2", "FLAIR")


def test_eq4_on_a_hand_made_matrix():
    a = np.array([[np.nan, 1.0, 2.0], [0.0, np.nan, -1.0], [3.0, 0.5, np.nan]])
    c_t, c_d = centralities(a)
    assert np.allclose(c_t, [3 / 3, -1 / 3, 3.5 / 3])  # row sums / S, the empty diagonal counts 0
    assert np.allclose(c_d, [-3 / 3, -1.5 / 3, -1 / 3])  # minus column sums / S
    assert list(rank_descending(c_t)) == [2, 3, 1]
    with pytest.raises(InputError, match="square with at least 2"):
        centralities(np.zeros((1, 1)))


def _scores(quality, subjects=("s1", "s2", "s3"), lpips=False, seed=0):
    """Pair scores whose quality is ``quality(source, target)`` plus a little subject noise."""
    rng = np.random.default_rng(seed)
    out = []
    for subject in subjects:
        for i in SEQ:
            for j in SEQ:
                if i != j:
                    q = quality(i, j) + rng.normal(0, 0.01)
                    out.append(PairScore(subject, i, j, psnr=20 + 10 * q, ssim=0.5 + 0.4 * q,
                                         lpips=(0.5 - 0.3 * q) if lpips else None))
    return out


def test_a_hard_to_generate_sequence_ranks_first_in_differentiation():
    ranking = rank(_scores(lambda i, j: 0.0 if j == "T1ce" else 1.0), SEQ, bootstrap=50)
    assert ranking.rank_d[SEQ.index("T1ce")] == 1
    assert any("LPIPS unavailable" in note for note in ranking.notes)
    low, high = ranking.intervals["C_d"][SEQ.index("T1ce")]
    assert low <= ranking.differentiation[SEQ.index("T1ce")] <= high


def test_a_source_that_generates_everything_well_has_the_highest_totipotency():
    ranking = rank(_scores(lambda i, j: 1.0 if i == "FLAIR" else 0.2, lpips=True), SEQ, bootstrap=0)
    assert ranking.rank_t[SEQ.index("FLAIR")] == 1 and ranking.terms == ("psnr", "ssim", "lpips")
    assert not ranking.notes


def test_normalisation_is_invariant_to_units_of_each_metric():
    base = _scores(lambda i, j: (SEQ.index(i) + 2 * SEQ.index(j)) / 10, lpips=True)
    shifted = [PairScore(p.subject, p.source, p.target, p.psnr * 3 + 7, p.ssim / 2, p.lpips * 10) for p in base]
    a, b = rank(base, SEQ, bootstrap=0), rank(shifted, SEQ, bootstrap=0)
    assert np.allclose(a.adjacency, b.adjacency, equal_nan=True)
    assert np.allclose(a.differentiation, b.differentiation)


def test_missing_sequences_count_only_where_both_exist():
    scores = [p for p in _scores(lambda i, j: 0.5) if not (p.subject == "s1" and "FLAIR" in (p.source, p.target))]
    ranking = rank(scores, SEQ, bootstrap=0)
    k = SEQ.index("FLAIR")
    assert ranking.pair_counts[k, 0] == 2 and ranking.pair_counts[0, 1] == 3
    only_one = [p for p in scores if not (p.source == "T1" and p.target == "T2")]
    assert any("T1->T2" in n for n in rank(only_one, SEQ, bootstrap=0).notes)


def test_bad_input_is_named():
    with pytest.raises(InputError, match="no pair scores"):
        rank([], SEQ)
    with pytest.raises(InputError, match="at least two sequences"):
        rank([PairScore("s", "T1", "T2", 20, 0.5)], ("T1",))
    with pytest.raises(InputError, match="outside"):
        rank([PairScore("s", "T1", "DWI", 20, 0.5)], ("T1", "T2"))
    mixed = [PairScore("s", "T1", "T2", 20, 0.5, 0.1), PairScore("s", "T2", "T1", 20, 0.5, None)]
    with pytest.raises(InputError, match="LPIPS is present for some"):
        rank(mixed, ("T1", "T2"))


def test_score_subject_translates_every_ordered_pair_of_present_sequences():
    rng = np.random.default_rng(1)
    volumes = {s: rng.uniform(-1, 1, (8, 16, 16)).astype(np.float32) for s in ("T1", "T2", "FLAIR")}
    mask = np.ones((8, 16, 16), bool)
    # a model that is perfect from T1 and returns noise otherwise
    def translate(vols, source, target):
        return vols[target] if source == "T1" else rng.uniform(-1, 1, vols[target].shape).astype(np.float32)

    pairs = score_subject("s", volumes, mask, translate, SEQ)
    assert {(p.source, p.target) for p in pairs} == {(i, j) for i in volumes for j in volumes if i != j}
    assert rank(pairs, ("T1", "T2", "FLAIR"), bootstrap=0).rank_t[0] == 1
    assert all(p.psnr == 100.0 for p in pairs if p.source == "T1")  # perfect pairs are capped, not infinite


def test_a_series_pair_scores_the_mean_of_its_frames():
    rng = np.random.default_rng(2)
    real = rng.uniform(-1, 1, (3, 8, 16, 16)).astype(np.float32)
    synth = real + rng.normal(0, 0.1, real.shape).astype(np.float32) * np.arange(1, 4)[:, None, None, None]
    mask = np.ones((8, 16, 16), bool)
    frames = [score_pair(r, s, mask, lpips_backbone=None) for r, s in zip(real, synth)]
    whole = score_pair(real, synth, mask, lpips_backbone=None)
    assert whole["psnr"] == pytest.approx(np.mean([f["psnr"] for f in frames]))
    assert whole["ssim"] == pytest.approx(np.mean([f["ssim"] for f in frames])) and whole["lpips"] is None
    assert frames[0]["psnr"] > frames[2]["psnr"]  # the frames really differ, so the mean is not trivial
    with pytest.raises(InputError, match=r"synthesized \(2, 8, 16, 16\) volume cannot be scored against a real"):
        score_pair(real, synth[:2], mask, lpips_backbone=None)
