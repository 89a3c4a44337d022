"""What every benchmark prints and records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from MRISynthesisLib import __version__


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "package": __version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
