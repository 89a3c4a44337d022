"""The phantoms as Sample Data sources: the loader on a real MRML scene (slicer-core), the registration
against a stand-in Sample Data module, and the module's startup wiring against stand-ins for slicer/qt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import slicer  # slicer-core: MRML and slicer.util, no application

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MRISynthesis"))

from MRISynthesisLib.phantom import sample  # noqa: E402
from MRISynthesisSlicerLib.logic import load_phantom  # noqa: E402
from MRISynthesisSlicerLib.nodes import volume_from_node  # noqa: E402
from MRISynthesisSlicerLib.sampledata import CATEGORY, SAMPLES, PhantomLoader, register  # noqa: E402

ICONS = REPO / "MRISynthesis" / "Resources" / "Icons"


def _same_grid(node, volume):
    back = volume_from_node(node)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-6)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-6)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-9)
    np.testing.assert_array_equal(back.array, volume.array)


def test_brain_phantom_loads_as_nodes_on_each_sequence_grid():
    scene = slicer.vtkMRMLScene()
    nodes = load_phantom(scene, seed=9, resolution=4.0)
    truth = sample("brain", 9, resolution=4.0)
    assert set(nodes) == {"T1", "T1ce", "T2", "FLAIR", "labels"}
    for seq in ("T1", "T1ce", "T2", "FLAIR"):
        assert nodes[seq].GetName() == f"phantom 9 {seq}"
        _same_grid(nodes[seq], truth.sequences[seq])
    assert nodes["labels"].GetName() == "phantom 9 tumour labels"


def test_breast_phantom_keeps_4d_series_as_sequences_with_their_index():
    scene = slicer.vtkMRMLScene()
    nodes = load_phantom(scene, seed=4, resolution=4.0, anatomy="breast")
    truth = sample("breast", 4, resolution=4.0)
    assert set(nodes) == {"T1", "DCE", "DWI", "ADC", "T2", "labels"}
    for seq in ("T1", "ADC", "T2"):
        assert nodes[seq].IsA("vtkMRMLScalarVolumeNode") and nodes[seq].GetName() == f"phantom 4 {seq}"
        _same_grid(nodes[seq], truth.sequences[seq])
    for seq, key, index in (("DCE", "time_min", "time"), ("DWI", "b_value", "b-value")):
        series, sequence = truth.sequences[seq], nodes[seq]
        assert sequence.IsA("vtkMRMLSequenceNode") and sequence.GetIndexName() == index
        assert sequence.GetNumberOfDataNodes() == series.shape[0]
        for k in range(series.shape[0]):
            assert float(sequence.GetNthIndexValue(k)) == pytest.approx(series.frames[k][key], abs=1e-3)
            _same_grid(sequence.GetNthDataNode(k), series.frame(k))
        # the browser's proxy is the volume the views show, on the series' grid, named like the others
        proxy = _proxy(scene, f"phantom 4 {seq}")
        _same_grid(proxy, series.frame(0))
    assert set(np.unique(slicer.util.arrayFromVolume(nodes["labels"]))) >= {0, 2}
    assert nodes["labels"].GetName() == "phantom 4 lesion labels"


def _proxy(scene, name):
    found = [scene.GetNthNodeByClass(k, "vtkMRMLScalarVolumeNode")
             for k in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    found = [n for n in found if n.GetName() == name]
    assert len(found) == 1, f"expected one volume named {name!r}, found {len(found)}"
    return found[0]


def test_unknown_anatomy_is_refused_with_the_choices():
    from MRISynthesisLib.errors import InputError

    with pytest.raises(InputError, match="brain or breast"):
        load_phantom(slicer.vtkMRMLScene(), anatomy="knee")


class _FakeSampleData(types.ModuleType):
    """The two static methods of Slicer's SampleDataLogic the registration uses, recording the calls."""

    def __init__(self):
        super().__init__("SampleData")
        calls = self.calls = []

        class SampleDataLogic:
            @staticmethod
            def registerCustomSampleDataCategory(category, title):
                calls.append(("category", category, title))

            @staticmethod
            def registerCustomSampleDataSource(**kwargs):
                calls.append(("source", kwargs))

        self.SampleDataLogic = SampleDataLogic


