"""Shared fixtures for the MRISynthesisLib test suite: tiny oblique anisotropic volumes and file hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np
import pytest

from MRISynthesisLib.volume import Volume

#: Anisotropic spacing (x, y, z) in mm, like a thick-slice clinical acquisition.
SPACING = (0.8, 1.1, 3.0)
#: Origin exactly representable in float32 (NIfTI stores its geometry as float32).
ORIGIN = (-12.25, 45.5, -7.875)


def rotation_matrix(axis: Iterable[float], degrees: float) -> np.ndarray:
    """Rodrigues' rotation about ``axis`` by ``degrees``."""
    k = np.asarray(list(axis), dtype=float)
    k /= np.linalg.norm(k)
    theta = np.deg2rad(degrees)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


#: A rotation by 20 degrees about the (1, 2, 3) axis: every direction cosine is off-axis.
OBLIQUE = tuple(rotation_matrix((1.0, 2.0, 3.0), 20.0).ravel())


def make_volume(shape=(6, 7, 8), *, spacing=SPACING, origin=ORIGIN, direction=OBLIQUE, seed: int = 0,
                frames=None, low: float = 0.0, high: float = 1000.0) -> Volume:
    """A small random Volume (z, y, x) or series (t, z, y, x) on an oblique anisotropic grid."""
    rng = np.random.default_rng(seed)
    array = rng.uniform(low, high, size=shape).astype(np.float32)
    return Volume(array, spacing, origin, direction, tuple(frames) if frames is not None else ())


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hash_files(paths: Iterable[str | Path]) -> dict[str, str | None]:
    """{path: sha256, or None for a path that does not exist (or is a folder)}."""
    return {str(p): (sha256(p) if Path(p).is_file() else None) for p in paths}


def hash_tree(folder: str | Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def oblique_volume() -> Volume:
    return make_volume()


@pytest.fixture(name="make_volume")
def make_volume_fixture():
    return make_volume


@pytest.fixture(name="hash_files")
def hash_files_fixture():
    return hash_files


#: what the untrained bundles of the tests take and make (model -> inputs, targets, normalisation, extras)
UNTRAINED = {
    "unet-ct1": (("T1", "T2", "FLAIR"), ("T1ce",), "zscore", {"patch_size": (32, 32, 32)}),
    "seq2seq": (("T1", "T1ce", "T2", "FLAIR"), ("T1", "T1ce", "T2", "FLAIR"), "percentile", {}),
    "tc-mgan": (("T2",), ("FLAIR", "T1ce", "T1"), "zscore", {}),
    "important-net": (("T1", "T1ce", "FLAIR"), ("T2",), "zscore", {}),
}


def bundle_untrained(folder, model: str, *, voxel_size_mm: float = 4.0, anatomy: str = "brain", **fields):
    """Add an untrained lite ``model`` (seeded, fp16) and its manifest entry to the models ``folder``.

    Tests run the real loading, checking and inference paths on it; its outputs mean nothing.
    """
    import torch

    from MRISynthesisLib.models import build
    from MRISynthesisLib.weights import WeightsEntry, read_manifest, sha256_of, write_manifest

    inputs, targets, normalization, extras = UNTRAINED[model] if model in UNTRAINED else ((), (), "zscore", {})
    fields = {"inputs": inputs, "targets": targets, "normalization": normalization, **extras, **fields}
    folder = Path(folder)
    torch.manual_seed(0)
    net = build(model, "lite", **fields.get("build_overrides", {}))
    file = fields.pop("file", f"{model}-{anatomy}-lite.pt")
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, folder / file)
    entry = WeightsEntry(file=file, model=model, config="lite", anatomy=anatomy, voxel_size_mm=voxel_size_mm,
                         sha256=sha256_of(folder / file), size_bytes=(folder / file).stat().st_size, **fields)
    write_manifest([e for e in read_manifest(folder) if e.file != file] + [entry], folder)
    return entry


def slab_of(volume, first: int, last: int):
    """Axial slices ``first:last`` of ``volume`` where they lie: a slab acquisition of the same anatomy."""
    origin = np.asarray(volume.origin) + volume.direction_matrix @ (0.0, 0.0, first * volume.spacing[2])
    return Volume(volume.array[first:last].copy(), volume.spacing, tuple(origin), volume.direction)
