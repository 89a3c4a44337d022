"""What a phantom subject is: its acquired sequences and the ground truth behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..volume import Volume


@dataclass(frozen=True)
class PhantomSubject:
    """One simulated subject.

    Attributes:
        anatomy: ``brain`` or ``breast``.
        seed: the seed that reproduces it exactly.
        sequences: canonical sequence name -> acquired Volume, each on its own grid.
        labels: lesion label map on the reference grid (brain: BraTS 1 necrosis, 2 oedema, 3 enhancing;
            breast: 1 benign, 2 malignant, 3 cyst).
        fractions: tissue name -> fraction map on the reference grid (sums to <= 1; the rest is air).
        concentration: contrast-agent concentration (mM) on the reference grid; for breast, at each DCE
            phase (4D).
        transforms: sequence -> 4x4 matrix (LPS mm) from the reference space to that acquisition, i.e. what a
            registration with fixed = reference, moving = the sequence should find.
        info: everything else, JSON-ready: field strength, tissue parameters, protocol, lesions, options.
        regions: named anatomical regions (0/1 masks) on the reference grid that no tissue fraction gives:
            breast: ``breast``, the interior of both breasts (in front of the chest wall, under the skin).
    """

    anatomy: str
    seed: int
    sequences: dict[str, Volume]
    labels: Volume
    fractions: dict[str, Volume]
    concentration: Volume
    transforms: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    regions: dict[str, Volume] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return self.info.get("reference", "T1")

    def truth_json(self) -> dict[str, Any]:
        """The ground truth that fits in JSON (arrays are written as volumes beside it)."""
        return {
            "anatomy": self.anatomy,
            "seed": self.seed,
            "reference_sequence": self.reference,
            "transforms_reference_to_sequence": {k: np.asarray(v).round(6).tolist() for k, v in self.transforms.items()},
            "grids": {k: {"size_xyz": list(v.size_xyz), "spacing": list(v.spacing), "origin": list(v.origin),
                          "direction": list(v.direction), **({"frames": list(v.frames)} if v.is_series else {})}
                      for k, v in self.sequences.items()},
            **self.info,
        }
