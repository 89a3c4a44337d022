"""Honest quality figures: bundled models on held-out phantom subjects beside two voxel-wise baselines.

Baselines, fitted on training-seed phantom subjects aligned as the training cases are (true transforms)
and prepared as the pipeline prepares inputs (work grid, normalised), predicting the normalised target
voxel by voxel:

* ``linear``: least-squares linear regression (scikit-learn ``LinearRegression``);
* ``hgb``: histogram gradient boosting (scikit-learn ``HistGradientBoostingRegressor``), non-linear.

A model that does not beat them has learned nothing a lookup of each voxel's own intensities could not
do. Every method's output goes through the same ``pipeline.finish`` and ``compare_to_real``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inference import predict_patches, predict_slices
from .phantom import sample
from .pipeline import compare_to_real, finish, prepare
from .preprocess import Normalization
from .training.data import aligned_sequences
from .weights import WeightsEntry, load_model, read_manifest

HEADLINE = ("ssim", "psnr", "nmse", "mae")
#: seeds never used for training (training uses 10000 and above; the tests use < 100)
HELD_OUT_SEEDS = (7, 8, 9, 11, 12)
BASELINE_TRAIN_SEEDS = (10000, 10001, 10003, 10004)


@dataclass
class Baselines:
    linear: object
    hgb: object


def _features(prepared, mask: np.ndarray) -> np.ndarray:
    return prepared.stacked[:, mask].T


def fit_baselines(entry: WeightsEntry, target: str, seeds=BASELINE_TRAIN_SEEDS, voxels_per_subject: int = 40000,
                  random_state: int = 0) -> Baselines:
    """Fit both baselines on ``seeds`` (registered phantom subjects at the model's voxel size)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(random_state)
    xs, ys = [], []
    for seed in seeds:
        subject = sample(entry.anatomy, seed, resolution=entry.voxel_size_mm)
        aligned = aligned_sequences(subject, (*entry.inputs, target))  # as the training cases are
        prepared = prepare({s: aligned[s] for s in entry.inputs}, entry.inputs, entry.inputs[0], "none",
                           entry.voxel_size_mm)
        real = aligned[target].array
        y = Normalization.zscore(real, prepared.mask).apply(real)[prepared.mask]
        x = _features(prepared, prepared.mask)
        pick = rng.choice(len(y), size=min(voxels_per_subject, len(y)), replace=False)
        xs.append(x[pick])
        ys.append(y[pick])
    x, y = np.concatenate(xs), np.concatenate(ys)
    return Baselines(LinearRegression().fit(x, y),
                     HistGradientBoostingRegressor(max_iter=200, random_state=random_state).fit(x, y))


def _predict_baseline(regressor, prepared) -> np.ndarray:
    out = np.full(prepared.mask.shape, -1.0, np.float32)
    out[prepared.mask] = regressor.predict(_features(prepared, prepared.mask))
    return out


def evaluate_entry(entry: WeightsEntry, target: str, seeds=HELD_OUT_SEEDS, *, device: str = "cpu",
                   say=print) -> dict:
    """Per method (model, linear, hgb): mean and SD over ``seeds`` of SSIM, PSNR, NMSE, MAE."""
    baselines = fit_baselines(entry, target)
    net = load_model(entry, device=device)
    predictor = getattr(net, "synthesize", net)
    scores: dict[str, list[dict]] = {entry.model: [], "linear": [], "hgb": []}
    for seed in seeds:
        subject = sample(entry.anatomy, seed, resolution=entry.voxel_size_mm)  # misaligned, own grids, as acquired
        prepared = prepare({s: subject.sequences[s] for s in entry.inputs}, entry.inputs, "T1", "rigid",
                           entry.voxel_size_mm)
        if entry.patch_size and len(entry.patch_size) == 3:
            predicted = predict_patches(predictor, prepared.stacked, patch_size=entry.patch_size, device=device)
        else:
            predicted = predict_slices(predictor, prepared.stacked, device=device)
        outputs = {entry.model: predicted[entry.targets.index(target)],
                   "linear": _predict_baseline(baselines.linear, prepared),
                   "hgb": _predict_baseline(baselines.hgb, prepared)}
        for method, values in outputs.items():
            metrics, _, _ = compare_to_real(finish(prepared, values), subject.sequences[target], reference=prepared.fixed)
            scores[method].append({k: float(metrics["metrics"][k]["volume"]) for k in HEADLINE})
        say(f"seed {seed}: " + "; ".join(f"{m} PSNR {s[-1]['psnr']:.2f}" for m, s in scores.items()))
    return {method: {k: {"mean": float(np.mean([r[k] for r in rows])), "sd": float(np.std([r[k] for r in rows]))}
                     for k in HEADLINE} for method, rows in scores.items()}


def evaluate_bundled(anatomy: str | None = None, seeds=HELD_OUT_SEEDS, say=print) -> list[dict]:
    results = []
    for entry in read_manifest():
        if anatomy and entry.anatomy != anatomy:
            continue
        for target in entry.targets:
            say(f"{entry.model} ({entry.file}) -> {target} on held-out seeds {', '.join(map(str, seeds))}")
            results.append({"weights": entry.file, "model": entry.model, "target": target, "seeds": list(seeds),
                            "methods": evaluate_entry(entry, target, seeds, say=say)})
    return results
