"""GUI: DICOM SEG export from the File menu, and the bad-input corpus opened in the real window."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import hashlib
from pathlib import Path

import numpy as np
import pytest

from corpus import build_corpus
from gui_fixtures import gui_data, make_window, no_leftover_threads, open_and_wait  # noqa: F401 - fixtures
from seg_app.gui.workers import wait_for

pytestmark = pytest.mark.gui


def _digest(path: Path) -> str:
    if not path.exists():
        return ""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def test_dicom_seg_export_round_trips(make_window, gui_data, tmp_path):
    from seg_app.core.dicom_seg import read_dicom_seg
    from seg_app.core.io import list_series

    win = make_window(model="")
    uid = next(s.series_uid for s in list_series(gui_data["dicom"]) if s.description == "T1 axial")
    open_and_wait(win, gui_data["dicom"], series_uid=uid)
    assert win.volume.series_uid == uid and not win.act_save_seg.isEnabled()
    win.paint_stroke("axial", [(12, 10, 6)])
    assert win.act_save_seg.isEnabled()
    out = tmp_path / "mask_seg.dcm"
    job = win.save_seg(str(out))
    assert job is not None and wait_for(job, timeout_s=60)
    back = read_dicom_seg(out, win.volume)
    assert back.shape == win.volume.shape
    assert np.array_equal(back.array[0] > 0, win.labels.array[0] > 0)
    assert win.labels.array.sum() > 0


def test_dicom_seg_refused_for_nifti_scan(make_window, gui_data, qtbot):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [(20, 18, 15)])
    assert not win.act_save_seg.isEnabled()
    with qtbot.waitSignal(win.error_reported, timeout=5000) as sig:
        win.save_seg_dialog()
    assert "NIfTI" in sig.args[0] and "\n" not in sig.args[0]


def test_bad_input_corpus_in_the_gui(make_window, tmp_path, qtbot):
    """Every scan case: an error dialog (one sentence) or a loaded scan; the input is never modified."""
    from PySide6.QtWidgets import QMessageBox

    cases = [c for c in build_corpus(tmp_path / "corpus") if c.kind == "scan"]
    assert len(cases) >= 20
    win = make_window(model="")
    errors: list[str] = []
    win.error_reported.connect(errors.append)
    for case in cases:
        before = _digest(case.path)
        errors.clear()
        win.series_picker = None
        previous = win.volume
        job = win.open_path(str(case.path))
        if job is not None:
            assert wait_for(job, timeout_s=60), case.name
        qtbot.wait(5)
        if case.expect in ("ok", "warning"):
            assert not errors, f"{case.name}: unexpected error {errors}"
            assert win.volume is not None and win.volume is not previous, case.name
            if case.expect == "warning":
                assert any(case.warning in w for w in win.volume.warnings), case.name
        elif case.expect == "MultipleSeriesError":
            assert win.series_picker is not None, case.name
            win.series_picker.reject()
        else:
            assert len(errors) == 1 and errors[0] and "\n" not in errors[0], f"{case.name}: {errors}"
        for box in win.findChildren(QMessageBox):
            box.close()
        assert _digest(case.path) == before, f"{case.name}: input modified"
    # still usable afterwards
    good = next(c for c in cases if c.expect == "ok")
    open_and_wait(win, good.path)
    assert win.volume is not None
