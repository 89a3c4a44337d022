"""Breast phantom: procedural anatomy, benign/malignant/cyst lesions, T1, DCE, DWI/ADC and T2.

There is no public breast template, so the anatomy is built from shapes (axial slab, patient prone as in
breast MRI, LPS coordinates): a thorax ellipse with pectoral muscle along its front, lungs (air) and
the heart (blood) inside; two half-ellipsoid breasts of random size in front of it; skin over the
body; fibroglandular tissue (FGT) as thresholded smooth noise concentrated in the breasts' centres,
with a per-subject density (BI-RADS a-d: 5-60 % of the breast), surrounded by subcutaneous fat.

Lesions and their class (the MP-GAN's labels): ``healthy`` subjects have none; ``benign`` ones a round,
smooth mass with persistent enhancement (slow exchange, kep 0.06-0.2 /min), ``malignant`` ones an
irregular, spiculated mass with rapid wash-in then washout (fast exchange, kep 2-4 /min, vascular
fraction) and low ADC. Any subject may also carry simple cysts (fluid T1/T2, bright on T2, no
enhancement, high ADC). Labels: 1 benign, 2 malignant, 3 cyst.

Sequences (parameters drawn per subject):

* T1: 3D spoiled GRE without fat suppression (TR 4-8 ms, TE 2-4 ms, flip 10-20 deg).
* DCE: the same GRE with fat suppression, one pre-contrast and ``n_post`` (4 or 5) post-contrast phases
  every 60-90 s; tissue concentration from the extended Tofts model with the Weinmann population AIF
  (:func:`.physics.tofts_concentration`), T1/T2 shortened by gadobutrol's relaxivity.
* DWI: fat-suppressed spin-echo EPI (TR 4-8 s, TE 60-90 ms), b = 0 and 800 s/mm^2, signal
  S0 exp(-b ADC) with tissue ADCs from the literature (malignant 0.8-1.1, benign 1.3-1.7, FGT 1.7-2.1,
  cysts 2.4-2.8 x 10^-3 mm^2/s; e.g. Partridge SC et al., AJR 2009;193:1716-1722), on a coarser grid.
* ADC: computed from the noisy DWI as ln(S0 / S800) / 800, in 10^-6 mm^2/s (scanner convention), zero
  where S0 is in the noise.
* T2: turbo spin echo without fat suppression (TR 3-5 s, TE 80-110 ms).

Every sequence but T1 is moved by a small rigid motion (up to 3 deg, 3 mm; recorded); bias field and
Rician noise (SNR = mean FGT signal / noise SD) as for the brain.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume
from . import physics, signal
from .acquisition import RigidMotion, acquire, check_acquisition_options
from .lesions import bounding_box, roughened_distance, smooth_noise, soft_inside, spiculated_distance
from .subject import PhantomSubject

BREAST_SEQUENCES = ("T1", "DCE", "DWI", "ADC", "T2")
LESION_CLASSES = ("healthy", "benign", "malignant")
LESION_LABEL = {"benign": 1, "malignant": 2, "cyst": 3}
TISSUE_ORDER = ("fat", "fgt", "muscle", "skin", "blood", "benign", "malignant", "cyst")
B_VALUES = (0.0, 800.0)
#: apparent diffusion coefficient ranges, 10^-3 mm^2/s
ADC_RANGE = {"fat": (0.1, 0.3), "fgt": (1.7, 2.1), "muscle": (1.3, 1.5), "skin": (1.1, 1.3), "blood": (2.5, 3.0),
             "benign": (1.3, 1.7), "malignant": (0.8, 1.1), "cyst": (2.4, 2.8)}
FAT_SUPPRESSION = 0.06  # residual fat signal with spectral fat saturation
_STREAMS = ("anatomy", "lesions", "physics", "protocol", "motion", "bias", "noise")


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    return {name: np.random.default_rng([int(seed), 100 + i]) for i, name in enumerate(_STREAMS)}


def _grid(resolution: float) -> Volume:
    """Axial slab 320 x 200 x 120 mm (x left-right, y anterior-posterior, z feet-head)."""
    spacing = (resolution, resolution, 2.0 * resolution)
    size = (int(round(320 / spacing[0])), int(round(200 / spacing[1])), int(round(120 / spacing[2])))
    origin = tuple(-(n - 1) * s / 2 for n, s in zip(size, spacing))
    return Volume(np.zeros(size[::-1], np.float32), spacing, origin)


def _coordinates(grid: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, y, x) physical coordinates in mm as sparse broadcastable arrays (identity direction)."""
    nz, ny, nx = grid.spatial_shape
    sx, sy, sz = grid.spacing
    ox, oy, oz = grid.origin
    return np.meshgrid(oz + sz * np.arange(nz, dtype=np.float32), oy + sy * np.arange(ny, dtype=np.float32),
                       ox + sx * np.arange(nx, dtype=np.float32), indexing="ij", sparse=True)


