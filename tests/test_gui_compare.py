"""Tools > Compare with mask...: the open mask (A) against a second mask file (B) of the same scan, as a
metrics table, a lesion table and an agreement overlay (both / only A / only B in three colours) on a slice
view that shares the main window's crosshair."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from gui_fixtures import SCAN_AFFINE, SCAN_SHAPE, no_leftover_threads, write_nifti  # noqa: F401

from seg_app.core.compare import compare_label_maps

pytestmark = [pytest.mark.gui, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture
def window(qtbot, tmp_path):
    """A main window without a model (none is needed to compare masks) on the test scan."""
    from PySide6.QtCore import QSettings

    from seg_app.gui.main_window import MainWindow
    from seg_app.gui.workers import wait_for

    scan = write_nifti(tmp_path / "scan.nii.gz")
    win = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat), model_path="")
    win.confirm_discard = lambda action: True
    qtbot.addWidget(win)
    win.resize(1000, 700)
    win.show()
    job = win.open_path(str(scan))
    assert job is not None and wait_for(job, timeout_s=300)
    yield win
    for dlg in (getattr(win, "compare_window", None),):
        if dlg is not None:
            dlg.close()
    while win.measure_job is not None:
        wait_for(win.measure_job, timeout_s=300)
    win.setWindowModified(False)
    win.close()


def _masks():
    a = np.zeros(SCAN_SHAPE, np.uint8)
    b = np.zeros(SCAN_SHAPE, np.uint8)
    a[10:20, 10:20, 10:16] = 1  # lesion 1 in both, B shifted by 3 voxels along i
    b[13:23, 10:20, 10:16] = 1
    a[30:34, 25:29, 20:24] = 1  # only in A
    b[5:8, 30:33, 25:28] = 1  # only in B
    return a, b


def _wait(job):
    from seg_app.gui.workers import wait_for

    assert job is not None and wait_for(job, timeout_s=300)


def _display(win, ijk):
    """Display indices of a source voxel."""
    return tuple(int(v) for v in win.state.geometry.from_source_index(ijk))


def test_compare_table_and_agreement_overlay(window, tmp_path):
    from seg_app.gui.compare_window import LABEL_COLUMNS
    from seg_app.gui.followup_study import AGREEMENT_COLORS

    win = window
    a, b = _masks()
    win.set_labels(win.volume.with_array(a[None]))
    path = tmp_path / "reader_b.nii.gz"
    nib.save(nib.Nifti1Image(b, SCAN_AFFINE), str(path))
    win.menus.act_compare.trigger()  # Tools > Compare with mask...
    dlg = win.compare_window
    assert dlg.isVisible()
    _wait(dlg.start(str(path)))
    expected = compare_label_maps(a, b, win.volume.spacing, win.volume.voxel_volume_ml).as_dict()
    t = dlg.label_table
    assert t.rowCount() == 1
    assert float(t.item(0, LABEL_COLUMNS.index("Dice")).text()) == pytest.approx(expected["labels"][0]["dice"], abs=1e-3)
    assert float(t.item(0, LABEL_COLUMNS.index("A (mL)")).text()) == pytest.approx(expected["labels"][0]["a_ml"], abs=0.01)
    statuses = sorted(dlg.lesion_table.item(r, 0).text() for r in range(dlg.lesion_table.rowCount()))
    assert statuses == ["only A", "only B", "paired"]
    assert "1 paired, 1 only in A, 1 only in B" in dlg.status.text()
    # the agreement overlay: both / only A / only B at the expected voxels, in their colours
    labels = dlg.data.labels
    cases = {(15, 15, 12): 1, (11, 15, 12): 2, (21, 15, 12): 3, (31, 26, 21): 2, (6, 31, 26): 3, (40, 5, 5): 0}
    for ijk, value in cases.items():
        assert labels[_display(win, ijk)] == value, ijk
    agree = np.zeros(SCAN_SHAPE, np.uint8)
    agree[(a > 0) & (b > 0)], agree[(a > 0) & (b == 0)], agree[(a == 0) & (b > 0)] = 1, 2, 3
    assert np.array_equal(labels, win.state.geometry.view(agree))
    # the shared crosshair: put it in the slice through both lesions and read the rendered colours
    win.state.set_cursor(_display(win, (15, 15, 12)))
    view = dlg.pane.view
    from seg_app.gui.viewer_state import display_to_screen

    rgb_on = view.render_rgb()
    for ijk in ((15, 15, 12), (11, 15, 12), (21, 15, 12)):
        row, col = display_to_screen("axial", win.state.geometry.shape, _display(win, ijk))
        px = rgb_on[int(row), int(col)].astype(int)
        color = np.array(AGREEMENT_COLORS[cases[ijk]])
        dominant = int(np.argmax(color))  # green for both, red+blue for only A, blue for only B
        assert px[dominant] >= px.min() + 40, (ijk, px)
    # toggled off: the plain scan
    dlg.overlay_check.setChecked(False)
    assert dlg.data.labels is None
    rgb_off = view.render_rgb()
    assert not np.array_equal(rgb_on, rgb_off)
    dlg.overlay_check.setChecked(True)
    assert np.array_equal(view.render_rgb(), rgb_on)
    # the compare view moves the main views' crosshair (one shared state)
    view.state.step_slice("axial", 1)
    assert win.state.cursor[2] == _display(win, (15, 15, 12))[2] + 1
    # an edit of mask A makes the comparison stale: said, and Compare again shows the new numbers
    from gui_fixtures import wait_measurements

    wait_measurements(win)
    assert len(win.session.lesions) == 2
    win.delete_lesion(min(win.session.lesions, key=lambda les: les.volume_ml))
    wait_measurements(win)
    assert "changed since this comparison" in dlg.status.text()


def test_bad_mask_file_is_an_error_and_the_window_stays_usable(window, tmp_path):
    win = window
    a, b = _masks()
    from seg_app.gui.compare_window import show_compare

    dlg = show_compare(win)
    assert dlg.start(str(tmp_path / "none.nii.gz")) is None and "mask" in dlg.status.text()  # no mask A yet
    win.set_labels(win.volume.with_array(a[None]))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a mask" * 30)
    _wait(dlg.start(str(bad)))
    assert dlg.error_box is not None and dlg.error_box.isVisible() and dlg.outcome is None
    assert dlg.compare_button.isEnabled()
    dlg.error_box.close()
    wrong = tmp_path / "wrong_grid.nii.gz"
    nib.save(nib.Nifti1Image(b, SCAN_AFFINE @ np.diag([1, 1, 1, 1.0]) + np.array([[0, 0, 0, 500.0]] * 3 + [[0, 0, 0, 0]])),
             str(wrong))  # far away in scanner space: another scan's mask
    _wait(dlg.start(str(wrong)))
    assert dlg.error_box is not None and dlg.outcome is None
    dlg.error_box.close()
    good = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(b, SCAN_AFFINE), str(good))
    _wait(dlg.start(str(good)))
    assert dlg.outcome is not None and dlg.label_table.rowCount() == 1
    # another scan opened: the comparison is dropped
    from seg_app.gui.workers import wait_for

    job = win.open_path(str(write_nifti(tmp_path / "other.nii.gz", seed=3)))
    assert job is not None and wait_for(job, timeout_s=300)
    assert dlg.outcome is None and dlg.data.labels is None and dlg.label_table.rowCount() == 0
