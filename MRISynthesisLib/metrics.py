"""Image-quality metrics of a synthesized volume against the real one, as the papers report them.

* :func:`ssim`, :func:`psnr` (scikit-image), :func:`nmse`, :func:`mse`, :func:`mae`: whole volume (3D SSIM)
  or, through :func:`slicewise`, per axial slice (axis 0) with mean and SD over the slices that hold
  foreground; the 2D papers (IMPORTANT-Net, Seq2Seq, TC-MGAN) report slice-wise means.
* Every metric takes ``mask``: PSNR/MSE/MAE/NMSE use the mask's voxels only, SSIM averages its full map
  inside the mask. :func:`tumour_mask` and :func:`enhancement_mask` build the U-Net cT1 paper's regions.
* :func:`brasyn_ssim`: the BraSyn challenge's SSIM inside and outside the tumour.
* :func:`evaluate`: all of the above in one JSON-ready dict (:func:`to_json_safe` for infinities).
* LPIPS and IMPORTANT-Net's VGG19 perceptual distance live in :mod:`.perceptual` (they need PyTorch and
  ImageNet weights) and are re-exported here: ``from MRISynthesisLib.metrics import lpips_distance``.

Why an explicit data range: SSIM's constants and PSNR's peak depend on it, and scikit-image would
otherwise guess it from the dtype (1 for floats), which is wrong for MR intensities. When it is not
given we use the real volume's max - min (whole volume, also for masked metrics, so masked and unmasked
values share one scale) and :func:`evaluate` reports the value used.

Inputs are ``Volume``s or arrays; nothing here modifies them (every array is copied to float64 first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Union

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .errors import InputError
from .preprocess import Normalization, foreground_mask
from .volume import Volume, require_same_geometry

Image = Union[Volume, np.ndarray]
Mask = Union[Volume, np.ndarray, None]

#: scikit-image's default SSIM window (uniform, 7 voxels per axis), as the papers' Python code uses it.
SSIM_WINDOW = 7
#: BraSyn's SSIM (torchmetrics defaults): Gaussian window of sigma 1.5, 11 taps.
BRASYN_SIGMA = 1.5
BRASYN_WINDOW = 2 * int(3.5 * BRASYN_SIGMA + 0.5) + 1  # scikit-image's radius rule: 11


# --------------------------------------------------------------------- input checks
def _as_array(image: Image, name: str) -> np.ndarray:
    """A float64 copy of a 2D slice or 3D volume, refusing NaN/Inf (so no caller's buffer is ever touched)."""
    if isinstance(image, Volume):
        image = image.require_3d(name).array
    array = np.array(image, dtype=np.float64)
    if array.ndim not in (2, 3):
        raise InputError(f"{name} must be a 2D slice or a 3D volume (z, y, x), but it is {array.ndim}D")
    bad = ~np.isfinite(array)
    if bad.any():
        kinds = "/".join(k for k, m in (("NaN", np.isnan(array)), ("Inf", np.isinf(array))) if m.any())
        raise InputError(f"{name} contains {int(bad.sum())} {kinds} voxel(s)")
    return array


def _as_mask(mask: Mask, shape: tuple[int, ...], *, name: str = "mask", allow_empty: bool = False) -> np.ndarray | None:
    """Boolean copy of ``mask`` (non-zero voxels when it is not boolean), checked against the images' shape."""
    if mask is None:
        return None
    array = mask.array if isinstance(mask, Volume) else np.asarray(mask)
    if array.shape != shape:
        raise InputError(f"{name} shape {array.shape} does not match the images' shape {shape}")
    array = array.copy() if array.dtype == bool else array != 0
    if not allow_empty and not array.any():
        raise InputError(f"{name} is empty: it selects no voxel")
    return array


def prepare_pair(real: Image, synth: Image, mask: Mask = None, *,
                 names: tuple[str, str] = ("real", "synth")) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated float64 copies of an image pair and its boolean mask.

    Raises:
        InputError: shapes differ ("real and synth differ in shape: (4, 5, 6) vs (4, 5, 7)"), NaN/Inf
            voxels, two ``Volume``s on different grids, or a mask of another shape or without voxels.
    """
    a, b = _as_array(real, names[0]), _as_array(synth, names[1])
    if a.shape != b.shape:
        raise InputError(f"{names[0]} and {names[1]} differ in shape: {a.shape} vs {b.shape}")
    if isinstance(real, Volume) and isinstance(synth, Volume):
        require_same_geometry({names[0]: real, names[1]: synth})
    return a, b, _as_mask(mask, a.shape)


def _range(real: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        value = float(data_range)
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"`data_range` must be positive and finite, not {data_range}")
        return value
    value = float(real.max() - real.min())
    if value == 0:
        raise InputError(f"real is constant (every voxel is {float(real.flat[0]):g}): its data range is 0, so SSIM "
                         "and PSNR are undefined; pass `data_range` explicitly")
    return value


def data_range_of(real: Image, data_range: float | None = None) -> float:
    """The data range the metrics use: ``data_range`` when given, else the real volume's max - min."""
    return _range(_as_array(real, "real"), data_range)


def _selected(real: np.ndarray, synth: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    return (real.ravel(), synth.ravel()) if mask is None else (real[mask], synth[mask])


# --------------------------------------------------------------------- the metrics
def _ssim_map(real: np.ndarray, synth: np.ndarray, data_range: float, *, gaussian: bool = False) -> tuple[float, np.ndarray]:
    """scikit-image's SSIM: (its mean over the map without the window's border, the full map)."""
    window = BRASYN_WINDOW if gaussian else SSIM_WINDOW
    if min(real.shape) < window:
        raise InputError(f"SSIM needs at least {window} voxels along every axis (its window), "
                         f"but the images have shape {real.shape}")
    options = {"gaussian_weights": True, "sigma": BRASYN_SIGMA, "use_sample_covariance": False} if gaussian else {}
    mean, full = structural_similarity(real, synth, data_range=data_range, full=True, **options)
    return float(mean), full


def ssim(real: Image, synth: Image, *, data_range: float | None = None, mask: Mask = None) -> float:
    """Structural similarity (IMPORTANT-Net eq. 10; Wang et al. 2004), scikit-image's implementation.

    3D SSIM for a volume, 2D for a slice; 7-voxel uniform window, K1 = 0.01, K2 = 0.03 (scikit-image's
    defaults). Unmasked: scikit-image's value (map mean without the window's border). Masked: mean of
    the full SSIM map inside the mask; each map voxel sees its window, so voxels just outside the mask
    (within 3 voxels) still count, as in BraSyn's tumour SSIM.
    """
    real, synth, mask = prepare_pair(real, synth, mask)
    mean, full = _ssim_map(real, synth, _range(real, data_range))
    return mean if mask is None else float(full[mask].mean())


def psnr(real: Image, synth: Image, *, data_range: float | None = None, mask: Mask = None) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE) (IMPORTANT-Net eq. 11), scikit-image.

    The paper's peak is max(y, G); we use the explicit data range (the real's max - min by default,
    which equals its max for magnitude images starting at 0). Identical images give ``math.inf``
    (no division warning).
    """
    real, synth, mask = prepare_pair(real, synth, mask)
    data_range = _range(real, data_range)
    y, g = _selected(real, synth, mask)
    if np.array_equal(y, g):
        return math.inf
    return float(peak_signal_noise_ratio(y, g, data_range=data_range))


def mse(real: Image, synth: Image, *, mask: Mask = None) -> float:
    """Mean squared error, (1/|S|) sum over S of (G - y)^2 (U-Net cT1 paper, eq. 2 and section 2.7; S the mask)."""
    y, g = _selected(*prepare_pair(real, synth, mask))
    return float(np.mean((g - y) ** 2))


def mae(real: Image, synth: Image, *, mask: Mask = None) -> float:
    """Mean absolute error, (1/|S|) sum over S of |G - y| (U-Net cT1 paper, eq. 1 and section 2.7; S the mask)."""
    y, g = _selected(*prepare_pair(real, synth, mask))
    return float(np.mean(np.abs(g - y)))


def nmse(real: Image, synth: Image, *, mask: Mask = None) -> float:
    """Normalised MSE, ||y - G||^2 / ||y||^2 (IMPORTANT-Net eq. 12 as intended).

    The paper prints the numerator without its norm, (y - G) / ||y||^2, which is not a number; its
    reported values (about 0.05) match the squared norm of the difference.
    """
    y, g = _selected(*prepare_pair(real, synth, mask))
    energy = float(np.sum(y ** 2))
    if energy == 0:
        raise InputError("NMSE is undefined: real is zero everywhere in the evaluated region")
    return float(np.sum((y - g) ** 2)) / energy


#: The metrics of :func:`evaluate`, by name; those in ``_RANGED`` take a data range.
METRICS: dict[str, Callable[..., float]] = {"ssim": ssim, "psnr": psnr, "nmse": nmse, "mse": mse, "mae": mae}
_RANGED = frozenset({"ssim", "psnr"})


def _bind(name: str, data_range: float) -> Callable[..., float]:
    """The metric called ``name`` with the data range fixed (so every slice shares the volume's scale)."""
    if name not in METRICS:
        raise InputError(f"unknown metric '{name}'; use one of {', '.join(METRICS)}")
    return partial(METRICS[name], data_range=data_range) if name in _RANGED else METRICS[name]


# --------------------------------------------------------------------- slice-wise
@dataclass(frozen=True)
class SliceStats:
    """A metric over axial slices: mean and population SD (numpy's), and each slice's value.

    With an infinite value (PSNR of an identical slice) the mean is inf and the SD is NaN (undefined).
    """

    mean: float
    sd: float
    indices: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)


