"""Brain anatomy from the ICBM 2009a nonlinear symmetric template (MNI152) shipped in nilearn's wheel.

Tissue fractions on the template's 1 mm grid: GM and WM from the template's probability maps; CSF
fills the brain envelope (GM+WM closed and hole-filled, which adds sulci and ventricles) minus GM and WM.
The template shipped by nilearn is skull-stripped (zero outside the brain), so the tissues outside it
are layers at typical adult thicknesses from the brain surface outward: subarachnoid CSF, dura, inner
table of the skull, fatty diploe, outer table, temporal muscle/galea, subcutaneous fat and skin, their
thickness roughened by a fixed smooth field. Choroid plexus sits in the deep ventricles; with the dura it
gives the physiological enhancement seen on post-contrast T1.

Licence of the template (credited in the README): Copyright (C) 1993-2009 Louis Collins, McConnell
Brain Imaging Centre, Montreal Neurological Institute, McGill University; free use with the copyright
notice kept (Fonov et al., NeuroImage 2011;54:313-327; Fonov et al., NeuroImage 2009;47:S102).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError

#: Channels of the template's fraction stack, in order.
TEMPLATE_TISSUES = ("csf", "gm", "wm", "fat", "bone", "muscle", "dura", "choroid")


def _template_file(kind: str) -> Path:
    try:
        import nilearn
    except ImportError as err:  # pragma: no cover - nilearn is a declared dependency
        raise InputError("the brain phantom needs nilearn (pip install nilearn) for the MNI152 template") from err
    path = Path(nilearn.__file__).parent / "datasets" / "data" / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
    if not path.exists():
        raise InputError(f"{path}: MNI152 template file missing from the nilearn installation")
    return path


@lru_cache(maxsize=1)
def template_fractions() -> tuple[sitk.Image, np.ndarray]:
    """(grid image, fractions[len(TEMPLATE_TISSUES), z, y, x] float32) on the template's 1 mm grid."""
    t1_img = sitk.ReadImage(str(_template_file("t1")), sitk.sitkFloat32)
    gm = sitk.GetArrayFromImage(sitk.ReadImage(str(_template_file("gm")), sitk.sitkFloat32)) / 255.0
    wm = sitk.GetArrayFromImage(sitk.ReadImage(str(_template_file("wm")), sitk.sitkFloat32)) / 255.0

    parenchyma = (gm + wm) > 0.3
    envelope = ndimage.binary_closing(parenchyma, ndimage.generate_binary_structure(3, 1), iterations=3)
    envelope = ndimage.binary_fill_holes(envelope)
    envelope = ndimage.gaussian_filter(envelope.astype(np.float32), 0.7)
    brain = np.maximum(envelope, np.clip(gm + wm, 0, 1))
    csf = np.clip(brain - gm - wm, 0, 1)

    # The template is skull-stripped: build the layers outside the brain from the distance to it
    # (thicknesses in mm, typical adult values, roughened by a fixed smooth field).
    inner = envelope > 0.5
    outside_mm = ndimage.distance_transform_edt(~inner)
    rough = ndimage.gaussian_filter(np.random.default_rng(2009).normal(0, 1, inner.shape).astype(np.float32), 6.0)
    outside_mm = outside_mm * (1 + 0.25 * rough / max(float(rough.std()), 1e-6))
    layers = {"csf": (0.0, 1.5), "dura": (1.5, 2.5), "bone": (2.5, 4.0), "fat": (4.0, 6.0),
              "bone2": (6.0, 7.5), "muscle": (7.5, 9.5), "fat2": (9.5, 12.5), "skin": (12.5, 14.0)}
    def layer(a: float, b: float) -> np.ndarray:
        return (np.clip(np.minimum(outside_mm - a, b - outside_mm) + 0.5, 0, 1) * ~inner).astype(np.float32)
    shells = {name: layer(a, b) for name, (a, b) in layers.items()}
    csf = csf + shells["csf"]
    dura = shells["dura"]
    bone = shells["bone"] + shells["bone2"]
    fat = shells["fat"] + shells["fat2"]
    muscle = shells["muscle"] + shells["skin"]

    # choroid plexus: the deepest CSF (lateral ventricles), as a partial fraction of it
    depth = ndimage.distance_transform_edt(inner)
    deep_csf = (csf > 0.8) & (depth > 18)
    choroid = np.where(deep_csf, 0.5 * csf, 0.0).astype(np.float32)
    choroid = ndimage.gaussian_filter(choroid, 1.0) * (csf > 0.5)
    csf = csf - choroid

    stack = np.stack([csf, gm, wm, fat, bone, muscle, dura, choroid]).astype(np.float32)
    stack = np.clip(stack, 0, 1)
    total = stack.sum(0)
    stack /= np.maximum(total, 1.0)  # fractions never sum above one; below one is air
    grid = sitk.Image(t1_img.GetSize(), sitk.sitkUInt8)
    grid.CopyInformation(t1_img)
    return grid, stack
