"""Checkpoints that a killed run can never leave half-written, and that resume a run exactly.

A checkpoint holds every network, optimizer, scheduler and gradient scaler state, the RNG states of
Python, NumPy and torch, and the step (batches are a pure function of (seed, step), so the step is the
data position). It is written to a temporary file and renamed: on POSIX the rename is atomic, so
``--resume`` sees the previous complete checkpoint or the new complete one, never a torn file. It is
loaded with ``weights_only=True``: plain containers and tensors only, no arbitrary code.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError


def rng_state() -> dict:
    bit_generator = np.random.get_state()
    return {"python": list(random.getstate()[1]), "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2], "numpy": [bit_generator[0], bit_generator[1].tolist(),
                                                            *bit_generator[2:]],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, state: dict) -> Path:
    path = Path(path)
    tmp = path.with_name(f".partial-{path.name}")
    torch.save(state, tmp)
    with open(tmp, "rb") as handle:  # make sure the bytes are on disk before the rename publishes them
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged archives
        raise InputError(f"{path}: cannot be loaded as a checkpoint (corrupt or truncated?): "
                         f"{' '.join(str(err).split())[:200]}") from err


def read_record(path: Path, keys: tuple[str, ...]) -> dict:
    """One of the JSON files ``train`` writes into a run folder; an empty, damaged or foreign one is named."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        reason = "the file is empty" if path.exists() and path.stat().st_size == 0 else " ".join(str(err).split())[:200]
        raise InputError(f"{path}: not valid JSON ({reason})") from err
    if not isinstance(record, dict) or not set(keys) <= set(record):
        raise InputError(f"{path}: not a record of a training run (needs {', '.join(keys)})")
    return record
