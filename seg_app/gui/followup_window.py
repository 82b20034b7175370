"""*Tools > Follow-up...*: a baseline and a follow-up study of one patient side by side, with a change table.

The window collects the inputs (baseline: by default the scan and mask open in the app; follow-up: a scan
file or DICOM folder and its mask file, or the loaded model segments it; optional landmark pairs), runs
:func:`seg_app.gui.followup_study.run_followup` in one of the main window's jobs (progress, Cancel;
closing the app cancels and waits for it) and shows:

* a banner with the warnings, the patient-identifier ones first (different patient ID, not DICOM...);
* the registration and its quality numbers, for checking; when it is off, uncheck *Link views*, put
  both crosshairs on the same anatomical point, *Add landmark pair* (three or more) and *Assess* again;
* two linked slice views (:class:`~seg_app.gui.slice_view.SliceView`): the baseline, and the follow-up
  resampled onto the baseline grid through the registration, each with its mask overlay; one crosshair
  and slice for both (arrows, wheel, slider, click);
* the change table (per lesion track: status, volume, RECIST long axis, bidimensional product at both
  times and their % change; new lesions highlighted) and the RECIST 1.1 / RANO 2.0 categories, each
  labelled a computed suggestion, not a diagnosis;
* *Save report...*: the files of ``seg-app followup`` (JSON, CSV, PNG, follow-up map).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDialog, QFileDialog, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView,
    QLabel, QLineEdit, QMessageBox, QProgressBar, QPushButton, QSplitter, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from seg_app.core.followup import DISCLAIMER_SUGGESTION
from seg_app.gui.dialogs import error_message
from seg_app.gui.followup_study import FollowUpRequest, MaskSource, change_rows, percent_text, run_followup
from seg_app.gui.jobs import SCAN_FILTER, SEGMENTATION_FILTER, fmt_seconds
from seg_app.gui.plane_pane import PlanePane, label_luts_for
from seg_app.gui.slice_view import ViewData
from seg_app.gui.viewer_state import VIEW_NAMES, DisplayGeometry, ViewerState, presets_for, preset_window

if TYPE_CHECKING:
    from seg_app.gui.main_window import MainWindow

__all__ = ["CHANGE_COLUMNS", "FollowUpWindow", "add_tools_menu", "show_followup"]

#: Change-table headers and their tooltips (LD: the RECIST long axis; product: long x short axis, RANO).
CHANGE_COLUMNS = ("Track", "Status", "Target", "Base mL", "Follow mL", "Volume %", "Base LD mm", "Follow LD mm", "LD %",
                  "Base product mm²", "Follow product mm²", "Product %")
CHANGE_TIPS = ("Lesion track: a baseline lesion and what it became (or a new lesion)",
               "matched, split, merged, disappeared, new (equivocal: long axis under 5 mm)",
               "RECIST target lesion (long axis >= 10 mm, up to 5, largest first)",
               "Volume at baseline (mL)", "Volume at follow-up (mL)", "Volume change (n/a: nothing at baseline)",
               "RECIST long axis at baseline (mm; a split lesion's fragments added)", "RECIST long axis at follow-up (mm)",
               "Long-axis change", "Bidimensional product at baseline (long x perpendicular short axis, mm²)",
               "Bidimensional product at follow-up (mm²)", "Bidimensional product change")
NEW_LESION_BRUSH = QColor(255, 200, 200)
BANNER_STYLE = "background: #8b1a1a; color: white; padding: 4px; font-weight: bold;"


class FollowUpWindow(QDialog):
    """The follow-up window (non-modal; one per main window). See the module docstring."""

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.setWindowTitle("Follow-up: baseline vs follow-up")
        self.setWindowFlag(Qt.WindowType.Window, True)
        self.job = None
        self.save_job = None
        self.study = None
        self.error_box: QMessageBox | None = None
        self.landmark_pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (baseline RAS, follow-up RAS) mm
        self._linking = False
        self._started = 0.0
        self.segmenter_factory = None  # None: the model's Segmenter (FollowUpRequest.segmenter_factory)
        self.baseline_state, self.followup_state = ViewerState(), ViewerState()
        self.baseline_data, self.followup_data = ViewData(), ViewData()
        self.baseline_state.connect(lambda what: self._link("baseline", what))
        self.followup_state.connect(lambda what: self._link("followup", what))

        lay = QVBoxLayout(self)
        lay.addWidget(self._inputs_box())
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(BANNER_STYLE)
        self.banner.setVisible(False)
        lay.addWidget(self.banner)
        self.registration_label = QLabel("")
        self.registration_label.setWordWrap(True)
        self.registration_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.registration_label)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self._views_widget())
        split.addWidget(self._results_widget())
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        lay.addWidget(split, 1)
        self.resize(1200, 900)
        self.refresh_inputs()
        self._refresh()

    # ---- layout
    def _inputs_box(self) -> QGroupBox:
        box = QGroupBox("Studies")
        g = QGridLayout(box)
        self.baseline_scan_edit = QLineEdit()
        self.baseline_mask_edit = QLineEdit()
        self.baseline_segment_check = QCheckBox("Segment with the model")
        self.followup_scan_edit = QLineEdit()
        self.followup_scan_edit.setPlaceholderText("scan file or DICOM folder")
        self.followup_mask_edit = QLineEdit()
        self.followup_mask_edit.setPlaceholderText("NIfTI or DICOM SEG")
        self.followup_segment_check = QCheckBox("Segment with the model")
        rows = (("Baseline", self.baseline_scan_edit, self.baseline_mask_edit, self.baseline_segment_check),
                ("Follow-up", self.followup_scan_edit, self.followup_mask_edit, self.followup_segment_check))
        for r, (name, scan, mask, seg) in enumerate(rows):
            g.addWidget(QLabel(f"<b>{name}</b> scan:"), r, 0)
            g.addWidget(scan, r, 1)
            g.addWidget(self._button("File...", lambda e=scan: self._pick(e, "Choose a scan", SCAN_FILTER)), r, 2)
            g.addWidget(self._button("Folder...", lambda e=scan: self._pick(e, "Choose a DICOM folder", "", True)), r, 3)
            g.addWidget(QLabel("mask:"), r, 4)
            g.addWidget(mask, r, 5)
            g.addWidget(self._button("...", lambda e=mask: self._pick(e, "Choose a segmentation", SEGMENTATION_FILTER)), r, 6)
            g.addWidget(seg, r, 7)
            seg.toggled.connect(lambda on, m=mask: m.setEnabled(not on))
        self.followup_scan_edit.textChanged.connect(lambda _t: self.landmark_pairs and self.clear_landmark_pairs())
        g.setColumnStretch(1, 2)
        g.setColumnStretch(5, 2)
        self.landmarks_edit = QLineEdit()
        self.landmarks_edit.setPlaceholderText("optional: landmark CSV (baseline x,y,z, follow-up x,y,z in RAS mm)")
        g.addWidget(QLabel("Landmarks:"), 2, 0)
        g.addWidget(self.landmarks_edit, 2, 1, 1, 5)
        g.addWidget(self._button("...", lambda: self._pick(self.landmarks_edit, "Landmark pairs", "CSV (*.csv);;All files (*)")), 2, 6)
        row = QHBoxLayout()
        self.assess_button = self._button("Assess", self.start)
        self.assess_button.setDefault(True)
        self.cancel_button = self._button("Cancel", self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress_label = QLabel("")
        self.save_button = self._button("Save report...", self.save_report_dialog)
        for w in (self.assess_button, self.cancel_button):
            row.addWidget(w)
        row.addWidget(self.progress, 1)
        row.addWidget(self.progress_label, 1)
        row.addWidget(self.save_button)
        g.addLayout(row, 3, 0, 1, 8)
        return box

    def _views_widget(self) -> QWidget:
        w = QWidget()
        col = QVBoxLayout(w)
        col.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        self.plane_combo = QComboBox()
        for n in VIEW_NAMES:
            self.plane_combo.addItem(n.capitalize(), n)
        self.plane_combo.currentIndexChanged.connect(lambda _i: self.set_plane(self.plane_combo.currentData()))
        self.link_check = QCheckBox("Link views")
        self.link_check.setChecked(True)
        self.link_check.setToolTip("One crosshair for both time points; uncheck to place landmark pairs")
        self.link_check.toggled.connect(self._on_link_toggled)
        self.add_pair_button = self._button("Add landmark pair", self.add_landmark_pair)
        self.add_pair_button.setToolTip("The two crosshairs (views unlinked) mark the same anatomical point")
        self.clear_pairs_button = self._button("Clear pairs", self.clear_landmark_pairs)
        self.pairs_label = QLabel("")
        for x in (QLabel("Plane:"), self.plane_combo, self.link_check, self.add_pair_button, self.clear_pairs_button,
                  self.pairs_label):
            bar.addWidget(x)
        bar.addStretch(1)
        col.addLayout(bar)
        row = QHBoxLayout()
        note = "Choose the studies above and press Assess."
        self.baseline_pane = PlanePane("Baseline", self.baseline_state, self.baseline_data, placeholder=note)
        self.followup_pane = PlanePane("Follow-up (registered onto the baseline)", self.followup_state,
                                       self.followup_data, placeholder=note)
        row.addWidget(self.baseline_pane, 1)
        row.addWidget(self.followup_pane, 1)
        col.addLayout(row, 1)
        return w

    def _results_widget(self) -> QWidget:
        w = QWidget()
        col = QVBoxLayout(w)
        col.setContentsMargins(0, 0, 0, 0)
        self.recist_label = QLabel("")
        self.rano_label = QLabel("")
        for lab in (self.recist_label, self.rano_label):
            lab.setWordWrap(True)
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            col.addWidget(lab)
        self.change_table = QTableWidget(0, len(CHANGE_COLUMNS))
        self.change_table.setHorizontalHeaderLabels(list(CHANGE_COLUMNS))
        for c, tip in enumerate(CHANGE_TIPS):
            self.change_table.horizontalHeaderItem(c).setToolTip(tip)
        self.change_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.change_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.change_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.change_table.verticalHeader().setVisible(False)
        self.change_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.change_table.cellClicked.connect(lambda r, _c: self.go_to_track(r))
        col.addWidget(self.change_table, 1)
        note = QLabel(f"Response categories: {DISCLAIMER_SUGGESTION}. Research use only.")
        note.setStyleSheet("color: #a00;")
        col.addWidget(note)
        return w

    def _button(self, text: str, slot) -> QPushButton:
        b = QPushButton(text)
        b.setAutoDefault(False)
        b.clicked.connect(lambda _=False: slot())
        return b

    def _pick(self, edit: QLineEdit, title: str, file_filter: str, folder: bool = False) -> None:
        path = self.win.ask_open_path(title, file_filter, folder=folder)
        if path:
            edit.setText(path)

    # ---- state
    def refresh_inputs(self) -> None:
        """Defaults from the main window: its open scan and mask are the baseline; *Segment* needs a model."""
        s = self.win.session
        self.baseline_scan_edit.setPlaceholderText(f"the open scan ({s.scan_name})" if s.volume is not None
                                                   else "scan file or DICOM folder")
        self.baseline_mask_edit.setPlaceholderText("the open mask" if s.labels is not None else "NIfTI or DICOM SEG")
        for c in (self.baseline_segment_check, self.followup_segment_check):
            c.setEnabled(s.checkpoint is not None)
            c.setToolTip("" if s.checkpoint is not None else "No model loaded: Model > Load model...")
            if s.checkpoint is None:
                c.setChecked(False)

    def _refresh(self) -> None:
        running = self.job is not None
        self.assess_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.save_button.setEnabled(self.study is not None and not running and self.save_job is None)
        has = self.study is not None
        self.add_pair_button.setEnabled(has and not self.link_check.isChecked())
        self.clear_pairs_button.setEnabled(bool(self.landmark_pairs))
        self.pairs_label.setText(f"{len(self.landmark_pairs)} landmark pair(s)" if self.landmark_pairs else "")

    def show_error(self, message: str, title: str = "Follow-up") -> None:
        """A non-blocking warning box over this window (which stays usable)."""
        self.win.error_reported.emit(message)
        self.progress_label.setText(message)
        if not self.win.interactive:
            return
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _r: setattr(self, "error_box", None))
        self.error_box = box
        box.open()

    # ---- the request
    def build_request(self) -> FollowUpRequest:
        """The inputs as chosen (raises ValueError with a sentence for the user)."""
        s = self.win.session
        b_scan, b_mask = self.baseline_scan_edit.text().strip(), self.baseline_mask_edit.text().strip()
        if b_scan:
            baseline = MaskSource(scan_path=b_scan)
        elif s.volume is not None:
            baseline = MaskSource(scan=s.volume)
        else:
            raise ValueError("Choose a baseline scan, or open one in the main window first.")
        if self.baseline_segment_check.isChecked():
            baseline.segment = True
        elif b_mask:
            baseline.mask_path = b_mask
        elif baseline.scan is not None and s.labels is not None:
            baseline.labels = np.array(s.labels.array[0], copy=True)
            baseline.names = s.label_names()
            baseline.description = f"mask open in the app ({Path(s.opened_source).name or 'model or edited'})"
        else:
            raise ValueError("Choose a mask for the baseline, or let the model segment it.")
        f_scan, f_mask = self.followup_scan_edit.text().strip(), self.followup_mask_edit.text().strip()
        if not f_scan:
            raise ValueError("Choose the follow-up scan (a NIfTI file, a DICOM file or a DICOM folder).")
        followup = MaskSource(scan_path=f_scan, segment=self.followup_segment_check.isChecked(),
                              mask_path=None if self.followup_segment_check.isChecked() else (f_mask or None))
        if not followup.segment and not followup.mask_path:
            raise ValueError("Choose a mask for the follow-up scan, or let the model segment it.")
        landmarks = None
        if len(self.landmark_pairs) >= 3:
            landmarks = (np.array([p[0] for p in self.landmark_pairs]), np.array([p[1] for p in self.landmark_pairs]))
        return FollowUpRequest(baseline, followup, checkpoint=s.checkpoint,
                               model_path=str(getattr(s.checkpoint, "path", "") or ""),
                               device=self.win.tools.device_combo.currentData() or "auto", landmarks=landmarks,
                               landmarks_path=(self.landmarks_edit.text().strip() or None) if landmarks is None else None,
                               segmenter_factory=self.segmenter_factory)

    def start(self):
        """Assess in the background (one of the main window's jobs); returns the job or None."""
        if self.job is not None:
            return None
        try:
            request = self.build_request()
        except ValueError as exc:
            self.show_error(str(exc))
            return None

        def work(progress, cancel):
            return run_followup(request, progress=progress, cancel=cancel)

        job = self.win.start_job(work, "follow-up")
        self.job = job
        job.progressed.connect(self._on_progress)
        job.succeeded.connect(self._on_done)
        job.failed.connect(lambda exc: self.show_error(error_message(exc)))
        job.cancelled.connect(lambda: self.progress_label.setText("Cancelled."))
        job.finished.connect(self._on_finished)
        self.progress.setRange(0, 0)
        what = "segmenting, " if request.baseline.segment or request.followup.segment else ""
        self.progress_label.setText(f"Loading, {what}registering and measuring...")
        self._started = time.perf_counter()
        job.start()
        self._refresh()
        return job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.progress_label.setText("Cancelling...")
            self.cancel_button.setEnabled(False)

    def _on_progress(self, done: int, total: int) -> None:
        if self.job is None or self.job.cancel_event.is_set():
            return
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, total))
        self.progress_label.setText(f"Segmenting: window {done} of {total}")

    def _on_finished(self) -> None:
        self.job = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._refresh()

    # ---- showing the result
    def _on_done(self, study) -> None:
        self.study = study  # landmark pairs stay (physical points) until Clear pairs or another follow-up scan
        res = study.result
        ident = study.identifier_warnings
        shown = ident + [w for w in study.warnings if w not in ident]
        self.banner.setText("\n".join(f"\u26a0 {w}" for w in shown))
        self.banner.setVisible(bool(shown))
        reg = res.registration
        corr = ("" if reg.correlation_after is None
                else f"; image correlation {reg.correlation_before or 0:.3f} -> {reg.correlation_after:.3f}")
        extra = f"; landmark residual {reg.landmark_rms_mm:.2f} mm" if reg.landmark_rms_mm is not None else ""
        self.registration_label.setText(
            f"<b>Registration</b> ({reg.method}): rotation {reg.rotation_deg:.2f}°, shift {reg.translation_mm:.2f} mm, "
            f"mean displacement {reg.mean_displacement_mm:.2f} mm{corr}{extra}. Check the linked views; if it is off, "
            "uncheck <i>Link views</i>, mark the same point in both, <i>Add landmark pair</i> (3 or more), <i>Assess</i>.")
        for lab, r in ((self.recist_label, res.recist), (self.rano_label, res.rano)):
            lab.setText(f"<b>{r.criteria}: {r.category}</b> ({r.name}) <i>[{DISCLAIMER_SUGGESTION}]</i>: "
                        + "; ".join(r.reasons))
        self._fill_table(res)
        self._show_images(study)
        self.progress_label.setText(f"Assessed in {fmt_seconds(time.perf_counter() - self._started)}: "
                                    f"{len(res.tracks)} lesion track(s).")

    def _fill_table(self, result: Any) -> None:
        rows = change_rows(result)
        t = self.change_table
        t.setRowCount(len(rows))
        for r, row in enumerate(rows):
            cells = (row.track, row.status, "yes" if row.target else "", f"{row.baseline_ml:.2f}", f"{row.followup_ml:.2f}",
                     percent_text(row.volume_change_percent), f"{row.baseline_long_mm:.1f}", f"{row.followup_long_mm:.1f}",
                     percent_text(row.long_change_percent), f"{row.baseline_product_mm2:.0f}",
                     f"{row.followup_product_mm2:.0f}", percent_text(row.product_change_percent))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c >= 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if row.status.startswith("new"):
                    item.setBackground(QBrush(NEW_LESION_BRUSH))
                if row.track_id is None:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                t.setItem(r, c, item)

    def _show_images(self, study) -> None:
        base = study.baseline
        g = DisplayGeometry.from_affine(base.affine, base.shape)
        b_names = {int(k): v for k, v in study.baseline_info["names"].items()}
        f_names = {int(k): v for k, v in study.followup_info["names"].items()}
        for data, image, labels, names in (
                (self.baseline_data, np.asarray(base.array[0]), np.asarray(study.baseline_info["labels"]), b_names),
                (self.followup_data, study.followup_image_on_baseline, study.followup_labels_on_baseline, f_names)):
            data.image = g.view(image)
            data.labels = g.view(np.clip(labels, 0, 255).astype(np.uint8))
            data.lut_rgb, data.lut_visible = label_luts_for(names)
            data.labels_version += 1
        for state, data in ((self.baseline_state, self.baseline_data), (self.followup_state, self.followup_data)):
            state.set_geometry(g)
            window = preset_window(presets_for(base.modality, data.image)[0], data.image)
            if window is not None:
                state.set_window(*window)
        for pane in (self.baseline_pane, self.followup_pane):
            for v in pane.views.values():
                v.reset_view()
            pane.sync()
        self._refresh()

    def set_plane(self, plane: str) -> None:
        for pane in (self.baseline_pane, self.followup_pane):
            pane.set_plane(plane)

    def _on_link_toggled(self, on: bool) -> None:
        if on:  # the follow-up view goes back to the baseline's crosshair
            self._link("baseline", "cursor")
        self._refresh()

    def _link(self, source: str, what: str) -> None:
        """Linked views: the crosshair (and so the slice) of one time point moves the other's."""
        if what != "cursor" or self._linking or not self.link_check.isChecked():
            return
        src, dst = ((self.baseline_state, self.followup_state) if source == "baseline"
                    else (self.followup_state, self.baseline_state))
        if dst.geometry is None or src.cursor == dst.cursor:
            return
        self._linking = True
        try:
            dst.set_cursor(src.cursor)
        finally:
            self._linking = False

    def go_to_track(self, row: int) -> None:
        """Crosshair on a track's lesion (its baseline lesion, else the follow-up one mapped onto the baseline)."""
        study = self.study
        if study is None or self.baseline_state.geometry is None:
            return
        rows = change_rows(study.result)
        if not 0 <= row < len(rows) or rows[row].track_id is None:
            return
        track = next(t for t in study.result.tracks if t.track_id == rows[row].track_id)
        if track.baseline_ids:
            les = next(x for x in study.result.baseline.lesions if x.lesion_id == track.baseline_ids[0])
            ras = np.asarray(les.centroid_ras_mm, float)
        else:
            les = next(x for x in study.result.followup.lesions if x.lesion_id == track.followup_ids[0])
            ras = (study.result.registration.inverse @ np.append(np.asarray(les.centroid_ras_mm, float), 1.0))[:3]
        self.baseline_state.set_cursor(self.baseline_state.geometry.world_to_display(ras))
        if not self.link_check.isChecked():
            self.followup_state.set_cursor(self.baseline_state.cursor)

    # ---- landmarks
    def add_landmark_pair(self) -> None:
        """The two crosshairs (views unlinked) mark one anatomical point: baseline RAS and follow-up RAS."""
        study, g = self.study, self.baseline_state.geometry
        if study is None or g is None:
            return
        p_base = g.display_to_world(self.baseline_state.cursor)
        # the follow-up view shows the follow-up on the baseline grid: its scanner position is matrix @ p
        p_follow = (study.result.registration.matrix @ np.append(g.display_to_world(self.followup_state.cursor), 1.0))[:3]
        self.landmark_pairs.append((np.asarray(p_base, float), np.asarray(p_follow, float)))
        n = len(self.landmark_pairs)
        self.progress_label.setText(f"Landmark pair {n} added" + ("; Assess uses the pairs." if n >= 3 else
                                                                  f"; {3 - n} more needed."))
        self._refresh()

    def clear_landmark_pairs(self) -> None:
        self.landmark_pairs = []
        self._refresh()

    # ---- report
    def ask_save_dir(self) -> str:
        """Folder for the report (tests monkeypatch this)."""
        start = self.win.settings.value("export_dir", "", type=str) or str(Path.home())
        return QFileDialog.getExistingDirectory(self, "Save follow-up report into folder", start)

    def save_report_dialog(self):
        folder = self.ask_save_dir()
        return self.save_report(folder) if folder else None

    def save_report(self, folder: str):
        """Write the report files of ``seg-app followup`` into ``folder`` in the background."""
        if self.study is None or self.save_job is not None:
            return None
        from seg_app.gui.followup_study import write_followup_report

        study, anonymise = self.study, self.win.session.anonymise
        job = self.win.start_job(lambda progress, cancel: write_followup_report(study, folder, anonymise),
                                 "follow-up report")
        self.save_job = job
        self.win.settings.setValue("export_dir", str(folder))
        job.succeeded.connect(lambda names: self.progress_label.setText(f"Saved {', '.join(names)} to {folder}."))
        job.failed.connect(lambda exc: self.show_error(error_message(exc), "Save report"))
        job.finished.connect(lambda: (setattr(self, "save_job", None), self._refresh()))
        job.start()
        self._refresh()
        return job

    def closeEvent(self, event) -> None:  # noqa: N802
        for job in (self.job, self.save_job):
            if job is not None:
                job.cancel()
        super().closeEvent(event)


