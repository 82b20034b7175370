"""Exports of the main window: mask as NIfTI or DICOM SEG, measurements as CSV/JSON, screenshots.

Every file is written atomically by the core; mask writes run in a job on a snapshot of the labels so
editing can go on. The file dialogs are the window's (``ask_save_path``, which tests replace).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject

from seg_app.core.errors import SegAppError
from seg_app.gui.workers import Job

if TYPE_CHECKING:
    from seg_app.gui.main_window import MainWindow

NO_MASK = "There is no mask to save; segment the scan or paint one first."


def with_suffix(path: str | Path, suffixes: tuple[str, ...], default: str) -> Path:
    """``path``, with ``default`` appended when its name does not end with one of ``suffixes``."""
    p = Path(path)
    return p if p.name.lower().endswith(suffixes) else p.with_name(p.name + default)


class ExportController(QObject):
    """Asks where to save, refuses to overwrite the source scan, writes, and clears the unsaved mark."""

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.session = win.session
        self.save_job: Job | None = None

    def _remember_folder(self, p: Path) -> None:
        self.win.settings.setValue("export_dir", str(p.parent))

    # ---- mask
    def save_mask_dialog(self) -> None:
        if self.session.labels is None or self.session.volume is None:
            self.win.show_error(NO_MASK)
            return
        path = self.win.ask_save_path("Save mask as NIfTI", self.session.export_name("mask.nii.gz"), "NIfTI (*.nii.gz *.nii)")
        if path:
            self.save_mask(path)

    def save_mask(self, path: str) -> Job | None:
        """Write the mask aligned with the source scan (atomic; never over the source) in the background."""
        p = with_suffix(path, (".nii", ".nii.gz"), ".nii.gz")

        def write(labels, reference):
            from seg_app.core.io import save_labels

            return save_labels(labels, reference, p)

        return self._start_save(p, write, "save mask")

    def save_mask_and_wait(self) -> bool:
        """Save the mask as NIfTI now (asks where) and wait for the write; True when it is saved."""
        from seg_app.gui.workers import wait_for

        if self.session.labels is None or self.session.volume is None:
            return True
        path = self.win.ask_save_path("Save mask as NIfTI", self.session.export_name("mask.nii.gz"), "NIfTI (*.nii.gz *.nii)")
        job = self.save_mask(path) if path else None
        if job is None:
            return False
        wait_for(job)
        return not self.session.dirty

    def save_seg_dialog(self) -> None:
        volume = self.session.volume
        if self.session.labels is None or volume is None:
            self.win.show_error(NO_MASK)
            return
        if not volume.series_uid:
            self.win.show_error("DICOM SEG export needs a DICOM source scan; this scan was opened from NIfTI, "
                                "so save the mask as NIfTI instead.")
            return
        path = self.win.ask_save_path("Save mask as DICOM SEG", self.session.export_name("seg.dcm"), "DICOM (*.dcm)")
        if path:
            self.save_seg(path)

    def save_seg(self, path: str) -> Job | None:
        """Write the mask as a DICOM Segmentation referencing the source series (background, atomic)."""
        p = with_suffix(path, (".dcm",), ".dcm")
        spec, edited = self.session.spec, self.session.manually_edited
        # an opened segmentation's label names name its segments (None: the model's)
        names = self.session.label_names() if self.session.opened_names is not None else None

        def write(labels, reference):
            from seg_app.core.dicom_seg import export_dicom_seg

            return export_dicom_seg(labels, reference, p, spec=spec, label_names=names, manually_edited=edited)

        return self._start_save(p, write, "save DICOM SEG")

    def _start_save(self, p: Path, write, what: str) -> Job | None:
        """Run ``write(labels_copy, reference)`` in a job; refuse paths that are the source scan."""
        if self.session.labels is None or self.session.volume is None or self.save_job is not None:
            return None
        refusal = self.session.export_refusal(p)
        if refusal:
            self.win.show_error(refusal)
            return None
        labels, reference = self.session.export_snapshot()
        job = self.win.job_control.start_job(lambda progress, cancel: write(labels, reference), "saving")
        self.save_job = job
        job.succeeded.connect(self._on_saved)
        job.failed.connect(lambda exc: self.win.report(exc, what))
        job.finished.connect(lambda: setattr(self, "save_job", None))
        job.start()
        return job

    def _on_saved(self, out) -> None:
        self._remember_folder(Path(out))
        self.session.mark_saved()
        self.win.statusBar().showMessage(f"Saved the mask to {out}.", 8000)

    # ---- measurements
    def save_measurements_dialog(self) -> None:
        if self.session.volume is None or self.session.labels is None:
            self.win.show_error("There are no measurements to save; segment the scan first.")
            return
        path = self.win.ask_save_path("Save measurements", self.session.export_name("lesions.csv"), "CSV (*.csv);;JSON (*.json)")
        if path:
            self.save_measurements(path)

    def save_measurements(self, path: str) -> bool:
        """Write the lesion table as CSV or JSON (by extension; atomic)."""
        from seg_app.core import export

        p = with_suffix(path, (".csv", ".json"), ".csv")
        lesions = self.session.lesions
        try:
            if p.suffix.lower() == ".json":
                extra = self.session.measurements_metadata(tta=self.win.tools.tta_check.isChecked())
                export.save_measurements_json(p, lesions, self.session.totals, extra=extra)
            else:
                export.save_measurements_csv(p, lesions, header=self.session.measurements_header())
        except (SegAppError, OSError) as exc:
            self.win.report(exc, "save measurements")
            return False
        self._remember_folder(p)
        self.win.statusBar().showMessage(f"Saved {len(lesions)} lesion(s) to {p}.", 8000)
        return True

    # ---- screenshot
    def save_screenshot_dialog(self) -> None:
        name = self.session.export_name("views.png") if self.session.volume is not None else "seg-app.png"
        path = self.win.ask_save_path("Save screenshot", name, "PNG (*.png)")
        if path:
            self.save_screenshot(path)

    def save_screenshot(self, path: str, whole_window: bool = False) -> bool:
        """PNG of the three views (or the whole window), rendered to memory and written atomically."""
        from seg_app.core.io import atomic_write

        p = with_suffix(path, (".png",), ".png")
        pixmap = (self.win if whole_window else self.win.view_grid.views_widget).grab()
        data = QByteArray()
        buf = QBuffer(data)
        buf.open(QIODevice.OpenModeFlag.WriteOnly)
        ok = pixmap.save(buf, "PNG")
        buf.close()
        if not ok:
            self.win.show_error(f"Could not render the screenshot for {p.name}.")
            return False
        try:
            with atomic_write(p) as tmp:
                Path(tmp).write_bytes(bytes(data.data()))
        except (SegAppError, OSError) as exc:
            self.win.show_error(f"Could not save the screenshot to {p}: {getattr(exc, 'strerror', None) or exc}.")
            return False
        self._remember_folder(p)
        self.win.statusBar().showMessage(f"Saved the screenshot to {p}.", 8000)
        return True


__all__ = ["ExportController", "with_suffix"]
