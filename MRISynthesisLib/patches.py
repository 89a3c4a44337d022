"""Multiparametric lesion patches from breast cases (Haarburger et al., section 2), for the MP-GAN.

Following the paper: axial patches centred on the centre of mass of each benign and malignant lesion,
and on random points inside the breast with no lesion within a ``size/2`` x ``size/2`` neighbourhood
(``healthy``, "no findings"). "Inside the breast" is the phantom's breast region (its breasts' interior,
not the thorax behind the chest wall, whose lungs and heart the paper's patches never show); a folder of
real cases has no such region, so its healthy centres come from the whole body foreground.

Where the paper is vague, our choices:

* An *individual lesion* is a connected lesion mask after closing gaps of up to :data:`MERGE_VOXELS`
  voxels (26-connectivity). A spiculated mass resampled to the training grid falls apart into pieces
  (the breast phantom's malignant masses into 2-6 face-connected ones); counting each piece as a lesion
  centred patches on spicule tips and gave one malignant subject up to six patches, most of them off
  the enhancing mass. The patch is centred on the centre of mass of the whole lesion.
* ``per_lesion="centre"`` (default, used for evaluation): one patch per lesion, on the axial slice of
  its centre of mass, so real patches of a set are independent samples, as a two-sample test needs.
  ``per_lesion="slices"`` (training): one patch per axial slice whose lesion cross-section is at least
  half the lesion's largest, each centred on that slice's centre of mass. The paper's Table 1 has 2.4
  (benign) and 3.3 (malignant) patches per lesion, i.e. several axial slices of each lesion on its
  32-slice grid; on our thinner slices the central half-area slices cover about the same extent. Each patch has the MP-GAN's seven channels (``models.mp_gan.CHANNELS``:
T2, T1 pre, T1 post 1-4 and the subtraction) from normalised [-1, 1] volumes, so it is what the
generator learns to produce. Patches are stored as one compressed ``.npz`` per split (``patches``
(N, 7, S, S) float32, ``classes`` (N,) int64 in ``models.mp_gan.CLASSES`` order).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
from scipy import ndimage

from .errors import InputError
from .models.mp_gan import CHANNELS, CLASSES, stack_channels
from .volume import non_finite

#: breast phantom label -> MP-GAN class index (cysts, label 3, are not a class of the paper)
LESION_CLASS = {1: CLASSES.index("benign"), 2: CLASSES.index("malignant")}
#: pieces of one label closer than this (voxels, after dilation) count as one lesion
MERGE_VOXELS = 2
PER_LESION = ("centre", "slices")


def lesions(labels: np.ndarray, label: int) -> list[np.ndarray]:
    """The voxel masks of the individual lesions of ``label``: pieces within :data:`MERGE_VOXELS` merged."""
    mask = labels == label
    if not mask.any():
        return []
    grown = ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(3, 3), iterations=MERGE_VOXELS)
    groups, count = ndimage.label(grown, structure=np.ones((3, 3, 3)))
    return [mask & (groups == k) for k in range(1, count + 1)]


def _lesion_centres(lesion: np.ndarray, per_lesion: str) -> list[tuple[int, int, int]]:
    if per_lesion == "centre":
        return [tuple(int(round(c)) for c in ndimage.center_of_mass(lesion))]
    area = lesion.sum(axis=(1, 2))
    centres = []
    for z in np.flatnonzero(area >= 0.5 * area.max()):
        cy, cx = ndimage.center_of_mass(lesion[z])
        centres.append((int(z), int(round(cy)), int(round(cx))))
    return centres


def _crop(plane: np.ndarray, center: tuple[int, int], size: int) -> np.ndarray:
    """A size x size window of the last two axes around ``center``, padded with -1 (background)."""
    out = np.full(plane.shape[:-2] + (size, size), -1.0, np.float32)
    y0, x0 = center[0] - size // 2, center[1] - size // 2
    ys, xs = slice(max(y0, 0), min(y0 + size, plane.shape[-2])), slice(max(x0, 0), min(x0 + size, plane.shape[-1]))
    out[..., ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = plane[..., ys, xs]
    return out


def _patch(t2: np.ndarray, dce: np.ndarray, z: int, center: tuple[int, int], size: int) -> np.ndarray:
    return stack_channels(_crop(t2[z], center, size), _crop(dce[:, z], center, size))


def extract_patches(volumes: Mapping[str, np.ndarray], labels: np.ndarray, mask: np.ndarray,
                    rng: np.random.Generator, *, size: int = 64, healthy: int = 8,
                    per_lesion: str = "centre", covered: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lesion and healthy-tissue patches of one case.

    Args:
        volumes: ``T2`` (z, y, x) and ``DCE`` (t >= 5, z, y, x), normalised to [-1, 1], on one grid.
        labels: lesion labels (1 benign, 2 malignant; others ignored).
        mask: where healthy centres are drawn: the breasts' interior where the source knows it
            (``Case.organ_or_foreground``: the phantom's), else the body foreground.
        healthy: how many healthy patches to draw (fewer when the breast has no room for them).
        per_lesion: ``centre`` (one patch per lesion) or ``slices`` (its central axial slices), see above.
        covered: where both T2 and DCE hold data (a folder case whose DCE is a slab: ``Case.covers``); no
            patch is centred elsewhere, lesion or healthy, since its channels would be the zeros filled in
            there. None: everywhere.
    Returns:
        (patches (N, 7, size, size) float32, classes (N,) int64).
    """
    if "T2" not in volumes or "DCE" not in volumes:
        raise InputError(f"patches need T2 and DCE; the case has {', '.join(volumes) or 'nothing'}")
    t2, dce = np.asarray(volumes["T2"]), np.asarray(volumes["DCE"])
    if t2.ndim != 3 or dce.ndim != 4 or dce.shape[1:] != t2.shape or dce.shape[0] < 5:
        raise InputError(f"need T2 (z, y, x) and DCE (t >= 5, z, y, x) on one grid, not {t2.shape} and {dce.shape}")
    if labels.shape != t2.shape or mask.shape != t2.shape or (covered is not None and covered.shape != t2.shape):
        raise InputError(f"labels {labels.shape}, mask {mask.shape} and coverage must match T2's grid {t2.shape}")
    if size < 16 or size % 16:
        raise InputError(f"patch size must be a positive multiple of 16, not {size}")
    if per_lesion not in PER_LESION:
        raise InputError(f"per_lesion must be one of {', '.join(PER_LESION)}, not {per_lesion!r}")
    patches, classes = [], []
    for label, class_index in LESION_CLASS.items():
        for lesion in lesions(labels, label):
            for cz, cy, cx in _lesion_centres(lesion, per_lesion):
                if covered is not None and not covered[cz, cy, cx]:
                    continue
                patches.append(_patch(t2, dce, cz, (cy, cx), size))
                classes.append(class_index)
    near_lesion = ndimage.maximum_filter(np.isin(labels, list(LESION_CLASS) + [3]), size=(1, size // 2, size // 2))
    candidates = np.argwhere(mask & ~near_lesion & (True if covered is None else covered))
    for index in rng.choice(len(candidates), min(healthy, len(candidates)), replace=False) if len(candidates) else []:
        z, y, x = candidates[index]
        patches.append(_patch(t2, dce, int(z), (int(y), int(x)), size))
        classes.append(CLASSES.index("healthy"))
    if not patches:
        return np.zeros((0, len(CHANNELS), size, size), np.float32), np.zeros(0, np.int64)
    return np.stack(patches).astype(np.float32), np.asarray(classes, np.int64)


def save_patches(path: str | Path, patches: np.ndarray, classes: np.ndarray, source: str | None = None) -> Path:
    """One compressed file per split, written to a temporary name and renamed; ``source`` (say
    ``phantom:breast:150``) is stored beside the patches and read back by :func:`patch_source`."""
    patches, classes = np.asarray(patches, np.float32), np.asarray(classes, np.int64)
    if patches.ndim != 4 or patches.shape[1] != len(CHANNELS) or len(classes) != len(patches):
        raise InputError(f"patches must be (N, {len(CHANNELS)}, S, S) with N classes, not {patches.shape} and "
                         f"{classes.shape}")
    path = Path(path)
    tmp = path.with_name(f".partial-{path.name}")
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, patches=patches, classes=classes, channels=np.array(CHANNELS),
                            class_names=np.array(CLASSES), **({"source": np.array(source)} if source else {}))
    tmp.replace(path)
    return path


def load_patches(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A patch file as ``save_patches`` writes it; a missing, damaged or foreign file, or non-finite values,
    are refused with the reason (they would silently skew the 1-NN accuracy and FID)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        with np.load(path) as data:
            if not hasattr(data, "files"):  # a plain .npy array, whatever its name
                raise ValueError("not an .npz archive")
            names = tuple(data["channels"]), tuple(data["class_names"])
            patches, classes = data["patches"], data["classes"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, AttributeError,
            TypeError) as err:
        why = "not an .npz archive" if "pickled" in str(err) else ' '.join(str(err).split())[:200]
        raise InputError(f"{path}: not a patch file as evaluate-gan writes it (corrupt, truncated, or another "
                         f"kind of file?): {why}") from err
    if names != (CHANNELS, CLASSES):
        raise InputError(f"{path}: patches of other channels or classes than the MP-GAN's")
    bad = non_finite(patches)
    if bad:
        raise InputError(f"{path}: contains {bad} value(s)")
    if len(classes) != len(patches):
        raise InputError(f"{path}: {len(patches)} patches but {len(classes)} class labels")
    if patches.size and (patches.min() < -1.01 or patches.max() > 1.01):  # the 1-NN and FID compare [-1, 1] sets
        raise InputError(f"{path}: patches range over [{patches.min():.3g}, {patches.max():.3g}], not the normalised "
                         "[-1, 1] the generator and evaluate-gan's real patches use")
    return patches, classes


def patch_source(path: str | Path) -> str | None:
    """Where a patch file's patches came from, when :func:`save_patches` was told (else None)."""
    try:
        with np.load(path) as data:
            return str(data["source"]) if "source" in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
