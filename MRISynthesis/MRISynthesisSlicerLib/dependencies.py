"""Which Python packages the panel must install into Slicer's Python, and how, and which NVIDIA GPUs the
machine has, without touching PyTorch.

Standard library and ``packaging`` (pip's copy when it is not installed) only: this runs before the
library's own dependencies exist.
A package counts as present only at a version its requirement accepts (another extension may have
installed an older nibabel, say). The pip command pins the installed torch and torchvision: MONAI and
LPIPS depend on torch, and an unpinned pip would replace the build the PyTorch extension chose for the
machine's driver with PyPI's default (CPU-only on Windows), or upgrade it past what the driver supports;
pinned, pip picks the newest MONAI release that accepts the torch already there.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Iterable, Optional

try:
    from packaging.requirements import Requirement
except ImportError:  # a Python without packaging still has pip, which vendors it
    from pip._vendor.packaging.requirements import Requirement

#: what the PyTorch extension installs and pip must leave as it is
TORCH_DISTRIBUTIONS = ("torch", "torchvision")


def _installed(name: str, version_of: Callable[[str], str]) -> Optional[str]:
    try:
        return version_of(name)
    except PackageNotFoundError:
        return None


def unmet(requirements: Iterable[str], version_of: Callable[[str], str] = version) -> list[str]:
    """The requirements (pip syntax) that are missing here or installed at a version they do not accept."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        installed = _installed(requirement.name, version_of)
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def pip_arguments(requirements: Iterable[str], version_of: Callable[[str], str] = version) -> list[str]:
    """What to pass to pip: the unmet requirements, then ``torch==<installed>`` (and torchvision) so pip
    resolves around the PyTorch build in place instead of replacing it; empty when nothing is unmet."""
    needed = unmet(requirements, version_of)
    if not needed:
        return []
    pins = [f"{name}=={installed}" for name in TORCH_DISTRIBUTIONS
            if (installed := _installed(name, version_of)) is not None]
    return needed + pins


def torch_mismatch(requirement: str, version_of: Callable[[str], str] = version) -> Optional[str]:
    """Why the torch in place will not do (installed, but at a version ``requirement``, like ``>=2.4.1``,
    does not accept), or None. pip must not replace it (see above), and it cannot be swapped inside a
    running Slicer, so the user updates it through the PyTorch extension; the message says how."""
    installed = _installed("torch", version_of)
    if installed is None or Requirement(f"torch{requirement}").specifier.contains(installed, prereleases=True):
        return None
    return (f"PyTorch {installed} is installed, but MRISynthesis needs torch{requirement} (MONAI, which it uses, "
            "requires it). Update PyTorch in the PyTorch Utils module (uninstall, restart Slicer, install), then "
            "open MRI Synthesis again.")


def gpu_names(which: Callable[[str], Optional[str]] = shutil.which, timeout_s: float = 10.0) -> list[str]:
    """The NVIDIA GPUs the driver lists (``nvidia-smi``, which comes with it), for the device menu.

    Asking PyTorch instead would import it into Slicer's process when the panel opens (seconds) and
    initialise CUDA there, holding GPU memory for the whole session, while the work runs in a worker
    process that initialises CUDA itself. No driver tool, a failure or a hang: no GPU offered (``auto``
    still takes one the worker finds).
    """
    tool = which("nvidia-smi")
    if tool is None:
        return []
    try:
        listed = subprocess.run([tool, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                                errors="replace", timeout=timeout_s, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]
