"""DICOM SR (TID 1500) measurement report: dciodvfy-valid, references the SEG segments and the source
series, carries the measured volume, maximum diameter and RECIST axes of each lesion (and sub-regions)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from dicom_factory import make_affine
from seg_app.core.dicom_seg import export_dicom_seg
from seg_app.core.dicom_sr import export_dicom_sr, read_dicom_sr_measurements
from seg_app.core.dicom_write import write_dicom_series
from seg_app.core.errors import ExportError
from seg_app.core.io import load_scan
from seg_app.core.measure import measure_lesions
from seg_app.core.regions import composite_regions
from seg_app.core.volume import Volume

SHAPE = (16, 20, 12)
BRATS = {0: "background", 1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}


def dciodvfy_errors(path) -> list[str]:
    assert shutil.which("dciodvfy"), "dciodvfy not found: install Debian's dicom3tools (scripts/install_system_deps.sh)"
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]


@pytest.fixture
def reference(tmp_path) -> Volume:
    rng = np.random.default_rng(0)
    vol = Volume(rng.integers(50, 150, SHAPE).astype(np.float32), make_affine("oblique", spacing=(0.7, 0.9, 2.5)), modality="MR")
    write_dicom_series(vol, tmp_path / "series", series_description="T1")
    return load_scan(tmp_path / "series")


def _two_lesions(shape) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[2:7, 3:9, 1:4] = 1
    lab[10:13, 1:3, 6:9] = 1
    return lab


def test_sr_is_valid_and_holds_each_lesions_measurements(tmp_path, reference):
    labels = reference.with_array(_two_lesions(reference.shape)[None])
    lesions = measure_lesions(labels, image=reference, label_names={1: "tumour"})
    assert len(lesions) == 2
    seg_path = export_dicom_seg(labels, reference, tmp_path / "x_seg.dcm", label_names={1: "tumour"})
    sr_path = export_dicom_sr(lesions, reference, seg_path, tmp_path / "x_sr.dcm", label_names={1: "tumour"})
    assert dciodvfy_errors(sr_path) == []
    seg, sr = pydicom.dcmread(seg_path), pydicom.dcmread(sr_path)
    assert sr.Modality == "SR" and sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == seg.StudyInstanceUID == reference.meta["StudyInstanceUID"]
    assert sr.SeriesInstanceUID not in (seg.SeriesInstanceUID, reference.series_uid)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    # evidence: the SEG and every source image
    evidence = {item.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for ser in s.ReferencedSeriesSequence for item in ser.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in evidence and set(reference.meta["SOPInstanceUIDs"]) <= evidence
    groups = read_dicom_sr_measurements(sr_path)
    assert [g["tracking_id"] for g in groups] == ["Lesion 1 (tumour)", "Lesion 2 (tumour)"]
    for g, les in zip(groups, lesions):
        assert g["segment"] == (seg.SOPInstanceUID, 1)
        m = g["measurements"]
        assert m["Volume"] == (pytest.approx(les.volume_ml), "ml")
        assert m["Maximum Diameter"] == (pytest.approx(les.max_diameter_mm), "mm")
        assert m["Long axis"] == (pytest.approx(les.long_axis_mm), "mm")
        assert m["Short axis"] == (pytest.approx(les.short_axis_mm), "mm")
    assert groups[0]["measurements"]["Volume"][0] != groups[1]["measurements"]["Volume"][0]


def test_sr_groups_reference_the_source_images_of_the_lesion(tmp_path, reference):
    labels = reference.with_array(_two_lesions(reference.shape)[None])
    lesions = measure_lesions(labels, image=reference)
    seg_path = export_dicom_seg(labels, reference, tmp_path / "x_seg.dcm")
    sr_path = export_dicom_sr(lesions, reference, seg_path, tmp_path / "x_sr.dcm")
    import highdicom as hd

    groups = hd.sr.srread(sr_path).content.get_volumetric_roi_measurement_groups()
    sops = reference.meta["SOPInstanceUIDs"]
    for group, les in zip(groups, lesions):
        refs = [item.referenced_sop_instance_uid for item in group.referenced_segment[1:]]
        assert refs == [sops[k] for k in range(les.bbox_min_voxel[2], les.bbox_max_voxel[2] + 1)]


def test_sr_with_tumour_sub_regions(tmp_path, reference):
    lab = np.zeros(reference.shape, np.uint8)
    lab[2:9, 3:10, 1:6] = 2  # oedema
    lab[4:7, 5:8, 2:4] = 3  # enhancing
    lab[5, 6, 3] = 1  # necrotic core
    labels = reference.with_array(lab[None])
    lesions = measure_lesions(labels, image=reference, label_names=BRATS, regions=composite_regions(BRATS))
    (les,) = lesions
    seg_path = export_dicom_seg(labels, reference, tmp_path / "b_seg.dcm", label_names=BRATS)
    sr_path = export_dicom_sr(lesions, reference, seg_path, tmp_path / "b_sr.dcm", label_names=BRATS)
    assert dciodvfy_errors(sr_path) == []
    groups = {g["tracking_id"]: g for g in read_dicom_sr_measurements(sr_path)}
    whole = groups["Lesion 1 (whole tumour)"]
    assert whole["segment"] is None and whole["measurements"]["Volume"][0] == pytest.approx(les.volume_ml)
    seg = pydicom.dcmread(seg_path)
    number = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    for region in ("necrotic core", "oedema", "enhancing tumour"):
        g = groups[f"Lesion 1: {region}"]
        assert g["segment"] == (seg.SOPInstanceUID, number[region])
        assert g["measurements"]["Volume"][0] == pytest.approx(les.region_volumes_ml[region])


def test_sr_without_lesions_is_still_a_valid_report(tmp_path, reference):
    empty = reference.with_array(np.zeros((1, *reference.shape), np.uint8))
    seg_path = export_dicom_seg(empty, reference, tmp_path / "e_seg.dcm")
    sr_path = export_dicom_sr([], reference, seg_path, tmp_path / "e_sr.dcm")
    assert dciodvfy_errors(sr_path) == []
    (group,) = read_dicom_sr_measurements(sr_path)
    assert group["tracking_id"] == "No lesion" and group["measurements"]["Volume"][0] == 0.0


def test_sr_refuses_nifti_sources_and_foreign_files(tmp_path, reference):
    nifti_like = Volume(np.zeros((1, *SHAPE), np.float32), np.eye(4))
    with pytest.raises(ExportError, match="DICOM source"):
        export_dicom_sr([], nifti_like, tmp_path / "none.dcm", tmp_path / "x_sr.dcm")
    with pytest.raises(ExportError, match="not a DICOM SEG"):
        export_dicom_sr([], reference, reference.source_paths[0], tmp_path / "x_sr.dcm")
    assert not (tmp_path / "x_sr.dcm").exists()
