"""``mri-synthesis evaluate``: metrics of a synthesized volume file against the real one.

The CLI calls :func:`run_evaluate`; it is a plain function so tests and batch scripts use it without
argparse. It prints a table (metric | whole volume | slice-wise mean ± sd), an LPIPS line (a number only
when AlexNet's ImageNet weights are already on this machine; it never downloads) and optionally writes
the same as JSON, where +inf (PSNR of identical images) is the string "inf" and undefined values null
(:func:`metrics.to_json_safe`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import RESEARCH_USE_NOTICE, __version__
from .errors import InputError
from .metrics import evaluate, to_json_safe
from .perceptual import lpips_distance
from .volume import Volume, check_output_file, read_volume, refuse_overwrite, require_same_geometry

#: Table rows: metric key, label, number format.
_ROWS = (("ssim", "SSIM", ".4f"), ("psnr", "PSNR (dB)", ".2f"), ("nmse", "NMSE", ".4g"),
         ("mse", "MSE", ".4g"), ("mae", "MAE", ".4g"))


def _fmt(value: float, spec: str) -> str:
    if math.isnan(value):
        return "n/a"
    return format(value, spec) if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _read(path: Path) -> Volume:
    return read_volume(path).require_3d(str(path)).require_extent(str(path)).require_finite(str(path))


def format_table(result: dict[str, Any]) -> list[str]:
    """The lines of the metrics table of an :func:`metrics.evaluate` result."""
    rows = [("metric", "whole volume", "slice-wise mean ± sd")]
    for key, label, spec in _ROWS:
        m = result["metrics"][key]
        rows.append((label, _fmt(m["volume"], spec), f"{_fmt(m['slice_mean'], spec)} ± {_fmt(m['slice_sd'], spec)}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def axial_axis(volume: Volume) -> int:
    """The array axis (z, y, x order) whose voxel direction lies nearest the superior-inferior axis."""
    superior = np.abs(volume.direction_matrix[2])  # LPS: the S component of each voxel axis x, y, z
    return 2 - int(np.argmax(superior))


def run_evaluate(real_path: str | Path, synth_path: str | Path, mask_path: str | Path | None = None,
                 json_path: str | Path | None = None, data_range: float | None = None,
                 out: Callable[[str], Any] = print) -> int:
    """Read, check, measure, print and optionally write JSON; returns the exit code 0.

    Args:
        real_path, synth_path: the real and the synthesized volume (NIfTI, NRRD, MHA), on one grid.
        mask_path: optional label or mask file on the same grid; its non-zero voxels are evaluated.
        json_path: optional JSON output; refused when it is one of the input files.
        data_range: for SSIM, PSNR and LPIPS; default the real volume's max - min.
        out: where lines go (``print`` for the CLI).

    Raises:
        InputError: unreadable, non-3D or non-finite files, grids that differ (naming both files), an
            empty mask, a constant real volume without ``data_range``, or a JSON path that is an input.
    """
    inputs = {"real": Path(real_path), "synth": Path(synth_path)}
    if mask_path is not None:
        inputs["mask"] = Path(mask_path)
    if json_path is not None:
        json_path = check_output_file(json_path, image=False)
        refuse_overwrite(json_path, list(inputs.values()))
    volumes = {name: _read(path) for name, path in inputs.items()}
    require_same_geometry({str(inputs[name]): volume for name, volume in volumes.items()})
    if data_range is None:
        volumes["real"].require_not_constant(str(inputs["real"]))
    mask = None
    if "mask" in volumes:
        mask = volumes["mask"].array != 0
        if not mask.any():
            raise InputError(f"{inputs['mask']}: the mask selects no voxel")

    # slice-wise figures are over axial slices: the array axis nearest the patient's superior-inferior axis
    # first, whatever axis the file stores its slices along (a sagittal 3D T1 stores them along x)
    axis = axial_axis(volumes["real"])
    real, synth = (np.moveaxis(volumes[name].array, axis, 0) for name in ("real", "synth"))
    mask = None if mask is None else np.moveaxis(mask, axis, 0)
    result = evaluate(real, synth, mask, data_range)
    lpips = lpips_distance(real, synth, data_range=result["data_range"], allow_download=False)

    out(f"real: {inputs['real']}")
    out(f"synth: {inputs['synth']}")
    for line in format_table(result):
        out(line)
    region = f"{result['n_voxels']} voxels in {inputs['mask']}" if mask is not None else f"{result['n_voxels']} voxels"
    out(f"data range {result['data_range']:.6g} ({result['data_range_source']}); {region}; slice-wise over "
        f"{result['n_slices']} of {result['n_slices_total']} axial slices")
    out(f"{lpips.metric}, foreground slices: {lpips}")
    out(RESEARCH_USE_NOTICE)

    if json_path is not None:
        document = {"real": str(inputs["real"]), "synth": str(inputs["synth"]),
                    "mask": str(inputs["mask"]) if mask is not None else None,
                    **to_json_safe(result), "lpips": to_json_safe(lpips.to_dict()),
                    "version": __version__, "notice": RESEARCH_USE_NOTICE}
        tmp = json_path.with_name(".partial-" + json_path.name)
        try:
            tmp.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
            tmp.replace(json_path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise InputError(f"{json_path}: cannot be written: {err}") from err
        out(f"wrote {json_path}")
    return 0
