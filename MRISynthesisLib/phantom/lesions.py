"""Irregular lesion shapes: a distance-like level set roughened by smooth random noise.

A lesion is described by ``d(x) = |x - c| / r + a n(x)`` with ``n`` smooth unit-variance noise:
``d < 1`` is inside. Nested thresholds of one ``d`` give compartments (necrotic core inside the enhancing
rim); a second, rougher ``d`` gives finger-like oedema. Everything works inside a bounding box so a
lesion costs little however large the volume.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def bounding_box(center_vox: np.ndarray, half_size_vox: np.ndarray, shape) -> tuple[slice, ...]:
    lo = np.maximum(np.floor(center_vox - half_size_vox).astype(int), 0)
    hi = np.minimum(np.ceil(center_vox + half_size_vox).astype(int) + 1, np.asarray(shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def smooth_noise(shape, rng: np.random.Generator, correlation_vox: float) -> np.ndarray:
    """Gaussian noise smoothed to ``correlation_vox`` and rescaled to zero mean, unit SD."""
    field = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), max(correlation_vox, 0.5), mode="wrap")
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def roughened_distance(box_shape, center_in_box: np.ndarray, spacing_zyx, radius_mm: float, roughness: float,
                       rng: np.random.Generator, correlation_mm: float) -> np.ndarray:
    """``d(x)`` in a box: 1 on the (irregular) boundary of a lesion of mean radius ``radius_mm``."""
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(box_shape, center_in_box, spacing_zyx)],
                        indexing="ij", sparse=True)
    dist = np.sqrt(sum(g * g for g in grids))
    noise = smooth_noise(box_shape, rng, correlation_mm / float(np.mean(spacing_zyx)))
    # additive roughness keeps the shape bounded (a multiplicative one throws islands far away)
    return dist / radius_mm + roughness * noise


def soft_inside(d: np.ndarray, level: float, width: float = 0.06) -> np.ndarray:
    """Partial-volume fraction of ``d < level`` with a soft edge of ``width`` (in units of d)."""
    return (1.0 / (1.0 + np.exp(np.clip((d - level) / width, -50, 50)))).astype(np.float32)


def spiculated_distance(box_shape, center_in_box, spacing_zyx, radius_mm: float, n_spicules: int,
                        rng: np.random.Generator) -> np.ndarray:
    """``d(x)`` of a mass with thin radial spicules (malignant breast lesions)."""
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(box_shape, center_in_box, spacing_zyx)],
                        indexing="ij", sparse=True)
    z, y, x = grids
    dist = np.sqrt(z * z + y * y + x * x) + 1e-6
    d = dist / radius_mm
    for _ in range(n_spicules):
        u = rng.normal(0, 1, 3)
        u /= np.linalg.norm(u)
        cos = (z * u[0] + y * u[1] + x * u[2]) / dist
        # along the spicule direction the lesion reaches out to ~2.2 radii, tapering off quickly sideways
        reach = 1.0 + 1.2 * np.clip((cos - 0.97) / 0.03, 0, 1) ** 2
        d = np.minimum(d, dist / (radius_mm * reach))
    return d
