"""File > Send results to PACS...: store the mask (DICOM SEG) and its measurements (DICOM SR) on a PACS node.

The SEG and the TID 1500 SR of the current lesions are written (atomically, by the core exporters) into a
temporary folder in a background job; a confirmation dialog then names the patient, the study and the
node (defaulting to the node the scan was retrieved from), and Send stores both files in another job
(progress, Cancel). Success is reported in the status bar, a failure as one line in an error box; the
window stays usable throughout. Only DICOM scans with a mask can be sent. All PACS logic is in
:mod:`seg_app.core.pacs`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from seg_app.core import pacs
from seg_app.gui.workers import Job

__all__ = ["NO_DICOM", "NO_MASK", "SendResultsDialog", "add_send_menu", "send_refusal", "send_results", "source_node"]

NO_MASK = "There are no results to send: segment the scan or paint a mask first."
NO_DICOM = ("Sending results to a PACS needs a DICOM scan: this scan was opened from NIfTI, so there is no "
            "study to store them in. Save the mask as NIfTI instead.")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def send_refusal(win) -> str | None:
    """Why the results of ``win`` cannot be sent (one sentence), or None when they can."""
    s = win.session
    if s.volume is None or s.labels is None:
        return NO_MASK
    if not s.volume.series_uid or not s.volume.source_paths:
        return NO_DICOM
    return None


def source_node(settings: pacs.PacsSettings, volume) -> str | None:
    """The configured node whose cache folder holds the scan's files (it was retrieved from it), else None."""
    paths = list(getattr(volume, "source_paths", None) or [])
    if not paths:
        return None
    try:
        rel = Path(paths[0]).resolve().relative_to(settings.cache_root().resolve())
    except (ValueError, OSError):
        return None
    return next((name for name in settings.nodes if rel.parts and pacs._safe(name) == rel.parts[0]), None)


def _write_results(labels, reference, measure, spec, names, edited: bool, folder: Path, base: str) -> dict[str, Any]:
    """Worker: measure, write ``<base>_seg.dcm`` and ``<base>_sr.dcm``; returns the files and the header."""
    import pydicom

    from seg_app.core.dicom_seg import export_dicom_seg
    from seg_app.core.dicom_sr import export_dicom_sr

    lesions, _totals = measure()
    seg = export_dicom_seg(labels, reference, folder / f"{base}_seg.dcm", spec=spec, label_names=names,
                           manually_edited=edited)
    sr = export_dicom_sr(lesions, reference, seg, folder / f"{base}_sr.dcm", spec=spec, label_names=names)
    ds = pydicom.dcmread(seg, stop_before_pixels=True)
    info = {k: str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "StudyDate", "StudyDescription",
                                                   "StudyInstanceUID")}
    return {"files": [Path(seg), Path(sr)], "info": info, "n_lesions": len(lesions)}


