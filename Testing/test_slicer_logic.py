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


def _assert_only_zero_is_transparent(node) -> None:
    """A map shown as a foreground: its empty (zero) voxels let the background through (a slice view
    takes a volume's opacity from its threshold), every voxel above zero, the brightest included, shows."""
    display = node.GetDisplayNode()
    values = volume_from_node(node).array
    assert display.GetApplyThreshold()
    assert 0.0 < display.GetLowerThreshold() <= values[values > 0].min()
    assert display.GetUpperThreshold() >= values.max()


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
    _assert_only_zero_is_transparent(run.error_map)
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
    assert run.warnings == []  # every input covers the head


def test_a_slab_input_node_gives_a_result_that_warns_of_its_blank_part(scene, bundle):
    from MRISynthesisLib.volume import Volume

    subject = sample_brain(5, resolution=4.0, n_lesions=1)
    flair = subject.sequences["FLAIR"]
    n = flair.spatial_shape[0]
    origin = np.asarray(flair.origin) + flair.direction_matrix @ (0.0, 0.0, (n // 3) * flair.spacing[2])
    slab = Volume(flair.array[n // 3:].copy(), flair.spacing, tuple(origin), flair.direction)
    inputs = {s: node_from_volume(scene, subject.sequences[s], f"slab case {s}") for s in ("T1", "T2")}
    inputs["FLAIR"] = node_from_volume(scene, slab, "slab case FLAIR")
    run = SynthesisLogic(scene).synthesize(inputs, "T1ce", "unet-ct1", device="cpu", weights_folder=bundle,
                                           register="none")
    coverage = [w for w in run.warnings if " covers " in w]
    assert len(coverage) == 1 and coverage[0].startswith("FLAIR covers")
    assert "FLAIR covers" in run.synthesized.GetAttribute("MRISynthesis.warnings")
    # the phantom's sequences as acquired, taken as aligned: each moved one is named too, in the node as well
    assert "T2 does not look aligned" in run.synthesized.GetAttribute("MRISynthesis.warnings")


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
                             real="/t/real.nrrd", error_map="/t/err.nrrd", register="none", anatomy="breast")
    assert command[:4] == ["PythonSlicer", "-m", "MRISynthesisLib", "synthesize"]
    assert "T1=/t/T1.nrrd" in command and command[command.index("--error-map") + 1] == "/t/err.nrrd"
    from MRISynthesisLib.cli import build_parser
    parsed = build_parser().parse_args(command[3:])  # the library's own parser accepts it
    assert parsed.progress_lines and parsed.register == "none" and parsed.anatomy == "breast"
    from MRISynthesisSlicerLib.logic import panel_anatomy, weights_anatomy
    assert weights_anatomy("seq2seq-breast-lite.pt") == "breast" and weights_anatomy("no-such.pt") is None
    assert panel_anatomy({"T1", "DCE"}) == "breast" and panel_anatomy({"T1", "T2"}) == "brain"  # as the list shows
    assert parse_progress("PROGRESS 0.5000 registering T2 to T1\n") == (0.5, "registering T2 to T1")
    assert parse_progress("wrote /t/out.nrrd") is None and parse_progress("PROGRESS x y") is None

    from MRISynthesisSlicerLib.logic import rank_worker_command

    command = rank_worker_command("PythonSlicer", "breast", 3, "/t/ranking", device="cpu")
    parsed = build_parser().parse_args(command[3:])
    assert (parsed.data, parsed.model, parsed.out, parsed.device) == ("phantom:breast:3", "seq2seq", "/t/ranking", "cpu")
    assert parsed.progress_lines
    from MRISynthesisSlicerLib.logic import compare_worker_command

    command = compare_worker_command("PythonSlicer", "/t/cases", "/t/report", register="rigid", device="cpu")
    parsed = build_parser().parse_args(command[3:])
    assert (parsed.data, parsed.out, parsed.register, parsed.device) == ("/t/cases", "/t/report", "rigid", "cpu")
    assert parsed.progress_lines


def test_a_run_folder_is_removed_or_reported_still_there(tmp_path, monkeypatch):
    """The panel deletes a run's folder of patient copies; where a killed worker still holds a file
    (Windows), the removal says so, and the panel tries again."""
    import shutil

    from MRISynthesisSlicerLib.logic import remove_work_folder

    folder = tmp_path / "MRISynthesis-run"
    (folder / "inputs").mkdir(parents=True)
    (folder / "inputs" / "T1.nrrd").write_bytes(b"patient data")
    real_rmtree = shutil.rmtree

    def locked(path, ignore_errors=False):  # what Windows does with a file a live process holds open
        for child in (folder / "inputs").iterdir():
            if child.name != "T1.nrrd":
                child.unlink()
    monkeypatch.setattr(shutil, "rmtree", locked)
    assert remove_work_folder(folder) is False and (folder / "inputs" / "T1.nrrd").exists()
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert remove_work_folder(folder) is True and not folder.exists()


def test_worker_output_split_across_reads_is_parsed_only_when_whole():
    from MRISynthesisSlicerLib.logic import complete_lines, parse_progress

    lines, pending = complete_lines("", "PROGRESS 0.2500 registering T2\nPROGRESS 0.5")
    assert lines == ["PROGRESS 0.2500 registering T2"] and pending == "PROGRESS 0.5"
    lines, pending = complete_lines(pending, "000 predicting\r\nerror: T2 has NaN")
    assert [parse_progress(line) for line in lines] == [(0.5, "predicting")]
    assert pending == "error: T2 has NaN"  # kept until the worker ends, then read whole
    assert complete_lines("", "") == ([], "")


def test_the_worker_finds_the_library_the_panel_imported(tmp_path):
    import os
    import subprocess

    import MRISynthesisLib
    from MRISynthesisSlicerLib.logic import worker_environment

    root = str(Path(MRISynthesisLib.__file__).resolve().parents[1])
    other = str(tmp_path)
    environment = worker_environment({"PYTHONPATH": os.pathsep.join([other, root])})
    assert environment["PYTHONPATH"].split(os.pathsep) == [root, other]  # first, and once
    # a child started elsewhere, with only that environment, imports the same package
    code = "import MRISynthesisLib, pathlib; print(pathlib.Path(MRISynthesisLib.__file__).resolve().parents[1])"
    child = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                           env={**worker_environment({}), "PATH": os.environ.get("PATH", "")})
    assert child.stdout.strip() == root
    # and prints what the panel decodes (UTF-8) whatever the locale: a path in Greek, an ellipsis
    message = "error: /data/εγκέφαλος/t1.nii.gz: cannot be read…"
    code = f"print({ascii(message)})"  # the program itself in ASCII, as the locale reads it
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                           env={**worker_environment({}), "PATH": os.environ.get("PATH", ""), "LC_ALL": "C",
                                "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"})  # an ASCII locale
    assert child.stdout.decode("utf-8").strip() == message


@pytest.fixture(scope="module")
def brain_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("brain-models")
    for model in ("tc-mgan", "seq2seq"):
        bundle_untrained(folder, model)
    return folder


def test_an_offered_fixed_input_model_gets_only_the_selected_sequences_it_takes(scene, brain_bundle):
    from MRISynthesisSlicerLib.logic import inputs_for_model, model_choices

    subject = sample_brain(5, resolution=4.0, n_lesions=1)
    nodes = {seq: node_from_volume(scene, subject.sequences[seq], seq) for seq in ("T1", "T2", "FLAIR")}
    _, choices = model_choices("T1ce", set(nodes), brain_bundle)
    offered = {file: model for file, model, reason in choices if reason is None}
    assert offered == {"tc-mgan-brain-lite.pt": "tc-mgan", "seq2seq-brain-lite.pt": "seq2seq"}
    assert inputs_for_model(nodes, "tc-mgan-brain-lite.pt", brain_bundle) == {"T2": nodes["T2"]}
    assert inputs_for_model(nodes, "seq2seq-brain-lite.pt", brain_bundle) == nodes
    with pytest.raises(InputError, match="does not take T1, FLAIR"):  # what the panel used to send
        SynthesisLogic(scene).synthesize(nodes, "T1ce", "tc-mgan", device="cpu", weights_folder=brain_bundle)
    run = SynthesisLogic(scene).synthesize(inputs_for_model(nodes, "tc-mgan-brain-lite.pt", brain_bundle), "T1ce",
                                           "tc-mgan", register="none", device="cpu", weights_folder=brain_bundle)
    assert run.synthesized.GetName() == "T1ce synthesized by tc-mgan"
    with pytest.raises(InputError, match="no bundled model 'missing.pt'"):
        inputs_for_model(nodes, "missing.pt", brain_bundle)


def test_auto_assign_skips_label_maps_and_the_modules_own_results(scene):
    from MRISynthesisSlicerLib.logic import assign_by_name
    from MRISynthesisSlicerLib.nodes import set_provenance

    volume = make_volume((4, 5, 6), seed=1)
    t1 = node_from_volume(scene, volume, "case-t1n")
    gad = node_from_volume(scene, volume, "AX T1 POST GAD")
    flair = node_from_volume(scene, volume, "scan 3")
    flair.SetAttribute("DICOM.SeriesDescription", "T2 FLAIR AX")  # the description wins over the name
    synthesized = node_from_volume(scene, volume, "T1ce synthesized by unet-ct1")
    set_provenance(synthesized, {"model": "unet-ct1"})
    labels = node_from_volume(scene, volume.with_array(np.rint(volume.array)), "T2 labels",
                              node=scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "T2 labels"))
    assigned = assign_by_name([t1, gad, flair, synthesized, labels])
    assert assigned == {"T1": t1, "T1ce": gad, "FLAIR": flair}


