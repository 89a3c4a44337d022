"""``mri-synthesis register``: register files onto a fixed one and write results and transforms.

For each moving file ``<stem>.nii.gz`` the output folder gets ``<stem>-registered.nii.gz`` (on the fixed
grid), ``<stem>-forward-<k>.mat|.nii.gz`` and ``<stem>-inverse-<k>…`` (ANTs transforms, reusable with
``antsApplyTransforms`` or :class:`~MRISynthesisLib.registration.Registration`), and one
``registration.json`` with mutual information before and after, runtime and the files. A 4D series is
registered on its first frame (pre-contrast DCE phase, b = 0 DWI) and every frame moved with that one
transform.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import InputError
from .registration import PRESETS, register
from .volume import (SUPPORTED_SUFFIXES, Volume, discard_if_failed, discard_new_entries, output_folder, read_volume,
                     refuse_overwrite, require_named, write_volume)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in SUPPORTED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _checked(volume: Volume, path: Path) -> Volume:
    """What registration needs of a 3D volume or a series, whatever its intensities (mutual information)."""
    return volume.require_extent(str(path)).require_finite(str(path)).require_not_constant(str(path))


def run_register(fixed_path: str | Path, moving_paths: Sequence[str | Path], preset: str, out: str | Path, *,
                 seed: int | None = None, single_thread: bool = False,
                 say: Callable[[str], None] = print) -> dict:
    """Register every moving file onto the fixed one; returns the summary written to registration.json."""
    if preset not in PRESETS:
        raise InputError(f"unknown registration preset '{preset}'; use one of {', '.join(PRESETS)}")
    fixed_path, moving_paths, out = Path(fixed_path), [Path(p) for p in moving_paths], require_named(out)
    stems = [_stem(p) for p in moving_paths]
    if len(set(stems)) != len(stems):
        raise InputError("two moving files share a name; their outputs would overwrite each other")
    fixed = _checked(read_volume(fixed_path).require_3d(str(fixed_path)), fixed_path)
    movings = [_checked(read_volume(path), path) for path in moving_paths]
    inputs = [fixed_path, *moving_paths]
    for stem in stems:  # before any work: the transforms written first would be left behind
        refuse_overwrite(out / f"{stem}-registered.nii.gz", inputs)
    summary = {"fixed": str(fixed_path), "preset": preset, "seed": seed, "moving": []}
    with discard_if_failed(out), discard_new_entries(out):  # all the outputs, or nothing new left behind
        output_folder(out)
        for path, stem, moving in zip(moving_paths, stems, movings):
            representative = moving.frame(0) if moving.is_series else moving
            result = register(fixed, representative, preset, seed=seed, single_thread=single_thread, out_dir=out,
                              name=stem)
            registered = result.apply(moving) if moving.is_series else result.registered
            if np.ptp(registered.array) == 0:  # all fill: nothing of it landed on the fixed grid
                raise InputError(f"{path} does not overlap the field of view of {fixed_path} (registration: {preset}); "
                                 "their headers place them apart: register them (rigid), or check their origins "
                                 "and orientations")
            target = write_volume(registered, out / f"{stem}-registered.nii.gz", protect=inputs)
            entry = {"moving": str(path), "registered": str(target), **result.summary()}
            measured = (f", mutual information {result.mi_before:.3f} -> {result.mi_after:.3f}"
                        if result.mi_before is not None else "")
            say(f"{path.name}: {preset} in {result.seconds:.1f} s{measured}; wrote {target}")
            if result.mi_before is not None and result.mi_after < result.mi_before:
                entry["warning"] = (f"the registration lowered the mutual information ({result.mi_before:.3f} -> "
                                    f"{result.mi_after:.3f}): it may have made the alignment worse; check it, or "
                                    "keep the volumes as they were (preset none) if they were aligned")
                say(f"{path.name}: warning: {entry['warning']}")
            summary["moving"].append(entry)
        (out / "registration.json").write_text(json.dumps(summary, indent=1))
    return summary
