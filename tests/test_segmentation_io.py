"""Opening existing segmentations on a scan: NIfTI label maps and DICOM SEG from this app, highdicom
(binary, fractional, another series of the same frame of reference), dcmqi and pydicom-seg."""

from __future__ import annotations

import json
import sys
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from corpus import corpus_volume
from dicom_factory import make_affine
from seg_app.core.dicom_seg import export_dicom_seg
from seg_app.core.dicom_write import write_dicom_series
from seg_app.core.errors import ScanLoadError
from seg_app.core.io import load_scan, save_labels
from seg_app.core.segmentation_io import describe_dicom_seg, is_dicom_seg, load_segmentation
from seg_app.core.volume import Volume

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SHAPE = (18, 14, 9)
FOR_UID = "1.2.826.0.1.3680043.8.498.1234567890"


def _labels(shape) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[2:7, 3:9, 1:4] = 1
    lab[10:13, 1:3, 5:8] = 3
    return lab


def _series(tmp_path, orientation="axial", name="series", spacing=(0.7, 0.9, 2.5), shape=SHAPE) -> Volume:
    vol = corpus_volume(shape, affine=make_affine(orientation, spacing=spacing))
    write_dicom_series(vol, tmp_path / name, series_description=f"{orientation} {name}", frame_of_reference_uid=FOR_UID)
    return load_scan(tmp_path / name)


def test_nifti_on_the_scan_grid_is_taken_as_is(tmp_path):
    ref = _series(tmp_path)
    lab = _labels(ref.shape)
    path = save_labels(ref.with_array(lab[None]), ref, tmp_path / "mask.nii.gz")
    seg = load_segmentation(path, ref)
    np.testing.assert_array_equal(seg.labels, lab)
    assert seg.kind == "nifti" and seg.warnings == ()
    assert seg.names == {1: "label 1", 3: "label 3"}


def test_nifti_in_another_orientation_is_placed_exactly_without_a_warning(tmp_path):
    """The same voxels stored with flipped/permuted axes: every scan voxel centre is a voxel centre of the
    mask, so the placement is exact and there is nothing to warn about."""
    ref = _series(tmp_path, "oblique")
    lab = _labels(ref.shape)
    # flip i and swap j/k: data[a, b, c] = lab[n_i-1-a, c, b]
    data = np.transpose(lab[::-1], (0, 2, 1))
    perm = np.zeros((4, 4))
    perm[0, 0], perm[0, 3] = -1, ref.shape[0] - 1  # new a -> old i = n_i-1-a
    perm[1, 2] = 1  # new b -> old k
    perm[2, 1] = 1  # new c -> old j
    perm[3, 3] = 1
    nib.save(nib.Nifti1Image(data, ref.affine @ perm), tmp_path / "flipped.nii.gz")
    seg = load_segmentation(tmp_path / "flipped.nii.gz", ref)
    np.testing.assert_array_equal(seg.labels, lab)
    assert seg.warnings == ()


def test_coarser_nifti_is_resampled_by_nearest_neighbour(tmp_path):
    ref = _series(tmp_path, "axial", spacing=(1.0, 1.0, 1.0), shape=(20, 20, 10))
    coarse = np.zeros((10, 10, 5), np.uint8)
    coarse[2:5, 2:4, 1:3] = 2
    aff = ref.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] += ref.affine[:3, :3] @ np.array([0.5, 0.5, 0.5])  # voxel centres of 2x2x2 blocks
    nib.save(nib.Nifti1Image(coarse, aff), tmp_path / "coarse.nii.gz")
    seg = load_segmentation(tmp_path / "coarse.nii.gz", ref)
    expected = np.repeat(np.repeat(np.repeat(coarse, 2, 0), 2, 1), 2, 2)
    assert (seg.labels == expected).mean() > 0.97  # ties at block borders may round either way
    assert int((seg.labels == 2).sum()) == pytest.approx(int((expected == 2).sum()), rel=0.2)
    assert seg.warnings


def test_nifti_of_another_scan_is_refused(tmp_path):
    ref = _series(tmp_path)
    aff = ref.affine.copy()
    aff[:3, 3] += 1000.0
    nib.save(nib.Nifti1Image(_labels(ref.shape), aff), tmp_path / "far.nii.gz")
    with pytest.raises(ScanLoadError, match="does not overlap"):
        load_segmentation(tmp_path / "far.nii.gz", ref)


