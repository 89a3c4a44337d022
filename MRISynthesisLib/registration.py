"""Registration with ANTs (antspyx): presets, transforms kept and reusable, quality reported.

Presets (``PRESETS``): ``rigid`` and ``affine`` (Mattes mutual information), ``syn`` (affine then SyN
deformable, mutual information: how IMPORTANT-Net registers every sequence to T1, section 4.1) and
``none``. The reference (fixed) volume is the caller's choice; the pipeline uses T1.

``syn`` choices, measured on the phantom (whose sequences differ only by a rigid motion, so every
deformation is error): ANTsPy's stock ``SyN`` added ~1.6 mm of mean target registration error to the
affine stage, driven by the sequences' different bias fields and slice thicknesses. We therefore (1)
estimate the transform on N4-bias-corrected copies (the outputs are resampled from the untouched
volumes), (2) run a full ``Affine`` stage first and (3) regularise SyN more than the stock preset
(gradient step 0.1, update field sigma 4, total field sigma 3). That brings SyN to ~0.5 mm mean error
against ~0.1 mm for ``rigid``: use ``syn`` only where anatomy really deforms (breast, distortion).

ITK's convention throughout: the forward transform maps points of the fixed (reference) space to the
moving space, so resampling the moving volume through it puts it on the fixed grid. The phantom records
its true misalignment in the same convention, so the two compare directly.

A :class:`Registration` keeps the transforms as ANTs wrote them (``.mat`` affine, ``.nii.gz``
displacement fields) in its own folder, copied into ``out_dir`` when one is given, and can apply them to
other volumes: labels with nearest neighbour, 4D series frame by frame with the one transform.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError
from .volume import Volume

PRESETS = {"rigid": "Rigid", "affine": "Affine", "syn": "SyN", "none": None}
INTERPOLATORS = {"linear": "linear", "nearest": "nearestNeighbor", "bspline": "bSpline"}


def _ants():
    import ants  # imported lazily: antspyx takes a second to load and only registration needs it
    return ants


def to_ants(volume: Volume):
    """3D Volume -> ``ants.ANTsImage`` with identical origin, spacing and direction (both use LPS)."""
    volume.require_3d("registration input")
    array = np.ascontiguousarray(volume.array.transpose(2, 1, 0), dtype=np.float32)  # ANTs indexes (x, y, z)
    return _ants().from_numpy(array, origin=list(volume.origin), spacing=list(volume.spacing),
                              direction=volume.direction_matrix.copy())


def from_ants(image) -> Volume:
    """``ants.ANTsImage`` (3D, scalar) -> Volume with the same geometry."""
    if image.dimension != 3 or image.has_components:
        raise InputError(f"expected a 3D scalar ANTs image, not a {image.dimension}D one")
    array = image.numpy().transpose(2, 1, 0)
    return Volume(array, tuple(image.spacing), tuple(image.origin), tuple(np.asarray(image.direction).ravel()))


#: ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS as it was at this process's first ANTs registration: ANTs' ITK reads
#: it once, so a later request for a single thread would silently not be honoured.
_threads_at_first_use: list[str | None] = []


@contextlib.contextmanager
def _repeatable(seed: int | None, single_thread: bool) -> Iterator[None]:
    """Fix ANTs' sampling seed and its thread count for one call, then restore what was there."""
    config = _ants().config
    old_seed, old_threads = config._random_seed, os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    if single_thread and _threads_at_first_use and _threads_at_first_use[0] != "1":
        raise InputError("single-thread registration must be asked for before the first registration of the "
                         "process (ANTs fixes its thread count then): set ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 "
                         "before starting Python, or use a new process")
    try:
        if seed is not None:
            config._random_seed = int(seed)
        if single_thread:
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
        if not _threads_at_first_use:
            _threads_at_first_use.append(os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"))
        yield
    finally:
        config._random_seed = old_seed
        if old_threads is None:
            os.environ.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)
        else:
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = old_threads


