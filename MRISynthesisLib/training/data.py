"""Training cases: where they come from, how they are normalised, cached and split.

Sources:

* :class:`PhantomSource`: phantom subjects generated from seeds (brain or breast), as registered data on
  one grid (``misalign=False, native_grids=False``: the BraTS releases are co-registered too), cached.
* :class:`FolderSource`: case folders in the BraTS 2021/2023 or breast-phantom naming (``<root>/<case>/``),
  or a manifest CSV (``case,sequence,path``) for anything else. Every case must have all the sequences
  a model needs, on one grid (register them first with ``mri-synthesis register``).

Each case is normalised once (``normalize_case``) and cached as ``<cache>/<case>.npz``, so worker
processes read small arrays instead of NIfTI files or re-running the simulator.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..inputs import load_case
from ..preprocess import Normalization, coverage_on, foreground_mask, mask_image, resample_to
from ..sequences import SEGMENTATION, canonical, discover_case, read_case_manifest
from ..volume import Volume, geometry_differences, read_volume

NORMALIZATIONS = ("zscore", "percentile")


@dataclass(frozen=True)
class Case:
    """One subject ready for sampling: normalised arrays on one grid.

    ``volumes`` maps sequence -> float32 (z, y, x) in [-1, 1] (or (t, z, y, x) for a series); ``mask`` is
    the head/body foreground; ``labels`` the lesion labels (zeros when the source has none); ``organ`` the
    organ's own tissue where the source knows it (the phantom brain's intracranial tissue, without scalp,
    skull and muscle; the phantom breasts' interior, without the thorax; None otherwise: a skull-stripped
    BraTS case's foreground already is its brain). ``inside`` maps sequence -> the voxels inside its field of
    view, for a case resampled from its own files' grids (a slab FLAIR holds data in part of the grid only);
    None when every sequence holds data everywhere on the grid.
    """

    name: str
    volumes: dict[str, np.ndarray]
    mask: np.ndarray
    labels: np.ndarray
    meta: dict
    organ: np.ndarray | None = None
    inside: dict[str, np.ndarray] | None = None

    @property
    def organ_or_foreground(self) -> np.ndarray:
        """The organ where the source knows it, else the whole foreground."""
        return self.mask if self.organ is None else self.organ

    def covers(self, *names: str) -> np.ndarray:
        """The voxels inside the field of view of every named sequence (of all the case's without names)."""
        if self.inside is None:
            return np.ones(self.mask.shape, bool)
        return np.logical_and.reduce([self.inside[n] for n in (names or tuple(self.volumes))])

    @cached_property
    def trainable(self) -> np.ndarray:
        """The foreground where every sequence has data: where training samples are centred and scored
        (computed once: the samplers ask for it at every draw)."""
        return self.mask if self.inside is None else self.mask & self.covers()


def normalize(array: np.ndarray, mask: np.ndarray, scheme: str) -> np.ndarray:
    """``zscore``: the U-Net cT1 thesis (z-score in the foreground, cut off at 5 SD, scaled to [-1, 1]);
    ``percentile``: Seq2Seq's code (clip to [0, 2 x p99 of the foreground], mapped to [-1, 1])."""
    if scheme == "zscore":
        return Normalization.zscore(array, mask).apply(array)
    if scheme == "percentile":
        return Normalization.percentile(array, mask, lower=0, upper=99, upper_factor=2.0).apply(array)
    raise InputError(f"unknown normalisation '{scheme}'; use one of {', '.join(NORMALIZATIONS)}")


def normalize_case(name: str, volumes: dict[str, Volume], labels: Volume | None, scheme: str,
                   meta: dict | None = None, foreground: str = "body",
                   inside: Mapping[str, np.ndarray] | None = None) -> Case:
    """Check one grid, build the foreground mask from all 3D sequences, normalise each sequence (within the
    voxels ``inside`` its field of view when given, as ``pipeline.prepare`` does: the zeros a resampler fills
    in around a slab are not tissue)."""
    first_name, first = next(iter(volumes.items()))
    files = (meta or {}).get("files", {})
    for seq, vol in volumes.items():
        diffs = geometry_differences(first, vol)
        if diffs:
            where = f"{seq} ({files[seq]})" if seq in files else seq
            raise InputError(f"case {name}: {where} is not on the grid of {first_name} ({'; '.join(diffs)}); "
                             "register the case first (mri-synthesis register)")
        vol.require_finite(f"case {name}, {seq}")
    if labels is not None and (diffs := geometry_differences(first.frame(0) if first.is_series else first, labels)):
        where = f"its segmentation ({files[SEGMENTATION]})" if SEGMENTATION in files else "its segmentation"
        raise InputError(f"case {name}: {where} is not on the grid of {first_name} ({'; '.join(diffs)}); the labels "
                         "must lie on the images' voxels")
    fields = None if inside is None else [inside[seq] for seq in volumes]
    mask = foreground_mask(mask_image([v.array for v in volumes.values()], fields), method=foreground)
    arrays = {}
    for seq, vol in volumes.items():
        region = mask if inside is None else mask & inside[seq]
        if not region.any():
            raise InputError(f"case {name}: {seq} covers none of the case's foreground (its field of view lies "
                             "outside the anatomy)")
        if vol.is_series:  # one normalisation for all frames keeps the enhancement curve's shape
            flat = vol.array.reshape(vol.shape[0], -1)
            arrays[seq] = normalize(flat, np.broadcast_to(region.ravel(), flat.shape), scheme).reshape(vol.shape)
        else:
            arrays[seq] = normalize(vol.array, region, scheme)
    label_array = labels.array.astype(np.uint8) if labels is not None else np.zeros(mask.shape, np.uint8)
    grid = {"spacing": list(first.spacing), "origin": list(first.origin), "direction": list(first.direction)}
    covered = None if inside is None else {seq: np.asarray(inside[seq], bool) for seq in volumes}
    return Case(name, arrays, mask, label_array, {**(meta or {}), "grid": grid}, inside=covered)


#: bumped when what a cached case holds changes (2: the breast organ; 3: a resampled sequence normalised
#: within its field of view; 4: each sequence's field of view; 5: the mask drawn on sequences put on one
#: scale, ``preprocess.mask_image``), so an older entry is rebuilt
CACHE_FORMAT = 5


class CaseCache:
    """Cases stored as compressed ``.npz`` files, written once, read by every worker; an entry of another
    :data:`CACHE_FORMAT` or a damaged one is rebuilt."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def save(self, case: Case) -> None:
        tmp = self.folder / f".partial-{case.name}.npz"
        organ = {} if case.organ is None else {"organ": case.organ}
        inside = {} if case.inside is None else {f"inside_{k}": v for k, v in case.inside.items()}
        np.savez_compressed(tmp, format=CACHE_FORMAT, mask=case.mask, labels=case.labels,
                            meta=json.dumps(case.meta), **organ, **inside,
                            **{f"seq_{k}": v for k, v in case.volumes.items()})
        tmp.replace(self.path(case.name))

    def load(self, name: str) -> Case | None:
        path = self.path(name)
        if not path.exists():
            return None
        try:
            with np.load(path) as data:
                if "format" not in data.files or int(data["format"]) != CACHE_FORMAT:
                    raise ValueError(f"cache format {data['format'] if 'format' in data.files else 1}")
                volumes = {k[4:]: data[k] for k in data.files if k.startswith("seq_")}
                organ = data["organ"] if "organ" in data.files else None
                inside = {k[7:]: data[k] for k in data.files if k.startswith("inside_")} or None
                return Case(name, volumes, data["mask"], data["labels"], json.loads(str(data["meta"])), organ, inside)
        except (OSError, ValueError, KeyError, zlib.error):  # a damaged or outdated cache entry is rebuilt
            path.unlink(missing_ok=True)
            return None


class PhantomSource:
    """Phantom subjects with seeds ``seeds``; ``sequences`` selects what each case keeps.

    Subjects are acquired as the demo's and the user's are (thick slices, head motion, bias, noise) and
    then aligned onto the T1 grid with the phantom's *true* transforms: what a perfect registration
    gives, without its cost, so the model learns from the thick-slice blur it will meet at inference.
    """

    def __init__(self, anatomy: str, seeds: Sequence[int], *, sequences: Sequence[str], scheme: str,
                 resolution: float | None = None, snr: float | None = 40.0, foreground: str = "body") -> None:
        self.anatomy, self.seeds, self.sequences, self.scheme = anatomy, list(seeds), list(sequences), scheme
        self.foreground = foreground
        self.options = {"snr": snr}
        if resolution is not None:
            self.options["resolution"] = resolution

    def names(self) -> list[str]:
        from ..phantom.cases import case_name
        return [case_name(self.anatomy, s) for s in self.seeds]

    def build(self, name: str) -> Case:
        from ..phantom import sample
        seed = self.seeds[self.names().index(name)]
        subject = sample(self.anatomy, seed, **self.options)
        missing = [s for s in self.sequences if s not in subject.sequences]
        if missing:
            raise InputError(f"the {self.anatomy} phantom has no {', '.join(missing)}")
        case = normalize_case(name, aligned_sequences(subject, self.sequences), subject.labels, self.scheme,
                              {"source": "phantom", "anatomy": self.anatomy, "seed": seed}, self.foreground)
        return replace(case, organ=organ_mask(subject))


#: the phantom brain's intracranial tissues: what a skull-stripped scan keeps (its lesions included)
INTRACRANIAL = ("csf", "gm", "wm", "choroid", "blood", "necrosis", "oedema", "enhancing")


def organ_mask(subject) -> np.ndarray | None:
    """Where a phantom subject's organ is, on its reference grid: for the brain, voxels at least half
    intracranial tissue (so "normal brain" leaves out the scalp, skull, muscle and dura a skull-stripped
    scan would not have); for the breast, the breasts' interior (the MP-GAN paper draws its healthy
    patches "inside the breast", not in the thorax); None for anatomies without one."""
    if subject.anatomy == "breast":
        return subject.regions["breast"].array > 0.5
    if subject.anatomy != "brain":
        return None
    return sum(subject.fractions[t].array for t in INTRACRANIAL if t in subject.fractions) >= 0.5


def aligned_sequences(subject, names: Sequence[str]) -> dict[str, Volume]:
    """A phantom subject's sequences moved onto its reference (T1) grid with the true transforms."""
    reference = subject.sequences[subject.reference]
    return {s: resample_to(subject.sequences[s], reference, transform=_affine(subject.transforms[s])) for s in names}