def test_ranking_becomes_a_table_and_a_bar_chart(scene):
    from MRISynthesisSlicerLib.logic import show_ranking

    ranking = {"table": [{"sequence": s, "C_t": 0.1 * k, "rank_t": k + 1, "C_d": -0.1 * k, "rank_d": 4 - k}
                         for k, s in enumerate(("T1", "T1ce", "T2", "FLAIR"))],
               "notes": ["LPIPS unavailable", "PD: in no case"]}
    table, chart = show_ranking(scene, ranking)
    assert table.GetNumberOfRows() == 4 and table.GetCellText(1, 0) == "T1ce"
    assert table.GetAttribute("MRISynthesis.note") == "LPIPS unavailable\nPD: in no case"  # every note kept
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    assert chart.GetNthPlotSeriesNode(0).GetPlotType() == chart.GetNthPlotSeriesNode(0).PlotTypeBar


def test_differentiation_maps_of_the_selected_nodes_become_heat_overlays_on_the_reference(scene, tmp_path,
                                                                                          monkeypatch):
    from MRISynthesisLib.differentiation import case_differentiation_maps
    from MRISynthesisSlicerLib.logic import load_phantom, map_to_show, maps_worker_command, read_maps
    from MRISynthesisSlicerLib.nodes import HEAT_COLOR_TABLE

    models = tmp_path / "models"
    models.mkdir()
    bundle_untrained(models, "seq2seq")
    nodes = load_phantom(scene, seed=9, resolution=4.0)
    chosen = {s: nodes[s] for s in ("T1", "T1ce", "FLAIR")}
    before = {s: slicer.util.arrayFromVolume(n).copy() for s, n in chosen.items()}
    run = SynthesisLogic(scene).differentiation_maps(chosen, register="none", device="cpu", weights_folder=models)
    assert set(run.maps) == set(chosen) and run.shown == "T1ce" and run.reference is nodes["T1"]
    expected = case_differentiation_maps({s: volume_from_node(n) for s, n in chosen.items()}, register="none",
                                         device="cpu", weights_folder=models)
    t1 = volume_from_node(nodes["T1"])
    windows = set()
    for seq, node in run.maps.items():
        assert node.GetName() == f"M_d({seq})" and node.GetAttribute("MRISynthesis.sequence") == seq
        shown = volume_from_node(node)
        assert shown.spatial_shape == t1.spatial_shape  # on the reference grid, where it overlays
        np.testing.assert_allclose(shown.array, expected.maps[seq].array, atol=1e-5)
        display = node.GetDisplayNode()
        assert scene.GetNodeByID(display.GetColorNodeID()).GetName() == HEAT_COLOR_TABLE
        windows.add((display.GetWindowLevelMin(), display.GetWindowLevelMax()))
        _assert_only_zero_is_transparent(node)
    assert len(windows) == 1 and next(iter(windows))[0] == 0.0  # one scale, so the maps compare
    means = [float(run.table.GetCellText(r, 1)) for r in range(run.table.GetNumberOfRows())]
    assert run.table.GetNumberOfRows() == 3 and means == sorted(means, reverse=True)
    for s, n in chosen.items():
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(n), before[s])
    assert map_to_show({"T1": 0.2, "T2": 0.3}) == "T2" and map_to_show({"T1": 0.2, "DCE": 0.1}) == "DCE"
    with pytest.raises(InputError, match="give at least two"):
        SynthesisLogic(scene).differentiation_maps({"T1": nodes["T1"]}, device="cpu", weights_folder=models)
    with pytest.raises(InputError, match="label map"):
        SynthesisLogic(scene).differentiation_maps({"T1": nodes["T1"], "T2": nodes["labels"]}, device="cpu",
                                                   weights_folder=models)

    # the panel's worker: a command the library's parser accepts, and its folder read back as the same maps
    command = maps_worker_command("PythonSlicer", {"T1": "/t/T1.nrrd", "T1ce": "/t/T1ce.nrrd"}, "/t/maps",
                                  reference="T1", register="none", anatomy="brain")
    from MRISynthesisLib.cli import build_parser
    parsed = build_parser().parse_args(command[3:])
    assert parsed.command == "maps" and parsed.progress_lines and parsed.input == ["T1=/t/T1.nrrd", "T1ce=/t/T1ce.nrrd"]
    assert parsed.anatomy == "brain"
    from MRISynthesisLib.maps_cmd import run_maps
    from MRISynthesisSlicerLib.logic import write_inputs

    (tmp_path / "in").mkdir()
    files, _ = write_inputs(chosen, tmp_path / "in")
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(models))
    run_maps([f"{s}={p}" for s, p in files.items()], tmp_path / "maps", register="none", device="cpu",
             progress=False, say=lambda line: None)
    maps, means, provenance = read_maps(tmp_path / "maps")
    assert set(maps) == set(chosen) and provenance["reference"] == "T1"
    np.testing.assert_allclose(maps["T1ce"].array, expected.maps["T1ce"].array, atol=1e-4)
    assert means["T1ce"] == pytest.approx(expected.foreground_means["T1ce"], rel=1e-4)


