"""Physics-based multi-contrast phantom subjects with known ground truth (brain and breast).

``sample(anatomy, seed, **options)`` returns a :class:`PhantomSubject`; ``mri-synthesis phantom``
writes subjects as case folders. The options of each anatomy are those of :func:`.brain.sample_brain` and
:func:`.breast.sample_breast`.
"""

from __future__ import annotations

from ..errors import InputError
from .subject import PhantomSubject

ANATOMIES = ("brain", "breast")
#: the voxel-axis orientation each anatomy's subjects are stored in (nibabel axis codes): what a model
#: trained on them sees, recorded in its manifest entry (``WeightsEntry.orientation``)
ORIENTATIONS = {"brain": "RAS", "breast": "LPS"}


def sample(anatomy: str, seed: int = 0, **options) -> PhantomSubject:
    """One subject of ``anatomy`` (``brain`` or ``breast``), reproducible from ``seed``."""
    if anatomy == "brain":
        from .brain import sample_brain
        return sample_brain(seed, **options)
    if anatomy == "breast":
        from .breast import sample_breast
        return sample_breast(seed, **options)
    raise InputError(f"unknown anatomy '{anatomy}'; the phantom simulates {', '.join(ANATOMIES)}")


__all__ = ["ANATOMIES", "ORIENTATIONS", "PhantomSubject", "sample"]