def show_followup(win: MainWindow) -> FollowUpWindow:
    """Tools > Follow-up...: the window (one per main window, raised when already open)."""
    dlg = getattr(win, "followup_window", None)
    if dlg is None:
        dlg = FollowUpWindow(win)
        win.followup_window = dlg
    dlg.refresh_inputs()
    dlg.show()
    dlg.raise_()
    return dlg


def add_tools_menu(win: MainWindow) -> None:
    """The *Tools* menu (before *Help*): *Follow-up...* and *Compare with mask...*."""
    from seg_app.gui.compare_window import show_compare

    menu = win.menuBar().addMenu("T&ools")
    win.menuBar().insertMenu(win.menus.help_menu.menuAction(), menu)
    win.menus.tools_menu = menu
    act = QAction("&Follow-up...", win)
    act.setStatusTip("Compare a baseline and a follow-up study of one patient: registration, lesion changes, RECIST/RANO")
    act.triggered.connect(lambda: show_followup(win))
    menu.addAction(act)
    win.menus.act_followup = act
    act = QAction("&Compare with mask...", win)
    act.setStatusTip("Compare the open mask with another segmentation of this scan: Dice, HD95, agreement overlay")
    act.triggered.connect(lambda: show_compare(win))
    menu.addAction(act)
    win.menus.act_compare = act
