"""Background jobs: run a core function in a ``QThread`` with progress, cancel and result signals.

A job function has the signature ``fn(progress, cancel) -> result`` where ``progress(done, total)``
may be called from the worker thread and ``cancel`` is a ``threading.Event`` the function checks (the
core's ``Segmenter.segment`` takes it directly and raises ``Cancelled``). Signals are delivered on the
GUI thread (queued connections), so slots may touch widgets.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEventLoop, QObject, QThread, QTimer, Signal

from seg_app.core.errors import Cancelled

log = logging.getLogger(__name__)

JobFunction = Callable[[Callable[[int, int], None], threading.Event], Any]

_ALL_JOBS: "weakref.WeakSet[Job]" = weakref.WeakSet()


class Job(QThread):
    """One background task.

    Signals:
        progressed(done, total): progress reports (rate-limited to ~25 per second, last one always).
        succeeded(result): the function returned.
        failed(exception): the function raised (not ``Cancelled``).
        cancelled(): the function raised ``Cancelled`` or cancel was requested.
        finished(): (QThread's) always last.
    """

    progressed = Signal(int, int)
    succeeded = Signal(object)
    failed = Signal(object)
    cancelled = Signal()

    def __init__(self, fn: JobFunction, name: str = "job", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.fn = fn
        self.name = name
        self.setObjectName(f"seg_app-{name}")
        self.cancel_event = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.was_cancelled = False
        self.started_at = 0.0
        self._last_emit = 0.0
        _ALL_JOBS.add(self)

    def cancel(self) -> None:
        """Ask the function to stop at its next check."""
        self.cancel_event.set()

    def _progress(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done >= total or now - self._last_emit > 0.04:
            self._last_emit = now
            self.progressed.emit(int(done), int(total))
        if self.cancel_event.is_set():
            raise Cancelled(f"{self.name.capitalize()} was cancelled.")

    def run(self) -> None:  # worker thread
        self.started_at = time.perf_counter()
        try:
            result = self.fn(self._progress, self.cancel_event)
        except Cancelled:
            self.was_cancelled = True
            self.cancelled.emit()
            return
        except BaseException as exc:  # noqa: BLE001 - every error is reported to the GUI
            log.debug("job %s failed", self.name, exc_info=True)
            self.error = exc
            if self.cancel_event.is_set():
                self.was_cancelled = True
                self.cancelled.emit()
            else:
                self.failed.emit(exc)
            return
        self.result = result
        if self.cancel_event.is_set():
            self.was_cancelled = True
            self.cancelled.emit()
        else:
            self.succeeded.emit(result)


def running_jobs() -> list[Job]:
    """Jobs whose thread is still running (tests assert this is empty after each test)."""
    import shiboken6

    return [j for j in list(_ALL_JOBS) if shiboken6.isValid(j) and j.isRunning()]


def wait_for(job: Job, timeout_s: float | None = None) -> bool:
    """Run the event loop until ``job`` has finished and its result signals were delivered.

    Used by scripted mode and tests; the GUI stays live meanwhile. Returns False on timeout. The job
    object may be deleted (``deleteLater``) when this returns: do not use it afterwards.
    """
    from PySide6.QtCore import QCoreApplication, Qt

    import shiboken6

    def finished() -> bool:
        # A job is only ever deleted after it finished (``deleteLater`` in the finished handler).
        return not shiboken6.isValid(job) or job.isFinished()

    if not finished():
        loop = QEventLoop()
        # ``finished`` may have been emitted just before we connect while ``isFinished()`` is still
        # False (Qt sets it after the signal), and the handler may then delete the job: so besides
        # the signals, poll the state on a short timer instead of waiting for a signal that was missed.
        job.finished.connect(loop.quit, Qt.ConnectionType.QueuedConnection)
        job.destroyed.connect(loop.quit)
        poll = QTimer()
        poll.timeout.connect(loop.quit)  # the while below re-checks state and deadline
        poll.start(20)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not finished() and (deadline is None or time.monotonic() < deadline):
            loop.exec()
        poll.stop()
    QCoreApplication.processEvents()  # deliver signals queued just before ``finished``
    return finished()