def _affine(matrix) -> sitk.AffineTransform:
    """A 4x4 homogeneous matrix (LPS mm) as a SimpleITK transform."""
    m = np.asarray(matrix, dtype=float)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(m[:3, :3].ravel()))
    transform.SetTranslation(tuple(m[:3, 3]))
    return transform


class FolderSource:
    """Case folders under ``root`` (BraTS/breast naming) or the cases of a manifest CSV."""

    def __init__(self, root: str | Path, *, sequences: Sequence[str], scheme: str, require_all: bool = True,
                 foreground: str = "body", voxel_size_mm: float | None = None, register: str = "none",
                 orientation: str | None = None) -> None:
        """``require_all=False`` (ranking): a case needs at least two of ``sequences`` and keeps those it has.

        ``voxel_size_mm`` (a trained model's, for ranking): each case is resampled onto that isotropic grid
        over its reference sequence's field of view, as ``synthesize`` does, since a network sees anatomy in
        voxels. ``register`` (a :data:`registration.PRESETS` name): every other sequence is first registered
        onto the reference (T1, else the finest); ``none`` takes the cases as aligned in physical space.
        Without either, every sequence of a case must already share one grid (training's contract).
        ``orientation`` (with ``voxel_size_mm``): the model's training orientation, which that grid takes."""
        from ..registration import PRESETS

        if register not in PRESETS:
            raise InputError(f"unknown registration preset '{register}'; use one of {', '.join(PRESETS)}")
        self.root, self.sequences, self.scheme = Path(root), [canonical(s) for s in sequences], scheme
        self.foreground = foreground
        self.require_all = require_all
        self.voxel_size_mm, self.register, self.orientation = voxel_size_mm, register, orientation
        self.files = self._manifest(self.root) if self.root.is_file() else self._folders(self.root)

    def _folders(self, root: Path) -> dict[str, dict[str, Path]]:
        if not root.is_dir():
            raise InputError(f"{root}: no such data folder or manifest")
        cases = {}
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            cases[folder.name] = discover_case(folder)
        if not cases:
            raise InputError(f"{root}: no case folders (expected <root>/<case>/<case>-t1n.nii.gz, …)")
        return self._require(cases)

    def _manifest(self, path: Path) -> dict[str, dict[str, Path]]:
        return self._require(read_case_manifest(path))

    def _require(self, cases: dict[str, dict[str, Path]]) -> dict[str, dict[str, Path]]:
        for name, files in cases.items():
            missing = [s for s in self.sequences if s not in files]
            if not self.require_all:
                if len(self.sequences) - len(missing) < 2:
                    raise InputError(f"case {name}: has {len(self.sequences) - len(missing)} of "
                                     f"{', '.join(self.sequences)}; at least two are needed")
            elif missing:
                raise InputError(f"case {name}: missing {', '.join(missing)} (the model needs "
                                 f"{', '.join(self.sequences)})")
        return cases

    def names(self) -> list[str]:
        return list(self.files)

    def header_voxel_sizes(self) -> dict[str, tuple[float, float, float]]:
        """{case: the spacing of the file whose grid :meth:`build` puts it on}, from headers alone, so that
        cases of different voxel sizes are refused before minutes of caching (None for ``voxel_size_mm``,
        which resamples them all). A header that cannot be read is left to :meth:`build` to report."""
        from ..volume import read_grid_spacing

        sizes = {}
        for name, files in self.files.items():
            present = [s for s in self.sequences if s in files]
            headers = {s: read_grid_spacing(files[s]) for s in present}
            if any(h is None for h in headers.values()):
                continue
            if self.register == "none":  # every sequence on one grid: the first one's
                grid = present[0]
            else:  # :func:`pipeline.default_reference`: T1, else the finest 3D, else the finest series
                grid = "T1" if "T1" in present else min(present, key=lambda s: (headers[s][1],
                                                                                float(np.prod(headers[s][0]))))
            sizes[name] = headers[grid][0]
        return sizes

    def build(self, name: str) -> Case:
        files = self.files[name]
        volumes = load_case({s: files[s] for s in self.sequences if s in files})  # every bad file named at once
        labels = (read_volume(files[SEGMENTATION]).require_3d(f"case {name}: segmentation {files[SEGMENTATION]}")
                  if SEGMENTATION in files else None)  # one label per voxel: a 4D file is no segmentation
        if self.voxel_size_mm or self.register != "none":
            try:
                volumes, labels, inside = self._onto_one_grid(volumes, labels)
            except InputError as err:  # registration and overlap errors name the sequence, not the case
                raise InputError(f"case {name}: {err}") from err
        else:  # files on one grid (checked next): a slab stored zero-padded to it has data in part of it only
            first = next(iter(volumes.values()))
            grid = first.frame(0) if first.is_series else first
            inside = {seq: coverage_on(volume, grid) for seq, volume in volumes.items()}
        return normalize_case(name, volumes, labels, self.scheme,
                              {"source": "folder", "files": {k: str(v) for k, v in files.items()}}, self.foreground,
                              inside)

    def _onto_one_grid(self, volumes: dict[str, Volume],
                       labels: Volume | None) -> tuple[dict[str, Volume], Volume | None, dict[str, np.ndarray]]:
        """Every sequence (registered when asked) and the labels on the reference's grid, or on the isotropic
        model grid over it, as ``synthesize`` prepares its inputs (``pipeline.onto_grid``); and the grid's
        voxels inside each sequence's field of view."""
        from ..pipeline import default_reference, onto_grid, work_grid

        reference = default_reference(volumes)
        fixed = volumes[reference].frame(0) if volumes[reference].is_series else volumes[reference]
        grid = work_grid(fixed, self.voxel_size_mm, self.orientation) if self.voxel_size_mm else fixed
        moved, _, inside = onto_grid(volumes, tuple(volumes), reference, self.register, grid)
        return moved, (resample_to(labels, grid, interpolation="nearest") if labels is not None else None), inside