def test_the_panel_offers_the_models_of_the_anatomy_the_selected_sequences_belong_to(tmp_path):
    from MRISynthesisSlicerLib.logic import model_choices

    folder = tmp_path / "models"
    folder.mkdir()
    bundle_untrained(folder, "important-net")
    bundle_untrained(folder, "important-net", anatomy="breast", inputs=("T1", "DWI", "DCE"),
                     frames={"DWI": -1, "DCE": 1})
    anatomy, choices = model_choices("T2", {"T1", "DWI", "DCE"}, folder)
    assert anatomy == "breast" and choices == [("important-net-breast-lite.pt", "important-net", None)]
    anatomy, choices = model_choices("T2", {"T1", "T1ce"}, folder)
    assert anatomy == "brain"
    assert choices == [("important-net-brain-lite.pt", "important-net", "important-net needs FLAIR as well")]


def test_the_panel_lists_the_models_before_torch_and_the_other_packages_are_installed():
    """A fresh Slicer has none of the packages the first run installs (torch through the PyTorch
    extension, the rest with pip); the model list, which decides whether Synthesize is enabled, must not
    need them, or the button the installation hangs on is never enabled."""
    import subprocess

    absent = ["torch", "monai", "ants", "nibabel", "nilearn", "skimage", "sklearn", "lpips", "tqdm", "matplotlib"]
    module_dir = Path(__file__).resolve().parents[1] / "MRISynthesis"
    code = (f"import sys; sys.modules.update(dict.fromkeys({absent!r})); sys.path.insert(0, {str(module_dir)!r}); "
            "from MRISynthesisSlicerLib.logic import model_choices; "
            "anatomy, choices = model_choices('T1ce', {'T1', 'T2', 'FLAIR'}); "
            "print(anatomy, sorted(model for _, model, reason in choices if reason is None))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(None, 1) == ["brain", "['seq2seq', 'tc-mgan', 'unet-ct1']\n"]


def test_the_models_the_selection_offers_are_those_the_pipeline_can_run():
    from MRISynthesisLib.models import NAMES
    from MRISynthesisLib.predictors import _PLANS
    from MRISynthesisLib.selection import translates

    assert {name: translates(name) for name in NAMES} == {name: name in _PLANS for name in NAMES}


def test_phantom_case_loads_as_nodes(scene):
    from MRISynthesisSlicerLib.logic import load_phantom

    nodes = load_phantom(scene, seed=9, resolution=4.0)
    assert set(nodes) == {"T1", "T1ce", "T2", "FLAIR", "labels"}
    assert nodes["labels"].IsA("vtkMRMLLabelMapVolumeNode") and slicer.util.arrayFromVolume(nodes["labels"]).max() > 0
    assert np.issubdtype(slicer.util.arrayFromVolume(nodes["labels"]).dtype, np.integer)  # colour lookup needs integers
    assert slicer.util.arrayFromVolume(nodes["T2"]).dtype == np.float32
    assert nodes["T2"].GetName() == "phantom 9 T2"


def test_a_label_map_node_refuses_fractional_labels(scene):
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(InputError, match="whole numbers"):
        node_from_volume(scene, make_volume((4, 5, 6), seed=1), "labels", node=labels)


# --------------------------------------------------------------------- breast: 4D series as sequence nodes
@pytest.fixture(scope="module")
def breast_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("breast-models")
    bundle_untrained(folder, "important-net", anatomy="breast", inputs=("T1", "DWI", "DCE"),
                     frames={"DWI": -1, "DCE": 1})
    return folder


def test_a_series_indexed_in_seconds_gets_its_frame_times_in_minutes(scene):
    """DICOM and 4D NRRD series arrive as sequences whose time index counts seconds; the library's frames
    hold minutes, so a 90 s phase must read 1.5 min, not 90."""
    from MRISynthesisSlicerLib.nodes import series_from_node

    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "DCE from DICOM")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    sequence.SetIndexType(sequence.NumericIndex)
    for k, seconds in enumerate(("0", "90", "180")):
        sequence.SetDataNodeAtValue(node_from_volume(scene, make_volume(seed=k), f"phase {k}"), seconds)
    assert [f["time_min"] for f in series_from_node(sequence).frames] == pytest.approx([0.0, 1.5, 3.0])
    sequence.SetIndexName("echo")
    sequence.SetIndexUnit("ms")
    assert series_from_node(sequence).frames[1] == {"index": 1, "echo": 90.0, "unit": "ms"}


