"""Sequence-importance ranking (Seq2Seq paper, section 3.5, Eq. 4): totipotency and imaging differentiation.

For every subject, every available source i and every other available target j, a model translates i
alone into j; each pair is scored with PSNR, SSIM (data range 2 on the [-1, 1] normalised volumes, inside
the foreground) and LPIPS (AlexNet, when its weights are on the machine).

Normalisation ("normalized metrics" in the paper, unspecified there): as in the authors' code, each metric
is z-scored over all (subject, source, target) rows, ``z = (m - mean) / sd``, and the per-pair value is
the mean of those z-scores over the subjects that have both sequences. A_ij = nPSNR_ij + nSSIM_ij -
nLPIPS_ij; without LPIPS weights A_ij = nPSNR_ij + nSSIM_ij, and every output says so. Z-scoring makes A
invariant to any affine change of units of a metric (dB offsets, a scale factor), which the tests check.

Eq. 4: C_t(i) = (1/S) sum_j A_ij (how well i generates the others), C_d(i) = -(1/S) sum_j A_ji (how hard i
is to generate), with S the number of sequences and the empty diagonal counting as 0 (the code's
choice). Rank 1 is the highest value. Confidence intervals: percentile bootstrap over subjects (the whole
chain, z-scoring included, recomputed on each resample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import InputError

TERMS = ("psnr", "ssim", "lpips")
#: sign of each term in A_ij: similarity counts up, LPIPS (a distance) counts down
SIGNS = {"psnr": 1.0, "ssim": 1.0, "lpips": -1.0}


@dataclass(frozen=True)
class PairScore:
    """One synthesized pair: ``source`` alone -> ``target`` on ``subject``; lpips None when unavailable."""

    subject: str
    source: str
    target: str
    psnr: float
    ssim: float
    lpips: float | None = None


@dataclass
class Ranking:
    """Eq. 4 on a set of pair scores, with bootstrap intervals."""

    sequences: tuple[str, ...]
    adjacency: np.ndarray  # A (S x S), NaN on the diagonal and where no subject had the pair
    totipotency: np.ndarray  # C_t per sequence
    differentiation: np.ndarray  # C_d per sequence
    pair_counts: np.ndarray  # subjects per (source, target)
    raw: dict[str, np.ndarray]  # per term, the mean raw metric per pair
    terms: tuple[str, ...]
    intervals: dict[str, np.ndarray] = field(default_factory=dict)  # "C_t"/"C_d" -> (S, 2)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # what a caller adds (M_d contrasts per subject, say)

    @property
    def rank_t(self) -> np.ndarray:
        return rank_descending(self.totipotency)

    @property
    def rank_d(self) -> np.ndarray:
        return rank_descending(self.differentiation)

    def table(self) -> list[dict]:
        rows = []
        for k, name in enumerate(self.sequences):
            row = {"sequence": name, "C_t": float(self.totipotency[k]), "rank_t": int(self.rank_t[k]),
                   "C_d": float(self.differentiation[k]), "rank_d": int(self.rank_d[k])}
            for key in ("C_t", "C_d"):
                if key in self.intervals:
                    row[f"{key}_low"], row[f"{key}_high"] = (float(v) for v in self.intervals[key][k])
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        def matrix(a: np.ndarray) -> list:
            return [[None if not math.isfinite(float(v)) else float(v) for v in row] for row in a]
        return {"sequences": list(self.sequences), "terms": list(self.terms), "notes": self.notes, **self.extra,
                "table": self.table(), "A": matrix(self.adjacency), "pair_counts": self.pair_counts.tolist(),
                "raw": {k: matrix(v) for k, v in self.raw.items()},
                "normalisation": "z-score of each metric over all (subject, source, target) rows; "
                                 "A_ij = mean over subjects of the signed sum"}


def rank_descending(values: np.ndarray) -> np.ndarray:
    """1 for the largest value; ties share the better rank."""
    values = np.asarray(values, float)
    return np.array([1 + int(np.sum(values > v)) for v in values])


def centralities(adjacency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 4: (C_t, C_d) of an S x S adjacency matrix; NaN entries (diagonal, missing pairs) count as 0."""
    a = np.asarray(adjacency, float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 2:
        raise InputError(f"the adjacency matrix must be square with at least 2 sequences, not {a.shape}")
    filled = np.where(np.isfinite(a), a, 0.0)
    s = a.shape[0]
    return filled.sum(axis=1) / s, -filled.sum(axis=0) / s


def _terms(scores: Sequence[PairScore]) -> tuple[str, ...]:
    with_lpips = [s.lpips is not None for s in scores]
    if any(with_lpips) and not all(with_lpips):
        raise InputError("LPIPS is present for some pairs and missing for others; compute it for all or none")
    return TERMS if all(with_lpips) else ("psnr", "ssim")


def adjacency_matrix(scores: Sequence[PairScore], sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """(A, pair counts, raw mean metrics) from pair scores, each term z-scored over all rows."""
    terms = _terms(scores)
    index = {name: k for k, name in enumerate(sequences)}
    s = len(sequences)
    values = {t: np.array([getattr(p, t) for p in scores], float) for t in terms}
    z = {}
    for t, v in values.items():
        if not np.all(np.isfinite(v)):
            raise InputError(f"{t} has non-finite values (identical images give infinite PSNR; clip it first)")
        sd = v.std()
        z[t] = (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)
    total, counts = np.zeros((s, s)), np.zeros((s, s), int)
    raw = {t: np.zeros((s, s)) for t in terms}
    for row, p in enumerate(scores):
        i, j = index[p.source], index[p.target]
        total[i, j] += sum(SIGNS[t] * z[t][row] for t in terms)
        counts[i, j] += 1
        for t in terms:
            raw[t][i, j] += values[t][row]
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
        raw = {t: np.where(counts > 0, r / np.maximum(counts, 1), np.nan) for t, r in raw.items()}
    return a, counts, raw


def rank(scores: Sequence[PairScore], sequences: Sequence[str] | None = None, *, bootstrap: int = 1000,
         seed: int = 0, confidence: float = 0.95) -> Ranking:
    """Rank ``sequences`` (default: every sequence in the scores) from pair scores of one or more subjects."""
    scores = list(scores)
    if not scores:
        raise InputError("no pair scores to rank: no subject had two of the sequences")
    sequences = tuple(sequences or sorted({p.source for p in scores} | {p.target for p in scores}))
    if len(sequences) < 2:
        raise InputError(f"ranking needs at least two sequences, got {', '.join(sequences) or 'none'}")
    unknown = ({p.source for p in scores} | {p.target for p in scores}) - set(sequences)
    if unknown:
        raise InputError(f"scores name sequences outside {', '.join(sequences)}: {', '.join(sorted(unknown))}")
    if any(p.source == p.target for p in scores):
        raise InputError("a pair translates a sequence into itself; only source != target pairs are ranked")
    a, counts, raw = adjacency_matrix(scores, sequences)
    c_t, c_d = centralities(a)
    terms = _terms(scores)
    result = Ranking(sequences, a, c_t, c_d, counts, raw, terms)
    if "lpips" not in terms:
        result.notes.append("LPIPS unavailable (its AlexNet weights are not on this machine): "
                            "A_ij = nPSNR_ij + nSSIM_ij, without the LPIPS term")
    missing = [(sequences[i], sequences[j]) for i in range(len(sequences)) for j in range(len(sequences))
               if i != j and counts[i, j] == 0]
    if missing:
        result.notes.append("pairs without any subject (counted as 0 in Eq. 4): "
                            + ", ".join(f"{i}->{j}" for i, j in missing))
    subjects = sorted({p.subject for p in scores})
    if bootstrap and len(subjects) > 1:
        result.intervals = _bootstrap(scores, sequences, subjects, bootstrap, seed, confidence)
    elif bootstrap:
        result.notes.append("one subject: no bootstrap intervals")
    return result


def _bootstrap(scores, sequences, subjects, n: int, seed: int, confidence: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    by_subject = {s: [p for p in scores if p.subject == s] for s in subjects}
    samples_t, samples_d = [], []
    for _ in range(n):
        drawn = rng.choice(len(subjects), len(subjects), replace=True)
        rows = [p for k in drawn for p in by_subject[subjects[k]]]
        a, _, _ = adjacency_matrix(rows, sequences)
        c_t, c_d = centralities(a)
        samples_t.append(c_t)
        samples_d.append(c_d)
    tail = (1 - confidence) / 2 * 100
    return {key: np.percentile(np.array(samples), [tail, 100 - tail], axis=0).T
            for key, samples in (("C_t", samples_t), ("C_d", samples_d))}


# --------------------------------------------------------------------- scoring translated pairs
Translate = Callable[[Mapping[str, np.ndarray], str, str], np.ndarray]


def score_pair(real: np.ndarray, synth: np.ndarray, mask: np.ndarray, *, lpips_backbone: str | None) -> dict:
    """PSNR and SSIM (data range 2, [-1, 1] volumes, inside ``mask``) and LPIPS when a backbone is given.

    A 4D series (DWI, DCE: frames first) is scored frame by frame against the real series and each metric
    averaged over its frames. The paper ranks 4D sequences without saying how their metrics are pooled;
    the mean keeps a series on the scale of a 3D sequence, so its z-scores are comparable.
    """
    from .metrics import psnr, ssim

    real, synth = np.asarray(real), np.asarray(synth)
    if real.shape != synth.shape:
        raise InputError(f"a synthesized {synth.shape} volume cannot be scored against a real {real.shape} one")
    if real.ndim == 4:
        frames = [score_pair(r, s, mask, lpips_backbone=lpips_backbone) for r, s in zip(real, synth)]
        return {k: None if frames[0][k] is None else float(np.mean([f[k] for f in frames])) for k in frames[0]}

    scores = {"psnr": min(float(psnr(real, synth, data_range=2.0, mask=mask)), 100.0),
              "ssim": float(ssim(real, synth, data_range=2.0, mask=mask)), "lpips": None}
    if lpips_backbone:
        from .perceptual import lpips_distance

        result = lpips_distance(real, synth, backbone=lpips_backbone, data_range=2.0)
        scores["lpips"] = result.value
    return scores


def score_subject(name: str, volumes: Mapping[str, np.ndarray], mask: np.ndarray, translate: Translate,
                  sequences: Iterable[str], *, lpips_backbone: str | None = None,
                  on_pair: Callable[[str, str], None] | None = None) -> list[PairScore]:
    """Every ordered pair (source, target) of the ``sequences`` this subject has, translated and scored."""
    present = [s for s in sequences if s in volumes]
    scores = []
    for source in present:
        for target in present:
            if source == target:
                continue
            synth = translate(volumes, source, target)
            values = score_pair(volumes[target], synth, mask, lpips_backbone=lpips_backbone)
            scores.append(PairScore(name, source, target, **values))
            if on_pair is not None:
                on_pair(source, target)
    return scores
