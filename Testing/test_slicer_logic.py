"""The Slicer logic on a real MRML scene (PyPI's slicer-core): node <-> Volume geometry, result nodes,
provenance, untouched inputs and the messages for bad selections."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import slicer  # slicer-core: MRML and slicer.util, no application

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MRISynthesis"))

from conftest import OBLIQUE, bundle_untrained, make_volume  # noqa: E402
from MRISynthesisLib.errors import InputError  # noqa: E402
from MRISynthesisLib.phantom.brain import sample_brain  # noqa: E402
from MRISynthesisSlicerLib.logic import SynthesisLogic, check_selection  # noqa: E402
from MRISynthesisSlicerLib.nodes import ERROR_COLOR_TABLE, node_from_volume, volume_from_node  # noqa: E402


@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


def _ijk_to_ras(node) -> np.ndarray:
    import vtk
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_oblique_anisotropic_volume_round_trips_through_a_node(scene):
    volume = make_volume((6, 7, 8), spacing=(0.7, 1.1, 3.0), origin=(10.0, -20.0, 5.0), direction=OBLIQUE, seed=3)
    node = node_from_volume(scene, volume, "oblique")
    back = volume_from_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-9)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-9)


def test_lps_becomes_ras_in_the_node(scene):
    volume = make_volume((2, 3, 4), spacing=(1.0, 2.0, 3.0), origin=(10.0, 20.0, 30.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    matrix = _ijk_to_ras(node_from_volume(scene, volume, "axial"))
    np.testing.assert_allclose(np.diag(matrix)[:3], [-1.0, -2.0, 3.0])  # x and y flip from LPS to RAS
    np.testing.assert_allclose(matrix[:3, 3], [-10.0, -20.0, 30.0])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    bundle_untrained(folder, "unet-ct1")
    return folder


def test_synthesis_from_nodes_makes_named_coloured_attributed_nodes_in_a_folder(scene, bundle):
    subject = sample_brain(5, resolution=4.0, n_lesions=1)
    inputs = {s: node_from_volume(scene, subject.sequences[s], f"case {s}") for s in ("T1", "T2", "FLAIR")}
    real = node_from_volume(scene, subject.sequences["T1ce"], "case T1ce")
    before = {s: (slicer.util.arrayFromVolume(n).copy(), _ijk_to_ras(n)) for s, n in inputs.items()}
    fractions = []
    run = SynthesisLogic(scene).synthesize(inputs, "T1ce", "unet-ct1", real=real, device="cpu", weights_folder=bundle,
                                           progress=lambda f, m: fractions.append(f))
    assert run.synthesized.GetName() == "T1ce synthesized by unet-ct1"
    assert run.synthesized.GetAttribute("MRISynthesis.notice").startswith("Research use only")
    assert run.synthesized.GetAttribute("MRISynthesis.inputs") and "case T2" in run.synthesized.GetAttribute("MRISynthesis.inputs")
    assert len(run.synthesized.GetAttribute("MRISynthesis.weights_sha256")) == 64
    display = run.error_map.GetDisplayNode()
    assert scene.GetNodeByID(display.GetColorNodeID()).GetName() == ERROR_COLOR_TABLE
    assert display.GetWindowLevelMin() == 0.0 and display.GetWindowLevelMax() > 0
    assert run.metrics.GetNumberOfRows() == 4 and run.metrics.GetCellText(1, 0) == "PSNR"
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in (run.synthesized, run.error_map, run.metrics):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == run.folder
    assert hierarchy.GetItemName(run.folder).startswith("MRISynthesis: T1ce by unet-ct1")
    t1 = volume_from_node(inputs["T1"])
    assert volume_from_node(run.synthesized).spatial_shape == t1.spatial_shape  # on the reference grid
    for seq, (array, matrix) in before.items():
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputs[seq]), array)
        np.testing.assert_array_equal(_ijk_to_ras(inputs[seq]), matrix)
    assert fractions[-1] == 1.0


def test_synthesis_from_nodes_equals_the_command_line_on_the_same_files(scene, bundle, tmp_path, monkeypatch):
    """What headless ``batch.py`` relies on: the Logic on nodes loaded from files gives the voxels that
    ``mri-synthesis synthesize`` writes for the same files (one pipeline, exact geometry both ways)."""
    from MRISynthesisLib.cli import main
    from MRISynthesisLib.volume import read_volume, write_volume

    subject = sample_brain(6, resolution=4.0, n_lesions=1)
    files = {s: write_volume(subject.sequences[s], tmp_path / f"{s}.nii.gz") for s in ("T1", "T2", "FLAIR")}
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(bundle))
    out = tmp_path / "cli.nii.gz"
    assert main(["synthesize", "--model", "unet-ct1", "--input", *(f"{s}={p}" for s, p in files.items()),
                 "--target", "T1ce", "--out", str(out), "--register", "none", "--device", "cpu", "--quiet"]) == 0
    nodes = {s: node_from_volume(scene, read_volume(p), f"file {s}") for s, p in files.items()}
    run = SynthesisLogic(scene).synthesize(nodes, "T1ce", "unet-ct1", register="none", device="cpu",
                                           weights_folder=bundle)
    from_cli, from_logic = read_volume(out), volume_from_node(run.synthesized)
    np.testing.assert_allclose(from_logic.array, from_cli.array, atol=1e-4)
    np.testing.assert_allclose(from_logic.index_to_physical(), from_cli.index_to_physical(), atol=1e-4)


def test_bad_selections_give_the_message_the_user_sees(scene, bundle):
    volume = make_volume((8, 8, 8), seed=1)
    a, b = node_from_volume(scene, volume, "a"), node_from_volume(scene, volume, "b")
    with pytest.raises(InputError, match="choose at least one input volume"):
        check_selection({"T1": None}, "T1ce")
    with pytest.raises(InputError, match="'a' is selected for both T1 and T2"):
        check_selection({"T1": a, "T2": a}, "T1ce")
    with pytest.raises(InputError, match="T1ce is the target: it cannot also be an input"):
        check_selection({"T1": a, "T1ce": b}, "T1ce")
    with pytest.raises(InputError, match="'b' is both an input"):
        check_selection({"T1": a, "T2": b}, "T1ce", real=b)
    with pytest.raises(InputError, match="needs T1, T2, FLAIR; missing: FLAIR"):
        SynthesisLogic(scene).synthesize({"T1": a, "T2": b}, "T1ce", "unet-ct1", device="cpu", weights_folder=bundle)


def test_worker_command_and_progress_lines():
    from MRISynthesisSlicerLib.logic import parse_progress, worker_command

    command = worker_command("PythonSlicer", {"T1": "/t/T1.nrrd", "T2": "/t/T2.nrrd"}, "T1ce", "seq2seq", "/t/out.nrrd",
                             real="/t/real.nrrd", error_map="/t/err.nrrd", register="none")
    assert command[:4] == ["PythonSlicer", "-m", "MRISynthesisLib", "synthesize"]
    assert "T1=/t/T1.nrrd" in command and command[command.index("--error-map") + 1] == "/t/err.nrrd"
    from MRISynthesisLib.cli import build_parser
    parsed = build_parser().parse_args(command[3:])  # the library's own parser accepts it
    assert parsed.progress_lines and parsed.register == "none"
    assert parse_progress("PROGRESS 0.5000 registering T2 to T1\n") == (0.5, "registering T2 to T1")
    assert parse_progress("wrote /t/out.nrrd") is None and parse_progress("PROGRESS x y") is None


def test_ranking_becomes_a_table_and_a_bar_chart(scene):
    from MRISynthesisSlicerLib.logic import show_ranking

    ranking = {"table": [{"sequence": s, "C_t": 0.1 * k, "rank_t": k + 1, "C_d": -0.1 * k, "rank_d": 4 - k}
                         for k, s in enumerate(("T1", "T1ce", "T2", "FLAIR"))], "notes": ["LPIPS unavailable"]}
    table, chart = show_ranking(scene, ranking)
    assert table.GetNumberOfRows() == 4 and table.GetCellText(1, 0) == "T1ce"
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    assert chart.GetNthPlotSeriesNode(0).GetPlotType() == chart.GetNthPlotSeriesNode(0).PlotTypeBar


def test_phantom_case_loads_as_nodes(scene):
    from MRISynthesisSlicerLib.logic import load_phantom

    nodes = load_phantom(scene, seed=9, resolution=4.0)
    assert set(nodes) == {"T1", "T1ce", "T2", "FLAIR", "labels"}
    assert nodes["labels"].IsA("vtkMRMLLabelMapVolumeNode") and slicer.util.arrayFromVolume(nodes["labels"]).max() > 0
    assert nodes["T2"].GetName() == "phantom 9 T2"
