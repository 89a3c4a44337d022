"""MR physics the phantom is built from: tissue relaxation tables, contrast agent, signal equations.

Relaxation times are rounded literature values (ms); proton density is relative to pure water:

* Brain GM, WM, blood: Stanisz GJ et al., "T1, T2 relaxation and magnetization transfer in tissue at
  3T", Magn Reson Med 2005;54:507-512 (1.5 T and 3 T); Wansapura JP et al., "NMR relaxation times in
  the human brain at 3.0 tesla", J Magn Reson Imaging 1999;9:531-538.
* CSF: the middle of the range reported across studies (T1 4-4.5 s, T2 1.5-2 s), rounded.
* Fat and skeletal muscle: Gold GE et al., "Musculoskeletal MRI at 3.0 T: relaxation times and image
  contrast", AJR 2004;183:343-351.
* Glioma compartments: Badve C et al., "MR fingerprinting of adult brain tumors", AJNR 2017;38:492-499
  (solid tumour and peritumoural oedema at 3 T); necrosis taken as fluid-like. 1.5 T tumour T1 values
  are the 3 T ones scaled by the GM ratio (our assumption; 1.5 T MRF data are scarce).
* Breast fat and fibroglandular tissue: Rakow-Penner R et al., "Relaxation times of breast tissue at
  1.5T and 3T measured using IDEAL", J Magn Reson Imaging 2006;23:87-91. Lesion values are assumptions
  within reported ranges (malignant lesions lower T2 than fibroadenomas; cysts fluid-like).
* Dura and choroid plexus: no good measurements; assumed fibrous tissue and a CSF/blood mixture.
* Gadobutrol relaxivity in plasma at 37 C: r1 5.2 / 5.0 s^-1 mM^-1, r2 6.1 / 7.1 s^-1 mM^-1 at
  1.5 / 3 T (Rohrer M et al., Invest Radiol 2005;40:715-724).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIELD_STRENGTHS = (1.5, 3.0)


@dataclass(frozen=True)
class Tissue:
    """Relaxation (ms) and relative proton density of one tissue at one field strength."""

    t1: float
    t2: float
    pd: float


#: tissue -> {field strength (T): Tissue}
TISSUES: dict[str, dict[float, Tissue]] = {
    "csf": {1.5: Tissue(4200, 2000, 1.00), 3.0: Tissue(4300, 1800, 1.00)},
    "gm": {1.5: Tissue(1120, 95, 0.80), 3.0: Tissue(1700, 90, 0.80)},
    "wm": {1.5: Tissue(800, 75, 0.69), 3.0: Tissue(1080, 70, 0.69)},
    "fat": {1.5: Tissue(343, 58, 0.90), 3.0: Tissue(382, 68, 0.90)},
    "muscle": {1.5: Tissue(1130, 35, 0.72), 3.0: Tissue(1420, 32, 0.72)},
    "bone": {1.5: Tissue(250, 1.0, 0.05), 3.0: Tissue(300, 1.0, 0.05)},
    "blood": {1.5: Tissue(1440, 290, 0.85), 3.0: Tissue(1930, 275, 0.85)},
    "dura": {1.5: Tissue(900, 60, 0.60), 3.0: Tissue(1100, 55, 0.60)},
    "choroid": {1.5: Tissue(1600, 200, 0.90), 3.0: Tissue(2000, 180, 0.90)},
    # glioma compartments
    "enhancing": {1.5: Tissue(1250, 110, 0.85), 3.0: Tissue(1850, 110, 0.85)},
    "necrosis": {1.5: Tissue(2300, 350, 0.95), 3.0: Tissue(2900, 330, 0.95)},
    "oedema": {1.5: Tissue(1150, 160, 0.88), 3.0: Tissue(1550, 150, 0.88)},
    # breast
    "fgt": {1.5: Tissue(1266, 57, 0.80), 3.0: Tissue(1445, 54, 0.80)},
    "skin": {1.5: Tissue(600, 40, 0.70), 3.0: Tissue(750, 38, 0.70)},
    "malignant": {1.5: Tissue(1100, 75, 0.82), 3.0: Tissue(1400, 70, 0.82)},
    "benign": {1.5: Tissue(1200, 100, 0.85), 3.0: Tissue(1500, 95, 0.85)},
    "cyst": {1.5: Tissue(2800, 500, 0.98), 3.0: Tissue(3100, 450, 0.98)},
}

#: (r1, r2) of gadobutrol, s^-1 mM^-1, per field strength
RELAXIVITY = {1.5: (5.2, 6.1), 3.0: (5.0, 7.1)}


def jittered_tissues(names, field_strength: float, rng: np.random.Generator, t_jitter: float = 0.05,
                     pd_jitter: float = 0.02) -> dict[str, Tissue]:
    """Per-subject tissue parameters: the table's values times 1 ± jitter (uniform)."""
    if field_strength not in FIELD_STRENGTHS:
        raise ValueError(f"`field_strength` must be one of {FIELD_STRENGTHS}, not {field_strength}")
    out = {}
    for name in names:
        base = TISSUES[name][field_strength]
        j = rng.uniform(-1, 1, 3)
        out[name] = Tissue(base.t1 * (1 + t_jitter * j[0]), base.t2 * (1 + t_jitter * j[1]),
                           min(1.0, base.pd * (1 + pd_jitter * j[2])))
    return out


