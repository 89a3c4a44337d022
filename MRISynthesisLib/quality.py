"""Honest quality figures: bundled models on held-out phantom subjects beside two voxel-wise baselines.

Baselines, fitted on training-seed phantom subjects aligned as the training cases are (true transforms)
and prepared as the pipeline prepares inputs (work grid, normalised), predicting the normalised target
voxel by voxel:

* ``linear``: least-squares linear regression (scikit-learn ``LinearRegression``);
* ``hgb``: histogram gradient boosting (scikit-learn ``HistGradientBoostingRegressor``), non-linear.

A model that does not beat them has learned nothing a lookup of each voxel's own intensities could not
do. Every method's output goes through the same ``pipeline.finish`` and ``compare_to_real``.

Beside them, ``ceiling``: the held-out subject's own target made without noise and without the coil's
bias field (the same anatomy, physics, protocol, motion and grid: the phantom draws each effect from its
own random stream), moved by the real target's registration. No input carries the target acquisition's
own noise and bias, so no method can be expected to come closer to the real target than its noiseless,
bias-free self: the row says how much room the baselines leave, and how much of it a model takes.

A model that takes whole 4D series (Seq2Seq breast) gets every frame of DWI and DCE as inputs, and the
baselines get every frame as features; a series target (DCE, DWI) is predicted with the real series'
frame count (the baselines predict all frames at once, one output per frame) and its metrics are the
means over frames, as ``compare_to_real`` gives them.

One evaluation run generates each phantom subject once and registers each of its sequences onto a
reference once (:class:`Subjects`), however many targets and methods use it: the pipeline's registration is
repeatable, so the figures are those of registering anew for every target, at a third of the cost (the
real target used to be registered again for each of the three methods).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .inputs import model_frames
from .phantom import sample
from .pipeline import (align, compare_to_real, default_reference, finish, frames_of, moved, normalization_for,
                       prepare, registration_onto, synthesized_region)
from .preprocess import resample_to
from .predictors import plan_for, run_plan
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


@dataclass
class Subjects:
    """Phantom subjects and their registered sequences, made once per evaluation run and then shared."""

    _subjects: dict = field(default_factory=dict)
    _registered: dict = field(default_factory=dict)

    def subject(self, anatomy: str, seed: int, voxel_mm: float, *, clean: bool = False):
        """A subject as acquired, or (``clean``) its twin made without noise and without bias fields."""
        key = (anatomy, seed, voxel_mm, clean)
        if key not in self._subjects:
            options = {"snr": None, "bias_field": False} if clean else {}
            self._subjects[key] = sample(anatomy, seed, resolution=voxel_mm, **options)
        return self._subjects[key]

    def real_and_ceiling(self, key: tuple, fixed, real, clean) -> tuple:
        """The real target registered onto ``fixed`` (as ``registered`` would), its noiseless, bias-free twin
        ``clean`` moved by the same registration, and the voxels of ``fixed`` inside the real target's field
        of view once moved (``compare_to_real`` scores only there), computed the first time ``key`` is asked for."""
        if key not in self._registered:
            result = registration_onto(fixed, real, "rigid", "real")
            self._registered[key] = (moved(result, real), result.apply(clean), result.coverage(real))
        return self._registered[key]

    def registered(self, key: tuple, fixed, moving, name: str, register: str = "rigid", grid=None):
        """``moving`` registered onto ``fixed`` (resampled onto ``grid``, default ``fixed``'s), the
        registration's summary and the grid's voxels inside ``moving``'s field of view (``pipeline.align``),
        computed the first time ``key`` is asked for (the key names the subject, the sequence, its view, the
        reference and so the grid)."""
        if key not in self._registered:
            self._registered[key] = align(fixed, moving, register, name, grid)
        return self._registered[key]

    def aligner(self, *key):
        """A ``pipeline.prepare`` aligner that registers each input once for this ``key`` (weights file,
        which sets the work grid; seed; reference)."""
        return lambda fixed, moving, register, name, grid: self.registered((*key, name, register), fixed, moving,
                                                                           name, register, grid)


def _features(prepared, mask: np.ndarray) -> np.ndarray:
    return prepared.stacked[:, mask].T


def sources_for(entry: WeightsEntry, target: str) -> tuple[str, ...]:
    """The inputs evaluated for ``target``: all of a fixed-input model's, or every other sequence of an
    any-to-any model (the most it can be given)."""
    return tuple(s for s in entry.inputs if s != target)


def _model_view(entry: WeightsEntry, volumes, sources: tuple[str, ...]) -> dict:
    """The model's inputs as the pipeline gives them: 4D series reduced to the frames it was trained on,
    or whole for a model that takes series."""
    return model_frames({s: volumes[s] for s in sources}, entry.frames, entry.model, whole=entry.series)


def fit_baselines(entry: WeightsEntry, target: str, seeds=BASELINE_TRAIN_SEEDS, voxels_per_subject: int = 40000,
                  random_state: int = 0, subjects: Subjects | None = None) -> Baselines:
    """Fit both baselines on ``seeds`` (registered phantom subjects at the model's voxel size)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.multioutput import MultiOutputRegressor

    rng = np.random.default_rng(random_state)
    subjects = subjects or Subjects()
    sources = sources_for(entry, target)
    xs, ys = [], []
    for seed in seeds:
        subject = subjects.subject(entry.anatomy, seed, entry.voxel_size_mm)
        aligned = aligned_sequences(subject, (*sources, target))  # as the training cases are
        view = _model_view(entry, aligned, sources)
        prepared = prepare(view, sources, default_reference(view), "none", entry.voxel_size_mm,
                           normalization=entry.normalization, foreground=entry.foreground,
                           orientation=entry.orientation)
        real = frames_of(resample_to(aligned[target], prepared.work))  # the work grid: the reference's may differ
        region = np.broadcast_to(prepared.mask, real.shape)
        y = normalization_for(entry.normalization, real, region).apply(real)[:, prepared.mask].T
        y = y[:, 0] if target not in entry.series else y  # (voxels,) or (voxels, frames)
        x = _features(prepared, prepared.mask)
        pick = rng.choice(len(y), size=min(voxels_per_subject, len(y)), replace=False)
        xs.append(x[pick])
        ys.append(y[pick])
    x, y = np.concatenate(xs), np.concatenate(ys)
    hgb = HistGradientBoostingRegressor(max_iter=200, random_state=random_state)
    return Baselines(LinearRegression().fit(x, y), (MultiOutputRegressor(hgb) if y.ndim == 2 else hgb).fit(x, y))


def _predict_baseline(regressor, prepared) -> np.ndarray:
    """The normalised prediction: (z, y, x), or (frames, z, y, x) from a multi-output regressor."""
    predicted = regressor.predict(_features(prepared, prepared.mask))
    out = np.full((*predicted.shape[1:], *prepared.mask.shape), -1.0, np.float32)
    out[..., prepared.mask] = predicted.T
    return out


def evaluate_entry(entry: WeightsEntry, target: str, seeds=HELD_OUT_SEEDS, *, device: str = "cpu",
                   baseline_seeds=BASELINE_TRAIN_SEEDS, say=print, subjects: Subjects | None = None,
                   mirror: bool = False) -> dict:
    """Per method (model, linear, hgb): mean and SD over ``seeds`` of SSIM, PSNR, NMSE, MAE; ``mirror``: the
    model with test-time mirroring.

    Each held-out subject is synthesized as the pipeline does it for a user: its sequences, misaligned on
    their own grids, rigidly registered onto the reference, and the real target registered there too.
    ``ceiling`` is scored alike: the target without noise and bias fields (see the module doc).
    """
    subjects = subjects or Subjects()
    sources = sources_for(entry, target)
    baselines = fit_baselines(entry, target, baseline_seeds, subjects=subjects)
    net = load_model(entry, device=device)
    scores: dict[str, list[dict]] = {entry.model: [], "linear": [], "hgb": [], "ceiling": []}
    for seed in seeds:
        subject = subjects.subject(entry.anatomy, seed, entry.voxel_size_mm)  # misaligned, own grids, as acquired
        real = subject.sequences[target]
        plan = plan_for(entry, net, target, sources, real.shape[0] if target in entry.series else 1)
        view = _model_view(entry, subject.sequences, sources)
        reference = default_reference(view)
        prepared = prepare(view, plan.order, reference, "rigid", entry.voxel_size_mm, normalization=entry.normalization,
                           foreground=entry.foreground, aligner=subjects.aligner(entry.file, seed, reference),
                           orientation=entry.orientation)
        clean = subjects.subject(entry.anatomy, seed, entry.voxel_size_mm, clean=True).sequences[target]
        real, ceiling, real_inside = subjects.real_and_ceiling((entry.file, seed, reference, "real " + target),
                                                               prepared.fixed, real, clean)
        outputs = {entry.model: run_plan(plan, prepared.stacked, device, mirror=mirror),
                   "linear": _predict_baseline(baselines.linear, prepared),
                   "hgb": _predict_baseline(baselines.hgb, prepared)}
        synthesized = {method: finish(prepared, values) for method, values in outputs.items()}
        synthesized_where = synthesized_region(prepared)  # scored where synthesized and real, as ``synthesize``
        region = real_inside if synthesized_where is None else synthesized_where & real_inside
        for method, volume in {**synthesized, "ceiling": ceiling}.items():
            metrics, _, _ = compare_to_real(volume, real, register="none", region=region)
            scores[method].append({k: float(metrics["metrics"][k]["volume"]) for k in HEADLINE})
        say(f"seed {seed}: " + "; ".join(f"{m} PSNR {s[-1]['psnr']:.2f}" for m, s in scores.items()))
    return {method: {k: {"mean": float(np.mean([r[k] for r in rows])), "sd": float(np.std([r[k] for r in rows]))}
                     for k in HEADLINE} for method, rows in scores.items()}


def evaluate_bundled(anatomy: str | None = None, seeds=HELD_OUT_SEEDS, say=print, *, model: str | None = None,
                     targets: tuple[str, ...] | None = None, mirror: bool = False) -> list[dict]:
    """Every bundled sequence-to-sequence model (optionally one ``model``, some ``targets``) on ``seeds``."""
    from .selection import translates

    results, subjects = [], Subjects()
    for entry in read_manifest():
        if (anatomy and entry.anatomy != anatomy) or (model and entry.model != model) or not translates(entry.model):
            continue
        for target in entry.targets:
            if targets and target not in targets:
                continue
            say(f"{entry.model} ({entry.file}) -> {target} on held-out seeds {', '.join(map(str, seeds))}")
            results.append({"weights": entry.file, "model": entry.model, "target": target, "seeds": list(seeds),
                            "mirror": mirror,
                            "methods": evaluate_entry(entry, target, seeds, say=say, subjects=subjects, mirror=mirror)})
    return results


def verdict(methods: dict, model: str) -> str:
    """One honest sentence: does the model beat both baselines, by how much over linear regression."""
    ours, linear, hgb = methods[model], methods["linear"], methods["hgb"]
    higher = ("ssim", "psnr")
    beats = [k for k in HEADLINE for base in (linear, hgb)
             if (ours[k]["mean"] > base[k]["mean"]) == (k in higher)]
    gain = ours["psnr"]["mean"] - linear["psnr"]["mean"]
    both = len(beats) == 2 * len(HEADLINE)
    text = (f"{'beats both voxel-wise baselines on every metric' if both else 'does NOT beat both baselines on every metric'}; "
            f"PSNR {gain:+.2f} dB over linear regression ({'meets' if gain >= 3 else 'short of'} the 3 dB target)")
    room = methods["ceiling"]["psnr"]["mean"] - linear["psnr"]["mean"] if "ceiling" in methods else 0.0
    if room > 0:
        text += f", {100 * gain / room:.0f} % of the {room:.2f} dB between linear regression and the ceiling"
    return text


def manifest_metrics(results: list[dict], seeds=HELD_OUT_SEEDS) -> dict[str, str]:
    """The manifest/model-card form of one weight file's results (one row per target and method)."""
    metrics = {"held_out_seeds": ", ".join(map(str, seeds)),
               "where": "inside the foreground, each volume z-scored by its own foreground statistics; "
                        "registered with rigid"}
    for result in results:
        prefix = f"{result['target']}: " if len(results) > 1 else ""
        for method, stats in result["methods"].items():
            for k in HEADLINE:
                metrics[f"{prefix}{method} {k.upper()}"] = f"{stats[k]['mean']:.3f} ± {stats[k]['sd']:.3f}"
        metrics[f"{prefix}verdict"] = verdict(result["methods"], result["model"])
    return metrics
