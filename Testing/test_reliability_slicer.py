"""Reliability of the Slicer Logic (issue 12): every bad selection raises ``InputError`` with a message
naming the node and the problem, leaves every node's voxels, geometry and transform as they were, and
adds nothing to the scene (no result node, no subject-hierarchy folder).

Covered in test_slicer_logic.py and not repeated: no input chosen, the target chosen as an input, the
real target chosen as an input (``test_bad_selections_give_the_message_the_user_sees``) and a model
input left out. Node geometry itself (oblique grids, parent transforms, shear) is in
test_geometry_properties.py. The same node for two sequences is asked here through ``synthesize``, for
the scene's invariants; its message is checked there.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import slicer  # slicer-core: MRML and slicer.util, no application
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MRISynthesis"))

from conftest import bundle_untrained, make_volume  # noqa: E402
from MRISynthesisLib.errors import InputError  # noqa: E402
from MRISynthesisSlicerLib.logic import SynthesisLogic  # noqa: E402
from MRISynthesisSlicerLib.nodes import node_from_volume  # noqa: E402

SHAPE = (10, 11, 12)
GRID = {"spacing": (4.0, 4.0, 4.0), "origin": (-20.0, -22.0, -24.0)}  # the bundle's 4 mm: no work-grid resampling


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    bundle_untrained(folder, "unet-ct1")
    return folder


def good(seed: int):
    return make_volume(SHAPE, seed=seed, low=100.0, high=1000.0, **GRID)


class Case:
    """A scene with the three inputs unet-ct1 needs (T1, T2, FLAIR), each a valid volume unless changed."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.inputs = {seq: node_from_volume(self.scene, good(k), f"case {seq}") for k, seq in
                       enumerate(("T1", "T2", "FLAIR"))}

    def replace(self, seq: str, volume, node_class: str = "vtkMRMLScalarVolumeNode"):
        """Make the ``seq`` input a new ``node_class`` node holding ``volume`` (a node holds any voxels)."""
        node = self.scene.AddNewNodeByClass(node_class, f"case {seq}")
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
        node.SetIJKToRASMatrix(_ras_matrix(volume))
        self.scene.RemoveNode(self.inputs[seq])
        self.inputs[seq] = node
        return node

    def snapshot(self) -> dict:
        """Everything a failed run must leave as it was: each volume node's voxels, grid and transform,
        and how many nodes and subject-hierarchy items the scene holds."""
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        items = vtk.vtkIdList()
        hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), items, True)
        volumes = {}
        for k in range(self.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")):
            node = self.scene.GetNthNodeByClass(k, "vtkMRMLVolumeNode")
            m = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(m)
            voxels = slicer.util.arrayFromVolume(node).copy() if node.GetImageData() is not None else None
            volumes[node.GetID()] = (voxels, [m.GetElement(r, c) for r in range(4) for c in range(4)],
                                     node.GetTransformNodeID(), node.GetName())
        return {"nodes": self.scene.GetNumberOfNodes(), "items": items.GetNumberOfIds(), "volumes": volumes}

    def refuses(self, *messages: str, inputs=None, target: str = "T1ce", model: str = "unet-ct1", bundle=None,
                **options) -> None:
        before = self.snapshot()
        with pytest.raises(InputError) as caught:
            SynthesisLogic(self.scene).synthesize(self.inputs if inputs is None else inputs, target, model,
                                                  device="cpu", weights_folder=bundle, **options)
        for message in messages:
            assert message in str(caught.value), f"{message!r} not in {caught.value}"
        after = self.snapshot()
        assert after["nodes"] == before["nodes"] and after["items"] == before["items"], "the failed run left nodes"
        assert after["volumes"].keys() == before["volumes"].keys()
        for key, (voxels, matrix, transform, name) in before["volumes"].items():
            now = after["volumes"][key]
            np.testing.assert_array_equal(now[0], voxels, err_msg=name)
            assert now[1:] == (matrix, transform, name)


def _ras_matrix(volume) -> vtk.vtkMatrix4x4:
    from MRISynthesisSlicerLib.nodes import ijk_to_ras

    m = vtk.vtkMatrix4x4()
    for r, row in enumerate(ijk_to_ras(volume)):
        for c, value in enumerate(row):
            m.SetElement(r, c, float(value))
    return m


def _with(volume, index, value):
    array = volume.array.copy()
    array[index] = value
    return volume.with_array(array)


# --------------------------------------------------------------------- voxel content and shape
@pytest.mark.parametrize("seq, make, messages", [
    ("T2", lambda: _with(good(1), (3, 4, 5), np.nan), ["'case T2' (T2)", "1 NaN"]),
    ("FLAIR", lambda: _with(good(2), (0, 0, 0), -np.inf), ["'case FLAIR' (FLAIR)", "1 Inf"]),
    ("T1", lambda: good(0).with_array(np.full(SHAPE, 300.0)), ["'case T1' (T1)", "same value"]),
    ("T2", lambda: good(1).with_array(-good(1).array), ["'case T2' (T2)", "negative"]),
    ("FLAIR", lambda: make_volume((1, 11, 12), seed=4, low=100, high=900, **GRID), ["'case FLAIR'", "not a 3D volume"]),
    ("T1", lambda: make_volume((1, 1, 1), seed=5, low=100, high=900, **GRID), ["'case T1'", "size (1, 1, 1)"]),
], ids=["nan", "inf", "constant", "negative-only", "one-slice", "one-voxel"])
def test_bad_voxels_are_refused_before_any_slow_work(bundle, seq, make, messages):
    case = Case()
    case.replace(seq, make())
    case.refuses(*messages, bundle=bundle)


def test_bad_real_target_is_refused_before_the_synthesis(bundle):
    """The real target is checked with the inputs, not after the minutes of synthesis it would have cost."""
    case = Case()
    real = node_from_volume(case.scene, _with(good(7), (1, 2, 3), np.nan), "acquired T1ce")
    progress = []
    case.refuses("'acquired T1ce' (T1ce)", "1 NaN", real=real, bundle=bundle,
                 progress=lambda f, m: progress.append(m))
    assert progress == []


def test_input_wholly_outside_the_reference_field_of_view(bundle):
    """Mismatched geometry that no resampling can fix: with registration off, T2's header puts it 500 mm away.
    (Grids that differ but overlap are resampled, as the CLI does: test_pipeline.)"""
    case = Case()
    t2 = good(1)
    case.replace("T2", replace(t2, origin=tuple(np.add(t2.origin, (500.0, 0.0, 0.0)))))
    case.refuses("T2 does not overlap the field of view of T1", "registration: none", bundle=bundle, register="none")


# --------------------------------------------------------------------- the selection
def test_unknown_sequence_name_is_refused_with_a_suggestion(bundle):
    case = Case()
    inputs = {"T1": case.inputs["T1"], "T2": case.inputs["T2"], "FLIAR": case.inputs["FLAIR"]}
    case.refuses("unknown sequence name 'FLIAR'", "did you mean FLAIR", inputs=inputs, bundle=bundle)


def test_sequence_aliases_are_one_sequence(bundle):
    case = Case()
    inputs = {**case.inputs, "t2w": node_from_volume(case.scene, good(8), "other T2")}
    case.refuses("two volumes are selected for T2", "'case T2'", "'other T2'", inputs=inputs, bundle=bundle)


def test_one_node_for_two_sequences(bundle):
    case = Case()
    inputs = {**case.inputs, "FLAIR": case.inputs["T2"]}
    case.refuses("'case T2' is selected for both T2 and FLAIR", inputs=inputs, bundle=bundle)


@pytest.mark.parametrize("node_class", ["vtkMRMLDiffusionWeightedVolumeNode", "vtkMRMLVectorVolumeNode"])
def test_series_node_of_one_frame_is_refused(bundle, node_class):
    """A DWI or multi-component node with a single frame is still a series, not the 3D T2 asked for."""
    case = Case()
    case.replace("T2", good(1), node_class)
    assert case.inputs["T2"].GetImageData().GetNumberOfScalarComponents() == 1  # one frame: it looks 3D
    case.refuses("'case T2' (T2) is a 4D series", node_class, bundle=bundle)


def test_sequence_node_is_refused(bundle):
    """A sequence of one frame chosen itself, rather than the volume its browser shows."""
    case = Case()
    sequence = case.scene.AddNewNodeByClass("vtkMRMLSequenceNode", "T2 series")
    frame = slicer.vtkMRMLScalarVolumeNode()
    slicer.util.updateVolumeFromArray(frame, np.ascontiguousarray(good(1).array))
    sequence.SetDataNodeAtValue(frame, "0")
    case.refuses("'T2 series' (T2) is not a 3D scalar volume", inputs={**case.inputs, "T2": sequence}, bundle=bundle)


def test_non_linear_transform_on_an_input_is_refused(bundle):
    case = Case()
    warp = case.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    case.inputs["FLAIR"].SetAndObserveTransformNodeID(warp.GetID())
    case.refuses("'case FLAIR' is under the non-linear transform 'warp'", bundle=bundle)


@pytest.mark.parametrize("model, target, messages", [
    ("no-such-model", "T1ce", ["no bundled weights for no-such-model -> T1ce", "bundled: unet-ct1"]),
    ("unet-ct1", "PD", ["no bundled weights for unet-ct1 -> PD"]),
    ("unet-ct1", "T1x", ["unknown sequence name 'T1x'"]),
], ids=["unknown-model", "target-not-made", "unknown-target"])
def test_unknown_model_or_target(bundle, model, target, messages):
    Case().refuses(*messages, model=model, target=target, bundle=bundle)


def test_unknown_registration_preset(bundle):
    Case().refuses("unknown registration preset 'elastic'", register="elastic", bundle=bundle)


def test_a_good_case_passes_the_same_checks(bundle):
    """The cases above fail for their reason only: the unchanged case synthesizes, inputs untouched."""
    case = Case()
    before = case.snapshot()
    run = SynthesisLogic(case.scene).synthesize(case.inputs, "T1ce", "unet-ct1", device="cpu", weights_folder=bundle,
                                                register="none")
    assert run.synthesized.GetName() == "T1ce synthesized by unet-ct1"
    after = case.snapshot()
    for key, (voxels, matrix, transform, name) in before["volumes"].items():
        np.testing.assert_array_equal(after["volumes"][key][0], voxels, err_msg=name)
        assert after["volumes"][key][1:] == (matrix, transform, name)
