"""The 3D dock of the main window: surfaces built in workers, kept in step with the scan, mask and crosshair.

* a new scan: the head surface (:func:`seg_app.core.surface.head_surface`) in a background job;
* new measurements (after every segmentation, brush stroke, deletion, undo, redo, opened mask) or new
  label colours: the lesion surfaces of a snapshot of the label map, one per label value, in a job
  (requests made while one runs are coalesced into one more run);
* the crosshair moves: its 3D marker follows once the crosshair has rested for
  :data:`CURSOR_SETTLE_MS` (scrolling through slices never waits for a 3D frame); a click on a lesion surface moves the crosshair there
  (:func:`seg_app.core.surface.ray_hit` against the label map).

Nothing is computed while the dock is closed or OpenGL is missing (the dock then says why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QDockWidget

from seg_app.gui.view3d import View3D

if TYPE_CHECKING:
    from seg_app.gui.main_window import MainWindow
    from seg_app.gui.workers import Job

__all__ = ["CURSOR_SETTLE_MS", "View3DController"]

#: The 3D crosshair marker moves this long after the last crosshair move (one 3D frame per pause).
CURSOR_SETTLE_MS = 120


class View3DController(QObject):
    """Owns the *3D* dock (right-hand side, under the tools) and its background jobs."""

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.session = win.session
        self.view = View3D()
        self.dock = QDockWidget("3D", win)
        self.dock.setObjectName("view3d_dock")
        self.dock.setWidget(self.view)
        win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        win.splitDockWidget(win.tools_dock, self.dock, Qt.Orientation.Vertical)
        self.dock.toggleViewAction().setText("&3D view")
        win.menus.view_menu.addAction(self.dock.toggleViewAction())
        self.head_job: Job | None = None
        self.lesion_job: Job | None = None
        self._lesions_pending = False
        self._stale = {"head": False, "lesions": False}
        self.lesion_meshes: list = []
        self.head_mesh = None
        self._cursor_timer = QTimer(self)
        self._cursor_timer.setSingleShot(True)
        self._cursor_timer.setInterval(CURSOR_SETTLE_MS)
        self._cursor_timer.timeout.connect(self.show_cursor)
        self.session.connect(self._on_session_changed)
        win.state.connect(self._on_state_changed)
        self.view.picked.connect(self.pick)
        self.dock.visibilityChanged.connect(self._on_dock_visible)
        # the tools keep the height of their contents (never a scroll bar) while the 3D view shares their column
        for signal in (self.dock.visibilityChanged, self.dock.topLevelChanged, self.dock.dockLocationChanged,
                       win.tools_dock.topLevelChanged, win.tools_dock.dockLocationChanged):
            signal.connect(lambda *_: self.fit_tools())
        self._fit_timer = QTimer(self)
        self._fit_timer.setSingleShot(True)
        self._fit_timer.setInterval(0)
        self._fit_timer.timeout.connect(self.fit_tools)
        win.tools.installEventFilter(self)
        win.installEventFilter(self)
        self.fit_tools()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        if ((obj is self.win.tools and event.type() == QEvent.Type.LayoutRequest)
                or (obj is self.win and event.type() in (QEvent.Type.Resize, QEvent.Type.Show))):
            self._fit_timer.start()  # once the panel (or window) has been laid out again
        return False

    def fit_tools(self) -> None:
        """Cap the tools dock at the height of its contents while the 3D dock sits under it, so the 3D view
        gets the rest of the column; no cap otherwise (the tools then fill the column as before)."""
        win = self.win
        if win.closing:
            return
        scroll, tools = win.tools_dock.widget(), win.tools
        # never narrower than the panel (a squeezed column would hide its right-hand controls)
        scroll.setMinimumWidth(max(tools.minimumWidth(), tools.minimumSizeHint().width()) + 2 * scroll.frameWidth())
        shared = (not self.dock.isHidden() and not self.dock.isFloating() and not win.tools_dock.isFloating()
                  and win.dockWidgetArea(self.dock) == win.dockWidgetArea(win.tools_dock))
        if not shared:
            scroll.setMaximumHeight(16777215)  # QWIDGETSIZE_MAX
            return
        width = max(scroll.width() - 2 * scroll.frameWidth(), tools.minimumWidth())  # no vertical scroll bar
        needed = tools.heightForWidth(width) if tools.hasHeightForWidth() else tools.sizeHint().height()
        needed = max(needed, tools.minimumSizeHint().height()) + 2 * scroll.frameWidth()
        scroll.setMaximumHeight(needed)
        # as tall as that (the 3D dock down to its minimum height if need be); the 3D view takes the rest
        title = max(win.tools_dock.height() - scroll.height(), 0)
        column = win.tools_dock.height() + self.dock.height()
        tools_height = min(needed + title, column - self.dock.minimumSizeHint().height())
        if tools_height <= 0 or column - tools_height <= 0:  # not laid out yet
            return
        win.resizeDocks([win.tools_dock, self.dock], [tools_height, column - tools_height], Qt.Orientation.Vertical)

    @property
    def active(self) -> bool:
        """Surfaces are built only when they can be shown (OpenGL works, the dock is open)."""
        return self.view.available and not self.dock.isHidden()

    # ---- session events
    def _on_session_changed(self, what: str) -> None:
        if what == "volume":
            self.head_mesh, self.lesion_meshes = None, []
            self.view.clear("Building the 3D surfaces...")
            self.update_head()
        elif what == "measurements" or what == "names":
            self.update_lesions()
        elif what == "labels" and self.session.labels is None:
            self.lesion_meshes = []
            self.view.set_lesions([], {})

    def _on_state_changed(self, what: str) -> None:
        if what in ("cursor", "geometry") and self.view.available:
            self._cursor_timer.start()  # restarted by every move: one 3D frame when the crosshair rests

    def _on_dock_visible(self, visible: bool) -> None:
        if visible and self._stale["head"]:
            self.update_head()
        if visible and self._stale["lesions"]:
            self.update_lesions()

    # ---- jobs
    def update_head(self) -> Job | None:
        """Build the head surface of the open scan's first channel in the background."""
        volume = self.session.volume
        if volume is None:
            return None
        if not self.active:
            self._stale["head"] = True
            return None
        self._stale["head"] = False
        image, affine = volume.array[0], volume.affine

        def build(progress, cancel):
            from seg_app.core.surface import head_surface

            return head_surface(image, affine)

        job = self.win.job_control.start_job(build, "3D head surface")
        self.head_job = job
        job.succeeded.connect(lambda mesh: self._on_head(mesh, volume))
        job.failed.connect(lambda exc: self.view.set_message(f"The head surface could not be built: {exc}"))
        job.finished.connect(lambda: setattr(self, "head_job", None) if self.head_job is job else None)
        job.start()
        return job

    def _on_head(self, mesh, volume) -> None:
        if self.win.closing or self.session.volume is not volume:
            return
        self.head_mesh = mesh
        self.view.set_head(mesh)
        self.show_cursor()

    def update_lesions(self) -> Job | None:
        """Build the lesion surfaces of a snapshot of the label map in the background (coalesced)."""
        s = self.session
        if s.labels is None or s.volume is None:
            return None
        if not self.active:
            self._stale["lesions"] = True
            return None
        if self.lesion_job is not None:
            self._lesions_pending = True
            return None
        self._stale["lesions"] = self._lesions_pending = False
        labels, affine, names, volume = s.labels.array[0].copy(), s.labels.affine, s.label_names(), s.volume

        def build(progress, cancel):
            from seg_app.core.surface import label_surfaces

            return label_surfaces(labels, affine, names)

        job = self.win.job_control.start_job(build, "3D lesion surfaces")
        self.lesion_job = job
        job.succeeded.connect(lambda meshes: self._on_lesions(meshes, volume))
        job.failed.connect(lambda exc: self.win.statusBar().showMessage(f"3D lesion surfaces failed: {exc}", 6000))
        job.finished.connect(self._on_lesion_job_finished)
        job.start()
        return job

    def _on_lesions(self, meshes, volume) -> None:
        if self.win.closing or self.session.volume is not volume:
            return
        self.lesion_meshes = list(meshes)
        self.view.set_lesions(self.lesion_meshes, self.colors())
        self.show_cursor()

    def _on_lesion_job_finished(self) -> None:
        self.lesion_job = None
        if self._lesions_pending and not self.win.closing:
            self.update_lesions()

    def colors(self) -> dict[int, tuple[int, int, int]]:
        """Label value -> RGB as the slice views' overlay draws it (unknown values included)."""
        lut = self.win.data.lut_rgb
        if lut is None:
            return self.session.label_colors()
        return {m.value: tuple(int(c) for c in lut[m.value]) for m in self.lesion_meshes if 0 < m.value < len(lut)}

    def wait(self, timeout_s: float = 120.0) -> bool:
        """Wait (running the event loop) until the surfaces are built and the marker is on the crosshair
        (scripted screenshots); True when nothing is left to build."""
        import time

        from seg_app.gui.workers import wait_for

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.head_job or self.lesion_job
            if job is None:
                break
            wait_for(job, timeout_s=max(deadline - time.monotonic(), 0.1))
        self.show_cursor()
        return self.head_job is None and self.lesion_job is None

    # ---- crosshair
    def show_cursor(self) -> None:
        """Put the 3D crosshair marker on the crosshair now."""
        self._cursor_timer.stop()
        g = self.win.state.geometry
        if g is None or not self.view.available:
            return
        self.view.set_cursor(g.display_to_world(self.win.state.cursor))

    def pick(self, origin_mm, direction_mm) -> bool:
        """Move the crosshair to the first labelled voxel along a ray (a click in the 3D view); False on a miss."""
        from seg_app.core.surface import ray_hit

        s, g, bar = self.session, self.win.state.geometry, self.win.statusBar()
        if s.labels is None or g is None:
            bar.showMessage("No mask yet: segment the scan (Ctrl+R) to see lesions in 3D.", 4000)
            return False
        hit = ray_hit(s.labels.array[0], s.labels.affine, origin_mm, direction_mm)
        if hit is None:
            bar.showMessage("No lesion under the mouse in the 3D view.", 4000)
            return False
        point, ijk = hit
        self.win.state.set_cursor(g.from_source_index(ijk))
        name = s.label_names().get(int(s.labels.array[0][ijk]), "label")
        x, y, z = (float(v) for v in np.round(point, 1))
        bar.showMessage(f"3D: crosshair on {name} at RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm.", 6000)
        return True
