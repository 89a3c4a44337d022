"""Bundled model weights: a JSON manifest, sha256-verified loading, export from training checkpoints.

``Resources/Models/manifest.json`` lists one entry per weight file: model, configuration, inputs,
targets, how inputs are prepared (normalisation, voxel size, patch or slice size), how it was trained
(the exact command, data, steps) and what it measured on held-out phantom subjects. Each weight file is a
plain fp16 ``state_dict`` (``torch.save``), loaded with ``torch.load(weights_only=True)`` after its sha256
is checked, so a corrupt, truncated or swapped file is refused with its name, never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:  # torch is imported where weights are read or written, so the manifest reads without it
    import torch
    from torch import nn

MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"
MANIFEST = "manifest.json"
#: environment variable naming another models folder (your own trained weights, or a test's)
MODELS_DIR_VARIABLE = "MRISYNTHESIS_MODELS_DIR"


def models_dir(folder: str | Path | None = None) -> Path:
    """``folder`` if given, else $MRISYNTHESIS_MODELS_DIR if set, else the bundled Resources/Models.

    A $MRISYNTHESIS_MODELS_DIR that is not a folder is an error: silently finding no weights there would
    read as "no models bundled"."""
    import os
    if folder:
        return Path(folder)
    chosen = os.environ.get(MODELS_DIR_VARIABLE)
    if chosen and not Path(chosen).is_dir():
        raise InputError(f"${MODELS_DIR_VARIABLE}={chosen}: no such folder of weights")
    return Path(chosen or MODELS_DIR)


@dataclass(frozen=True)
class WeightsEntry:
    """One bundled weight file and everything needed to use it correctly."""

    file: str
    model: str
    config: str
    anatomy: str
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    normalization: str
    voxel_size_mm: float
    sha256: str
    size_bytes: int
    patch_size: tuple[int, ...] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    build_overrides: dict[str, Any] = field(default_factory=dict)
    #: the frame of each 4D input series the network sees (``inputs.model_frames``); empty: 3D inputs only
    frames: dict[str, int] = field(default_factory=dict)
    #: the foreground mask the intensities were normalised within (``preprocess.FOREGROUND_METHODS``);
    #: manifests written before the field existed were all trained with ``otsu``
    foreground: str = "otsu"
    #: sequences the network takes and makes as whole 4D series (Seq2Seq breast: DWI, DCE), with the frames
    #: it makes when synthesizing one without a real series to follow (the training data's protocol)
    series: dict[str, int] = field(default_factory=dict)
    #: the voxel-axis orientation the network was trained in (nibabel axis codes: ``RAS`` for the brain
    #: phantom, ``LPS`` for the breast one); inputs are turned to it. None (weights that do not record it):
    #: the reference input's own orientation
    orientation: str | None = None

    @property
    def key(self) -> str:
        return Path(self.file).stem


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: str | Path | None = None) -> list[WeightsEntry]:
    if folder and not Path(folder).is_dir():  # reading from a folder that is not there: not "no models"
        raise InputError(f"{folder}: no such folder of weights")
    path = models_dir(folder) / MANIFEST
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text())
        entries = [WeightsEntry(**{**e, "inputs": tuple(e["inputs"]), "targets": tuple(e["targets"]),
                                   "patch_size": tuple(e["patch_size"]) if e.get("patch_size") else None})
                   for e in raw["weights"]]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a valid weights manifest ({err})") from err
    for entry in entries:
        problem = _entry_problem(entry)
        if problem:
            raise InputError(f"{path}: entry {entry.file!r}: {problem}")
    return entries


def _is_positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _is_count(value, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_axis_codes(value) -> bool:
    """Three letters naming each of left/right, anterior/posterior and superior/inferior once: RAS, LPS, ..."""
    pairs = ({"L", "R"}, {"A", "P"}, {"S", "I"})
    return (isinstance(value, str) and len(value) == 3
            and sorted(next(k for k, pair in enumerate(pairs) if c in pair) if any(c in p for p in pairs) else -1
                       for c in value) == [0, 1, 2])


def _entry_problem(entry: WeightsEntry) -> str | None:
    """What is wrong with the types or ranges of an entry's fields, or None: a hand-edited manifest fails
    here with the field's name, not later inside numpy or a model's constructor."""
    texts = ("file", "model", "config", "anatomy", "normalization", "sha256", "foreground")
    for name in texts:
        if not isinstance(getattr(entry, name), str) or not getattr(entry, name):
            return f"{name} must be a non-empty string, not {getattr(entry, name)!r}"
    for name in ("inputs", "targets"):
        values = getattr(entry, name)
        if not values or not all(isinstance(v, str) and v for v in values):
            return f"{name} must be a non-empty list of sequence names, not {list(values)!r}"
    if not _is_positive_number(entry.voxel_size_mm):
        return f"voxel_size_mm must be a positive number, not {entry.voxel_size_mm!r}"
    if not _is_count(entry.size_bytes, 0):
        return f"size_bytes must be a whole number, not {entry.size_bytes!r}"
    if entry.patch_size is not None and not all(_is_count(v) for v in entry.patch_size):
        return f"patch_size must hold positive whole numbers, not {list(entry.patch_size)!r}"
    for name, minimum in (("frames", None), ("series", 1)):
        mapping = getattr(entry, name)
        if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and (isinstance(v, int) and not isinstance(v, bool)) and
                (minimum is None or v >= minimum) for k, v in mapping.items()):
            return f"{name} must map sequence names to {'frame counts' if minimum else 'frame indices'}, not {mapping!r}"
    if entry.orientation is not None and not _is_axis_codes(entry.orientation):
        return f"orientation must be three axis codes such as RAS or LPS, not {entry.orientation!r}"
    for name in ("training", "metrics", "build_overrides"):
        if not isinstance(getattr(entry, name), dict):
            return f"{name} must be an object, not {getattr(entry, name)!r}"
    return None


def write_manifest(entries: list[WeightsEntry], folder: str | Path | None = None) -> Path:
    path = models_dir(folder) / MANIFEST
    path.write_text(json.dumps({"weights": [asdict(e) for e in entries]}, indent=1) + "\n")
    return path


def find(model: str, target: str | None = None, anatomy: str | None = None,
         folder: str | Path | None = None, available: tuple[str, ...] = ()) -> WeightsEntry:
    """The bundled entry of ``model`` (for ``target`` and ``anatomy`` when given). When several fit
    (IMPORTANT-Net's brain and breast weights both make T2), the one that takes the ``available``
    sequences wins: the inputs tell the anatomy when the caller does not. When they cannot (a brain and a
    breast Seq2Seq both make T2 from T1), the caller must say which: the other anatomy's weights would run
    without a word, and give a plausible-looking wrong image."""
    entries = [e for e in read_manifest(folder) if e.model == model and (target is None or target in e.targets)
               and (anatomy is None or e.anatomy == anatomy)]
    if len(entries) > 1 and available:
        def fit(entry: WeightsEntry) -> int:
            return len(set(available) & set(entry.inputs))
        entries.sort(key=lambda e: -fit(e))
        tied = [e for e in entries if fit(e) == fit(entries[0]) and e.anatomy]
        if anatomy is None and len({e.anatomy for e in tied}) > 1:
            serving = sorted({e.anatomy for e in tied if _serves(e, available, target)})
            if not serving:  # neither can run: what each needs, rather than a question that leads nowhere
                needs = " or ".join(f"{', '.join(e.inputs)} ({e.anatomy})" for e in tied)
                raise InputError(f"{model} needs {needs}; given: {', '.join(available)}")
            if len(serving) > 1:
                raise InputError(f"the {' and the '.join(serving)} weights of {model} both take "
                                 f"{', '.join(available)}{f' to make {target}' if target else ''}: say which "
                                 f"anatomy the images are (--anatomy {'|'.join(serving)})")
            entries.sort(key=lambda e: e.anatomy != serving[0])
    if not entries:
        what = model + (f" -> {target}" if target else "") + (f" ({anatomy})" if anatomy else "")
        manifest = models_dir(folder) / MANIFEST
        if not manifest.exists():
            raise InputError(f"no bundled weights for {what}: {manifest} does not exist")
        bundled = ", ".join(f"{e.model} ({e.file}): {'+'.join(e.inputs)} -> {'+'.join(e.targets)}"
                            for e in read_manifest(folder))
        raise InputError(f"no bundled weights for {what}; bundled: {bundled or 'none'}")
    return entries[0]


def _serves(entry: WeightsEntry, available: tuple[str, ...], target: str | None) -> bool:
    """Whether ``entry`` can run on the ``available`` sequences: every input of a fixed-input model, or at
    least one sequence other than the target for an any-to-any one (as ``pipeline.check_inputs`` asks)."""
    if set(entry.inputs) == set(entry.targets):
        return bool(set(available) & (set(entry.inputs) - {target}))
    return set(entry.inputs) <= set(available)


def read_weights(path: str | Path):
    """What a weight file holds, read without running code (``weights_only``); a damaged file is named."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged archives
        raise InputError(f"{path}: cannot be loaded as weights: {' '.join(str(err).split())[:200]}") from err


def load_model(entry: WeightsEntry, folder: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Build the entry's generator and load its weights after checking the file's sha256."""
    from .models import build

    path = models_dir(folder) / entry.file
    if not path.exists():
        raise InputError(f"{path}: weight file missing (reinstall the extension or re-export it)")
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise InputError(f"{path}: sha256 {actual[:12]}… does not match the manifest's {entry.sha256[:12]}… "
                         "(corrupt, truncated or replaced file)")
    state = read_weights(path)
    model = build(entry.model, entry.config, **entry.build_overrides)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as err:
        raise InputError(f"{path}: weights do not fit {entry.model} ({entry.config}): "
                         f"{' '.join(str(err).split())[:200]}") from err
    return model.to(device).eval()


def export(checkpoint_path: str | Path, entry_fields: dict[str, Any], folder: str | Path | None = None,
           network: str = "generator") -> WeightsEntry:
    """Write a training checkpoint's network as fp16 weights, add it to the manifest, return the entry."""
    import torch

    from .training import checkpoint
    from .volume import output_folder

    folder = output_folder(models_dir(folder))
    state = checkpoint.load(checkpoint_path)["recipe"]["networks"][network]
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    target = folder / entry_fields["file"]
    # the folder's manifest read first: a damaged one is refused before a weight file appears beside it
    others = [e for e in read_manifest(folder) if e.file != entry_fields["file"]]
    tmp = target.with_name(f".partial-{target.name}")
    torch.save(half, tmp)
    tmp.replace(target)
    entry = WeightsEntry(**{**entry_fields, "sha256": sha256_of(target), "size_bytes": target.stat().st_size})
    write_manifest(others + [entry], folder)
    return entry
