"""Issue 11, "the workstation a radiologist trusts": patient banner and anonymisation, view maximise,
status feedback, going to the largest lesion, layout at 1280x800, modality presets, docks, the unsaved
prompt, slice numbers, brush steps, menus and help, slice sliders, one-click lesion deletion, the
lesion table's columns and the RECIST calipers (pytest-qt, offscreen)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import csv
import json
import logging

import numpy as np
import pydicom
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt, QTimer
from PySide6.QtWidgets import QMessageBox

from gui_fixtures import (  # noqa: F401 - fixtures
    gui_data,
    make_scan_array,
    make_window,
    no_leftover_threads,
    open_and_wait,
    segment_and_wait,
    wait_measurements,
    write_nifti,
)

pytestmark = pytest.mark.gui

NAME, PID, ACCESSION = "Banner^Alice", "ID-424242", "ACC-9001"


def _pt(p: QPointF) -> QPoint:
    return QPoint(int(round(p.x())), int(round(p.y())))


def _dicom_with_patient(folder):
    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.volume import Volume

    files = write_dicom_series(Volume(make_scan_array((24, 20, 12), seed=3), np.diag([1.0, 1.0, 3.0, 1.0]), modality="MR"),
                               folder, series_description="FLAIR ax", patient_name=NAME, patient_id=PID,
                               study_date="20240501")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber = "19700101", "F", ACCESSION
        ds.save_as(f)
    return folder


def _paint_two_lesions(win):
    win.paint_stroke("axial", [(8, 8, 10), (16, 8, 10)])  # elongated: long axis along x
    win.paint_stroke("axial", [(36, 30, 20)])
    wait_measurements(win)
    assert len(win.lesions) == 2


# ---- 1. patient banner, title, exports, anonymise ---------------------------------------------
def test_patient_banner_title_exports_and_anonymise(make_window, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    win = make_window(model="")
    open_and_wait(win, _dicom_with_patient(tmp_path / "dicom"))
    corners = win.views["axial"].overlay_text()
    assert corners["top_left"][:2] == ["BANNER, Alice", f"ID {PID}"] and "F 54 y DOB 1970-01-01" in corners["top_left"]
    assert corners["top_right"] == ["Study 2024-05-01", f"Acc {ACCESSION}", "FLAIR ax"]
    assert win.windowTitle().startswith(f"BANNER, Alice (ID {PID}) - FLAIR ax")
    win.paint_stroke("axial", [(10, 10, 6)])
    wait_measurements(win)
    assert win.save_measurements(str(tmp_path / "m.csv")) and win.save_measurements(str(tmp_path / "m.json"))
    head = (tmp_path / "m.csv").read_text().splitlines()
    assert "# patient_name,\"BANNER, Alice\"" in head and f"# patient_id,{PID}" in head and f"# accession,{ACCESSION}" in head
    assert json.loads((tmp_path / "m.json").read_text())["patient"]["patient_id"] == PID
    # View > Anonymise: nothing identifying in the views, the title, the panel, screenshots or exports
    win.act_anonymise.trigger()
    shown = " ".join([win.windowTitle(), win.scan_info.text(), *sum(win.views["axial"].overlay_text().values(), [])])
    assert "ANONYMISED" in shown and "Banner" not in shown.title() and PID not in shown and ACCESSION not in shown
    assert win.save_measurements(str(tmp_path / "a.csv")) and win.save_measurements(str(tmp_path / "a.json"))
    for f in ("a.csv", "a.json"):
        text = (tmp_path / f).read_text()
        assert PID not in text and "BANNER" not in text and ACCESSION not in text and "anonymised" in text
    win.act_anonymise.trigger()
    assert PID in win.windowTitle()
    # identifiers are shown and exported, never logged
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert PID not in logged and "BANNER" not in logged.upper() and ACCESSION not in logged


def test_the_banner_is_drawn_on_the_views(make_window, tmp_path):
    win = make_window(model="")
    open_and_wait(win, _dicom_with_patient(tmp_path / "dicom"))
    view = win.views["axial"]
    with_banner = view.grab().toImage()
    win.set_anonymise(True)
    without = view.grab().toImage()
    # the top-left corner (name, ID) changes; the image in the middle does not
    assert with_banner.copy(0, 0, 120, 30) != without.copy(0, 0, 120, 30)
    mid = view.rect().center()
    assert with_banner.pixel(mid) == without.pixel(mid)


# ---- 2. defects --------------------------------------------------------------------------------
def test_maximised_view_fills_the_view_area(make_window, gui_data, qtbot):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    area = win.views_widget
    for name in ("coronal", "sagittal", "axial"):
        win.toggle_maximise(name)
        qtbot.waitUntil(lambda n=name: win.views[n].width() > 0.9 * area.width() and win.views[n].height() > 0.9 * area.height(),
                        timeout=5000)
        assert [n for n, v in win.views.items() if v.isVisible()] == [name]
        win.toggle_maximise(name)
        qtbot.waitUntil(lambda: all(v.isVisible() for v in win.views.values()), timeout=5000)
    qtbot.waitUntil(lambda: win.views["axial"].width() > win.views["coronal"].width(), timeout=5000)


def test_double_click_maximises_without_moving_the_crosshair(make_window, gui_data, qtbot):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    view = win.views["coronal"]
    before = win.state.cursor
    qtbot.mouseDClick(view, Qt.MouseButton.LeftButton, pos=_pt(view.display_to_widget((5, before[1], 3))))
    assert win.view_grid.maximised == "coronal"
    assert win.state.cursor == before


def test_feedback_messages_are_not_hidden_by_the_readout(make_window, gui_data, tmp_path, qtbot):
    win = make_window(model="")
    win.resize(1280, 800)
    open_and_wait(win, gui_data["scan"])
    assert win.save_screenshot(str(tmp_path / "v.png"))
    bar = win.statusBar()
    message = bar.currentMessage()
    assert message.startswith("Saved the screenshot")
    needed = min(bar.fontMetrics().horizontalAdvance(message), int(0.4 * bar.width()))
    qtbot.waitUntil(lambda: win.status_position.geometry().left() >= needed, timeout=5000)
    assert win.status_position.text().startswith("Axial")


def test_segment_goes_to_the_largest_lesion_and_hand_painted_lesions_show_no_confidence(make_window, gui_data):
    from scipy import ndimage

    win = make_window()
    open_and_wait(win, gui_data["scan"])
    segment_and_wait(win)
    largest = max(win.lesions, key=lambda les: les.volume_ml)
    assert win.selected_lesion is largest and win.lesion_table.selected_lesion() is largest
    g = win.state.geometry
    centre = np.round(g.world_to_display(largest.centroid_ras_mm)).astype(int)
    assert win.state.cursor[:2] == tuple(int(v) for v in centre[:2])
    assert win.state.cursor[2] == win.recist_slice_number(largest) - 1
    # a lesion painted by hand where the model found nothing: blank confidence, not 0.00
    distance = ndimage.distance_transform_edt(win.session.display_labels == 0)
    spot = tuple(int(v) for v in np.unravel_index(int(np.argmax(distance)), distance.shape))
    assert distance[spot] >= 2  # one voxel there is a lesion of its own
    win.radius_spin.setValue(0.5)
    win.paint_stroke("axial", [spot])
    wait_measurements(win)
    table = win.lesion_table
    manual = [les for les in win.lesions if les.bbox_min_voxel[0] <= win.session.source_voxel(spot)[0] <= les.bbox_max_voxel[0]
              and les.confidence is None]
    assert manual, "the hand-painted lesion should have no confidence"
    cell = table.proxy_index_of(manual[0], "confidence")
    assert cell.data() == ""
    model_made = [les for les in win.lesions if les.confidence is not None]
    assert model_made and table.proxy_index_of(model_made[0], "confidence").data() != ""


def test_tool_panel_fits_at_1280x800(make_window, gui_data, qtbot):
    win = make_window(model="")
    win.resize(1280, 800)
    open_and_wait(win, gui_data["scan"])
    scroll = win.tools_dock.widget()
    vp = scroll.viewport()

    def fits() -> bool:
        for w in (win.cancel_button, win.progress, win.tta_check, win.radius_spin, win.undo_button, win.redo_button):
            r = w.rect()
            tl, br = w.mapTo(vp, r.topLeft()), w.mapTo(vp, r.bottomRight())
            if not (w.isVisible() and tl.y() >= 0 and br.y() <= vp.height()):
                return False
        return True

    qtbot.waitUntil(fits, timeout=5000)
    # the tools (and the 3D view under them) take the full height on the right; the lesion table only spans the views
    assert win.view3d.dock.geometry().top() > win.tools_dock.geometry().bottom()
    assert win.view3d.dock.geometry().bottom() > win.lesion_dock.geometry().top()
    assert win.lesion_dock.geometry().right() < win.tools_dock.geometry().left()


def test_presets_follow_the_modality_and_show_custom(make_window, gui_data):
    from seg_app.core.volume import Volume

    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])  # NIfTI, no modality, MR-like intensities
    combo = win.preset_combo
    names = [combo.itemText(i) for i in range(combo.count())]
    assert "Brain" not in names and combo.currentText().startswith("Auto")
    assert [a.text() for a in win.menus.preset_menu.actions()] == names
    view = win.views["axial"]
    for name in names:
        win.apply_preset(name)
        rgb = view.render_rgb()
        assert (rgb.min(axis=2) == 255).mean() < 0.2, f"{name} turns the scan white"
    win.state.set_window(win.state.window * 0.5, win.state.level + 3)  # as a right-drag does
    assert combo.currentText() == "Custom"
    win.apply_preset(names[0])
    assert combo.currentText() == names[0]
    ct = Volume(make_scan_array()[None] - 1100.0, np.eye(4), modality="CT", source_paths=("/data/ct.nii.gz",))
    win.set_volume(ct)
    names = [combo.itemText(i) for i in range(combo.count())]
    assert names[0] == "Soft tissue" and {"Brain", "Bone", "Lung"} <= set(names)
    assert (win.state.window, win.state.level) == (400.0, 40.0)


def test_status_line_forgets_the_previous_scan(make_window, gui_data, tmp_path):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [win.state.cursor])
    win._on_hover(None)
    assert "label 1" in win.status_position.text()
    other = write_nifti(tmp_path / "other.nii.gz", shape=(20, 22, 24), seed=5)
    open_and_wait(win, other)
    text = win.status_position.text()
    assert "label" not in text and text.startswith("Axial 13/24")


def test_every_dock_comes_back_from_the_view_menu(make_window):
    win = make_window(model="")
    view_actions = {a.text().replace("&", ""): a for a in win.menus.view_menu.actions()}
    for dock, text in ((win.lesion_dock, "Lesion table"), (win.tools_dock, "Tools panel")):
        dock.close()
        assert not dock.isVisible()
        view_actions[text].trigger()
        assert dock.isVisible()


def test_unsaved_prompt_offers_save(make_window, gui_data, tmp_path, monkeypatch):
    from seg_app.gui.main_window import MainWindow

    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    win.paint_stroke("axial", [(20, 18, 15)])
    out = tmp_path / "saved_mask.nii.gz"
    monkeypatch.setattr(win, "ask_save_path", lambda *a: str(out))

    def click(button):
        box = win.unsaved_box
        assert box is not None and box.button(QMessageBox.StandardButton.Save) is not None
        box.button(button).click()

    QTimer.singleShot(0, lambda: click(QMessageBox.StandardButton.Cancel))
    assert MainWindow.confirm_discard(win, "Close") is False and not out.exists()
    QTimer.singleShot(0, lambda: click(QMessageBox.StandardButton.Save))
    assert MainWindow.confirm_discard(win, "Close") is True
    assert out.exists() and not win.isWindowModified()


@pytest.mark.parametrize("source", ["nifti", "dicom"])
def test_slice_numbers_agree_between_views_and_status_line(make_window, gui_data, tmp_path, source):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"] if source == "nifti" else _dicom_with_patient(tmp_path / "d"))
    g = win.state.geometry
    win.state.set_cursor((2, g.shape[1] - 3, 1))
    status = win.status_position.text()
    for view in win.views.values():
        caption = view.overlay_text()["bottom_left"][0]
        assert caption in status
    assert f"Axial 2/{g.shape[2]}" in status  # display slice 1 (0-based) is slice 2 everywhere


def test_brush_radius_keys_step_through_clean_values(make_window):
    from seg_app.gui.editing import BRUSH_STEPS_MM

    win = make_window(model="")
    larger = next(a for a in win.menus.edit_menu.actions() if a.text() == "Larger brush")
    smaller = next(a for a in win.menus.edit_menu.actions() if a.text() == "Smaller brush")
    values = []
    for act in (larger,) * 4 + (smaller,) * 6:
        act.trigger()
        values.append(win.radius_spin.value())
    assert values[:4] == [6.0, 8.0, 10.0, 12.0] and all(v in BRUSH_STEPS_MM for v in values)
    win.radius_spin.stepBy(1)
    assert win.radius_spin.value() in BRUSH_STEPS_MM


def test_edit_menu_shows_shortcuts_and_they_work(make_window, gui_data):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    acts = [a for a in win.menus.edit_menu.actions() if not a.isSeparator()]
    assert all(not a.shortcut().isEmpty() for a in acts), [a.text() for a in acts if a.shortcut().isEmpty()]
    assert {win.tool_actions[t].shortcut().toString() for t in ("navigate", "paint", "erase")} == {"N", "B", "E"}
    win.tool_actions["paint"].trigger()
    assert win.tool_buttons["paint"].isChecked() and win.views["axial"].tool == "paint"


def test_help_menu_has_shortcuts_sheet_and_user_guide(make_window):
    win = make_window(model="")
    texts = [a.text().replace("&", "") for a in win.menus.help_menu.actions()]
    assert {"User guide", "Keyboard shortcuts", "About seg-app"} <= set(texts)
    win.show_user_guide()
    guide = win.help_dialog.browser.toPlainText()
    assert "Radiological convention" in guide and "##" not in guide  # rendered markdown, not source
    win.help_dialog.close()
    win.show_shortcuts()
    sheet = win.help_dialog.browser.toPlainText()
    assert "Ctrl+Z" in sheet and "Paint brush" in sheet and "Ctrl+wheel" in sheet
    win.help_dialog.close()


def test_slice_sliders_move_and_follow_the_crosshair(make_window, gui_data):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    axial = win.sliders["axial"]
    assert axial.isEnabled() and (axial.minimum(), axial.maximum()) == (1, 32)
    axial.setValue(5)
    assert win.state.cursor[2] == 4
    win.state.set_cursor((3, 7, 20))
    assert axial.value() == 21 and win.sliders["coronal"].value() == 8 and win.sliders["sagittal"].value() == 4


def test_one_click_deletes_a_lesion_and_undo_brings_it_back(make_window, gui_data, qtbot):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    _paint_two_lesions(win)
    before = win.labels.array.copy()
    table = win.lesion_table
    target = win.lesions[1]
    cell = table.proxy_index_of(target, "delete")
    assert cell.data() == "\u2715" and "Delete" in cell.data(Qt.ItemDataRole.ToolTipRole)
    qtbot.mouseClick(table.view.viewport(), Qt.MouseButton.LeftButton, pos=table.view.visualRect(cell).center())
    assert int((win.labels.array > 0).sum()) == int((before > 0).sum()) - target.voxel_count
    wait_measurements(win)
    assert len(win.lesions) == 1 and win.isWindowModified()
    win.act_undo.trigger()
    assert np.array_equal(win.labels.array, before)


# ---- 3. measurements clarity --------------------------------------------------------------------
def test_lesion_table_names_columns_as_radiologists_do(make_window, gui_data, tmp_path):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    _paint_two_lesions(win)
    model = win.lesion_table.model
    heads = [model.headerData(c, Qt.Orientation.Horizontal).replace("\n", " ") for c in range(model.columnCount())]
    for expected in ("Volume (mL)", "RECIST long axis (axial, mm)", "Short axis (axial, mm)", "Slice (axial)",
                     "Max 3D diameter (mm)", "Mean intensity (a.u.)", "Confidence"):
        assert expected in heads
    tips = [model.headerData(c, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole) for c in range(model.columnCount())]
    assert all(tips) and "perpendicular" in tips[heads.index("Short axis (axial, mm)")]
    les = win.lesions[0]
    table = win.lesion_table
    assert table.proxy_index_of(les, "slice").data() == str(win.recist_slice_number(les))
    assert table.proxy_index_of(les, "confidence").data() == ""  # painted by hand: no model confidence
    out = tmp_path / "cols.csv"
    assert win.save_measurements(str(out))
    rows = list(csv.DictReader(line for line in out.read_text().splitlines() if not line.startswith("#")))
    assert rows[0]["long_axis_slice"] == str(les.long_axis_slice)


def test_recist_calipers_are_drawn_on_the_measured_slice(make_window, gui_data, qtbot):
    win = make_window(model="")
    open_and_wait(win, gui_data["scan"])
    _paint_two_lesions(win)
    les = max(win.lesions, key=lambda x: x.long_axis_mm)
    table = win.lesion_table
    qtbot.mouseClick(table.view.viewport(), Qt.MouseButton.LeftButton,
                     pos=table.view.visualRect(table.proxy_index_of(les)).center())
    assert win.selected_lesion is les and win.state.cursor[2] == win.recist_slice_number(les) - 1
    view = win.views["axial"]
    segments = view.caliper_segments()
    assert len(segments) == 2
    (a, b, long_mm), (c, d, short_mm) = segments
    assert long_mm == pytest.approx(les.long_axis_mm, rel=1e-6) and short_mm == pytest.approx(les.short_axis_mm, rel=1e-6)
    ppm = view.pixels_per_mm()
    assert np.hypot(b.x() - a.x(), b.y() - a.y()) / ppm == pytest.approx(les.long_axis_mm, rel=0.02)
    image = view.grab().toImage()
    mid = (a + b) / 2
    near = [image.pixelColor(int(mid.x()) + dx, int(mid.y()) + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    assert any(c.red() > 180 and c.blue() > 180 and c.green() < 140 for c in near)  # the magenta long axis is on screen
    win.state.step_slice("axial", 3)
    assert view.caliper_segments() == []  # only on the slice where it was measured
