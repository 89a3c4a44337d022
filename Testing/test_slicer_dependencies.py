"""The packages the Slicer panel installs (``MRISynthesisSlicerLib.dependencies``): versions count, the
PyTorch extension's build stays, and the list matches the library's own requirements."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import PackageNotFoundError
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MRISynthesis"))

from MRISynthesisSlicerLib.dependencies import gpu_names, pip_arguments, torch_mismatch, unmet  # noqa: E402

#: what Slicer itself (numpy, scipy, SimpleITK) or its PyTorch extension (torch, torchvision) provides
PROVIDED = {"numpy", "scipy", "simpleitk", "torch", "torchvision"}


def _versions(**installed):
    def version_of(name):
        if name not in installed:
            raise PackageNotFoundError(name)
        return installed[name]
    return version_of


def test_missing_and_too_old_packages_are_unmet_and_a_new_enough_one_is_not():
    version_of = _versions(nibabel="4.0.2", tqdm="4.66.1", monai="1.5.0rc1", lpips="0.1.4")
    assert unmet(["nibabel>=5.1", "tqdm>=4.60", "lpips>=0.1.4", "monai>=1.5", "nilearn>=0.10"], version_of) == \
        ["nibabel>=5.1", "monai>=1.5", "nilearn>=0.10"]  # a release candidate is older than its release


def test_pip_keeps_the_installed_torch_build():
    version_of = _versions(torch="2.4.1+cu118", torchvision="0.19.1+cu118")
    assert pip_arguments(["monai>=1.5"], version_of) == ["monai>=1.5", "torch==2.4.1+cu118", "torchvision==0.19.1+cu118"]
    assert pip_arguments(["monai>=1.5"], _versions(monai="1.5.2", torch="2.4.1")) == []
    assert pip_arguments(["lpips>=0.1.4"], _versions()) == ["lpips>=0.1.4"]  # no torch yet: nothing to pin


def test_a_torch_too_old_for_the_library_is_named_with_what_to_do():
    """pip is told to keep the installed torch, so a torch older than MONAI accepts would make the
    installation fail unresolved; it is caught first, with the version and the way to update it."""
    message = torch_mismatch(">=2.4.1", _versions(torch="2.2.2+cu121"))
    assert "2.2.2+cu121" in message and "torch>=2.4.1" in message and "PyTorch Utils" in message
    assert torch_mismatch(">=2.4.1", _versions(torch="2.4.1+cpu")) is None
    assert torch_mismatch(">=2.4.1", _versions()) is None  # none yet: the PyTorch extension installs one


def test_the_real_environment_meets_the_library_requirements():
    """In the test environment (set up from pyproject.toml) nothing the panel would install is missing."""
    assert unmet(_panel_requirements().values()) == []


def _panel_constants() -> dict[str, object]:
    tree = ast.parse((REPO / "MRISynthesis" / "MRISynthesis.py").read_text(encoding="utf-8"))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("REQUIRED_PACKAGES", "TORCH_REQUIREMENT")}


def _panel_requirements() -> dict[str, str]:
    return _panel_constants()["REQUIRED_PACKAGES"]


def test_the_panel_installs_what_the_library_requires_at_the_same_minimum_versions():
    library = {Requirement(text).name.lower(): Requirement(text)
               for text in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    panel = {Requirement(text).name.lower(): Requirement(text) for text in _panel_requirements().values()}
    assert set(panel) == set(library) - PROVIDED

    def minimum(requirement):
        return next(str(s.version) for s in requirement.specifier if s.operator == ">=")
    assert {name: minimum(r) for name, r in panel.items()} == {name: minimum(library[name]) for name in panel}
    assert _panel_constants()["TORCH_REQUIREMENT"] == f">={minimum(library['torch'])}"


def _fake_tool(tmp_path, body: str) -> Path:
    tool = tmp_path / "nvidia-smi"
    tool.write_text(f"#!{sys.executable}\n{body}\n")
    tool.chmod(0o755)
    return tool


def test_the_gpus_come_from_the_driver_tool_without_importing_torch(tmp_path):
    """The device menu is filled without PyTorch (importing it would initialise CUDA in Slicer's process):
    the names nvidia-smi lists, and none when it is missing, fails or hangs."""
    import subprocess

    listing = _fake_tool(tmp_path, "import sys\nassert sys.argv[1:] == ['--query-gpu=name', '--format=csv,noheader']\n"
                                   "print('NVIDIA H100 80GB HBM3')\nprint('NVIDIA A100-SXM4-40GB')")
    assert gpu_names(which=lambda name: str(listing)) == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
    assert gpu_names(which=lambda name: None) == []
    failing = _fake_tool(tmp_path, "import sys\nprint('NVIDIA-SMI has failed', file=sys.stderr)\nsys.exit(9)")
    assert gpu_names(which=lambda name: str(failing)) == []
    hanging = _fake_tool(tmp_path, "import time\ntime.sleep(30)")
    assert gpu_names(which=lambda name: str(hanging), timeout_s=1.0) == []
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                            "from MRISynthesisSlicerLib.dependencies import gpu_names; gpu_names();"
                            "print('torch' in sys.modules)", str(REPO / "MRISynthesis")],
                           capture_output=True, text=True, timeout=60, check=True)
    assert probe.stdout.strip() == "False"
