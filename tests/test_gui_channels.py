"""File > Open multi-sequence study...: the channel dialog proposes the mapping, the user changes it, the study
opens with one channel per sequence on the reference grid (offscreen Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from gui_fixtures import gui_data, make_scan_array, make_window, no_leftover_threads  # noqa: F401 - fixtures
from seg_app.core.multiseq import Candidate, match_channels

pytestmark = pytest.mark.gui


def _c(desc: str, uid: str) -> Candidate:
    return Candidate("/study", uid, desc, summary=f"{desc} [{uid}]")


def test_dialog_shows_the_proposal_and_the_user_changes_it(qtbot):
    from seg_app.gui.channel_dialog import ChannelDialog

    cands = [_c("Ax T1 SE", "1"), _c("AX T1 POST GD", "2"), _c("COR T1 POST GD", "3"), _c("AX T2 FLAIR", "4")]
    match = match_channels(["T1w", "T1c", "FLAIR"], cands)
    dlg = ChannelDialog(["T1w", "T1c", "FLAIR"], cands, match, folder="study")
    qtbot.addWidget(dlg)
    ok = dlg.buttons.button(dlg.buttons.StandardButton.Ok)
    # proposal: T1w and FLAIR matched, T1c ambiguous (two post-contrast series) -> OK disabled
    assert dlg.combos["T1w"].currentText() == "Ax T1 SE" and dlg.combos["FLAIR"].currentText() == "AX T2 FLAIR"
    assert dlg.combos["T1c"].currentIndex() == 0 and "ambiguous" in dlg.notes["T1c"].text()
    assert not ok.isEnabled() and "T1c" in dlg.problem.text()
    dlg.choose("T1c", cands[2])
    assert ok.isEnabled() and dlg.mapping()["T1c"].series_uid == "3" and dlg.notes["T1c"].text() == "chosen by you"
    dlg.combos["FLAIR"].setCurrentIndex(3)  # the same series twice is refused
    assert not ok.isEnabled() and "several channels" in dlg.problem_text()
    dlg.choose("FLAIR", cands[3])
    dlg.reference_combo.setCurrentText("T1c")
    assert ok.isEnabled() and dlg.reference() == "T1c"
    assert {ch: c.series_uid for ch, c in dlg.mapping().items()} == {"T1w": "1", "T1c": "3", "FLAIR": "4"}


@pytest.fixture
def study(tmp_path):
    """Two DICOM series of one frame of reference, and a 2-channel model (T1w, T1c)."""
    from checkpoints import make_tiny_checkpoint
    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.spec import InferenceSpec
    from seg_app.core.volume import Volume

    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    t1 = make_scan_array((24, 20, 12), seed=1)
    write_dicom_series(Volume(t1, aff, modality="MR"), tmp_path / "study" / "a", series_description="Ax T1 SE",
                       series_number=1, frame_of_reference_uid="1.2.3.4")
    write_dicom_series(Volume(t1 * 2 + 50, aff, modality="MR"), tmp_path / "study" / "b",
                       series_description="AX T1 POST GD", series_number=2, frame_of_reference_uid="1.2.3.4")
    ckpt = make_tiny_checkpoint(tmp_path / "two.pt", in_channels=2, spacing=(1.0, 1.0, 1.0),
                                inference=InferenceSpec(roi_size=(16, 16, 16), overlap=0.5, sw_batch_size=1))
    return tmp_path / "study", ckpt, t1


def test_open_study_with_a_changed_mapping_then_switch_channels_and_segment(make_window, study, qtbot):
    from gui_fixtures import segment_and_wait
    from seg_app.gui.channel_dialog import open_study
    from seg_app.gui.workers import wait_for

    folder, ckpt, t1 = study
    win = make_window(model=str(ckpt))
    assert win.menus.act_open_study.text().startswith("Open multi-sequence")
    job = open_study(win, str(folder))
    assert job is not None and wait_for(job, timeout_s=60)
    qtbot.waitUntil(lambda: win.channel_dialog is not None, timeout=5000)
    dlg = win.channel_dialog
    assert dlg.mapping()["T1w"].description == "Ax T1 SE" and dlg.mapping()["T1c"].description == "AX T1 POST GD"
    by_desc = {c.description: c for c in dlg.candidates}
    dlg.choose("T1w", by_desc["AX T1 POST GD"])  # the user swaps the two (e.g. mislabelled series)
    dlg.choose("T1c", by_desc["Ax T1 SE"])
    dlg.reference_combo.setCurrentText("T1c")
    dlg.accept()
    qtbot.waitUntil(lambda: win.study_job is not None or win.volume is not None, timeout=5000)
    if win.study_job is not None:
        assert wait_for(win.study_job, timeout_s=60)
    qtbot.waitUntil(lambda: win.volume is not None and win.volume.n_channels == 2, timeout=10000)
    vol = win.volume
    assert vol.channel_names == ("T1w", "T1c") and vol.series_description == "Ax T1 SE"  # reference: T1c's series
    np.testing.assert_allclose(vol.array[0], t1 * 2 + 50, atol=0.5)  # the swapped mapping
    np.testing.assert_allclose(vol.array[1], t1, atol=0.5)
    assert [r["method"] for r in vol.meta["channels"]] == ["same-frame", "identity"]
    # the viewer's channel switcher: both sequences, the display follows
    assert win.channel_combo.count() == 2 and win.channel_combo.isEnabled()
    win.channel_combo.setCurrentIndex(1)
    assert win.state.channel == 1
    np.testing.assert_array_equal(np.asarray(win.data.image), win.state.geometry.view(vol.array[1]))
    # View > Checkerboard with the reference channel: T1w (shown) and T1c (reference) in alternating blocks
    from seg_app.core.multiseq import checkerboard

    win.channel_combo.setCurrentIndex(0)
    assert win.menus.act_checkerboard.isEnabled()
    win.menus.act_checkerboard.setChecked(True)
    expected = win.state.geometry.view(checkerboard(vol.array[0], vol.array[1]))
    np.testing.assert_allclose(np.asarray(win.data.image), expected)
    win.channel_combo.setCurrentIndex(1)  # another channel: the checkerboard goes off
    assert not win.menus.act_checkerboard.isChecked()
    np.testing.assert_array_equal(np.asarray(win.data.image), win.state.geometry.view(vol.array[1]))
    segment_and_wait(win)
    assert win.labels is not None and win.labels.shape == vol.shape
