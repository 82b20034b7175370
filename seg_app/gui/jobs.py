"""Background work of the main window: opening scans (and recent files), loading the model, segmenting, measuring.

:class:`JobController` starts each :class:`~seg_app.gui.workers.Job`, keeps the set of running jobs
(cancelled and waited for on close), feeds results into the window's :class:`~seg_app.gui.session.Session`
and shows progress in the tools panel. Errors go to the window's non-blocking dialogs.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from seg_app.core.errors import MultipleSeriesError
from seg_app.gui import dialogs
from seg_app.gui.workers import Job

if TYPE_CHECKING:
    from seg_app.gui.main_window import MainWindow

log = logging.getLogger(__name__)

MAX_RECENT = 10
SCAN_FILTER = "Scans (*.nii *.nii.gz *.dcm *.DCM *.ima *.IMA);;All files (*)"
SEGMENTATION_FILTER = "Segmentations (NIfTI, DICOM SEG) (*.nii *.nii.gz *.dcm *.DCM);;All files (*)"


def fmt_seconds(s: float) -> str:
    """``"4.2 s"``, ``"12 s"`` or ``"3 min 05 s"``."""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60):02d} s"


def _remember_model(path: str) -> None:
    """Remember a loaded model in the model registry (a failure to write it is logged, never an error)."""
    from seg_app.core.model_registry import remember_model

    try:
        remember_model(path, chosen=True)
    except OSError as exc:
        log.warning("could not remember the model in the model registry: %s", exc)


class JobController(QObject):
    """Runs the window's jobs; at most one of each kind (load, model, segmentation, measurement) at a time."""

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.session = win.session
        self.jobs: set[Job] = set()
        self.load_job: Job | None = None
        self.model_job: Job | None = None
        self.seg_job: Job | None = None
        self.measure_job: Job | None = None
        self.seg_open_job: Job | None = None  # File > Open segmentation
        self.discover_job: Job | None = None  # DICOM SEGs of the opened series in its folder
        self._measure_pending = False
        self._show_largest = False  # after a segmentation: go to the largest lesion once it is measured
        self._seg_started = 0.0
        self._segmenters: dict = {}  # built in the worker, reused for the same model and settings
        self.cuda_available = False

    # ---- bookkeeping
    def start_job(self, fn, name: str) -> Job:
        job = Job(fn, name, self.win)
        self.jobs.add(job)
        job.finished.connect(lambda j=job: self._job_done(j))
        return job

    def _job_done(self, job: Job) -> None:
        self.jobs.discard(job)
        job.deleteLater()
        self.win.refresh_actions()

    def cancel_all_jobs(self, wait: bool = True) -> None:
        """Cancel every running job and wait for their threads (used when closing)."""
        for job in list(self.jobs):
            job.cancel()
        if wait:
            for job in list(self.jobs):
                job.wait()

    def _busy(self, text: str) -> None:
        self.win.statusBar().showMessage(text)
        if self.seg_job is None:
            self.win.tools.progress.setRange(0, 0)
            self.win.tools.progress_label.setText(text)

    def _idle(self) -> None:
        tools = self.win.tools
        if self.seg_job is None:
            tools.progress.setRange(0, 1)
            tools.progress.setValue(0)
            if not tools.progress_label.text().startswith("Done"):
                tools.progress_label.setText("")
        self.win.statusBar().clearMessage()

    # ---- opening scans
    def open_scan_dialog(self) -> None:
        path = self.win.ask_open_path("Open scan", SCAN_FILTER)
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        path = self.win.ask_open_path("Open DICOM folder", "", folder=True)
        if path:
            self.open_path(path)

    def open_path(self, path: str, series_uid: str | None = None) -> Job | None:
        """Load a scan (file or DICOM folder) in the background; a folder with several series opens a picker."""
        win, path = self.win, str(path)
        if self.load_job is not None:
            win.statusBar().showMessage("Still loading the previous scan...", 4000)
            return None
        if self.seg_job is not None:
            win.show_error("Cancel or wait for the running segmentation before opening another scan.")
            return None
        if not win.confirm_discard("Open another scan"):
            return None
        win.settings.setValue("open_dir", str(Path(path).parent if Path(path).is_file() else Path(path)))

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
        win = self.win
        if isinstance(exc, MultipleSeriesError) and exc.series:
            if not win.interactive:
                win.show_error(f"{exc} Pass --series with one of: " + "; ".join(s.summary() for s in exc.series))
                return
            dlg = dialogs.SeriesPickerDialog(
                exc.series, folder=Path(path).name, parent=win, thumbnails=getattr(exc, "thumbnails", None)
            )
            win.series_picker = dlg
            dlg.accepted.connect(lambda: self._on_series_picked(path, dlg))
            dlg.finished.connect(lambda _r: setattr(win, "series_picker", None))
            dlg.open()
            return
        win.report(exc, "open scan")

    def _on_loaded(self, volume, path: str) -> None:
        win = self.win
        self._show_largest = False
        win.set_volume(volume)
        self.add_recent(path)
        if volume.warnings:
            win.show_info(
                f"The scan was loaded with {len(volume.warnings)} warning(s); check the images carefully.",
                "Loading warnings",
                "\n".join(f"- {w}" for w in volume.warnings),
            )
        self.find_segmentations(path, volume)

    # ---- opening segmentations
    def open_segmentation_dialog(self) -> None:
        if self.session.volume is None:
            self.win.show_error("Open a scan first; a segmentation is placed on the open scan.")
            return
        path = self.win.ask_open_path("Open segmentation", SEGMENTATION_FILTER)
        if path:
            self.open_segmentation(path)

    def open_segmentation(self, path: str) -> Job | None:
        """Load a NIfTI label map or DICOM SEG onto the open scan in the background; it replaces the mask
        as one undo step (asks first when the mask has unsaved changes)."""
        win, session, path = self.win, self.session, str(path)
        volume = session.volume
        if volume is None:
            win.show_error("Open a scan first; a segmentation is placed on the open scan.")
            return None
        if self.seg_open_job is not None or self.load_job is not None:
            win.statusBar().showMessage("Still loading; try again when it is done.", 4000)
            return None
        if self.seg_job is not None:
            win.show_error("Cancel or wait for the running segmentation before opening a segmentation.")
            return None
        if not win.confirm_discard("Open a segmentation"):
            return None

        def load(progress, cancel):
            from seg_app.core.segmentation_io import load_segmentation

            return load_segmentation(path, volume)

        job = self.start_job(load, "segmentation loading")
        self.seg_open_job = job
        job.succeeded.connect(lambda loaded: self._on_segmentation_opened(loaded, volume))
        job.failed.connect(lambda exc: win.report(exc, "open segmentation"))
        job.finished.connect(self._on_segmentation_open_finished)
        self._busy(f"Loading the segmentation {Path(path).name}...")
        job.start()
        return job

    def _on_segmentation_open_finished(self) -> None:
        self.seg_open_job = None
        message = self.win.statusBar().currentMessage()
        self._idle()
        if not message.startswith("Loading the segmentation"):  # keep the result's (or error's) message
            self.win.statusBar().showMessage(message, 15000)

    def _on_segmentation_opened(self, loaded, volume) -> None:
        win, session = self.win, self.session
        if win.closing or session.volume is not volume:  # another scan was opened meanwhile
            return
        if self.seg_job is not None:
            win.show_error("A segmentation started while the file was loading; open the segmentation again afterwards.")
            return
        try:
            session.open_segmentation(loaded)
        except ValueError as exc:
            win.show_error(f"The segmentation {Path(loaded.source).name} cannot be edited here: {exc}.")
            return
        self._show_largest = True
        win.show_labels()
        warnings = list(loaded.warnings)
        if warnings:  # resampled, placed by position only...: in the banner above the views
            win.view_grid.show_domain_warnings(warnings)
        win.statusBar().showMessage(
            f"Opened the segmentation {Path(loaded.source).name} ({len(loaded.names)} label(s)). "
            + (" ".join(warnings) if warnings else "Edit > Undo brings back the previous mask."), 15000)

    def find_segmentations(self, path: str, volume) -> Job | None:
        """Search the opened DICOM series' folder(s) for SEG files that reference it (background)."""
        self.win.offer_segmentations([])
        if not getattr(volume, "series_uid", "") or self.discover_job is not None:
            return None
        from seg_app.gui.seg_discovery import find_series_segmentations, search_folders

        folders = search_folders(path, volume.source_paths)
        sources = tuple(volume.source_paths)

        def find(progress, cancel):
            return find_series_segmentations(folders, volume.series_uid, exclude=sources, cancel=cancel)

        job = self.start_job(find, "segmentation search")
        self.discover_job = job
        job.succeeded.connect(lambda found: self._on_segmentations_found(found, volume))
        job.failed.connect(lambda exc: log.warning("searching for segmentations failed: %s", exc))
        job.finished.connect(lambda: setattr(self, "discover_job", None))
        job.start()
        return job

    def _on_segmentations_found(self, found, volume) -> None:
        if not self.win.closing and self.session.volume is volume:
            self.win.offer_segmentations(list(found))

    def recent_files(self) -> list[str]:
        """Recently opened paths, newest first (kept in the window's settings)."""
        value = self.win.settings.value("recent_files", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in (value or [])]

    def add_recent(self, path: str) -> None:
        recent = [p for p in self.recent_files() if p != path]
        recent.insert(0, path)
        self.win.settings.setValue("recent_files", recent[:MAX_RECENT])
        self.win.menus.set_recent(recent[:MAX_RECENT], self.open_path)

    def _on_series_picked(self, path: str, dlg: dialogs.SeriesPickerDialog) -> None:
        s = dlg.selected_series()
        if s is not None:
            self.open_path(path, s.series_uid)

    # ---- model
    def load_model_dialog(self) -> None:
        path = self.win.ask_open_path(
            "Load model checkpoint", "Model checkpoints (*.pt *.pth);;MONAI bundle (metadata.json);;All files (*)")
        if path:
            self.load_model(path, show_card=True)

    def load_model(self, path: str | None, show_card: bool = True) -> Job | None:
        """Load a checkpoint (default: the bundled model) in the background."""
        if self.model_job is not None:
            return None

        def load(progress, cancel):
            import torch

            from seg_app.core.model_sources import load_model_checkpoint
            from seg_app.core.spec import default_model_path

            from seg_app.core.nnunet_model import load_model, nnunet_root

            if path and nnunet_root(path) is not None:  # an nnU-Net folder, its dataset.json or a fold's .pth
                ckpt = load_model(path)  # NnUNetModel: .spec and .path like a Checkpoint
            else:
                ckpt = load_model_checkpoint(path or default_model_path())
            if path:  # Model > Models...: opened models are listed, the last one is the chosen one
                _remember_model(path)
            return ckpt, bool(torch.cuda.is_available())

        job = self.start_job(load, "model loading")
        self.model_job = job
        self.win.tools.model_info.setText("Loading model...")
        job.succeeded.connect(lambda res: self._on_model_loaded(res, show_card))
        job.failed.connect(lambda exc: self._on_model_failed(exc, path))
        job.finished.connect(lambda: setattr(self, "model_job", None))
        job.start()
        return job

    def _on_model_failed(self, exc: BaseException, path: str | None) -> None:
        win = self.win
        if self.session.checkpoint is None:
            win.tools.model_info.setText("No model loaded: Model > Load model...")
        else:
            self.show_model_info()
        if path is None and not win.interactive:
            print(f"note: {dialogs.error_message(exc)}", file=sys.stderr)
        elif path is None:
            # the bundled model is missing: say so in the panel, not with a dialog at start-up
            win.tools.model_info.setText(f"No model loaded ({dialogs.error_message(exc)}) Use Model > Load model...")
        else:
            win.report(exc, "load model")
        win.refresh_actions()

    def _on_model_loaded(self, result, show_card: bool) -> None:
        ckpt, cuda = result
        win = self.win
        self.session.set_checkpoint(ckpt)
        self.cuda_available = cuda
        gpu_item = win.tools.device_combo.model().item(2)
        gpu_item.setEnabled(cuda)
        gpu_item.setToolTip("" if cuda else "No CUDA GPU available")
        self.show_model_info()
        win.update_label_choices()
        win.model_loaded.emit(ckpt.spec)
        win.refresh_actions()
        if show_card:
            win.show_model_card()

    def show_model_info(self) -> None:
        spec = self.session.spec
        labels = ", ".join(lab.name for lab in spec.foreground_labels)
        self.win.tools.model_info.setText(f"<b>{spec.name}</b> v{spec.version}<br>labels: {labels}")
        self.win.tools.model_info.setToolTip(self.session.model_card_text())

    # ---- segmentation
    def start_segmentation(self) -> Job | None:
        """Run the model on the open scan in a background job (progress, cancel)."""
        win, session, tools = self.win, self.session, self.win.tools
        if self.seg_job is not None or session.volume is None:
            return None
        if session.checkpoint is None:
            win.show_error("No model is loaded; use Model > Load model... first.")
            return None
        if not win.confirm_discard("Segment again"):
            return None
        volume, ckpt = session.volume, session.checkpoint
        device = tools.device_combo.currentData()
        tta = tools.tta_check.isChecked()
        cache = self._segmenters

        def segment(progress, cancel):
            from seg_app.core.nnunet_model import make_segmenter

            key = (id(ckpt), device, tta)
            seg = cache.get(key)
            if seg is None:
                cache.clear()
                seg = cache[key] = make_segmenter(ckpt, device=device, tta=tta)  # Segmenter or NnUNetSegmenter
            return seg.segment(volume, progress=progress, cancel=cancel, return_probabilities=True)

        job = self.start_job(segment, "segmentation")
        self.seg_job = job
        job.progressed.connect(self._on_seg_progress)
        job.succeeded.connect(self._on_segmented)
        job.failed.connect(lambda exc: win.report(exc, "segmentation"))
        job.cancelled.connect(lambda: win.statusBar().showMessage("Segmentation cancelled.", 5000))
        job.finished.connect(self._on_seg_finished)
        self._seg_started = time.perf_counter()
        tools.progress.setRange(0, 0)  # busy until the first window is done
        tools.progress.setFormat("")
        tools.progress_label.setText(f"Preparing ({'TTA, ' if tta else ''}{tools.device_combo.currentText()})...")
        job.start()
        win.refresh_actions()
        return job

    def cancel_segmentation(self) -> None:
        if self.seg_job is not None:
            self.seg_job.cancel()
            self.win.tools.progress_label.setText("Cancelling...")
            self.win.tools.cancel_button.setEnabled(False)

    def _on_seg_progress(self, done: int, total: int) -> None:
        if self.seg_job is None or self.seg_job.cancel_event.is_set():
            return
        tools = self.win.tools
        total = max(total, 1)
        tools.progress.setRange(0, total)
        tools.progress.setValue(min(done, total))
        tools.progress.setFormat(f"{done}/{total} windows")
        elapsed = time.perf_counter() - self._seg_started
        if done > 0:
            left = elapsed / done * (total - done)
            tools.progress_label.setText(f"Window {done} of {total}, about {fmt_seconds(left)} left")

    def _on_seg_finished(self) -> None:
        tools = self.win.tools
        self.seg_job = None
        tools.progress.setRange(0, 1)
        tools.progress.setValue(0)
        tools.progress.setFormat("")
        if not tools.progress_label.text().startswith("Done"):
            tools.progress_label.setText("")
        self.win.refresh_actions()

    def _on_segmented(self, result) -> None:
        win, session = self.win, self.session
        if win.closing or session.volume is None:
            return
        session.set_result(result)
        self._show_largest = True
        win.show_labels()
        dev = getattr(result, "device", "")
        secs = getattr(result, "seconds", time.perf_counter() - self._seg_started)
        win.tools.progress_label.setText(f"Done in {fmt_seconds(secs)} on {dev}.")
        win.statusBar().showMessage(f"Segmentation done in {fmt_seconds(secs)} ({dev}).", 8000)
        warnings = tuple(getattr(result, "warnings", ()) or ())
        domain = [w for w in warnings if w in set(session.domain_warnings(result))]
        win.view_grid.show_domain_warnings(domain)
        if warnings:
            win.show_info("The segmentation finished with warnings.", "Segmentation", "\n".join(f"- {w}" for w in warnings))
        win.segmentation_finished.emit(result)

    # ---- measurements
    def request_measurements(self) -> None:
        """Recompute the lesion table in the background (coalesces requests made while one runs)."""
        if self.session.labels is None or self.session.volume is None:
            return
        if self.measure_job is not None:
            self._measure_pending = True
            return
        self._measure_pending = False
        task = self.session.measurement_task()
        job = self.start_job(lambda progress, cancel: task(), "measurement")
        self.measure_job = job
        job.succeeded.connect(self._on_measured)
        job.failed.connect(lambda exc: self.win.report(exc, "measurements"))
        job.finished.connect(self._on_measure_finished)
        self.win.lesion_table.set_busy(True)
        job.start()

    def _on_measured(self, result) -> None:
        win, session = self.win, self.session
        if win.closing:
            return
        session.set_measurements(*result)
        win.lesion_table.set_lesions(session.lesions, session.totals, session.label_colors(), session.intensity_unit,
                                     session.region_colors())
        win.on_measurements()
        if self._show_largest and not self._measure_pending:
            self._show_largest = False
            win.go_to_largest_lesion()
        win.measurements_updated.emit(session.lesions)

    def _on_measure_finished(self) -> None:
        self.measure_job = None
        if self._measure_pending and not self.win.closing:
            self.request_measurements()


__all__ = ["MAX_RECENT", "SCAN_FILTER", "JobController", "fmt_seconds"]