class SendResultsDialog(QDialog):
    """Confirmation (patient, study, node chooser) and the send job with progress and Cancel.

    Emits ``sent(message)`` when the node stored the files, ``send_failed(message)`` on an error. The
    temporary folder holding the files is deleted when the dialog closes.
    """

    sent = Signal(str)
    send_failed = Signal(str)

    def __init__(self, parent: QWidget | None, settings: pacs.PacsSettings, written: dict[str, Any],
                 folder: Path, default_node: str | None = None, anonymise: bool = False) -> None:
        super().__init__(parent)
        self.setWindowTitle("Send results to PACS")
        self.settings = settings
        self.files: list[Path] = list(written["files"])
        self.info: dict[str, str] = dict(written["info"])
        self.folder = folder
        self.job: Job | None = None
        self.start_job = lambda fn, name: Job(fn, name, self)  # the window's job_control.start_job when shown from it
        self.result_message = ""
        info = self.info
        hidden = "(hidden: anonymised display)"
        self.patient_label = QLabel(hidden if anonymise else
                                    f"{info['PatientName'].replace('^', ' ').strip() or '(no name)'}, ID {info['PatientID'] or '(none)'}")
        self.study_label = QLabel(hidden if anonymise else
                                  f"{_date(info['StudyDate']) or '(no date)'}  {info['StudyDescription']}".strip())
        self.files_label = QLabel(f"DICOM SEG + DICOM SR ({written.get('n_lesions', 0)} lesion(s) measured)")
        self.node_box = QComboBox()
        self.node_box.addItems(sorted(settings.nodes))
        if default_node and default_node in settings.nodes:
            self.node_box.setCurrentText(default_node)
        self.protocol_box = QComboBox()
        self.protocol_box.addItems(["node default", "dicomweb", "dimse"])
        form = QFormLayout()
        form.addRow("Patient:", self.patient_label)
        form.addRow("Study:", self.study_label)
        form.addRow("Results:", self.files_label)
        row = QHBoxLayout()
        row.addWidget(self.node_box, 1)
        row.addWidget(QLabel("Protocol:"))
        row.addWidget(self.protocol_box)
        form.addRow("Send to node:", row)
        self.status = QLabel("Store these results in the patient's study on the chosen node?")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.send_button = QPushButton("&Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.status)
        lay.addLayout(buttons)
        self.finished.connect(lambda _r: shutil.rmtree(self.folder, ignore_errors=True))
        self._update_buttons()

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #c0392b;" if error else "")

    def _update_buttons(self) -> None:
        busy = self.job is not None
        self.send_button.setEnabled(not busy and bool(self.node_box.currentText()))
        self.cancel_button.setEnabled(busy)
        self.node_box.setEnabled(not busy)
        self.protocol_box.setEnabled(not busy)

    def send(self) -> Job | None:
        name = self.node_box.currentText()
        if self.job is not None or not name:
            return None
        try:
            node = self.settings.node(name)
        except pacs.PacsError as exc:
            self._say(_one_line(exc), error=True)
            return None
        text = self.protocol_box.currentText()
        protocol = None if text == "node default" else text
        files, local_ae = list(self.files), self.settings.local_ae_title

        def store(progress, cancel):
            pacs.check_cancel(cancel, "Sending")
            return pacs.send(node, files, protocol=protocol, local_ae_title=local_ae, progress=progress)

        job = self.start_job(store, "send")
        self.job = job
        job.succeeded.connect(lambda uids: self._sent(node.name, uids))
        job.failed.connect(self._failed)
        job.cancelled.connect(lambda: self._say("Sending cancelled; instances already stored stay on the node."))
        job.progressed.connect(self._on_progress)
        job.finished.connect(self._job_finished)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self._say(f"Sending to {node.name}...")
        self._update_buttons()
        job.start()
        return job

    def _on_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _job_finished(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            job.deleteLater()
        self.progress.setVisible(False)
        self._update_buttons()

    def _sent(self, node_name: str, uids) -> None:
        n = len(uids)
        self.result_message = f"sent SEG + SR to {node_name} ({n} instance{'' if n == 1 else 's'} stored)"
        self._say(self.result_message)
        self.sent.emit(self.result_message)
        self.accept()

    def _failed(self, exc: BaseException) -> None:
        self.result_message = _one_line(exc)
        self._say(self.result_message, error=True)  # the dialog stays open: another node, or Close
        self.send_failed.emit(self.result_message)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self._say("Cancelling...")

    def reject(self) -> None:  # closing cancels a running send and waits for it
        if self.job is not None:
            self.job.cancel()
            self.job.wait(30000)
        super().reject()


def send_results(win, settings: pacs.PacsSettings | None = None) -> Job | None:
    """Write the SEG and SR in a job, then open the confirmation dialog (``win.pacs_send_dialog``).

    Returns the write job, or None (with a clear message) when nothing can be sent.
    """
    refusal = send_refusal(win)
    if refusal:
        win.show_error(refusal, title="seg-app: send results to PACS")
        return None
    if getattr(win, "pacs_write_job", None) is not None:
        return None
    if settings is None:
        try:
            settings = pacs.load_settings()
        except pacs.PacsError as exc:
            win.show_error(_one_line(exc), title="seg-app: send results to PACS")
            return None
    if not settings.nodes:
        win.show_error("No PACS node is configured (see docs/PACS.md).", title="seg-app: send results to PACS")
        return None
    s = win.session
    measure = s.measurement_task()
    labels, reference = s.export_snapshot()
    spec, edited = s.spec, s.manually_edited
    names = s.label_names() if s.opened_names is not None else None
    default_node, anonymise = source_node(settings, reference), bool(s.anonymise)
    folder = Path(tempfile.mkdtemp(prefix="seg_app_send_"))
    base = Path(s.export_name("x")).name[:-2] or "seg-app"

    def write(progress, cancel):
        return _write_results(labels, reference, measure, spec, names, edited, folder, base)

    job = win.job_control.start_job(write, "preparing results")
    win.pacs_write_job = job
    win.statusBar().showMessage("Writing the DICOM SEG and SR to send...")

    def written(result) -> None:
        dlg = SendResultsDialog(win, settings, result, folder, default_node, anonymise)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.start_job = win.job_control.start_job  # closing the window cancels and waits for the send
        dlg.sent.connect(lambda msg: win.statusBar().showMessage(msg, 15000))
        dlg.send_failed.connect(lambda msg: win.show_error(msg, title="seg-app: send results to PACS"))
        win.pacs_send_dialog = dlg
        dlg.open()

    def failed(exc) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        win.report(exc, "send results to PACS")

    job.succeeded.connect(written)
    job.failed.connect(failed)
    job.cancelled.connect(lambda: shutil.rmtree(folder, ignore_errors=True))
    job.finished.connect(lambda: setattr(win, "pacs_write_job", None))
    job.start()
    return job


def add_send_menu(win) -> QAction:
    """Insert File > Send results to PACS... after File > Open from PACS... (enabled for DICOM scans with a mask)."""
    act = QAction("Send results to P&ACS...", win)
    act.setStatusTip("Store the mask (DICOM SEG) and its measurements (DICOM SR) in the scan's study on a PACS node")
    act.triggered.connect(lambda: send_results(win))
    menu = win.menus.file_menu
    actions = menu.actions()
    anchor = getattr(win.menus, "act_open_pacs", None)
    after = actions[actions.index(anchor) + 1] if anchor in actions and actions.index(anchor) + 1 < len(actions) else None
    if after is not None:
        menu.insertAction(after, act)
    else:
        menu.addAction(act)

    def update() -> None:
        refusal = send_refusal(win)
        act.setEnabled(refusal is None)
        act.setToolTip(refusal or act.statusTip())

    menu.aboutToShow.connect(update)
    win.session.connect(lambda _what: update())
    win.pacs_write_job = None
    win.pacs_send_dialog = None
    win.menus.act_send_pacs = act
    update()
    return act
