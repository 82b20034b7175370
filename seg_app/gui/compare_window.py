"""*Tools > Compare with mask...*: the open mask (A) against another segmentation of the open scan (B).

The second mask (NIfTI label map or DICOM SEG, any producer) is placed on the open scan and compared in
one of the main window's jobs (:func:`seg_app.gui.followup_study.compare_masks`, i.e.
:mod:`seg_app.core.compare`, the same numbers as ``seg-app compare``). The window shows the metrics table
(per label and BraTS region: Dice, HD95, volumes of A and B), the lesion pairs, and a slice view of the
scan with the agreement overlay: both green, only A magenta, only B cyan (*Agreement overlay* toggles it).
Its view shares the main window's crosshair, so it follows the main views and moves them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox,
    QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from seg_app.gui import render
from seg_app.gui.dialogs import error_message
from seg_app.gui.followup_study import AGREEMENT_COLORS, compare_masks
from seg_app.gui.plane_pane import PlanePane
from seg_app.gui.jobs import SEGMENTATION_FILTER
from seg_app.gui.slice_view import ViewData
from seg_app.gui.viewer_state import VIEW_NAMES

if TYPE_CHECKING:
    from seg_app.gui.main_window import MainWindow

__all__ = ["CompareWindow", "LABEL_COLUMNS", "LESION_COLUMNS", "agreement_luts", "show_compare"]

LABEL_COLUMNS = ("Label / region", "Dice", "HD95 max (mm)", "HD95 pooled (mm)", "A (mL)", "B (mL)", "B - A (mL)",
                 "Lesions A", "Lesions B")
LESION_COLUMNS = ("Status", "A lesion", "B lesion", "A (mL)", "B (mL)", "B - A (mL)", "Dice")


def agreement_luts() -> tuple[np.ndarray, np.ndarray]:
    """Overlay tables for the agreement map: 1 both, 2 only A, 3 only B (``AGREEMENT_COLORS``)."""
    return render.label_luts(AGREEMENT_COLORS.items())


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


class CompareWindow(QDialog):
    """The compare window (non-modal; one per main window). See the module docstring."""

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.setWindowTitle("Compare with mask")
        self.setWindowFlag(Qt.WindowType.Window, True)
        self.job = None
        self.outcome = None
        self._agreement_display: np.ndarray | None = None  # the outcome's agreement map, display axes
        self._labels_a: np.ndarray | None = None  # mask A as compared
        self.error_box: QMessageBox | None = None
        self.data = ViewData()
        self.data.lut_rgb, self.data.lut_visible = agreement_luts()
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("<b>A</b>: the open mask.  <b>B</b>:"))
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("NIfTI label map or DICOM SEG of this scan")
        row.addWidget(self.path_edit, 1)
        self.browse_button = QPushButton("...")
        self.browse_button.clicked.connect(self._browse)
        self.compare_button = QPushButton("Compare")
        self.compare_button.clicked.connect(lambda: self.start())
        row.addWidget(self.browse_button)
        row.addWidget(self.compare_button)
        lay.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        col = QVBoxLayout(left)
        col.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        self.overlay_check = QCheckBox("Agreement overlay")
        self.overlay_check.setChecked(True)
        self.overlay_check.toggled.connect(lambda _on: self._show_overlay())
        self.plane_combo = QComboBox()
        for n in VIEW_NAMES:
            self.plane_combo.addItem(n.capitalize(), n)
        self.plane_combo.currentIndexChanged.connect(lambda _i: self.pane.set_plane(self.plane_combo.currentData()))
        bar.addWidget(self.overlay_check)
        legend = " ".join(f"<span style='background: rgb{AGREEMENT_COLORS[v]};'>&nbsp;&nbsp;&nbsp;</span> {name}"
                          for v, name in ((1, "both"), (2, "only A"), (3, "only B")))
        self.legend = QLabel(legend)
        bar.addWidget(self.legend)
        bar.addStretch(1)
        bar.addWidget(self.plane_combo)
        col.addLayout(bar)
        self.pane = PlanePane("Scan with the agreement of A and B (crosshair shared with the main window)",
                              win.state, self.data, placeholder="Open a scan in the main window.")
        col.addWidget(self.pane, 1)
        split.addWidget(left)
        right = QWidget()
        col = QVBoxLayout(right)
        col.setContentsMargins(0, 0, 0, 0)
        self.label_table = self._table(LABEL_COLUMNS)
        self.lesion_table = self._table(LESION_COLUMNS)
        col.addWidget(QLabel("Per label and region"))
        col.addWidget(self.label_table, 1)
        col.addWidget(QLabel("Lesions (A the reference)"))
        col.addWidget(self.lesion_table, 1)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([560, 640])
        lay.addWidget(split, 1)
        self.win.state.connect(self._main_state_changed)
        self.win.measurements_updated.connect(self._check_stale)
        self.resize(1200, 650)

    def _table(self, columns) -> QTableWidget:
        t = QTableWidget(0, len(columns))
        t.setHorizontalHeaderLabels(list(columns))
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.verticalHeader().setVisible(False)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        return t

    def _browse(self) -> None:
        path = self.win.ask_open_path("Segmentation B", SEGMENTATION_FILTER)
        if path:
            self.path_edit.setText(path)

    def show_error(self, message: str) -> None:
        self.win.error_reported.emit(message)
        self.status.setText(message)
        if not self.win.interactive:
            return
        box = QMessageBox(QMessageBox.Icon.Warning, "Compare", message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _r: setattr(self, "error_box", None))
        self.error_box = box
        box.open()

    def start(self, path: str | None = None):
        """Load mask B and compare it with the open mask in the background; returns the job or None."""
        s = self.win.session
        path = str(path or self.path_edit.text().strip())
        if path:
            self.path_edit.setText(path)
        if self.job is not None:
            return None
        if s.volume is None or s.labels is None:
            self.show_error("Open a scan with a mask first (segment it or open a segmentation): it is mask A.")
            return None
        if not path:
            self.show_error("Choose segmentation B (a NIfTI label map or a DICOM SEG of this scan).")
            return None
        scan, labels, names = s.volume, np.array(s.labels.array[0], copy=True), s.label_names()
        job = self.win.start_job(lambda progress, cancel: compare_masks(scan, labels, names, path), "comparison")
        self.job = job
        job.succeeded.connect(lambda outcome: self._on_done(outcome, scan, labels))
        job.failed.connect(lambda exc: self.show_error(error_message(exc)))
        job.finished.connect(self._on_finished)
        self.compare_button.setEnabled(False)
        self.status.setText(f"Comparing with {Path(path).name}...")
        job.start()
        return job

    def _on_finished(self) -> None:
        self.job = None
        self.compare_button.setEnabled(True)

    def _on_done(self, outcome, scan, labels_a: np.ndarray) -> None:
        s = self.win.session
        if s.volume is not scan or s.geometry is None:  # another scan was opened meanwhile
            return
        self.outcome = outcome
        self._labels_a = labels_a
        self.data.image = self.win.data.image
        self._agreement_display = s.geometry.view(outcome.agreement)
        self._show_overlay()
        doc = outcome.comparison.as_dict()
        t = self.label_table
        t.setRowCount(len(doc["labels"]))
        for r, row in enumerate(doc["labels"]):
            cells = (row["name"], _fmt(row["dice"]), _fmt(row["hd95_directed_max_mm"], 1), _fmt(row["hd95_pooled_mm"], 1),
                     _fmt(row["a_ml"], 2), _fmt(row["b_ml"], 2), _fmt(row["difference_ml"], 2), _fmt(row["lesions_a"]),
                     _fmt(row["lesions_b"]))
            for c, text in enumerate(cells):
                t.setItem(r, c, QTableWidgetItem(text))
        t = self.lesion_table
        t.setRowCount(len(doc["lesions"]))
        colors = {"paired": None, "only A": QColor(*AGREEMENT_COLORS[2]).lighter(170),
                  "only B": QColor(*AGREEMENT_COLORS[3]).lighter(170)}
        for r, row in enumerate(doc["lesions"]):
            cells = (row["status"], _fmt(row["lesion_a"]), _fmt(row["lesion_b"]), _fmt(row["a_ml"], 2), _fmt(row["b_ml"], 2),
                     _fmt(row["difference_ml"], 2), _fmt(row["dice"]))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if colors[row["status"]] is not None:
                    item.setBackground(colors[row["status"]])
                t.setItem(r, c, item)
        counts = {k: sum(1 for x in doc["lesions"] if x["status"] == k) for k in ("paired", "only A", "only B")}
        self.status.setText(f"A: the open mask; B: {Path(outcome.source).name}. Lesions: {counts['paired']} paired, "
                            f"{counts['only A']} only in A, {counts['only B']} only in B."
                            + "".join(f" \u26a0 {w}" for w in outcome.warnings))

    def _check_stale(self, _lesions=None) -> None:
        """After an edit of the open mask: say that the comparison describes the mask as it was."""
        s = self.win.session
        if self.outcome is not None and s.labels is not None and not np.array_equal(s.labels.array[0], self._labels_a):
            self.status.setText("The open mask changed since this comparison: press Compare again.")

    def _show_overlay(self) -> None:
        on = self.outcome is not None and self.overlay_check.isChecked()
        self.data.labels = self._agreement_display if on else None
        self.data.labels_version += 1
        self.pane.sync()

    def _main_state_changed(self, what: str) -> None:
        if what == "geometry":  # another scan: the comparison described the previous one
            self.outcome = None
            self.data.image, self.data.labels = self.win.data.image, None
            self.label_table.setRowCount(0)
            self.lesion_table.setRowCount(0)
            self.status.setText("Another scan was opened: compare again.")
        elif what == "channel":
            self.data.image = self.win.data.image

    def closeEvent(self, event) -> None:  # noqa: N802
        self.detach()
        super().closeEvent(event)

    def detach(self) -> None:
        """Stop listening to the main window's view state (this window goes away)."""
        self.pane.detach()
        try:
            self.win.measurements_updated.disconnect(self._check_stale)
        except (RuntimeError, TypeError):  # already disconnected
            pass
        self.win.state.disconnect(self._main_state_changed)


def show_compare(win: MainWindow) -> CompareWindow:
    """Tools > Compare with mask...: the window (one per main window, raised when already open)."""
    dlg = getattr(win, "compare_window", None)
    if dlg is None or not dlg.isVisible():
        if dlg is not None:
            dlg.detach()
            dlg.deleteLater()
        dlg = CompareWindow(win)
        win.compare_window = dlg
    dlg.data.image = win.data.image
    dlg.show()
    dlg.raise_()
    if win.session.labels is None:
        dlg.status.setText("Open a scan with a mask first: it is mask A.")
    return dlg
