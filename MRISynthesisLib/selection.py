"""Which bundled model can make a target from the sequences at hand, and which one is best.

Shared by ``batch`` and ``compare`` (and the Slicer panel, which offers only the models that can work
from the chosen inputs and says why the others cannot). "Best" is the highest held-out PSNR the
manifest records for that target (``evaluate-models --update-manifest``).
"""

from __future__ import annotations

import re

from .errors import InputError
from .weights import WeightsEntry, read_manifest

#: the sequences a case is expected to have, per anatomy
EXPECTED = {"brain": ("T1", "T1ce", "T2", "FLAIR")}
#: models that generate patches de novo rather than translate sequences (``predictors`` has no plan for
#: them); named here so that the Slicer panel can list models before torch is installed
PATCH_GENERATORS = frozenset({"mp-gan"})


def translates(model: str) -> bool:
    """True for the sequence-to-sequence models, those ``predictors.plan_for`` has a plan for (the one
    list of them: the pipeline, the evaluation, the model cards and the panel all ask here)."""
    return model not in PATCH_GENERATORS


def _measured_psnr(entry: WeightsEntry, target: str) -> float | None:
    for key in (f"{target}: {entry.model} PSNR", f"{entry.model} PSNR"):
        if key in entry.metrics and (len(entry.targets) == 1 or key.startswith(target)):
            match = re.match(r"\s*(-?[\d.]+)", str(entry.metrics[key]))
            if match:
                return float(match.group(1))
    return None


def eligible(target: str, present: set[str], anatomy: str, weights_folder=None) -> list[WeightsEntry]:
    """Bundled models that make ``target`` from (a subset of) the ``present`` sequences."""
    out = []
    for e in read_manifest(weights_folder):
        if e.anatomy != anatomy or target not in e.targets or not translates(e.model):
            continue
        any_to_any = set(e.inputs) == set(e.targets)
        if (any_to_any and present & (set(e.inputs) - {target})) or (not any_to_any and set(e.inputs) <= present):
            out.append(e)
    return out


def choose_model(target: str, present: set[str], anatomy: str, model: str, weights_folder=None) -> tuple[WeightsEntry, str]:
    """(entry, why) for ``model`` or ``best``; an InputError says why no model can do it."""
    candidates = eligible(target, present, anatomy, weights_folder)
    if model != "best":
        candidates = [e for e in candidates if e.model == model]
        if not candidates:
            raise InputError(f"{model} cannot make {target} from {', '.join(sorted(present))}")
        return candidates[0], f"{model} (asked for)"
    if not candidates:
        raise InputError(f"no bundled model makes {target} from {', '.join(sorted(present)) or 'nothing'}")
    scored = [(_measured_psnr(e, target), e) for e in candidates]
    measured = [(p, e) for p, e in scored if p is not None]
    if measured:
        psnr, entry = max(measured, key=lambda pe: pe[0])
        return entry, f"{entry.model} (best measured held-out PSNR for {target}: {psnr:.2f} dB)"
    return candidates[0], f"{candidates[0].model} (no measured figures; the first that can)"


def infer_anatomy(present: set[str], weights_folder=None, default: str = "brain") -> str:
    """The anatomy the ``present`` sequences belong to: the one with more of them that only its bundled models
    take (DWI or DCE: breast; T1ce or FLAIR: brain), then the one whose models take more of them; ``default``
    when they do not tell (T1 and T2 alone, or a mix such as FLAIR with DCE)."""
    taken: dict[str, set[str]] = {}
    for e in read_manifest(weights_folder):
        taken.setdefault(e.anatomy, set()).update(e.inputs)

    def own(anatomy: str) -> set[str]:
        return taken[anatomy] - set().union(*(s for a, s in taken.items() if a != anatomy))
    for score in (lambda a: len(present & own(a)), lambda a: len(present & taken[a])):
        scores = {anatomy: score(anatomy) for anatomy in taken}
        best = max(scores.values(), default=0)
        leaders = [a for a, value in scores.items() if value == best]
        if best > 0 and len(leaders) == 1:
            return leaders[0]
    return default


def explain(target: str, present: set[str], anatomy: str, weights_folder=None) -> list[tuple[str, str | None]]:
    """Every bundled model of ``anatomy``: (file, None when it can make ``target`` from ``present``, else
    a one-line reason it cannot)."""
    out = []
    for e in read_manifest(weights_folder):
        if e.anatomy != anatomy:
            continue
        if not translates(e.model):
            reason = f"{e.model} generates patches; it does not translate sequences"
        elif target not in e.targets:
            reason = f"{e.model} makes {', '.join(e.targets)}, not {target}"
        elif e in eligible(target, present, anatomy, weights_folder):
            reason = None
        elif set(e.inputs) == set(e.targets):
            reason = f"{e.model} needs at least one sequence other than {target}"
        else:
            reason = f"{e.model} needs {', '.join(s for s in e.inputs if s not in present)} as well"
        out.append((e.file, reason))
    return out
