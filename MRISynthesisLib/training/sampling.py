"""Random training samples drawn from cached cases, reproducible from a generator.

Every batch is a pure function of its ``numpy.random.Generator``; the trainer seeds one per step (and
rank), so a resumed run or a second process draws exactly the batches the first would have.
Augmentation is deliberately simple (the issue asks for flips and small intensity changes): left-right
flips, and a per-sample, per-channel gain of ±5 % and offset of ±0.05 on the inputs only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..inference import PADDING
from ..preprocess import crop_or_pad
from .data import Case


def _augment_inputs(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x * rng.uniform(0.95, 1.05, shape).astype(np.float32) + rng.uniform(-0.05, 0.05, shape).astype(np.float32)


def _fit(array: np.ndarray, size: Sequence[int], center: Sequence[int], fill: float = PADDING) -> np.ndarray:
    """Crop/pad the trailing axes of ``array`` to ``size`` around ``center`` (images: the bottom of the
    normalised range, as inference pads slices, ``inference.PADDING``; masks and labels: 0)."""
    size = tuple(size)
    spatial = array.shape[-len(size):]
    starts = [int(np.clip(c - s // 2, 0, max(n - s, 0))) for c, s, n in zip(center, size, spatial)]
    window = tuple(slice(st, st + s) for st, s in zip(starts, size))
    cropped = array[(Ellipsis,) + window]
    return crop_or_pad(cropped, size, fill=fill)[0]


def frame_count(array: np.ndarray) -> int:
    """Frames of a cached sequence: 1 for a 3D (z, y, x) array, t for a (t, z, y, x) series."""
    return array.shape[0] if array.ndim == 4 else 1


def _stack(case: Case, names: Sequence[str], index: np.ndarray) -> np.ndarray:
    """(frames x window, y, x) for slice indices ``index`` of each named sequence, frame-major: a 3D
    sequence gives one window of slices, a (t, z, y, x) series t windows, one per frame."""
    windows = []
    for name in names:
        array = case.volumes[name]
        series = array if array.ndim == 4 else array[None]
        windows.append(series[:, index].reshape(-1, *series.shape[-2:]))
    return np.concatenate(windows, axis=0)


_KEYS = ("inputs", "targets", "mask", "labels")


def _finish(parts: tuple[np.ndarray, ...], rng: np.random.Generator, augment: bool) -> tuple[np.ndarray, ...]:
    """Augment one sample: input gain/offset, then the same left-right flip for every part."""
    x, *rest = parts
    if augment:
        x = _augment_inputs(x, rng)
        if rng.random() < 0.5:
            return tuple(a[..., ::-1] for a in (x, *rest))
    return (x, *rest)


def _collate(samples: list[tuple[np.ndarray, ...]], case_indices: list[int]) -> dict:
    batch = {key: np.ascontiguousarray(np.stack([s[i] for s in samples])).astype(np.float32)
             for i, key in enumerate(_KEYS)}
    batch["case"] = np.asarray(case_indices)
    return batch


def random_slices(cases: Sequence[Case], rng: np.random.Generator, batch: int, inputs: Sequence[str],
                  targets: Sequence[str], size: Sequence[int], *, context: int = 0, augment: bool = True) -> dict:
    """2D (``context=0``) or 2.5D (2k+1 neighbouring slices per sequence) samples of foreground slices
    (where every sequence has data: :attr:`Case.trainable`; the ``mask`` returned, which masked losses and
    validation use, is that region too, so a slab's blank part is neither a target nor scored).

    Returns arrays ``inputs`` (B, len(inputs)*(2k+1), H, W), ``targets`` (B, len(targets)*(2k+1), H, W),
    ``mask`` and ``labels`` (B, 1, H, W) of the centre slice, and ``case`` indices. A 4D series counts
    as many sequences as it has frames (:func:`_stack`), so all ``cases`` must share their frame counts.
    """
    samples, chosen = [], []
    for _ in range(batch):
        k = int(rng.integers(len(cases)))
        case = cases[k]
        mask = case.trainable
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        z = int(slices[rng.integers(len(slices))]) if len(slices) else int(rng.integers(mask.shape[0]))
        index = np.clip(np.arange(z - context, z + context + 1), 0, mask.shape[0] - 1)
        # centred on a random foreground pixel (the crop kept inside the slice by _fit), so over many draws
        # crops smaller than the slice cover all of the body, its edges included; centring on the body's
        # centroid never showed the model a breast slice's lateral chest wall or a brain's outer cortex
        ys, xs = np.nonzero(mask[z]) if mask[z].any() else np.indices(mask[z].shape).reshape(2, -1)
        pick = int(rng.integers(len(ys)))
        center = (int(ys[pick]), int(xs[pick]))
        parts = (_fit(_stack(case, inputs, index), size, center), _fit(_stack(case, targets, index), size, center),
                 _fit(mask[z][None].astype(np.float32), size, center, fill=0.0),
                 _fit(case.labels[z][None].astype(np.float32), size, center, fill=0.0))
        samples.append(_finish(parts, rng, augment))
        chosen.append(k)
    return _collate(samples, chosen)


def random_patches(cases: Sequence[Case], rng: np.random.Generator, batch: int, inputs: Sequence[str],
                   targets: Sequence[str], patch: Sequence[int], *, augment: bool = True) -> dict:
    """3D patches centred on random foreground voxels where every sequence has data: ``inputs`` (B, C_in, pz, py, px), ``targets``,
    ``mask`` and ``labels`` (B, 1, pz, py, px), and ``case`` indices."""
    samples, chosen = [], []
    for _ in range(batch):
        k = int(rng.integers(len(cases)))
        case = cases[k]
        mask = case.trainable
        voxels = np.argwhere(mask)
        center = voxels[rng.integers(len(voxels))] if len(voxels) else np.array(mask.shape) // 2
        parts = (_fit(np.stack([case.volumes[n] for n in inputs]), patch, center),
                 _fit(np.stack([case.volumes[n] for n in targets]), patch, center),
                 _fit(mask[None].astype(np.float32), patch, center, fill=0.0),
                 _fit(case.labels[None].astype(np.float32), patch, center, fill=0.0))
        samples.append(_finish(parts, rng, augment))
        chosen.append(k)
    return _collate(samples, chosen)
