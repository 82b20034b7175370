"""File > Open from PACS... (seg_app.gui.pacs_dialog) against a real Orthanc: search, the study and series
tables, retrieve in a background job with progress, cancel, and a clear error for a dead server."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading

import pytest

from gui_fixtures import gui_data, make_window  # noqa: F401 - fixtures
from orthanc_fixture import free_port, orthanc, pacs_settings  # noqa: F401 - fixtures
from seg_app.core import pacs

pytestmark = pytest.mark.gui


@pytest.fixture
def dialog(qtbot, pacs_settings):
    from seg_app.gui.pacs_dialog import PacsDialog

    dlg = PacsDialog(settings=pacs_settings)
    qtbot.addWidget(dlg)
    yield dlg
    if dlg.job is not None:
        dlg.job.cancel()
        dlg.job.wait(30000)


def _idle(dlg):
    return dlg.job is None


def _cells(table, row):
    return [table.item(row, c).text() for c in range(table.columnCount())]


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_search_lists_studies_and_series_then_retrieves(qtbot, dialog, orthanc, pacs_settings, protocol):
    mr = orthanc.extra["studies"]["mr"]
    dialog.protocol_box.setCurrentText(protocol)
    dialog.patient_name.setText("DOE*")
    dialog.date.setText("20260101-20261231")
    qtbot.mouseClick(dialog.search_button, qtbot_button())
    qtbot.waitUntil(lambda: _idle(dialog) and dialog.study_table.rowCount() == 1, timeout=60000)
    assert _cells(dialog.study_table, 0) == ["DOE JANE", "P001", "1970-01-02", "2026-03-15", "ACC001", "MR", "MRI head", "1"]
    dialog.study_table.selectRow(0)
    qtbot.waitUntil(lambda: _idle(dialog) and dialog.series_table.rowCount() == 1, timeout=60000)
    assert _cells(dialog.series_table, 0) == ["1", "MR", "T1 axial", str(mr.n_instances)]
    dialog.series_table.selectRow(0)
    assert dialog.retrieve_button.isEnabled()
    progress = []
    dialog.progress.valueChanged.connect(progress.append)
    with qtbot.waitSignal(dialog.retrieved, timeout=60000) as sig:
        qtbot.mouseClick(dialog.retrieve_button, qtbot_button())
    path, series_uid = sig.args
    assert series_uid == mr.series_uid
    assert path == str(pacs.cached_series_folder(pacs_settings, pacs_settings.node("orthanc"), mr.study_uid, mr.series_uid))
    assert len([p for p in os.listdir(path) if p.endswith(".dcm")]) == mr.n_instances
    assert progress and max(progress) == mr.n_instances
    qtbot.waitUntil(lambda: _idle(dialog), timeout=30000)
    assert dialog.result() == dialog.DialogCode.Accepted


def test_cancel_keeps_nothing_and_the_dialog_stays_usable(qtbot, dialog, orthanc, pacs_settings):
    started = threading.Event()
    real = dialog.retrieve_fn

    def slow_retrieve(*args, cancel=None, **kw):  # waits for the Cancel click, then runs the real retrieve
        started.set()
        assert cancel.wait(30)
        return real(*args, cancel=cancel, **kw)

    dialog.retrieve_fn = slow_retrieve
    dialog.patient_id.setText("P002")
    dialog.search()
    qtbot.waitUntil(lambda: _idle(dialog) and dialog.study_table.rowCount() == 1, timeout=60000)
    dialog.study_table.selectRow(0)
    qtbot.waitUntil(lambda: _idle(dialog) and dialog.series_table.rowCount() == 1, timeout=60000)
    job = dialog.retrieve()
    assert job is not None and dialog.cancel_button.isEnabled() and not dialog.retrieve_button.isEnabled()
    assert started.wait(30)
    with qtbot.waitSignal(job.cancelled, timeout=30000):
        qtbot.mouseClick(dialog.cancel_button, qtbot_button())
    qtbot.waitUntil(lambda: _idle(dialog), timeout=30000)
    assert "cancelled" in dialog.status.text()
    assert not pacs_settings.cache_root().exists() or not list(pacs_settings.cache_root().glob("*/*/*/*.dcm"))
    assert dialog.retrieve_button.isEnabled() and dialog.result() != dialog.DialogCode.Accepted


def test_dead_server_is_one_clear_line(qtbot, tmp_path):
    from seg_app.gui.pacs_dialog import PacsDialog

    port = free_port()
    node = pacs.PacsNode(name="down", dicomweb_url=f"http://127.0.0.1:{port}/dicom-web", retries=0, timeout_s=5)
    dlg = PacsDialog(settings=pacs.PacsSettings(nodes={"down": node}, cache_dir=str(tmp_path)))
    qtbot.addWidget(dlg)
    dlg.search()
    qtbot.waitUntil(lambda: _idle(dlg) and bool(dlg.status.text()) and "Searching" not in dlg.status.text(), timeout=60000)
    assert "PACS node 'down'" in dlg.status.text() and "cannot be reached" in dlg.status.text()
    assert dlg.study_table.rowCount() == 0


def test_missing_settings_are_shown_not_raised(qtbot, tmp_path, monkeypatch):
    from seg_app.gui.pacs_dialog import PacsDialog

    monkeypatch.setenv("SEG_APP_PACS_SETTINGS", str(tmp_path / "missing.json"))
    dlg = PacsDialog()
    qtbot.addWidget(dlg)
    assert "No PACS settings file" in dlg.status.text() and not dlg.search_button.isEnabled()


def qtbot_button():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_file_menu_opens_the_dialog_and_a_retrieved_series_opens_in_the_window(qtbot, orthanc, pacs_settings, make_window):
    from seg_app.gui.workers import running_jobs

    win = make_window()
    act = win.menus.act_open_pacs
    names = [a.text() for a in win.menus.file_menu.actions()]
    opening = names[: names.index("Recent files")]  # the File menu's open group
    assert act.text() in opening and names.index(act.text()) > names.index("Open DICOM &folder...")
    act.trigger()
    dlg = win.pacs_dialog
    assert dlg.isVisible() and dlg.node_box.currentText() == "orthanc"
    mr = orthanc.extra["studies"]["mr"]
    dlg.patient_id.setText("P001")
    dlg.search()
    qtbot.waitUntil(lambda: _idle(dlg) and dlg.study_table.rowCount() == 1, timeout=60000)
    dlg.study_table.selectRow(0)
    qtbot.waitUntil(lambda: _idle(dlg) and dlg.series_table.rowCount() == 1, timeout=60000)
    dlg.series_table.selectRow(0)
    dlg.retrieve()
    qtbot.waitUntil(lambda: win.volume is not None and win.load_job is None, timeout=120000)
    assert win.volume.series_uid == mr.series_uid and win.volume.shape == (24, 24, 6)
    qtbot.waitUntil(lambda: not running_jobs(), timeout=30000)
