"""Dialogs: error sentences, DICOM series picker, model card, About, user guide, keyboard shortcuts."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QSize, Qt, qVersion
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from seg_app import DISCLAIMER, __version__
from seg_app.core.errors import SegAppError
from seg_app.core.volume import SeriesInfo


def error_message(exc: BaseException) -> str:
    """One sentence for a dialog: the core's own message, or a generic one for unexpected errors."""
    if isinstance(exc, SegAppError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "Not enough memory for this operation; close other programs or use a smaller scan."
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"Unexpected error ({type(exc).__name__}{': ' + text if text else ''})."


def _gray_qimage(arr: np.ndarray) -> QImage:
    """A deep copy of a 2D uint8 array ``(rows, columns)`` as a QImage."""
    a = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = a.shape
    return QImage(a.data, w, h, w, QImage.Format.Format_Grayscale8).copy()


class SeriesPickerDialog(QDialog):
    """Choose one of several DICOM series found in a folder (double-click or OK)."""

    COLUMNS = ("#", "Description", "Modality", "Slices", "Size", "Spacing (mm)")

    def __init__(
        self,
        series: list[SeriesInfo],
        folder: str = "",
        parent: QWidget | None = None,
        thumbnails: dict[str, np.ndarray | None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose a series")
        self.series = list(series)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"{folder or 'This folder'} holds {len(series)} image series. Choose one to open:"))
        self.table = QTableWidget(len(series), len(self.COLUMNS), self)
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        for row, s in enumerate(series):
            values = (
                "-" if s.series_number is None else str(s.series_number),
                s.description or "(no description)",
                s.modality,
                str(s.n_slices),
                f"{s.columns} x {s.rows}",
                " x ".join(f"{v:.3g}" for v in (s.spacing[1], s.spacing[0], s.spacing[2])),  # as Size: columns x rows
            )
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setToolTip(s.summary())
                self.table.setItem(row, col, item)
            thumb = (thumbnails or {}).get(s.series_uid)
            if thumb is not None:  # middle-slice preview beside the description
                self.table.item(row, 1).setIcon(QIcon(QPixmap.fromImage(_gray_qimage(thumb))))
        if thumbnails:
            self.table.setIconSize(QSize(64, 64))
            self.table.verticalHeader().setDefaultSectionSize(68)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.resizeColumnsToContents()
        if series:
            # default: the series with the most slices (usually the diagnostic one)
            best = max(range(len(series)), key=lambda r: series[r].n_slices)
            self.table.selectRow(best)
        self.table.doubleClicked.connect(self.accept)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(720, 300)

    def selected_series(self) -> SeriesInfo | None:
        rows = self.table.selectionModel().selectedRows()
        return self.series[rows[0].row()] if rows else None


class TextDialog(QDialog):
    """A read-only, selectable text (model card, About)."""

    def __init__(self, title: str, header: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        layout = QVBoxLayout(self)
        label = QLabel(header)
        label.setWordWrap(True)
        label.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(label)
        self.text = QPlainTextEdit(text)
        self.text.setReadOnly(True)
        layout.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)
        self.resize(640, 420)


def model_card_dialog(card: str, parent: QWidget | None = None) -> TextDialog:
    return TextDialog("Model card", "<b>Model card</b> (from the checkpoint's own description)", card, parent)


def versions_text() -> str:
    lines = [
        f"seg-app {__version__}",
        f"Python {platform.python_version()} ({sys.platform})",
        f"PySide6 {pyside_version}, Qt {qVersion()}",
    ]
    for mod in ("numpy", "torch", "monai", "nibabel", "pydicom"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except ImportError:
                continue
        lines.append(f"{mod} {getattr(m, '__version__', '?')}")
    return "\n".join(lines)


def about_dialog(card: str | None, parent: QWidget | None = None) -> TextDialog:
    header = (
        f"<h3>seg-app {__version__}</h3>"
        f"<p><b>{DISCLAIMER}</b></p>"
        "<p>Tumour segmentation workstation: open a scan, segment it, check and correct the mask, "
        "export mask and measurements.</p>"
    )
    text = "Versions\n" + versions_text() + "\n\nModel\n" + (card or "No model loaded.")
    return TextDialog("About seg-app", header, text, parent)


#: Mouse and keys of the views (not menu actions), for the keyboard-shortcuts sheet.
VIEW_CONTROLS: tuple[tuple[str, str], ...] = (
    ("Move the crosshair (all views follow)", "Left click or drag"),
    ("Change slice", "Wheel, Up/Down or Right/Left arrow (1 slice), PageUp/PageDown (10), slider beside the view"),
    ("Zoom about the mouse", "Ctrl+wheel"),
    ("Pan", "Middle-drag"),
    ("Window / level", "Right-drag: horizontal = width, vertical = level"),
    ("Maximise one view / restore", "Double-click the view (or M)"),
    ("Move the crosshair while a brush is active", "Shift+left-drag"),
    ("Show / hide the mask", "S"),
    ("3D view: rotate / zoom / pan / reset", "Left-drag / wheel / middle-drag / double-click"),
    ("3D view: jump to a lesion", "Click the lesion (the crosshair moves there)"),
)


def user_guide_path() -> Path | None:
    """docs/GUI.md beside the package (source tree) or in a PyInstaller bundle; None when absent."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "docs" / "GUI.md"]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(Path(bundle) / "docs" / "GUI.md")
    return next((p for p in candidates if p.is_file()), None)


class HelpDialog(QDialog):
    """A read-only rich-text page (markdown or HTML) with a Close button."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        layout = QVBoxLayout(self)
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        layout.addWidget(self.browser)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(760, 620)


def user_guide_dialog(parent: QWidget | None = None) -> HelpDialog:
    """Help > User guide: docs/GUI.md rendered as markdown."""
    dlg = HelpDialog("seg-app user guide", parent)
    path = user_guide_path()
    if path is None:
        dlg.browser.setMarkdown("# User guide\n\nThe guide (docs/GUI.md) is not installed with this copy of seg-app.")
    else:
        dlg.browser.setSearchPaths([str(path.parent)])
        dlg.browser.setMarkdown(path.read_text(encoding="utf-8"))
    return dlg


def shortcuts_dialog(menu_rows: list[tuple[str, str, str]], parent: QWidget | None = None) -> HelpDialog:
    """Help > Keyboard shortcuts: the views' mouse and keys, then every menu action with a shortcut."""
    import html

    def table(rows, heads):
        head = "".join(f"<th align='left'>{h}</th>" for h in heads)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table cellspacing='0' cellpadding='4' border='1' style='border-collapse:collapse'><tr>{head}</tr>{body}</table>"

    dlg = HelpDialog("Keyboard shortcuts", parent)
    dlg.browser.setHtml(
        "<h3>Views</h3>" + table(VIEW_CONTROLS, ("action", "mouse / key"))
        + "<h3>Menus</h3>" + table([(a, k, m) for m, a, k in menu_rows], ("action", "key", "menu"))
    )
    return dlg
