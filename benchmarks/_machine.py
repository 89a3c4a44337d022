"""What every benchmark prints and records about the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import time

import numpy as np

from MRISynthesisLib import __version__


def best_of(repeats: int, fn) -> float:
    """The shortest of ``repeats`` wall times of ``fn()``, in seconds (the least disturbed run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.min(times))


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": _gpu(), "python": platform.python_version(),
            "package": __version__, "versions": _versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _gpu() -> str | None:
    """The CUDA device's name, or None on a machine without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _versions() -> dict:
    """Versions of the packages the figures depend on (None where one is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "numpy", "SimpleITK", "antspyx", "monai", "scikit-image"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def write_results(name: str, payload: dict) -> Path:
    """Write ``payload`` to benchmarks/results/<machine>-<name>.json (or the folder named by
    ``MRISYNTHESIS_BENCHMARK_RESULTS``, which the tests use) and say where."""
    folder = Path(os.environ.get("MRISYNTHESIS_BENCHMARK_RESULTS") or Path(__file__).parent / "results")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{platform.node() or 'machine'}-{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    print(f"written {path}")
    return path
