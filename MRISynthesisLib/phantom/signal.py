"""Partial-volume signal synthesis: every voxel's signal is the sum over its tissues of
fraction x PD x signal equation, evaluated with that tissue's own relaxation (partial volume adds
signals, not parameters, which is what makes FLAIR's CSF/GM boundaries and T1ce's rims realistic).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from . import physics


def magnetisation(params: Mapping, r1, r2):
    """Signal per unit proton density of a protocol ``params`` (kind, TR, TE, [TI], [flip]) at rates r1, r2 (1/ms)."""
    kind = params["kind"]
    if kind == "spoiled_gradient_echo":
        # T2* taken as T2 / 1.3: short TEs make the exact value matter little
        return physics.spoiled_gradient_echo(r1, 1.3 * r2, params["TR"], params["TE"], params["flip"])
    if kind == "spin_echo":
        return physics.spin_echo(r1, r2, params["TR"], params["TE"])
    if kind == "inversion_recovery":
        return physics.inversion_recovery(r1, r2, params["TR"], params["TE"], params["TI"])
    raise ValueError(f"unknown sequence kind '{kind}'")


def support(fractions: Mapping[str, np.ndarray], threshold: float = 1e-4) -> dict[str, np.ndarray]:
    """Flat indices where each tissue is present: the signal is only evaluated there."""
    return {name: np.flatnonzero(f.ravel() > threshold) for name, f in fractions.items()}


def mix_signal(fractions: Mapping[str, np.ndarray], where: Mapping[str, np.ndarray], tissues: Mapping[str, physics.Tissue],
               params: Mapping, *, texture: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
               concentration: Mapping[str, float | np.ndarray] | None = None,
               relaxivity: tuple[float, float] = (0.0, 0.0),
               factor: Mapping[str, float | np.ndarray] | None = None) -> np.ndarray:
    """Noiseless magnetisation on the fractions' grid.

    Args:
        where: from :func:`support`.
        texture: per tissue, flat multiplicative fields on R1 and R2 (within-tissue variation); fluids
            (CSF, blood) are homogeneous and should get none.
        concentration: contrast agent (mM) per tissue, a scalar or a flat array over the grid.
        relaxivity: (r1, r2) in 1/(s mM).
        factor: per-tissue multiplier of the signal (fat suppression, diffusion attenuation), scalar or flat array.
    """
    shape = next(iter(fractions.values())).shape
    out = np.zeros(int(np.prod(shape)), np.float32)
    for name, idx in where.items():
        if idx.size == 0:
            continue
        tissue = tissues[name]
        r1 = np.full(idx.size, 1.0 / tissue.t1, np.float32)
        r2 = np.full(idx.size, 1.0 / tissue.t2, np.float32)
        if texture is not None and name in texture:
            r1 = r1 * texture[name][0][idx]
            r2 = r2 * texture[name][1][idx]
        if concentration is not None and name in concentration:
            c = concentration[name]
            c = c[idx] if np.ndim(c) else c
            r1 = r1 + relaxivity[0] * c / 1000.0  # 1/(s mM) x mM -> 1/ms
            r2 = r2 + relaxivity[1] * c / 1000.0
        value = fractions[name].ravel()[idx] * tissue.pd * magnetisation(params, r1, r2).astype(np.float32)
        if factor is not None and name in factor:
            f = factor[name]
            value = value * (f[idx] if np.ndim(f) else f)
        out[idx] += value
    return out.reshape(shape)
