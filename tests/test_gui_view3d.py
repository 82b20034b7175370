"""The 3D dock (issue 11): without OpenGL it says why and the app works; its controller builds the head and
lesion surfaces in workers after every change, follows the crosshair and jumps to a clicked lesion
(pytest-qt, offscreen; the real OpenGL rendering is checked under Xvfb in test_gui_xvfb.py)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget

from gui_fixtures import (  # noqa: F401 - fixtures
    gui_data,
    make_window,
    no_leftover_threads,
    open_and_wait,
    wait_measurements,
)

pytestmark = pytest.mark.gui


def test_without_opengl_the_3d_dock_says_why_and_the_app_works(make_window, gui_data):
    win = make_window(model="")
    view = win.view3d.view
    assert not view.available and "OpenGL" in view.problem
    assert win.view3d.dock.widget() is view and win.view3d.dock.windowTitle() == "3D"
    assert view.message.text() == view.problem and view.message.isVisibleTo(view)
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [(20, 18, 15)])
    wait_measurements(win)
    assert len(win.lesions) == 1
    # nothing is built for a view that cannot show it
    assert win.view3d.head_job is None and win.view3d.lesion_job is None and win.view3d.head_mesh is None
    assert view.message.text() == view.problem
    actions = {a.text().replace("&", ""): a for a in win.menus.view_menu.actions()}
    win.view3d.dock.close()
    actions["3D view"].trigger()
    assert win.view3d.dock.isVisible()


def test_opengl_can_be_turned_off(monkeypatch, qapp):
    from seg_app.gui import view3d

    monkeypatch.setattr(view3d, "_problem", [])
    monkeypatch.setenv("SEG_APP_NO_3D", "1")
    assert "SEG_APP_NO_3D" in view3d.opengl_problem()


class FakeView(QWidget):
    """Stands in for View3D where OpenGL is missing: records what the controller shows."""

    picked = Signal(object, object)

    def __init__(self) -> None:
        super().__init__()
        self.available, self.problem = True, None
        self.head, self.lesions, self.colors, self.cursor, self.messages = None, [], {}, None, []

    def clear(self, message: str = "") -> None:
        self.head, self.lesions = None, []
        self.messages.append(message)

    def set_message(self, text: str) -> None:
        self.messages.append(text)

    def set_head(self, mesh) -> None:
        self.head = mesh

    def set_lesions(self, meshes, colors) -> None:
        self.lesions, self.colors = list(meshes), dict(colors)

    def set_cursor(self, ras_mm) -> None:
        self.cursor = None if ras_mm is None else np.asarray(ras_mm, float)


@pytest.fixture
def gl_window(make_window, monkeypatch):
    from seg_app.gui import view3d_controller

    monkeypatch.setattr(view3d_controller, "View3D", FakeView)
    return make_window(model="")


def _settle(win, qtbot):
    """Wait until the 3D jobs (and the measurements that trigger them) are done and the marker is placed."""
    wait_measurements(win)
    assert win.view3d.wait(60)
    qtbot.wait(10)


def test_surfaces_are_built_in_workers_and_follow_every_edit(gl_window, gui_data, qtbot):
    win = gl_window
    ctl, view = win.view3d, win.view3d.view
    open_and_wait(win, gui_data["scan"])
    assert ctl.head_job is not None  # started by the new scan, off the GUI thread
    _settle(win, qtbot)
    assert view.head is not None and view.head.name == "head" and view.lesions == []
    # the head surface lies within the scan's field of view
    vol = win.volume
    corners = np.array([[x, y, z] for x in (-0.5, vol.shape[0] - 0.5) for y in (-0.5, vol.shape[1] - 0.5)
                        for z in (-0.5, vol.shape[2] - 0.5)]) @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    lo, hi = view.head.bounds_mm
    assert np.all(lo >= corners.min(axis=0) - 1e-3) and np.all(hi <= corners.max(axis=0) + 1e-3)

    win.paint_stroke("axial", [(20, 18, 15), (24, 18, 15)])  # a brush stroke: lesion surfaces
    _settle(win, qtbot)
    assert [m.value for m in view.lesions] == [1]
    assert view.colors[1] == tuple(int(c) for c in win.data.lut_rgb[1])  # the overlay's colour
    first = view.lesions[0].n_faces
    win.paint_stroke("axial", [(36, 30, 20)], erase=False)  # a second lesion: the same label's mesh grows
    _settle(win, qtbot)
    assert view.lesions[0].n_faces > first
    win.undo()
    _settle(win, qtbot)
    assert view.lesions[0].n_faces == first
    win.delete_lesion(win.lesions[0])  # the last lesion: no surface left
    _settle(win, qtbot)
    assert view.lesions == []


def test_marker_follows_the_crosshair_once_it_rests(gl_window, gui_data, qtbot):
    from seg_app.gui.view3d_controller import CURSOR_SETTLE_MS

    win = gl_window
    view = win.view3d.view
    open_and_wait(win, gui_data["scan"])
    _settle(win, qtbot)
    for z in range(3, 9):  # scrolling: no 3D frame per slice
        win.state.set_cursor((10, 12, z))
    assert view.cursor is None or not np.allclose(view.cursor, win.state.geometry.display_to_world((10, 12, 8)))
    qtbot.waitUntil(lambda: view.cursor is not None
                    and np.allclose(view.cursor, win.state.geometry.display_to_world((10, 12, 8))),
                    timeout=CURSOR_SETTLE_MS + 2000)


def test_a_click_on_a_lesion_moves_the_crosshair_there(gl_window, gui_data, qtbot):
    win = gl_window
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [(30, 10, 20)])
    _settle(win, qtbot)
    g = win.state.geometry
    target = g.display_to_world((30, 10, 20))
    win.state.set_cursor((5, 5, 5))
    # a ray from 300 mm above the lesion straight down (what a click on its top would cast)
    assert win.view3d.pick(target + [0, 0, 300.0], [0, 0, -1.0])
    cursor = np.asarray(win.state.cursor)
    assert np.abs(cursor - (30, 10, 20)).max() <= 5  # on the lesion (its top surface, the brush is 5 mm)
    assert win.labels.array[0][g.to_source_index(cursor)] == 1
    assert "3D: crosshair on" in win.statusBar().currentMessage()
    # a ray that misses every lesion leaves the crosshair where it is
    before = win.state.cursor
    assert not win.view3d.pick(target + [0, 300.0, 300.0], [0, 0, -1.0])
    assert win.state.cursor == before and "No lesion" in win.statusBar().currentMessage()


def test_closed_dock_builds_nothing_until_shown_again(gl_window, gui_data, qtbot):
    win = gl_window
    ctl = win.view3d
    ctl.dock.close()
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [(20, 18, 15)])
    wait_measurements(win)
    assert ctl.head_job is None and ctl.lesion_job is None and ctl.view.head is None
    ctl.dock.show()
    _settle(win, qtbot)
    assert ctl.view.head is not None and [m.value for m in ctl.view.lesions] == [1]


def test_a_new_scan_clears_the_old_surfaces(gl_window, gui_data, qtbot):
    win = gl_window
    view = win.view3d.view
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [(20, 18, 15)])
    _settle(win, qtbot)
    assert view.lesions
    open_and_wait(win, gui_data["scan"])
    assert view.lesions == [] and view.messages[-1].startswith("Building")
    _settle(win, qtbot)
    assert view.head is not None and view.lesions == []
