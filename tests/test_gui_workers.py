"""``wait_for`` must not miss a job that finished (and was deleted) before anyone waited on it."""

from __future__ import annotations

import shiboken6  # noqa: E402
from PySide6.QtCore import QCoreApplication, QEvent  # noqa: E402

from seg_app.gui.workers import Job, wait_for  # noqa: E402


def test_wait_for_returns_result_of_a_running_job(qapp):
    job = Job(lambda progress, cancel: 41 + 1, "answer")
    results = []
    job.succeeded.connect(results.append)
    job.start()
    assert wait_for(job, timeout_s=30)
    assert results == [42]


def test_wait_for_a_job_already_finished_and_deleted(qapp):
    job = Job(lambda progress, cancel: None, "quick")
    job.finished.connect(job.deleteLater)
    job.start()
    job.wait()
    QCoreApplication.sendPostedEvents(None, 0)
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert not shiboken6.isValid(job)
    assert wait_for(job, timeout_s=5) is True


def test_wait_for_times_out_on_a_job_that_never_ends(qapp):
    import threading

    release = threading.Event()
    job = Job(lambda progress, cancel: release.wait(30), "stuck")
    job.start()
    try:
        assert wait_for(job, timeout_s=0.2) is False
    finally:
        release.set()
        job.wait()
