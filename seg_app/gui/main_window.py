"""The main window: shows a :class:`~seg_app.gui.session.Session` in the panels and wires them to the controllers.

The document (scan, labels, edit history, lesions, model, unsaved flag) lives in the Qt-free session;
background work (loading, model, inference, measurements) in :class:`~seg_app.gui.jobs.JobController`;
exports in :class:`~seg_app.gui.export_controller.ExportController`; widget groups in
:mod:`seg_app.gui.panels`. Every ``SegAppError`` becomes a non-blocking dialog with the error's
one-sentence message and the window stays usable.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from PySide6.QtCore import QSettings, QStandardPaths, Qt, Signal
from PySide6.QtWidgets import QDialog, QFileDialog, QLabel, QMainWindow, QMessageBox

from seg_app.core.errors import SegAppError
from seg_app.core.volume import Volume
from seg_app.gui import dialogs
from seg_app.gui.dialogs import error_message
from seg_app.gui.edit_controller import EditController
from seg_app.gui.export_controller import ExportController
from seg_app.gui.jobs import JobController
from seg_app.gui.lesion_table import LesionTable
from seg_app.gui.panels import Menus, ToolsPanel, ViewGrid, add_docks
from seg_app.gui.render import label_luts
from seg_app.gui.session import Session
from seg_app.gui.slice_view import ViewData
from seg_app.gui.view3d_controller import View3DController
from seg_app.gui.viewer_state import CUSTOM_PRESET, ViewerState, preset_window, presets_for

log = logging.getLogger(__name__)



class MainWindow(QMainWindow):
    """The workstation window.

    Args:
        settings: where recent files and folders persist (tests pass their own ini file).
        model_path: checkpoint to load at start (default: the model chosen in Model > Models..., else the
            bundled one); ``""`` loads none.
        interactive: False in scripted mode: errors go to stderr instead of dialogs, no questions.

    The document, jobs, exports and widgets of the parts stay reachable as window attributes
    (``win.labels``, ``win.seg_job``, ``win.save_mask(...)``, ``win.segment_button``...; see ``_FORWARDED``).
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
        self.session = Session()
        self.state = ViewerState()
        self.data = ViewData()
        self.closing = False
        self._updating_widgets = False  # guard: model -> widget updates must not bounce back
        self._message_boxes: list[QMessageBox] = []
        self.series_picker: dialogs.SeriesPickerDialog | None = None
        self.model_card: dialogs.TextDialog | None = None
        self.help_dialog: QDialog | None = None
        self.unsaved_box: QMessageBox | None = None
        self._preset: tuple[str, float, float] | None = None  # last preset applied: name, width, level
        self.selected_lesion = None  # the lesion whose calipers are drawn
        self.found_segmentations: list = []  # DICOM SEGs of the open series found in its folder
        self.job_control = JobController(self)
        self.exporter = ExportController(self)
        self.editing = EditController(self)

        self.setWindowTitle("seg-app [*]")
        self.setAcceptDrops(True)
        self.view_grid = ViewGrid(self.state, self.data)
        self.setCentralWidget(self.view_grid)
        self.tools = ToolsPanel(self.state.overlay.opacity)
        self.lesion_table = LesionTable()
        self.tools_dock, self.lesion_dock = add_docks(self, self.tools, self.lesion_table)
        self.menus = Menus(self)
        self.menus.set_recent(self.recent_files(), self.open_path)
        from seg_app.gui.pacs_dialog import add_pacs_menu

        add_pacs_menu(self)  # File > Open from PACS...
        from seg_app.gui.pacs_send import add_send_menu

        add_send_menu(self)  # File > Send results to PACS...
        from seg_app.gui.channel_dialog import add_study_menu

        add_study_menu(self)  # File > Open multi-sequence study...
        from seg_app.gui.followup_window import add_tools_menu

        add_tools_menu(self)  # Tools > Follow-up..., Compare with mask...
        self.view3d = View3DController(self)  # the 3D dock under the tools, View > 3D view
        self._connect_widgets()
        # the voxel read-out is a permanent widget on the right; showMessage's feedback keeps the left
        self.status_position = QLabel("")
        self.status_position.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.statusBar().addPermanentWidget(self.status_position, 0)
        self.lesion_table.model.slice_of = self.recist_slice_number
        self.state.connect(self._on_state_changed)
        self.session.connect(self._on_session_changed)
        self.refresh_actions()
        self.statusBar().showMessage("Open a scan: File > Open scan, or drop a file or folder on the window.")
        self.update_label_choices()
        if model_path is None:  # the model chosen in Model > Models... (else the bundled one)
            from seg_app.core.model_registry import chosen_model

            model_path = chosen_model()
        if model_path != "":
            self.load_model(model_path, show_card=False)
        else:
            self.model_info.setText("No model loaded: Model > Load model...")

    def _connect_widgets(self) -> None:
        t = self.tools
        for v in self.views.values():
            v.hovered.connect(self._on_hover)
            v.stroke.connect(lambda phase, ijk, name=v.name: self.editing.on_stroke(name, phase, ijk))
            v.maximize_requested.connect(lambda name=v.name: self.toggle_maximise(name))
        t.channel_combo.currentIndexChanged.connect(self._on_channel_changed)
        t.segment_button.clicked.connect(self.start_segmentation)
        t.cancel_button.clicked.connect(self.cancel_segmentation)
        t.preset_combo.activated.connect(lambda i: self.apply_preset(t.preset_combo.itemText(i)))
        t.overlay_check.toggled.connect(lambda on: self._set_overlay(visible=on))
        t.outline_check.toggled.connect(lambda on: self._set_overlay(outline=on))
        t.heatmap_check.toggled.connect(lambda on: self._set_overlay(heatmap=on))
        t.opacity_slider.valueChanged.connect(lambda v: self._set_overlay(opacity=v / 100.0))
        for tool, b in t.tool_buttons.items():
            b.toggled.connect(lambda on, tool=tool: on and self.set_tool(tool))
        t.radius_spin.valueChanged.connect(self.editing.set_radius)
        t.undo_button.clicked.connect(self.undo)
        t.redo_button.clicked.connect(self.redo)
        self.lesion_table.lesion_activated.connect(self.go_to_lesion)
        self.lesion_table.lesion_delete_requested.connect(self.delete_lesion)

    # ---- errors and questions (tests replace the questions)
    def show_error(self, message: str, title: str = "seg-app") -> None:
        """Tell the user about an error without blocking (a window-modal box, or stderr when scripted)."""
        self.error_reported.emit(message)
        self.statusBar().showMessage(message, 10000)
        if not self.interactive:
            print(f"error: {message}", file=sys.stderr)
            return
        self._open_box(QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self))

    def show_info(self, message: str, title: str = "seg-app", detail: str = "") -> None:
        self.statusBar().showMessage(message, 10000)
        if not self.interactive:
            print(f"note: {message}" + (f"\n{detail}" if detail else ""), file=sys.stderr)
            return
        box = QMessageBox(QMessageBox.Icon.Information, title, message, QMessageBox.StandardButton.Ok, self)
        if detail:
            box.setInformativeText(detail)
        self._open_box(box)

    def _open_box(self, box: QMessageBox) -> None:
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _r, b=box: self._message_boxes.remove(b) if b in self._message_boxes else None)
        self._message_boxes.append(box)
        box.open()

    def report(self, exc: BaseException, what: str) -> None:
        """Show a failed job's error (unexpected ones are also logged with their traceback)."""
        if not isinstance(exc, SegAppError):
            log.error("%s failed", what, exc_info=exc)
        self.show_error(error_message(exc), title=f"seg-app: {what}")

    def confirm_discard(self, action: str) -> bool:
        """Ask before losing unsaved edits: Save (then go on once saved), Discard or Cancel.

        True when ``action`` may go on. Tests monkeypatch this (or click the box's buttons).
        """
        if not self.isWindowModified() or not self.interactive:
            return True
        box = QMessageBox(QMessageBox.Icon.Question, "Unsaved mask",
                          f"The mask has unsaved changes. Save it before you {action[0].lower() + action[1:]}?",
                          QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                          | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        box.setEscapeButton(QMessageBox.StandardButton.Cancel)
        self.unsaved_box = box
        try:
            answer = box.exec()
        finally:
            self.unsaved_box = None
            box.deleteLater()
        if answer == QMessageBox.StandardButton.Discard:
            return True
        if answer == QMessageBox.StandardButton.Save:
            return self.exporter.save_mask_and_wait()
        return False

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

    # ---- scan, model, labels
    def set_volume(self, volume: Volume) -> None:
        """Show a new scan (drops any mask, history and measurements)."""
        geometry = self.session.set_volume(volume)
        self.view_grid.domain_banner.setVisible(False)
        self.offer_segmentations([])  # those found for the previous series
        self.show_labels()
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
        for v in self.views.values():
            v.oblique_note = "Oblique scan: closest canonical planes" if geometry.oblique else ""
            v.reset_view()
        self.selected_lesion = None
        self.data.calipers = None
        self.state.set_geometry(geometry)
        presets = presets_for(volume.modality, self.data.image)
        self.tools.set_presets(presets)
        self.menus.set_presets(presets, self.apply_preset)
        self._preset = None
        self.apply_preset(presets[0])
        self.show_patient()
        self._on_hover(None)  # the read-out describes the new scan (no label from the previous one)
        self.statusBar().showMessage(f"Opened {self.session.scan_name}.", 5000)
        self.scan_loaded.emit(volume)
        self.refresh_actions()

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_path(paths[0])

    def show_model_card(self) -> None:
        card = self.session.model_card_text()
        if card is None:
            self.show_error("No model is loaded; use Model > Load model... first.")
            return
        self.model_card = dialogs.model_card_dialog(card, self)
        self.model_card.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.model_card.show()

    def show_about(self) -> None:
        dlg = dialogs.about_dialog(self.session.model_card_text(), self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.about = dlg
        dlg.show()

    def offer_segmentations(self, found: list) -> None:
        """Offer the DICOM SEGs found for the open series (``FoundSegmentation``): banner and File menu."""
        self.found_segmentations = list(found)
        self.menus.set_found_segmentations(self.found_segmentations, self.open_segmentation)
        self.view_grid.show_found_segmentations(self.found_segmentations, self.open_segmentation)
        if found:
            self.statusBar().showMessage(f"{len(found)} segmentation(s) found for this series: "
                                         "File > Segmentations in this folder.", 8000)

    def update_label_choices(self) -> None:
        """Paint-label choice and overlay colours from the labels' names (the model's or an opened segmentation's)."""
        specs = self.session.label_specs()
        self.tools.set_label_choices(specs)
        self.data.lut_rgb, self.data.lut_visible = label_luts((v, c) for v, _n, c in specs)
        self.invalidate_frames()

    def set_labels(self, labels: Volume, probabilities: Volume | None = None, agreement: Volume | None = None) -> None:
        """Show a label map on the open scan's grid (copied into a writable uint8 array for editing)."""
        self.session.set_labels(labels, probabilities, agreement)
        self.show_labels()

    def show_labels(self) -> None:
        """Draw the session's (new) label map and probability, and measure it in the background."""
        self.data.labels = self.session.display_labels
        self.data.probability = self.session.display_probability
        if self.session.labels is None:
            self.lesion_table.clear()
            self.invalidate_frames()
            return
        if self.data.lut_rgb is None:
            self.update_label_choices()
        self.invalidate_frames()
        self.request_measurements()
        self.refresh_actions()

    def invalidate_frames(self) -> None:
        """Redraw the views after the labels or their colours changed."""
        self.data.labels_version += 1
        self.view_grid.update_views()

    def _set_overlay(self, **changes) -> None:
        if not self._updating_widgets:
            self.state.set_overlay(**changes)

    # ---- patient identifiers (shown, never logged)
    def show_patient(self) -> None:
        """Patient and study identifiers in the views' corners, the title and the Scan panel (or none)."""
        info = self.session.shown_patient
        self.data.patient_corners = info.overlay_corners() if self.session.volume is not None else ([], [])
        self.setWindowTitle(self.session.title)
        self.scan_info.setText("<br>".join(self.session.scan_summary()))
        self.menus.act_anonymise.setChecked(self.session.anonymise)
        self.view_grid.update_views()

    def set_anonymise(self, on: bool) -> None:
        """View > Anonymise: hide every identifier (for screenshots and teaching), or show them again."""
        self.session.set_anonymise(on)

    # ---- lesions
    def recist_slice_number(self, lesion) -> int | None:
        """The axial view's 1-based number of the slice where ``lesion``'s RECIST axes were measured."""
        g, volume, k = self.state.geometry, self.session.volume, getattr(lesion, "long_axis_slice", None)
        if g is None or volume is None or k is None:
            return None
        from seg_app.core.shape import axial_axis

        axis = axial_axis(volume.affine)
        if g.perm[2] != axis:  # the views' axial axis is not the measurement's (strongly oblique scan)
            return None
        src = [0, 0, 0]
        src[axis] = int(k)
        return int(g.from_source_index(src)[2]) + 1

    def go_to_lesion(self, lesion) -> None:
        """Select a lesion: crosshair on its centroid, axial view on the slice where its RECIST axes were
        measured, with the calipers drawn there."""
        g = self.state.geometry
        if g is None:
            return
        self.selected_lesion = lesion
        self.data.calipers = self._calipers_of(lesion)
        target = np.asarray(g.world_to_display(lesion.centroid_ras_mm), float)
        number = self.recist_slice_number(lesion)
        if number is not None:
            target[2] = number - 1
        self.state.set_cursor(target)
        self.lesion_table.select_lesion(lesion)
        self.view_grid.update_views()
        self.statusBar().showMessage(
            f"{lesion.label_name} #{lesion.lesion_id}: {lesion.volume_ml:.2f} mL, RECIST {lesion.long_axis_mm:.1f} x "
            f"{lesion.short_axis_mm:.1f} mm" + (f" on axial slice {number}" if number is not None else ""), 6000
        )

    def _calipers_of(self, lesion):
        s = self.session
        if s.labels is None or s.volume is None or s.geometry is None:
            return None
        from seg_app.core.shape import axial_axis
        from seg_app.gui.calipers import recist_calipers

        return recist_calipers(s.labels.array[0], s.labels.affine, lesion, s.geometry, axial_axis(s.labels.affine),
                               s.lesion_values(lesion))

    def go_to_largest_lesion(self) -> None:
        """Show the largest lesion (after a segmentation)."""
        if self.session.lesions:
            self.go_to_lesion(max(self.session.lesions, key=lambda les: les.volume_ml))

    def delete_lesion(self, lesion) -> None:
        """Erase one lesion from the mask (one undo step); the table is measured again."""
        if self.seg_job is not None:
            self.statusBar().showMessage("Wait for the segmentation to finish before editing.", 4000)
            return
        if not self.session.delete_lesion(lesion):
            self.statusBar().showMessage("That lesion is no longer in the mask; the table is being updated.", 5000)
            return
        if self.selected_lesion is lesion:
            self.selected_lesion, self.data.calipers = None, None
        self.invalidate_frames()
        self.request_measurements()
        self.refresh_actions()
        self.statusBar().showMessage(f"Deleted {lesion.label_name} #{lesion.lesion_id} ({lesion.volume_ml:.2f} mL); "
                                     "Edit > Undo brings it back.", 8000)

    def delete_selected_lesion(self) -> None:
        lesion = self.lesion_table.selected_lesion()
        if lesion is None:
            self.statusBar().showMessage("Select a lesion in the lesion table first.", 4000)
            return
        self.delete_lesion(lesion)

    def on_measurements(self) -> None:
        """New measurements: keep the selected lesion (the one nearest the old one) and its calipers."""
        old = self.selected_lesion
        self.selected_lesion, self.data.calipers = None, None
        if old is not None:
            same = [les for les in self.session.lesions if les.label == old.label]
            if same:
                near = min(same, key=lambda les: float(np.linalg.norm(np.subtract(les.centroid_ras_mm, old.centroid_ras_mm))))
                if np.linalg.norm(np.subtract(near.centroid_ras_mm, old.centroid_ras_mm)) <= 10.0:
                    self.selected_lesion = near
                    self.data.calipers = self._calipers_of(near)
                    self.lesion_table.select_lesion(near)
        self.view_grid.update_views()

    # ---- help
    def show_user_guide(self) -> None:
        """Help > User guide: docs/GUI.md rendered in a dialog."""
        self.help_dialog = dialogs.user_guide_dialog(self)
        self.help_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.help_dialog.show()

    def show_shortcuts(self) -> None:
        """Help > Keyboard shortcuts: every menu shortcut and the views' mouse and keys."""
        self.help_dialog = dialogs.shortcuts_dialog(self.menus.shortcut_rows(), self)
        self.help_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.help_dialog.show()

    # ---- viewing
    def apply_preset(self, name: str) -> None:
        """Window/level preset by name (``presets_for`` the scan's modality: HU windows for CT, intensity
        percentiles otherwise); unknown names (e.g. "Custom") change nothing."""
        if self.data.image is None:
            return
        window = preset_window(name, self.data.image)
        if window is None:
            return
        self._preset = (name, *window)
        self.state.set_window(*window)
        self.tools.show_preset(name)

    def _check_custom_window(self) -> None:
        """The preset choice says "Custom" once the window differs from the preset applied last."""
        p = self._preset
        if p is not None and (abs(self.state.window - p[1]) > 1e-9 or abs(self.state.level - p[2]) > 1e-9):
            self._preset = None
        if self._preset is None and self.data.image is not None:
            self.tools.show_preset(CUSTOM_PRESET)

    def _on_channel_changed(self, index: int) -> None:
        if self._updating_widgets or self.session.volume is None or self.state.geometry is None or index < 0:
            return
        self.data.image = self.state.geometry.view(self.session.volume.array[index])
        self.state.set_channel(index)
        name = self._preset[0] if self._preset is not None else self.tools.preset_combo.itemText(0)
        self.apply_preset(name)

    def _on_state_changed(self, what: str) -> None:
        self.view_grid.update_views()
        if what in ("cursor", "geometry"):
            self._on_hover(None)
        elif what == "window":
            self._check_custom_window()

    def _on_hover(self, ijk) -> None:
        """Status bar read-out: slices (1-based, as the views), RAS mm, intensity and label under the mouse
        (or the crosshair); the source array indices are in its tooltip."""
        where = self.state.cursor if ijk is None else ijk
        self.status_position.setText(self.session.describe_voxel(where, self.state.channel))
        src = self.session.source_voxel(where)
        self.status_position.setToolTip("" if src is None else f"source array voxel (i, j, k) = {src} (0-based)")

    # ---- window state
    def _on_session_changed(self, what: str) -> None:
        if what == "dirty":
            QMainWindow.setWindowModified(self, self.session.dirty)
            self.setWindowTitle(self.session.title)
        elif what == "patient":
            self.show_patient()
        elif what == "names":  # an opened segmentation's label names (or undoing it): choices and colours
            self.update_label_choices()

    def setWindowModified(self, modified: bool) -> None:  # noqa: N802 - the unsaved flag lives in the session
        self.session.set_dirty(modified)

    def _set_dirty(self, dirty: bool) -> None:
        self.session.set_dirty(dirty)

    def refresh_actions(self) -> None:
        """Enable what can be done now (scan open, model loaded, mask present, segmentation running)."""
        s, m, t = self.session, self.menus, self.tools
        running, has_scan, has_labels = self.seg_job is not None, s.volume is not None, s.labels is not None
        can_segment = has_scan and s.checkpoint is not None and not running
        t.segment_button.setEnabled(can_segment)
        m.act_segment.setEnabled(can_segment)
        t.segment_button.setToolTip("Run the model on the open scan (Ctrl+R)" if s.checkpoint is not None else "No model loaded")
        t.cancel_button.setEnabled(running)
        t.device_combo.setEnabled(not running)
        t.tta_check.setEnabled(not running)
        m.act_save_mask.setEnabled(has_labels)
        m.act_save_seg.setEnabled(has_labels and has_scan and bool(s.volume.series_uid))
        m.act_save_meas.setEnabled(has_labels)
        m.act_save_shot.setEnabled(has_scan)
        m.act_open_seg.setEnabled(has_scan and not running)
        m.act_undo.setEnabled(s.editor is not None and s.editor.can_undo and not running)
        m.act_redo.setEnabled(s.editor is not None and s.editor.can_redo and not running)
        m.act_delete_lesion.setEnabled(has_labels and not running)
        t.undo_button.setEnabled(m.act_undo.isEnabled())
        t.redo_button.setEnabled(m.act_redo.isEnabled())

    def closeEvent(self, event) -> None:  # noqa: N802
        if not self.confirm_discard("Close"):
            event.ignore()
            return
        self.closing = True
        if self.jobs:
            self.statusBar().showMessage("Stopping background work...")
            self.cancel_all_jobs(wait=True)
        for box in list(self._message_boxes):
            box.close()
        event.accept()


#: ``window.<name>`` reads (and writes) ``window.<part>.<name>``: the surface scripts and tests use.
_FORWARDED = {
    "session": "volume labels probabilities agreement checkpoint editor lesions totals last_result",
    "job_control": "jobs load_job model_job seg_job measure_job open_path open_scan_dialog open_folder_dialog "
                   "recent_files load_model load_model_dialog start_segmentation cancel_segmentation "
                   "seg_open_job discover_job open_segmentation open_segmentation_dialog find_segmentations "
                   "request_measurements start_job cancel_all_jobs",
    "editing": "set_tool paint_stroke undo redo",
    "exporter": "save_job save_mask save_mask_dialog save_seg save_seg_dialog save_measurements "
                "save_measurements_dialog save_screenshot save_screenshot_dialog",
    "tools": "scan_info channel_combo model_info device_combo tta_check segment_button cancel_button progress "
             "progress_label preset_combo overlay_check outline_check heatmap_check opacity_slider tool_group "
             "tool_buttons label_combo radius_spin sphere_check undo_button redo_button disclaimer",
    "view_grid": "views sliders domain_banner seg_banner seg_banner_button views_widget toggle_maximise toggle_maximise_focused reset_views",
    "menus": "recent_menu act_open_seg found_seg_menu act_save_mask act_save_seg act_save_meas act_save_shot act_undo act_redo act_maximise act_segment "
             "act_anonymise act_delete_lesion tool_actions",
}


def _forward(part: str, name: str) -> property:
    return property(lambda self: getattr(getattr(self, part), name),
                    lambda self, value: setattr(getattr(self, part), name, value),
                    doc=f"``self.{part}.{name}``")


for _part, _names in _FORWARDED.items():
    for _name in _names.split():
        setattr(MainWindow, _name, _forward(_part, _name))

__all__ = ["MainWindow", "error_message"]