def test_probability_map_is_not_a_label_map(tmp_path):
    ref = _series(tmp_path)
    nib.save(nib.Nifti1Image(np.full(ref.shape, 0.3, np.float32), ref.affine), tmp_path / "prob.nii.gz")
    with pytest.raises(ScanLoadError, match="not a label map"):
        load_segmentation(tmp_path / "prob.nii.gz", ref)


def test_unknown_file_is_refused(tmp_path):
    ref = _series(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ScanLoadError, match="neither a NIfTI label map nor a DICOM"):
        load_segmentation(tmp_path / "notes.txt", ref)
    assert not is_dicom_seg(tmp_path / "notes.txt")
    assert not is_dicom_seg(ref.source_paths[0])


def test_our_seg_round_trips_with_names(tmp_path):
    ref = _series(tmp_path, "oblique")
    lab = _labels(ref.shape)
    path = export_dicom_seg(ref.with_array(lab[None]), ref, tmp_path / "a_seg.dcm", label_names={1: "necrotic core", 3: "enhancing tumour"})
    assert is_dicom_seg(path)
    seg = load_segmentation(path, ref)
    np.testing.assert_array_equal(seg.labels, lab)
    assert seg.kind == "dicom-seg" and seg.warnings == ()
    assert seg.names[1] == "necrotic core" and seg.names[3] == "enhancing tumour"
    info = describe_dicom_seg(path)
    assert info["referenced_series"] == [ref.series_uid]
    assert [s["label_value"] for s in info["segments"]] == [1, 3]
    assert info["frame_of_reference"] == FOR_UID


def _highdicom_seg(ref: Volume, masks: np.ndarray, kind: str, labels: list[str], path) -> None:
    """A SEG written directly with highdicom (another producer's conventions: segment numbers 1..N,
    no tracking IDs, frames per source instance). ``masks``: (K, rows, cols, segments)."""
    sources = [pydicom.dcmread(p) for p in ref.source_paths]
    algo = hd.AlgorithmIdentificationSequence(name="other", version="1", family=hd.sr.CodedConcept("123109", "DCM", "Manual Processing"))
    descs = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=name,
            segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
            segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, algorithm_identification=algo)
        for i, name in enumerate(labels)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if kind == "fractional" else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=50, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="other", manufacturer_model_name="other", software_versions="1", device_serial_number="1", omit_empty_frames=True)
    seg.save_as(path)


def _frames(lab: np.ndarray, values: list[int], dtype=np.uint8) -> np.ndarray:
    """(I, J, K) label map -> (K, rows=J, cols=I, segments) masks."""
    return np.stack([(lab == v).transpose(2, 1, 0) for v in values], -1).astype(dtype)


def test_binary_seg_from_another_producer(tmp_path):
    ref = _series(tmp_path, "oblique")
    lab = _labels(ref.shape)
    _highdicom_seg(ref, _frames(lab, [1, 3]), "binary", ["core", "rim"], tmp_path / "b_seg.dcm")
    seg = load_segmentation(tmp_path / "b_seg.dcm", ref)
    # segment numbers become the labels: 1 -> 1, 2 (was value 3) -> 2
    np.testing.assert_array_equal(seg.labels == 1, lab == 1)
    np.testing.assert_array_equal(seg.labels == 2, lab == 3)
    assert seg.names == {1: "core", 2: "rim"}


def test_fractional_seg_is_thresholded_at_half(tmp_path):
    ref = _series(tmp_path, "axial")
    frac = np.zeros(ref.shape, np.float32)
    frac[3:9, 2:8, 2:6] = 0.8
    frac[3:9, 2:8, 6] = 0.3  # below half: background
    masks = frac.transpose(2, 1, 0)[..., None]
    _highdicom_seg(ref, masks, "fractional", ["tumour"], tmp_path / "f_seg.dcm")
    seg = load_segmentation(tmp_path / "f_seg.dcm", ref)
    np.testing.assert_array_equal(seg.labels == 1, frac >= 0.5)