def mutual_information(fixed: Volume, moving_on_fixed_grid: Volume, shrink: int = 2) -> float:
    """Mattes mutual information (nats, higher is better) of two volumes on one grid.

    Computed on the grid shrunk ``shrink`` times per axis by averaging (SimpleITK's BinShrink): the
    full-resolution metric costs ~10 % of a rigid registration at 1 mm, the shrunk one under 2 %, and
    the before/after comparison it serves is unchanged. ANTs reports the metric's value, which is the
    negated MI; we return MI itself. A constant image (a moving volume wholly outside the fixed field of
    view) shares no information with any other: 0, where ANTs would fail building its histogram; so does
    one whose data, resampled, covers a single plane of the grid (a volume overlapping by one slice), where
    ITK refuses the flat region's zero spacing.
    """
    def shrunk(volume: Volume) -> Volume:
        if shrink <= 1 or min(volume.spatial_shape) < 4 * shrink:
            return volume
        return Volume.from_sitk(sitk.BinShrink(volume.to_sitk(), [shrink] * 3))
    if np.ptp(fixed.array) == 0 or np.ptp(moving_on_fixed_grid.array) == 0:
        return 0.0
    try:
        return -float(_ants().image_mutual_information(to_ants(shrunk(fixed)), to_ants(shrunk(moving_on_fixed_grid))))
    except RuntimeError as err:
        if "spacing" not in str(err):
            raise
        return 0.0


@dataclass
class Registration:
    """The result of registering ``moving`` onto ``fixed``.

    Attributes:
        preset: ``rigid``, ``affine``, ``syn`` or ``none``.
        forward: transform files, fixed space -> moving space (ANTs order: the last is applied first).
        inverse: transform files, moving space -> fixed space (affines already inverted: apply as they are).
        registered: the moving volume resampled onto the fixed grid. ANTs presets return it anyway;
            ``none`` resamples only when it is first asked for, since a caller that wants another grid
            (the pipeline's coarser work grid) would otherwise pay a whole fixed-grid volume for nothing.
        mi_before / mi_after: mutual information with the fixed volume before (moving resampled onto
            the fixed grid as it lies) and after registration; None for ``none``, which estimates
            nothing and so does not load ANTs (seconds) to measure it.
        seconds: wall time of the registration itself.
    """

    preset: str
    fixed_grid: Volume
    forward: list[Path]
    inverse: list[Path]
    _registered: Volume | None
    mi_before: float | None
    mi_after: float | None
    seconds: float
    folder: Path
    _owned: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    _moving: Volume | None = field(default=None, repr=False)  # kept only while ``registered`` is unmade

    @property
    def registered(self) -> Volume:
        if self._registered is None:
            from .preprocess import resample_to
            self._registered, self._moving = resample_to(self._moving, self.fixed_grid), None
        return self._registered

    def apply(self, volume: Volume, *, grid: Volume | None = None, interpolation: str = "linear",
              default_value: float = 0.0) -> Volume:
        """Move another volume of the moving space (same acquisition) onto the fixed grid, or onto ``grid``
        (any grid in the fixed volume's physical space: the transforms are in millimetres).

        Moving straight onto a coarser ``grid`` interpolates once and never holds the moving volume at the
        fixed grid's resolution (300 MiB a frame at 512 x 512 x 300). Labels: ``interpolation='nearest'``
        keeps label values. A 4D series is moved frame by frame with the one transform (estimated on a
        representative frame by the caller), filling one preallocated array.
        """
        if interpolation not in INTERPOLATORS:
            raise InputError(f"unknown interpolation '{interpolation}'; use one of {', '.join(INTERPOLATORS)}")
        grid = self.fixed_grid if grid is None else grid
        if volume.is_series:
            out = np.empty((volume.shape[0], *grid.spatial_shape), np.float32)
            for i in range(volume.shape[0]):
                out[i] = self.apply(volume.frame(i), grid=grid, interpolation=interpolation,
                                    default_value=default_value).array
            return Volume.adopting(out, grid.spacing, grid.origin, grid.direction, volume.frames)
        if not self.forward:
            from .preprocess import resample_to
            return resample_to(volume, grid, interpolation=interpolation, default_value=default_value)
        ants = _ants()
        moved = ants.apply_transforms(to_ants(grid), to_ants(volume), [str(p) for p in self.forward],
                                      interpolator=INTERPOLATORS[interpolation], defaultvalue=default_value)
        return from_ants(moved)

    def coverage(self, volume: Volume, *, grid: Volume | None = None) -> np.ndarray:
        """Which voxels of ``grid`` (default the fixed grid) the moved ``volume`` has data for: inside its
        field of view once moved (:func:`preprocess.field_of_view`); elsewhere its resampled values are the
        fill value, not tissue."""
        from .preprocess import field_of_view
        return self.apply(field_of_view(volume), grid=grid, interpolation="nearest").array > 0.5

    def to_sitk(self) -> sitk.Transform:
        """The forward transform (fixed -> moving) in memory, as one SimpleITK transform."""
        return transform_from_files(self.forward)

    def inverse_to_sitk(self) -> sitk.Transform:
        """The inverse transform (moving -> fixed) in memory."""
        return transform_from_files(self.inverse)

    def linear_matrix(self) -> list[list[float]] | None:
        """The forward transform (a fixed-space point to its moving-space point, LPS millimetres) as a 4x4
        matrix when it is linear (rigid, affine); None for a deformable one or none at all."""
        if not self.forward or not all(str(p).endswith(".mat") for p in self.forward):
            return None
        transform = self.to_sitk()
        origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
        columns = [np.asarray(transform.TransformPoint(tuple(axis))) - origin for axis in np.eye(3)]
        matrix = np.eye(4)
        matrix[:3, :3] = np.stack(columns, axis=1)
        matrix[:3, 3] = origin
        return [[round(float(v), 6) for v in row] for row in matrix]

    def summary(self) -> dict:
        """What a report records. Transform files are listed only where they outlive this result (a
        caller's ``out_dir``); a temporary folder's are gone once it is, so a linear transform is recorded
        as its matrix instead."""
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 5)
        record = {"preset": self.preset, "mutual_information_before": rounded(self.mi_before),
                  "mutual_information_after": rounded(self.mi_after), "seconds": round(self.seconds, 3)}
        if self._owned is None:
            record.update(forward_transforms=[str(p) for p in self.forward],
                          inverse_transforms=[str(p) for p in self.inverse])
        elif self.forward:
            record["transform_files"] = "not kept (temporary); run `mri-synthesis register` to keep them"
        matrix = self.linear_matrix()
        if matrix is not None:
            record["fixed_to_moving_matrix_lps_mm"] = matrix
        return record