def _soft(distance_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Partial-volume fraction of the region where ``distance_mm`` < 0."""
    return (1.0 / (1.0 + np.exp(np.clip(distance_mm / width_mm, -50, 50)))).astype(np.float32)


def _anatomy(grid: Volume, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict]:
    z, y, x = _coordinates(grid)
    width = 0.6 * min(grid.spacing)
    # thorax: ellipse centred posteriorly (LPS: +y is posterior)
    tx, ty = rng.uniform(140, 158), rng.uniform(95, 110)
    thorax_cy = float(ty + rng.uniform(-20, -5))  # chest wall 5-20 mm anterior of the FOV centre
    thorax_r = np.sqrt((x / tx) ** 2 + ((y - thorax_cy) / ty) ** 2)
    thorax = _soft((thorax_r - 1.0) * ty, width) * np.ones_like(z)
    chest_front = thorax_cy - ty
    breasts = np.zeros_like(thorax)
    info = {"breasts": []}
    for side in (-1, 1):
        rx, rz, depth = rng.uniform(55, 75), rng.uniform(45, 58), rng.uniform(45, 85)
        cx, cz = side * rng.uniform(60, 85), rng.uniform(-8, 8)
        r = np.sqrt(((x - cx) / rx) ** 2 + ((y - chest_front - 10) / depth) ** 2 + ((z - cz) / rz) ** 2)
        breasts = np.maximum(breasts, _soft((r - 1.0) * min(rx, depth), width) * (y < chest_front + 25))
        info["breasts"].append({"center_x_mm": round(float(cx), 1), "radius_x_mm": round(float(rx), 1),
                                "depth_mm": round(float(depth), 1), "radius_z_mm": round(float(rz), 1)})
    body = np.maximum(thorax, breasts)
    inside = body > 0.5
    depth_in = ndimage.distance_transform_edt(inside, sampling=grid.spacing[::-1])
    skin = body * _soft(depth_in - 1.8, width)
    # pectoral muscle: band along the front of the thorax
    muscle = thorax * _soft(-((thorax_r - 1.0) * ty + 14), width) * (y < thorax_cy)
    muscle = np.clip(muscle - skin, 0, 1)
    # lungs (air) and heart (blood) inside the rib cage
    inner = thorax * _soft((thorax_r - 1.0) * ty + 24, width)  # inside the ~10 mm rib cage behind the muscle
    heart_r = np.sqrt(((x - 20) / 50) ** 2 + ((y - chest_front - 70) / 40) ** 2 + (z / 60) ** 2)
    blood = inner * _soft((heart_r - 1.0) * 40, width)
    lungs = np.clip(inner - blood, 0, 1)
    wall = np.clip(thorax - skin - muscle - inner, 0, 1)  # ribs/intercostal muscle between
    muscle = muscle + 0.7 * wall
    # breast interior: fat with fibroglandular tissue in the middle
    breast_only = np.clip(breasts - thorax, 0, 1) * (1 - skin)
    density = float(rng.uniform(0.05, 0.6))
    noise = smooth_noise(grid.spatial_shape, rng, 4.0 / min(grid.spacing))
    central = _soft(-(depth_in - 8.0), 3.0)  # subcutaneous fat: no FGT within ~8 mm of the skin
    values = noise[breast_only > 0.5] if (breast_only > 0.5).any() else noise.ravel()
    threshold = float(np.quantile(values, 1 - density))
    fgt = breast_only * central * _soft(-(noise - threshold), 0.15)
    fat = np.clip(body - skin - muscle - blood - lungs - fgt - np.clip(wall * 0.7, 0, 1), 0, 1)
    info.update({"fgt_density": round(density, 3)})
    fractions = {"fat": fat, "fgt": fgt, "muscle": muscle, "skin": skin, "blood": blood}
    fractions = {k: np.broadcast_to(v, grid.spatial_shape).astype(np.float32) for k, v in fractions.items()}
    fractions["_lungs"] = np.broadcast_to(lungs, grid.spatial_shape).astype(np.float32)
    fractions["_breast"] = np.broadcast_to(breast_only > 0.5, grid.spatial_shape).astype(np.float32)
    return fractions, info


def _place_lesions(frac: dict[str, np.ndarray], grid: Volume, lesion_class: str, n_cysts: int,
                   rng: np.random.Generator) -> list[dict]:
    shape = grid.spatial_shape
    spacing_zyx = np.asarray(grid.spacing[::-1])
    for name in ("benign", "malignant", "cyst"):
        frac[name] = np.zeros(shape, np.float32)
    candidates = np.argwhere(frac["fgt"] > 0.5)
    if len(candidates) == 0:
        candidates = np.argwhere(frac["fat"] > 0.9)
    kinds = ([lesion_class] if lesion_class != "healthy" else []) + ["cyst"] * n_cysts
    lesions = []
    for kind in kinds:
        center = candidates[rng.integers(len(candidates))].astype(float)
        radius = float(rng.uniform(5.0, 12.0) if kind != "cyst" else rng.uniform(3.0, 8.0))
        half = np.ceil(2.6 * radius / spacing_zyx) + 2
        box = bounding_box(center, half, shape)
        box_shape = tuple(s.stop - s.start for s in box)
        c_box = center - np.array([s.start for s in box])
        if kind == "malignant":
            d = spiculated_distance(box_shape, c_box, spacing_zyx, radius, int(rng.integers(4, 10)), rng)
            d = d + 0.1 * smooth_noise(box_shape, rng, 2.0 / float(spacing_zyx.min()))
        else:
            d = roughened_distance(box_shape, c_box, spacing_zyx, radius, 0.03, rng, correlation_mm=6.0)
        part = soft_inside(d, 1.0, 0.05)
        body = sum(frac[k][box] for k in ("fat", "fgt", "benign", "malignant", "cyst"))
        frac[kind][box] = np.maximum(frac[kind][box], part * np.clip(body, 0, 1))
        z, y, x = (float(v) for v in np.asarray(grid.origin)[::-1] + center * spacing_zyx)
        lesions.append({"class": kind, "label": LESION_LABEL[kind], "center_mm": [round(x, 1), round(y, 1), round(z, 1)],
                        "radius_mm": round(radius, 2)})
    lesion_total = frac["benign"] + frac["malignant"] + frac["cyst"]
    over = lesion_total > 1
    for name in ("benign", "malignant", "cyst"):
        frac[name][over] /= lesion_total[over]
    lesion_total = np.minimum(lesion_total, 1)
    host = frac["fat"] + frac["fgt"]
    keep = np.clip(1 - lesion_total / np.maximum(host, 1e-6), 0, 1)
    frac["fat"] *= keep
    frac["fgt"] *= keep
    return lesions


def _kinetics(rng: np.random.Generator) -> dict[str, dict]:
    """Extended Tofts parameters per tissue (Ktrans, kep in 1/min; vp)."""
    def params(kep_range, ve_range, vp_range=(0.0, 0.0)):
        kep, ve, vp = rng.uniform(*kep_range), rng.uniform(*ve_range), rng.uniform(*vp_range)
        return {"ktrans": round(float(kep * ve), 4), "ve": round(float(ve), 4), "vp": round(float(vp), 4)}
    return {"fgt": params((0.1, 0.3), (0.05, 0.15)), "fat": params((0.1, 0.3), (0.01, 0.02)),
            "muscle": params((0.5, 0.8), (0.1, 0.2), (0.01, 0.03)), "skin": params((0.3, 0.6), (0.1, 0.2), (0.02, 0.05)),
            "benign": params((0.06, 0.2), (0.3, 0.6), (0.0, 0.02)),
            "malignant": params((2.0, 4.0), (0.25, 0.4), (0.05, 0.1)),
            "cyst": {"ktrans": 0.0, "ve": 1.0, "vp": 0.0}, "blood": {"ktrans": 0.0, "ve": 1.0, "vp": 1.0}}


def sample_breast(seed: int = 0, *, field_strength: float | None = None, lesion_class: str | None = None,
                  n_cysts: int | None = None, resolution: float = 1.25, snr: float | None = 40.0,
                  bias_field: bool = True, misalign: bool = True, native_grids: bool = True, n_post: int = 5,
                  max_rotation_deg: float = 3.0, max_translation_mm: float = 3.0) -> PhantomSubject:
    """One breast subject; see the module docstring.

    Args:
        lesion_class: ``healthy``, ``benign`` or ``malignant``; random when None.
        n_cysts: cysts besides the main lesion (0-2); random (mostly none) when None.
        resolution: in-plane voxel size in mm (slices are twice as thick); 1.25 mm gives 256 x 160 x 48.
        n_post: post-contrast DCE phases (4 or 5).
    """
    if lesion_class is not None and lesion_class not in LESION_CLASSES:
        raise InputError(f"unknown lesion class '{lesion_class}'; use one of {', '.join(LESION_CLASSES)}")
    check_acquisition_options(snr=snr, resolution=resolution, field_strength=field_strength)
    if n_post not in (4, 5):
        raise InputError(f"`n_post` must be 4 or 5 post-contrast phases, not {n_post}")
    if n_cysts is not None and not 0 <= n_cysts <= 2:
        raise InputError(f"`n_cysts` must be 0-2, not {n_cysts}")
    rng = _rngs(seed)
    field_strength = field_strength or float(rng["physics"].choice(physics.FIELD_STRENGTHS))
    lesion_class = lesion_class or str(rng["lesions"].choice(LESION_CLASSES))
    n_cysts = int(rng["lesions"].choice([0, 0, 0, 1, 2])) if n_cysts is None else n_cysts

    reference = _grid(float(resolution))
    frac, anatomy_info = _anatomy(reference, rng["anatomy"])
    frac.pop("_lungs")
    breast_region = frac.pop("_breast")
    lesions = _place_lesions(frac, reference, lesion_class, n_cysts, rng["lesions"])
    tissues = physics.jittered_tissues(TISSUE_ORDER, field_strength, rng["physics"])
    kinetics = _kinetics(rng["physics"])
    adc = {name: float(rng["physics"].uniform(*ADC_RANGE[name])) for name in TISSUE_ORDER}
    where = signal.support({name: frac[name] for name in TISSUE_ORDER})
    relaxivity = physics.RELAXIVITY[field_strength]

    p = rng["protocol"]
    gre = {"kind": "spoiled_gradient_echo", "TR": float(p.uniform(4, 8)), "TE": float(p.uniform(2, 4)), "flip": float(p.uniform(10, 20))}
    step = float(p.uniform(1.0, 1.5))
    times = [0.0] + [round(step * (k + 1), 3) for k in range(n_post)]
    protocol = {"T1": gre, "DCE": {**gre, "fat_suppression": True, "phase_times_min": times},
                "DWI": {"kind": "spin_echo", "TR": float(p.uniform(4000, 8000)), "TE": float(p.uniform(60, 90)),
                        "fat_suppression": True, "b_values": list(B_VALUES)},
                "T2": {"kind": "spin_echo", "TR": float(p.uniform(3000, 5000)), "TE": float(p.uniform(80, 110))}}
    fat_sat = {"fat": FAT_SUPPRESSION}
    concentration_t = {name: [float(physics.tofts_concentration(np.array([t if t > 0 else -1.0]), **kinetics[name])[0])
                              for t in times] for name in TISSUE_ORDER}

    # noiseless signals on the reference grid
    clean: dict[str, list[np.ndarray]] = {}
    clean["T1"] = [signal.mix_signal(frac, where, tissues, gre)]
    clean["DCE"] = [signal.mix_signal(frac, where, tissues, gre, factor=fat_sat, relaxivity=relaxivity,
                                      concentration={k: v[i] for k, v in concentration_t.items()}) for i in range(len(times))]
    clean["DWI"] = [signal.mix_signal(frac, where, tissues, protocol["DWI"],
                                      factor={k: (FAT_SUPPRESSION if k == "fat" else 1.0) * np.exp(-b * adc[k] * 1e-3)
                                              for k in TISSUE_ORDER}) for b in B_VALUES]
    clean["T2"] = [signal.mix_signal(frac, where, tissues, protocol["T2"])]
    fgt_mask = frac["fgt"] > 0.8
    if not fgt_mask.any():
        fgt_mask = frac["fat"] + frac["fgt"] > 0.8

    center = np.zeros(3)
    acquired, transforms, acquisition = {}, {}, {}
    for seq in ("T1", "DCE", "DWI", "T2"):
        motion = RigidMotion.random(rng["motion"], max_rotation_deg, max_translation_mm, center) if seq != "T1" else None
        gain = float(p.uniform(300, 3000)) / max(float(np.percentile(clean[seq][-1 if seq == "DCE" else 0], 99.5)), 1e-9)
        bias_seed, noise_seed = int(rng["bias"].integers(2 ** 31)), int(rng["noise"].integers(2 ** 31))
        level = float(clean[seq][0][fgt_mask].mean()) * gain
        sigma = level / snr if snr else None
        seq_grid = reference
        if native_grids and seq == "DWI":
            seq_grid = _grid(2.0 * float(resolution))
        noise_rng = np.random.default_rng(noise_seed)
        frames = [acquire(reference.with_array(m * gain), seq_grid, motion if misalign else None,
                          rng_bias=np.random.default_rng(bias_seed) if bias_field else None,  # one coil field for all frames
                          rng_noise=noise_rng if snr else None, noise_sigma=sigma).array for m in clean[seq]]
        if seq in ("DCE", "DWI"):
            meta = [{"time_min": t} for t in times] if seq == "DCE" else [{"b_value": b} for b in B_VALUES]
            acquired[seq] = Volume(np.stack(frames), seq_grid.spacing, seq_grid.origin, seq_grid.direction, meta)
        else:
            acquired[seq] = seq_grid.with_array(frames[0])
        used = motion if (misalign and motion is not None) else RigidMotion()
        transforms[seq] = used.reference_to_acquisition_matrix()
        acquisition[seq] = {"motion": used.to_dict(), "receiver_gain": round(gain, 4), "noise_sigma": round(sigma, 4) if sigma else None}
    acquired["ADC"] = _adc_map(acquired["DWI"], sigma=acquisition["DWI"]["noise_sigma"])
    transforms["ADC"] = transforms["DWI"]
    acquired = {k: acquired[k] for k in BREAST_SEQUENCES}

    labels = np.zeros(reference.spatial_shape, np.float32)
    for name in ("benign", "malignant", "cyst"):
        labels[frac[name] > 0.5] = LESION_LABEL[name]
    conc = np.stack([sum(frac[k] * concentration_t[k][i] for k in TISSUE_ORDER) for i in range(len(times))])
    info = {
        "reference": "T1", "field_strength_T": field_strength, "lesion_class": lesion_class, "lesions": lesions,
        "labels": {"1": "benign", "2": "malignant", "3": "cyst"}, "anatomy": anatomy_info,
        "tissues": {k: {"T1_ms": round(v.t1, 1), "T2_ms": round(v.t2, 1), "PD": round(v.pd, 3),
                        "ADC_1e-3mm2_s": round(adc[k], 3), **kinetics[k]} for k, v in tissues.items()},
        "protocol": protocol, "acquisition": acquisition, "dce_times_min": times, "b_values": list(B_VALUES),
        "concentration_mM": {k: [round(c, 4) for c in v] for k, v in concentration_t.items()},
        "options": {"resolution_mm": resolution, "snr": snr, "bias_field": bias_field, "misalign": misalign,
                    "native_grids": native_grids, "n_post": n_post},
    }
    return PhantomSubject("breast", int(seed), acquired, reference.with_array(labels),
                          {k: reference.with_array(v) for k, v in frac.items()},
                          Volume(conc, reference.spacing, reference.origin, reference.direction,
                                 [{"time_min": t} for t in times]), transforms, info,
                          {"breast": reference.with_array(breast_region)})


def _adc_map(dwi: Volume, sigma: float | None) -> Volume:
    """ADC (10^-6 mm^2/s) from b = 0 and 800 frames; zero where b = 0 is below 5 noise SDs (air)."""
    s0, s800 = dwi.array[0].astype(np.float64), dwi.array[1].astype(np.float64)
    floor = 5 * sigma if sigma else 1e-3 * float(s0.max())
    valid = s0 > floor
    adc = np.zeros_like(s0)
    adc[valid] = np.log(s0[valid] / np.maximum(s800[valid], 1e-6)) / B_VALUES[1] * 1e6
    return dwi.frame(0).with_array(np.clip(adc, 0, 4000).astype(np.float32))
