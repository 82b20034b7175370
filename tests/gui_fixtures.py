"""Shared fixtures for the GUI tests (imported by ``tests/test_gui_*.py``; offscreen Qt)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

#: Scan affine of the test NIfTI: x flipped (array axis i runs to the patient's left, "LAS").
SCAN_AFFINE = np.array(
    [[-1.2, 0.0, 0.0, 30.0], [0.0, 1.0, 0.0, -20.0], [0.0, 0.0, 2.0, -30.0], [0.0, 0.0, 0.0, 1.0]]
)
SCAN_SHAPE = (48, 40, 32)


def make_scan_array(shape=SCAN_SHAPE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    img = 100 + 10 * rng.standard_normal(shape)
    img[((x - 20) ** 2 + (y - 18) ** 2 + (z - 15) ** 2) < 36] += 200
    img[((x - 35) ** 2 + (y - 25) ** 2 + (z - 10) ** 2) < 9] += 150
    return img.astype(np.float32)


def write_nifti(path: Path, shape=SCAN_SHAPE, affine=SCAN_AFFINE, seed: int = 0) -> Path:
    nib.save(nib.Nifti1Image(make_scan_array(shape, seed), affine), str(path))
    return path


def make_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-weight UNet checkpoint (channels [4, 8], ROI 16^3, 1 mm grid) with one foreground label."""
    from checkpoints import make_tiny_checkpoint as make
    from seg_app.core.spec import InferenceSpec

    return make(path, seed=seed, spacing=(1.0, 1.0, 1.0), inference=InferenceSpec(roi_size=(16, 16, 16), overlap=0.5, sw_batch_size=1))


@pytest.fixture(scope="session")
def gui_data(tmp_path_factory):
    """Paths: a NIfTI scan, a tiny checkpoint, a folder with two DICOM series, a corrupt file."""
    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.volume import Volume

    root = tmp_path_factory.mktemp("gui_data")
    scan = write_nifti(root / "scan.nii.gz")
    ckpt = make_tiny_checkpoint(root / "tiny.pt")
    dicom = root / "dicom_two_series"
    small = make_scan_array((24, 20, 12), seed=1)
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    write_dicom_series(Volume(small, aff, modality="MR"), dicom / "a", series_description="T1 axial", series_number=1)
    write_dicom_series(
        Volume(small[:, :, :8] * 2, aff, modality="MR"), dicom / "b", series_description="FLAIR axial", series_number=2
    )
    bad = root / "broken.nii.gz"
    bad.write_bytes(b"this is not a scan at all" * 10)
    bad_ckpt = root / "broken.pt"
    bad_ckpt.write_bytes(b"not a checkpoint" * 10)
    return {"scan": scan, "ckpt": ckpt, "dicom": dicom, "bad": bad, "bad_ckpt": bad_ckpt, "root": root}


@pytest.fixture(autouse=True)
def no_leftover_threads(qapp):
    """Fail the test if any background job, pool thread, Python thread or timer is left running."""
    before = set(threading.enumerate())
    yield
    from PySide6.QtCore import QThreadPool, QTimer
    from PySide6.QtWidgets import QApplication

    from seg_app.gui.workers import running_jobs

    qapp.processEvents()
    assert running_jobs() == [], f"jobs still running: {[j.name for j in running_jobs()]}"
    assert QThreadPool.globalInstance().activeThreadCount() == 0
    extra = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    assert not extra, f"threads left running: {extra}"
    timers = [t for w in QApplication.topLevelWidgets() if w.isVisible() for t in w.findChildren(QTimer) if t.isActive()]
    assert not timers, f"timers left running: {timers}"


@pytest.fixture
def make_window(qtbot, tmp_path, gui_data):
    """Factory for a main window with test-specific QSettings and the tiny model (loaded, waited for)."""
    from PySide6.QtCore import QSettings

    from seg_app.gui.main_window import MainWindow
    from seg_app.gui.workers import wait_for

    windows = []

    def make(model: str | None = "tiny", interactive: bool = True):
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        path = str(gui_data["ckpt"]) if model == "tiny" else model
        win = MainWindow(settings=settings, model_path=path, interactive=interactive)
        # never block a test on the "discard unsaved mask?" question (tests that need it monkeypatch it)
        win.confirm_discard = lambda action: True
        qtbot.addWidget(win)
        win.resize(1100, 750)
        win.show()
        if win.model_job is not None:
            wait_for(win.model_job)
        windows.append(win)
        return win

    yield make
    for win in windows:
        win.setWindowModified(False)
        win.close()


def open_and_wait(win, path, series_uid=None):
    from seg_app.gui.workers import wait_for

    job = win.open_path(str(path), series_uid)
    assert job is not None
    assert wait_for(job, timeout_s=60)
    return win


def segment_and_wait(win, qtbot=None):
    from seg_app.gui.workers import wait_for

    job = win.start_segmentation()
    assert job is not None
    assert wait_for(job, timeout_s=120)
    wait_measurements(win)
    return win


def wait_measurements(win):
    from seg_app.gui.workers import wait_for

    for _ in range(20):
        job = win.measure_job
        if job is None:
            break
        wait_for(job, timeout_s=60)