def test_series_come_back_from_sequence_nodes_and_their_proxies_frame_by_frame(scene):
    from MRISynthesisSlicerLib.logic import load_phantom
    from MRISynthesisSlicerLib.nodes import sequence_behind, series_from_node
    from MRISynthesisLib.phantom import sample

    nodes = load_phantom(scene, seed=4, resolution=4.0, anatomy="breast")
    truth = sample("breast", 4, resolution=4.0)
    for seq, key in (("DCE", "time_min"), ("DWI", "b_value")):
        expected = truth.sequences[seq]
        for node in (nodes[seq], _proxy_of(scene, nodes[seq])):
            got = series_from_node(node)
            assert got.shape == expected.shape
            np.testing.assert_allclose(got.array, expected.array, rtol=1e-6)
            np.testing.assert_allclose(got.origin, expected.origin, atol=1e-6)
            np.testing.assert_allclose(got.direction, expected.direction, atol=1e-9)
            assert [f[key] for f in got.frames] == pytest.approx([f[key] for f in expected.frames], abs=1e-3)
        assert sequence_behind(_proxy_of(scene, nodes[seq])) is nodes[seq]
        assert sequence_behind(nodes["T1"]) is None


def _proxy_of(scene, sequence):
    for k in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(k, "vtkMRMLSequenceBrowserNode")
        proxy = browser.GetProxyNode(sequence)
        if proxy is not None:
            return proxy
    raise AssertionError("no proxy")