#: ANTs smooths each axis of the fixed image (and SyN of the moving one too) with a recursive Gaussian, which
#: needs at least 4 voxels along it
MIN_VOXELS_PER_AXIS = 4


def register(fixed: Volume, moving: Volume, preset: str = "rigid", *, seed: int | None = None,
             single_thread: bool = False, out_dir: str | Path | None = None, name: str = "moving") -> Registration:
    """Register ``moving`` onto ``fixed`` with an ANTs preset; inputs are never modified.

    Args:
        preset: ``rigid``, ``affine``, ``syn`` or ``none``.
        seed, single_thread: make ANTs' random sampling and multithreaded sums repeatable. ANTs fixes its
            thread count at its first use in a process, so ``single_thread`` must be asked for from the
            first registration on (the CLI's ``--single-thread`` does); later it raises rather than
            quietly running multithreaded.
        out_dir: keep the transform files there as ``<name>-forward-<k>`` / ``<name>-inverse-<k>``;
            otherwise they live in a temporary folder owned by the result.
    """
    if preset not in PRESETS:
        raise InputError(f"unknown registration preset '{preset}'; use one of {', '.join(PRESETS)}")
    if seed is not None and not 0 <= seed < 2 ** 31:  # ANTs keeps its sampling seed in a 32-bit signed int
        raise InputError(f"the registration seed must be from 0 to 2**31 - 1, not {seed}")
    fixed.require_3d("fixed volume").require_finite("fixed volume").require_not_constant("fixed volume")
    moving.require_3d("moving volume").require_finite("moving volume").require_not_constant("moving volume")
    if PRESETS[preset] is not None:
        # the fixed image is smoothed per axis for the metric at every preset; the moving one only by SyN
        for role, volume in (("fixed", fixed), *((("moving", moving),) if preset == "syn" else ())):
            if min(volume.spatial_shape) < MIN_VOXELS_PER_AXIS:
                raise InputError(f"the {role} volume has {min(volume.spatial_shape)} voxels along an axis "
                                 f"({'x'.join(map(str, volume.size_xyz))}); registration needs at least "
                                 f"{MIN_VOXELS_PER_AXIS} per axis (or leave the volumes unregistered: preset none)")
    from .preprocess import outliers_clipped, resample_to

    owned = None
    if out_dir is None:
        owned = tempfile.TemporaryDirectory(prefix="mri-synthesis-reg-")
        folder = Path(owned.name)
    else:
        folder = Path(out_dir)
        if not folder.is_dir():
            raise InputError(f"{folder}: output folder does not exist")
    if PRESETS[preset] is None:  # nothing to estimate, so ANTs (seconds to load) is not touched
        return Registration(preset, fixed, [], [], None, None, None, 0.0, folder, owned, _moving=moving)
    # estimated (and measured) on the images with corrupt voxels clipped; the untouched moving image is moved
    fixed_seen, moving_seen = outliers_clipped(fixed), outliers_clipped(moving)
    with _repeatable(seed, single_thread):  # from ANTs' first call on: it reads its thread count once
        as_is = resample_to(moving_seen, fixed)
        mi_before = mutual_information(fixed_seen, as_is)
        with tempfile.TemporaryDirectory(prefix="mri-synthesis-ants-") as work:
            start = time.perf_counter()
            result = _run_preset(to_ants(fixed_seen), to_ants(moving_seen), preset, Path(work),
                                 start_at_identity=fields_of_view_overlap(fixed, moving))
            seconds = time.perf_counter() - start
            mi_after = mutual_information(fixed_seen, from_ants(result["warpedmovout"]))
            if moving_seen is not moving:
                result["warpedmovout"] = _ants().apply_transforms(to_ants(fixed), to_ants(moving),
                                                                   result["fwdtransforms"])
            forward = _keep(result["fwdtransforms"], folder, f"{name}-forward")
            inverse = _keep(result["invtransforms"], folder, f"{name}-inverse", invert_affines=True)
        registered = from_ants(result["warpedmovout"])
    return Registration(preset, fixed, forward, inverse, registered, mi_before, mi_after, seconds, folder, owned)


