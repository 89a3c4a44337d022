"""Loading a user's sequences for one case, with every check that must fail early and clearly.

Used by the CLI (``check``, and later ``synthesize``/``batch``) and the Slicer module, so bad input is
reported the same way everywhere: the file, and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Collection, Mapping

import numpy as np

from .errors import InputError
from .sequences import canonical
from .volume import Volume, geometry_differences, read_volume, require_same_geometry

#: Sequences that are 4D series by nature; every other sequence must be a 3D volume.
SERIES_SEQUENCES = {"DWI", "DCE"}
#: Fewer voxels above a volume's minimum than a 4 x 4 x 4 block: no image to normalise or register (a mask
#: saved in the wrong slot, a volume zeroed but for a marker), though it is neither constant nor negative.
MIN_SIGNAL_VOXELS = 64
#: At most this many distinct values: a label map or mask (a segmentation's 0-4, a binary mask) given in a
#: sequence's place, which no MRI magnitude image is (even 8-bit ones hold dozens of grey levels).
MAX_LABEL_VALUES = 10


def check_volume(volume: Volume, sequence: str, where: str, *, series: bool | None = None) -> Volume:
    """Shape, finiteness and content checks for one sequence; returns the volume unchanged. ``series``:
    whether it must be a 4D series (default: as its sequence is, DWI and DCE)."""
    if not isinstance(volume, Volume):  # a bare array has no geometry to register or resample with
        raise InputError(f"{where}: expected a Volume (volume.read_volume(path), or Volume(array, spacing, origin, "
                         f"direction)), not {type(volume).__name__}")
    if (sequence in SERIES_SEQUENCES) if series is None else series:
        if not volume.is_series or volume.shape[0] < 2:
            raise InputError(f"{where}: {sequence} must be a 4D series (t, z, y, x) of 2 frames or more, but it "
                             "holds one 3D frame")
    else:
        volume.require_3d(where)
    volume.require_extent(where).require_finite(where).require_not_constant(where)
    if float(volume.array.max()) <= 0:  # no foreground to normalise: a phase, difference or sign-flipped image
        raise InputError(f"{where}: every voxel is negative or zero (range [{float(volume.array.min()):g}, "
                         f"{float(volume.array.max()):g}]); {sequence} must be a magnitude image")
    signal = int(np.count_nonzero(volume.array > volume.array.min()))
    if signal < MIN_SIGNAL_VOXELS:
        raise InputError(f"{where}: only {signal} voxel(s) rise above its background value "
                         f"({float(volume.array.min()):g}); an image of {sequence} needs at least "
                         f"{MIN_SIGNAL_VOXELS}")
    values = _few_distinct_values(volume.array)
    if values is not None:
        shown = ", ".join(f"{v:g}" for v in values)
        raise InputError(f"{where}: holds only {len(values)} distinct values ({shown}): a label map or mask, "
                         f"not an image of {sequence}")
    return volume


def _few_distinct_values(array: np.ndarray) -> np.ndarray | None:
    """The distinct values of ``array`` when there are at most :data:`MAX_LABEL_VALUES` (a label map), else
    None; a coarse sample answers first for the usual image, so a large volume is not sorted whole."""
    sample = np.unique(array[tuple(slice(None, None, 4) for _ in range(array.ndim))])
    if len(sample) > MAX_LABEL_VALUES:
        return None
    values = np.unique(array)
    return values if len(values) <= MAX_LABEL_VALUES else None


def frame_index(sequence: str, n_frames: int, frames: Mapping[str, int], model: str) -> int:
    """Which frame of a 4D ``sequence`` a 3D model sees (``frames`` from its recipe or manifest entry)."""
    if sequence not in frames:
        raise InputError(f"{sequence} is a 4D series; {model} knows which frame to use only for "
                         f"{', '.join(frames) or 'no series'}")
    index = frames[sequence]
    if not -n_frames <= index < n_frames:
        raise InputError(f"{sequence} has {n_frames} frame(s); {model} needs frame {index} "
                         f"({'the last' if index == -1 else f'number {index}, counting from 0'})")
    return index


def model_frames(volumes: Mapping[str, Volume], frames: Mapping[str, int], model: str,
                 whole: Collection[str] = ()) -> dict[str, Volume]:
    """The volumes a model sees: each 4D series reduced to the frame it was trained on (the highest
    b-value of a DWI, a DCE's first post-contrast phase, ...), 3D volumes as they are; the sequences in
    ``whole`` (a model that takes whole series: the manifest's ``series``) stay series and must be one."""
    seen = {}
    for name, volume in volumes.items():
        if name in whole:
            if not volume.is_series or volume.shape[0] < 2:
                got = "a 3D volume" if not volume.is_series else "a series of one frame"
                raise InputError(f"{name} must be a 4D series of at least 2 frames ({model} takes every frame of "
                                 f"it), but it is {got}")
            seen[name] = volume
        else:
            seen[name] = volume.frame(frame_index(name, volume.shape[0], frames, model)) if volume.is_series else volume
    return seen


def check_files(files: Mapping[str, str | Path], *, same_grid: bool = False) -> tuple[dict[str, Volume], list[str]]:
    """Read and check every one of {sequence: file}, going on past a bad one (what ``check`` reports): the
    volumes that passed, and one message per problem (each names its file). With ``same_grid``, the files
    that passed must share the first one's grid."""
    if not files:
        raise InputError("no input sequences given")
    volumes: dict[str, Volume] = {}
    paths: dict[str, str] = {}
    problems: list[str] = []
    for sequence, path in files.items():
        try:
            name = canonical(sequence)
            if name in paths:
                raise InputError(f"sequence {name} given twice ({paths[name]} and {path})")
            paths[name] = str(path)
            volumes[name] = check_volume(read_volume(path), name, str(path))
        except InputError as err:
            problems.append(str(err))
    for first, second in same_images(volumes):
        problems.append(f"{first} ({paths[first]}) and {second} ({paths[second]}) are the same image: each sequence "
                        "needs its own acquisition")
    if same_grid and len(volumes) > 1:
        try:
            require_same_geometry({f"{name} ({paths[name]})": volume for name, volume in volumes.items()})
        except InputError as err:
            problems.append(str(err))
    return volumes, problems


def same_images(volumes: Mapping[str, Volume]) -> list[tuple[str, str]]:
    """The pairs of ``volumes`` that are the same image (:func:`same_image`)."""
    names = list(volumes)
    return [(first, second) for i, first in enumerate(names) for second in names[i + 1:]
            if same_image(volumes[first], volumes[second])]


#: two volumes whose voxels nowhere differ by more than this share of the first one's 1st-99th percentile range
#: are one image: a copy re-saved as integers (rounded by at most 0.5) or at another precision. Two acquisitions,
#: even two repeats of one sequence, differ by their noise alone by several per cent somewhere.
SAME_IMAGE_TOLERANCE = 0.005


def same_image(a: Volume, b: Volume) -> bool:
    """Whether two volumes hold the same image on the same grid (one file given under two names, a copy of
    it, or a copy re-saved at another precision): a sample of voxels first, so that different images cost next
    to nothing."""
    if a.shape != b.shape or geometry_differences(a, b):
        return False
    flat_a, flat_b = a.array.reshape(-1), b.array.reshape(-1)
    step = max(1, flat_a.size // 4096)
    low, high = np.percentile(flat_a[::step], [1, 99])
    tolerance = SAME_IMAGE_TOLERANCE * float(high - low)

    def within(x: np.ndarray, y: np.ndarray, chunk: int = 1 << 22) -> bool:  # in chunks: no whole-volume copy
        return all(np.max(np.abs(x[i:i + chunk].astype(np.float64) - y[i:i + chunk])) <= tolerance
                   for i in range(0, x.size, chunk))
    return within(flat_a[::step], flat_b[::step]) and within(flat_a, flat_b)


def load_case(files: Mapping[str, str | Path], *, same_grid: bool = False) -> dict[str, Volume]:
    """Read and check {sequence: file}; with ``same_grid``, all must share the first one's grid. Every file
    is checked before the error, which names each bad one."""
    volumes, problems = check_files(files, same_grid=same_grid)
    if problems:
        raise InputError(problems[0] if len(problems) == 1 else
                         f"{len(problems)} problems: " + "; ".join(problems))
    return volumes
