"""DICOM SEG export: dciodvfy-valid, exact round trip through highdicom, same mask as the NIfTI export."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from corpus import corpus_volume, tiny_spec, write_multiframe
from dicom_factory import make_affine
from seg_app.core.dicom_seg import export_dicom_seg, read_dicom_seg
from seg_app.core.dicom_write import write_dicom_series
from seg_app.core.errors import ExportError, ScanLoadError
from seg_app.core.io import load_scan, save_labels
from seg_app.core.volume import Volume

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SHAPE = (18, 14, 9)


def dciodvfy_errors(path) -> list[str]:
    """Lines of ``dciodvfy`` output starting with "Error" (warnings are allowed)."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")]


def needs_dciodvfy(fn):
    """dciodvfy is a hard requirement of the suite (``make test`` installs Debian's dicom3tools)."""
    assert shutil.which("dciodvfy"), "dciodvfy not found: install Debian's dicom3tools (scripts/install_system_deps.sh)"
    return fn


def _labels_for(shape: tuple[int, int, int]) -> np.ndarray:
    """Asymmetric label map (labels 1 and 3, not consecutive): any axis mix-up shows."""
    lab = np.zeros(shape, np.uint8)
    lab[2:7, 3:9, 1:4] = 1
    lab[10:13, 1:3, 5:8] = 3
    lab[15, 12, 8] = 1
    return lab


def _series(tmp_path, orientation: str, order: str = "ascending", name: str = "series") -> Volume:
    vol = corpus_volume(SHAPE, affine=make_affine(orientation, spacing=(0.7, 0.9, 2.5)))
    write_dicom_series(vol, tmp_path / name, instance_number_order=order, series_description=f"{orientation} T1")
    return load_scan(tmp_path / name)


CASES = [("axial", "ascending"), ("axial", "reversed"), ("oblique", "reversed"), ("sagittal", "ascending"),
         ("coronal", "reversed")]


@pytest.mark.parametrize("orientation,order", CASES)
def test_round_trip_matches_nifti_export(tmp_path, orientation, order):
    ref = _series(tmp_path, orientation, order)
    lab = _labels_for(ref.shape)
    labels = ref.with_array(lab[None])
    seg_path = export_dicom_seg(labels, ref, tmp_path / "out_seg.dcm", spec=tiny_spec())
    back = read_dicom_seg(seg_path, ref)
    np.testing.assert_array_equal(back.array[0], lab)
    np.testing.assert_array_equal(back.affine, ref.affine)

    nii = save_labels(labels, ref, tmp_path / "out_labels.nii.gz")
    img = nib.load(nii)
    np.testing.assert_array_equal(np.asarray(img.dataobj), back.array[0])
    np.testing.assert_allclose(img.affine, back.affine, atol=1e-4)


@pytest.mark.parametrize("orientation,order", [("oblique", "reversed"), ("axial", "ascending")])
def test_seg_geometry_matches_source_in_world_space(tmp_path, orientation, order):
    """Independently of the instance references: highdicom's own volume of the SEG (from plane
    positions/orientation) lies where our labels are, in patient space."""
    ref = _series(tmp_path, orientation, order)
    lab = _labels_for(ref.shape)
    seg_path = export_dicom_seg(ref.with_array(lab[None]), ref, tmp_path / "o_seg.dcm")
    seg = hd.seg.segread(seg_path)
    vol = seg.get_volume(combine_segments=True, relabel=False)  # may cover only the non-empty frames
    numbers = {int(n): int(seg.get_segment_description(n).tracking_id.split()[1]) for n in seg.segment_numbers}
    arr = np.asarray(vol.array)  # (slice, row, column)
    idx = np.argwhere(arr > 0)
    # highdicom's affine maps (slice, row, column) -> LPS; ours (column, row, slice) -> RAS
    lps = idx @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    ijk = ref.world_to_voxel(lps * np.array([-1.0, -1.0, 1.0]))
    np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-3)
    ijk = np.round(ijk).astype(int)
    got = np.zeros_like(lab)
    got[tuple(ijk.T)] = [numbers[int(v)] for v in arr[tuple(idx.T)]]
    np.testing.assert_array_equal(got, lab)


@needs_dciodvfy
@pytest.mark.parametrize("orientation,order", [("oblique", "reversed"), ("axial", "ascending")])
def test_dciodvfy_has_no_errors(tmp_path, orientation, order):
    ref = _series(tmp_path, orientation, order)
    path = export_dicom_seg(ref.with_array(_labels_for(ref.shape)[None]), ref, tmp_path / "x_seg.dcm",
                            spec=tiny_spec(), manually_edited=True)
    assert dciodvfy_errors(path) == []


@needs_dciodvfy
def test_empty_mask_gives_valid_empty_seg(tmp_path):
    ref = _series(tmp_path, "axial")
    path = export_dicom_seg(np.zeros(ref.shape, np.uint8), ref, tmp_path / "empty_seg.dcm")
    assert dciodvfy_errors(path) == []
    back = read_dicom_seg(path, ref)
    assert back.shape == ref.shape and not back.array.any()


