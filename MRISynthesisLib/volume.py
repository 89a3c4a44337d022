"""The ``Volume`` type: voxels plus the geometry that places them in the patient (LPS, as ITK and Slicer).

Why our own type rather than passing ``SimpleITK.Image`` around: the models want plain float32 arrays
in (z, y, x) order, the Slicer module hands us arrays too, and a frozen dataclass makes it impossible
to change a user's data in place by accident. Geometry follows ITK's conventions exactly, so a round trip
through SimpleITK, NIfTI, NRRD or MHA keeps it bit for bit:

* ``spacing`` and ``origin`` are in ITK's (x, y, z) order, millimetres, LPS physical space;
* ``direction`` is the 3x3 direction-cosine matrix, row-major, as ``SimpleITK.Image.GetDirection``;
* ``array`` is float32, shape (z, y, x) for a 3D volume or (t, z, y, x) for a 4D series (DCE phases,
  DWI b-values), with one metadata dict per frame in ``frames`` (acquisition time, b-value, …).

Example:
    >>> import numpy as np
    >>> v = Volume(np.zeros((4, 5, 6)), spacing=(1.0, 1.0, 3.0))
    >>> v.shape, v.size_xyz
    ((4, 5, 6), (6, 5, 4))
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import uuid
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
#: headers whose voxels are in a data file beside them
DETACHED_SUFFIXES = (".nhdr", ".mhd")
#: formats that hold header and voxels in one file
SINGLE_FILE_SUFFIXES = tuple(s for s in SUPPORTED_SUFFIXES if s not in DETACHED_SUFFIXES)
#: a NIfTI file whose sform and qform place some corner of its field of view further apart than this is named
FORMS_APART_MM = 1.0

log = logging.getLogger(__name__)
#: a series' frame keys and the index name and unit Slicer's sequences (and their .seq.nrrd files) give them
FRAME_INDEX = {"time_min": ("time", "min"), "b_value": ("b-value", "s/mm2")}
#: a time index in these units, as minutes (DICOM and 4D NRRD series come indexed in seconds)
MINUTES_PER = {"min": 1.0, "s": 1 / 60, "sec": 1 / 60, "ms": 1 / 60000}


def frame_record(index_name: str, unit: str, value: str, k: int) -> dict:
    """Frame ``k``'s metadata from an index (a Slicer sequence's, a 4D NRRD's ``axis 0 index values``): a time
    in minutes whatever unit it counts in, a b-value; an index the library has no key for stays as it is."""
    try:
        number = float(value)
    except ValueError:
        return {"index": k, "label": value}
    unit = unit.strip().lower()
    if index_name == "time" and unit in MINUTES_PER:
        return {"time_min": number * MINUTES_PER[unit]}
    key = next((key for key, (name, _) in FRAME_INDEX.items() if name == index_name and name != "time"), None)
    if key is None:
        return {"index": k, index_name or "value": number, **({"unit": unit} if unit else {})}
    return {key: number}


def _as_triple(values: Sequence[float], name: str) -> tuple[float, float, float]:
    triple = tuple(float(v) for v in values)
    if len(triple) != 3:
        raise InputError(f"`{name}` must have 3 values (x, y, z), not {len(triple)}")
    return triple  # type: ignore[return-value]


@dataclass(frozen=True)
class _HandedOver:
    """An array whose owner gives it to a new Volume (:meth:`Volume.adopting`): kept without a copy."""

    array: np.ndarray


@dataclass(frozen=True)
class _FrameOf:
    """A view of one frame of another Volume's read-only array: both are immutable, so sharing the
    buffer is safe, and a 512 x 512 x 300 frame is not copied (300 MiB) each time a model takes one."""

    array: np.ndarray


@dataclass(frozen=True)
class Volume:
    """A 3D volume or 4D series with its physical geometry. Immutable: its array is read-only."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION
    frames: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        given = self.array
        if isinstance(given, _HandedOver) and given.array.dtype == np.float32 and given.array.flags.c_contiguous \
                and given.array.flags.owndata:
            array = given.array  # a fresh buffer its maker hands over: a 300 MiB volume is not held twice
        elif isinstance(given, _FrameOf):
            array = given.array
        else:  # never alias the caller's buffer
            array = np.array(given.array if isinstance(given, _HandedOver) else given, dtype=np.float32, copy=True)
        if array.ndim not in (3, 4):
            raise InputError(f"a Volume must be 3D (z, y, x) or 4D (t, z, y, x), but it is {array.ndim}D")
        if min(array.shape) < 1:
            raise InputError(f"a Volume must not be empty, but its shape is {array.shape}")
        array.setflags(write=False)
        object.__setattr__(self, "array", array)
        spacing = _as_triple(self.spacing, "spacing")
        if min(spacing) <= 0 or not np.all(np.isfinite(spacing)):
            raise InputError(f"`spacing` must be positive and finite, not {spacing}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", _as_triple(self.origin, "origin"))
        direction = tuple(float(v) for v in np.asarray(self.direction, dtype=float).ravel())
        if len(direction) != 9:
            raise InputError(f"`direction` must be a 3x3 matrix, not {len(direction)} values")
        matrix = np.reshape(direction, (3, 3))  # |det| = 1 alone lets scaled or sheared axes through
        if not np.allclose(matrix @ matrix.T, np.eye(3), rtol=0, atol=1e-3):
            raise InputError("`direction` must be an orthonormal 3x3 matrix (unit, perpendicular axes)")
        object.__setattr__(self, "direction", direction)
        frames = tuple(dict(f) for f in self.frames)
        if array.ndim == 4 and frames and len(frames) != array.shape[0]:
            raise InputError(f"a 4D series with {array.shape[0]} frames needs as many frame records, not {len(frames)}")
        if array.ndim == 3 and frames:
            raise InputError("per-frame metadata is only meaningful for a 4D series")
        object.__setattr__(self, "frames", frames)

    @classmethod
    def adopting(cls, array: np.ndarray, *args, **kwargs) -> "Volume":
        """A Volume that takes over ``array`` (a float32 buffer the caller made and will not touch again)
        without copying it; any other array is copied as usual. Same arguments as the constructor."""
        return cls(_HandedOver(array), *args, **kwargs)

    # ----------------------------------------------------------------- shape and geometry
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def is_series(self) -> bool:
        return self.array.ndim == 4

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(z, y, x) shape of one frame."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Voxel counts in ITK's (x, y, z) order."""
        z, y, x = self.spatial_shape
        return (x, y, z)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.reshape(self.direction, (3, 3))

    def index_to_physical(self) -> np.ndarray:
        """4x4 matrix mapping (x, y, z, 1) voxel indices to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        affine[:3, 3] = self.origin
        return affine

    def with_array(self, array: np.ndarray, frames: Sequence[Mapping[str, Any]] | None = None) -> "Volume":
        """A new Volume on this geometry holding ``array`` (its spatial shape must match)."""
        array = np.asarray(array)
        if array.shape[-3:] != self.spatial_shape:
            raise InputError(f"array of shape {array.shape} does not fit a grid of shape {self.spatial_shape}")
        kept = frames if frames is not None else (self.frames if array.shape == self.shape else ())
        return replace(self, array=array, frames=tuple(kept))

    def frame(self, index: int) -> "Volume":
        """One frame of a 4D series as a 3D Volume."""
        if not self.is_series:
            raise InputError("frame() needs a 4D series, but this volume is 3D")
        return replace(self, array=_FrameOf(self.array[index]), frames=())

    # ----------------------------------------------------------------- SimpleITK conversion
    @classmethod
    def from_sitk(cls, image: sitk.Image, frames: Sequence[Mapping[str, Any]] = ()) -> "Volume":
        """From a 3D SimpleITK image, or a 4D one (then the fourth axis is the series axis)."""
        dim = image.GetDimension()
        array = sitk.GetArrayFromImage(image)  # a fresh copy, handed over (float32 is then not copied again)
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"expected a scalar image, but it has {image.GetNumberOfComponentsPerPixel()} components per voxel")
        if np.iscomplexobj(array):  # a raw reconstruction: keeping the real part would silently drop the phase
            raise InputError("the image holds complex values; give the magnitude image")
        if dim == 3:
            return cls.adopting(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection())
        if dim == 4:
            direction4 = np.reshape(image.GetDirection(), (4, 4))
            return cls.adopting(array, image.GetSpacing()[:3], image.GetOrigin()[:3], direction4[:3, :3].ravel(), frames)
        raise InputError(f"expected a 3D volume or a 4D series, but the image is {dim}D")

    def to_sitk(self) -> sitk.Image:
        """A 3D SimpleITK image, or a 4D one for a series (the series axis gets spacing 1)."""
        if not self.is_series:
            image = sitk.GetImageFromArray(self.array)
            image.SetSpacing(self.spacing)
            image.SetOrigin(self.origin)
            image.SetDirection(self.direction)
            return image
        image = sitk.GetImageFromArray(self.array, isVector=False)
        image.SetSpacing(self.spacing + (1.0,))
        image.SetOrigin(self.origin + (0.0,))
        direction4 = np.eye(4)
        direction4[:3, :3] = self.direction_matrix
        image.SetDirection(tuple(direction4.ravel()))
        return image

    # ----------------------------------------------------------------- checks
    def require_3d(self, name: str = "volume") -> "Volume":
        if self.is_series:
            raise InputError(f"{name}: expected a 3D volume, but it is a 4D series of {self.shape[0]} frames")
        return self

    def require_extent(self, name: str = "volume") -> "Volume":
        """At least 2 voxels along every axis: a slice or a single voxel is no volume to register or synthesize."""
        if min(self.spatial_shape) < 2:
            raise InputError(f"{name}: image of size {self.size_xyz} is not a 3D volume "
                             "(at least 2 voxels along every axis are needed)")
        return self

    def require_finite(self, name: str = "volume") -> "Volume":
        bad = non_finite(self.array)
        if bad:
            raise InputError(f"{name}: contains {bad} voxel(s)")
        return self

    def require_not_constant(self, name: str = "volume") -> "Volume":
        if float(np.ptp(self.array)) == 0.0:
            raise InputError(f"{name}: every voxel has the same value ({float(self.array.flat[0])}); it holds no image")
        return self


def non_finite(array: np.ndarray) -> str:
    """How many values are NaN or Inf, as "2 NaN/Inf"; empty when every value is finite."""
    bad = ~np.isfinite(array)
    if not bad.any():
        return ""
    kinds = [k for k, m in (("NaN", np.isnan(array)), ("Inf", np.isinf(array))) if m.any()]
    return f"{int(bad.sum())} {'/'.join(kinds)}"


# --------------------------------------------------------------------- geometry comparison
def geometry_differences(a: Volume, b: Volume, spacing_tol: float = 1e-4, origin_tol_mm: float = 1e-3,
                         direction_tol: float = 1e-4) -> list[str]:
    """What differs between the grids of ``a`` and ``b`` (empty when they share one grid).

    Tolerances are absolute: spacing in mm (relative to the spacing), origin in mm, direction cosines.
    """
    diffs = []
    if a.spatial_shape != b.spatial_shape:
        diffs.append(f"size {a.size_xyz} vs {b.size_xyz}")
    if not np.allclose(a.spacing, b.spacing, rtol=spacing_tol, atol=0):
        diffs.append(f"spacing {a.spacing} vs {b.spacing}")
    if not np.allclose(a.origin, b.origin, rtol=0, atol=origin_tol_mm):
        diffs.append(f"origin {a.origin} vs {b.origin}")
    if not np.allclose(a.direction, b.direction, rtol=0, atol=direction_tol):
        diffs.append("direction differs")
    return diffs


def same_geometry(a: Volume, b: Volume, **tolerances: float) -> bool:
    return not geometry_differences(a, b, **tolerances)


def require_same_geometry(volumes: Mapping[str, Volume], **tolerances: float) -> None:
    """Raise naming the first volume whose grid differs from the first one's."""
    items = list(volumes.items())
    if not items:
        return
    first_name, first = items[0]
    for name, vol in items[1:]:
        diffs = geometry_differences(vol, first, **tolerances)  # "<name>'s vs <first_name>'s", as the sentence reads
        if diffs:
            raise InputError(f"{name} is not on the grid of {first_name}: {'; '.join(diffs)} "
                             "(register or resample it first)")