def test_seg_on_another_series_of_the_same_frame_is_placed_by_position(tmp_path):
    """A SEG drawn on a 1 mm series opened on a 2 mm series of the same study position."""
    fine = _series(tmp_path, "axial", name="fine", spacing=(1.0, 1.0, 1.0), shape=(16, 16, 8))
    coarse_aff = fine.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    coarse_aff[:3, 3] = fine.affine[:3, :3] @ np.array([0.5, 0.5, 0.5]) + fine.affine[:3, 3]
    coarse = corpus_volume((8, 8, 4), affine=coarse_aff)
    write_dicom_series(coarse, tmp_path / "coarse", series_description="coarse", frame_of_reference_uid=FOR_UID)
    ref = load_scan(tmp_path / "coarse")
    lab = np.zeros(fine.shape, np.uint8)
    lab[4:10, 4:12, 2:6] = 1
    _highdicom_seg(fine, _frames(lab, [1]), "binary", ["lesion"], tmp_path / "fine_seg.dcm")
    seg = load_segmentation(tmp_path / "fine_seg.dcm", ref)
    expected = np.zeros(ref.shape, bool)
    expected[2:5, 2:6, 1:3] = True  # centres of the coarse voxels inside the fine box
    np.testing.assert_array_equal(seg.labels == 1, expected)
    assert any("resampled" in w for w in seg.warnings)