def test_breast_synthesis_from_sequence_nodes_equals_the_pipeline_on_the_series(scene, breast_bundle):
    """DCE and DWI chosen as the sequence (or the volume its browser shows) give what the library gives on
    the 4D series; the input nodes are not changed."""
    from MRISynthesisLib.phantom import sample
    from MRISynthesisLib.pipeline import synthesize
    from MRISynthesisSlicerLib.logic import load_phantom

    nodes = load_phantom(scene, seed=4, resolution=4.0, anatomy="breast")
    before = {s: slicer.util.arrayFromVolume(_proxy_of(scene, nodes[s]) if s != "T1" else nodes[s]).copy()
              for s in ("T1", "DCE", "DWI")}
    chosen = {"T1": nodes["T1"], "DCE": nodes["DCE"], "DWI": _proxy_of(scene, nodes["DWI"])}
    run = SynthesisLogic(scene).synthesize(chosen, "T2", "important-net", register="none", device="cpu",
                                           weights_folder=breast_bundle)
    truth = sample("breast", 4, resolution=4.0)
    expected = synthesize({s: truth.sequences[s] for s in ("T1", "DCE", "DWI")}, "T2", "important-net",
                          register="none", device="cpu", weights_folder=breast_bundle)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(run.synthesized), expected.volume.array, atol=1e-4)
    assert run.synthesized.GetAttribute("MRISynthesis.weights") == "important-net-breast-lite.pt"
    for s, array in before.items():
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(_proxy_of(scene, nodes[s]) if s != "T1"
                                                                  else nodes[s]), array)


