"""Where the panel's results appear: a table is only on screen in a layout with a table view.

Selecting a table (``SetActiveTableID``) changes nothing visible; Slicer's own modules (Segment
Statistics) switch to a layout with a table view and propagate the selection, and so does this.
"""

from __future__ import annotations

import slicer


def show_table(table, app=None, tables_logic=None, *, with_plot: bool = False) -> int:
    """Show ``table`` in a table view and return the layout used: the current one when it has a table view,
    else its counterpart with one (``GetLayoutWithTable``); with ``with_plot``, the four-up layout with a plot
    and a table view, so a chart shown next stays beside the table. ``app`` and ``tables_logic`` default to
    Slicer's (parameters so that the logic can be checked without the application)."""
    app = app or slicer.app
    tables_logic = tables_logic or slicer.modules.tables.logic()
    layout_manager = app.layoutManager()
    if with_plot:
        layout = slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView
    else:
        layout = tables_logic.GetLayoutWithTable(layout_manager.layout)
    layout_manager.setLayout(layout)
    app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
    app.applicationLogic().PropagateTableSelection()
    return layout
