"""The main window: wires the views, docks and menus to the Qt-free core, running long work in jobs.

Everything slow (scan loading and DICOM header scanning, model loading, inference, measurements, mask
export) runs in a :class:`~seg_app.gui.workers.Job`; every ``SegAppError`` becomes a non-blocking dialog
with the error's one-sentence message and the window stays usable.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QSettings, QStandardPaths, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from seg_app.core.errors import Cancelled, MultipleSeriesError, SegAppError
from seg_app.core.export import safe_file_name
from seg_app.core.volume import Volume
from seg_app.gui import dialogs
from seg_app.gui.editing import LabelEditor
from seg_app.gui.lesion_table import LesionTable
from seg_app.gui.render import label_luts
from seg_app.gui.slice_view import SliceView, ViewData
from seg_app.gui.viewer_state import PRESETS, VIEW_NAMES, DisplayGeometry, ViewerState, auto_window
from seg_app.gui.workers import Job

log = logging.getLogger(__name__)

MAX_RECENT = 10
SCAN_FILTER = "Scans (*.nii *.nii.gz *.dcm *.DCM *.ima *.IMA);;All files (*)"


def error_message(exc: BaseException) -> str:
    """One sentence for a dialog: the core's own message, or a generic one for unexpected errors."""
    if isinstance(exc, SegAppError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "Not enough memory for this operation; close other programs or use a smaller scan."
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"Unexpected error ({type(exc).__name__}{': ' + text if text else ''})."


class MainWindow(QMainWindow):
    """The workstation window.

    Args:
        settings: where recent files and folders persist (tests pass their own ini file).
        model_path: checkpoint to load at start (default: the bundled model); ``""`` loads none.
        interactive: False in scripted mode: errors go to stderr instead of dialogs, no questions.
    """

    error_reported = Signal(str)  # every message shown to the user as an error
    scan_loaded = Signal(object)  # Volume
    model_loaded = Signal(object)  # ModelSpec
    segmentation_finished = Signal(object)  # SegmentationResult
    measurements_updated = Signal(object)  # list[LesionMeasurement]

    def __init__(self, settings: QSettings | None = None, model_path: str | None = None, interactive: bool = True) -> None:
        super().__init__()
        self.settings = settings if settings is not None else QSettings("seg-app", "seg-app")
        self.interactive = interactive
        self.volume: Volume | None = None
        self.labels: Volume | None = None  # source grid, writable uint8 (1, I, J, K)
        self.probabilities: Volume | None = None
        self.agreement: Volume | None = None
        self.checkpoint: Any = None
        self.editor: LabelEditor | None = None
        self.lesions: list = []
        self.totals: list[dict] = []
        self.last_result: Any = None
        self.state = ViewerState()
        self.data = ViewData()
        self.jobs: set[Job] = set()
        self.load_job: Job | None = None
        self.model_job: Job | None = None
        self.seg_job: Job | None = None
        self.measure_job: Job | None = None
        self.save_job: Job | None = None
        self._measure_pending = False
        self._seg_started = 0.0
        self._stroke_last: np.ndarray | None = None
        self._stroke_view = "axial"
        self._maximised: str | None = None
        self._updating_widgets = False  # guard: model -> widget updates must not bounce back
        self._closing = False
        self._message_boxes: list[QMessageBox] = []
        self.series_picker: dialogs.SeriesPickerDialog | None = None
        self.model_card: dialogs.TextDialog | None = None
        self._cuda_available = False
        self._segmenters: dict = {}

        self.setWindowTitle("seg-app [*]")
        self.setAcceptDrops(True)
        self._build_views()
        self._build_docks()
        self._build_menus()
        self.status_position = QLabel("")
        self.statusBar().addPermanentWidget(self.status_position, 1)
        self.state.connect(self._on_state_changed)
        self._refresh_actions()
        self.statusBar().showMessage("Open a scan: File > Open scan, or drop a file or folder on the window.")
        self._update_label_choices()
        if model_path != "":
            self.load_model(model_path, show_card=False)
        else:
            self.model_info.setText("No model loaded: Model > Load model...")

    # =====================================================================================
    # construction
    # =====================================================================================
    def _build_views(self) -> None:
        self.views: dict[str, SliceView] = {n: SliceView(n, self.state, self.data) for n in VIEW_NAMES}
        central = QWidget()
        grid = QGridLayout(central)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        grid.addWidget(self.views["axial"], 0, 0, 2, 1)
        grid.addWidget(self.views["coronal"], 0, 1)
        grid.addWidget(self.views["sagittal"], 1, 1)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        central.setStyleSheet("background: #111;")
        # out-of-distribution banner above the views (hidden until a result says the scan does not fit the model)
        self.domain_banner = QLabel()
        self.domain_banner.setWordWrap(True)
        self.domain_banner.setStyleSheet("background: #7a5a00; color: white; padding: 4px; font-weight: bold;")
        self.domain_banner.setVisible(False)
        outer = QWidget()
        col = QVBoxLayout(outer)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.domain_banner)
        col.addWidget(central, 1)
        self.setCentralWidget(outer)
        self.views_widget = central
        for v in self.views.values():
            v.hovered.connect(self._on_hover)
            v.stroke.connect(lambda phase, ijk, name=v.name: self._on_stroke(name, phase, ijk))
            v.maximize_requested.connect(lambda name=v.name: self.toggle_maximise(name))

    def _build_docks(self) -> None:
        panel = QWidget()
        col = QVBoxLayout(panel)
        col.setContentsMargins(4, 4, 4, 4)

        # ---- scan
        box = QGroupBox("Scan")
        form = QFormLayout(box)
        self.scan_info = QLabel("No scan open.")
        self.scan_info.setWordWrap(True)
        self.scan_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.scan_info)
        self.channel_combo = QComboBox()
        self.channel_combo.currentIndexChanged.connect(self._on_channel_changed)
        form.addRow("Channel", self.channel_combo)
        col.addWidget(box)

        # ---- segment
        box = QGroupBox("Segment")
        lay = QVBoxLayout(box)
        self.model_info = QLabel("Loading the bundled model...")
        self.model_info.setWordWrap(True)
        lay.addWidget(self.model_info)
        row = QHBoxLayout()
        self.device_combo = QComboBox()
        for text, dev in (("Auto", "auto"), ("CPU", "cpu"), ("GPU", "cuda")):
            self.device_combo.addItem(text, dev)
        self.device_combo.setToolTip("Where the network runs (Auto: GPU when available)")
        self.tta_check = QCheckBox("TTA")
        self.tta_check.setToolTip("Test-time augmentation (flips): slower, smoother, gives an agreement map")
        row.addWidget(QLabel("Device"))
        row.addWidget(self.device_combo, 1)
        row.addWidget(self.tta_check)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.segment_button = QPushButton("Segment")
        self.segment_button.setToolTip("Run the model on the open scan (Ctrl+R)")
        self.segment_button.clicked.connect(self.start_segmentation)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_segmentation)
        row.addWidget(self.segment_button, 2)
        row.addWidget(self.cancel_button, 1)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        lay.addWidget(self.progress)
        self.progress_label = QLabel("")
        lay.addWidget(self.progress_label)
        col.addWidget(box)

        # ---- display
        box = QGroupBox("Display")
        form = QFormLayout(box)
        self.preset_combo = QComboBox()
        for name in PRESETS:
            self.preset_combo.addItem(name)
        self.preset_combo.activated.connect(lambda i: self.apply_preset(self.preset_combo.itemText(i)))
        form.addRow("Window", self.preset_combo)
        self.overlay_check = QCheckBox("Show mask")
        self.overlay_check.setChecked(True)
        self.overlay_check.setShortcut(QKeySequence("S"))
        self.overlay_check.toggled.connect(lambda on: self._set_overlay(visible=on))
        self.outline_check = QCheckBox("Outline")
        self.outline_check.toggled.connect(lambda on: self._set_overlay(outline=on))
        self.heatmap_check = QCheckBox("Probability")
        self.heatmap_check.setToolTip("Heat map of the model's foreground probability")
        self.heatmap_check.toggled.connect(lambda on: self._set_overlay(heatmap=on))
        row = QHBoxLayout()
        row.addWidget(self.overlay_check)
        row.addWidget(self.outline_check)
        row.addWidget(self.heatmap_check)
        form.addRow(row)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(int(self.state.overlay.opacity * 100))
        self.opacity_slider.valueChanged.connect(lambda v: self._set_overlay(opacity=v / 100.0))
        form.addRow("Opacity", self.opacity_slider)
        col.addWidget(box)

        # ---- edit
        box = QGroupBox("Edit")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: dict[str, QToolButton] = {}
        for tool, text, key in (("navigate", "Navigate", "N"), ("paint", "Paint", "B"), ("erase", "Erase", "E")):
            b = QToolButton()
            b.setText(text)
            b.setCheckable(True)
            b.setShortcut(QKeySequence(key))
            b.setToolTip(f"{text} ({key})")
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            self.tool_group.addButton(b)
            self.tool_buttons[tool] = b
            b.toggled.connect(lambda on, t=tool: on and self.set_tool(t))
            row.addWidget(b)
        self.tool_buttons["navigate"].setChecked(True)
        form.addRow(row)
        self.label_combo = QComboBox()
        form.addRow("Label", self.label_combo)
        self.radius_spin = QDoubleSpinBox()
        self.radius_spin.setRange(0.5, 50.0)
        self.radius_spin.setSingleStep(0.5)
        self.radius_spin.setValue(5.0)
        self.radius_spin.setSuffix(" mm")
        self.radius_spin.valueChanged.connect(self._on_radius)
        self.sphere_check = QCheckBox("3D sphere")
        self.sphere_check.setToolTip("Paint a sphere through neighbouring slices instead of a disc in the view's plane")
        row = QHBoxLayout()
        row.addWidget(self.radius_spin)
        row.addWidget(self.sphere_check)
        form.addRow("Radius", row)
        row = QHBoxLayout()
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        row.addWidget(self.undo_button)
        row.addWidget(self.redo_button)
        form.addRow(row)
        col.addWidget(box)
        col.addStretch(1)
        self.disclaimer = QLabel("Research use only — not for clinical diagnosis.")
        self.disclaimer.setStyleSheet("color: #a33; font-weight: bold;")
        self.disclaimer.setWordWrap(True)
        col.addWidget(self.disclaimer)

        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.tools_dock = QDockWidget("Tools", self)
        self.tools_dock.setObjectName("tools_dock")
        self.tools_dock.setWidget(scroll)
        self.tools_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        panel.setMinimumWidth(300)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.tools_dock)

        self.lesion_table = LesionTable()
        self.lesion_table.lesion_activated.connect(self.go_to_lesion)
        self.lesion_dock = QDockWidget("Lesions", self)
        self.lesion_dock.setObjectName("lesion_dock")
        self.lesion_dock.setWidget(self.lesion_table)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.lesion_dock)
        self.resizeDocks([self.lesion_dock], [190], Qt.Orientation.Vertical)

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        m = mb.addMenu("&File")
        self._action(m, "&Open scan...", self.open_scan_dialog, QKeySequence.StandardKey.Open, "Open a NIfTI file or a DICOM file")
        self._action(m, "Open DICOM &folder...", self.open_folder_dialog, "Ctrl+Shift+O")
        self.recent_menu = m.addMenu("Recent files")
        self._rebuild_recent_menu()
        m.addSeparator()
        self.act_save_mask = self._action(m, "&Save mask as NIfTI...", self.save_mask_dialog, QKeySequence.StandardKey.Save)
        self.act_save_seg = self._action(m, "Save mask as &DICOM SEG...", self.save_seg_dialog, "Ctrl+Alt+S",
                                         "DICOM Segmentation referencing the source series (DICOM scans only)")
        self.act_save_meas = self._action(m, "Save &measurements (CSV/JSON)...", self.save_measurements_dialog, "Ctrl+Shift+S")
        self.act_save_shot = self._action(m, "Save screens&hot (PNG)...", self.save_screenshot_dialog, "Ctrl+P")
        m.addSeparator()
        self._action(m, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        m = mb.addMenu("&Edit")
        self.act_undo = self._action(m, "&Undo", self.undo, QKeySequence.StandardKey.Undo)
        self.act_redo = self._action(m, "&Redo", self.redo, "Ctrl+Shift+Z")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        m.addSeparator()
        m.addAction(self._tool_action("Navigate", "navigate"))
        m.addAction(self._tool_action("Paint brush", "paint"))
        m.addAction(self._tool_action("Erase brush", "erase"))
        self._action(m, "Larger brush", lambda: self.radius_spin.setValue(self.radius_spin.value() * 1.25), "]")
        self._action(m, "Smaller brush", lambda: self.radius_spin.setValue(self.radius_spin.value() / 1.25), "[")

        m = mb.addMenu("&View")
        self.act_maximise = self._action(m, "&Maximise view under focus / restore", self._toggle_maximise_focused, "M")
        self._action(m, "Reset &zoom and pan", self.reset_views, "Home")
        wl = m.addMenu("Window/level preset")
        for name in PRESETS:
            self._action(wl, name, lambda _=False, n=name: self.apply_preset(n))

        m = mb.addMenu("&Model")
        self.act_segment = self._action(m, "&Segment", self.start_segmentation, "Ctrl+R")
        self._action(m, "&Load model...", self.load_model_dialog)
        self._action(m, "Model &card...", self.show_model_card)

        m = mb.addMenu("&Help")
        self._action(m, "&About seg-app", self.show_about)

    def _tool_action(self, text: str, tool: str) -> QAction:
        act = QAction(text, self)
        act.triggered.connect(lambda: self.tool_buttons[tool].setChecked(True))
        return act

    # =====================================================================================
    # errors, questions, jobs
    # =====================================================================================
    def show_error(self, message: str, title: str = "seg-app") -> None:
        """Tell the user about an error without blocking (a window-modal box, or stderr when scripted)."""
        self.error_reported.emit(message)
        self.statusBar().showMessage(message, 10000)
        if not self.interactive:
            print(f"error: {message}", file=sys.stderr)
            return
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _r, b=box: self._message_boxes.remove(b) if b in self._message_boxes else None)
        self._message_boxes.append(box)
        box.open()

    def show_info(self, message: str, title: str = "seg-app", detail: str = "") -> None:
        self.statusBar().showMessage(message, 10000)
        if not self.interactive:
            print(f"note: {message}" + (f"\n{detail}" if detail else ""), file=sys.stderr)
            return
        box = QMessageBox(QMessageBox.Icon.Information, title, message, QMessageBox.StandardButton.Ok, self)
        if detail:
            box.setInformativeText(detail)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _r, b=box: self._message_boxes.remove(b) if b in self._message_boxes else None)
        self._message_boxes.append(box)
        box.open()

    def _report(self, exc: BaseException, what: str) -> None:
        if not isinstance(exc, SegAppError):
            log.error("%s failed", what, exc_info=exc)
        self.show_error(error_message(exc), title=f"seg-app: {what}")

    def confirm_discard(self, action: str) -> bool:
        """Ask before losing unsaved edits (tests monkeypatch this)."""
        if not self.isWindowModified() or not self.interactive:
            return True
        answer = QMessageBox.question(
            self,
            "Unsaved mask",
            f"The mask has unsaved changes. {action} anyway and discard them?",
            QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        return answer == QMessageBox.StandardButton.Discard

    def ask_save_path(self, title: str, default_name: str, file_filter: str) -> str:
        """A save-file dialog starting in the user's last export folder (tests monkeypatch this)."""
        start = self.settings.value("export_dir", "", type=str) or QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.DocumentsLocation
        ) or str(Path.home())
        path, _ = QFileDialog.getSaveFileName(self, title, str(Path(start) / default_name), file_filter)
        return path

    def ask_open_path(self, title: str, file_filter: str, folder: bool = False) -> str:
        start = self.settings.value("open_dir", "", type=str) or str(Path.home())
        if folder:
            return QFileDialog.getExistingDirectory(self, title, start)
        path, _ = QFileDialog.getOpenFileName(self, title, start, file_filter)
        return path

    def start_job(self, fn, name: str) -> Job:
        job = Job(fn, name, self)
        self.jobs.add(job)
        job.finished.connect(lambda j=job: self._job_done(j))
        return job

    def _job_done(self, job: Job) -> None:
        self.jobs.discard(job)
        job.deleteLater()
        self._refresh_actions()

    def cancel_all_jobs(self, wait: bool = True) -> None:
        """Cancel every running job and wait for their threads (used when closing)."""
        for job in list(self.jobs):
            job.cancel()
        if wait:
            for job in list(self.jobs):
                job.wait()

    # =====================================================================================
    # opening scans
    # =====================================================================================
    def open_scan_dialog(self) -> None:
        path = self.ask_open_path("Open scan", SCAN_FILTER)
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        path = self.ask_open_path("Open DICOM folder", "", folder=True)
        if path:
            self.open_path(path)

    def open_path(self, path: str, series_uid: str | None = None) -> Job | None:
        """Load a scan (file or DICOM folder) in the background; a folder with several series opens a picker."""
        path = str(path)
        if self.load_job is not None:
            self.statusBar().showMessage("Still loading the previous scan...", 4000)
            return None
        if self.seg_job is not None:
            self.show_error("Cancel or wait for the running segmentation before opening another scan.")
            return None
        if not self.confirm_discard("Open another scan"):
            return None
        self.settings.setValue("open_dir", str(Path(path).parent if Path(path).is_file() else Path(path)))

        def load(progress, cancel):
            from seg_app.core.io import load_scan

            try:
                return load_scan(path, series_uid=series_uid)
            except MultipleSeriesError as exc:  # previews for the picker, made here off the GUI thread
                from seg_app.core.dicom_io import series_thumbnail

                exc.thumbnails = {s.series_uid: series_thumbnail(s) for s in exc.series}
                raise

        job = self.start_job(load, "loading")
        self.load_job = job
        job.succeeded.connect(lambda vol: self._on_loaded(vol, path))
        job.failed.connect(lambda exc: self._on_load_failed(exc, path))
        job.finished.connect(self._on_load_finished)
        self._busy(f"Loading {Path(path).name}...")
        job.start()
        return job

    def _on_load_finished(self) -> None:
        self.load_job = None
        self._idle()

    def _on_load_failed(self, exc: BaseException, path: str) -> None:
        if isinstance(exc, MultipleSeriesError) and exc.series:
            if not self.interactive:
                self.show_error(f"{exc} Pass --series with one of: " + "; ".join(s.summary() for s in exc.series))
                return
            dlg = dialogs.SeriesPickerDialog(
                exc.series, folder=Path(path).name, parent=self, thumbnails=getattr(exc, "thumbnails", None)
            )
            self.series_picker = dlg
            dlg.accepted.connect(lambda: self._on_series_picked(path, dlg))
            dlg.finished.connect(lambda _r: setattr(self, "series_picker", None))
            dlg.open()
            return
        self._report(exc, "open scan")

    def _on_series_picked(self, path: str, dlg: dialogs.SeriesPickerDialog) -> None:
        s = dlg.selected_series()
        if s is not None:
            self.open_path(path, s.series_uid)

    def _on_loaded(self, volume: Volume, path: str) -> None:
        self.set_volume(volume)
        self._add_recent(path)
        if volume.warnings:
            self.show_info(
                f"The scan was loaded with {len(volume.warnings)} warning(s); check the images carefully.",
                "Loading warnings",
                "\n".join(f"- {w}" for w in volume.warnings),
            )

    def set_volume(self, volume: Volume) -> None:
        """Show a new scan (drops any mask, history and measurements)."""
        self.volume = volume
        self.domain_banner.setVisible(False)
        geometry = DisplayGeometry.from_affine(volume.affine, volume.shape)
        self._clear_labels()
        self._updating_widgets = True
        try:
            self.channel_combo.clear()
            names = volume.channel_names or tuple(f"channel {c}" for c in range(volume.n_channels))
            for c in range(volume.n_channels):
                self.channel_combo.addItem(names[c] if c < len(names) else f"channel {c}", c)
            self.channel_combo.setEnabled(volume.n_channels > 1)
        finally:
            self._updating_widgets = False
        self.state.channel = 0
        self.data.image = geometry.view(volume.array[0])
        note = "Oblique scan: closest canonical planes" if geometry.oblique else ""
        for v in self.views.values():
            v.oblique_note = note
            v.reset_view()
        self.state.set_geometry(geometry)
        self.apply_preset("Soft tissue" if volume.modality == "CT" else "Auto (0.5-99.8%)")
        sp = " x ".join(f"{s:.3g}" for s in volume.spacing)
        info = [
            f"<b>{volume.name}</b>",
            f"{volume.modality or 'modality not recorded'}, {' x '.join(map(str, volume.shape))} voxels, {sp} mm",
            f"array axes {volume.orientation}+" + (" (oblique: shown on the closest canonical planes)" if geometry.oblique else ""),
        ]
        if volume.warnings:
            info.append(f"<span style='color:#c60'>{len(volume.warnings)} loading warning(s): "
                        + "; ".join(volume.warnings) + "</span>")
        self.scan_info.setText("<br>".join(info))
        self._set_dirty(False)
        self._update_title()
        self.statusBar().showMessage(f"Opened {volume.name}.", 5000)
        self.scan_loaded.emit(volume)
        self._refresh_actions()

    def _add_recent(self, path: str) -> None:
        recent = [p for p in self.recent_files() if p != path]
        recent.insert(0, path)
        self.settings.setValue("recent_files", recent[:MAX_RECENT])
        self._rebuild_recent_menu()

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent_files", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in (value or [])]

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_files()
        for p in recent:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, path=p: self.open_path(path))
        self.recent_menu.setEnabled(bool(recent))

    # ---- drag and drop
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_path(paths[0])

    # =====================================================================================
    # model
    # =====================================================================================
    def load_model_dialog(self) -> None:
        path = self.ask_open_path("Load model checkpoint", "Model checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.load_model(path, show_card=True)

    def load_model(self, path: str | None, show_card: bool = True) -> Job | None:
        """Load a checkpoint (default: the bundled model) in the background."""
        if self.model_job is not None:
            return None

        def load(progress, cancel):
            import torch

            from seg_app.core.spec import default_model_path, load_checkpoint

            ckpt = load_checkpoint(path or default_model_path())
            return ckpt, bool(torch.cuda.is_available())

        job = self.start_job(load, "model loading")
        self.model_job = job
        self.model_info.setText("Loading model...")
        job.succeeded.connect(lambda res: self._on_model_loaded(res, show_card))
        job.failed.connect(lambda exc: self._on_model_failed(exc, path))
        job.finished.connect(lambda: setattr(self, "model_job", None))
        job.start()
        return job

    def _on_model_failed(self, exc: BaseException, path: str | None) -> None:
        if self.checkpoint is None:
            self.model_info.setText("No model loaded: Model > Load model...")
        else:
            self._show_model_info()
        if path is None and not self.interactive:
            print(f"note: {error_message(exc)}", file=sys.stderr)
        elif path is None:
            # the bundled model is missing: say so in the panel, not with a dialog at start-up
            self.model_info.setText(f"No model loaded ({error_message(exc)}) Use Model > Load model...")
        else:
            self._report(exc, "load model")
        self._refresh_actions()

    def _on_model_loaded(self, result, show_card: bool) -> None:
        ckpt, cuda = result
        self.checkpoint = ckpt
        self._cuda_available = cuda
        gpu_item = self.device_combo.model().item(2)
        gpu_item.setEnabled(cuda)
        gpu_item.setToolTip("" if cuda else "No CUDA GPU available")
        self._show_model_info()
        self._update_label_choices()
        self.model_loaded.emit(ckpt.spec)
        self._refresh_actions()
        if show_card:
            self.show_model_card()

    def _show_model_info(self) -> None:
        spec = self.checkpoint.spec
        labels = ", ".join(lab.name for lab in spec.foreground_labels)
        self.model_info.setText(f"<b>{spec.name}</b> v{spec.version}<br>labels: {labels}")
        self.model_info.setToolTip(self._model_card_text())

    def _model_card_text(self) -> str | None:
        if self.checkpoint is None:
            return None
        from seg_app.core.spec import model_card

        text = model_card(self.checkpoint.spec)
        if getattr(self.checkpoint, "path", ""):
            text += f"\nFile: {self.checkpoint.path}"
        return text

    def show_model_card(self) -> None:
        card = self._model_card_text()
        if card is None:
            self.show_error("No model is loaded; use Model > Load model... first.")
            return
        self.model_card = dialogs.model_card_dialog(card, self)
        self.model_card.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.model_card.show()

    def show_about(self) -> None:
        dlg = dialogs.about_dialog(self._model_card_text(), self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.about = dlg
        dlg.show()

    def _label_specs(self) -> list[tuple[int, str, tuple[int, int, int]]]:
        if self.checkpoint is not None:
            return [(lab.value, lab.name, tuple(lab.color)) for lab in self.checkpoint.spec.foreground_labels]
        return [(1, "lesion", (230, 60, 60))]

    def _update_label_choices(self) -> None:
        current = self.label_combo.currentData()
        self.label_combo.clear()
        for value, name, _c in self._label_specs():
            self.label_combo.addItem(f"{value}: {name}", value)
        i = self.label_combo.findData(current)
        self.label_combo.setCurrentIndex(max(i, 0))
        self.data.lut_rgb, self.data.lut_visible = label_luts((v, c) for v, _n, c in self._label_specs())
        self._invalidate_frames()

    # =====================================================================================
    # segmentation
    # =====================================================================================
    def start_segmentation(self) -> Job | None:
        """Run the model on the open scan in a background job (progress, cancel)."""
        if self.seg_job is not None or self.volume is None:
            return None
        if self.checkpoint is None:
            self.show_error("No model is loaded; use Model > Load model... first.")
            return None
        if not self.confirm_discard("Segment again"):
            return None
        volume, ckpt = self.volume, self.checkpoint
        device = self.device_combo.currentData()
        tta = self.tta_check.isChecked()

        cache = self._segmenters  # built in the worker, reused for the same model and settings

        def segment(progress, cancel):
            from seg_app.core.inference import Segmenter

            key = (id(ckpt), device, tta)
            seg = cache.get(key)
            if seg is None:
                cache.clear()
                seg = cache[key] = Segmenter(model=ckpt, device=device, tta=tta)
            return seg.segment(volume, progress=progress, cancel=cancel, return_probabilities=True)

        job = self.start_job(segment, "segmentation")
        self.seg_job = job
        job.progressed.connect(self._on_seg_progress)
        job.succeeded.connect(self._on_segmented)
        job.failed.connect(lambda exc: self._report(exc, "segmentation"))
        job.cancelled.connect(lambda: self.statusBar().showMessage("Segmentation cancelled.", 5000))
        job.finished.connect(self._on_seg_finished)
        self._seg_started = time.perf_counter()
        self.progress.setRange(0, 0)  # busy until the first window is done
        self.progress.setFormat("")
        self.progress_label.setText(f"Preparing ({'TTA, ' if tta else ''}{self.device_combo.currentText()})...")
        job.start()
        self._refresh_actions()
        return job

    def cancel_segmentation(self) -> None:
        if self.seg_job is not None:
            self.seg_job.cancel()
            self.progress_label.setText("Cancelling...")
            self.cancel_button.setEnabled(False)

    def _on_seg_progress(self, done: int, total: int) -> None:
        if self.seg_job is None or self.seg_job.cancel_event.is_set():
            return
        total = max(total, 1)
        self.progress.setRange(0, total)
        self.progress.setValue(min(done, total))
        self.progress.setFormat(f"{done}/{total} windows")
        elapsed = time.perf_counter() - self._seg_started
        if done > 0:
            left = elapsed / done * (total - done)
            self.progress_label.setText(f"Window {done} of {total}, about {_fmt_seconds(left)} left")

    def _on_seg_finished(self) -> None:
        self.seg_job = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        if not self.progress_label.text().startswith("Done"):
            self.progress_label.setText("")
        self._refresh_actions()

    def _domain_warnings(self, result) -> list[str]:
        """The out-of-distribution sentences for this scan and the result's model (shown in the banner)."""
        from seg_app.core.ood import domain_warnings

        spec = getattr(result, "spec", None)
        return domain_warnings(self.volume, spec) if spec is not None and self.volume is not None else []

    def _on_segmented(self, result) -> None:
        if self._closing or self.volume is None:
            return
        self.last_result = result
        self.set_labels(result.labels, result.probabilities, getattr(result, "agreement", None))
        self._set_dirty(True)
        dev = getattr(result, "device", "")
        secs = getattr(result, "seconds", time.perf_counter() - self._seg_started)
        self.progress_label.setText(f"Done in {_fmt_seconds(secs)} on {dev}.")
        self.statusBar().showMessage(f"Segmentation done in {_fmt_seconds(secs)} ({dev}).", 8000)
        warnings = tuple(getattr(result, "warnings", ()) or ())
        domain = [w for w in warnings if w in set(self._domain_warnings(result))]
        self.domain_banner.setText("\n".join(f"\u26a0 {w}" for w in domain))
        self.domain_banner.setVisible(bool(domain))
        if warnings:
            self.show_info("The segmentation finished with warnings.", "Segmentation", "\n".join(f"- {w}" for w in warnings))
        self.segmentation_finished.emit(result)

    # =====================================================================================
    # labels, overlay, editing
    # =====================================================================================
    def _clear_labels(self) -> None:
        self.labels = self.probabilities = self.agreement = None
        self.editor = None
        self.data.labels = self.data.probability = None
        self.lesions, self.totals = [], []
        self.lesion_table.clear()
        self._invalidate_frames()

    def set_labels(self, labels: Volume, probabilities: Volume | None = None, agreement: Volume | None = None) -> None:
        """Show a label map on the open scan's grid (copied into a writable uint8 array for editing)."""
        assert self.volume is not None and self.state.geometry is not None
        arr = np.array(labels.array, dtype=np.uint8, copy=True)
        if arr.shape[1:] != self.volume.shape:
            raise ValueError(f"label shape {arr.shape} does not match the scan {self.volume.shape}")
        self.labels = Volume(arr, self.volume.affine, modality="SEG", source_paths=(), series_description="")
        self.probabilities = probabilities
        self.agreement = agreement
        g = self.state.geometry
        self.data.labels = g.view(arr[0])
        self.data.probability = g.view(probabilities.array[0]) if probabilities is not None else None
        self.editor = LabelEditor(self.data.labels, g.spacing)
        if self.data.lut_rgb is None:
            self._update_label_choices()
        self._invalidate_frames()
        self.request_measurements()
        self._refresh_actions()

    def _ensure_labels(self) -> bool:
        if self.labels is None and self.volume is not None:
            self.set_labels(self.volume.with_array(np.zeros((1,) + self.volume.shape, np.uint8)))
        return self.labels is not None

    def _invalidate_frames(self) -> None:
        self.data.labels_version += 1
        for v in self.views.values():
            v.update()

    def _set_overlay(self, **changes) -> None:
        if not self._updating_widgets:
            self.state.set_overlay(**changes)

    def set_tool(self, tool: str) -> None:
        for v in self.views.values():
            v.tool = tool
            v.setCursor(Qt.CursorShape.CrossCursor if tool != "navigate" else Qt.CursorShape.ArrowCursor)
            v.update()
        if not self.tool_buttons[tool].isChecked():
            self.tool_buttons[tool].setChecked(True)

    def _on_radius(self, value: float) -> None:
        for v in self.views.values():
            v.brush_radius_mm = value
            v.update()

    def _on_stroke(self, view: str, phase: str, ijk) -> None:
        if self.volume is None or self.seg_job is not None:
            if self.seg_job is not None and phase == "begin":
                self.statusBar().showMessage("Wait for the segmentation to finish before editing.", 4000)
            return
        tool = self.views[view].tool
        value = 0 if tool == "erase" else int(self.label_combo.currentData() or 1)
        radius = self.radius_spin.value()
        sphere = self.sphere_check.isChecked()
        if phase == "begin":
            if not self._ensure_labels():
                return
            assert self.editor is not None
            self.editor.begin_stroke()
            self.editor.dab(ijk, radius, value, view, sphere)
            self._stroke_last = np.asarray(ijk)
        elif phase == "move" and self.editor is not None and self._stroke_last is not None:
            self.editor.line(self._stroke_last, ijk, radius, value, view, sphere)
            self._stroke_last = np.asarray(ijk)
        elif phase == "end" and self.editor is not None:
            self._stroke_last = None
            if self.editor.end_stroke() is not None:
                self._after_edit()
            return
        self._invalidate_frames()

    def paint_stroke(self, view: str, points, erase: bool = False) -> None:
        """Programmatic stroke through display voxel ``points`` (tests, scripting)."""
        old = self.views[view].tool
        self.views[view].tool = "erase" if erase else "paint"
        pts = [np.asarray(p, float) for p in points]
        self._on_stroke(view, "begin", pts[0])
        for p in pts[1:]:
            self._on_stroke(view, "move", p)
        self._on_stroke(view, "end", pts[-1])
        self.views[view].tool = old

    def _after_edit(self) -> None:
        self._set_dirty(True)
        self._invalidate_frames()
        self.request_measurements()
        self._refresh_actions()

    def undo(self) -> None:
        if self.editor is not None and self.seg_job is None and self.editor.undo():
            self._after_edit()

    def redo(self) -> None:
        if self.editor is not None and self.seg_job is None and self.editor.redo():
            self._after_edit()

    # =====================================================================================
    # measurements
    # =====================================================================================
    def request_measurements(self) -> None:
        """Recompute the lesion table in the background (coalesces requests made while one runs)."""
        if self.labels is None or self.volume is None:
            return
        if self.measure_job is not None:
            self._measure_pending = True
            return
        self._measure_pending = False
        labels = self.labels.with_array(self.labels.array.copy())  # snapshot: edits may continue
        image, prob, agreement = self.volume, self.probabilities, self.agreement
        names = {v: n for v, n, _c in self._label_specs()}

        def measure(progress, cancel):
            from seg_app.core.measure import label_totals, measure_lesions
            from seg_app.core.regions import composite_regions

            lesions = measure_lesions(labels, image=image, probabilities=prob, agreement=agreement, label_names=names,
                                      regions=composite_regions(names))
            return lesions, label_totals(lesions)

        job = self.start_job(measure, "measurement")
        self.measure_job = job
        job.succeeded.connect(self._on_measured)
        job.failed.connect(lambda exc: self._report(exc, "measurements"))
        job.finished.connect(self._on_measure_finished)
        self.lesion_table.set_busy(True)
        job.start()

    def _on_measured(self, result) -> None:
        if self._closing:
            return
        self.lesions, self.totals = result
        colors = {v: c for v, _n, c in self._label_specs()}
        unit = "HU" if self.volume is not None and self.volume.modality == "CT" else ""
        self.lesion_table.set_lesions(self.lesions, self.totals, colors, unit, self._region_colors())
        self.measurements_updated.emit(self.lesions)

    def _region_colors(self) -> dict[str, tuple[int, int, int]]:
        """Colour of each sub-region (its label's) and composite (WT: outermost, TC: core, ET: enhancing)."""
        from seg_app.core.regions import composite_regions

        specs = self._label_specs()
        regions = composite_regions({v: n for v, n, _c in specs})
        if not regions:
            return {}
        colors = {v: c for v, _n, c in specs}
        out = {n: c for v, n, c in specs if v != 0}
        oedema = [v for v in regions["WT"] if v not in regions["TC"]]
        for key, v in (("WT", oedema[0] if oedema else regions["WT"][0]), ("TC", regions["TC"][0]), ("ET", regions["ET"][0])):
            out[key] = colors.get(v, (200, 200, 200))
        return out

    def _on_measure_finished(self) -> None:
        self.measure_job = None
        if self._measure_pending and not self._closing:
            self.request_measurements()

    def go_to_lesion(self, lesion) -> None:
        """Move the crosshair to a lesion's centroid in all views."""
        g = self.state.geometry
        if g is None:
            return
        self.state.set_cursor(g.world_to_display(lesion.centroid_ras_mm))
        self.statusBar().showMessage(
            f"{lesion.label_name} #{lesion.lesion_id}: {lesion.volume_ml:.2f} mL, max diameter {lesion.max_diameter_mm:.1f} mm", 6000
        )

    # =====================================================================================
    # export
    # =====================================================================================
    def save_mask_dialog(self) -> None:
        if self.labels is None or self.volume is None:
            self.show_error("There is no mask to save; segment the scan or paint one first.")
            return
        path = self.ask_save_path("Save mask as NIfTI", f"{safe_file_name(self.volume.name)}_mask.nii.gz", "NIfTI (*.nii.gz *.nii)")
        if path:
            self.save_mask(path)

    def save_mask(self, path: str) -> Job | None:
        """Write the mask aligned with the source scan (atomic; never over the source) in the background."""
        p = Path(path)
        if not p.name.lower().endswith((".nii", ".nii.gz")):
            p = p.with_name(p.name + ".nii.gz")

        def write(labels, reference):
            from seg_app.core.io import save_labels

            return save_labels(labels, reference, p)

        return self._start_save(p, write, "save mask")

    def save_seg_dialog(self) -> None:
        if self.labels is None or self.volume is None:
            self.show_error("There is no mask to save; segment the scan or paint one first.")
            return
        if not self.volume.series_uid:
            self.show_error("DICOM SEG export needs a DICOM source scan; this scan was opened from NIfTI, so save the mask as NIfTI instead.")
            return
        path = self.ask_save_path("Save mask as DICOM SEG", f"{safe_file_name(self.volume.name)}_seg.dcm", "DICOM (*.dcm)")
        if path:
            self.save_seg(path)

    def save_seg(self, path: str) -> Job | None:
        """Write the mask as a DICOM Segmentation referencing the source series (background, atomic)."""
        p = Path(path)
        if p.suffix.lower() != ".dcm":
            p = p.with_name(p.name + ".dcm")
        spec = self.checkpoint.spec if self.checkpoint is not None else None
        edited = self.editor is not None and self.editor.can_undo

        def write(labels, reference):
            from seg_app.core.dicom_seg import export_dicom_seg

            return export_dicom_seg(labels, reference, p, spec=spec, manually_edited=edited)

        return self._start_save(p, write, "save DICOM SEG")

    def _start_save(self, p: Path, write, what: str) -> Job | None:
        """Run ``write(labels_copy, reference)`` in a job; refuse paths that are the source scan."""
        if self.labels is None or self.volume is None or self.save_job is not None:
            return None
        for src in self.volume.source_paths:
            if Path(src).resolve() == p.resolve():
                self.show_error(f"Refusing to save to {p.name}: that would overwrite the source scan.")
                return None
        labels, reference = self.labels.with_array(self.labels.array.copy()), self.volume
        job = self.start_job(lambda progress, cancel: write(labels, reference), "saving")
        self.save_job = job
        job.succeeded.connect(lambda out: self._on_saved(out))
        job.failed.connect(lambda exc: self._report(exc, what))
        job.finished.connect(lambda: setattr(self, "save_job", None))
        job.start()
        return job

    def _on_saved(self, out) -> None:
        self.settings.setValue("export_dir", str(Path(out).parent))
        self._set_dirty(False)
        self.statusBar().showMessage(f"Saved the mask to {out}.", 8000)

    def save_measurements_dialog(self) -> None:
        if self.volume is None or self.labels is None:
            self.show_error("There are no measurements to save; segment the scan first.")
            return
        path = self.ask_save_path(
            "Save measurements", f"{safe_file_name(self.volume.name)}_lesions.csv", "CSV (*.csv);;JSON (*.json)"
        )
        if path:
            self.save_measurements(path)

    def save_measurements(self, path: str) -> bool:
        """Write the lesion table as CSV or JSON (by extension; atomic)."""
        from seg_app.core import export

        p = Path(path)
        if p.suffix.lower() not in (".csv", ".json"):
            p = p.with_name(p.name + ".csv")
        try:
            if p.suffix.lower() == ".json":
                spec = self.checkpoint.spec if self.checkpoint is not None else None
                extra = export.measurements_metadata(
                    self.volume, spec, result=self.last_result, model_path=getattr(self.checkpoint, "path", ""),
                    tta=self.tta_check.isChecked(),
                )
                export.save_measurements_json(p, self.lesions, self.totals, extra=extra)
            else:
                export.save_measurements_csv(p, self.lesions)
        except (SegAppError, OSError) as exc:
            self._report(exc, "save measurements")
            return False
        self.settings.setValue("export_dir", str(p.parent))
        self.statusBar().showMessage(f"Saved {len(self.lesions)} lesion(s) to {p}.", 8000)
        return True

    def save_screenshot_dialog(self) -> None:
        name = f"{safe_file_name(self.volume.name)}_views.png" if self.volume else "seg-app.png"
        path = self.ask_save_path("Save screenshot", name, "PNG (*.png)")
        if path:
            self.save_screenshot(path)

    def save_screenshot(self, path: str, whole_window: bool = False) -> bool:
        """PNG of the three views (or the whole window), rendered to memory and written atomically."""
        from seg_app.core.io import atomic_write

        p = Path(path)
        if p.suffix.lower() != ".png":
            p = p.with_name(p.name + ".png")
        pixmap = (self if whole_window else self.views_widget).grab()
        data = QByteArray()
        buf = QBuffer(data)
        buf.open(QIODevice.OpenModeFlag.WriteOnly)
        ok = pixmap.save(buf, "PNG")
        buf.close()
        if not ok:
            self.show_error(f"Could not render the screenshot for {p.name}.")
            return False
        try:
            with atomic_write(p) as tmp:
                Path(tmp).write_bytes(bytes(data.data()))
        except (SegAppError, OSError) as exc:
            self.show_error(f"Could not save the screenshot to {p}: {getattr(exc, 'strerror', None) or exc}.")
            return False
        self.settings.setValue("export_dir", str(p.parent))
        self.statusBar().showMessage(f"Saved the screenshot to {p}.", 8000)
        return True

    # =====================================================================================
    # viewing
    # =====================================================================================
    def apply_preset(self, name: str) -> None:
        """Window/level preset by name (see ``PRESETS``); "Auto" uses the 0.5-99.8 percentiles."""
        if self.data.image is None:
            return
        preset = PRESETS.get(name)
        if preset is None:
            width, level = auto_window(self.data.image)
        else:
            width, level = preset
        self.state.set_window(width, level)
        i = self.preset_combo.findText(name)
        if i >= 0:
            self.preset_combo.setCurrentIndex(i)

    def _on_channel_changed(self, index: int) -> None:
        if self._updating_widgets or self.volume is None or self.state.geometry is None or index < 0:
            return
        self.data.image = self.state.geometry.view(self.volume.array[index])
        self.state.set_channel(index)
        self.apply_preset(self.preset_combo.currentText())

    def _on_state_changed(self, what: str) -> None:
        for v in self.views.values():
            v.update()
        if what == "cursor":
            self._on_hover(None)

    def _on_hover(self, ijk) -> None:
        """Status bar: voxel indices, RAS mm, intensity and label under the mouse (or the crosshair)."""
        g = self.state.geometry
        if g is None or self.volume is None:
            self.status_position.setText("")
            return
        d = np.round(np.asarray(self.state.cursor if ijk is None else ijk, float)).astype(int)
        d = np.clip(d, 0, np.asarray(g.shape) - 1)
        i, j, k = g.to_source_index(d)
        ras = self.volume.voxel_to_world((i, j, k))
        value = float(self.volume.array[self.state.channel, i, j, k])
        unit = " HU" if self.volume.modality == "CT" else ""
        text = f"voxel ({i}, {j}, {k})   RAS ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}) mm   value {value:.6g}{unit}"
        if self.labels is not None:
            lab = int(self.labels.array[0, i, j, k])
            name = "background" if lab == 0 else dict((v, n) for v, n, _c in self._label_specs()).get(lab, f"label {lab}")
            text += f"   label {lab} ({name})"
        self.status_position.setText(text)

    def toggle_maximise(self, name: str) -> None:
        """Show one view alone, or all three again."""
        if self._maximised == name:
            self._maximised = None
            for v in self.views.values():
                v.show()
        else:
            self._maximised = name
            for n, v in self.views.items():
                v.setVisible(n == name)
        self.views[name].setFocus()

    def _toggle_maximise_focused(self) -> None:
        focused = next((n for n, v in self.views.items() if v.hasFocus()), None)
        self.toggle_maximise(focused or self._maximised or "axial")

    def reset_views(self) -> None:
        for v in self.views.values():
            v.reset_view()

    # =====================================================================================
    # window state
    # =====================================================================================
    def _busy(self, text: str) -> None:
        self.statusBar().showMessage(text)
        if self.seg_job is None:
            self.progress.setRange(0, 0)
            self.progress_label.setText(text)

    def _idle(self) -> None:
        if self.seg_job is None:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            if not self.progress_label.text().startswith("Done"):
                self.progress_label.setText("")
        self.statusBar().clearMessage()

    def _set_dirty(self, dirty: bool) -> None:
        self.setWindowModified(dirty)
        self._update_title()

    def _update_title(self) -> None:
        name = self.volume.name if self.volume is not None else ""
        self.setWindowTitle(f"{name}[*] - seg-app" if name else "seg-app[*]")

    def _refresh_actions(self) -> None:
        running = self.seg_job is not None
        has_scan = self.volume is not None
        can_segment = has_scan and self.checkpoint is not None and not running
        self.segment_button.setEnabled(can_segment)
        self.act_segment.setEnabled(can_segment)
        self.segment_button.setToolTip(
            "Run the model on the open scan (Ctrl+R)" if self.checkpoint is not None else "No model loaded"
        )
        self.cancel_button.setEnabled(running)
        self.device_combo.setEnabled(not running)
        self.tta_check.setEnabled(not running)
        self.act_save_mask.setEnabled(self.labels is not None)
        self.act_save_seg.setEnabled(self.labels is not None and has_scan and bool(self.volume.series_uid))
        self.act_save_meas.setEnabled(self.labels is not None)
        self.act_save_shot.setEnabled(has_scan)
        self.act_undo.setEnabled(self.editor is not None and self.editor.can_undo and not running)
        self.act_redo.setEnabled(self.editor is not None and self.editor.can_redo and not running)
        self.undo_button.setEnabled(self.act_undo.isEnabled())
        self.redo_button.setEnabled(self.act_redo.isEnabled())

    def closeEvent(self, event) -> None:  # noqa: N802
        if not self.confirm_discard("Close"):
            event.ignore()
            return
        self._closing = True
        if self.jobs:
            self.statusBar().showMessage("Stopping background work...")
            self.cancel_all_jobs(wait=True)
        for box in list(self._message_boxes):
            box.close()
        event.accept()


def _fmt_seconds(s: float) -> str:
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60):02d} s"


__all__ = ["MainWindow", "error_message"]
