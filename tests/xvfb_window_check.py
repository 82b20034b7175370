"""Run inside a real X server with a window manager (tests/test_gui_xvfb.py starts Xvfb + openbox).

    python tests/xvfb_window_check.py OUT_DIR SCAN [LABELS]

Opens the main window maximised on SCAN (with the label map LABELS, so lesions show without running
the model), waits for the 3D surfaces, then records as JSON in ``OUT_DIR/report.json``:

* the screen and window frame geometry, whether the window manager made the window active, and whether a
  dialog (Help > Keyboard shortcuts) became the active window on top of it and gave focus back on close;
* for every control of the tool panel: its rectangle in the tool panel's visible viewport (global
  coordinates too), so the test can check that nothing is clipped or scrolled away;
* the 3D dock's global rectangle and whether OpenGL rendered it, and where a real mouse click on the
  largest lesion's surface in the 3D view put the crosshair;

and grabs the whole X screen with ImageMagick's ``import -window root`` (``OUT_DIR/screen.png``) --
what a user would see, window manager decorations included.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def _wait(app, seconds: float, until=lambda: False) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        if until():
            return True
        time.sleep(0.02)
    return until()


def _rect(r) -> list[int]:
    return [r.x(), r.y(), r.width(), r.height()]


def main(out: Path, scan: str, labels: str | None) -> int:
    from PySide6.QtCore import QPoint, QRect, QSettings
    from PySide6.QtWidgets import (
        QAbstractButton, QAbstractSpinBox, QApplication, QComboBox, QLabel, QProgressBar, QSlider,
    )

    from seg_app.core.io import load_scan
    from seg_app.gui.app import make_application
    from seg_app.gui.main_window import MainWindow
    from seg_app.gui.workers import wait_for

    app = make_application()
    out.mkdir(parents=True, exist_ok=True)
    settings = QSettings(str(out / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, model_path="", interactive=False)
    win.showMaximized()
    report: dict = {}
    try:
        _wait(app, 20, lambda: win.isVisible() and win.windowHandle() is not None and win.windowHandle().isExposed())
        assert wait_for(win.open_path(scan), timeout_s=120), "the scan did not open"
        if labels:
            lab = load_scan(labels)
            win.set_labels(lab.with_array(lab.array.astype("uint8")))
        _wait(app, 120, lambda: win.measure_job is None)
        win.go_to_largest_lesion()
        win.view3d.wait(240)
        _wait(app, 1.0)
        screen = win.screen()
        report["screen"] = _rect(screen.geometry())
        report["available"] = _rect(screen.availableGeometry())
        report["frame"] = _rect(win.frameGeometry())
        report["window"] = _rect(QRect(win.mapToGlobal(QPoint(0, 0)), win.size()))
        report["maximized"] = bool(win.isMaximized())
        report["window_active"] = _wait(app, 10, lambda: QApplication.activeWindow() is win)

        scroll = win.tools_dock.widget()
        viewport = scroll.viewport()
        report["tools_viewport"] = _rect(viewport.rect())
        report["tools_viewport_global"] = _rect(QRect(viewport.mapToGlobal(QPoint(0, 0)), viewport.size()))
        report["tools_scroll_range"] = [scroll.verticalScrollBar().maximum(), scroll.horizontalScrollBar().maximum()]
        controls = []
        for kind in (QAbstractButton, QAbstractSpinBox, QComboBox, QSlider, QProgressBar, QLabel):
            for w in win.tools.findChildren(kind):
                if not w.isVisibleTo(win.tools) or (isinstance(w, QLabel) and not w.text()):
                    continue
                text = w.text() if hasattr(w, "text") and isinstance(w.text(), str) else ""
                controls.append({"kind": type(w).__name__, "text": text[:40],
                                 "in_viewport": _rect(QRect(w.mapTo(viewport, QPoint(0, 0)), w.size())),
                                 "global": _rect(QRect(w.mapToGlobal(QPoint(0, 0)), w.size())),
                                 "visible": w.isVisible()})
        report["controls"] = controls

        view3d = win.view3d
        report["view3d_available"] = view3d.view.available
        report["view3d_problem"] = view3d.view.problem
        report["view3d_dock"] = _rect(QRect(view3d.view.mapToGlobal(QPoint(0, 0)), view3d.view.size()))
        report["view3d_meshes"] = [m.n_faces for m in view3d.lesion_meshes]
        report["view3d_head_faces"] = view3d.head_mesh.n_faces if view3d.head_mesh is not None else 0

        win.statusBar().clearMessage()
        _wait(app, 0.5)
        subprocess.run(["import", "-window", "root", str(out / "screen.png")], check=True, timeout=60)

        # click-to-jump: a mouse click where the lesion's centroid appears in the 3D view
        report["click"] = _click_lesion_in_3d(app, win) if view3d.view.available and win.lesions else None

        # a dialog in front of the window takes the focus, and gives it back when closed
        win.show_shortcuts()
        dlg = win.help_dialog
        report["dialog_active"] = _wait(app, 10, lambda: QApplication.activeWindow() is dlg)
        report["dialog_frame"] = _rect(dlg.frameGeometry())
        dlg.close()
        report["focus_back"] = _wait(app, 10, lambda: QApplication.activeWindow() is win)
    finally:
        (out / "report.json").write_text(json.dumps(report, indent=1))
        win.setWindowModified(False)
        win.close()
        app.processEvents()
    return 0


def _click_lesion_in_3d(app, win) -> dict:
    """Click (QTest, a real mouse event) on the 3D view where the largest lesion's centroid projects."""
    import numpy as np
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest

    from seg_app.gui.view3d import _matrix

    lesion = max(win.lesions, key=lambda les: les.volume_ml)
    canvas = win.view3d.view.canvas
    w, h = canvas.width(), canvas.height()
    mvp = _matrix(canvas.projectionMatrix((0, 0, w, h), (0, 0, w, h))) @ _matrix(canvas.viewMatrix())
    clip = mvp @ np.append(np.asarray(lesion.centroid_ras_mm, float), 1.0)
    x, y = (clip[0] / clip[3] + 1) / 2 * w, (1 - clip[1] / clip[3]) / 2 * h
    win.state.set_cursor((0, 0, 0))
    QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(x), round(y)))
    _wait(app, 0.5)
    cursor = tuple(int(c) for c in win.state.cursor)
    label = int(win.labels.array[0][win.state.geometry.to_source_index(cursor)])
    world = win.state.geometry.display_to_world(cursor)
    return {"pixel": [round(x), round(y)], "cursor": list(cursor), "label_at_cursor": label,
            "mm_from_centroid": float(np.linalg.norm(world - np.asarray(lesion.centroid_ras_mm))),
            "lesion_max_diameter_mm": float(lesion.max_diameter_mm), "status": win.statusBar().currentMessage()}


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