def _summary(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std()) if np.isfinite(v).all() else math.nan)


def foreground_slices(real: Image, mask: Mask = None) -> tuple[int, ...]:
    """Indices of the axial slices (axis 0) that hold foreground.

    Foreground is ``mask`` when given, else :func:`preprocess.foreground_mask` of the real volume (Otsu,
    largest component, holes filled), so empty background slices do not inflate slice-wise means. A
    constant volume has no background: all its slices count.
    """
    array = _as_array(real, "real")
    if array.ndim != 3:
        raise InputError(f"slice-wise metrics need a 3D volume (z, y, x), but real is {array.ndim}D")
    region = _as_mask(mask, array.shape)
    if region is None:
        region = np.ones(array.shape, bool) if np.ptp(array) == 0 else foreground_mask(array)
    indices = tuple(int(z) for z in np.flatnonzero(region.reshape(region.shape[0], -1).any(axis=1)))
    if not indices:
        raise InputError("no axial slice of real holds foreground")
    return indices


def _slice_stats(metric: Callable[..., float], real: np.ndarray, synth: np.ndarray, mask: np.ndarray | None,
                 indices: tuple[int, ...]) -> SliceStats:
    """The metric on each slice of ``indices``; a slice where it is undefined (NMSE of a slice whose real
    voxels are all zero, as in a slab zero-padded to the grid) is left out, and only when every slice is
    does the error reach the caller."""
    values, kept, first_error = [], [], None
    for z in indices:
        try:
            values.append(metric(real[z], synth[z], mask=None if mask is None else mask[z]))
            kept.append(z)
        except InputError as err:
            first_error = first_error or InputError(f"axial slice {z}: {err}")
    if not values:
        raise first_error
    mean, sd = _summary(values)
    return SliceStats(mean, sd, tuple(kept), tuple(values))