# --------------------------------------------------------------------- signal equations
# All take relaxation *rates* R1 = 1/T1 and R2 = 1/T2 in 1/ms (arrays), times in ms, angles in degrees,
# and return the magnetisation per unit proton density (multiply by PD).

def spoiled_gradient_echo(r1, r2star, tr: float, te: float, flip_deg: float):
    """Steady-state spoiled GRE (FLASH): sin a (1 - E1) / (1 - cos a E1) exp(-TE R2*)."""
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr * r1)
    return np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-te * r2star)


def spin_echo(r1, r2, tr: float, te: float):
    """Spin echo with TE << TR: (1 - exp(-TR R1)) exp(-TE R2)."""
    return (1 - np.exp(-tr * r1)) * np.exp(-te * r2)


def inversion_recovery(r1, r2, tr: float, te: float, ti: float):
    """Magnitude inversion recovery spin echo: |1 - 2 exp(-TI R1) + exp(-TR R1)| exp(-TE R2)."""
    return np.abs(1 - 2 * np.exp(-ti * r1) + np.exp(-tr * r1)) * np.exp(-te * r2)


def null_inversion_time(t1: float, tr: float) -> float:
    """TI that nulls a tissue of longitudinal relaxation ``t1`` (ms): T1 ln(2 / (1 + exp(-TR/T1)))."""
    return float(t1 * np.log(2.0 / (1.0 + np.exp(-tr / t1))))


# --------------------------------------------------------------------- contrast-agent kinetics
def weinmann_aif(t_min: np.ndarray, dose_mmol_per_kg: float = 0.1) -> np.ndarray:
    """Plasma concentration (mM) after a bolus, bi-exponential (Weinmann HJ et al., Physiol Chem Phys
    Med NMR 1984;16:167-172, as used by Tofts & Kermode 1991): D (a1 e^-m1 t + a2 e^-m2 t)."""
    a1, m1, a2, m2 = 3.99, 0.144, 4.78, 0.0111  # kg/l, 1/min
    t = np.clip(np.asarray(t_min, float), 0, None)
    return np.where(np.asarray(t_min) < 0, 0.0, dose_mmol_per_kg * (a1 * np.exp(-m1 * t) + a2 * np.exp(-m2 * t)))


def tofts_concentration(t_min: np.ndarray, ktrans: float, ve: float, vp: float = 0.0,
                        dose_mmol_per_kg: float = 0.1) -> np.ndarray:
    """Tissue concentration (mM) under the extended Tofts model with the Weinmann AIF, in closed form.

    C_t(t) = vp C_p(t) + Ktrans sum_i D a_i (e^-m_i t - e^-kep t) / (kep - m_i), kep = Ktrans / ve.
    Rapid exchange (high kep) gives wash-in then washout; slow exchange keeps rising or plateaus.
    """
    if ve <= 0:
        raise ValueError(f"`ve` must be positive, not {ve}")
    t = np.clip(np.asarray(t_min, float), 0, None)
    kep = ktrans / ve
    total = np.zeros_like(t)
    for a, m in ((3.99, 0.144), (4.78, 0.0111)):
        if abs(kep - m) < 1e-9:
            term = t * np.exp(-m * t)
        else:
            term = (np.exp(-m * t) - np.exp(-kep * t)) / (kep - m)
        total += dose_mmol_per_kg * a * term
    return np.where(np.asarray(t_min) < 0, 0.0, vp * weinmann_aif(t, dose_mmol_per_kg) + ktrans * total)
