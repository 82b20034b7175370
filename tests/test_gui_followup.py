"""Tools > Follow-up...: two time points of one (synthetic) patient side by side, with the change table.

The case is small (40 x 40 x 30 voxels of 2 mm): an analytic "head" (ellipsoid with smooth blobs) with two
spherical lesions; the follow-up is the same anatomy moved by a known rigid transform (3 degrees, 4 mm) and
stored on another grid (first axis flipped, origin shifted), lesion A grown from 8 to 10 mm radius and a
new lesion C. Images and masks are drawn analytically on each grid (no resampling error). Scans are DICOM
series (patient IDs compared), masks NIfTI label maps on each scan's grid.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from gui_fixtures import no_leftover_threads, open_and_wait, wait_measurements  # noqa: F401

from seg_app.core.followup import DISCLAIMER_SUGGESTION
from transforms import rigid_matrix as _rigid

pytestmark = [pytest.mark.gui, pytest.mark.filterwarnings("ignore::UserWarning")]

SHAPE = (40, 40, 30)
BASE_AFFINE = np.array([[2.0, 0, 0, -40.0], [0, 2.0, 0, -40.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1.0]])
A, B, C = np.array([12.0, 8.0, 4.0]), np.array([-14.0, -10.0, -6.0]), np.array([-10.0, 16.0, 10.0])
R_A, R_A_GROWN, R_B, R_C = 8.0, 10.0, 6.0, 5.0
BLOBS = [((15.0, -12.0, 8.0), 9.0, 60.0), ((-18.0, 14.0, -5.0), 11.0, -40.0), ((0.0, 20.0, 12.0), 7.0, 50.0),
         ((-5.0, -22.0, 0.0), 8.0, 35.0)]


#: baseline anatomy -> follow-up scanner coordinates
TRUE = _rigid(3.0, (0.2, -0.1, 1.0), (2.4, -2.0, 2.5))


def _anatomy(affine: np.ndarray, to_anatomy: np.ndarray) -> np.ndarray:
    idx = np.indices(SHAPE, dtype=np.float64).reshape(3, -1).T
    m = to_anatomy @ affine
    return (idx @ m[:3, :3].T + m[:3, 3]).reshape(*SHAPE, 3)


def _draw(p: np.ndarray, lesions) -> tuple[np.ndarray, np.ndarray]:
    """Image and label map of the analytic head at anatomy points ``p``."""
    head = (p[..., 0] / 34) ** 2 + (p[..., 1] / 34) ** 2 + (p[..., 2] / 26) ** 2 <= 1.0
    img = np.where(head, 100.0 + 0.8 * p[..., 0] - 0.5 * p[..., 2], 0.0)
    for centre, sigma, amp in BLOBS:
        img += head * amp * np.exp(-np.sum((p - centre) ** 2, -1) / (2 * sigma**2))
    labels = np.zeros(SHAPE, np.uint8)
    for centre, radius in lesions:
        inside = np.sum((p - centre) ** 2, -1) <= radius**2
        img[inside] = 260.0
        labels[inside] = 1
    return img.astype(np.float32), labels


def _follow_affine() -> np.ndarray:
    f = BASE_AFFINE.copy()
    f[:, 0] *= -1
    f[:3, 3] = BASE_AFFINE[:3, 3] + BASE_AFFINE[:3, 0] * (SHAPE[0] - 1) + np.array([3.0, -1.0, 2.0])
    return f


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.volume import Volume

    d = tmp_path_factory.mktemp("gui_followup")
    bimg, blab = _draw(_anatomy(BASE_AFFINE, np.eye(4)), [(A, R_A), (B, R_B)])
    faff = _follow_affine()
    fimg, flab = _draw(_anatomy(faff, np.linalg.inv(TRUE)), [(A, R_A_GROWN), (B, R_B), (C, R_C)])
    write_dicom_series(Volume(bimg, BASE_AFFINE, modality="MR"), d / "baseline", patient_id="P001", study_date="20240101")
    for name, pid in (("followup", "P001"), ("other_patient", "P002")):
        write_dicom_series(Volume(fimg, faff, modality="MR"), d / name, patient_id=pid, study_date="20240601")
    nib.save(nib.Nifti1Image(blab, BASE_AFFINE), d / "baseline_mask.nii.gz")
    nib.save(nib.Nifti1Image(flab, faff), d / "followup_mask.nii.gz")
    (d / "broken.nii.gz").write_bytes(b"not a scan" * 20)
    voxel_ml = 0.008
    base_a = int(np.sum(blab[np.sum((_anatomy(BASE_AFFINE, np.eye(4)) - A) ** 2, -1) <= 100]))  # lesion A's voxels
    grown_a = int(np.sum(flab[np.sum((_anatomy(faff, np.linalg.inv(TRUE)) - A) ** 2, -1) <= 150]))
    return {"dir": d, "growth_percent": 100.0 * (grown_a - base_a) / base_a, "a_ml": base_a * voxel_ml,
            "a_grown_ml": grown_a * voxel_ml}


@pytest.fixture
def light_window(qtbot, tmp_path):
    """Factory of main windows without a model (the masks are given; no torch needed)."""
    from PySide6.QtCore import QSettings

    from seg_app.gui.main_window import MainWindow

    windows = []

    def make():
        win = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat), model_path="")
        win.confirm_discard = lambda action: True
        qtbot.addWidget(win)
        win.resize(1000, 700)
        win.show()
        windows.append(win)
        return win

    yield make
    for win in windows:
        wait_measurements(win)
        win.setWindowModified(False)
        win.close()


def _open_baseline(make, case):
    """A main window with the baseline scan and its mask open (the follow-up window's default baseline)."""
    from seg_app.gui.workers import wait_for

    win = make()
    open_and_wait(win, case["dir"] / "baseline")
    job = win.open_segmentation(str(case["dir"] / "baseline_mask.nii.gz"))
    assert job is not None and wait_for(job, timeout_s=300)
    wait_measurements(win)
    assert win.session.labels is not None
    return win


def _assess(dlg, followup, mask):
    from seg_app.gui.workers import wait_for

    dlg.followup_scan_edit.setText(str(followup))
    dlg.followup_mask_edit.setText(str(mask))
    job = dlg.start()
    assert job is not None
    assert wait_for(job, timeout_s=300)
    return dlg


def _cells(dlg) -> list[list[str]]:
    t = dlg.change_table
    return [[t.item(r, c).text() for c in range(t.columnCount())] for r in range(t.rowCount())]


def test_followup_window_change_table_responses_linked_views_and_report(light_window, case, tmp_path, qtbot):
    from seg_app.gui.followup_window import CHANGE_COLUMNS, NEW_LESION_BRUSH, show_followup
    from seg_app.gui.workers import wait_for

    win = _open_baseline(light_window, case)
    win.menus.act_followup.trigger()  # Tools > Follow-up...
    dlg = win.followup_window
    assert dlg is show_followup(win) and dlg.isVisible()
    assert not dlg.followup_segment_check.isEnabled()  # no model loaded: masks only
    assert dlg.baseline_pane.stack.currentWidget() is dlg.baseline_pane.placeholder  # nothing to show yet
    _assess(dlg, case["dir"] / "followup", case["dir"] / "followup_mask.nii.gz")
    study = dlg.study
    assert study is not None and study.result.registration.method == "mutual information"
    assert dlg.baseline_pane.stack.currentWidget() is dlg.baseline_pane.view
    # the change table: two baseline lesions matched (A grown), one new, then the total
    rows = _cells(dlg)
    status = {r[1] for r in rows}
    assert [r[0] for r in rows][-1] == "total" and len(rows) == 4
    assert "new" in status and sum(r[1] == "matched" for r in rows) == 2
    new_row = next(i for i, r in enumerate(rows) if r[1] == "new")
    assert dlg.change_table.item(new_row, 0).background().color() == NEW_LESION_BRUSH
    assert rows[new_row][CHANGE_COLUMNS.index("Base mL")] == "0.00"
    assert rows[new_row][CHANGE_COLUMNS.index("Volume %")] == "n/a"
    grown = max((r for r in rows[:-1] if r[1] == "matched"), key=lambda r: float(r[3]))
    growth = float(grown[CHANGE_COLUMNS.index("Volume %")].split()[0])
    assert growth == pytest.approx(case["growth_percent"], abs=0.1)
    assert float(grown[3]) == pytest.approx(case["a_ml"], abs=0.01)
    assert float(grown[4]) == pytest.approx(case["a_grown_ml"], abs=0.01)
    assert float(grown[CHANGE_COLUMNS.index("Follow LD mm")]) > float(grown[CHANGE_COLUMNS.index("Base LD mm")])
    assert grown[CHANGE_COLUMNS.index("Product %")].startswith("+")
    # responses: PD by both (new lesion), labelled a computed suggestion
    for label, name in ((dlg.recist_label, "RECIST 1.1"), (dlg.rano_label, "RANO 2.0")):
        assert name in label.text() and ": PD</b>" in label.text() and DISCLAIMER_SUGGESTION in label.text()
    # same patient ID: no identifier warning; the registration is shown with its numbers
    assert "patient" not in dlg.banner.text()
    assert "mutual information" in dlg.registration_label.text() and "rotation" in dlg.registration_label.text()
    # linked views: a slice step on the follow-up view moves the baseline view too, and back
    from PySide6.QtCore import Qt

    before = dlg.baseline_state.cursor
    qtbot.keyClick(dlg.followup_pane.view, Qt.Key.Key_Up)
    assert dlg.baseline_state.cursor[2] == before[2] + 1 == dlg.followup_state.cursor[2]
    dlg.baseline_pane.slider.setValue(5)
    assert dlg.followup_state.cursor[2] == 4 == dlg.baseline_state.cursor[2]
    dlg.plane_combo.setCurrentIndex(1)  # coronal in both
    assert dlg.baseline_pane.plane == dlg.followup_pane.plane == "coronal"
    dlg.plane_combo.setCurrentIndex(0)
    # the new lesion's row puts the crosshair on it: follow-up overlay there, none in the baseline
    dlg.go_to_track(new_row)
    c = dlg.baseline_state.cursor
    assert dlg.followup_state.cursor == c
    assert dlg.followup_data.labels[c] > 0 and dlg.baseline_data.labels[c] == 0
    assert dlg.followup_pane.view.render_rgb() is not None
    # Save report: the files of seg-app followup
    job = dlg.save_report(str(tmp_path / "report"))
    assert job is not None and wait_for(job, timeout_s=300)
    out = tmp_path / "report"
    doc = json.loads((out / "followup.json").read_text())
    assert doc["format"] == "seg_app.followup" and doc["response"]["recist_1_1"]["category"] == "PD"
    assert [t["status"] for t in doc["tracks"]] == [t.status for t in study.result.tracks]
    csv_rows = list(csv.reader((out / "followup.csv").open()))
    assert csv_rows[-1][0] == "total" and len(csv_rows) == 5
    assert (out / "followup.png").stat().st_size > 10_000 and (out / "followup_labels_on_baseline.nii.gz").exists()
    # with View > Anonymise on, the report leaves paths, names, UIDs and dates out
    win.set_anonymise(True)
    job = dlg.save_report(str(tmp_path / "anonymous"))
    assert job is not None and wait_for(job, timeout_s=300)
    text = (tmp_path / "anonymous" / "followup.json").read_text()
    assert str(case["dir"]) not in text and "20240601" not in text and '"name": "anonymised"' in text


def test_identifier_warning_bad_file_and_landmarks(light_window, case, tmp_path):
    from seg_app.gui.followup_window import show_followup

    win = _open_baseline(light_window, case)
    dlg = show_followup(win)
    errors = []
    win.error_reported.connect(errors.append)
    # a bad follow-up file: an error box over the window, which stays usable
    _assess(dlg, case["dir"] / "broken.nii.gz", case["dir"] / "followup_mask.nii.gz")
    assert dlg.error_box is not None and dlg.error_box.isVisible() and errors
    assert dlg.study is None and dlg.assess_button.isEnabled() and not dlg.cancel_button.isEnabled()
    dlg.error_box.close()
    # no mask chosen: said at once, no job
    dlg.followup_mask_edit.setText("")
    assert dlg.start() is None and "mask" in errors[-1]
    # another patient's study, registered from landmark pairs (exact points through the true transform)
    pts = np.array([[0, 0, 0], [20, 0, 0], [0, 25, 0], [0, 0, 15]], float)
    moved = pts @ TRUE[:3, :3].T + TRUE[:3, 3]
    lm = tmp_path / "landmarks.csv"
    lm.write_text("".join(",".join(f"{v:.6f}" for v in (*p, *q)) + "\n" for p, q in zip(pts, moved)))
    dlg.landmarks_edit.setText(str(lm))
    _assess(dlg, case["dir"] / "other_patient", case["dir"] / "followup_mask.nii.gz")
    assert dlg.study is not None and dlg.banner.isVisible()
    assert "different patient ID" in dlg.banner.text().splitlines()[0]
    assert "P001" not in dlg.banner.text() and "P002" not in dlg.banner.text()
    reg = dlg.study.result.registration
    assert reg.method == "landmarks" and np.allclose(reg.matrix, TRUE, atol=1e-6)
    assert "landmark residual" in dlg.registration_label.text()
    # landmark pairs from the two crosshairs (views unlinked): follow-up point = registration of the baseline-grid point
    assert not dlg.add_pair_button.isEnabled()  # linked views: one crosshair, no pair to mark
    dlg.link_check.setChecked(False)
    assert dlg.add_pair_button.isEnabled()
    dlg.baseline_state.set_cursor((10, 12, 8))
    dlg.followup_state.set_cursor((11, 12, 8))
    assert dlg.baseline_state.cursor == (10, 12, 8)  # not linked any more
    dlg.add_pair_button.click()
    g = dlg.baseline_state.geometry
    p_base, p_follow = dlg.landmark_pairs[0]
    assert np.allclose(p_base, g.display_to_world((10, 12, 8)))
    assert np.allclose(p_follow, (TRUE @ np.append(g.display_to_world((11, 12, 8)), 1.0))[:3], atol=1e-5)
    assert dlg.pairs_label.text() == "1 landmark pair(s)" and dlg.clear_pairs_button.isEnabled()
    dlg.followup_scan_edit.setText(str(case["dir"] / "followup"))  # another follow-up: the pairs go
    assert dlg.landmark_pairs == [] and not dlg.clear_pairs_button.isEnabled()


class BlockingSegmenter:
    """Stands in for the model: one progress tick, then waits until Cancel (deterministic, no torch)."""

    built: list = []

    def __init__(self, checkpoint, device):
        BlockingSegmenter.built.append((checkpoint, device))

    def segment(self, volume, progress=None, cancel=None, **_):
        progress(1, 4)
        assert cancel.wait(300), "never cancelled"
        progress(2, 4)  # the job's progress callback raises Cancelled once cancel is set
        raise AssertionError("not cancelled")


def test_segment_followup_with_the_model_can_be_cancelled(light_window, case, qtbot):
    """Segmenting the follow-up runs in the window's job with progress; Cancel stops it and nothing is shown."""
    from types import SimpleNamespace

    from seg_app.gui.followup_window import show_followup
    from seg_app.gui.workers import wait_for

    win = _open_baseline(light_window, case)
    tumour = SimpleNamespace(value=1, name="tumour", color=(230, 60, 60))
    win.session.checkpoint = SimpleNamespace(path="model.pt", spec=SimpleNamespace(foreground_labels=[tumour]))  # "a model"
    dlg = show_followup(win)
    dlg.segmenter_factory = BlockingSegmenter
    assert dlg.followup_segment_check.isEnabled()
    dlg.followup_scan_edit.setText(str(case["dir"] / "followup"))
    dlg.followup_segment_check.setChecked(True)
    assert not dlg.followup_mask_edit.isEnabled()
    job = dlg.start()
    assert job is not None and dlg.cancel_button.isEnabled() and not dlg.assess_button.isEnabled()
    qtbot.waitUntil(lambda: dlg.progress.maximum() == 4, timeout=300_000)
    assert dlg.progress.value() == 1 and dlg.progress_label.text() == "Segmenting: window 1 of 4"
    assert BlockingSegmenter.built[-1][0] is win.session.checkpoint
    dlg.cancel()
    assert wait_for(job, timeout_s=300)
    assert dlg.study is None and dlg.progress_label.text() == "Cancelled."
    assert dlg.assess_button.isEnabled() and not dlg.cancel_button.isEnabled() and dlg.error_box is None
    win.session.checkpoint = None
