"""Voxel-wise maps of where a synthesized volume differs from the real one, and a PNG to look at them.

* :func:`error_map`, :func:`error_rgb`: IMPORTANT-Net's colour error map (section 3.5, eq. 9),
  H_col = psi(omega(|y - G|)): the absolute error, clipped by omega to [0, max], coloured by psi from
  blue (0) to red (max) with matplotlib's ``jet``.
* :func:`differentiation_map`: Seq2Seq's imaging-differentiation map (section 3.5, eq. 5), where a
  sequence cannot be predicted from the others; :func:`differentiation_maps` makes every sequence's map
  of a case at once from normalised arrays (what ranking and :mod:`differentiation` use).
* :func:`write_comparison_png`: inputs | real | synthesized | error map on one axial slice.

Nothing here modifies its inputs; maps are new ``Volume``s on the real volume's grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from . import RESEARCH_USE_NOTICE
from .errors import InputError
from .metrics import Image, Mask, prepare_pair
from .preprocess import foreground_mask
from .volume import Volume, refuse_overwrite, upright, write_volume

#: IMPORTANT-Net's psi: minimum blue, maximum red.
ERROR_COLORMAP = "jet"
#: Default omega: this percentile of |error| inside the mask or foreground, so a few outliers do not
#: turn the whole map blue.
DEFAULT_ERROR_PERCENTILE = 99.0


@dataclass(frozen=True)
class ErrorMap:
    """|real - synth| clipped to [0, ``max_error``] on the real volume's grid, and the ``max_error`` used."""

    volume: Volume
    max_error: float


def _as_volume(image: Image, name: str) -> Volume:
    return image.require_3d(name) if isinstance(image, Volume) else Volume(np.asarray(image)).require_3d(name)


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"`{name}` must be positive and finite, not {value}")
    return value


def _default_max_error(error: np.ndarray, real: np.ndarray, mask: np.ndarray | None) -> float:
    """99th percentile of |error| in the mask (else the real's foreground); falls back to the maximum
    error, then to 1, so identical images still give a valid (all-blue) scale."""
    if mask is None:
        mask = np.ones(real.shape, bool) if np.ptp(real) == 0 else foreground_mask(real)
    for candidate in (np.percentile(error[mask], DEFAULT_ERROR_PERCENTILE), error.max()):
        if candidate > 0:
            return float(candidate)
    return 1.0


def error_map(real: Image, synth: Image, max_error: float | None = None, mask: Mask = None) -> ErrorMap:
    """IMPORTANT-Net's error map |y - G|, clipped to [0, ``max_error``] (its omega).

    Args:
        max_error: the displayed maximum (red). Default: the 99th percentile of |error| inside ``mask``,
            or inside the real volume's foreground (:func:`preprocess.foreground_mask`) without one.
        mask: only chooses the default ``max_error``; the map covers the whole volume.
    """
    real_volume = _as_volume(real, "real")  # the grid of the map
    y, g, region = prepare_pair(real, synth, mask)
    error = np.abs(y - g)
    scale = _positive(max_error, "max_error") if max_error is not None else _default_max_error(error, y, region)
    return ErrorMap(real_volume.with_array(np.clip(error, 0.0, scale)), scale)


def error_rgb(error_slice: np.ndarray, max_error: float) -> np.ndarray:
    """uint8 RGB image of an error slice through ``jet`` on [0, ``max_error``] (IMPORTANT-Net's psi)."""
    from matplotlib import colormaps

    error = np.asarray(error_slice, dtype=np.float64)
    if not np.all(np.isfinite(error)):
        raise InputError("error slice contains NaN or Inf values")
    rgba = colormaps[ERROR_COLORMAP](np.clip(error / _positive(max_error, "max_error"), 0.0, 1.0))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def differentiation_map(predictions: Mapping[str, Image], real: Image, *, target: str | None = None) -> Volume:
    """Seq2Seq's imaging-differentiation map M_d(X_i) = mean over sources j != i of |X'_{j->i} - X_i|.

    Args:
        predictions: {source name: X'_{j->i}, the target predicted from that source alone}, each on the
            real volume's grid. The mean is over the sources given (Seq2Seq's code; the paper's 1/S sum).
        real: the real target X_i.
        target: the target's name, to refuse a "prediction" of the target from itself.
    """
    if not predictions:
        raise InputError("differentiation_map needs at least one prediction X'_{j->i} of the target")
    if target is not None and target in predictions:
        raise InputError(f"the predictions include the target '{target}' itself; give only other sources")
    real_volume = _as_volume(real, "real")
    total = np.zeros(real_volume.shape, np.float64)
    for source, prediction in predictions.items():
        y, g, _ = prepare_pair(real, prediction, names=("real", f"prediction from {source}"))
        total += np.abs(g - y)
    return real_volume.with_array(total / len(predictions))


