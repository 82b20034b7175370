"""The desktop app with real widgets (pytest-qt, offscreen): open, view, segment, edit, export, errors."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from seg_app.gui.workers import wait_for
from gui_fixtures import (  # noqa: F401 - fixtures
    gui_data,
    make_window,
    no_leftover_threads,
    open_and_wait,
    segment_and_wait,
    wait_measurements,
)

pytestmark = pytest.mark.gui


def _pt(p: QPointF) -> QPoint:
    return QPoint(int(round(p.x())), int(round(p.y())))


def test_open_nifti_shows_three_views(make_window, gui_data):
    win = make_window()
    open_and_wait(win, gui_data["scan"])
    assert win.volume is not None and win.volume.shape == (48, 40, 32)
    assert win.state.geometry.shape == (48, 40, 32)
    assert win.windowTitle().startswith("scan")
    for view in win.views.values():
        rgb = view.render_rgb()
        assert rgb is not None and rgb.std() > 0
    # physical aspect: axial shows 48 x 1.2 mm wide by 40 x 1 mm high
    r = win.views["axial"].image_rect()
    assert r.width() / r.height() == pytest.approx(57.6 / 40, rel=0.02)
    r = win.views["sagittal"].image_rect()
    assert r.width() / r.height() == pytest.approx(40 / 64, rel=0.02)
    assert win.recent_files()[0] == str(gui_data["scan"])
    assert "Research use only" in win.disclaimer.text()


def test_multi_series_dicom_folder_opens_through_picker(make_window, gui_data, qtbot):
    win = make_window()
    job = win.open_path(str(gui_data["dicom"]))
    assert wait_for(job, timeout_s=60)
    qtbot.waitUntil(lambda: win.series_picker is not None and win.series_picker.isVisible(), timeout=5000)
    dlg = win.series_picker
    assert dlg.table.rowCount() == 2
    # a middle-slice preview of each series beside its description
    assert all(not dlg.table.item(r, 1).icon().isNull() for r in range(2))
    descriptions = [dlg.table.item(r, 1).text() for r in range(2)]
    row = descriptions.index("FLAIR axial")
    dlg.table.selectRow(row)
    uid = dlg.series[row].series_uid
    dlg.accept()
    assert win.load_job is not None
    assert wait_for(win.load_job, timeout_s=60)
    assert win.volume is not None and win.volume.series_uid == uid
    assert win.volume.shape == (24, 20, 8)


def test_crosshair_links_views_mouse_and_keys(make_window, gui_data, qtbot):
    win = make_window()
    open_and_wait(win, gui_data["scan"])
    axial, coronal, sagittal = win.views["axial"], win.views["coronal"], win.views["sagittal"]
    target = (10, 30, win.state.cursor[2])
    qtbot.mouseClick(axial, Qt.MouseButton.LeftButton, pos=_pt(axial.display_to_widget(target)))
    assert win.state.cursor == target
    # the other views now cut through the clicked point and draw the crosshair there
    assert coronal.render_rgb() is not None
    assert win.state.cursor[coronal.normal] == 30 and win.state.cursor[sagittal.normal] == 10
    c = coronal.display_to_widget(win.state.cursor)
    d = coronal.widget_to_display(c)
    assert tuple(np.round(d).astype(int)) == target
    # click in the sagittal view moves the axial slice
    qtbot.mouseClick(sagittal, Qt.MouseButton.LeftButton, pos=_pt(sagittal.display_to_widget((10, 5, 20))))
    assert win.state.cursor == (10, 5, 20)
    # keys and wheel change the slice of the focused view
    axial.setFocus()
    qtbot.keyClick(axial, Qt.Key.Key_Up)
    assert win.state.cursor[2] == 21
    qtbot.keyClick(axial, Qt.Key.Key_PageDown)
    assert win.state.cursor[2] == 11
    # status bar reports voxel, RAS and value under the crosshair
    assert "RAS" in win.status_position.text() and f"Axial 12/{win.state.geometry.shape[2]}" in win.status_position.text()
    # maximise toggle
    win.toggle_maximise("coronal")
    assert not axial.isVisible() and coronal.isVisible()
    win.toggle_maximise("coronal")
    assert axial.isVisible()


def test_zoom_keeps_point_under_mouse(make_window, gui_data):
    win = make_window()
    open_and_wait(win, gui_data["scan"])
    view = win.views["axial"]
    pos = view.display_to_widget((12, 8, 0)) + QPointF(3, 2)
    before = view.widget_to_display(pos)
    view.zoom_about(pos, 2.5)
    after = view.widget_to_display(pos)
    assert view.zoom == pytest.approx(2.5)
    assert np.allclose(before, after, atol=1e-6)


def test_window_presets_change_rendered_pixels(make_window, gui_data):
    win = make_window()
    open_and_wait(win, gui_data["scan"])
    view = win.views["axial"]
    frames = {}
    names = [win.preset_combo.itemText(i) for i in range(win.preset_combo.count())]
    assert len(names) >= 3
    for name in names:
        win.apply_preset(name)
        frames[name] = view.render_rgb().copy()
        assert win.preset_combo.currentText() == name
    assert not np.array_equal(frames[names[0]], frames[names[1]])
    assert not np.array_equal(frames[names[1]], frames[names[2]])


def test_segmentation_fills_table_and_row_click_moves_crosshair(make_window, gui_data, qtbot):
    win = make_window()
    open_and_wait(win, gui_data["scan"])
    assert win.segment_button.isEnabled()
    job = win.start_segmentation()
    assert not win.segment_button.isEnabled() and win.cancel_button.isEnabled()
    progress = []
    job.progressed.connect(lambda d, t: progress.append((d, t)))
    assert wait_for(job, timeout_s=120)
    wait_measurements(win)
    assert progress and progress[-1][0] == progress[-1][1]
    assert win.segment_button.isEnabled() and not win.cancel_button.isEnabled()
    assert win.labels is not None and win.labels.shape == win.volume.shape
    assert win.probabilities is not None
    assert win.isWindowModified()
    model = win.lesion_table.model
    assert len(win.lesions) > 0
    assert model.rowCount() == len(win.lesions) + len(win.totals)
    # click the first lesion row: crosshair goes to its centroid
    table = win.lesion_table.view
    first = win.lesion_table.proxy.index(0, 0)
    lesion = model.row_object(win.lesion_table.proxy.mapToSource(first).row())[1]
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=table.visualRect(first).center())
    expected = np.round(win.state.geometry.world_to_display(lesion.centroid_ras_mm)).astype(int)
    expected[2] = win.recist_slice_number(lesion) - 1  # the axial view shows the slice where RECIST was measured
    assert win.state.cursor == tuple(int(v) for v in expected)
    # totals rows stay at the bottom whatever the sort order
    for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
        table.sortByColumn(2, order)
        last = win.lesion_table.proxy.index(model.rowCount() - 1, 0)
        assert last.data().startswith("Total")
    # overlay settings change the frame
    view = win.views["axial"]
    win.go_to_lesion(win.lesions[0])
    filled = view.render_rgb().copy()
    win.outline_check.setChecked(True)
    assert not np.array_equal(filled, view.render_rgb())
    win.overlay_check.setChecked(False)
    hidden = view.render_rgb().copy()
    win.overlay_check.setChecked(True)
    win.outline_check.setChecked(False)
    win.heatmap_check.setChecked(True)
    assert not np.array_equal(hidden, view.render_rgb())


def test_cancel_really_stops_segmentation(make_window, gui_data, qtbot, monkeypatch):
    """Deterministic: after the first progress report the worker waits for the cancel request, so the
    run can never finish before Cancel is clicked (no race with a fast model)."""
    import time

    import seg_app.core.inference as inference
    from seg_app.core.sliding_window import is_cancelled

    original = inference.blend_windows

    def blocking_blend(network, *args, progress=None, cancel=None, **kwargs):
        def report_then_wait(done, total):
            if progress is not None:
                progress(done, total)
            for _ in range(6000):  # bounded: 60 s at most
                if is_cancelled(cancel):
                    break
                time.sleep(0.01)

        return original(network, *args, progress=report_then_wait, cancel=cancel, **kwargs)

    monkeypatch.setattr(inference, "blend_windows", blocking_blend)
    win = make_window()
    open_and_wait(win, gui_data["scan"])
    job = win.start_segmentation()
    with qtbot.waitSignal(job.progressed, timeout=60000):
        pass
    qtbot.mouseClick(win.cancel_button, Qt.MouseButton.LeftButton)
    assert job.cancel_event.is_set()
    assert wait_for(job, timeout_s=60)
    assert win.labels is None and win.lesions == []
    assert win.seg_job is None and win.segment_button.isEnabled()
    assert not win.isWindowModified()
    # the app is still usable: a second run completes
    monkeypatch.setattr(inference, "blend_windows", original)
    segment_and_wait(win)
    assert win.labels is not None


def test_paint_then_undo_restores_mask_exactly(make_window, gui_data, qtbot):
    win = make_window()
    open_and_wait(win, gui_data["scan"])
    segment_and_wait(win)
    original = win.labels.array.copy()
    view = win.views["axial"]
    # paint with the mouse
    win.set_tool("paint")
    win.radius_spin.setValue(3.0)
    a, b = view.display_to_widget((5, 5, win.state.cursor[2])), view.display_to_widget((15, 12, win.state.cursor[2]))
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=_pt(a))
    qtbot.mouseMove(view, pos=_pt((a + b) / 2))
    qtbot.mouseMove(view, pos=_pt(b))
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=_pt(b))
    painted = win.labels.array.copy()
    assert (painted != original).sum() > 10
    assert win.act_undo.isEnabled()
    # more strokes, incl. erase and a 3D sphere: 22 in total
    for n in range(20):
        win.sphere_check.setChecked(n % 4 == 0)
        win.paint_stroke("coronal", [(10 + n, 20, 10), (12 + n, 20, 20)], erase=n % 3 == 0)
    assert win.editor is not None and len(win.editor._undo) >= 21
    for _ in range(20):
        win.undo()
    assert np.array_equal(win.labels.array, painted)
    win.act_undo.trigger()  # Ctrl+Z action
    assert np.array_equal(win.labels.array, original)
    win.act_redo.trigger()
    assert np.array_equal(win.labels.array, painted)
    # measurements follow the edits (recomputed in the background)
    wait_measurements(win)
    assert sum(les.voxel_count for les in win.lesions) == int((win.labels.array > 0).sum())


def test_paint_without_segmentation_and_save_aligned_nifti(make_window, gui_data, tmp_path, monkeypatch):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    assert win.checkpoint is None and not win.segment_button.isEnabled()
    win.paint_stroke("axial", [(20, 18, 15)])
    assert win.labels is not None and win.labels.array.sum() > 0 and win.isWindowModified()
    assert "*" in win.windowTitle() or win.isWindowModified()
    out = tmp_path / "exports" / "mask.nii.gz"
    out.parent.mkdir()
    asked = {}

    def fake_save(title, default_name, flt):
        asked["default"] = default_name
        return str(out)

    monkeypatch.setattr(win, "ask_save_path", fake_save)
    win.save_mask_dialog()
    assert win.save_job is not None
    assert wait_for(win.save_job, timeout_s=60)
    assert asked["default"] == "scan_mask.nii.gz"
    img = nib.load(str(out))
    src = nib.load(str(gui_data["scan"]))
    assert np.allclose(img.affine, src.affine, atol=1e-5)
    assert img.shape == src.shape
    assert np.array_equal(np.asarray(img.dataobj), win.labels.array[0])
    assert not win.isWindowModified()
    assert win.settings.value("export_dir") == str(out.parent)
    # measurements as CSV and JSON
    wait_measurements(win)
    assert win.save_measurements(str(tmp_path / "m.csv"))
    assert win.save_measurements(str(tmp_path / "m.json"))
    doc = json.loads((tmp_path / "m.json").read_text())
    assert len(doc["lesions"]) == len(win.lesions) >= 1
    assert (tmp_path / "m.csv").read_text().count("\n") >= 2
    # screenshot of the views
    assert win.save_screenshot(str(tmp_path / "views.png"))
    assert (tmp_path / "views.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saving_over_the_source_is_refused(make_window, gui_data, qtbot):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [(20, 18, 15)])
    before = Path(gui_data["scan"]).read_bytes()
    with qtbot.waitSignal(win.error_reported, timeout=5000) as sig:
        job = win.save_mask(str(gui_data["scan"]))
        if job is not None:
            wait_for(job)
    assert "source" in sig.args[0]
    assert Path(gui_data["scan"]).read_bytes() == before
    assert win.isWindowModified()


def test_bad_file_and_bad_checkpoint_show_dialogs_and_app_still_works(make_window, gui_data, qtbot):
    from PySide6.QtWidgets import QMessageBox

    win = make_window()
    with qtbot.waitSignal(win.error_reported, timeout=30000) as sig:
        open_and_wait(win, gui_data["bad"])
    message = sig.args[0]
    assert message and "\n" not in message
    boxes = [b for b in win.findChildren(QMessageBox) if b.isVisible()]
    assert boxes and boxes[0].text() == message
    boxes[0].close()
    assert win.volume is None
    # a bad checkpoint: error dialog, the previous model stays
    previous = win.checkpoint
    with qtbot.waitSignal(win.error_reported, timeout=30000) as sig:
        job = win.load_model(str(gui_data["bad_ckpt"]))
        wait_for(job)
    assert "checkpoint" in sig.args[0].lower() or "model" in sig.args[0].lower()
    assert win.checkpoint is previous
    # still usable
    open_and_wait(win, gui_data["scan"])
    assert win.volume is not None
    segment_and_wait(win)
    assert win.labels is not None


def test_load_model_shows_model_card_and_about(make_window, gui_data):
    win = make_window(model="")
    assert win.checkpoint is None
    job = win.load_model(str(gui_data["ckpt"]), show_card=True)
    wait_for(job)
    assert win.checkpoint is not None
    assert win.model_card is not None and "tiny-test-model" in win.model_card.text.toPlainText()
    win.model_card.close()
    win.show_about()
    text = win.about.text.toPlainText()
    assert "PySide6" in text and "tiny-test-model" in text
    assert "not for clinical diagnosis" in win.about.findChildren(type(win.disclaimer))[0].text().lower()
    win.about.close()


def test_close_with_unsaved_edits_asks(make_window, gui_data, monkeypatch):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [(20, 18, 15)])
    asked = []
    monkeypatch.setattr(win, "confirm_discard", lambda action: asked.append(action) or False)
    win.close()
    assert asked and win.isVisible()
    monkeypatch.setattr(win, "confirm_discard", lambda action: True)
    win.close()
    assert not win.isVisible()


def test_closing_during_inference_cancels_and_waits(make_window, gui_data, qtbot):
    win = make_window()
    open_and_wait(win, gui_data["scan"])
    job = win.start_segmentation()
    with qtbot.waitSignal(job.progressed, timeout=60000):
        pass
    win.close()
    assert job.cancel_event.is_set()
    assert job.isFinished()
    assert not win.jobs or all(j.isFinished() for j in win.jobs)


def test_drop_and_recent_files(make_window, gui_data):
    from PySide6.QtCore import QMimeData, QUrl
    from PySide6.QtGui import QDropEvent

    win = make_window(model="")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(gui_data["scan"]))])
    ev = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    win.dropEvent(ev)
    assert win.load_job is not None
    wait_for(win.load_job)
    assert win.volume is not None
    actions = win.recent_menu.actions()
    assert actions and actions[0].text() == str(gui_data["scan"])


def test_scripted_screenshot_mode(gui_data, tmp_path, qapp):
    from PySide6.QtCore import QSettings
    from PySide6.QtGui import QImage

    from seg_app.gui.app import run_scripted

    out = tmp_path / "shot.png"
    args = argparse.Namespace(
        path=str(gui_data["scan"]), model=str(gui_data["ckpt"]), series=None, screenshot=str(out),
        segment=True, slice_fraction=None, verbose=False,
    )
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    assert run_scripted(args, qapp, settings) == 0
    img = QImage(str(out))
    assert (img.width(), img.height()) == (1400, 900)
    # a bad path exits 2 with a one-line error, no exception
    args.path = str(gui_data["bad"])
    assert run_scripted(args, qapp, settings) == 2