def test_seg_of_another_frame_of_reference_is_refused(tmp_path):
    ref = _series(tmp_path, "axial")
    other = corpus_volume(SHAPE, affine=ref.affine)
    write_dicom_series(other, tmp_path / "other", frame_of_reference_uid="1.2.826.0.1.3680043.8.498.99")
    other_vol = load_scan(tmp_path / "other")
    path = export_dicom_seg(other_vol.with_array(_labels(SHAPE)[None]), other_vol, tmp_path / "o_seg.dcm")
    with pytest.raises(ScanLoadError, match="another frame of reference"):
        load_segmentation(path, ref)


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_seg_written_by_dcmqi(tmp_path, orientation):
    """dcmqi's itkimage2segimage (the reference SEG converter of 3D Slicer/QIICR) from a NIfTI mask: 0 differing voxels."""
    exe = shutil.which("itkimage2segimage", path=str(Path(sys.executable).parent)) or shutil.which("itkimage2segimage")
    assert exe, "itkimage2segimage not found: pip install dcmqi (in the test extra)"
    ref = _series(tmp_path, orientation)
    lab = _labels(ref.shape)
    nii = save_labels(ref.with_array((lab == 1).astype(np.uint8)[None]), ref, tmp_path / "seg1.nii.gz")
    nii3 = save_labels(ref.with_array((lab == 3).astype(np.uint8)[None]), ref, tmp_path / "seg3.nii.gz")
    meta = {
        "ContentCreatorName": "Reader1", "ClinicalTrialSeriesID": "1", "ClinicalTrialTimePointID": "1",
        "SeriesDescription": "dcmqi", "SeriesNumber": "300", "InstanceNumber": "1", "BodyPartExamined": "BRAIN",
        "segmentAttributes": [[{
            "labelID": 1, "SegmentDescription": name, "SegmentLabel": name, "SegmentAlgorithmType": "MANUAL",
            "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "49755003", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Morphologically Altered Structure"},
            "SegmentedPropertyTypeCodeSequence": {"CodeValue": "108369006", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Neoplasm"},
            "recommendedDisplayRGBValue": [200, 50, 50]}] for name in ("necrotic core", "enhancing tumour")],
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "dcmqi_seg.dcm"
    proc = subprocess.run([exe, "--inputImageList", f"{nii},{nii3}", "--inputDICOMDirectory", str(tmp_path / "series"),
                           "--outputDICOM", str(out), "--inputMetadata", str(tmp_path / "meta.json")],
                          capture_output=True, text=True, timeout=120)
    assert out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    seg = load_segmentation(out, ref)
    np.testing.assert_array_equal(seg.labels == 1, lab == 1)
    np.testing.assert_array_equal(seg.labels == 2, lab == 3)
    assert seg.names == {1: "necrotic core", 2: "enhancing tumour"}


def _pydicom_seg():
    """The ``pydicom-seg`` writer (QIICR-style multi-class SEGs from SimpleITK images).

    The test extra installs the fork ``pydicom-seg-rb`` (same code and API, imported as ``pydicom_seg_rb``):
    pydicom-seg 0.4.1, its last release (2023), pins ``numpy<2`` and fails to import under pydicom 3
    (razorx89/pydicom-seg#60).
    """
    import pydicom_seg_rb

    return pydicom_seg_rb


def _pydicom_seg_file(tmp_path, ref: Volume, lab: np.ndarray, *, restore_frame_of_reference: bool) -> Path:
    """``lab`` written as a SEG by pydicom-seg's MultiClassWriter (labels 1 and 3 named) on the series of ``ref``."""
    pydicom_seg = _pydicom_seg()
    import SimpleITK as sitk

    nii = save_labels(ref.with_array(lab[None]), ref, tmp_path / "labels.nii.gz")
    image = sitk.ReadImage(str(nii))  # the label map in the series' geometry, as SimpleITK sees it (LPS)
    attributes = [{"labelID": v, "SegmentDescription": name, "SegmentLabel": name, "SegmentAlgorithmType": "MANUAL",
                   "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "49755003", "CodingSchemeDesignator": "SCT",
                                                             "CodeMeaning": "Morphologically Altered Structure"},
                   "SegmentedPropertyTypeCodeSequence": {"CodeValue": "108369006", "CodingSchemeDesignator": "SCT",
                                                         "CodeMeaning": "Neoplasm"},
                   "recommendedDisplayRGBValue": [200, 50, 50]} for v, name in ((1, "necrotic core"), (3, "enhancing tumour"))]
    meta = {"ContentCreatorName": "Reader1", "ClinicalTrialSeriesID": "1", "ClinicalTrialTimePointID": "1",
            "SeriesDescription": "pydicom-seg", "SeriesNumber": "301", "InstanceNumber": "1", "BodyPartExamined": "BRAIN",
            "segmentAttributes": [attributes]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    template = pydicom_seg.template.from_dcmqi_metainfo(str(tmp_path / "meta.json"))
    writer = pydicom_seg.MultiClassWriter(template=template, inplane_cropping=False, skip_empty_slices=True)
    dcm = writer.write(image, [pydicom.dcmread(p) for p in ref.source_paths])
    if restore_frame_of_reference:
        # pydicom-seg 0.4.1 copies the series' FrameOfReferenceUID and then overwrites it with a new UID
        # (razorx89/pydicom-seg issue #48, open; the copied element is shared, so the source datasets in
        # memory change too); restore it, as a fixed writer would leave it
        assert dcm.FrameOfReferenceUID != FOR_UID
        dcm.FrameOfReferenceUID = ref.meta["FrameOfReferenceUID"]
    out = tmp_path / "pydicom_seg.dcm"
    dcm.save_as(out)
    return out


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_seg_written_by_pydicom_seg(tmp_path, orientation):
    """pydicom-seg's MultiClassWriter (the SimpleITK-based writer many pipelines use) from a multi-class label
    map: 0 differing voxels, segment names kept (label values are its segment numbers)."""
    ref = _series(tmp_path, orientation)
    lab = _labels(ref.shape)
    out = _pydicom_seg_file(tmp_path, ref, lab, restore_frame_of_reference=True)
    assert is_dicom_seg(out)
    seg = load_segmentation(out, ref)
    assert seg.kind == "dicom-seg"
    assert int((seg.labels != lab).sum()) == 0
    assert seg.names == {1: "necrotic core", 3: "enhancing tumour"}


def test_seg_as_pydicom_seg_writes_it(tmp_path):
    """The file exactly as pydicom-seg writes it: a new FrameOfReferenceUID (razorx89/pydicom-seg#48), but every
    frame references an image of the open series by UID: placed on those images, with a warning."""
    ref = _series(tmp_path, "oblique")
    lab = _labels(ref.shape)
    out = _pydicom_seg_file(tmp_path, ref, lab, restore_frame_of_reference=False)
    seg = load_segmentation(out, ref)
    assert any("another frame of reference" in w and "references this series' images" in w for w in seg.warnings)
    assert int((seg.labels != lab).sum()) == 0
