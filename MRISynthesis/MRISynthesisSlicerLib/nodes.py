"""MRML volume nodes <-> MRISynthesisLib ``Volume``s, and the result nodes the panel shows.

Geometry: a ``Volume`` is in ITK's LPS convention (origin and direction in LPS, spacing x, y, z, array
z, y, x); a Slicer volume node maps voxel (i, j, k) to RAS. The two differ by a flip of the first two
physical axes, ``RAS = diag(-1, -1, 1) LPS`` — forgetting it is the classic cause of mirrored overlays,
so every conversion goes through :func:`ijk_to_ras` and its inverse and is tested on oblique,
anisotropic grids. Arrays are copied both ways: nodes the user loaded are never changed.

Needs only ``slicer`` (its MRML classes and ``slicer.util``), ``vtk`` and numpy: no Qt, so it runs in
tests on PyPI's slicer-core and in headless Slicer.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: attribute names every output node carries
PROVENANCE_PREFIX = "MRISynthesis."
ERROR_COLOR_TABLE = "MRISynthesis error (blue to red)"
HEAT_COLOR_TABLE = "MRISynthesis differentiation (hot)"


def ijk_to_ras(volume) -> np.ndarray:
    """The 4x4 voxel-index-to-RAS matrix of a ``Volume`` (index order i = x, j = y, k = z)."""
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = volume.direction_matrix @ np.diag(volume.spacing)
    ijk_to_lps[:3, 3] = volume.origin
    return LPS_TO_RAS @ ijk_to_lps


def _numpy(m) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _matrix(node, shown_by=None) -> np.ndarray:
    """The node's voxel-index-to-world-RAS matrix: where the views show its voxels.

    A parent transform (a user's manual alignment, a registration result not hardened) is part of it;
    ignoring it would place inputs, and the result, elsewhere than the user sees them. A sequence's
    frame is shown through its browser's proxy volume (``shown_by``), whose transform then applies.
    """
    import slicer
    import vtk

    from MRISynthesisLib.errors import InputError

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    node = shown_by or node
    parent = node.GetParentTransformNode()
    if parent is None:
        return _numpy(m)
    if not parent.IsTransformToWorldLinear():
        raise InputError(f"'{node.GetName()}' is under the non-linear transform '{parent.GetName()}'; harden it "
                         "(Data module: right-click, Harden transform) before synthesis")
    to_world = vtk.vtkMatrix4x4()
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(parent, None, to_world)
    return _numpy(to_world) @ _numpy(m)


def _lps_geometry(node, shown_by=None) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) in LPS of where the views show the node's voxels."""
    ijk_to_lps = LPS_TO_RAS @ _matrix(node, shown_by)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    return (tuple(float(s) for s in spacing), tuple(float(o) for o in ijk_to_lps[:3, 3]),
            tuple(float(d) for d in (ijk_to_lps[:3, :3] / spacing).ravel()))


def volume_from_node(node, shown_by=None):
    """A ``Volume`` with a copy of a scalar volume node's voxels and its world geometry in LPS."""
    import slicer

    from MRISynthesisLib.errors import InputError
    from MRISynthesisLib.volume import Volume

    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{getattr(node, 'GetName', lambda: 'nothing')()}: not a scalar volume")
    if node.GetImageData() is None:
        raise InputError(f"{(shown_by or node).GetName()}: the volume has no voxels")
    geometry = _lps_geometry(node, shown_by)
    array = np.array(slicer.util.arrayFromVolume(node), dtype=np.float32, copy=True)
    if array.ndim != 3:
        raise InputError(f"{node.GetName()}: a 3D volume is needed, the node holds {array.ndim}D voxels")
    try:
        return Volume(array, *geometry)
    except InputError as err:  # e.g. a shearing parent transform: its voxel axes are no longer perpendicular
        raise InputError(f"{node.GetName()}: its geometry in the scene is not a volume's: {err}") from err


def sequence_behind(node):
    """The sequence node a proxy volume shows (the volume a sequence browser puts in the views), else None."""
    scene = node.GetScene()
    if scene is None:
        return None
    for k in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        sequence = scene.GetNthNodeByClass(k, "vtkMRMLSequenceBrowserNode").GetSequenceNode(node)
        if sequence is not None:
            return sequence
    return None


def is_series_node(node) -> bool:
    """A sequence node, a sequence browser's proxy volume, or a volume with several components per voxel."""
    if node.IsA("vtkMRMLSequenceNode") or sequence_behind(node) is not None:
        return True
    image = node.GetImageData() if node.IsA("vtkMRMLVolumeNode") else None
    return image is not None and image.GetNumberOfScalarComponents() > 1


def series_from_node(node):
    """A 4D ``Volume`` (frames, z, y, x) from a sequence node or the proxy volume its browser shows (frame
    metadata from the sequence's index: DCE times in minutes, DWI b-values), or from a multi-component
    volume (MultiVolume; frames numbered). Every frame must share one grid."""
    from MRISynthesisLib.errors import InputError
    from MRISynthesisLib.volume import Volume, frame_record, geometry_differences

    proxy = None if node.IsA("vtkMRMLSequenceNode") else node
    sequence = node if proxy is None else sequence_behind(node)
    if sequence is None:
        return volume_from_node_components(node)
    frames, records = [], []
    for k in range(sequence.GetNumberOfDataNodes()):
        data = sequence.GetNthDataNode(k)
        if data is None or not data.IsA("vtkMRMLScalarVolumeNode") or data.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(f"'{node.GetName()}': frame {k} of the sequence is not a scalar volume")
        frame = volume_from_node(data, shown_by=proxy)
        differences = geometry_differences(frames[0], frame) if frames else []
        if differences:
            raise InputError(f"'{node.GetName()}': frame {k} is not on the grid of frame 0 ({'; '.join(differences)})")
        frames.append(frame)
        records.append(frame_record(sequence.GetIndexName(), sequence.GetIndexUnit(), sequence.GetNthIndexValue(k), k))
    if not frames:
        raise InputError(f"'{node.GetName()}': the sequence holds no frames")
    first = frames[0]
    return Volume(np.stack([f.array for f in frames]), first.spacing, first.origin, first.direction, tuple(records))


def volume_from_node_components(node):
    """A multi-component volume node (MultiVolume, DWI) as a 4D ``Volume``, one frame per component."""
    import slicer

    from MRISynthesisLib.volume import Volume

    array = np.array(slicer.util.arrayFromVolume(node), dtype=np.float32, copy=True)
    if array.ndim == 3:  # one component: a series of one frame
        array = array[..., None]
    return Volume(np.moveaxis(array, -1, 0), *_lps_geometry(node), tuple({"index": k} for k in range(array.shape[-1])))


def _fill(node, volume) -> None:
    """Copy a 3D ``volume``'s voxels and geometry into ``node`` (which may be outside any scene): float32
    intensities, or 16-bit integer labels into a label map node (colour lookup and segmentations need them)."""
    import slicer
    import vtk

    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        from MRISynthesisLib.errors import InputError

        labels = np.asarray(volume.array)
        if not np.array_equal(labels, np.rint(labels)) or labels.min() < -32768 or labels.max() > 32767:
            raise InputError(f"{node.GetName()}: a label map holds whole numbers in the 16-bit range")
        voxels = np.ascontiguousarray(labels, dtype=np.int16)
    else:
        voxels = np.ascontiguousarray(volume.array, dtype=np.float32)
    slicer.util.updateVolumeFromArray(node, voxels)
    matrix = vtk.vtkMatrix4x4()
    for r, row in enumerate(ijk_to_ras(volume)):
        for c, value in enumerate(row):
            matrix.SetElement(r, c, float(value))
    node.SetIJKToRASMatrix(matrix)


def node_from_volume(scene, volume, name: str, node=None):
    """A new (or the given) scalar volume node holding a copy of ``volume`` on its grid."""
    node = node or scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    _fill(node, volume)
    node.SetName(name)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _sequences_logic(scene):
    """The application's Sequences logic; without the application (tests), a private one on ``scene``."""
    import slicer

    try:
        return slicer.modules.sequences.logic()
    except AttributeError:
        logic = slicer.vtkSlicerSequencesLogic()
        logic.SetMRMLScene(scene)
        return logic


def series_node(scene, volume, name: str, browser=None):
    """A 4D series (DCE phases, DWI b-values) as Slicer shows one: a sequence node with one scalar volume
    per frame, indexed by the frame's time or b-value, and a browser whose proxy volume (named ``name``)
    the views display and the user can step through. Returns (sequence, browser, proxy).

    ``browser``: an existing browser to add the series to, synchronised with its primary sequence (a
    synthesized series' error map steps through the phases with it), instead of a browser of its own."""
    import slicer

    from MRISynthesisLib.volume import FRAME_INDEX

    key = next(iter(volume.frames[0]), None) if volume.frames else None
    index_name, unit = FRAME_INDEX.get(key, ("frame", ""))
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName(index_name)
    sequence.SetIndexUnit(unit)
    sequence.SetIndexType(sequence.NumericIndex)
    for k in range(volume.shape[0]):
        frame = slicer.vtkMRMLScalarVolumeNode()
        _fill(frame, volume.frame(k))
        value = volume.frames[k][key] if key is not None else k
        sequence.SetDataNodeAtValue(frame, f"{float(value):g}")
    logic = _sequences_logic(scene)
    if browser is not None:
        browser.AddSynchronizedSequenceNodeID(sequence.GetID())
    else:
        browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
        # "Primary" in newer Slicer, "Master" up to now
        set_primary = (getattr(browser, "SetAndObservePrimarySequenceNodeID", None)
                       or browser.SetAndObserveMasterSequenceNodeID)
        set_primary(sequence.GetID())
    logic.UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(sequence)
    proxy.SetName(name)
    if proxy.GetDisplayNode() is None:
        proxy.CreateDefaultDisplayNodes()
    return sequence, browser, proxy


def _matplotlib_color_table(scene, name: str, colormap: str):
    """A 256-colour table node from a matplotlib colour map, made once per scene."""
    from matplotlib import colormaps

    existing = scene.GetFirstNodeByName(name)
    if existing is not None:
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    colours = colormaps[colormap]
    for k in range(256):
        r, g, b, _ = colours(k / 255)
        table.SetColor(k, f"{k}", r, g, b, 1.0)
    table.SetAttribute("Category", "MRISynthesis")
    return table


def error_color_table(scene):
    """The blue -> red colour table of IMPORTANT-Net's error map (matplotlib's jet)."""
    return _matplotlib_color_table(scene, ERROR_COLOR_TABLE, "jet")


def heat_color_table(scene):
    """The black -> red -> yellow -> white table of the imaging-differentiation maps (matplotlib's hot,
    as their PNG heatmaps)."""
    return _matplotlib_color_table(scene, HEAT_COLOR_TABLE, "hot")


def show_as_overlay(node, color_node, top: float) -> None:
    """Colour ``node`` through ``color_node`` on [0, ``top``], with its zero voxels transparent.

    A scalar volume's opacity in a slice view comes from its threshold, not from its colour table, so
    without one a map shown as a foreground tints the whole field of view with the colour of zero (jet's
    dark blue, hot's black) wherever the map is empty. Everything above zero stays visible, values above
    ``top`` included (they take the colour of ``top``)."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, float(top))
    highest = max(float(top), float(node.GetImageData().GetScalarRange()[1]))
    display.SetThreshold(float(np.nextafter(np.float32(0), np.float32(1))), highest)
    display.ApplyThresholdOn()


def set_provenance(node, provenance: Mapping[str, object]) -> None:
    """Every provenance field as an ``MRISynthesis.<key>`` node attribute (strings)."""
    for key, value in provenance.items():
        node.SetAttribute(PROVENANCE_PREFIX + key, value if isinstance(value, str) else str(value))


def results_folder(scene, name: str, under_node=None) -> int:
    """A subject-hierarchy folder for one run, under the input's study when there is one."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parent = hierarchy.GetSceneItemID()
    if under_node is not None:
        item = hierarchy.GetItemByDataNode(under_node)
        if item:
            parent = hierarchy.GetItemParent(item) or parent
    return hierarchy.CreateFolderItem(parent, name)


def place_in_folder(scene, node, folder: int) -> None:
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, folder)
    else:  # without the application's subject-hierarchy logic (headless, tests) nodes are not added for us
        hierarchy.CreateItem(folder, node)


def metrics_table(scene, name: str, rows: list[dict]):
    """A table node with one row per dict (columns from the first row; numbers stay numbers)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    if not rows:
        return table
    columns = list(rows[0])
    for key in columns:
        column = table.AddColumn()
        column.SetName(key)
    for row in rows:
        index = table.AddEmptyRow()
        for c, key in enumerate(columns):
            value = row.get(key)
            table.SetCellText(index, c, "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value)))
    return table