def slicewise(metric: str, real: Image, synth: Image, *, mask: Mask = None, data_range: float | None = None) -> SliceStats:
    """``metric`` (a name of :data:`METRICS`) on each foreground axial slice, within ``mask`` when given.

    The data range is resolved once on the whole real volume, so all slices share one scale.
    """
    real, synth, mask = prepare_pair(real, synth, mask)
    indices = foreground_slices(real, mask)
    return _slice_stats(_bind(metric, _range(real, data_range)), real, synth, mask, indices)


# --------------------------------------------------------------------- regions
def tumour_mask(seg: Image) -> np.ndarray:
    """Whole tumour of a BraTS-style label map: every labelled voxel (seg > 0)."""
    return (seg.array if isinstance(seg, Volume) else np.asarray(seg)) > 0


def enhancement_mask(t1ce: Image, t1: Image, brain_mask: Mask = None, *, threshold: float = 0.3,
                     cutoff: float = 5.0) -> np.ndarray:
    """Enhancing voxels: normalised T1ce - normalised T1 > ``threshold`` (U-Net cT1 paper, section 2.6).

    The paper subtracts the registered T1 from T1ce after its normalisation (z-score, cut-off, scaled to
    [-1, 1]) and calls positive differences above 0.3 enhancement. Each image is z-scored within
    ``brain_mask`` (whole image when None) with :meth:`Normalization.zscore` (z clipped to +-``cutoff``,
    divided by it), so 0.3 means 0.3 x cutoff = 1.5 SD with the default cut-off. The result is limited
    to the brain mask when one is given.
    """
    ce, pre, brain = prepare_pair(t1ce, t1, brain_mask, names=("t1ce", "t1"))
    diff = (Normalization.zscore(ce, brain, cutoff=cutoff).apply(ce)
            - Normalization.zscore(pre, brain, cutoff=cutoff).apply(pre))
    enhancing = diff > threshold
    return enhancing if brain is None else enhancing & brain