def cached_voxel_size(cache: CaseCache, names: Iterable[str], tolerance: float = 0.02, *,
                      max_anisotropy: float | None = None) -> float:
    """The voxel size (mm) the cached cases ``names`` share, which exported weights record as the grid the
    pipeline resamples a user's inputs onto: their finest spacing (in plane for thick slices, as the breast
    phantom's 2 x 2 x 4 mm records 2). Cases of different spacings are refused (a network learns anatomy in
    voxels), with what to do: ``train --voxel-size``."""
    sizes = {}
    for name in names:
        try:
            with np.load(cache.path(name)) as data:
                sizes[name] = np.asarray(json.loads(str(data["meta"]))["grid"]["spacing"], float)
        except (OSError, KeyError, ValueError, zlib.error) as err:
            raise InputError(f"{cache.path(name)}: the cached case is missing or damaged, so the voxel size it "
                             f"was trained at cannot be read ({err})") from err
    return shared_voxel_size(sizes, tolerance, max_anisotropy=max_anisotropy)


def shared_voxel_size(sizes: Mapping[str, Sequence[float]], tolerance: float = 0.02, *,
                      max_anisotropy: float | None = None) -> float:
    """The finest spacing of cases that share one voxel size ({case: spacing}, in any axis order), else a
    clear error naming two that differ and what to do. ``max_anisotropy`` (a 3D model on a folder of cases):
    voxels longer than that many times in one direction are refused too, since the weights record one size
    that inference resamples every direction to, and a 3D network learns anatomy in voxels. Slice models
    keep the finest (in-plane) spacing, as the breast phantom's 2 x 2 x 4 mm records 2."""
    first_name, first = next(iter(sizes.items()))
    if max_anisotropy is not None and max(first) > max_anisotropy * min(first):
        raise InputError(f"the cases' voxels are far from isotropic ({first_name}: "
                         f"{' x '.join(f'{v:g}' for v in first)} mm), and a 3D model's weights record one voxel size "
                         "that inference resamples every direction to: pass --voxel-size MM to resample every case "
                         "onto one isotropic grid")
    for name, spacing in sizes.items():
        if not np.allclose(np.sort(spacing), np.sort(first), rtol=tolerance, atol=0):
            def shown(s):
                return " x ".join(f"{v:g}" for v in s)
            raise InputError(f"the cases have different voxel sizes ({first_name} {shown(first)} mm, {name} "
                             f"{shown(spacing)} mm): pass --voxel-size MM to resample every case onto one "
                             "isotropic grid")
    return float(min(first))


def load_cases(source, names: Iterable[str], cache: CaseCache, prepare=None) -> list[Case]:
    """Cases from the cache, building (and caching) the missing ones; ``prepare(case)``, when given,
    replaces each case as soon as it is loaded (so only one full case is in memory at a time)."""
    cases = []
    for name in names:
        case = cache.load(name)
        if case is None:
            case = source.build(name)
            cache.save(case)
        cases.append(prepare(case) if prepare is not None else case)
    return cases


def build_cache(source, names: Iterable[str], cache: CaseCache) -> None:
    """Build and cache the cases not yet cached, keeping none of them in memory."""
    for name in names:
        if not cache.path(name).exists():
            cache.save(source.build(name))


def split_cases(names: Sequence[str], validation_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Subject-level split (no subject in both); at least one validation case when there are two or more."""
    if len(names) < 2:
        raise InputError(f"training needs at least 2 cases (one for validation), not {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = min(max(1, int(round(validation_fraction * len(names)))), len(names) - 1)
    val = sorted(names[i] for i in order[:n_val])
    return [n for n in names if n not in val], val
