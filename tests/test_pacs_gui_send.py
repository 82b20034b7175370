"""File > Send results to PACS... (seg_app.gui.pacs_send) against a real Orthanc: a DICOM series retrieved
from the node, a painted mask, SEG + SR written and sent in background jobs, then found in the study."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import io

import pydicom
import pytest

from gui_fixtures import gui_data, make_window, open_and_wait  # noqa: F401 - fixtures
from orthanc_fixture import free_port, orthanc, pacs_settings  # noqa: F401 - fixtures
from seg_app.core import pacs
from seg_app.gui.workers import running_jobs, wait_for

pytestmark = pytest.mark.gui


def _open_retrieved_series_with_mask(win, orthanc, pacs_settings):
    mr = orthanc.extra["studies"]["mr"]
    node = pacs_settings.node("orthanc")
    folder = pacs.retrieve(pacs_settings, node, mr.study_uid, mr.series_uid)[0]
    open_and_wait(win, folder, mr.series_uid)
    assert win.volume.series_uid == mr.series_uid
    win.paint_stroke("axial", [(12, 12, 3)])
    assert win.labels is not None and win.labels.array.sum() > 0
    return mr


def _prepare(win, settings=None):
    from seg_app.gui.pacs_send import send_results

    job = send_results(win, settings) if settings is not None else (win.menus.act_send_pacs.trigger() or win.pacs_write_job)
    assert job is not None
    assert wait_for(job, timeout_s=120)
    dlg = win.pacs_send_dialog
    assert dlg is not None and dlg.isVisible()
    files = list(dlg.files)
    assert [f.name.endswith(s) for f, s in zip(files, ("_seg.dcm", "_sr.dcm"))] == [True, True]
    assert all(f.exists() for f in files)
    return dlg, files


def _series_in_study(orthanc, study_uid):
    found = orthanc.rest("POST", "/tools/find", f'{{"Level": "Series", "Query": {{"StudyInstanceUID": "{study_uid}"}}}}'.encode())
    out = {}
    for sid in found:
        series = orthanc.rest("GET", f"/series/{sid}")
        iid = series["Instances"][0]
        ds = pydicom.dcmread(io.BytesIO(orthanc.rest("GET", f"/instances/{iid}/file")))
        out.setdefault(str(ds.Modality), []).append(ds)
    return out


@pytest.mark.parametrize("protocol", ["node default", "dimse"])
def test_send_seg_and_sr_to_the_node_the_scan_came_from(qtbot, make_window, orthanc, pacs_settings, protocol):
    win = make_window(model="")
    assert not win.menus.act_send_pacs.isEnabled()  # no scan yet
    mr = _open_retrieved_series_with_mask(win, orthanc, pacs_settings)
    assert win.menus.act_send_pacs.isEnabled()
    before = _series_in_study(orthanc, mr.study_uid)
    dlg, files = _prepare(win)
    # the confirmation names the patient, the study and the node the scan was retrieved from
    assert dlg.node_box.currentText() == "orthanc"
    assert "DOE JANE" in dlg.patient_label.text() and "P001" in dlg.patient_label.text()
    assert "2026-03-15" in dlg.study_label.text() and "MRI head" in dlg.study_label.text()
    dlg.protocol_box.setCurrentText(protocol)
    with qtbot.waitSignal(dlg.sent, timeout=120000) as sig:
        job = dlg.send()
        assert job is not None and dlg.cancel_button.isEnabled() and not dlg.send_button.isEnabled()
    assert sig.args[0] == "sent SEG + SR to orthanc (2 instances stored)"
    qtbot.waitUntil(lambda: not running_jobs(), timeout=30000)
    assert win.statusBar().currentMessage() == "sent SEG + SR to orthanc (2 instances stored)"
    assert not any(f.exists() for f in files)  # the temporary folder went with the dialog
    # Orthanc now holds one more SEG and one more SR in the study, both referencing the source series
    after = _series_in_study(orthanc, mr.study_uid)
    assert len(after.get("SEG", [])) == len(before.get("SEG", [])) + 1
    assert len(after.get("SR", [])) == len(before.get("SR", [])) + 1
    seg = next(ds for ds in after["SEG"] if ds.SOPInstanceUID not in {d.SOPInstanceUID for d in before.get("SEG", [])})
    sr = next(ds for ds in after["SR"] if ds.SOPInstanceUID not in {d.SOPInstanceUID for d in before.get("SR", [])})
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == mr.study_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == mr.series_uid
    evidence = {str(r.SeriesInstanceUID) for e in sr.CurrentRequestedProcedureEvidenceSequence
                for r in e.ReferencedSeriesSequence}
    assert {mr.series_uid, str(seg.SeriesInstanceUID)} <= evidence
    # the core finds them too
    modalities = {s.modality for s in pacs.find_series(pacs_settings.node("orthanc"), mr.study_uid)}
    assert {"MR", "SEG", "SR"} <= modalities


def test_send_to_a_dead_node_is_one_line_and_the_window_stays_usable(qtbot, make_window, orthanc, pacs_settings):
    win = make_window(model="")
    _open_retrieved_series_with_mask(win, orthanc, pacs_settings)
    down = pacs.PacsNode(name="down", dicomweb_url=f"http://127.0.0.1:{free_port()}/dicom-web", retries=0, timeout_s=5)
    settings = dataclasses.replace(pacs_settings, nodes={**pacs_settings.nodes, "down": down})
    dlg, _files = _prepare(win, settings)
    assert dlg.node_box.currentText() == "orthanc"
    dlg.node_box.setCurrentText("down")
    with qtbot.waitSignal(win.error_reported, timeout=60000) as sig:
        dlg.send()
    assert "PACS node 'down'" in sig.args[0] and "cannot be reached" in sig.args[0] and "\n" not in sig.args[0]
    qtbot.waitUntil(lambda: dlg.job is None, timeout=30000)
    assert dlg.isVisible() and dlg.send_button.isEnabled()  # choose another node, or close
    win.paint_stroke("axial", [(10, 10, 2)])  # the window is still usable
    dlg.reject()


def test_nifti_scan_is_refused(qtbot, make_window, gui_data):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [(20, 18, 15)])
    assert win.labels is not None
    assert not win.menus.act_send_pacs.isEnabled()
    from seg_app.gui.pacs_send import send_results

    with qtbot.waitSignal(win.error_reported, timeout=5000) as sig:
        assert send_results(win) is None
    assert "NIfTI" in sig.args[0] and win.pacs_write_job is None and win.pacs_send_dialog is None
