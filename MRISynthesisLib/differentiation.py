"""Imaging-differentiation maps of one case: where each of its sequences shows what the others cannot.

Seq2Seq section 3.5, Eq. 5, for the case a user has loaded (the ranking command makes the same maps
for held-out subjects, :mod:`rank_cmd`): every available sequence i is predicted from every other
sequence j alone by an any-to-any model, and M_d(X_i) = mean over j != i of |X'_{j->i} - X_i|. A high
value marks tissue that sequence i shows and no other sequence of the case predicts: contrast uptake in
T1ce or DCE, oedema in FLAIR, restricted diffusion in DWI.

Steps, as :func:`pipeline.synthesize` does them, so the maps match what a synthesis would see: every
sequence is registered onto the reference (T1 by default), moved to the model's work grid and normalised
by the model's training scheme; after every translation the maps are resampled back onto the reference
grid, so they overlay the reference in a viewer. Units: mean absolute difference in the model's
normalised intensities (Seq2Seq's: each sequence clipped to [0, 2 x its 99th foreground percentile]
and mapped to [-1, 1], so 0.1 is 5 % of that range). A series (DWI, DCE) enters and is made whole; its
map is the mean over its frames. Inputs are never modified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import numpy as np

from . import RESEARCH_USE_NOTICE, __version__
from .errors import InputError
from .inference import choose_device
from .inputs import model_frames
from .maps import differentiation_maps, differentiation_region
from .pipeline import (Progress, alignment_warnings, body_points, check_taken, coverage_warnings, default_reference,
                       frames_of, prepare, report_progress, stage_progress)
from .predictors import translator
from .preprocess import resample_to
from .ranking import score_pair
from .registration import PRESETS
from .sequences import canonical, canonical_keys
from .volume import Volume
from .weights import WeightsEntry, find, load_model


@dataclass
class DifferentiationMaps:
    """M_d of every sequence of one case, on the reference grid, and how they were made."""

    maps: dict[str, Volume]
    #: (source, target, PSNR, SSIM) of every single-source translation, on the normalised work grid
    translations: list[dict]
    provenance: dict
    registrations: dict[str, dict] = field(default_factory=dict)
    #: each map's mean over the case's foreground: how much of each sequence the others cannot predict
    #: (one case's counterpart of the ranking's C_d)
    foreground_means: dict[str, float] = field(default_factory=dict)
    #: each sequence normalised on the work grid (a series: its frames' mean) and its map there, for figures
    on_work_grid: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: the model's work grid (only its geometry matters), where ``on_work_grid`` lies
    work_grid: Volume | None = None


def any_to_any_entry(model: str, anatomy: str | None, available: tuple[str, ...],
                     weights_folder: str | Path | None = None, purpose: str = "making imaging-differentiation maps"
                     ) -> WeightsEntry:
    """The bundled weights of ``model`` that translate every sequence into every other, else a clear error
    saying what ``purpose`` needs them."""
    entry = find(model, None, anatomy, weights_folder, available=available)
    if set(entry.inputs) != set(entry.targets):
        raise InputError(f"{entry.model} maps {'+'.join(entry.inputs)} -> {'+'.join(entry.targets)}; {purpose} needs "
                         "an any-to-any model (every sequence to every other), such as seq2seq")
    return entry


def _too_few(inputs: Mapping[str, Volume], model: str, anatomy: str | None, weights_folder) -> None:
    """Raise for fewer than two inputs, naming the sequences each of ``model``'s weights takes."""
    from .weights import read_manifest

    takes = [e for e in read_manifest(weights_folder) if e.model == model and (anatomy is None or e.anatomy == anatomy)]
    named = " or ".join(f"{', '.join(e.inputs)}" + (f" ({e.anatomy})" if len(takes) > 1 else "") for e in takes)
    raise InputError(f"imaging-differentiation maps compare sequences with each other: give at least two of "
                     f"{named or 'its sequences'} (got {', '.join(inputs) or 'none'})")


def _check(inputs: Mapping[str, Volume], entry: WeightsEntry) -> None:
    check_taken(inputs, entry)
    if len(inputs) < 2:
        raise InputError(f"imaging-differentiation maps compare sequences with each other: give at least two of "
                         f"{', '.join(entry.inputs)} (got {', '.join(inputs) or 'none'})")


