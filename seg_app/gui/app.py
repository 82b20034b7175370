"""Application entry point: ``run_app(args)`` for ``seg-app [PATH]`` and the scripted screenshot mode."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QSettings
from PySide6.QtWidgets import QApplication

from seg_app import __version__
from seg_app.gui.main_window import MainWindow
from seg_app.gui.workers import wait_for

log = logging.getLogger(__name__)

SCREENSHOT_SIZE = (1400, 900)


def make_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else sys.argv[:1])
    QCoreApplication.setOrganizationName("seg-app")
    QCoreApplication.setApplicationName("seg-app")
    QCoreApplication.setApplicationVersion(__version__)
    app.setStyle("Fusion")
    return app  # type: ignore[return-value]


def run_app(args: argparse.Namespace) -> int:
    """Open the main window (optionally on ``args.path``) and run the event loop; or the scripted mode."""
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    app = make_application()
    if getattr(args, "screenshot", None):
        return run_scripted(args, app)
    win = MainWindow(model_path=args.model)
    win.resize(*SCREENSHOT_SIZE)
    win.show()
    if args.path:
        win.open_path(args.path, getattr(args, "series", None))
    return app.exec()


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_scripted(args: argparse.Namespace, app: QApplication | None = None, settings: QSettings | None = None) -> int:
    """``seg-app --screenshot OUT.png [--segment] [--slice-fraction F] PATH``.

    Opens PATH, optionally segments it (the worker runs while this function waits in the event loop),
    renders the window at 1400x900 and writes a PNG atomically. Returns 0 on success, 2 on any error.
    """
    app = app or make_application()
    if not args.path:
        return _fail("--screenshot needs a scan PATH to open.")
    if settings is None:
        # never touch the user's recent files from scripted runs
        settings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "seg-app", "seg-app-scripted")
    model = args.model if args.segment else ""
    win = MainWindow(settings=settings, model_path=model, interactive=False)
    errors: list[str] = []
    win.error_reported.connect(errors.append)
    win.resize(*SCREENSHOT_SIZE)
    win.show()
    try:
        job = win.open_path(args.path, getattr(args, "series", None))
        if job is None or not wait_for(job) or win.volume is None:
            return _fail(errors[-1] if errors else f"could not open {args.path}.")
        if args.segment:
            if win.model_job is not None:
                wait_for(win.model_job)
            if win.checkpoint is None:
                return _fail(errors[-1] if errors else "no model could be loaded (use --model CKPT).")
            seg = win.start_segmentation()
            if seg is None or not wait_for(seg) or win.labels is None:
                return _fail(errors[-1] if errors else "segmentation did not finish.")
            while win.measure_job is not None:
                wait_for(win.measure_job)
        frac = getattr(args, "slice_fraction", None)
        g = win.state.geometry
        if frac is not None:
            f = min(max(float(frac), 0.0), 1.0)
            win.state.set_cursor([round(f * (s - 1)) for s in g.shape])
        elif win.lesions:
            win.go_to_largest_lesion()  # crosshair, RECIST slice, calipers and the selected row
        win.view3d.wait()  # the 3D surfaces (when OpenGL works) and the crosshair on them
        for _ in range(3):
            app.processEvents()
        win.statusBar().clearMessage()
        win._on_hover(None)
        out = Path(args.screenshot)
        if not win.save_screenshot(str(out), whole_window=True):
            return _fail(errors[-1] if errors else f"could not write {out}.")
        print(f"wrote {out}")
        return 0
    finally:
        win._set_dirty(False)
        win.close()
        win.deleteLater()
        app.processEvents()
