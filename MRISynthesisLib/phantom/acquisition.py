"""Simulated acquisition: a sequence's own grid, patient motion, slice profile, bias field and noise.

The phantom computes each sequence's noiseless signal on the subject's fine reference grid; this module
turns it into what a scanner would have written: resampled through a small rigid head motion onto the
sequence's grid (thick slices blur along z first), times a smooth receive-coil bias, with Rician noise.
Each effect can be turned off (tests check the physics without them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume
from .physics import FIELD_STRENGTHS


def check_acquisition_options(*, snr: float | None, resolution: float, field_strength: float | None) -> None:
    """The options every anatomy shares, checked before any work is done."""
    if snr is not None and not snr > 0:
        raise InputError(f"`snr` must be positive (or None for no noise), not {snr}")
    if not 0.5 <= resolution <= 8:
        raise InputError(f"`resolution` must be between 0.5 and 8 mm, not {resolution}")
    if field_strength is not None and field_strength not in FIELD_STRENGTHS:
        raise InputError(f"`field_strength` must be one of {FIELD_STRENGTHS}, not {field_strength}")


@dataclass(frozen=True)
class RigidMotion:
    """Head motion of one acquisition relative to the reference: Euler angles (deg) about ``center``
    (LPS mm), then ``translation`` (mm).

    ``acquisition_to_reference`` is what the simulator applies (a point of the acquired image -> where that
    anatomy is in the reference); ``reference_to_acquisition`` is its inverse, which is what a registration
    with fixed = reference and moving = this acquisition estimates (ITK's convention).
    """

    angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def random(cls, rng: np.random.Generator, max_rotation_deg: float, max_translation_mm: float,
               center_mm) -> "RigidMotion":
        return cls(tuple(rng.uniform(-max_rotation_deg, max_rotation_deg, 3)),
                   tuple(rng.uniform(-max_translation_mm, max_translation_mm, 3)), tuple(float(c) for c in center_mm))

    def acquisition_to_reference(self) -> sitk.Euler3DTransform:
        t = sitk.Euler3DTransform()
        t.SetCenter(self.center_mm)
        t.SetRotation(*np.deg2rad(self.angles_deg))
        t.SetTranslation(self.translation_mm)
        return t

    def reference_to_acquisition(self) -> sitk.Transform:
        return self.acquisition_to_reference().GetInverse()

    def reference_to_acquisition_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix (LPS mm) of :meth:`reference_to_acquisition`."""
        t = self.acquisition_to_reference()
        forward = np.eye(4)
        forward[:3, :3] = np.reshape(t.GetMatrix(), (3, 3))
        forward[:3, 3] = np.asarray(t.TransformPoint((0.0, 0.0, 0.0)))
        return np.linalg.inv(forward)

    def to_dict(self) -> dict:
        return {"angles_deg": list(self.angles_deg), "translation_mm": list(self.translation_mm),
                "center_mm": list(self.center_mm),
                "reference_to_acquisition": self.reference_to_acquisition_matrix().round(6).tolist()}


def thick_slice_grid(reference: Volume, slice_mm: float) -> Volume:
    """A grid with the reference's in-plane sampling and field of view, and slices ``slice_mm`` thick."""
    extent_z = reference.spatial_shape[0] * reference.spacing[2]
    nz = max(2, int(round(extent_z / slice_mm)))
    spacing = (reference.spacing[0], reference.spacing[1], float(slice_mm))
    # keep the centre of the field of view where it was
    shift = ((spacing[2] * (nz - 1)) - reference.spacing[2] * (reference.spatial_shape[0] - 1)) / 2.0
    origin = np.asarray(reference.origin) - reference.direction_matrix[:, 2] * shift
    return Volume(np.zeros((nz,) + reference.spatial_shape[1:], np.float32), spacing, tuple(origin), reference.direction)


def slice_profile_blur(signal: np.ndarray, reference_spacing_z: float, slice_mm: float) -> np.ndarray:
    """Gaussian slice profile (FWHM = slice thickness) along z of the fine grid."""
    fwhm_vox = np.sqrt(max(slice_mm ** 2 - reference_spacing_z ** 2, 0.0)) / reference_spacing_z
    if fwhm_vox < 0.5:
        return signal
    return ndimage.gaussian_filter1d(signal, fwhm_vox / 2.355, axis=0, mode="nearest")


def bias_field(shape, rng: np.random.Generator, strength: float = 0.12) -> np.ndarray:
    """Smooth multiplicative field exp(p(x)), p a random 2nd-order polynomial with SD ``strength``."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [z, y, x, z * y, z * x, y * x, z * z, y * y, x * x]
    coefs = rng.normal(0, 1, len(terms))
    log_field = sum(c * t for c, t in zip(coefs, terms))
    log_field = np.broadcast_to(log_field, shape).astype(np.float32)
    log_field = (log_field - log_field.mean()) / max(float(log_field.std()), 1e-6) * strength
    return np.exp(log_field)


def rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of SD ``sigma`` per channel."""
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)


def acquire(signal: Volume, grid: Volume, motion: RigidMotion | None, *, rng_bias: np.random.Generator | None,
            rng_noise: np.random.Generator | None, noise_sigma: float | None, bias_strength: float = 0.12) -> Volume:
    """The image a scanner writes on ``grid`` from the noiseless ``signal`` on the fine reference grid."""
    data = signal.array
    if grid.spacing[2] > signal.spacing[2] * 1.01:
        data = slice_profile_blur(data, signal.spacing[2], grid.spacing[2])
    same_grid = grid.spatial_shape == signal.spatial_shape and np.allclose(grid.spacing, signal.spacing) \
        and np.allclose(grid.origin, signal.origin)
    if motion is None and same_grid:
        out = np.array(data, np.float32)
    else:
        transform = motion.acquisition_to_reference() if motion is not None else sitk.Transform(3, sitk.sitkIdentity)
        moved = sitk.Resample(signal.with_array(data).to_sitk(), grid.to_sitk(), transform, sitk.sitkLinear, 0.0,
                              sitk.sitkFloat32)
        out = sitk.GetArrayFromImage(moved)
    if rng_bias is not None:
        out = out * bias_field(out.shape, rng_bias, bias_strength)
    if rng_noise is not None and noise_sigma:
        out = rician_noise(out, noise_sigma, rng_noise)
    return grid.with_array(out.astype(np.float32))
