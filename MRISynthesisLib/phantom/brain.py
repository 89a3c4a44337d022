"""Brain phantom: anatomy from the MNI152 template, tissue physics, gliomas, five MR sequences.

Each subject (all randomness from ``seed``, in independent streams per component so turning one effect
off leaves the others identical):

1. **Anatomy**: the template's tissue fractions (see :mod:`.template`) warped by a random smooth
   deformation and an anisotropic scaling (0.93-1.06), so no two subjects share anatomy.
2. **Lesions**: 0-3 glioma-like tumours centred in white matter, each an irregular core of enhancing rim
   around a necrotic centre (small ones may lack necrosis) inside finger-like oedema that prefers white
   matter, with optional mass effect (tissue pushed radially outward). Labels follow BraTS: 1 necrosis
   (NCR), 2 oedema (ED), 3 enhancing tumour (ET).
3. **Physics** (:mod:`.physics`): T1/T2/PD per tissue at 1.5 or 3 T with ±5 % per-subject jitter
   (±2 % for PD), plus smooth within-tissue T1 and T2 texture (±4 %, none in fluids), mixed by tissue fraction in the
   signal (partial volume adds signals, not parameters).
4. **Contrast agent**: gadobutrol T1/T2 shortening R = R0 + r C. Enhancing tumour takes up 0.25-0.6 mM
   (heterogeneous); vessels (blood), choroid plexus, dura and, through their blood volume, GM, WM and
   muscle enhance mildly; necrosis, oedema, CSF, fat and bone take up none.
5. **Sequences** by signal equation, parameters drawn per subject within clinical ranges:
   T1 and T1ce share one protocol (spoiled GRE, TR 7-25 ms, TE 2-5 ms, flip 15-30 deg, or spin echo,
   TR 400-700 ms, TE 8-20 ms); T2 spin echo (TR 3-6 s, TE 80-120 ms); FLAIR inversion recovery
   (TR 8-11 s, TE 100-140 ms, TI nulling this subject's CSF within ±1 %); PD spin echo (TR 2-3.5 s,
   TE 10-30 ms).
6. **Acquisition** (:mod:`.acquisition`): T1 and T1ce at the reference resolution, T2/FLAIR/PD with
   3-5 mm slices; every sequence but T1 (the reference) moved by a random rigid motion (up to 5 deg and
   5 mm, recorded); smooth bias field; Rician noise at the requested SNR (mean white-matter signal over
   the noise SD). A random receiver gain puts values in the 300-3000 range scanners write.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume
from . import physics, signal
from .acquisition import RigidMotion, acquire, check_acquisition_options, thick_slice_grid
from .lesions import bounding_box, roughened_distance, soft_inside
from .subject import PhantomSubject
from .template import TEMPLATE_TISSUES, template_fractions

BRAIN_SEQUENCES = ("T1", "T1ce", "T2", "FLAIR", "PD")
LESION_TISSUES = ("necrosis", "oedema", "enhancing")
TISSUE_ORDER = TEMPLATE_TISSUES + ("blood",) + LESION_TISSUES
FLUIDS = ("csf", "blood")  # homogeneous: no within-tissue texture
BRATS_LABEL = {"necrosis": 1, "oedema": 2, "enhancing": 3}
#: contrast-agent concentration (mM) a few minutes after a standard dose, per tissue (see module doc)
BASE_CONCENTRATION = {"gm": 0.012, "wm": 0.006, "muscle": 0.05, "dura": 0.25, "choroid": 0.4, "blood": 0.5,
                      "enhancing": 0.4}

# Independent random streams: one per component, so options that switch one off leave the rest alike.
_STREAMS = ("anatomy", "lesions", "physics", "protocol", "motion", "bias", "noise", "vessels")


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    return {name: np.random.default_rng([int(seed), i]) for i, name in enumerate(_STREAMS)}


@lru_cache(maxsize=2)
def _template_on_grid(resolution: float) -> tuple[tuple[sitk.Image, ...], sitk.Image, np.ndarray]:
    """(one image per template tissue, smoothed for ``resolution``; output grid; brain centre in mm).

    Channels stay separate scalar images: ITK interpolates a vector image ten times slower than its
    channels one by one.
    """
    grid, stack = template_fractions()
    if resolution > 1.0:
        sigma = 0.42 * (resolution - 1.0) + 0.01
        stack = np.stack([ndimage.gaussian_filter(c, sigma) for c in stack])
    channels = []
    for channel in stack:
        image = sitk.GetImageFromArray(channel)
        image.CopyInformation(grid)
        channels.append(image)
    size = [max(8, int(round(n / resolution))) for n in grid.GetSize()]
    out = sitk.Image(size, sitk.sitkUInt8)
    out.SetSpacing([resolution] * 3)
    direction = np.reshape(grid.GetDirection(), (3, 3))
    half_cell = direction @ (np.full(3, (resolution - 1.0) / 2.0))
    out.SetOrigin(tuple(np.asarray(grid.GetOrigin()) + half_cell))
    out.SetDirection(grid.GetDirection())
    brain = stack[1] + stack[2]
    idx = np.array(ndimage.center_of_mass(brain))[::-1]  # (x, y, z) index
    center = grid.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in idx))
    return tuple(channels), out, np.asarray(center)


def _random_deformation(grid: sitk.Image, center: np.ndarray, rng: np.random.Generator,
                        amplitude_mm: float) -> tuple[sitk.Image, dict]:
    """Dense displacement field on ``grid``: anisotropic scaling about the brain centre plus a smooth
    random displacement (~2-3 cm wavelength, RMS ``amplitude_mm``)."""
    scale = rng.uniform(0.93, 1.06, 3)
    coarse_spacing = 8.0
    size = [int(np.ceil(n * s / coarse_spacing)) + 2 for n, s in zip(grid.GetSize(), grid.GetSpacing())]
    field = rng.normal(0, 1, (size[2], size[1], size[0], 3))
    field = np.stack([ndimage.gaussian_filter(field[..., i], 1.5) for i in range(3)], -1)
    field *= amplitude_mm / max(float(np.sqrt((field ** 2).sum(-1).mean())), 1e-6)
    image = sitk.GetImageFromArray(field, isVector=True)
    image.SetSpacing([coarse_spacing] * 3)
    image.SetDirection(grid.GetDirection())
    direction = np.reshape(grid.GetDirection(), (3, 3))
    image.SetOrigin(tuple(np.asarray(grid.GetOrigin()) - direction @ np.full(3, coarse_spacing)))
    displacement = sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))
    scaling = sitk.ScaleTransform(3, tuple(1.0 / scale))
    scaling.SetCenter(tuple(center))
    composite = sitk.CompositeTransform([scaling, displacement])
    dense = sitk.TransformToDisplacementField(composite, sitk.sitkVectorFloat64, grid.GetSize(), grid.GetOrigin(),
                                              grid.GetSpacing(), grid.GetDirection())
    return dense, {"scale": scale.round(4).tolist(), "displacement_rms_mm": round(float(amplitude_mm), 3)}


def _warp(channels, grid: sitk.Image, field: sitk.Image | None) -> list[np.ndarray]:
    if field is None:
        return [sitk.GetArrayFromImage(sitk.Resample(c, grid, sitk.Transform(), sitk.sitkLinear, 0.0)) for c in channels]
    return [sitk.GetArrayFromImage(sitk.Warp(c, field, sitk.sitkLinear, outputSize=grid.GetSize(),
                                             outputSpacing=grid.GetSpacing(), outputOrigin=grid.GetOrigin(),
                                             outputDirection=grid.GetDirection())) for c in channels]


def _place_lesions(frac: dict[str, np.ndarray], spacing_zyx: np.ndarray, n: int, rng: np.random.Generator,
                   mass_effect: bool, index_to_mm) -> list[dict]:
    """Draw ``n`` gliomas into the fraction maps (in place; they are our own arrays)."""
    shape = frac["wm"].shape
    for name in LESION_TISSUES:
        frac[name] = np.zeros(shape, np.float32)
    candidates = np.argwhere(frac["wm"] > 0.9)
    if len(candidates) == 0:
        candidates = np.argwhere(frac["wm"] > 0.3)
    half_deep = np.maximum(np.round(5.0 / spacing_zyx).astype(int), 1)
    lesions = []
    for k in range(n):
        for _ in range(50):  # prefer deep white matter: at least 80 % WM within 5 mm
            center = candidates[rng.integers(len(candidates))].astype(float)
            near = bounding_box(center, half_deep, shape)
            if frac["wm"][near].mean() > 0.8:
                break
        radius = float(rng.uniform(7.0, 16.0))
        necrosis_level = float(rng.uniform(0.3, 0.65)) if (radius > 9 or rng.random() < 0.5) else 0.0
        oedema_level = float(rng.uniform(1.4, 2.1))
        half = np.ceil(radius * (oedema_level * 1.5 + 0.5) / spacing_zyx) + 2
        box = bounding_box(center, half, shape)
        box_shape = tuple(s.stop - s.start for s in box)
        c_box = center - np.array([s.start for s in box])
        if mass_effect:
            _push_outward(frac, box, c_box, spacing_zyx, radius, float(rng.uniform(0.25, 0.5)))
        d_core = roughened_distance(box_shape, c_box, spacing_zyx, radius, 0.18, rng, correlation_mm=4.0)
        d_oed = roughened_distance(box_shape, c_box, spacing_zyx, radius, 0.35, rng, correlation_mm=3.0)
        core = soft_inside(d_core, 1.0)
        necrosis = soft_inside(d_core, necrosis_level) if necrosis_level else np.zeros_like(core)
        oedema = np.clip(soft_inside(d_oed, oedema_level, 0.1) - core, 0, 1)
        parenchyma = frac["gm"][box] + frac["wm"][box]
        wm_share = frac["wm"][box] / np.maximum(parenchyma, 1e-6)
        oedema *= (0.35 + 0.65 * wm_share)  # oedema spreads along white matter
        parts = {"necrosis": necrosis * parenchyma, "enhancing": (core - necrosis) * parenchyma,
                 "oedema": oedema * parenchyma}
        for name, part in parts.items():
            frac[name][box] = np.maximum(frac[name][box], part)
        lesions.append({"center_mm": [round(float(v), 2) for v in index_to_mm(center)], "radius_mm": round(radius, 2),
                        "necrosis_level": round(necrosis_level, 3), "oedema_level": round(oedema_level, 3),
                        "mass_effect": mass_effect})
    lesion_total = sum(frac[name] for name in LESION_TISSUES)
    parenchyma = frac["gm"] + frac["wm"]
    excess = np.clip(lesion_total - parenchyma, 0, None)
    if excess.any():  # overlapping lesions: scale them to what parenchyma there is
        scale = np.where(lesion_total > 0, parenchyma / np.maximum(lesion_total, 1e-6), 1.0).clip(max=1.0)
        for name in LESION_TISSUES:
            frac[name] *= scale
        lesion_total = sum(frac[name] for name in LESION_TISSUES)
    keep = 1.0 - lesion_total / np.maximum(parenchyma, 1e-6)
    frac["gm"] *= np.clip(keep, 0, 1)
    frac["wm"] *= np.clip(keep, 0, 1)
    return lesions


def _push_outward(frac: dict[str, np.ndarray], box, c_box, spacing_zyx, radius: float, strength: float) -> None:
    """Mass effect: resample tissue in the box from points pulled toward the centre (monotone for strength < 1)."""
    grids = np.meshgrid(*[np.arange(s.stop - s.start, dtype=np.float32) for s in box], indexing="ij")
    offsets = [(g - c) * sp for g, c, sp in zip(grids, c_box, spacing_zyx)]
    rho2 = sum(o * o for o in offsets) / (1.5 * radius) ** 2
    factor = 1.0 - strength * np.exp(-rho2)
    coords = np.stack([c + o * factor / sp for c, o, sp in zip(c_box, offsets, spacing_zyx)])
    for name in TEMPLATE_TISSUES:
        frac[name][box] = ndimage.map_coordinates(frac[name][box], coords, order=1, mode="nearest")


def _draw_vessels(frac: dict[str, np.ndarray], spacing_zyx: np.ndarray, rng: np.random.Generator) -> int:
    """A few cortical vessel segments in sulcal CSF (fraction ``blood``); returns how many."""
    shape = frac["csf"].shape
    frac["blood"] = np.zeros(shape, np.float32)
    starts = np.argwhere((frac["csf"] > 0.4) & (frac["gm"] > 0.2))
    if len(starts) == 0:
        return 0
    n = int(rng.integers(4, 9))
    for _ in range(n):
        p0 = starts[rng.integers(len(starts))] * spacing_zyx
        u = rng.normal(0, 1, 3)
        u /= np.linalg.norm(u)
        length, radius = rng.uniform(15, 40), rng.uniform(0.8, 1.6)
        p1 = p0 + u * length
        lo = (np.minimum(p0, p1) - radius - 2) / spacing_zyx
        hi = (np.maximum(p0, p1) + radius + 2) / spacing_zyx
        box = bounding_box((lo + hi) / 2, (hi - lo) / 2, shape)
        pts = np.meshgrid(*[np.arange(s.start, s.stop) * sp for s, sp in zip(box, spacing_zyx)], indexing="ij")
        rel = [p - a for p, a in zip(pts, p0)]
        t = np.clip(sum(r * ui for r, ui in zip(rel, u)) / length, 0, 1)
        dist = np.sqrt(sum((r - t * length * ui) ** 2 for r, ui in zip(rel, u)))
        frac["blood"][box] = np.maximum(frac["blood"][box], np.clip((radius - dist) / spacing_zyx.min() + 0.5, 0, 1))
    frac["blood"] *= np.clip(frac["csf"] + frac["gm"], 0, 1)
    for name in TEMPLATE_TISSUES:
        frac[name] *= 1.0 - frac["blood"]
    return n


def _protocol(rng: np.random.Generator, csf_t1: float) -> dict[str, dict]:
    if rng.random() < 0.5:
        t1 = {"kind": "spoiled_gradient_echo", "TR": rng.uniform(7, 25), "TE": rng.uniform(2, 5), "flip": rng.uniform(15, 30)}
    else:
        t1 = {"kind": "spin_echo", "TR": rng.uniform(400, 700), "TE": rng.uniform(8, 20)}
    flair_tr = rng.uniform(8000, 11000)
    flair = {"kind": "inversion_recovery", "TR": flair_tr, "TE": rng.uniform(100, 140),
             "TI": physics.null_inversion_time(csf_t1, flair_tr) * rng.uniform(0.99, 1.01)}
    protocol = {"T1": t1, "T1ce": dict(t1), "T2": {"kind": "spin_echo", "TR": rng.uniform(3000, 6000), "TE": rng.uniform(80, 120)},
                "FLAIR": flair, "PD": {"kind": "spin_echo", "TR": rng.uniform(2000, 3500), "TE": rng.uniform(10, 30)}}
    return {seq: {k: (round(float(v), 3) if not isinstance(v, str) else v) for k, v in p.items()} for seq, p in protocol.items()}


def sample_brain(seed: int = 0, *, field_strength: float | None = None, n_lesions: int | None = None,
                 mass_effect: bool = True, resolution: float = 1.0, snr: float | None = 40.0,
                 bias_field: bool = True, misalign: bool = True, native_grids: bool = True, deform: bool = True,
                 max_rotation_deg: float = 5.0, max_translation_mm: float = 5.0,
                 sequences: Iterable[str] = BRAIN_SEQUENCES) -> PhantomSubject:
    """One brain subject. See the module docstring for what each option simulates.

    Args:
        seed: reproduces the subject exactly.
        field_strength: 1.5 or 3.0 T; random when None.
        n_lesions: 0-3 gliomas; random when None.
        resolution: voxel size (mm) of the reference grid (T1, T1ce, labels, truth); 1 mm as in BraTS,
            3 mm gives a ~64^3 subject for fast tests.
        snr: mean white-matter signal / noise SD of each sequence; None for noiseless images.
        native_grids: T2/FLAIR/PD with 3-5 mm slices; False puts every sequence on the reference grid.
    """
    sequences = tuple(sequences)
    unknown = [s for s in sequences if s not in BRAIN_SEQUENCES]
    if unknown:
        raise InputError(f"brain phantom: unknown sequence(s) {unknown}; it simulates {', '.join(BRAIN_SEQUENCES)}")
    check_acquisition_options(snr=snr, resolution=resolution, field_strength=field_strength)
    if n_lesions is not None and not 0 <= n_lesions <= 3:
        raise InputError(f"`n_lesions` must be 0-3, not {n_lesions}")
    rng = _rngs(seed)
    field_strength = field_strength or float(rng["physics"].choice(physics.FIELD_STRENGTHS))
    n_lesions = int(rng["lesions"].integers(0, 4)) if n_lesions is None else n_lesions

    # 1. anatomy
    channels, grid, center = _template_on_grid(float(resolution))
    if deform:
        field, deformation = _random_deformation(grid, center, rng["anatomy"], float(rng["anatomy"].uniform(1.5, 3.0)))
    else:
        field, deformation = None, {"scale": [1.0, 1.0, 1.0], "displacement_rms_mm": 0.0}
    frac = dict(zip(TEMPLATE_TISSUES, _warp(channels, grid, field)))
    reference = Volume(np.zeros(frac["gm"].shape, np.float32), grid.GetSpacing(), grid.GetOrigin(), grid.GetDirection())
    spacing_zyx = np.asarray(reference.spacing[::-1])
    to_mm = lambda zyx: grid.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in zyx[::-1]))

    # 2. lesions and vessels
    lesions = _place_lesions(frac, spacing_zyx, n_lesions, rng["lesions"], mass_effect, to_mm)
    n_vessels = _draw_vessels(frac, spacing_zyx, rng["vessels"])

    # 3. physics
    tissues = physics.jittered_tissues(TISSUE_ORDER, field_strength, rng["physics"])
    texture_rng = rng["physics"]
    fields = tuple((1.0 + 0.04 * _smooth_field(frac["gm"].shape, texture_rng, 12.0 / float(resolution))).ravel()
                   for _ in range(2))
    texture = {name: fields for name in TISSUE_ORDER if name not in FLUIDS}
    dose = float(rng["physics"].uniform(0.8, 1.2))
    uptake = {name: dose * c for name, c in BASE_CONCENTRATION.items()}
    heterogeneity = np.clip(1.0 + 0.3 * _smooth_field(frac["gm"].shape, rng["physics"], 3.0 / float(resolution)), 0.3, 1.7)
    uptake["enhancing"] = (uptake["enhancing"] * rng["physics"].uniform(0.6, 1.5) * heterogeneity).ravel().astype(np.float32)
    concentration_map = sum(frac[name] * (np.reshape(c, frac[name].shape) if np.ndim(c) else c) for name, c in uptake.items())
    where = signal.support({name: frac[name] for name in TISSUE_ORDER})

    # 4. sequences
    protocol = _protocol(rng["protocol"], tissues["csf"].t1)
    relaxivity = physics.RELAXIVITY[field_strength]
    wm_mask = frac["wm"] > 0.9
    brain_mask = frac["gm"] + frac["wm"] > 0.5
    scales: dict[str, float] = {}
    sigmas: dict[str, float | None] = {}
    motion_rng, bias_rng, noise_rng = rng["motion"], rng["bias"], rng["noise"]
    acquired, transforms, grids_info = {}, {}, {}
    for seq in BRAIN_SEQUENCES:  # fixed order: every stream is consumed alike whatever is requested
        motion = RigidMotion.random(motion_rng, max_rotation_deg, max_translation_mm, center) if seq != "T1" else None
        slice_mm = float(motion_rng.uniform(3.0, 5.0)) if seq in ("T2", "FLAIR", "PD") else None
        gain = float(rng["protocol"].uniform(300, 3000))  # the 99th brain percentile lands here
        bias_seed, noise_seed = bias_rng.integers(2 ** 31), noise_rng.integers(2 ** 31)
        needed = seq in sequences or (seq == "T1" and "T1ce" in sequences)  # T1ce is calibrated on T1
        if not needed:
            continue
        m = signal.mix_signal(frac, where, tissues, protocol[seq], texture=texture,
                              concentration=uptake if seq == "T1ce" else None, relaxivity=relaxivity)
        if seq == "T1ce":
            scale, sigma = scales["T1"], sigmas["T1"]  # same protocol, coil, gain and noise as T1
        else:
            scale = gain / max(float(np.percentile(m[brain_mask], 99)), 1e-9)
            wm_level = float(m[wm_mask].mean()) * scale if wm_mask.any() else gain
            sigma = wm_level / snr if snr else None
        scales[seq], sigmas[seq] = scale, sigma
        if seq not in sequences:
            continue
        seq_grid = thick_slice_grid(reference, max(slice_mm, float(resolution))) if (native_grids and slice_mm) else reference
        acquired[seq] = acquire(reference.with_array(m * scale), seq_grid, motion if misalign else None,
                                rng_bias=np.random.default_rng(bias_seed) if bias_field else None,
                                rng_noise=np.random.default_rng(noise_seed) if snr else None, noise_sigma=sigma)
        used_motion = motion if (misalign and motion is not None) else RigidMotion(center_mm=tuple(center))
        transforms[seq] = used_motion.reference_to_acquisition_matrix()
        grids_info[seq] = {"motion": used_motion.to_dict(), "slice_thickness_mm": acquired[seq].spacing[2],
                           "intensity_scale": scale, "noise_sigma": round(sigma, 4) if sigma else None}

    # 5. truth
    labels = np.zeros(frac["gm"].shape, np.float32)
    lesion_stack = np.stack([frac[name] for name in LESION_TISSUES])
    inside = lesion_stack.sum(0) > 0.5
    labels[inside] = np.array([BRATS_LABEL[n] for n in LESION_TISSUES], np.float32)[lesion_stack.argmax(0)[inside]]
    info = {
        "reference": "T1", "field_strength_T": field_strength,
        "tissues": {k: {"T1_ms": round(v.t1, 1), "T2_ms": round(v.t2, 1), "PD": round(v.pd, 3)} for k, v in tissues.items()},
        "protocol": {k: v for k, v in protocol.items() if k in acquired},
        "acquisition": grids_info, "lesions": lesions, "n_vessels": n_vessels, "deformation": deformation,
        "contrast": {"agent": "gadobutrol", "dose_factor": round(dose, 3), "relaxivity_r1_r2": list(relaxivity),
                     "concentration_mM": {k: (round(float(np.mean(v)), 4)) for k, v in uptake.items()}},
        "labels": {"1": "necrosis (NCR)", "2": "oedema (ED)", "3": "enhancing tumour (ET)"},
        "options": {"resolution_mm": resolution, "snr": snr, "bias_field": bias_field, "misalign": misalign,
                    "native_grids": native_grids, "deform": deform, "mass_effect": mass_effect},
    }
    return PhantomSubject("brain", int(seed), acquired, reference.with_array(labels),
                          {k: reference.with_array(v) for k, v in frac.items()}, reference.with_array(concentration_map),
                          transforms, info)


def _smooth_field(shape, rng: np.random.Generator, correlation_vox: float) -> np.ndarray:
    """Unit-SD smooth random field, computed on a coarse grid and upsampled (cheap at 1 mm)."""
    factor = max(1, int(correlation_vox // 2))
    coarse_shape = tuple(max(2, int(np.ceil(n / factor))) for n in shape)
    coarse = ndimage.gaussian_filter(rng.normal(0, 1, coarse_shape).astype(np.float32), max(correlation_vox / factor, 0.5))
    fine = ndimage.zoom(coarse, [n / c for n, c in zip(shape, coarse_shape)], order=1)[tuple(slice(0, n) for n in shape)]
    fine = np.pad(fine, [(0, n - f) for n, f in zip(shape, fine.shape)], mode="edge")
    return (fine - fine.mean()) / max(float(fine.std()), 1e-6)