# --------------------------------------------------------------------- file I/O
def image_suffix(path: str | Path) -> str:
    """The image format's suffix of ``path``, lower-case (``.nii.gz`` for ``T1.NII.GZ``)."""
    return _suffix(Path(path))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def sidecar_path(path: str | Path) -> Path:
    """The JSON file beside an image that holds a series' per-frame metadata (BIDS-style sidecar)."""
    path = Path(path)
    suffix = _suffix(path)
    return path.with_name(path.name[: len(path.name) - len(suffix)] + ".json")


def report_path(out: str | Path) -> Path:
    """Where the JSON report of a synthesized ``out`` goes: beside it, its name without the image suffix
    plus ``.report.json`` (``t1ce.nii.gz`` -> ``t1ce.report.json``, ``case.t1ce.nii.gz`` ->
    ``case.t1ce.report.json``). Not ``<name>.json``: that is an image's BIDS sidecar, which for a series
    output holds its frames (and for an input, must stay its own)."""
    side = sidecar_path(out)
    return side.with_name(side.name[: -len(".json")] + ".report.json")


def is_frame_sidecar(path: str | Path) -> bool:
    """Whether ``path`` is a series' frame sidecar (JSON with a ``frames`` list), not some other JSON file."""
    try:
        return isinstance(json.loads(Path(path).read_text()).get("frames"), list)
    except (OSError, ValueError, AttributeError):
        return False


