"""File > Open segmentation: a NIfTI label map or DICOM SEG replaces the mask on the open scan (one undo
step, its label names in the lesion table, resampling warnings in the banner), and DICOM SEGs beside an
opened series are found and offered."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from gui_fixtures import SCAN_AFFINE, SCAN_SHAPE, gui_data, make_window, no_leftover_threads, open_and_wait, wait_measurements  # noqa: F401
from PySide6.QtCore import Qt

from seg_app.core.segmentation_io import load_segmentation
from seg_app.core.volume import Volume
from seg_app.gui.workers import wait_for

pytestmark = [pytest.mark.gui, pytest.mark.filterwarnings("ignore::UserWarning")]


def _mask(shape=SCAN_SHAPE) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[16:25, 14:23, 11:20] = 1
    lab[32:38, 22:28, 7:13] = 2
    return lab


def _save(path, arr, affine):
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def _open_seg(win, path):
    win.messages = []
    win.statusBar().messageChanged.connect(win.messages.append)
    job = win.open_segmentation(str(path))
    assert job is not None
    assert wait_for(job, timeout_s=60)
    wait_measurements(win)


def _table_names(win) -> list[str]:
    model = win.lesion_table.model
    col = [c[1] for c in model.columns].index("label_name")
    return [model.data(model.index(r, col)) for r in range(len(model.lesions))]


def _labels(win) -> np.ndarray:
    return np.asarray(win.session.labels.array[0])


def test_nifti_mask_replaces_the_overlay_with_undo_names_and_export(make_window, gui_data, tmp_path):
    win = open_and_wait(make_window(), gui_data["scan"])
    previous = np.zeros(SCAN_SHAPE, np.uint8)
    previous[5:9, 5:9, 5:9] = 1
    win.set_labels(win.volume.with_array(previous[None]))
    wait_measurements(win)
    win.setWindowModified(True)
    asked = []
    win.confirm_discard = lambda action: asked.append(action) or False  # "Cancel": nothing happens
    path = _save(tmp_path / "mask.nii.gz", _mask(), SCAN_AFFINE)
    assert win.open_segmentation(str(path)) is None
    assert asked == ["Open a segmentation"]
    np.testing.assert_array_equal(_labels(win), previous)

    win.confirm_discard = lambda action: asked.append(action) or True  # "Discard"
    _open_seg(win, path)
    np.testing.assert_array_equal(_labels(win), _mask())
    assert win.session.opened_source == str(path)
    assert not win.session.dirty  # the mask equals the file
    # value 1 keeps the model's name (a NIfTI has none); value 2 is unknown to the model
    assert sorted(set(_table_names(win))) == ["label 2", "tumour"]
    assert {les.label for les in win.session.lesions} == {1, 2}
    assert [win.label_combo.itemText(i) for i in range(win.label_combo.count())] == ["1: tumour", "2: label 2"]
    assert not win.domain_banner.isVisible()
    assert any("Opened the segmentation mask.nii.gz" in m for m in win.messages)
    # the loaded mask is shown: the display view reads the new labels
    np.testing.assert_array_equal(win.data.labels, win.session.geometry.view(_mask()))

    out = tmp_path / "export" / "exported.nii.gz"
    out.parent.mkdir()
    job = win.save_mask(str(out))
    assert job is not None and wait_for(job, timeout_s=60)
    img = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(img.dataobj), _mask())
    np.testing.assert_allclose(img.affine, SCAN_AFFINE, atol=1e-5)

    win.undo()  # one step back to the previous mask and the model's names
    wait_measurements(win)
    np.testing.assert_array_equal(_labels(win), previous)
    assert win.session.opened_names is None
    assert set(_table_names(win)) == {"tumour"}
    assert win.label_combo.count() == 1
    assert not win.act_undo.isEnabled()
    win.redo()
    wait_measurements(win)
    np.testing.assert_array_equal(_labels(win), _mask())
    assert sorted(set(_table_names(win))) == ["label 2", "tumour"]


def test_flipped_axes_mask_loads_exactly_without_warning(make_window, gui_data, tmp_path):
    win = open_and_wait(make_window(), gui_data["scan"])
    n = SCAN_SHAPE[0]
    flip = np.array([[-1.0, 0, 0, n - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    path = _save(tmp_path / "flipped.nii.gz", _mask()[::-1].copy(), SCAN_AFFINE @ flip)
    _open_seg(win, path)  # painting starts from no mask: undo goes back to an empty one
    np.testing.assert_array_equal(_labels(win), _mask())
    assert not win.domain_banner.isVisible()
    win.undo()
    assert not _labels(win).any()


def test_coarser_mask_is_resampled_with_a_warning_in_the_banner(make_window, gui_data, tmp_path):
    win = open_and_wait(make_window(), gui_data["scan"])
    coarse = _mask()[::2, ::2, ::2].copy()
    path = _save(tmp_path / "coarse.nii.gz", coarse, SCAN_AFFINE @ np.diag([2.0, 2.0, 2.0, 1.0]))
    expected = load_segmentation(path, win.volume)
    assert expected.warnings  # the core resamples it by nearest neighbour
    _open_seg(win, path)
    np.testing.assert_array_equal(_labels(win), expected.labels)
    assert _labels(win)[20, 18, 15] == 1 and _labels(win)[34, 24, 10] == 2
    assert win.domain_banner.isVisible() and "nearest neighbour" in win.domain_banner.text()
    assert any("Opened the segmentation coarse.nii.gz" in m and "nearest neighbour" in m for m in win.messages)


def test_probability_map_shows_an_error_and_keeps_the_mask(make_window, gui_data, tmp_path):
    win = open_and_wait(make_window(), gui_data["scan"])
    path = _save(tmp_path / "mask.nii.gz", _mask(), SCAN_AFFINE)
    _open_seg(win, path)
    errors = []
    win.error_reported.connect(errors.append)
    prob = _save(tmp_path / "prob.nii.gz", (_mask() * 0.4).astype(np.float32), SCAN_AFFINE)
    _open_seg(win, prob)
    assert len(errors) == 1 and "probability map" in errors[0]
    assert any(b.isVisible() and "probability map" in b.text() for b in win._message_boxes)
    np.testing.assert_array_equal(_labels(win), _mask())
    assert win.session.opened_source == str(path)
    assert win.act_open_seg.isEnabled() and win.seg_open_job is None  # the window stays usable
    _open_seg(win, path)
    assert len(errors) == 1


def test_open_segmentation_without_a_scan_says_so(make_window):
    win = make_window(model="")
    errors = []
    win.error_reported.connect(errors.append)
    assert not win.act_open_seg.isEnabled()
    assert win.open_segmentation("/nonexistent.nii.gz") is None
    assert errors and "Open a scan first" in errors[0]


def test_dicom_seg_beside_the_series_is_found_and_loads(make_window, tmp_path):
    from seg_app.core.dicom_seg import export_dicom_seg
    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.io import load_scan
    from gui_fixtures import make_scan_array

    shape = (24, 20, 12)
    folder = tmp_path / "study" / "t1"
    write_dicom_series(Volume(make_scan_array(shape, seed=2), np.diag([1.0, 1.0, 3.0, 1.0]), modality="MR"), folder,
                       series_description="T1 axial")
    ref = load_scan(folder)
    lab = np.zeros(shape, np.uint8)
    lab[4:12, 4:12, 3:8] = 2
    lab[6:10, 6:10, 4:7] = 1
    lab[7:9, 7:9, 5:6] = 3
    names = {1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}
    seg_path = export_dicom_seg(ref.with_array(lab[None]), ref, folder / "brats_seg.dcm", label_names=names)

    win = make_window()
    assert not win.found_seg_menu.isEnabled()
    open_and_wait(win, tmp_path / "study")
    assert win.volume.series_uid == ref.series_uid
    if win.discover_job is not None:
        assert wait_for(win.discover_job, timeout_s=60)
    assert [f.path for f in win.found_segmentations] == [str(seg_path)]
    assert win.seg_banner.isVisible() and win.found_seg_menu.isEnabled()
    assert len(win.found_seg_menu.actions()) == 1 and "oedema" in win.found_seg_menu.actions()[0].text()

    win.seg_banner_button.click()  # "1 segmentation(s) found for this series: Load"
    assert win.seg_open_job is not None and wait_for(win.seg_open_job, timeout_s=60)
    wait_measurements(win)
    assert not win.seg_banner.isVisible()
    np.testing.assert_array_equal(_labels(win), lab)
    assert win.session.label_names() == names
    # BraTS names: whole-tumour rows with WT/TC/ET columns in the BraTS colours
    model = win.lesion_table.model
    heads = [model.headerData(c, Qt.Orientation.Horizontal).replace("\n", " ") for c in range(model.columnCount())]
    assert {"WT (mL)", "TC (mL)", "ET (mL)"} <= set(heads)
    assert win.session.region_colors()["ET"] == (250, 210, 40)
    assert tuple(win.data.lut_rgb[2]) == (60, 200, 80)

    # exported again as DICOM SEG: the same mask and the opened names
    from seg_app.core.segmentation_io import describe_dicom_seg

    job = win.save_seg(str(tmp_path / "again_seg.dcm"))
    assert job is not None and wait_for(job, timeout_s=60)
    again = load_segmentation(tmp_path / "again_seg.dcm", win.volume)
    np.testing.assert_array_equal(again.labels, lab)
    assert {s["label_value"]: s["label"] for s in describe_dicom_seg(tmp_path / "again_seg.dcm")["segments"]} == names


def test_search_finds_only_segs_of_the_series(tmp_path):
    """The Qt-free folder search: SEGs of another series and non-SEG files are left out."""
    from seg_app.core.dicom_seg import export_dicom_seg
    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.io import load_scan
    from seg_app.gui.seg_discovery import find_series_segmentations, search_folders
    from gui_fixtures import make_scan_array

    shape = (16, 12, 6)
    vols = {}
    for name in ("a", "b"):
        write_dicom_series(Volume(make_scan_array(shape, seed=3), np.diag([1.0, 1.0, 2.0, 1.0]), modality="MR"),
                           tmp_path / name, series_description=name)
        vols[name] = load_scan(tmp_path / name)
    lab = np.zeros(shape, np.uint8)
    lab[3:8, 3:8, 2:4] = 1
    seg_a = export_dicom_seg(vols["a"].with_array(lab[None]), vols["a"], tmp_path / "a_seg.dcm")
    export_dicom_seg(vols["b"].with_array(lab[None]), vols["b"], tmp_path / "b" / "b_seg.dcm")
    (tmp_path / "notes.txt").write_text("not DICOM")
    folders = search_folders(tmp_path, vols["a"].source_paths)
    assert folders == [tmp_path, tmp_path / "a"]
    found = find_series_segmentations(folders, vols["a"].series_uid, exclude=vols["a"].source_paths)
    assert [f.path for f in found] == [str(seg_a)]
    assert find_series_segmentations(folders, "1.2.3.4") == []
