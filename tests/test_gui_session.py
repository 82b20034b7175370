"""The Qt-free document of the desktop app (``seg_app.gui.session``): no display, no qtbot."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from seg_app.core.volume import Volume
from seg_app.gui.session import DEFAULT_LABEL, Session

SHAPE = (12, 10, 8)


def _scan(tmp_path, modality="MR") -> Volume:
    src = tmp_path / "patient 7.nii.gz"
    arr = np.arange(np.prod(SHAPE), dtype=np.float32).reshape((1,) + SHAPE)
    return Volume(arr, np.diag([1.0, 1.0, 2.0, 1.0]), modality=modality, source_paths=(str(src),))


def _session(tmp_path) -> tuple[Session, list[str]]:
    s = Session()
    events: list[str] = []
    s.connect(events.append)
    s.set_volume(_scan(tmp_path))
    return s, events


def _brats_checkpoint():
    from seg_app.core.spec import ChannelSpec, InferenceSpec, LabelSpec, ModelSpec, NetworkSpec

    spec = ModelSpec(
        name="brats-like",
        network=NetworkSpec("UNet", {"channels": [4, 8], "strides": [2], "num_res_units": 0}),
        channels=(ChannelSpec("FLAIR", "MR"),),
        labels=(LabelSpec(0, "background", (0, 0, 0)), LabelSpec(1, "necrotic core", (255, 0, 0)),
                LabelSpec(2, "oedema", (0, 255, 0)), LabelSpec(3, "enhancing tumour", (255, 255, 0))),
        target_spacing=(1.0, 1.0, 1.0),
        inference=InferenceSpec(roi_size=(16, 16, 16), overlap=0.5, sw_batch_size=1),
    )
    return SimpleNamespace(spec=spec, path="/models/brats.pt")


def _paint(s: Session, centre=(5, 5, 4), value=1) -> None:
    s.editor.begin_stroke()
    s.editor.dab(np.asarray(centre, float), 2.0, value)
    assert s.editor.end_stroke() is not None
    s.mark_edited()


def test_importing_the_session_loads_no_qt():
    code = ("import sys, seg_app.gui.session; "
            "assert not [m for m in sys.modules if m.startswith('PySide6')], 'Qt imported by the session'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_empty_session():
    s = Session()
    assert s.volume is None and s.labels is None and not s.dirty
    assert s.title == "seg-app[*]"
    assert s.label_specs() == [DEFAULT_LABEL] and s.spec is None and s.model_card_text() is None
    assert s.describe_voxel((0, 0, 0)) == "" and s.measurement_task() is None
    assert s.export_refusal("/tmp/x.nii.gz").startswith("There is no mask")
    with pytest.raises(ValueError, match="open a scan"):
        s.set_labels(Volume(np.zeros((1,) + SHAPE, np.uint8), np.eye(4)))


def test_opening_a_scan_sets_geometry_title_and_a_clean_document(tmp_path):
    s, events = _session(tmp_path)
    assert s.geometry is not None and s.geometry.shape == SHAPE
    assert s.title == "patient 7[*] - seg-app"
    assert not s.dirty and "volume" in events and events[-1] == "dirty"
    assert "<b>patient 7</b>" in s.scan_summary()[0]
    assert s.export_name("mask.nii.gz") == "patient_7_mask.nii.gz"


def test_an_edit_makes_the_document_dirty_and_saving_cleans_it(tmp_path):
    s, events = _session(tmp_path)
    assert s.ensure_labels() and s.labels.array.sum() == 0 and not s.dirty
    _paint(s)
    assert s.dirty and s.manually_edited and s.labels.array.sum() > 0
    assert s.export_refusal(tmp_path / "out.nii.gz") is None
    s.mark_saved()
    assert not s.dirty and events[-1] == "dirty"
    # undo is an edit too: the document differs from what was saved
    painted = s.labels.array.copy()
    assert s.undo() and s.dirty and s.labels.array.sum() == 0
    s.mark_saved()
    assert s.redo() and s.dirty and np.array_equal(s.labels.array, painted)
    assert not s.redo()  # nothing left to redo


def test_set_labels_copies_and_replaces_history_and_measurements(tmp_path):
    s, _ = _session(tmp_path)
    given = np.zeros((1,) + SHAPE, np.int64)
    given[0, 2:4, 2:4, 2:4] = 1
    s.set_labels(Volume(given, s.volume.affine))
    assert s.labels.array.dtype == np.uint8 and s.labels.array.flags.writeable
    s.labels.array[0, 0, 0, 0] = 1
    assert given[0, 0, 0, 0] == 0  # a copy: the caller's array is untouched
    _paint(s)
    s.set_measurements(["old lesion"], [{"label": 1}])
    s.set_labels(Volume(np.zeros((1,) + SHAPE, np.uint8), s.volume.affine))
    assert s.lesions == [] and s.totals == []  # measurements of the old labels are gone
    assert not s.editor.can_undo  # and so is their edit history
    with pytest.raises(ValueError, match="does not match"):
        s.set_labels(Volume(np.zeros((1, 3, 3, 3), np.uint8), np.eye(4)))


def test_editor_writes_land_in_the_source_grid_labels(tmp_path):
    s, _ = _session(tmp_path)
    s.ensure_labels()
    assert s.display_labels is not None and np.shares_memory(s.display_labels, s.labels.array)
    _paint(s, value=1)
    assert int(s.labels.array.sum()) == int(s.display_labels.sum()) > 0


def test_opening_another_scan_drops_the_mask(tmp_path):
    s, _ = _session(tmp_path)
    s.ensure_labels()
    _paint(s)
    s.set_measurements(["lesion"], [])
    s.set_volume(_scan(tmp_path))
    assert s.labels is None and s.editor is None and s.lesions == [] and not s.dirty


def test_segmentation_result_replaces_the_mask_and_is_unsaved(tmp_path):
    s, _ = _session(tmp_path)
    labels = np.zeros((1,) + SHAPE, np.uint8)
    labels[0, 3:6, 3:6, 2:5] = 1
    prob = Volume(labels.astype(np.float32) * 0.9, s.volume.affine)
    result = SimpleNamespace(labels=Volume(labels, s.volume.affine), probabilities=prob, agreement=None, spec=None)
    s.set_result(result)
    assert s.last_result is result and s.dirty and not s.manually_edited
    assert np.array_equal(s.labels.array, labels) and s.display_probability.max() == pytest.approx(0.9)
    assert s.domain_warnings(result) == []


def test_measurement_task_measures_a_snapshot(tmp_path):
    s, events = _session(tmp_path)
    s.ensure_labels()
    s.labels.array[0, 2:5, 2:5, 2:5] = 1
    task = s.measurement_task()
    s.labels.array[0, 8:10, 7:9, 5:7] = 1  # edits after the snapshot do not change what is measured
    lesions, totals = task()
    assert len(lesions) == 1 and lesions[0].voxel_count == 27
    s.set_measurements(lesions, totals)
    assert s.lesions == lesions and events[-1] == "measurements"


def test_export_refuses_the_source_scan(tmp_path):
    s, _ = _session(tmp_path)
    s.ensure_labels()
    message = s.export_refusal(s.volume.source_paths[0])
    assert message and "source scan" in message and "\n" not in message
    labels, reference = s.export_snapshot()
    assert reference is s.volume and not np.shares_memory(labels.array, s.labels.array)


def test_model_labels_drive_names_colours_and_card(tmp_path):
    s, events = _session(tmp_path)
    s.set_checkpoint(_brats_checkpoint())
    assert events[-1] == "model"
    assert s.label_names() == {1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}
    colors = s.region_colors()
    assert colors["WT"] == (0, 255, 0) and colors["TC"] == (255, 0, 0) and colors["ET"] == (255, 255, 0)
    assert "brats-like" in s.model_card_text() and "File: /models/brats.pt" in s.model_card_text()
    s.ensure_labels()
    s.labels.array[0, 1, 2, 3] = 2
    text = s.describe_voxel(s.geometry.world_to_display(s.volume.voxel_to_world((1, 2, 3))))
    assert "label 2 (oedema)" in text and "RAS" in text
    d = s.geometry.world_to_display(s.volume.voxel_to_world((1, 2, 3)))
    assert s.source_voxel(d) == (1, 2, 3)
    # slice numbers as the views number them (1-based display order), not the source array's 0-based indices
    assert text.startswith(f"Axial {int(round(d[2])) + 1}/{s.geometry.shape[2]}  Coronal {int(round(d[1])) + 1}/")


def test_anonymise_hides_the_scan_name_in_title_panel_and_export(tmp_path):
    s, events = _session(tmp_path)
    assert s.title == "patient 7[*] - seg-app" and s.patient.scan_id == "patient 7.nii.gz"
    s.ensure_labels()
    assert s.measurements_header() == [("modality", "MR"), ("scan_id", "patient 7.nii.gz")]
    assert s.measurements_metadata()["patient"] == {"modality": "MR", "scan_id": "patient 7.nii.gz"}
    s.set_anonymise(True)
    assert events[-1] == "patient"
    assert "patient 7" not in s.title and "patient 7" not in " ".join(s.scan_summary())
    meta = s.measurements_metadata()
    assert "patient 7" not in json.dumps(meta) and meta["patient"] == {"modality": "MR", "anonymised": "yes"}
    assert s.measurements_header() == [("modality", "MR"), ("anonymised", "yes")]


def test_delete_lesion_erases_only_that_lesion_as_one_undo_step(tmp_path):
    from seg_app.core.measure import measure_lesions

    s, _ = _session(tmp_path)
    s.ensure_labels()
    s.labels.array[0, 1:4, 1:4, 1:3] = 1
    s.labels.array[0, 7:10, 6:9, 5:7] = 1
    before = s.labels.array.copy()
    lesions = measure_lesions(s.labels)
    assert len(lesions) == 2
    assert s.delete_lesion(lesions[1]) and s.dirty
    assert s.labels.array.sum() == lesions[0].voxel_count
    assert not s.delete_lesion(lesions[1])  # already gone
    assert s.undo() and np.array_equal(s.labels.array, before)


def test_hand_painted_lesions_have_no_confidence(tmp_path):
    s, _ = _session(tmp_path)
    predicted = np.zeros((1,) + SHAPE, np.uint8)
    predicted[0, 1:4, 1:4, 1:3] = 1
    prob = np.where(predicted > 0, 0.9, 0.05).astype(np.float32)
    result = SimpleNamespace(labels=s.volume.with_array(predicted), probabilities=s.volume.with_array(prob),
                             agreement=None)
    s.set_result(result)
    _paint(s, centre=(9, 7, 6))  # far from the model's lesion
    lesions, _totals = s.measurement_task()()
    by_size = sorted(lesions, key=lambda les: les.voxel_count)
    model_lesion = next(les for les in lesions if les.bbox_min_voxel == (1, 1, 1))
    manual = next(les for les in lesions if les is not model_lesion)
    assert len(by_size) == 2 and model_lesion.confidence == pytest.approx(0.9)
    assert manual.confidence is None