def test_segment_descriptions_and_references(tmp_path):
    ref = _series(tmp_path, "oblique", "reversed")
    spec = tiny_spec()
    lab = _labels_for(ref.shape)
    path = export_dicom_seg(ref.with_array(lab[None]), ref, tmp_path / "s_seg.dcm", spec=spec,
                            label_names={3: "oedema"}, series_description="AI test", manually_edited=True)
    ds = pydicom.dcmread(path)
    src = pydicom.dcmread(ref.source_paths[0], stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.PatientID == src.PatientID
    assert ds.SeriesDescription == "AI test"
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    refd = ds.ReferencedSeriesSequence[0]
    assert refd.SeriesInstanceUID == ref.series_uid
    assert {i.ReferencedSOPInstanceUID for i in refd.ReferencedInstanceSequence} == set(ref.meta["SOPInstanceUIDs"])
    segs = ds.SegmentSequence
    assert [s.SegmentLabel for s in segs] == ["tumour", "oedema"]
    assert [s.TrackingID for s in segs] == ["label 1", "label 3"]
    for s in segs:
        assert s.SegmentAlgorithmType == "SEMIAUTOMATIC"
        assert s.SegmentAlgorithmName == spec.name
        assert s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == spec.version
        assert s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    rgb = hd.color.CIELabColor.from_dicom_value(tuple(segs[0].RecommendedDisplayCIELabValue)).to_rgb()
    assert np.allclose(rgb, spec.labels[1].color, atol=2)
    # each SEG frame points at the source slice of the same k
    sops = ref.meta["SOPInstanceUIDs"]
    for fr in ds.PerFrameFunctionalGroupsSequence:
        src_uid = fr.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert src_uid in sops


def test_spec_declares_segments_even_when_absent(tmp_path):
    ref = _series(tmp_path, "axial")
    path = export_dicom_seg(np.zeros(ref.shape, np.uint8), ref, tmp_path / "z_seg.dcm", spec=tiny_spec())
    ds = pydicom.dcmread(path)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["tumour"]
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_multiframe_source_round_trip(tmp_path):
    vol = corpus_volume(SHAPE, affine=make_affine("oblique", spacing=(0.7, 0.9, 2.5)))
    write_multiframe(vol, tmp_path / "enhanced.dcm")
    ref = load_scan(tmp_path / "enhanced.dcm")
    lab = _labels_for(ref.shape)
    path = export_dicom_seg(ref.with_array(lab[None]), ref, tmp_path / "mf_seg.dcm")
    back = read_dicom_seg(path, ref)
    np.testing.assert_array_equal(back.array[0], lab)
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(path) == []


def test_nifti_source_is_refused(tmp_path):
    vol = corpus_volume(SHAPE)
    nib.save(nib.Nifti1Image(vol.array[0], vol.affine), tmp_path / "scan.nii.gz")
    ref = load_scan(tmp_path / "scan.nii.gz")
    with pytest.raises(ExportError, match=r"^SEG export needs a DICOM source scan"):
        export_dicom_seg(np.zeros(ref.shape, np.uint8), ref, tmp_path / "n_seg.dcm")
    assert not (tmp_path / "n_seg.dcm").exists()


def test_resampled_series_is_refused(tmp_path):
    vol = corpus_volume(SHAPE, affine=make_affine("axial"))
    paths = write_dicom_series(vol, tmp_path / "gap")
    paths[4].unlink()  # a missing slice: the loader resamples onto a regular grid
    ref = load_scan(tmp_path / "gap")
    assert ref.meta.get("resampled_slices")
    with pytest.raises(ExportError, match="resampled"):
        export_dicom_seg(np.zeros(ref.shape, np.uint8), ref, tmp_path / "r_seg.dcm")


def test_refuses_to_overwrite_a_source_file(tmp_path):
    ref = _series(tmp_path, "axial")
    target = ref.source_paths[3]
    before = open(target, "rb").read()
    with pytest.raises(ExportError, match="overwrite"):
        export_dicom_seg(np.zeros(ref.shape, np.uint8), ref, target)
    assert open(target, "rb").read() == before


@pytest.mark.parametrize(
    "labels,match",
    [(np.zeros((3, 3, 3), np.uint8), "does not match"), (np.full(SHAPE, 0.5), "non-integer"),
     (np.full(SHAPE, -1, np.int16), "negative")],
)
def test_bad_label_maps_are_refused(tmp_path, labels, match):
    ref = _series(tmp_path, "axial")
    with pytest.raises(ExportError, match=match):
        export_dicom_seg(labels, ref, tmp_path / "b_seg.dcm")
    assert list(tmp_path.glob("*seg*")) == []


def test_missing_output_folder_is_a_typed_error(tmp_path):
    ref = _series(tmp_path, "axial")
    with pytest.raises(ExportError, match="does not exist"):
        export_dicom_seg(np.zeros(ref.shape, np.uint8), ref, tmp_path / "nope" / "x_seg.dcm")


def test_read_rejects_non_seg_and_wrong_reference(tmp_path):
    ref = _series(tmp_path, "axial")
    with pytest.raises(ScanLoadError):
        read_dicom_seg(ref.source_paths[0], ref)
    path = export_dicom_seg(_labels_for(ref.shape), ref, tmp_path / "w_seg.dcm")
    other = _series(tmp_path, "axial", name="other")
    with pytest.raises(ScanLoadError):
        read_dicom_seg(path, other)