def test_registration_gives_one_generated_source_per_phantom_with_its_thumbnail():
    fake, loaded = _FakeSampleData(), []
    names = register(fake, str(ICONS), lambda anatomy, seed: loaded.append((anatomy, seed)) or anatomy)
    assert names == ["MRISynthesisBrainPhantom", "MRISynthesisBreastPhantom"]
    assert fake.calls[0][:2] == ("category", CATEGORY)
    sources = [kwargs for kind, kwargs in fake.calls[1:]]
    assert [s["sampleName"] for s in sources] == names and all(s["category"] == CATEGORY for s in sources)
    for s in sources:
        assert s["uris"] == s["fileNames"] == s["nodeNames"] == []  # nothing to download
        assert Path(s["thumbnailFileName"]).is_file(), s["thumbnailFileName"]
    # Sample Data calls a source's customDownloader with the source itself
    assert [s["customDownloader"]("the source") for s in sources] == ["brain", "breast"]
    assert loaded == [("brain", 7), ("breast", 4)]


def test_loader_text_is_stable_so_a_reload_adds_no_duplicate():
    """Sample Data compares sources by their text, which includes the customDownloader's repr."""
    first, second = PhantomLoader(SAMPLES[0], print), PhantomLoader(SAMPLES[0], len)
    assert repr(first) == repr(second) and "0x" not in repr(first)
    assert repr(PhantomLoader(SAMPLES[1], print)) != repr(first)


def test_thumbnails_are_small_pngs():
    from PIL import Image

    for s in SAMPLES:
        path = ICONS / s.thumbnail
        with Image.open(path) as image:
            assert image.format == "PNG" and max(image.size) <= 256 and image.size[0] > image.size[1]
        assert path.stat().st_size < 60_000


_DRIVER = """
import importlib.util, json, os, sys, types
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # Slicer puts a scripted module's folder on sys.path
spec = importlib.util.spec_from_file_location("MRISynthesis", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
class Parent: pass
module.MRISynthesis(Parent())
import slicer
signals = [signal for signal, slot in slicer.app.connections]
absent = [slot() for signal, slot in slicer.app.connections]  # no SampleData module: nothing, no error
calls = []
fake = types.ModuleType("SampleData")
class SampleDataLogic:
    @staticmethod
    def registerCustomSampleDataSource(**kwargs):
        calls.append([kwargs["category"], kwargs["sampleName"], kwargs["thumbnailFileName"]])
fake.SampleDataLogic = SampleDataLogic
sys.modules["SampleData"] = fake
present = [slot() for signal, slot in slicer.app.connections]
print(json.dumps({"signals": signals, "absent": absent, "present": present, "calls": calls}))
"""


def test_module_registers_the_phantoms_at_startup_and_loads_without_sample_data(tmp_path):
    from test_slicer_layout import _write_stubs

    stubs = _write_stubs(tmp_path / "stubs")
    module_dir = tmp_path / "checkout" / "MRISynthesis"
    shutil.copytree(REPO / "MRISynthesis", module_dir, ignore=shutil.ignore_patterns("__pycache__"))
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-I", "-S", str(driver), str(module_dir / "MRISynthesis.py"), str(stubs)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["signals"] == ["startupCompleted()"]
    assert result["absent"] == [[]]
    assert result["present"] == [["MRISynthesisBrainPhantom", "MRISynthesisBreastPhantom"]]
    for category, _name, thumbnail in result["calls"]:
        assert category == CATEGORY and Path(thumbnail).is_file() and Path(thumbnail).parent.name == "Icons"