def refuse_same_outputs(outputs: Mapping[str, str | Path | None]) -> None:
    """Raise when two of the named ``outputs`` ({what: path}) are one file: the second would replace the first."""
    seen: dict[str, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            raise InputError(f"{seen[key]} and {what} name the same file ({path}); give each its own")
        seen[key] = what


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI, NRRD or MHA file; a 4D file becomes a series, with frames from its JSON sidecar.

    NIfTI voxels are read with nibabel and the geometry with ITK (as Slicer reads it): ITK's NIfTI reader
    silently changes NaN/Inf voxels into numbers and pads some truncated files, while nibabel keeps them
    and fails on missing data, so bad input is reported instead of being passed on.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    if _suffix(path) not in SUPPORTED_SUFFIXES:
        raise InputError(f"{path}: unsupported file type (use one of {', '.join(SUPPORTED_SUFFIXES)})")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    if _suffix(path) in DETACHED_SUFFIXES and not path.name.endswith(_suffix(path)):
        raise InputError(f"{path}: rename it (and its data file's reference) with a lower-case {_suffix(path)}: "
                         "ITK reads a detached header only by its lower-case suffix")
    try:
        with _as_itk_reads_it(path) as readable:
            if _suffix(path) in (".nii", ".nii.gz"):
                image = _with_nifti_voxels(_read_sitk(readable, header_only=True), readable, shown_as=path)
            else:
                image = _read_sitk(readable)
        if image.GetNumberOfComponentsPerPixel() > 1 and _metadata(image, "NRRD_kinds[pixel]") == "list":
            return _listed_series(image)
        if image.GetDimension() == 4 and image.GetSize()[3] == 1:  # a 3D volume stored with a fourth axis of
            return Volume.from_sitk(image[:, :, :, 0])              # one, read as NIfTI's (x, y, z, 1) is
        frames = _read_frames(path, image.GetSize()[3]) if image.GetDimension() == 4 else ()
        return Volume.from_sitk(image, frames)
    except InputError as err:
        raise InputError(f"{path}: {err}" if str(path) not in str(err) else str(err)) from err
    except RuntimeError as err:  # SimpleITK reports unreadable and truncated files as RuntimeError
        first = str(err).strip().splitlines()
        detail = next((line for line in first if "ERROR" in line or "rror" in line), first[0] if first else "")
        if "orthonormal" in str(err):  # a readable file whose affine shears: not damage, a geometry ITK refuses
            raise InputError(f"{path}: its header's affine is sheared (the voxel axes are not perpendicular), which "
                             "ITK and Slicer do not read; resample it onto an orthogonal grid first (for example "
                             "with nibabel's resample_to_output)") from err
        raise InputError(f"{path}: cannot be read as an image (corrupt or truncated?): {detail.strip()[:200]}") from err


def upright(volume: Volume) -> Volume:
    """The 3D volume with its voxel axes permuted and flipped to the nearest LPS ones (ITK's DICOMOrient), so
    array axis 0 runs inferior to superior: its ``array[k]`` is an axial slice whatever plane the file was
    acquired in (a sagittal 3D T1, a coronal T2). The same voxels and physical positions; for figures."""
    if volume.is_series:
        raise InputError("upright() takes a 3D volume (one frame of a series)")
    if np.allclose(volume.direction_matrix, np.eye(3)):
        return volume
    return Volume.from_sitk(sitk.DICOMOrient(volume.to_sitk(), "LPS"))


def read_grid_spacing(path: str | Path) -> tuple[tuple[float, float, float], bool] | None:
    """A file's voxel spacing (x, y, z in mm) and whether it is a 4D series, from its header alone (a quick
    look before reading hundreds of cases); None when the header cannot be read, which the full
    :func:`read_volume` then reports by name."""
    path = Path(path)
    try:
        with _as_itk_reads_it(path) as readable:
            header = _read_sitk(readable, header_only=True)
    except (RuntimeError, OSError):
        return None
    spacing, size = header.GetSpacing(), header.GetSize()
    if len(spacing) < 3:
        return None
    return tuple(float(v) for v in spacing[:3]), len(size) == 4 and size[3] > 1


def _metadata(image: sitk.Image, key: str) -> str:
    return image.GetMetaData(key).strip() if image.HasMetaDataKey(key) else ""


def _listed_series(image: sitk.Image) -> Volume:
    """A 4D NRRD whose first axis is a ``list`` (how Slicer saves a sequence, ``.seq.nrrd``): ITK reads it as
    a 3D image of several components, which are the frames; their values come from ``axis 0 index values``
    (time in minutes, b-values), else they are numbered."""
    array = np.moveaxis(sitk.GetArrayFromImage(image), -1, 0)  # (z, y, x, frames) -> (frames, z, y, x)
    values = _metadata(image, "axis 0 index values").split()
    name, unit = _metadata(image, "axis 0 quantity"), _metadata(image, "axis 0 unit")
    frames = ([frame_record(name, unit, v, k) for k, v in enumerate(values)] if len(values) == len(array)
              else [{"index": k} for k in range(len(array))])
    return Volume.adopting(np.ascontiguousarray(array), image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                           frames)


@contextmanager
def _as_itk_reads_it(path: Path) -> Iterator[Path]:
    """``path``, or a link to it under a name ITK and nibabel read correctly, in a temporary folder.

    Three names mislead them: ``x.nii.gz`` with an ``x.nii`` (or ``x.hdr``) beside it, which the NIfTI
    library inside ITK opens instead whatever name it is given (ITK issue #2243, nifti_clib issue #129),
    so it would silently read the wrong file; a mixed-case suffix (``T1.Nii.gz``), which it refuses; and
    an uncompressed NIfTI named ``.nii.gz`` (as some export tools name every file), which nibabel refuses
    as "not a gzip file". The link has the suffix in lower case, ``.nii`` for the uncompressed file. (A
    detached header, .nhdr or .mhd, names its data file beside it, so it is never linked.)
    """
    suffix = _suffix(path)
    stem = path.name[: len(path.name) - len(suffix)]
    shadowed = suffix == ".nii.gz" and any((path.parent / (stem + ext)).exists() for ext in (".nii", ".hdr", ".nia"))
    mixed_case = not path.name.endswith(suffix) and suffix not in DETACHED_SUFFIXES
    plain = suffix == ".nii.gz" and not _is_gzip(path)
    if not (shadowed or mixed_case or plain):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mri-synthesis-") as folder:
        alone = Path(folder) / (stem + (".nii" if plain else suffix))
        try:
            os.symlink(path.resolve(), alone)
        except OSError:  # no symlinks (Windows without developer mode): copy instead
            shutil.copyfile(path, alone)
        yield alone


def _is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with gzip's magic bytes."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _read_sitk(path: Path, *, header_only: bool = False) -> sitk.ImageFileReader | sitk.Image:
    """Read an image (or only its header) with ITK."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if header_only:
        reader.ReadImageInformation()
        return reader
    return reader.Execute()


def _with_nifti_voxels(header: sitk.ImageFileReader, readable: Path, shown_as: Path) -> sitk.Image:
    """An ITK image with ``header``'s geometry and the voxels nibabel reads from ``readable`` (the file the
    user named ``shown_as``, which the messages name)."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    path = shown_as
    try:
        nifti = nib.load(str(readable))
        dtype = nifti.get_data_dtype()
        colour = dtype.fields is not None  # RGB24 / RGBA32: a colour picture, not one intensity per voxel
        complex_voxels = np.issubdtype(dtype, np.complexfloating)
        data = None if complex_voxels or colour else nifti.get_fdata(dtype=np.float32)  # scl_slope / _inter as ITK
    except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error) as err:
        detail = " ".join(str(err).split())[:200]
        raise InputError(f"{path}: cannot be read as an image (corrupt or truncated?): {detail}") from err
    if colour:
        raise InputError(f"{path}: the image holds colour (RGB) voxels; give a grey-scale MR image")
    if complex_voxels:  # a raw reconstruction: keeping the real part would silently drop the phase
        raise InputError(f"{path}: the image holds complex values; give the magnitude image")
    size = header.GetSize()
    _warn_if_forms_disagree(nifti.header, header, path)
    while data.ndim > len(size) and data.shape[-1] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(size):
        raise InputError(f"{path}: voxel data of shape {data.shape} does not match its header's size {size}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.T), isVector=False)  # nibabel (x, y, z[, t]) -> (…, z, y, x)
    image.SetSpacing(header.GetSpacing())
    image.SetOrigin(header.GetOrigin())
    image.SetDirection(header.GetDirection())
    return image


def _itk_affine(header: sitk.ImageFileReader) -> np.ndarray:
    """The voxel-to-RAS affine of the geometry ITK read (ITK's physical space is LPS)."""
    direction = np.asarray(header.GetDirection()).reshape(header.GetDimension(), -1)[:3, :3]
    spacing, origin = np.asarray(header.GetSpacing()[:3]), np.asarray(header.GetOrigin()[:3])
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ direction * spacing
    affine[:3, 3] = lps_to_ras @ origin
    return affine


def _warn_if_forms_disagree(nifti_header, header: sitk.ImageFileReader, path: Path) -> None:
    """Log a warning when a NIfTI file's two orientations (sform and qform, both set) place its field of
    view differently, naming the one read.

    Tools disagree on which to believe (nibabel and FSL take the sform, ITK and so 3D Slicer the qform in
    some cases), so the same file overlays differently in each; a converter or an edited header is the usual
    cause. This package reads the geometry as ITK does, as Slicer shows it; the warning says which that was.
    """
    sform, sform_code = nifti_header.get_sform(coded=True)
    qform, qform_code = nifti_header.get_qform(coded=True)
    if not sform_code or not qform_code or header.GetDimension() < 3:  # a 2D image is refused later
        return
    shape = nifti_header.get_data_shape()[:3]
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    apart = float(np.linalg.norm(((sform - qform) @ corners)[:3], axis=0).max())
    if apart <= FORMS_APART_MM:
        return
    read = _itk_affine(header) @ corners
    used = min(("sform", sform), ("qform", qform), key=lambda form: np.abs(form[1] @ corners - read).max())[0]
    others = ("as ITK, 3D Slicer, nibabel and FSL read this file; a tool that takes the qform places it elsewhere"
              if used == "sform" else "as ITK and 3D Slicer read this file; nibabel and FSL take its sform and "
              "place it elsewhere")
    log.warning(f"{path}: its sform and qform place the image up to {apart:.1f} mm apart; read with its {used}, "
                f"{others}: check which is right before trusting where the result lies")


def _read_frames(path: Path, n_frames: int) -> tuple[dict, ...]:
    """A series' frame metadata: from our frame sidecar (``<name>.json`` with a ``frames`` list); else, for a
    DWI converted by dcm2niix (whose ``<name>.json`` is its BIDS sidecar, with no frames), the b-values
    of its ``<name>.bval``; else the frames' indices."""
    side = sidecar_path(path)
    try:
        content = json.loads(side.read_text()) if side.exists() else {}
    except ValueError as err:
        raise InputError(f"{side}: not a valid frame sidecar (expected JSON with a 'frames' list)") from err
    if not isinstance(content, dict):
        raise InputError(f"{side}: not a valid frame sidecar (expected JSON with a 'frames' list)")
    if "frames" not in content:  # no sidecar, or a BIDS one (dcm2niix writes one beside every image)
        return _bval_frames(side.with_suffix(".bval"), n_frames) or tuple({"index": i} for i in range(n_frames))
    frames = content["frames"]
    if not isinstance(frames, list) or not all(isinstance(frame, dict) for frame in frames):
        raise InputError(f"{side}: not a valid frame sidecar ('frames' must be a list of objects, one per frame)")
    for k, frame in enumerate(frames):
        bad = [key for key, value in frame.items() if isinstance(value, float) and not math.isfinite(value)]
        if bad:
            raise InputError(f"{side}: frame {k} has a non-finite {', '.join(bad)}")
    if len(frames) != n_frames:
        raise InputError(f"{side}: describes {len(frames)} frames but the image has {n_frames}")
    return tuple(frames)


def _bval_frames(bval: Path, n_frames: int) -> tuple[dict, ...] | None:
    """Frames ``{"b_value": b}`` from a BIDS/FSL ``.bval`` file (one b-value per volume), or None without one."""
    if not bval.exists():
        return None
    try:
        values = [float(v) for v in bval.read_text().split()]
    except ValueError as err:
        raise InputError(f"{bval}: not a list of b-values") from err
    if len(values) != n_frames:
        raise InputError(f"{bval}: lists {len(values)} b-values but the image has {n_frames} frames")
    return tuple({"b_value": b} for b in values)


def require_named(path: str | Path, what: str = "the output folder") -> Path:
    """``path`` as a Path, unless it is empty: Path("") is the current folder, where nobody meant to write."""
    if not str(path).strip():
        raise InputError(f"{what} is empty; name one")
    return Path(path)


def check_output_file(path: str | Path, *, image: bool = True) -> Path:
    """Before any work: ``path`` names a file that can be written (an image of a supported type when
    ``image``) in a folder that exists; not empty, not a folder, not under a file."""
    path = require_named(path, "an output file name")
    if image and _suffix(path) not in SUPPORTED_SUFFIXES:
        raise InputError(f"{path}: unsupported output type (use one of {', '.join(SUPPORTED_SUFFIXES)})")
    if image and _suffix(path) in DETACHED_SUFFIXES and not path.name.endswith(_suffix(path)):
        raise InputError(f"{path}: give the suffix in lower case ({_suffix(path)}): ITK reads a detached header "
                         "only by its lower-case suffix")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    if not path.parent.exists():
        raise InputError(f"{path.parent}: output folder does not exist")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: is not a folder")
    require_writable(path.parent)
    return path


def output_folder(path: str | Path) -> Path:
    """Create (if needed) and return an output folder; a clear error if it is a file or cannot be made."""
    path = require_named(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{path}: cannot create the output folder ({err.strerror})") from err
    return require_writable(path)


def require_writable(folder: Path) -> Path:
    """``folder``, once a file has been made in it: permission bits say nothing for root, a read-only mount
    or a special file system, so the only sure check before the work is to write."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputError(f"{folder}: output folder is not writable ({err.strerror})") from err
    return folder


@contextmanager
def discard_if_failed(path: str | Path) -> Iterator[Path]:
    """Remove the output folder ``path`` again if the work inside fails and this call is what created it,
    so a refused command leaves nothing behind; a folder that existed before is left as it was."""
    path = Path(path)
    created = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    try:
        yield path
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


@contextmanager
def discard_new_entries(folder: str | Path) -> Iterator[Path]:
    """Remove what the work inside adds to the existing ``folder`` if it fails: all of a command's outputs or
    none of them (a registration that fails on its second file leaves not the first one's volume and
    transforms without the summary that names them). A folder the work creates is :func:`discard_if_failed`'s."""
    folder = Path(folder)
    before = set(folder.iterdir()) if folder.is_dir() else None
    try:
        yield folder
    except BaseException:
        if before is not None and folder.is_dir():
            for entry in set(folder.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
        raise


def refuse_inside(out: str | Path, data: str | Path) -> None:
    """Raise when the output folder ``out`` is the data folder ``data`` or inside it (the next run would read
    it as a case), or, for a manifest CSV, the manifest's own folder, one holding a file it lists, or one whose
    ``<case>`` subfolder does (a report named like the manifest would replace it; synthesized files, written
    flat or into ``<out>/<case>/``, would lie beside the acquired ones)."""
    out, data = Path(out).resolve(), Path(data).resolve()
    if data.is_dir() and (out == data or data in out.parents):
        raise InputError(f"{out}: the output folder is inside the input folder {data}; choose another")
    if data.is_file():
        from .sequences import read_case_manifest

        cases = read_case_manifest(data)
        folders = {Path(file).resolve().parent for files in cases.values() for file in files.values()}
        if out == data.parent or out in folders or any((out / case).resolve() in folders for case in cases):
            raise InputError(f"{out}: the output folder holds the input manifest {data.name} or files it lists; "
                             "choose another")


def refuse_overwrite(path: str | Path, protect: Sequence[str | Path]) -> None:
    """Raise when ``path`` is one of the ``protect``ed input files, whatever spelling or link reaches it.

    Every writer calls this first: an output equal to an input is an error, never a silent overwrite of
    the user's data.
    """
    path = Path(path)
    if not path.exists():
        return
    for other in protect:
        # a series input's frame sidecar belongs to it as much as its image (another JSON beside a 3D
        # input, an earlier run's report say, is not the input's), and so do a detached header's voxels
        side = sidecar_path(other)
        for input_file in (Path(other), *([side] if is_frame_sidecar(side) else []), *detached_data_files(other)):
            if input_file.exists() and os.path.samefile(path, input_file):
                raise InputError(f"{path}: output would overwrite an input file ({input_file})")


def detached_data_files(header: str | Path) -> list[Path]:
    """The voxel files a detached header (``.mhd``'s ``ElementDataFile``, ``.nhdr``'s ``data file``) names,
    beside it; none for other formats or a header that cannot be read."""
    header = Path(header)
    if _suffix(header) not in DETACHED_SUFFIXES:
        return []
    try:
        lines = header.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        key, separator, value = line.partition("=" if _suffix(header) == ".mhd" else ":")
        if separator and key.strip().lower().replace(" ", "") in ("elementdatafile", "datafile"):
            name = value.strip()
            if name and name.upper() != "LOCAL" and not name.upper().startswith("LIST"):
                found.append(header.parent / name)
    return found


def write_volume(volume: Volume, path: str | Path, *, compress: bool = True, protect: Sequence[str | Path] = (),
                 labels: bool = False) -> Path:
    """Write ``volume``; series also get a JSON sidecar with their frames.

    ``protect`` lists input files that must never be overwritten (an output equal to an input is an
    error, not a silent overwrite of the user's data). ``labels``: a label map, stored as 16-bit unsigned
    integers as segmentations are (so viewers and tools tell it from an image by its type); its values
    must be whole numbers in 0..65535.
    """
    if labels and not (np.array_equal(volume.array, np.rint(volume.array)) and volume.array.min() >= 0
                       and volume.array.max() <= np.iinfo(np.uint16).max):
        raise InputError(f"{path}: a label map holds whole numbers from 0 to 65535, not "
                         f"[{float(volume.array.min()):g}, {float(volume.array.max()):g}] with fractions")
    path = check_output_file(path)
    refuse_overwrite(path, protect)
    if volume.is_series:
        refuse_overwrite(sidecar_path(path), protect)
    # written into a folder of its own beside the target, then moved: no half-written file on failure, two
    # processes writing one path at once never interleave, and a detached header (.nhdr, .mhd) keeps the
    # name of the data file it was written with. Written with the suffix in lower case, which is how ITK
    # tells the format (T1.NII.GZ is written as T1.nii.gz, then renamed).
    suffix = _suffix(path)
    staging = path.with_name(f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    written = staging / (path.name[: len(path.name) - len(suffix)] + suffix)
    try:
        staging.mkdir()
        image = volume.to_sitk()
        sitk.WriteImage(sitk.Cast(image, sitk.sitkUInt16) if labels else image, str(written), useCompression=compress)
        data_files = [f for f in staging.iterdir() if f != written]  # a detached header's voxels
        for data_file in data_files:  # never onto an input's own voxels (a header renamed after export)
            refuse_overwrite(path.parent / data_file.name, protect)
        for data_file in data_files:
            data_file.replace(path.parent / data_file.name)
        written.replace(path)
    except (RuntimeError, OSError) as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        raise InputError(f"{path}: cannot be written: {lines[-1][:200]}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if volume.is_series:
        sidecar_path(path).write_text(json.dumps({"frames": list(volume.frames) or
                                                  [{"index": i} for i in range(volume.shape[0])]}, indent=1))
    return path