def case_differentiation_maps(inputs: Mapping[str, Volume], model: str = "seq2seq", *,
                              reference: str | None = None, register: str = "rigid", device: str = "auto",
                              anatomy: str | None = None, progress: Progress | None = None,
                              weights_folder: str | Path | None = None,
                              input_names: Mapping[str, str] | None = None) -> DifferentiationMaps:
    """M_d(X_i) for every sequence in ``inputs`` ({canonical sequence: Volume}, at least two), made with the
    bundled any-to-any ``model``; ``progress(fraction, message)`` returning False cancels (nothing is
    returned then)."""
    started = time.perf_counter()
    if register not in PRESETS:
        raise InputError(f"unknown registration preset '{register}'; use one of {', '.join(PRESETS)}")
    inputs = canonical_keys(inputs)  # aliases as the command line takes them
    reference = canonical(reference) if reference else reference
    if len(inputs) < 2:  # before choosing weights: which anatomy it is matters to no single sequence
        _too_few(inputs, model, anatomy, weights_folder)
    entry = any_to_any_entry(model, anatomy, tuple(inputs), weights_folder)
    _check(inputs, entry)
    inputs = model_frames(inputs, entry.frames, entry.model, whole=entry.series)
    reference = reference or default_reference(inputs)
    if reference not in inputs:
        raise InputError(f"reference sequence {reference} is not among the inputs ({', '.join(inputs)})")
    torch_device = choose_device(device)
    net = load_model(entry, weights_folder, torch_device)
    order = tuple(inputs)
    # registration reports into [0, 0.3] of the whole, as in synthesize; the translations share [0.3, 0.95]
    prepared = prepare(inputs, order, reference, register, entry.voxel_size_mm, progress, entry.normalization,
                       entry.foreground, orientation=entry.orientation, joint=False)
    normalised, offset = {}, 0
    for name in order:  # ``stacked`` holds every frame of every input, in ``order``
        count = frames_of(inputs[name]).shape[0]
        block = prepared.stacked[offset:offset + count]
        normalised[name] = block if inputs[name].is_series else block[0]
        offset += count

    # each pair where both have data (as the ranking scores a folder case's pairs), not only where all do
    inside = prepared.inside
    shared = {(source, target): prepared.mask & inside[source] & inside[target]
              for target in order for source in order if source != target}
    pairs = [pair for pair, region in shared.items() if region.any()]
    if not pairs:
        raise InputError("no two of the sequences' fields of view share tissue: nothing to translate")
    disjoint = [f"{source} and {target}" for (source, target), region in shared.items()
                if not region.any() and source < target]
    translate = translator(entry, net, torch_device)
    predictions, translations = {}, []
    for k, (source, target) in enumerate(pairs):
        start, end = 0.3 + 0.65 * k / len(pairs), 0.3 + 0.65 * (k + 1) / len(pairs)
        report_progress(progress, start, f"translating {source} -> {target}")
        predictions[(source, target)] = translate(normalised, source, target, stage_progress(progress, start, end))
        scores = score_pair(normalised[target], predictions[(source, target)], shared[(source, target)],
                            lpips_backbone=None)
        translations.append({"source": source, "target": target, "psnr": scores["psnr"], "ssim": scores["ssim"]})

    warnings = coverage_warnings(prepared, per_pair=True)
    if register == "none":
        warnings += alignment_warnings(inputs, reference, prepared.fixed, body_points(prepared.body, prepared.work),
                                       stage_progress(progress, 0.95, 0.96))
    report_progress(progress, 0.96, "imaging-differentiation maps")
    work = prepared.work
    maps, on_work, means = {}, {}, {}
    for name, array in differentiation_maps(normalised, predictions, prepared.mask, inside).items():
        on_work_map = Volume(array, work.spacing, work.origin, work.direction)
        maps[name] = resample_to(on_work_map, prepared.fixed) if work is not prepared.fixed else on_work_map
        anatomy_image = normalised[name].mean(0) if normalised[name].ndim == 4 else normalised[name]
        on_work[name] = (anatomy_image, array)
        sources = [src for (src, tgt) in predictions if tgt == name]
        means[name] = float(array[differentiation_region(name, sources, prepared.mask, inside)].mean())
    if disjoint:
        warnings.append(f"no field of view shared, so neither translated into the other: {', '.join(disjoint)}")
    provenance = {
        "model": entry.model, "configuration": entry.config, "weights": entry.file, "weights_sha256": entry.sha256,
        "inputs": dict(input_names) if input_names else {n: f"in-memory {n}" for n in inputs},
        "reference": reference, "registration": register, "device": str(torch_device),
        "work_voxel_size_mm": entry.voxel_size_mm,
        "input_coverage": {n: round(share, 4) for n, share in prepared.coverage.items()},
        "synthesized_share": round(prepared.covered_share, 4),
        "warnings": warnings,
        "map": "M_d(X_i) = mean over j != i of |X'_{j->i} - X_i| (Seq2Seq Eq. 5)",
        "units": f"mean absolute difference of {entry.normalization}-normalised intensities"
                 + (" ([-1, 1] scale)" if entry.normalization == "percentile" else " (foreground SD units)"),
        "package_version": __version__, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 2), "notice": RESEARCH_USE_NOTICE,
    }
    report_progress(progress, 1.0, "done")
    return DifferentiationMaps(maps, translations, provenance, prepared.registrations, means, on_work, work)