def differentiation_maps(volumes: Mapping[str, np.ndarray], predictions: Mapping[tuple[str, str], np.ndarray],
                         mask: np.ndarray, inside: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Eq. 5 per sequence i: mean over sources j != i of |X'_{j->i} - X_i|, zero outside the foreground.
    The map of a 4D series is also averaged over its frames: one 3D map per sequence, on the subject's grid.

    ``inside`` (sequence -> the voxels inside its field of view, for a case whose sequences cover different
    parts of it): each voxel's mean is over the sources with data there, and the map is zero where sequence
    i, or every source, has none (:func:`differentiation_region`): a translation from a slab's blank part
    is not a measure of what i shows."""
    maps = {}
    for target, real in volumes.items():
        sources = [src for (src, tgt) in predictions if tgt == target and src != target]
        if not sources:
            continue
        total = np.zeros(mask.shape, np.float64)
        count = np.zeros(mask.shape, np.int32)
        for src in sources:
            error = np.abs(predictions[(src, target)] - real)
            has_data = True if inside is None else inside[src]  # every voxel, unless a field of view says not
            total += np.where(has_data, error.mean(0) if error.ndim == 4 else error, 0.0)
            count += has_data
        region = differentiation_region(target, sources, mask, inside)
        maps[target] = np.where(region, total / np.maximum(count, 1), 0.0).astype(np.float32)
    return maps


def differentiation_region(target: str, sources: Iterable[str], mask: np.ndarray,
                           inside: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Where M_d of ``target`` is defined: the foreground inside ``target``'s field of view and at least
    one source's (all of the foreground without ``inside``)."""
    if inside is None:
        return mask
    return mask & inside[target] & np.logical_or.reduce([inside[s] for s in sources])


# --------------------------------------------------------------------- comparison PNG
def _pick_slice(error: np.ndarray, slice_index: int | None) -> int:
    if slice_index is not None:
        if not 0 <= int(slice_index) < error.shape[0]:
            raise InputError(f"slice_index {slice_index} is outside the volume's {error.shape[0]} axial slices")
        return int(slice_index)
    per_slice = error.reshape(error.shape[0], -1).mean(axis=1)
    return int(np.argmax(per_slice)) if per_slice.max() > 0 else error.shape[0] // 2


def _window(image: np.ndarray) -> tuple[float, float]:
    low, high = (float(v) for v in np.percentile(image, [0.5, 99.5]))
    return (low, high) if high > low else (low, low + 1.0)


def write_comparison_png(inputs: Mapping[str, Image], real: Image, synth: Image, path: str | Path,
                         error: ErrorMap | None = None, slice_index: int | None = None, title: str | None = None,
                         *, protect: Sequence[str | Path] = ()) -> Path:
    """One axial slice as a row: each input | real | synthesized | error map, each with a colour bar.

    Args:
        error: the error map to show; computed with :func:`error_map`'s defaults when None.
        slice_index: axial slice, counted from the inferior end (``volume.upright``'s axis 0, whatever the
            files' storage order); default the one with the largest mean error (the middle one when there
            is no error).
        protect: input files the PNG must never overwrite.

    Real and synthesized share the real slice's grey window (0.5-99.5 percentiles), so a brightness
    difference shows; each input has its own. Written through matplotlib's Agg canvas (no display, no
    global pyplot state) to a temporary name, then renamed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .phantom.montage import _views  # the radiological axial display the phantom montages use

    # axial slices along array axis 0, whatever plane the reference was acquired in (a sagittal 3D T1ce); a bare
    # array beside a real Volume lies on its grid, so it turns with it
    if isinstance(real, Volume):
        grid = real

        def turned(image):
            if not isinstance(image, Volume) and np.shape(image) == grid.shape:
                image = grid.with_array(np.asarray(image, np.float32))
            return upright(image) if isinstance(image, Volume) else image
        real, synth = turned(real), turned(synth)
        inputs = {name: turned(image) for name, image in inputs.items()}
        if error is not None:
            error = ErrorMap(turned(error.volume), error.max_error)
    real_volume = _as_volume(real, "real")
    y, g, _ = prepare_pair(real, synth)
    sources = {name: prepare_pair(real, image, names=("real", f"input {name}"))[1]
               for name, image in inputs.items()}
    error = error if error is not None else error_map(real, synth)
    if error.volume.shape != y.shape:
        raise InputError(f"error map shape {error.volume.shape} does not match real's shape {y.shape}")
    z = _pick_slice(error.volume.array, slice_index)
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: output folder does not exist")
    refuse_overwrite(path, protect)

    def axial(array: np.ndarray) -> np.ndarray:
        return _views(array, (z, 0, 0), real_volume.direction_matrix)[0]

    grey = _window(axial(y))
    panels = [(name, axial(a), "gray", _window(axial(a))) for name, a in sources.items()]
    panels += [("real", axial(y), "gray", grey), ("synthesized", axial(g), "gray", grey),
               ("|real - synthesized|", axial(error.volume.array), ERROR_COLORMAP, (0.0, error.max_error))]
    aspect = real_volume.spacing[1] / real_volume.spacing[0]
    fig = Figure(figsize=(3.2 * len(panels), 3.0), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (name, view, cmap, (vmin, vmax)) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        shown = ax.imshow(view, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(f"{title + ' — ' if title else ''}axial slice {z}. {RESEARCH_USE_NOTICE}", fontsize=9)
    tmp = path.with_name(".partial-" + path.name)
    try:
        fig.savefig(tmp, format="png", dpi=90)
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot be written: {err}") from err
    return path


def write_heatmap_png(anatomy: np.ndarray, heat: np.ndarray, path: str | Path, *, title: str = "",
                      slice_index: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                      direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Path:
    """A heatmap (an M_d map, say) over the grey anatomy on ``slice_index`` (counted from the inferior end, as
    :func:`write_comparison_png` counts), by default the axial slice where the heat is largest outside the
    outer tenth of slices.

    The slice is shown as the comparison PNG and the phantom montages show it (radiological display:
    anterior up, the patient's right on the viewer's left), from the grid's ``direction`` (LPS, row-major
    3x3) and with its in-plane ``spacing`` (x, y) as the aspect. The heat is drawn with ``hot`` over the
    slice, transparent where it is below 5 % of its 99.5th percentile so the anatomy stays readable.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .phantom.montage import _views

    anatomy, heat = np.asarray(anatomy, np.float32), np.asarray(heat, np.float32)
    if anatomy.shape != heat.shape or anatomy.ndim != 3:
        raise InputError(f"heatmap and anatomy must be 3D volumes of one shape, not {anatomy.shape} and {heat.shape}")
    matrix = np.asarray(direction, float).reshape(3, 3)
    if not np.allclose(matrix, np.eye(3)):  # axial slices along array axis 0 whatever the grid's plane
        placed = [upright(Volume(a, tuple(spacing), (0.0, 0.0, 0.0), tuple(matrix.ravel()))) for a in (anatomy, heat)]
        (anatomy, heat), matrix, spacing = (v.array for v in placed), np.eye(3), placed[0].spacing
    if slice_index is None:  # not in the outer tenth of slices: the other sequences, moved onto this grid
        margin = heat.shape[0] // 10  # by registration, end there and every translation errs
        slice_index = margin + _pick_slice(heat[margin:heat.shape[0] - margin], None)
    z = _pick_slice(heat, slice_index)
    anatomy_view, heat_view = (_views(a, (z, 0, 0), matrix)[0] for a in (anatomy, heat))
    top = float(np.percentile(heat, 99.5)) or 1.0
    shown = np.ma.masked_less(heat_view, 0.05 * top)
    aspect = float(spacing[1]) / float(spacing[0])
    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    low, high = _window(anatomy_view)
    ax.imshow(anatomy_view, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
    overlay = ax.imshow(shown, cmap="hot", vmin=0, vmax=top, alpha=0.7, aspect=aspect, interpolation="nearest")
    fig.colorbar(overlay, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(f"{title} (axial slice {z})", fontsize=9)
    ax.set_axis_off()
    path = Path(path)
    tmp = path.with_name(".partial-" + path.name)
    fig.savefig(tmp, format="png", dpi=80)
    tmp.replace(path)
    return path


def write_map_files(folder: str | Path, name: str, volume: Volume, anatomy: np.ndarray, heat: np.ndarray, *,
                    title: str, grid: Volume, protect: Sequence[str | Path] = (),
                    slice_index: int | None = None) -> tuple[Path, Path]:
    """One sequence's M_d map as ``Md-<name>.nii.gz`` (``volume``, the overlay a viewer loads) and
    ``Md-<name>.png`` (``heat`` over ``anatomy``, both on ``grid``'s voxels; see :func:`write_heatmap_png`).

    ``volume`` and ``heat`` differ when the map was resampled onto a user's reference grid for the overlay
    while the heatmap is drawn where it was computed. Returns the two paths.
    """
    folder = Path(folder)
    path = write_volume(volume, folder / f"Md-{name}.nii.gz", protect=protect)
    png = write_heatmap_png(anatomy, heat, folder / f"Md-{name}.png", title=title, slice_index=slice_index,
                            spacing=grid.spacing, direction=grid.direction)
    return path, png
