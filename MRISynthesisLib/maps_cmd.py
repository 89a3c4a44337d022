"""``mri-synthesis maps``: the imaging-differentiation maps of one case, as volumes, heatmaps and a report.

Writes into ``--out``: ``Md-<sequence>.nii.gz`` per sequence (on the reference sequence's grid, so it
overlays the reference in a viewer), ``Md-<sequence>.png`` (the map over that sequence on the axial
slice where it is largest) and ``maps.json`` (provenance, registrations, each map's foreground mean and
every single-source translation's PSNR and SSIM). See :mod:`differentiation` for the method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from . import RESEARCH_USE_NOTICE
from .errors import InputError
from .inputs import load_case
from .metrics import to_json_safe
from .sequences import canonical, parse_assignments
from .volume import discard_if_failed, output_folder, refuse_overwrite, require_named


def run_maps(input_items: list[str], out: str | Path, *, model: str = "seq2seq", reference: str | None = None,
             register: str = "rigid", device: str = "auto", anatomy: str | None = None,
             progress: bool | str = True, say: Callable[[str], None] = print) -> dict:
    from .differentiation import case_differentiation_maps
    from .synthesize_cmd import progress_bar, progress_lines

    files = parse_assignments(input_items)
    protected = list(files.values())
    inputs = load_case(files)
    out = require_named(out)
    for name in inputs:
        for suffix in (".nii.gz", ".png"):
            refuse_overwrite(out / f"Md-{name}{suffix}", protected)
    refuse_overwrite(out / "maps.json", protected)
    if out.exists() and not out.is_dir():  # before minutes of work, not after
        raise InputError(f"{out}: exists and is not a folder")
    bar, update = (progress_lines() if progress == "lines" else
                   progress_bar("differentiation maps") if progress else (None, None))
    try:
        result = case_differentiation_maps(inputs, model, reference=reference and canonical(reference),
                                           register=register, device=device, anatomy=anatomy, progress=update,
                                           input_names={k: str(v) for k, v in files.items()})
    finally:
        if bar is not None:
            bar.close()
    with discard_if_failed(out):  # all of it or, in a folder it made, nothing
        written = write_maps(result, output_folder(out), protected)
        report = {"maps": written, "provenance": result.provenance, "registrations": result.registrations,
                  "translations": result.translations}
        (out / "maps.json").write_text(json.dumps(to_json_safe(report), indent=1, allow_nan=False))
    say(f"{'sequence':10} {'mean M_d in the foreground':>28}")
    for name, mean in sorted(result.foreground_means.items(), key=lambda item: -item[1]):
        say(f"{name:10} {mean:28.4f}")
    most = max(result.foreground_means, key=result.foreground_means.get)
    say(f"least predictable from the others: {most}; maps in {out} ({result.provenance['seconds']} s; "
        f"{RESEARCH_USE_NOTICE})")
    for warning in result.provenance["warnings"]:
        say(f"warning: {warning}")
    return report


def write_maps(result, out: Path, protect=(), slice_index: int | None = None) -> dict[str, dict]:
    """Each map of a :class:`differentiation.DifferentiationMaps` as ``Md-<SEQ>.nii.gz`` and its heatmap PNG in
    ``out`` (on axial ``slice_index`` of the work grid, default where each map is largest); returns
    {sequence: {volume, png, foreground_mean}}."""
    from .maps import write_map_files

    written = {}
    for name, volume in result.maps.items():
        anatomy_image, heat = result.on_work_grid[name]
        path, png = write_map_files(out, name, volume, anatomy_image, heat, title=f"M_d({name})",
                                    grid=result.work_grid, protect=protect, slice_index=slice_index)
        written[name] = {"volume": str(path), "png": str(png), "foreground_mean": result.foreground_means[name]}
    return written
