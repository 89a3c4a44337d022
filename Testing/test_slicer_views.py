"""Where the panel shows its tables (``MRISynthesisSlicerLib.views``), with stand-ins for the application,
whose layout manager and table logic slicer-core does not have; the layout numbers are MRML's own."""

from __future__ import annotations

import sys
from pathlib import Path

import slicer  # slicer-core: MRML constants and nodes, no application

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MRISynthesis"))

from MRISynthesisSlicerLib.views import show_table  # noqa: E402

LAYOUT = slicer.vtkMRMLLayoutNode


class _Recorder:
    def __init__(self, layout):
        self.layout, self.calls = layout, []

    # layout manager
    def setLayout(self, layout):
        self.layout = layout
        self.calls.append(("setLayout", layout))

    # application
    def layoutManager(self):
        return self

    def applicationLogic(self):
        return self

    def GetSelectionNode(self):
        return self

    def SetActiveTableID(self, node_id):
        self.calls.append(("SetActiveTableID", node_id))

    def PropagateTableSelection(self):
        self.calls.append(("PropagateTableSelection",))


class _TablesLogic:
    """Slicer's rule (vtkSlicerTablesLogic::GetLayoutWithTable) for the two layouts used here."""

    def GetLayoutWithTable(self, current):
        with_table = {LAYOUT.SlicerLayoutFourUpTableView, LAYOUT.SlicerLayoutFourUpPlotTableView}
        return current if current in with_table else LAYOUT.SlicerLayoutFourUpTableView


def _table():
    scene = slicer.vtkMRMLScene()
    return scene.AddNewNodeByClass("vtkMRMLTableNode", "metrics")


def test_a_table_is_selected_in_a_layout_with_a_table_view_and_propagated():
    table, app = _table(), _Recorder(LAYOUT.SlicerLayoutFourUpView)
    layout = show_table(table, app, _TablesLogic())
    assert layout == LAYOUT.SlicerLayoutFourUpTableView == app.layout
    assert app.calls == [("setLayout", layout), ("SetActiveTableID", table.GetID()), ("PropagateTableSelection",)]


def test_a_layout_that_has_a_table_view_is_kept():
    app = _Recorder(LAYOUT.SlicerLayoutFourUpPlotTableView)
    assert show_table(_table(), app, _TablesLogic()) == LAYOUT.SlicerLayoutFourUpPlotTableView


def test_beside_a_chart_the_layout_has_a_plot_and_a_table_view():
    app = _Recorder(LAYOUT.SlicerLayoutOneUpRedSliceView)
    assert show_table(_table(), app, _TablesLogic(), with_plot=True) == LAYOUT.SlicerLayoutFourUpPlotTableView