def test_series_selections_the_user_gets_wrong(scene, breast_bundle):
    from MRISynthesisSlicerLib.logic import load_phantom

    nodes = load_phantom(scene, seed=4, resolution=4.0, anatomy="breast")
    good = {"T1": nodes["T1"], "DCE": nodes["DCE"], "DWI": nodes["DWI"]}
    with pytest.raises(InputError, match=r"'phantom 4 ADC' \(DCE\) is one 3D volume; DCE needs its 4D series"):
        check_selection({**good, "DCE": nodes["ADC"]}, "T2")
    with pytest.raises(InputError, match=r"'phantom 4 lesion labels' \(T1\) is a label map"):
        check_selection({**good, "T1": nodes["labels"]}, "T2")
    with pytest.raises(InputError, match=r"'phantom 4 DCE' \(T1\) shows a 4D sequence"):
        check_selection({**good, "T1": _proxy_of(scene, nodes["DCE"])}, "T2")
    with pytest.raises(InputError, match=r"'phantom 4 lesion labels' \(real T2\) is a label map"):
        check_selection(good, "T2", real=nodes["labels"])


def test_the_panel_writes_inputs_as_the_views_show_them(scene, tmp_path):
    """What the worker process reads: series as 4D files with their frames, a transformed node moved."""
    import vtk

    from MRISynthesisLib.volume import read_volume
    from MRISynthesisSlicerLib.logic import load_phantom, write_inputs
    from MRISynthesisSlicerLib.nodes import series_from_node

    nodes = load_phantom(scene, seed=4, resolution=4.0, anatomy="breast")
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 12.0)  # 12 mm towards R: -12 mm in LPS x
    shift.SetMatrixTransformToParent(matrix)
    nodes["T1"].SetAndObserveTransformNodeID(shift.GetID())
    files, real = write_inputs({"T1": nodes["T1"], "DCE": nodes["DCE"]}, tmp_path, nodes["T2"], "T2")
    dce = read_volume(files["DCE"])
    expected = series_from_node(nodes["DCE"])
    np.testing.assert_array_equal(dce.array, expected.array)
    assert [f["time_min"] for f in dce.frames] == pytest.approx([f["time_min"] for f in expected.frames])
    t1 = read_volume(files["T1"])
    np.testing.assert_allclose(np.subtract(t1.origin, volume_from_node(nodes["T1"]).origin), 0, atol=1e-6)
    nodes["T1"].SetAndObserveTransformNodeID(None)
    np.testing.assert_allclose(np.subtract(t1.origin, volume_from_node(nodes["T1"]).origin), [-12.0, 0, 0], atol=1e-6)
    assert read_volume(real).spatial_shape == volume_from_node(nodes["T2"]).spatial_shape


