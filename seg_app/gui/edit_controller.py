"""Brush editing in the main window: tools, brush radius, strokes from the views, undo and redo.

The strokes land in the session's label map through its :class:`~seg_app.gui.editing.LabelEditor`;
this controller turns view events and panel settings into editor calls and refreshes the window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, Qt

if TYPE_CHECKING:
    from seg_app.gui.main_window import MainWindow


class EditController(QObject):
    """Paint (label from the panel), erase (background) and navigate; one mouse drag is one undo step."""

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.session = win.session
        self._stroke_last: np.ndarray | None = None

    def set_tool(self, tool: str) -> None:
        """``"navigate"``, ``"paint"`` or ``"erase"`` in every view (and its button checked)."""
        for v in self.win.views.values():
            v.tool = tool
            v.setCursor(Qt.CursorShape.CrossCursor if tool != "navigate" else Qt.CursorShape.ArrowCursor)
            v.update()
        button = self.win.tools.tool_buttons[tool]
        if not button.isChecked():
            button.setChecked(True)

    def set_radius(self, value: float) -> None:
        """Brush radius in mm (the outline the views draw follows it)."""
        for v in self.win.views.values():
            v.brush_radius_mm = value
            v.update()

    def on_stroke(self, view: str, phase: str, ijk) -> None:
        """A view's ``stroke(phase, display_ijk)`` signal; phase is begin, move or end."""
        win, session, tools = self.win, self.session, self.win.tools
        if session.volume is None or win.seg_job is not None:
            if win.seg_job is not None and phase == "begin":
                win.statusBar().showMessage("Wait for the segmentation to finish before editing.", 4000)
            return
        value = 0 if win.views[view].tool == "erase" else int(tools.label_combo.currentData() or 1)
        radius, sphere, editor = tools.radius_spin.value(), tools.sphere_check.isChecked(), session.editor
        if phase == "begin":
            if session.labels is None:  # painting on a scan without a mask starts an empty one
                session.ensure_labels()
                win.show_labels()
            editor = session.editor
            if editor is None:
                return
            editor.begin_stroke()
            editor.dab(ijk, radius, value, view, sphere)
            self._stroke_last = np.asarray(ijk)
        elif phase == "move" and editor is not None and self._stroke_last is not None:
            editor.line(self._stroke_last, ijk, radius, value, view, sphere)
            self._stroke_last = np.asarray(ijk)
        elif phase == "end" and editor is not None:
            self._stroke_last = None
            if editor.end_stroke() is not None:
                session.mark_edited()
                self._after_edit()
            return
        win.invalidate_frames()

    def paint_stroke(self, view: str, points, erase: bool = False) -> None:
        """Programmatic stroke through display voxel ``points`` (tests, scripting)."""
        v = self.win.views[view]
        old, v.tool = v.tool, "erase" if erase else "paint"
        pts = [np.asarray(p, float) for p in points]
        self.on_stroke(view, "begin", pts[0])
        for p in pts[1:]:
            self.on_stroke(view, "move", p)
        self.on_stroke(view, "end", pts[-1])
        v.tool = old

    def _after_edit(self) -> None:
        self.win.invalidate_frames()
        self.win.request_measurements()
        self.win.refresh_actions()

    def undo(self) -> None:
        if self.win.seg_job is None and self.session.undo():
            self._after_edit()

    def redo(self) -> None:
        if self.win.seg_job is None and self.session.redo():
            self._after_edit()


__all__ = ["EditController"]