# --------------------------------------------------------------------- BraSyn
@dataclass(frozen=True)
class BraSynSSIM:
    """BraSyn's two numbers; ``tumour`` is None when the case has no tumour voxel (or no seg was given)."""

    tumour: float | None
    non_tumour: float | None


def _brasyn_rescale(array: np.ndarray, name: str) -> np.ndarray:
    low, high = np.percentile(array, [0.5, 99.5])
    low = max(float(low), 0.0)
    if high <= low:
        raise InputError(f"{name} has no intensity range between its 0.5th and 99.5th percentiles "
                         "(lower bound at least 0): BraSyn's SSIM is undefined")
    return (np.clip(array, low, high) - low) / (high - low)


def brasyn_ssim(real: Image, synth: Image, seg: Mask = None) -> BraSynSSIM:
    """SSIM inside and outside the tumour as the BraSyn challenge (BraTS 2023-2025) scores synthesis.

    As its official ``ssim.py``: each volume clipped to its own 0.5-99.5 percentiles (lower bound at
    least 0) and rescaled to [0, 1]; for each region the other region is set to 0 in both volumes, the
    3D SSIM map computed (Gaussian window, sigma 1.5, 11 taps, K1 = 0.01, K2 = 0.03, data range 1) and
    averaged inside the region. Differences from that script, so numbers are close, not bit-identical:
    scikit-image instead of torchmetrics (border handling), data range fixed at 1 where torchmetrics
    infers it from the masked images, and its ``ssim[mask]`` with an integer mask (which indexes the
    batch axis instead of selecting voxels) is read as the intended boolean selection.
    """
    y, g, _ = prepare_pair(real, synth)
    tumour = _as_mask(seg, y.shape, name="seg", allow_empty=True)
    tumour = np.zeros(y.shape, bool) if tumour is None else tumour
    y, g = _brasyn_rescale(y, "real"), _brasyn_rescale(g, "synth")

    def region(inside: np.ndarray) -> float | None:
        if not inside.any():
            return None
        _, full = _ssim_map(y * inside, g * inside, 1.0, gaussian=True)
        return float(full[inside].mean())

    return BraSynSSIM(region(tumour), region(~tumour))


# --------------------------------------------------------------------- everything at once
def evaluate(real: Image, synth: Image, mask: Mask = None, data_range: float | None = None) -> dict[str, Any]:
    """Every metric of :data:`METRICS` on the whole volume and slice-wise, plus what they were computed on.

    Returns:
        ``{"metrics": {name: {"volume", "slice_mean", "slice_sd"}}, "data_range", "data_range_source"
        ("given" or "real max - min"), "masked", "n_voxels" (voxels evaluated), "n_slices" (slices in the
        slice-wise statistics), "n_slices_total", "slices" (their indices)}``. Values are floats; PSNR
        of identical images is ``inf`` (and its SD NaN): pass the dict through :func:`to_json_safe`
        before ``json.dumps``.
    """
    real, synth, mask = prepare_pair(real, synth, mask)
    if real.ndim != 3:
        raise InputError(f"evaluate needs 3D volumes (z, y, x), but real is {real.ndim}D")
    used_range = _range(real, data_range)
    indices = foreground_slices(real, mask)
    metrics = {}
    for name in METRICS:
        metric = _bind(name, used_range)
        stats = _slice_stats(metric, real, synth, mask, indices)
        metrics[name] = {"volume": metric(real, synth, mask=mask), "slice_mean": stats.mean, "slice_sd": stats.sd}
    return {
        "metrics": metrics,
        "data_range": used_range,
        "data_range_source": "given" if data_range is not None else "real max - min",
        "masked": mask is not None,
        "n_voxels": int(mask.sum()) if mask is not None else int(real.size),
        "n_slices": len(indices),
        "n_slices_total": int(real.shape[0]),
        "slices": list(indices),
    }


def to_json_safe(value: Any) -> Any:
    """``value`` with +-inf written as the strings "inf"/"-inf" and NaN as null, tuples as lists.

    JSON has no infinity, and PSNR of identical images is +inf: the string keeps the meaning (Python's
    ``float("inf")`` reads it back) while a reader that expects a number fails loudly instead of
    misreading it; null marks an undefined value (the SD of infinite values).
    """
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# --------------------------------------------------------------------- deep-feature metrics (lazy)
_PERCEPTUAL = ("PerceptualResult", "lpips_distance", "vgg19_perceptual", "checkpoint_path", "missing_weights_message")


def __getattr__(name: str) -> Any:
    """Re-export :mod:`.perceptual` without importing PyTorch until it is used."""
    if name in _PERCEPTUAL:
        from . import perceptual
        return getattr(perceptual, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