#: the voxel size (mm) :func:`check_alignment` coarsens towards: about a second per input
OFFSET_CHECK_MM = 4.0
#: what makes an input taken as aligned look misaligned: moved this far (mm, 95th percentile over the anatomy)
#: by a registration that raises the mutual information by at least this share
MISALIGNED_OFFSET_MM = 4.0
MISALIGNED_INFORMATION_GAIN = 0.08


@dataclass(frozen=True)
class AlignmentCheck:
    """How far a quick rigid registration moves an input taken as aligned, and what it gains by it."""
    offset_mm: float  # 95th percentile, over the anatomy's points, of the displacement
    information_gain: float  # relative gain of mutual information with the fixed volume

    @property
    def misaligned(self) -> bool:
        return self.offset_mm > MISALIGNED_OFFSET_MM and self.information_gain > MISALIGNED_INFORMATION_GAIN


def check_alignment(fixed: Volume, moving: Volume, points_lps: np.ndarray) -> AlignmentCheck | None:
    """A check on inputs said to be aligned already (preset ``none``), not a registration: a rigid
    registration of the two on grids coarsened towards :data:`OFFSET_CHECK_MM` (a series by the mean of
    its frames), the 95th percentile over ``points_lps`` ((N, 3) LPS millimetres, the anatomy) of how far it
    moves them, and how much it raises the mutual information.

    Both are needed. On the phantom's held-out subjects, sequences aligned exactly measure 0.2-2.9 mm and
    gain at most 4 %, the same sequences as acquired (a few mm and degrees of head or body motion) 7-16 mm
    and 11-35 %; but on a smooth, noisy high-b DWI, aligned, the registration wanders 5-7 mm across an
    almost flat metric (a 4 % gain), which the offset alone would take for misalignment. None where there
    is nothing to check (no points, a volume too thin to register or constant).
    """
    points = np.asarray(points_lps, float).reshape(-1, 3)
    if not len(points):
        return None

    def coarse(volume: Volume) -> Volume:
        if volume.is_series:
            volume = volume.frame(0).with_array(volume.array.mean(axis=0))
        factors = [max(1, int(round(OFFSET_CHECK_MM / s))) for s in volume.spacing]
        factors = [f if n // f >= MIN_VOXELS_PER_AXIS else 1 for f, n in zip(factors, volume.size_xyz)]
        return Volume.from_sitk(sitk.BinShrink(volume.to_sitk(), factors))
    try:
        result = register(coarse(fixed), coarse(moving), "rigid", seed=0)
    except InputError:  # too thin, or constant: nothing to say about its alignment
        return None
    matrix = np.asarray(result.linear_matrix())
    moved = points @ matrix[:3, :3].T + matrix[:3, 3]
    offset = float(np.percentile(np.linalg.norm(moved - points, axis=1), 95))
    before = max(float(result.mi_before), 1e-6)
    return AlignmentCheck(offset, (float(result.mi_after) - before) / before)


#: a flip that raises the mutual information with the reference by at least this share marks a mirrored input
MIRRORED_INFORMATION_GAIN = 0.08
#: the anatomical direction of each LPS axis, as a warning names it
LPS_AXES = ("left-right", "front-back", "head-foot")


@dataclass(frozen=True)
class MirrorCheck:
    """The flip of an input that best matches the reference, and what it gains."""
    axis: str  # an entry of :data:`LPS_AXES`
    information_gain: float

    @property
    def mirrored(self) -> bool:
        return self.information_gain > MIRRORED_INFORMATION_GAIN


def check_mirroring(fixed: Volume, moving: Volume, body: np.ndarray) -> MirrorCheck | None:
    """Whether ``moving`` (on ``fixed``'s grid, registered or taken as aligned) looks mirrored: the best of its
    flips along each voxel axis, about the grid's centre and about the ``body``'s, against it as it is.

    A header that flips an axis (a conversion error, an old Analyze file) gives an image no rigid
    registration can put right, and neither the registration nor the alignment check notices: it moves
    little and gains little. Flipped back, it matches the reference far better. On the phantom's held-out
    subjects an aligned input loses 3-93 % of its mutual information when flipped along any axis (3 %: a
    coarse breast DWI flipped head to foot), and a flipped one regains 15-237 %. None where there is nothing
    to check.
    """
    if np.ptp(fixed.array) == 0 or np.ptp(moving.array) == 0 or not body.any():
        return None
    base = mutual_information(fixed, moving)
    if base <= 0:
        return None
    centre = ndimage.center_of_mass(body)
    air = float(np.median(moving.array[~body])) if not body.all() else 0.0
    best: MirrorCheck | None = None
    for axis in range(3):
        flipped = np.flip(moving.array, axis)
        shift = [0.0, 0.0, 0.0]
        shift[axis] = 2 * centre[axis] - (moving.array.shape[axis] - 1)  # about the body's centre instead
        for candidate in (flipped, ndimage.shift(flipped, shift, order=1, cval=air)):
            gain = (mutual_information(fixed, moving.with_array(np.ascontiguousarray(candidate, np.float32))) - base) / base
            if best is None or gain > best.information_gain:
                best = MirrorCheck(_lps_axis(moving, axis), gain)
    return best


def _lps_axis(volume: Volume, array_axis: int) -> str:
    """The anatomical direction of an array axis ((z, y, x) order) of ``volume``."""
    column = np.asarray(volume.direction, float).reshape(3, 3)[:, 2 - array_axis]
    return LPS_AXES[int(np.argmax(np.abs(column)))]


def transform_from_files(files: Sequence[str | Path]) -> sitk.Transform:
    """One SimpleITK transform from a list of ANTs transform files (``.mat`` affines, ``.nii.gz`` fields)."""
    parts: list[sitk.Transform] = []
    for path in map(str, files):
        if path.endswith(".mat"):
            parts.append(sitk.ReadTransform(path))
        else:
            parts.append(sitk.DisplacementFieldTransform(sitk.ReadImage(path, sitk.sitkVectorFloat64)))
    if not parts:
        return sitk.Transform(3, sitk.sitkIdentity)
    # ANTs applies its list's last transform to a point first; a SimpleITK composite built from a list
    # applies the list's first one first (checked against ants.apply_transforms in the tests)
    return sitk.CompositeTransform(parts[::-1]) if len(parts) > 1 else parts[0]


#: SyN stage settings (see the module docstring for why they are stiffer than ANTsPy's stock preset)
SYN_OPTIONS = {"grad_step": 0.1, "flow_sigma": 4, "total_sigma": 3}


#: antspyx's default linear-stage pyramid: (shrink factor, smoothing sigma in voxels, iterations) per level
LINEAR_PYRAMID = ((6, 3, 2100), (4, 2, 1200), (2, 1, 1200), (1, 0, 10))
#: the fewest voxels along any axis a pyramid level may leave (see :func:`linear_pyramid`)
MIN_LEVEL_VOXELS = 4


def linear_pyramid(*shapes: Sequence[int]) -> dict:
    """The rigid/affine stage's multi-resolution schedule for images of these spatial shapes.

    ANTs' default pyramid starts at 1/6 resolution. On a small or coarse image (a 4 mm breast DWI has
    8 slices) that level is one or two voxels thick, the metric is nearly flat there and the optimiser
    sometimes walks tens of millimetres away, which the finer levels cannot undo (one of the two causes of
    the failures described in :func:`_run_preset`). We keep antspyx's levels but drop every one that would leave fewer than
    :data:`MIN_LEVEL_VOXELS` voxels along some axis of either image; full resolution always stays.
    Images large enough for every level get exactly antspyx's defaults.
    """
    smallest = min(min(shape) for shape in shapes)
    levels = [level for level in LINEAR_PYRAMID if level[0] == 1 or smallest / level[0] >= MIN_LEVEL_VOXELS]
    shrink, sigmas, iterations = (tuple(values) for values in zip(*levels))
    return {"aff_shrink_factors": shrink, "aff_smoothing_sigmas": sigmas, "aff_iterations": iterations}


def fields_of_view_overlap(fixed: Volume, moving: Volume) -> bool:
    """Whether each volume's centre lies inside the other's field of view (in physical space).

    Sequences of one session share the scanner's coordinates, so their headers already align them to
    within the patient's motion; registration then starts from the identity. Volumes whose fields of view
    do not even contain each other's centre (another scanner, an arbitrary origin) start from antspyx's
    centre-of-mass alignment instead.
    """
    def centre(volume: Volume) -> np.ndarray:
        return (volume.index_to_physical() @ np.append((np.asarray(volume.size_xyz) - 1) / 2, 1.0))[:3]

    def contains(volume: Volume, point: np.ndarray) -> bool:
        index = (np.linalg.inv(volume.index_to_physical()) @ np.append(point, 1.0))[:3]
        return bool(np.all(index >= -0.5) and np.all(index <= np.asarray(volume.size_xyz) - 0.5))

    return contains(fixed, centre(moving)) and contains(moving, centre(fixed))


def _run_preset(fixed_image, moving_image, preset: str, work: Path, *, start_at_identity: bool) -> dict:
    """The antspyx calls of a preset; ``warpedmovout`` is always the untouched moving image resampled.

    Starting from the centre-of-mass alignment (antspyx's default) when the headers already agree put one
    rigid run in eight on the phantom tens of millimetres off: the sequences' intensity centres differ
    (DWI is bright in glands and lesions, T1 in fat), and from that start the optimiser sometimes settles
    on the wrong breast. See :func:`fields_of_view_overlap` for when we start from the identity.
    """
    ants = _ants()
    linear = {**linear_pyramid(fixed_image.shape, moving_image.shape),
              "initial_transform": "Identity" if start_at_identity else None}
    if preset != "syn":
        return ants.registration(fixed_image, moving_image, type_of_transform=PRESETS[preset],
                                 outprefix=str(work / "reg_"), **linear)
    fixed_n4 = ants.n4_bias_field_correction(fixed_image)
    moving_n4 = ants.n4_bias_field_correction(moving_image)
    affine = ants.registration(fixed_n4, moving_n4, type_of_transform="Affine", outprefix=str(work / "affine_"),
                               **linear)
    result = ants.registration(fixed_n4, moving_n4, type_of_transform="SyNOnly", outprefix=str(work / "syn_"),
                               initial_transform=affine["fwdtransforms"][0], **SYN_OPTIONS)
    result["warpedmovout"] = ants.apply_transforms(fixed_image, moving_image, result["fwdtransforms"])
    return result


def _keep(files: Sequence[str], folder: Path, stem: str, *, invert_affines: bool = False) -> list[Path]:
    """Copy ANTs' transform files out of its work folder.

    ANTs lists an affine in its inverse transforms as the forward file plus a flag saying "invert it";
    with ``invert_affines`` we write the inverted affine instead, so every ``…-inverse-*`` file really maps
    moving to fixed and can be applied as it is.
    """
    kept = []
    for k, file in enumerate(files):
        suffix = ".nii.gz" if file.endswith(".nii.gz") else Path(file).suffix
        target = folder / f"{stem}-{k}{suffix}"
        if invert_affines and suffix == ".mat":
            sitk.WriteTransform(sitk.ReadTransform(file).GetInverse(), str(target))
        else:
            shutil.copyfile(file, target)
        kept.append(target)
    return kept
