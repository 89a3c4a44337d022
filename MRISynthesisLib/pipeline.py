"""``synthesize``: the product's main job, shared by the CLI, the Slicer module and the tests.

Steps, each with the reason it is there:

1. **Check** the inputs against the bundled model's needs (missing or extra sequences, 3D, finite, not
   constant), before any slow work. A 4D series (DWI, DCE) is reduced to the frame the model was
   trained on (the manifest entry's ``frames``), or kept whole for a model that takes whole series
   (``series``: Seq2Seq breast), which also makes a series target frame by frame.
2. **Register** every input onto the reference sequence (T1 by default, else the input with the finest
   voxels) with the chosen preset: the models need voxel-aligned inputs.
3. **Work grid**: the model was trained at one voxel size (in its manifest entry); every input is
   resampled, in one interpolation with its registration transform, onto an isotropic grid of that size
   covering the reference's field of view, and the prediction is resampled back onto the reference grid.
   A network sees anatomy in voxels, so a 1 mm volume fed to a 2 mm model would look twice too big.
4. **Normalise** as in training (each input by its own foreground statistics), **predict** (3D patches
   with Gaussian blending, or slices), and **map back**: the output is expressed in the reference
   input's intensity scale (the reference's foreground mean and SD), since the target's own scale is
   unknown when the target is missing. Outside the (slightly dilated) head or body mask the output is 0.
5. With a real target: metrics (SSIM, PSNR, NMSE, MAE inside the foreground, on volumes each z-scored by
   their own foreground statistics, as the papers compare normalised images) and the colour error map.

Inputs are never modified; the result carries provenance (model, configuration, weights sha256, inputs,
version, time, "research use only").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from scipy import ndimage

from . import RESEARCH_USE_NOTICE, __version__
from .errors import InputError
from .inference import Cancelled, choose_device
from .inputs import MIN_SIGNAL_VOXELS, check_volume, model_frames, same_images
from .predictors import plan_for, run_plan
from .preprocess import (Normalization, air_level, coverage_on, foreground_mask, is_magnitude, mask_image, outlying,
                         resample_to)
from .registration import PRESETS, register as run_registration
from .sequences import canonical, canonical_keys
from .volume import Volume
from .weights import WeightsEntry, find, load_model

Progress = Callable[[float, str], "bool | None"]


@dataclass
class SynthesisResult:
    """The synthesized sequence on the reference grid, and how it was made."""

    target: str
    volume: Volume
    provenance: dict
    registrations: dict[str, dict] = field(default_factory=dict)
    metrics: dict | None = None
    error_map: "object | None" = None
    real: Volume | None = None  # the real target registered onto the reference grid, when one was given


def stage_progress(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A progress callback for one stage that reports into [start, end] of the whole."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


def report_progress(progress: Progress | None, fraction: float, message: str) -> None:
    """Report to ``progress``; a callback that returns False cancels the work (:class:`Cancelled`)."""
    if progress is not None and progress(fraction, message) is False:
        raise Cancelled(message)


def check_inputs(inputs: Mapping[str, Volume], entry: WeightsEntry, target: str) -> None:
    """The model can make ``target`` from these inputs: all of its inputs (a fixed-input model), or any
    non-empty subset of its sequences without the target (an any-to-any model such as Seq2Seq)."""
    if target not in entry.targets:
        raise InputError(f"{entry.model} ({entry.key}) cannot produce {target}; it produces {', '.join(entry.targets)}")
    check_taken(inputs, entry)
    if set(entry.inputs) == set(entry.targets):
        if target in inputs:
            raise InputError(f"{target} is both an input and the target; give the real {target} for evaluation "
                             "(--real) instead")
        if not inputs:
            raise InputError(f"{entry.model} needs at least one of {', '.join(s for s in entry.inputs if s != target)}")
    else:
        missing = [s for s in entry.inputs if s not in inputs]
        if missing:
            raise InputError(f"{entry.model} needs {', '.join(entry.inputs)}; missing: {', '.join(missing)}")


def check_distinct(volumes: Mapping[str, Volume]) -> None:
    """No two of ``volumes`` are the same image (one file or node given for two sequences, or as the real
    target too): the model would be fed, or scored against, something that is not what it is told."""
    pairs = same_images(volumes)
    if pairs:
        raise InputError("; ".join(f"{first} and {second} are the same image" for first, second in pairs) +
                         ": each needs its own acquisition")


def check_taken(inputs: Mapping[str, Volume], entry: WeightsEntry) -> None:
    """Every input is a sequence the model takes, and a usable volume (3D or a series, finite, not empty)."""
    extra = [s for s in inputs if s not in entry.inputs]
    if extra:
        raise InputError(f"{entry.model} ({entry.key}) does not take {', '.join(extra)}; it takes {', '.join(entry.inputs)}")
    for name, volume in inputs.items():
        check_volume(volume, name, name)


_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def direction_of(codes: str) -> np.ndarray:
    """The 3 x 3 direction (columns in this package's LPS space) of nibabel axis codes: ``RAS`` has voxel axes
    toward the patient's right, anterior and superior (the brain phantom's, and most NIfTI files'),
    ``LPS`` toward left, posterior and superior (the breast phantom's, DICOM's)."""
    from nibabel.orientations import axcodes2ornt

    orientation = axcodes2ornt(tuple(codes))
    ras = np.zeros((3, 3))
    for axis, (world, sign) in enumerate(orientation):
        ras[int(world), axis] = sign
    return _LPS_TO_RAS @ ras


def reoriented(direction: np.ndarray, codes: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """The axes of ``direction`` (3 x 3, columns in LPS) permuted and flipped to be closest to ``codes``'s,
    and for each new axis the old one it is: a sagittal, coronal or flipped acquisition is then sliced and
    mirrored as the training data were (nibabel's ``io_orientation`` resolves oblique axes to their nearest
    anatomical direction)."""
    from nibabel.orientations import io_orientation

    ras = _LPS_TO_RAS @ np.asarray(direction, float)
    affine = np.eye(4)
    affine[:3, :3] = ras
    have = io_orientation(affine)  # per voxel axis: (RAS world axis, sign)
    want = _LPS_TO_RAS @ direction_of(codes)
    order, columns = [], []
    for axis in range(3):
        world = int(np.flatnonzero(want[:, axis])[0])
        old = int(np.flatnonzero(have[:, 0] == world)[0])
        order.append(old)
        columns.append(ras[:, old] * have[old, 1] * want[world, axis])
    return _LPS_TO_RAS @ np.stack(columns, axis=1), tuple(order)


def work_grid(reference: Volume, voxel_mm: float, orientation: str | None = None) -> Volume:
    """The isotropic ``voxel_mm`` grid a model runs on: ``reference``'s field of view, centred where it is,
    with its axes in the model's training ``orientation`` (axis codes, :func:`reoriented`; None: the
    reference's own, for weights that do not record theirs); ``reference`` itself when it already has that
    voxel size and orientation."""
    if reference.is_series:  # the grid of its frames
        reference = reference.frame(0)
    if orientation is None:
        direction, order = reference.direction_matrix, (0, 1, 2)
    else:
        direction, order = reoriented(reference.direction_matrix, orientation)
    spacing = np.asarray(reference.spacing)
    if np.allclose(spacing, voxel_mm, rtol=0.02) and np.allclose(direction, reference.direction_matrix):
        return reference
    sizes = np.asarray(reference.size_xyz)
    extent = (sizes * spacing)[list(order)]
    size = np.maximum(np.round(extent / voxel_mm).astype(int), 8)
    centre = np.asarray(reference.origin) + reference.direction_matrix @ ((sizes - 1) * spacing / 2)
    origin = centre - direction @ ((size - 1) * voxel_mm / 2)
    return Volume(np.zeros(tuple(size[::-1]), np.float32), (voxel_mm,) * 3, tuple(origin), tuple(direction.ravel()))


def require_overlap(aligned: Volume, name: str, reference: str, register: str) -> Volume:
    """``aligned`` (a volume moved onto the reference grid), unless none of it landed there.

    Then its header places it elsewhere than the reference (another patient position, a wrong origin),
    and every later step would fail on an empty image with a message that does not say why.
    """
    if np.ptp(aligned.array) == 0:
        raise InputError(f"{name} does not overlap the field of view of {reference} (registration: {register}); "
                         "their headers place them apart: register them, or check their origins and orientations")
    return aligned


@dataclass
class Prepared:
    """Inputs registered, on the model's work grid and normalised: what a predictor consumes."""

    fixed: Volume  # the reference input (a series: its first frame): the grid of the output
    reference: str
    work: Volume  # the grid the model runs on
    stacked: np.ndarray  # (channels, z, y, x) in the model's input order (a series: every frame), normalised
    mask: np.ndarray  # foreground on the work grid, by the model's method: where it was normalised
    scale: Normalization  # the reference's normalisation, inverted to express the output
    registrations: dict[str, dict]
    body: np.ndarray  # tissue against air on the work grid: outside it the output is zero
    covered: np.ndarray  # where every input has data (inside all their fields of view): outside, no output
    coverage: dict[str, float]  # per input, the share of the body inside its field of view
    covered_share: float  # the share of the body inside every input's field of view: what is synthesized
    inside: dict[str, np.ndarray] = field(default_factory=dict)  # per input, its field of view on the work grid
    channels: dict[str, slice] = field(default_factory=dict)  # per input, its channels (frames) in ``stacked``


def normalization_for(scheme: str, array: np.ndarray, mask: np.ndarray) -> Normalization:
    """The model's training normalisation (``zscore`` or ``percentile``, as ``training.data.normalize``)."""
    if scheme == "zscore":
        return Normalization.zscore(array, mask)
    if scheme == "percentile":
        return Normalization.percentile(array, mask, lower=0, upper=99, upper_factor=2.0)
    raise InputError(f"unknown normalisation '{scheme}' in the weights manifest")


def align(fixed: Volume, moving: Volume, register: str, name: str, grid: Volume | None = None, *,
          coverage: bool = True) -> tuple[Volume, dict, np.ndarray | None]:
    """``moving`` registered onto the 3D ``fixed`` volume and resampled onto ``grid`` (default: ``fixed``'s
    own grid), the registration's summary, and which voxels of the grid lie inside ``moving``'s field of
    view once moved (elsewhere the resampled values are a fill of 0, not tissue; None unless ``coverage``:
    moving the mark onto a 512 x 512 x 300 fixed grid costs three copies of it).

    The transform is estimated against ``fixed``; the moving volume is then interpolated once, straight
    onto ``grid`` (the model's work grid), rather than onto the fixed grid and again onto the work grid:
    one interpolation blurs less, and a 1 mm series is never held whole at 1 mm. A 4D series moves as one
    acquisition: the transform is estimated on the mean of its frames (which shows the anatomy of all of
    them) and applied to every frame, so the frames stay aligned with each other.
    """
    result = registration_onto(fixed, moving, register, name)
    return moved(result, moving, grid), result.summary(), result.coverage(moving, grid=grid) if coverage else None


def moved(result, moving: Volume, grid: Volume | None = None) -> Volume:
    """``moving`` on ``grid`` (default the fixed grid) by the registration ``result`` estimated for it by
    :func:`registration_onto`: a 3D volume on the fixed grid is the registration's own output."""
    if not moving.is_series and (grid is None or grid is result.fixed_grid):
        return result.registered
    return result.apply(moving, grid=grid)


def registration_onto(fixed: Volume, moving: Volume, register: str, name: str):
    """The registration of ``moving`` onto the 3D ``fixed`` volume (a ``registration.Registration``, whose
    ``apply`` moves any volume of the same acquisition alike); a series by the mean of its frames."""
    if moving.is_series:
        moving = moving.frame(0).with_array(moving.array.mean(axis=0))
    return run_registration(fixed, moving, register, name=name)


def frames_of(volume: Volume) -> np.ndarray:
    """A volume's array as (frames, z, y, x): one frame for a 3D volume."""
    return volume.array if volume.is_series else volume.array[None]


Aligner = Callable[[Volume, Volume, str, str, Volume], tuple[Volume, dict, "np.ndarray | None"]]

#: an input covering less of the body than this gets a warning in the provenance
FULL_COVERAGE = 0.99


def onto_grid(inputs: Mapping[str, Volume], order: tuple[str, ...], reference: str, register: str, grid: Volume,
              progress: Progress | None = None,
              aligner: Aligner = align) -> tuple[dict[str, Volume], dict[str, dict], dict[str, np.ndarray]]:
    """Every input of ``order`` on ``grid`` in one interpolation: the reference resampled, each other input
    registered onto the reference (its first frame for a series) and moved with that transform; their
    registration summaries; and for every input, the reference included, which voxels of ``grid`` lie inside
    its field of view. An input that lands nowhere on the grid is refused (:func:`require_overlap`)."""
    given = inputs[reference]
    fixed = given.frame(0) if given.is_series else given
    on_grid, registrations, inside = {}, {}, {}
    for i, name in enumerate(order):
        report_progress(progress, i / len(order),
                        f"resampling {name}" if name == reference else f"registering {name} to {reference}")
        if name == reference:
            on_grid[name], inside[name] = resample_to(given, grid), coverage_on(given, grid)
        else:
            on_grid[name], registrations[name], inside[name] = aligner(fixed, inputs[name], register, name, grid)
        require_overlap(on_grid[name], name, reference, register)
    if reference not in inside:  # an any-to-any model's reference need not be one of its inputs
        inside[reference] = coverage_on(given, grid)
    return on_grid, registrations, inside


def prepare(inputs: Mapping[str, Volume], order: tuple[str, ...], reference: str, register: str, voxel_size_mm: float,
            progress: Progress | None = None, normalization: str = "zscore", foreground: str = "body",
            aligner: Aligner = align, orientation: str | None = None, joint: bool = True) -> Prepared:
    """Register every input onto the reference, move all to the work grid (in the model's training
    ``orientation``, :func:`work_grid`), normalise (steps 2-4).

    ``foreground`` is the mask the normalisation's statistics come from, as the model was trained;
    the output is blanked outside the body (tissue against air) whatever the model's method. An input
    whose field of view ends inside the reference's (a slab FLAIR, a partial-coverage DWI) is normalised
    by the tissue it shows, not by the zeros filled in where it has no data, and the output is left blank
    where any input has none: a network fed zeros as tissue would draw something there. A series is
    normalised as one (the same statistics for all its frames, as ``training.data.normalize_case``) and
    enters ``stacked`` frame by frame. ``aligner`` does the registration (:func:`align`'s signature): an
    evaluation over many targets passes one that remembers what it registered. ``joint=False`` (maps that
    score each pair of sequences where both have data) lets inputs whose fields of view share no tissue through.
    """
    given = inputs[reference]
    fixed = given.frame(0) if given.is_series else given
    work = work_grid(fixed, voxel_size_mm, orientation)
    on_work, registrations, inside = onto_grid(inputs, order, reference, register, work,
                                               stage_progress(progress, 0.0, 0.3), aligner)
    frames = {n: frames_of(v) for n, v in on_work.items()}
    # the mask as training draws it (``training.data.normalize_case``), whatever scale each input is stored at
    joint_image = mask_image([a.mean(axis=0) for a in frames.values()], [inside[n] for n in frames])
    mask = foreground_mask(joint_image, method=foreground)
    body = mask if foreground == "body" else foreground_mask(joint_image)
    covered = np.logical_and.reduce([inside[n] for n in order])
    coverage = {n: share_of(body, inside[n]) for n in order}
    for name in order:
        if coverage[name] == 0.0:
            raise InputError(f"{name} covers none of the tissue of {reference}: its field of view lies outside "
                             "the anatomy")
    if joint and not (body & covered).any():
        partial = [n for n in order if coverage[n] < 1.0]
        raise InputError(f"the fields of view of {' and '.join(partial)} share no part of the anatomy: nothing can "
                         "be synthesized where any input has no data")

    def normalization_of(name: str, array: np.ndarray) -> Normalization:
        region = mask & inside[name]
        if not region.any():  # the body holds some of it (above), Otsu's foreground none
            raise InputError(f"{name} covers none of the foreground of {reference} that the model's "
                             "normalisation is measured in: its field of view lies outside it")
        return normalization_for(normalization, array, np.broadcast_to(region, array.shape))
    norms = {n: normalization_of(n, a) for n, a in frames.items()}
    stacked = np.concatenate([norms[n].apply(frames[n]) for n in order])
    scale = (norms[reference] if reference in norms else
             normalization_of(reference, frames_of(resample_to(given, work))))
    starts = np.cumsum([0] + [frames[n].shape[0] for n in order])
    channels = {n: slice(int(a), int(b)) for n, a, b in zip(order, starts[:-1], starts[1:])}
    return Prepared(fixed, reference, work, stacked, mask, scale, registrations, body, covered, coverage,
                    share_of(body, covered), inside, channels)


def share_of(body: np.ndarray, inside: np.ndarray) -> float:
    """The share of the body's voxels that lie ``inside`` a field of view."""
    return float(np.count_nonzero(body & inside) / max(np.count_nonzero(body), 1))


def coverage_warnings(prepared: Prepared, *, per_pair: bool = False) -> list[str]:
    """One line per input that leaves part of the body without data, and one for what they leave together
    when that is less than any one of them does, for the provenance and the user. ``per_pair``: for maps that
    compare each pair of inputs where both have data (what the inputs leave together does not matter)."""
    where = f"of the head or body in {prepared.reference}'s field of view"
    outcome = ("a pair of sequences is compared only where both have data" if per_pair else
               "the synthesized volume is blank where an input has no data")
    lines = [f"{name} covers {100 * share:.0f} % {where}: {outcome}"
             for name, share in prepared.coverage.items() if share < FULL_COVERAGE]
    if not per_pair and prepared.covered_share < min(prepared.coverage.values()) - 0.005:
        lines.append(f"together the inputs cover {100 * prepared.covered_share:.0f} % {where}: only that part is "
                     "synthesized")
    return lines


def body_points(body: np.ndarray, grid: Volume, max_points: int = 20000) -> np.ndarray:
    """LPS millimetres of (at most about ``max_points`` of) the voxels of ``body`` on ``grid``."""
    index = np.argwhere(body)[:, ::-1]  # (x, y, z) voxel indices
    index = index[:: max(1, len(index) // max_points)]
    affine = grid.index_to_physical()
    return index @ affine[:3, :3].T + affine[:3, 3]


#: what registration 'none' does with a misaligned volume, by its role
MISALIGNED_INPUT = "the inputs are taken as aligned already"
MISALIGNED_REAL = "its misalignment counts as synthesis error in the metrics and the error map"
MISALIGNED_IN_CASE = ("it is taken as aligned: its misalignment spoils every synthesis it is an input to and counts as "
                      "synthesis error where it is the real target")


def alignment_warnings(volumes: Mapping[str, Volume], reference: str, fixed: Volume, points: np.ndarray,
                       progress: Progress | None = None, *, real: str | None = None,
                       consequence: str = MISALIGNED_INPUT) -> list[str]:
    """One line per volume that does not look aligned with ``fixed`` (the ``reference`` sequence), for
    volumes the user said were (registration ``none``): a network fed misaligned sequences draws edges twice
    and lesions where they are not, with nothing else to tell the user why
    (:func:`registration.check_alignment`). ``real``: the key of a real target among ``volumes``, whose
    misalignment would count as synthesis error; ``consequence``: what it means for the others. A volume
    whose field of view shares no voxel with the reference's is left to the pipeline, which refuses it."""
    from .registration import check_alignment

    names = [n for n in volumes if n != reference]
    lines = []
    for k, name in enumerate(names):
        shown = f"the real {real}" if name == "real target" and real else name
        report_progress(progress, k / len(names), f"checking that {shown} is aligned with {reference}")
        given = volumes[name]
        if not coverage_on(given.frame(0) if given.is_series else given, fixed).any():
            continue
        check = check_alignment(fixed, given, points)
        if check is None or not check.misaligned:
            continue
        effect = MISALIGNED_REAL if shown != name else consequence
        lines.append(f"{shown} does not look aligned with {reference}: a quick rigid registration moves most of the "
                     f"anatomy by up to {check.offset_mm:.1f} mm and raises their mutual information by "
                     f"{100 * check.information_gain:.0f} %, but with registration 'none' {effect}; "
                     "register them (rigid) unless they are aligned")
    return lines


def mirror_warnings(prepared: Prepared) -> list[str]:
    """One line per input that looks mirrored against the reference on the work grid, registered or not
    (:func:`registration.check_mirroring`; a series by the mean of its frames): a flipped axis in a header is
    what no registration puts right, and the network would be fed anatomy on the wrong side."""
    from .registration import check_mirroring

    if prepared.reference not in prepared.channels:
        return []
    work = prepared.work

    def on_work(name: str) -> Volume:
        return Volume(prepared.stacked[prepared.channels[name]].mean(axis=0), work.spacing, work.origin, work.direction)
    fixed, lines = on_work(prepared.reference), []
    for name in prepared.channels:
        if name == prepared.reference:
            continue
        check = check_mirroring(fixed, on_work(name), prepared.body & prepared.inside.get(name, prepared.body))
        if check is not None and check.mirrored:
            lines.append(f"{name} looks mirrored {check.axis} against {prepared.reference}: flipped back, it shares "
                         f"{100 * check.information_gain:.0f} % more information with it; check the orientation "
                         "in its file's header (no registration undoes a mirror)")
    return lines


def case_alignment_warnings(volumes: Mapping[str, Volume], reference: str | None = None,
                            progress: Progress | None = None, *, consequence: str = MISALIGNED_INPUT) -> list[str]:
    """:func:`alignment_warnings` for a whole case, once (batch and compare synthesize several targets of
    one case): every sequence against the reference's own body. ``compare`` passes
    :data:`MISALIGNED_IN_CASE`: there every sequence is an input and a real target."""
    reference = reference or default_reference(volumes)
    given = volumes[reference]
    fixed = given.frame(0) if given.is_series else given
    return alignment_warnings(volumes, reference, fixed, body_points(foreground_mask(fixed), fixed), progress,
                              consequence=consequence)


def finish(prepared: Prepared, predicted: np.ndarray) -> Volume:
    """A normalised prediction ((z, y, x), or (frames, z, y, x) for a series target) on the work grid ->
    the reference's intensity scale and grid, body only, never below the reference's own floor.

    MR magnitudes are non-negative, but undoing a z-score gives ``mean - 5 SD`` (negative for most
    images) wherever the model predicts background inside the dilated body: those voxels are air, 0.
    Inputs already normalised (z-scored, as many BraTS-style datasets are) or shifted have negative
    intensities: there the floor is the reference's own low end (its 0.1st percentile, so that one padding
    voxel does not lift the clamp), else most of the brain would be clipped away, and air outside the body
    takes the reference's air level (``preprocess.air_level``: 0 for BraTS-style z-scores, the image minimum
    for a shifted one, below 0 for a whole-image z-score). A magnitude image with a few negative voxels
    from another tool's interpolation is still a magnitude image (``preprocess.is_magnitude``)."""
    reference = prepared.fixed.array
    if is_magnitude(reference):
        floor = air = 0.0
    else:
        floor, air = float(np.percentile(reference, 0.1)), air_level(reference)
    head = ndimage.binary_dilation(prepared.body, iterations=2) & prepared.covered
    values = np.where(head, np.maximum(prepared.scale.invert(predicted), floor), air).astype(np.float32)
    work = prepared.work
    synth = Volume(values, work.spacing, work.origin, work.direction)
    if work is prepared.fixed:
        return synth
    synth = resample_to(synth, prepared.fixed)
    region = synthesized_region(prepared)
    if region is None:
        return synth
    # interpolation would smear the blank edge of an input's field of view by a voxel into the output
    return synth.with_array(np.where(region, synth.array, air).astype(np.float32))


def synthesized_region(prepared: Prepared) -> np.ndarray | None:
    """Where the output was synthesized, on its grid (the reference's): :attr:`Prepared.covered` there; None
    when every input covers the whole grid, so that callers skip the masking."""
    if prepared.covered.all():
        return None
    work = prepared.work
    if work is prepared.fixed:
        return prepared.covered
    mark = Volume(prepared.covered.astype(np.float32), work.spacing, work.origin, work.direction)
    return resample_to(mark, prepared.fixed, interpolation="nearest").array > 0.5


def default_reference(inputs: Mapping[str, Volume]) -> str:
    """T1 when given (the usual anatomical reference), else the 3D input with the finest voxels, else the
    finest series: the output is made on the reference's grid, so a coarse DWI makes a poor one."""
    if "T1" in inputs:
        return "T1"
    return min(inputs, key=lambda name: (inputs[name].is_series, float(np.prod(inputs[name].spacing))))


def synthesize(inputs: Mapping[str, Volume], target: str, model: str = "unet-ct1", *, reference: str | None = None,
               register: str = "rigid", real: Volume | None = None, device: str = "auto", anatomy: str | None = None,
               progress: Progress | None = None, weights_folder: str | Path | None = None,
               input_names: Mapping[str, str] | None = None, phases: int | None = None,
               mirror: bool = False, check_alignment: bool = True) -> SynthesisResult:
    """Synthesize ``target`` from ``inputs`` ({sequence: Volume}; names as the CLI takes them, ``t1c`` or
    ``T1Gd`` for T1ce) with a bundled ``model``.

    ``phases``: the frames of a 4D series target (a model with ``series`` in its manifest entry); default
    the real series' count when ``real`` is given, else the manifest's. ``mirror``: test-time mirroring
    (:func:`.predictors.mirrored`), twice the inference time for a few tenths of a dB. ``check_alignment``:
    with registration ``none``, warn of inputs (and ``real``) that do not look aligned
    (:func:`alignment_warnings`, about a second each); callers that synthesize several targets of one case
    check it once instead (:func:`case_alignment_warnings`).
    """
    started = time.perf_counter()
    if register not in PRESETS:
        raise InputError(f"unknown registration preset '{register}'; use one of {', '.join(PRESETS)}")
    inputs, target = canonical_keys(inputs), canonical(target)
    reference = canonical(reference) if reference else reference
    entry = find(model, target, anatomy, weights_folder, available=tuple(inputs))
    check_inputs(inputs, entry, target)
    check_distinct({**inputs, **({f"real {target}": real} if real is not None else {})})
    inputs = model_frames(inputs, entry.frames, entry.model, whole=entry.series)
    reference = reference or default_reference(inputs)
    if reference not in inputs:
        raise InputError(f"reference sequence {reference} is not among the inputs ({', '.join(inputs)})")
    if real is not None and target in entry.series:
        if not real.is_series:
            raise InputError(f"the real {target} must be a 4D series to compare with the synthesized one, "
                             "but it is a 3D volume")
        if phases is not None and phases != real.shape[0]:
            raise InputError(f"{phases} frames of {target} asked for, but the real series to compare with has "
                             f"{real.shape[0]}")
        phases = real.shape[0]  # make as many frames as the real series has
    torch_device = choose_device(device)
    net = load_model(entry, weights_folder, torch_device)
    plan = plan_for(entry, net, target, tuple(inputs), phases)
    prepared = prepare(inputs, plan.order, reference, register, entry.voxel_size_mm, progress, entry.normalization,
                       entry.foreground, orientation=entry.orientation)

    predicted = run_plan(plan, prepared.stacked, torch_device, stage_progress(progress, 0.3, 0.95), mirror=mirror)
    synth = finish(prepared, predicted)
    if real is not None and synth.is_series:  # the frames stand for the real series' (times, b-values)
        synth = Volume.adopting(synth.array, synth.spacing, synth.origin, synth.direction, real.frames)
    warnings = coverage_warnings(prepared) + mirror_warnings(prepared)  # each synthesis: a second per input
    if register == "none" and check_alignment:
        checked = {**{n: inputs[n] for n in plan.order}, **({"real target": real} if real is not None else {})}
        warnings += alignment_warnings(checked, reference, prepared.fixed, body_points(prepared.body, prepared.work),
                                       stage_progress(progress, 0.95, 0.97), real=target)
    report_progress(progress, 0.97, "synthesis done")

    provenance = {
        "model": entry.model, "configuration": entry.config, "weights": entry.file, "weights_sha256": entry.sha256,
        "inputs": dict(input_names) if input_names else {n: f"in-memory {n}" for n in inputs},
        "target": target, "reference": reference, "registration": register, "device": str(torch_device),
        "work_voxel_size_mm": entry.voxel_size_mm, "test_time_mirroring": mirror, "intensity_scale": f"the reference ({reference}) foreground mean/SD",
        "input_coverage": {n: round(share, 4) for n, share in prepared.coverage.items()},
        "synthesized_share": round(prepared.covered_share, 4),
        "warnings": warnings,
        **({"frames": plan.phases} if plan.phases > 1 else {}),
        "package_version": __version__, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 2), "notice": RESEARCH_USE_NOTICE,
    }
    result = SynthesisResult(target, synth, provenance, prepared.registrations)
    if real is not None:
        report_progress(progress, 0.98, f"comparing with the real {target}")
        result.metrics, result.error_map, result.real = compare_to_real(
            synth, real, register=register, reference=prepared.fixed, registrations=result.registrations,
            region=synthesized_region(prepared))
        corrupt = result.metrics["outliers_left_out"]
        if corrupt:
            warnings.append(f"{corrupt} voxel{'s' if corrupt > 1 else ''} of the real {target} "
                            f"{'lie' if corrupt > 1 else 'lies'} far outside its intensity range (spikes or corrupt "
                            "voxels), left out of the metrics")
    report_progress(progress, 1.0, "done")
    return result


def compare_to_real(synth: Volume, real: Volume, *, register: str = "rigid", reference: Volume | None = None,
                    registrations: dict | None = None, region: np.ndarray | None = None) -> tuple[dict, object, Volume]:
    """Metrics, colour error map and the aligned real target, for ``synth`` against the acquired target.

    The real target is registered onto the reference (as the inputs were) before comparing, so its own
    acquisition's motion does not count as synthesis error. A series is compared frame by frame: its
    metrics are the means over frames (each frame's own under ``per_frame``) and its error map is a
    series with one colour scale for all frames. The real target's registration summary is added to
    ``registrations`` (under "real target") when given, as the inputs' are. ``region`` (on ``synth``'s
    grid): where it was synthesized (every input's field of view); metrics count only those voxels, and
    only those inside the real target's own field of view (a slab real is scored on its slab's tissue).
    """
    check_volume(real, "real target", "real target", series=synth.is_series)
    if synth.is_series and synth.shape[0] != real.shape[0]:
        raise InputError(f"the real target is a series of {real.shape[0]} frames but the synthesized one has "
                         f"{synth.shape[0]}")
    if reference is not None and register != "none":
        real, summary, real_inside = align(reference, real, register, "real")  # on the reference's grid, synth's
        if registrations is not None:
            registrations["real target"] = summary
    else:
        real_inside = coverage_on(real, synth.frame(0) if synth.is_series else synth)
    real_on_grid = require_overlap(resample_to(real, synth), "the real target", "the synthesized volume", register)
    # only where the real target has data: the zeros filled in around a slab are not tissue to score against
    region = real_inside if region is None else region & real_inside
    try:
        if not synth.is_series:
            metrics, errors = _compare_volumes(synth, real_on_grid, region=region)
            return metrics, errors, real_on_grid
        pairs = [(synth.frame(i), real_on_grid.frame(i)) for i in range(synth.shape[0])]
        scale = max(_compare_volumes(s, r, region=region)[1].max_error for s, r in pairs)
        compared = [_compare_volumes(s, r, max_error=scale, region=region) for s, r in pairs]
    except InputError as err:  # say which volume could not be compared: the user's real target
        raise InputError(f"the real target cannot be compared with the synthesized volume: {err}") from err
    metrics = _mean_over_frames([m for m, _ in compared])
    volume = Volume(np.stack([e.volume.array for _, e in compared]), synth.spacing, synth.origin, synth.direction,
                    synth.frames)
    return metrics, replace(compared[0][1], volume=volume), real_on_grid


def tissue_within(array: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The foreground of ``array`` drawn within the box around ``region`` (a field of view): around a slab,
    the zeros a resampler filled in would pull the threshold down to 0 and count the slab's air as tissue."""
    if region.all() or not region.any():
        return foreground_mask(array)
    box = ndimage.find_objects(region.astype(np.uint8))[0]
    mask = np.zeros(array.shape, bool)
    mask[box] = foreground_mask(array[box])
    return mask


def _compare_volumes(synth: Volume, real: Volume, max_error: float | None = None,
                     region: np.ndarray | None = None) -> tuple[dict, object]:
    """Metrics and error map of two 3D volumes on one grid, each z-scored by its own foreground (within
    ``region`` when given: where the synthesized volume was made). The real target's corrupt voxels
    (``preprocess.outlying``) are not scored: one voxel at 1000 times the tissue's brightness had set the
    data range and so PSNR (47 dB for a 21 dB synthesis); ``outliers_left_out`` counts them."""
    from .maps import error_map
    from .metrics import evaluate

    corrupt = outlying(real.array)
    mask = foreground_mask(real.array) if region is None else tissue_within(real.array, region)
    mask &= ~corrupt
    if region is not None:
        mask = mask & region
        if not mask.any():
            raise InputError("the real target's tissue lies wholly outside the inputs' fields of view: nothing to "
                             "compare")
    if mask.sum() < MIN_SIGNAL_VOXELS:
        raise InputError(f"only {int(mask.sum())} voxels of the real target's tissue lie where the output was "
                         f"synthesized (at least {MIN_SIGNAL_VOXELS} are needed to compare): check that it shows "
                         "the same anatomy as the inputs and that their headers place them together")
    real_z = Normalization.zscore(real.array, mask, clip=False).apply(real.array)
    synth_z = Normalization.zscore(synth.array, mask, clip=False).apply(synth.array)
    unscored = corrupt if region is None else corrupt | ~region
    if unscored.any():
        # as BraSyn scores a region: outside it both images hold the same constant, so the SSIM windows that
        # reach over its edge see one image there, not a real target's fill of zeros against synthesized tissue
        # (nor a corrupt voxel, which would also set the data range)
        real_z, synth_z = np.where(unscored, 0.0, real_z), np.where(unscored, 0.0, synth_z)
    metrics = {**evaluate(real_z, synth_z, mask=mask), "outliers_left_out": int(corrupt.sum())}
    errors = error_map(synth.with_array(real_z), synth.with_array(synth_z), mask=mask, max_error=max_error)
    # outside the head the two images differ only by what the pipeline masked away: show no error there
    head = ndimage.binary_dilation(mask, iterations=2)
    return metrics, replace(errors, volume=errors.volume.with_array(np.where(head, errors.volume.array, 0.0)))


def _mean_over_frames(frames: list[dict]) -> dict:
    """One metrics record for a series: every metric's statistics averaged over frames, and the frames'."""
    merged = {**frames[0], "per_frame": frames, "n_frames": len(frames)}
    merged["metrics"] = {name: {stat: float(np.mean([f["metrics"][name][stat] for f in frames]))
                                for stat in frames[0]["metrics"][name]}
                         for name in frames[0]["metrics"]}
    merged["n_voxels"] = int(sum(f["n_voxels"] for f in frames))
    merged["outliers_left_out"] = int(sum(f["outliers_left_out"] for f in frames))
    return merged
