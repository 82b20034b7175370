"""File > Open from PACS...: search a configured PACS node, pick a study or series, retrieve it.

Searches and the retrieve run as :class:`~seg_app.gui.workers.Job` s (progress bar, Cancel); the GUI
thread only touches widgets. When a retrieve succeeds the dialog emits ``retrieved(path, series_uid)``
(the cached series folder, or the study folder and ``""`` for a whole study) and closes; the main
window opens that path like any DICOM folder. All PACS logic is in :mod:`seg_app.core.pacs`.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from seg_app.core import pacs
from seg_app.gui.workers import Job

__all__ = ["PacsDialog", "STUDY_COLUMNS", "SERIES_COLUMNS", "add_pacs_menu", "open_pacs_dialog"]

STUDY_COLUMNS = ("Patient name", "Patient ID", "Birth date", "Study date", "Accession", "Modality", "Description", "Series")
SERIES_COLUMNS = ("#", "Modality", "Series description", "Images")


def _date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def _item(text: Any, data: Any = None) -> QTableWidgetItem:
    it = QTableWidgetItem("" if text is None else str(text))
    it.setFlags(it.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if data is not None:
        it.setData(Qt.ItemDataRole.UserRole, data)
    return it


class PacsDialog(QDialog):
    """Search form, study table, series table, Retrieve with progress and Cancel.

    Args:
        settings: PACS settings (default: :func:`seg_app.core.pacs.load_settings`; an error is shown in
            the dialog when there are none).
    """

    retrieved = Signal(str, str)  # folder to open, SeriesInstanceUID ("" for a whole study)

    def __init__(self, parent: QWidget | None = None, settings: pacs.PacsSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open from PACS")
        self.resize(980, 620)
        self.settings = settings
        self.studies: list[pacs.StudyResult] = []
        self.series: list[pacs.SeriesResult] = []
        self.job: Job | None = None
        self.retrieve_fn = pacs.retrieve  # replaceable in tests
        self._series_for = ""

        self.node_box = QComboBox()
        self.protocol_box = QComboBox()
        self.protocol_box.addItems(["node default", "dicomweb", "dimse"])
        self.patient_id = QLineEdit()
        self.patient_name = QLineEdit()
        self.patient_name.setPlaceholderText("e.g. DOE*")
        self.date = QLineEdit()
        self.date.setPlaceholderText("YYYYMMDD or YYYYMMDD-YYYYMMDD")
        self.modality = QLineEdit()
        self.modality.setPlaceholderText("e.g. MR")
        self.accession = QLineEdit()
        self.search_button = QPushButton("&Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        for edit in (self.patient_id, self.patient_name, self.date, self.modality, self.accession):
            edit.returnPressed.connect(self.search)

        form = QFormLayout()
        top = QHBoxLayout()
        top.addWidget(self.node_box, 1)
        top.addWidget(QLabel("Protocol:"))
        top.addWidget(self.protocol_box)
        form.addRow("PACS node:", top)
        form.addRow("Patient ID:", self.patient_id)
        form.addRow("Patient name:", self.patient_name)
        form.addRow("Study date:", self.date)
        row = QHBoxLayout()
        row.addWidget(self.modality)
        row.addWidget(QLabel("Accession:"))
        row.addWidget(self.accession)
        row.addWidget(self.search_button)
        form.addRow("Modality:", row)

        self.study_table = self._table(STUDY_COLUMNS)
        self.study_table.itemSelectionChanged.connect(self._study_selected)
        self.series_table = self._table(SERIES_COLUMNS)
        self.series_table.itemSelectionChanged.connect(self._update_buttons)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.study_table)
        split.addWidget(self.series_table)
        split.setSizes([360, 200])

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.retrieve_button = QPushButton("&Retrieve and open")
        self.retrieve_button.setToolTip("Download the selected series (or every image series of the study) and open it")
        self.retrieve_button.clicked.connect(self.retrieve)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.retrieve_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(split, 1)
        lay.addWidget(self.status)
        lay.addLayout(buttons)
        self._load_settings()
        self._update_buttons()

    # ---- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _table(columns) -> QTableWidget:
        t = QTableWidget(0, len(columns))
        t.setHorizontalHeaderLabels(list(columns))
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.verticalHeader().setVisible(False)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        t.horizontalHeader().setStretchLastSection(True)
        return t

    def _load_settings(self) -> None:
        if self.settings is None:
            try:
                self.settings = pacs.load_settings()
            except pacs.PacsError as exc:
                self._say(str(exc), error=True)
                return
        self.node_box.addItems(sorted(self.settings.nodes))

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #c0392b;" if error else "")

    def _node(self) -> pacs.PacsNode | None:
        if self.settings is None or not self.node_box.currentText():
            return None
        return self.settings.node(self.node_box.currentText())

    def _protocol(self) -> str | None:
        text = self.protocol_box.currentText()
        return None if text == "node default" else text

    def _busy(self) -> bool:
        return self.job is not None

    def _update_buttons(self) -> None:
        busy = self._busy()
        self.search_button.setEnabled(not busy and self._node() is not None)
        self.retrieve_button.setEnabled(not busy and self.selected_study() is not None)
        self.cancel_button.setEnabled(busy)

    def selected_study(self) -> pacs.StudyResult | None:
        rows = self.study_table.selectionModel().selectedRows()
        return self.studies[rows[0].row()] if rows and rows[0].row() < len(self.studies) else None

    def selected_series(self) -> pacs.SeriesResult | None:
        rows = self.series_table.selectionModel().selectedRows()
        return self.series[rows[0].row()] if rows and rows[0].row() < len(self.series) else None

    def _run(self, fn, name: str, on_done, progress: bool = False) -> Job:
        job = Job(fn, name, self)
        self.job = job
        job.succeeded.connect(on_done)
        job.failed.connect(lambda exc: self._say(" ".join(str(exc).split()) or type(exc).__name__, error=True))
        job.cancelled.connect(lambda: self._say(f"{name.capitalize()} cancelled; nothing was kept."))
        if progress:
            job.progressed.connect(self._on_progress)
        job.finished.connect(self._job_finished)
        self.progress.setVisible(progress)
        self.progress.setRange(0, 0)
        self._update_buttons()
        job.start()
        return job

    def _job_finished(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            job.deleteLater()
        self.progress.setVisible(False)
        self._update_buttons()
        study = self.selected_study()
        if study is not None and study.study_uid != self._series_for and self.result() != QDialog.DialogCode.Accepted:
            self._study_selected()  # a study picked while another job ran: list its series now

    def _on_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self._say(f"Retrieving: {done} of {total} images")

    # ---- actions -------------------------------------------------------------------------------
    def query(self) -> pacs.StudyQuery:
        return pacs.StudyQuery(patient_id=self.patient_id.text().strip(), patient_name=self.patient_name.text().strip(),
                               date=self.date.text().strip(), modality=self.modality.text().strip(),
                               accession=self.accession.text().strip())

    def search(self) -> Job | None:
        node = self._node()
        if node is None or self._busy():
            return None
        try:
            query = self.query()
        except pacs.PacsError as exc:
            self._say(str(exc), error=True)
            return None
        settings, protocol = self.settings, self._protocol()
        self._say(f"Searching {node.name}...")

        def find(progress, cancel):
            return pacs.find_studies(node, query, protocol, settings.local_ae_title, cancel)

        return self._run(find, "search", self._show_studies)

    def _show_studies(self, studies: list) -> None:
        self.studies = list(studies)
        self.series = []
        self.series_table.setRowCount(0)
        t = self.study_table
        t.clearSelection()
        self._series_for = ""
        t.setRowCount(len(self.studies))
        for r, s in enumerate(self.studies):
            values = (s.patient_name.replace("^", " ").strip(), s.patient_id, _date(s.birth_date), _date(s.study_date),
                      s.accession, s.modalities, s.description, "" if s.n_series is None else s.n_series)
            for c, v in enumerate(values):
                t.setItem(r, c, _item(v, s.study_uid if c == 0 else None))
        self._say(f"{len(self.studies)} stud{'y' if len(self.studies) == 1 else 'ies'} found."
                  + (" Select one to list its series." if self.studies else ""))
        self._update_buttons()

    def _study_selected(self) -> None:
        study, node = self.selected_study(), self._node()
        self.series = []
        self.series_table.setRowCount(0)
        self._update_buttons()
        if study is None or node is None or self._busy():
            return
        settings, protocol = self.settings, self._protocol()
        self._series_for = study.study_uid

        def find(progress, cancel):
            return study.study_uid, pacs.find_series(node, study.study_uid, protocol, settings.local_ae_title, cancel)

        self._run(find, "series search", self._show_series)

    def _show_series(self, result) -> None:
        study_uid, series = result
        current = self.selected_study()
        if current is None or current.study_uid != study_uid:
            return
        self.series = list(series)
        t = self.series_table
        t.setRowCount(len(self.series))
        for r, s in enumerate(self.series):
            values = ("" if s.number is None else s.number, s.modality, s.description, "" if s.n_instances is None else s.n_instances)
            for c, v in enumerate(values):
                t.setItem(r, c, _item(v, s.series_uid if c == 0 else None))
        self._say(f"{len(self.series)} series. Select one, or retrieve the whole study.")
        self._update_buttons()

    def retrieve(self) -> Job | None:
        study, node = self.selected_study(), self._node()
        if study is None or node is None or self._busy():
            return None
        series = self.selected_series()
        settings, protocol, fn = self.settings, self._protocol(), self.retrieve_fn
        series_uid = series.series_uid if series is not None else None
        self._say(f"Retrieving {'series ' + (series.description or series.series_uid) if series else 'the study'}...")

        def get(progress, cancel):
            folders = fn(settings, node, study.study_uid, series_uid, protocol=protocol, progress=progress, cancel=cancel)
            if series_uid is not None:
                return str(folders[0]), series_uid
            return str(pacs.study_folder(settings, node, study.study_uid)), ""

        return self._run(get, "retrieve", self._retrieved, progress=True)

    def _retrieved(self, result) -> None:
        path, series_uid = result
        self._say(f"Retrieved into {path}")
        self.retrieved.emit(path, series_uid)
        self.accept()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self._say("Cancelling...")

    def reject(self) -> None:  # closing the dialog cancels a running job and waits for it
        if self.job is not None:
            self.job.cancel()
            self.job.wait(30000)
        super().reject()


def open_pacs_dialog(win) -> PacsDialog:
    """Show the dialog (non-modal); a retrieved series or study opens through ``win.open_path``."""
    dlg = PacsDialog(win)
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dlg.retrieved.connect(lambda path, series_uid: win.open_path(path, series_uid or None))
    win.pacs_dialog = dlg
    dlg.open()
    return dlg


def add_pacs_menu(win) -> QAction:
    """Insert File > Open from PACS... after the other open actions of ``win.menus.file_menu``."""
    act = QAction("Open from &PACS...", win)
    act.setStatusTip("Search a PACS node (see docs/PACS.md) and open a study or series from it")
    act.triggered.connect(lambda: open_pacs_dialog(win))
    win.menus.file_menu.insertAction(win.menus.recent_menu.menuAction(), act)
    win.menus.act_open_pacs = act
    return act