def test_a_multi_component_volume_is_a_series_frame_by_frame(scene):
    """MultiVolume-style nodes keep the frames in the voxel components: (z, y, x, t) becomes (t, z, y, x)."""
    from MRISynthesisSlicerLib.logic import check_selection
    from MRISynthesisSlicerLib.nodes import series_from_node

    volume = make_volume((5, 6, 7), spacing=(1.0, 1.5, 2.0), origin=(3.0, -4.0, 5.0), direction=OBLIQUE, seed=2)
    frames = np.stack([volume.array * (1 + k) for k in range(3)], axis=-1)
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "dce components")
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(frames))
    node.SetIJKToRASMatrix(_matrix_of(volume))
    series = series_from_node(node)
    assert series.shape == (3, 5, 6, 7)
    for k in range(3):
        np.testing.assert_array_equal(series.array[k], frames[..., k])
    np.testing.assert_allclose(series.origin, volume.origin, atol=1e-9)
    np.testing.assert_allclose(series.direction, volume.direction, atol=1e-9)
    check_selection({"T1": node_from_volume(scene, volume, "t1"), "DCE": node}, "T2")  # accepted as DCE


def _matrix_of(volume):
    import vtk

    from MRISynthesisSlicerLib.nodes import ijk_to_ras

    matrix = vtk.vtkMatrix4x4()
    for r, row in enumerate(ijk_to_ras(volume)):
        for c, value in enumerate(row):
            matrix.SetElement(r, c, float(value))
    return matrix


def test_a_series_target_comes_back_as_a_sequence_the_views_step_through(scene, tmp_path):
    """Seq2Seq breast makes DCE whole: the result, and its error map against the real DCE, are sequence
    nodes of the real series' frames (each frame what the library made), shown through their browsers."""
    from MRISynthesisLib.phantom import sample
    from MRISynthesisLib.pipeline import synthesize
    from MRISynthesisSlicerLib.logic import load_phantom
    from MRISynthesisSlicerLib.nodes import sequence_behind, series_from_node

    breast = ("T1", "T2", "DWI", "DCE")
    bundle_untrained(tmp_path, "seq2seq", anatomy="breast", inputs=breast, targets=breast,
                     normalization="percentile", series={"DWI": 2, "DCE": 6})
    nodes = load_phantom(scene, seed=4, resolution=4.0, anatomy="breast")
    chosen = {s: nodes[s] for s in ("T1", "T2", "DWI")}
    run = SynthesisLogic(scene).synthesize(chosen, "DCE", "seq2seq", register="none", device="cpu",
                                           real=nodes["DCE"], weights_folder=tmp_path)
    truth = sample("breast", 4, resolution=4.0)
    expected = synthesize({s: truth.sequences[s] for s in ("T1", "T2", "DWI")}, "DCE", "seq2seq", anatomy="breast",
                          register="none", device="cpu", weights_folder=tmp_path, real=truth.sequences["DCE"])
    for node, volume in ((run.synthesized, expected.volume), (run.error_map, expected.error_map.volume)):
        assert sequence_behind(node) is not None
        got = series_from_node(node)
        assert got.shape == volume.shape == truth.sequences["DCE"].shape
        np.testing.assert_allclose(got.array, volume.array, atol=1e-3)
    assert run.error_map.GetDisplayNode().GetColorNodeID() is not None
    # one browser for both: stepping the synthesized series steps its error map through the same phase
    browsers = [scene.GetNthNodeByClass(k, "vtkMRMLSequenceBrowserNode")
                for k in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode"))]
    shared = [b for b in browsers if b.GetSequenceNode(run.synthesized) is not None]
    assert len(shared) == 1 and shared[0].GetSequenceNode(run.error_map) is not None
    shared[0].SetSelectedItemNumber(3)
    from MRISynthesisSlicerLib.nodes import _sequences_logic
    _sequences_logic(scene).UpdateProxyNodesFromSequences(shared[0])
    np.testing.assert_allclose(slicer.util.arrayFromVolume(run.error_map), expected.error_map.volume.array[3],
                               atol=1e-3)
