"""DICOM loading: geometry against dcm2niix, sorting, rescale, codecs, multi-frame, warnings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless, generate_uid

from dicom_factory import (
    assert_same_as_nifti,
    make_volume,
    run_dcm2niix,
    write_presentation_state,
    write_rtstruct,
    write_sr,
)
from seg_app.core import MultipleSeriesError, NoImageSeriesError, Volume, list_series, load_scan
from seg_app.core import dicom_io, dicom_pixels, dicom_scan
from seg_app.core.dicom_write import write_dicom_series

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _assert_same_volume(loaded: Volume, truth: Volume, atol_mm: float = 1e-4) -> None:
    np.testing.assert_allclose(loaded.affine, truth.affine, atol=atol_mm, rtol=0)
    np.testing.assert_array_equal(loaded.array, truth.array)


def _copy_testdata(names: list[str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        src = get_testdata_file(n)
        assert src is not None, f"pydicom test file {n} not found (pip install pydicom-data)"
        out.append(Path(shutil.copy(src, folder / n)))
    return out


# ---- geometry against dcm2niix --------------------------------------------------------------
@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique"])
@pytest.mark.parametrize("slice_sign", [1.0, -1.0])
def test_orientations_match_truth_and_dcm2niix(tmp_path, orientation, slice_sign):
    truth = make_volume(orientation, slice_sign=slice_sign)
    write_dicom_series(truth, tmp_path / "dcm", series_number=3)
    vol = load_scan(tmp_path / "dcm")
    assert vol.array.dtype == np.float32 and vol.array.shape == (1, *truth.shape)
    # slices are sorted ascending along the normal, so a reversed stack comes back flipped in k
    expected = truth if slice_sign > 0 else _flip_k(truth)
    _assert_same_volume(vol, expected)
    assert_same_as_nifti(vol, run_dcm2niix(tmp_path / "dcm", tmp_path / "nii")["3"])
    assert not vol.warnings


def _flip_k(v: Volume) -> Volume:
    n_k = v.shape[2]
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, n_k - 1
    return v.replace(array=v.array[..., ::-1], affine=v.affine @ flip)


def test_oblique_keeps_exact_direction_cosines(tmp_path):
    truth = make_volume("oblique")
    write_dicom_series(truth, tmp_path)
    vol = load_scan(tmp_path)
    dirs = vol.affine[:3, :3] / np.linalg.norm(vol.affine[:3, :3], axis=0)
    np.testing.assert_allclose(dirs, truth.affine[:3, :3] / np.linalg.norm(truth.affine[:3, :3], axis=0), atol=1e-8)


def test_sorted_by_position_not_instance_number_or_file_name(tmp_path):
    truth = make_volume("axial")
    rng = np.random.default_rng(1)
    names = [f"{n:03d}" for n in rng.permutation(truth.shape[2])]  # shuffled names, no extension
    write_dicom_series(truth, tmp_path / "dcm", instance_number_order="reversed", file_names=names,
                       series_number=4)
    vol = load_scan(tmp_path / "dcm")
    _assert_same_volume(vol, truth)
    inst = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in vol.source_paths]
    assert inst == sorted(inst, reverse=True)
    assert_same_as_nifti(vol, run_dcm2niix(tmp_path / "dcm", tmp_path / "nii")["4"])


def test_slice_spacing_from_positions_not_slice_thickness(tmp_path):
    truth = make_volume("coronal", spacing=(0.7, 0.7, 2.0))
    write_dicom_series(truth, tmp_path / "dcm", slice_thickness=5.0, series_number=5)
    vol = load_scan(tmp_path / "dcm")
    assert vol.spacing == pytest.approx((0.7, 0.7, 2.0), abs=1e-6)
    assert list_series(tmp_path / "dcm")[0].spacing == pytest.approx((0.7, 0.7, 2.0), abs=1e-6)
    assert_same_as_nifti(vol, run_dcm2niix(tmp_path / "dcm", tmp_path / "nii")["5"])


def test_rle_compressed_series(tmp_path):
    truth = make_volume("sagittal")
    write_dicom_series(truth, tmp_path / "dcm", transfer_syntax=RLELossless, series_number=6)
    assert pydicom.dcmread(next((tmp_path / "dcm").iterdir())).file_meta.TransferSyntaxUID == RLELossless
    vol = load_scan(tmp_path / "dcm")
    _assert_same_volume(vol, truth)
    assert_same_as_nifti(vol, run_dcm2niix(tmp_path / "dcm", tmp_path / "nii")["6"])


def test_nested_sub_folders_and_single_file_entry(tmp_path):
    truth = make_volume("oblique")
    names = lambda k: f"sub{k % 3}/deeper/slice{k}"  # noqa: E731 - nested, no .dcm suffix
    paths = write_dicom_series(truth, tmp_path / "dcm", file_names=names, series_number=7)
    _assert_same_volume(load_scan(tmp_path / "dcm"), truth)
    assert_same_as_nifti(load_scan(tmp_path / "dcm"), run_dcm2niix(tmp_path / "dcm", tmp_path / "nii")["7"])
    # a single file loads its series from the files beside it (here: every third slice)
    part = load_scan(paths[0])
    assert part.shape[2] == len(list(paths[0].parent.iterdir()))


def test_two_series_and_rtstruct(tmp_path):
    folder = tmp_path / "study"
    study = generate_uid()
    a = make_volume("axial", seed=1)
    b = make_volume("oblique", seed=2, shape=(12, 10, 8))
    pa = write_dicom_series(a, folder / "a", series_number=1, series_description="T1", study_uid=study)
    write_dicom_series(b, folder / "b", series_number=2, series_description="FLAIR", study_uid=study)
    write_rtstruct(folder / "rtstruct.dcm", pa)
    write_sr(folder / "sr.dcm", study)
    write_presentation_state(folder / "ps.dcm", study)
    (folder / "notes.txt").write_text("not dicom")

    infos = list_series(folder)
    assert [(i.description, i.n_slices, i.rows, i.columns) for i in infos] == [("T1", 12, 20, 16), ("FLAIR", 8, 10, 12)]
    with pytest.raises(MultipleSeriesError) as err:
        load_scan(folder)
    assert len(err.value.series) == 2 and "T1" in str(err.value) and "FLAIR" in str(err.value)

    ref = run_dcm2niix(folder, tmp_path / "nii")
    for info, truth, number in ((infos[0], a, "1"), (infos[1], b, "2")):
        vol = load_scan(folder, series_uid=info.series_uid)
        _assert_same_volume(vol, truth)
        assert vol.series_uid == info.series_uid
        assert_same_as_nifti(vol, ref[number])


def test_non_image_objects_skipped_single_series_loads(tmp_path):
    truth = make_volume("axial")
    paths = write_dicom_series(truth, tmp_path)
    write_rtstruct(tmp_path / "rs.dcm", paths)
    write_sr(tmp_path / "sr.dcm", "1.2.3")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 200)
    _assert_same_volume(load_scan(tmp_path), truth)


def test_dicomdir_file_set_with_opaque_names(tmp_path):
    from pydicom.fileset import FileSet

    truth = make_volume("axial")
    paths = write_dicom_series(truth, tmp_path / "src")
    fs = FileSet()
    for p in paths:
        fs.add(p)
    fs.write(tmp_path / "media")
    assert (tmp_path / "media" / "DICOMDIR").exists()
    _assert_same_volume(load_scan(tmp_path / "media"), truth)


def test_metadata_for_export(tmp_path):
    truth = make_volume("axial")
    paths = write_dicom_series(truth, tmp_path, modality="CT", patient_name="Doe^Jane", patient_id="P42",
                               study_date="20230405", series_description="chest")
    vol = load_scan(tmp_path)
    assert vol.modality == "CT" and vol.series_description == "chest"
    assert vol.source_paths == tuple(str(p) for p in paths)
    ds0 = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert vol.series_uid == ds0.SeriesInstanceUID
    m = vol.meta
    assert m["PatientName"] == "Doe^Jane" and isinstance(m["PatientName"], str)
    assert (m["PatientID"], m["StudyDate"]) == ("P42", "20230405")
    assert m["StudyInstanceUID"] == ds0.StudyInstanceUID
    assert m["FrameOfReferenceUID"] == ds0.FrameOfReferenceUID
    assert m["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
    assert m["SOPInstanceUIDs"] == [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths]


# ---- values ---------------------------------------------------------------------------------
def test_per_slice_rescale_ct_hounsfield(tmp_path):
    truth = make_volume("axial", low=-1024, high=2000)
    n_k = truth.shape[2]
    pairs = [(1.0 + (k % 3), -1024.0 + 8 * k) for k in range(n_k)]
    # values representable exactly with each slice's slope/intercept
    arr = truth.array.copy()
    for k, (s, b) in enumerate(pairs):
        arr[0, :, :, k] = np.round((arr[0, :, :, k] - b) / s).clip(0, 30000) * s + b
    truth = truth.with_array(arr)
    paths = write_dicom_series(truth, tmp_path, modality="CT", rescale=pairs)
    slopes = {float(pydicom.dcmread(p, stop_before_pixels=True).RescaleSlope) for p in paths}
    assert slopes == {1.0, 2.0, 3.0}
    vol = load_scan(tmp_path)
    _assert_same_volume(vol, truth)
    assert vol.array.min() >= -1024


def test_pydicom_ct_small_in_hounsfield(tmp_path):
    (p,) = _copy_testdata(["CT_small.dcm"], tmp_path)
    ds = pydicom.dcmread(p)
    vol = load_scan(p)
    assert vol.modality == "CT" and vol.shape == (128, 128, 1)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.array[0, :, :, 0], hu.T)
    assert any("single-slice" in w.lower() for w in vol.warnings)
    # affine: IPP and pixel spacing of the file, in RAS
    ipp = np.array([float(x) for x in ds.ImagePositionPatient])
    np.testing.assert_allclose(vol.affine[:3, 3], ipp * [-1, -1, 1], atol=1e-6)


MR_VARIANTS = ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm",
               "MR_small_implicit.dcm", "MR_small_expb.dcm", "MR_small_jpeg_ls_lossless.dcm",
               "MR_small_padded.dcm"]


@pytest.mark.parametrize("name", MR_VARIANTS)
def test_mr_small_transfer_syntax_variants_identical(tmp_path, name):
    (ref_path,) = _copy_testdata(["MR_small.dcm"], tmp_path / "ref")
    (var_path,) = _copy_testdata([name], tmp_path / "var")
    ref, var = load_scan(ref_path), load_scan(var_path)
    np.testing.assert_array_equal(var.array, ref.array)
    np.testing.assert_allclose(var.affine, ref.affine, atol=1e-6)


EMRI_VARIANTS = ["emri_small_RLE.dcm", "emri_small_big_endian.dcm", "emri_small_jpeg_2k_lossless.dcm",
                 "emri_small_jpeg_ls_lossless.dcm"]


@pytest.mark.parametrize("name", EMRI_VARIANTS)
def test_enhanced_mr_transfer_syntax_variants_identical(tmp_path, name):
    (ref_path,) = _copy_testdata(["emri_small.dcm"], tmp_path / "ref")
    (var_path,) = _copy_testdata([name], tmp_path / "var")
    ref, var = load_scan(ref_path), load_scan(var_path)
    assert ref.shape == (64, 64, 10)
    np.testing.assert_array_equal(var.array, ref.array)
    # this file has no functional groups: loaded with a loud warning, not a crash
    assert any("no patient position" in w for w in ref.warnings)


def test_jpeg_lossless_and_extended_decode(tmp_path):
    import SimpleITK as sitk
    ll, ext = _copy_testdata(["JPEG-LL.dcm", "JPGExtended.dcm"], tmp_path)
    a = load_scan(ll)
    gdcm = sitk.GetArrayFromImage(sitk.ReadImage(str(ll)))[0].astype(np.float32)  # (rows, cols)
    np.testing.assert_array_equal(a.array[0, :, :, 0], gdcm.T)
    b = load_scan(ext)  # lossy JPEG (process 2/4) of the same image
    assert b.shape == a.shape
    assert np.mean(np.abs(b.array - a.array)) < 0.01 * float(a.array.max())


# ---- multi-frame ----------------------------------------------------------------------------
def test_enhanced_ct_per_frame_functional_groups(tmp_path):
    (p,) = _copy_testdata(["eCT_Supplemental.dcm"], tmp_path)
    ds = pydicom.dcmread(p)
    vol = load_scan(p)
    assert vol.shape == (512, 512, 2) and vol.source_paths == (str(p),)
    pos = [np.array([float(x) for x in f.PlanePositionSequence[0].ImagePositionPatient])
           for f in ds.PerFrameFunctionalGroupsSequence]
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array([float(x) for x in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    order = np.argsort([q @ np.cross(iop[:3], iop[3:]) for q in pos])  # along the slice normal
    slope = float(shared.PixelValueTransformationSequence[0].RescaleSlope)
    inter = float(shared.PixelValueTransformationSequence[0].RescaleIntercept)
    for k, f in enumerate(order):
        np.testing.assert_array_equal(vol.array[0, :, :, k], (ds.pixel_array[f] * slope + inter).T)
        np.testing.assert_allclose(vol.affine @ [0, 0, k, 1], [*(pos[f] * [-1, -1, 1]), 1], atol=1e-4)
    assert vol.spacing[2] == pytest.approx(10.0)
    assert vol.meta["FrameNumbers"] == [int(f) + 1 for f in order]


def test_enhanced_mr_from_highdicom_matches_truth_and_dcm2niix(tmp_path):
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    truth = make_volume("oblique", low=0, high=4000)
    paths = write_dicom_series(truth, tmp_path / "classic", series_number=8)
    rng = np.random.default_rng(3)
    legacy = [pydicom.dcmread(paths[i]) for i in rng.permutation(len(paths))]  # frames out of order
    enh = LegacyConvertedEnhancedMRImage(legacy, generate_uid(), 8, generate_uid(), 1)
    (tmp_path / "enh").mkdir()
    enh.save_as(tmp_path / "enh" / "enhanced.dcm")
    vol = load_scan(tmp_path / "enh" / "enhanced.dcm")
    _assert_same_volume(vol, truth)
    assert vol.source_paths == (str(tmp_path / "enh" / "enhanced.dcm"),)
    assert_same_as_nifti(vol, run_dcm2niix(tmp_path / "enh", tmp_path / "nii")["8"])


# ---- irregular series -----------------------------------------------------------------------
def test_missing_slice_is_resampled_with_warning(tmp_path):
    truth = make_volume("axial")
    paths = write_dicom_series(truth, tmp_path)
    paths[5].unlink()
    vol = load_scan(tmp_path)
    assert any("missing" in w and "resampled" in w for w in vol.warnings)
    assert vol.shape == truth.shape and vol.meta["resampled_slices"] is True
    np.testing.assert_allclose(vol.affine, truth.affine, atol=1e-4)  # geometry stays honest
    keep = [k for k in range(truth.shape[2]) if k != 5]
    np.testing.assert_array_equal(vol.array[..., keep], truth.array[..., keep])
    np.testing.assert_allclose(vol.array[..., 5], (truth.array[..., 4] + truth.array[..., 6]) / 2, rtol=1e-6)


def test_gantry_tilt_detected_and_affine_sheared(tmp_path):
    truth = make_volume("axial", tilt_deg=15.0)
    write_dicom_series(truth, tmp_path, modality="CT")
    vol = load_scan(tmp_path)
    assert any("tilt of 15.00 degrees" in w for w in vol.warnings)
    _assert_same_volume(vol, truth)


def test_duplicate_positions_and_localizer_warned(tmp_path):
    truth = make_volume("axial")
    uid = generate_uid()
    write_dicom_series(truth, tmp_path / "s", series_uid=uid)
    # a localizer in another plane and a second echo at the same positions, in the same series
    loc = make_volume("sagittal", shape=(16, 20, 1))
    write_dicom_series(loc, tmp_path / "loc", series_uid=uid)
    echo2 = truth.with_array(truth.array + 1)
    write_dicom_series(echo2, tmp_path / "e2", series_uid=uid, file_names=lambda k: f"zz{k}.dcm")
    vol = load_scan(tmp_path)
    assert vol.shape == truth.shape
    assert any("localizer" in w for w in vol.warnings)
    assert any("share a slice position" in w for w in vol.warnings)


# ---- header only ----------------------------------------------------------------------------
def test_list_series_reads_headers_only(tmp_path, monkeypatch):
    truth = make_volume("coronal", spacing=(0.5, 0.6, 3.0))
    write_dicom_series(truth, tmp_path, series_description="cor T2", series_number=12)

    def boom(*a, **k):
        raise AssertionError("pixel data decoded during list_series")

    monkeypatch.setattr(dicom_pixels, "pixel_array", boom)
    monkeypatch.setattr(dicom_scan, "_CACHE", {})
    (info,) = list_series(tmp_path)
    assert (info.description, info.modality, info.n_slices, info.rows, info.columns, info.series_number) == (
        "cor T2", "MR", 12, 20, 16, 12)
    assert info.spacing == pytest.approx((0.6, 0.5, 3.0))
    assert len(info.files) == 12 and "cor T2" in info.summary()



@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_native_fast_path_matches_pydicom_decoder(tmp_path, monkeypatch, syntax, modality):
    truth = make_volume("oblique", low=-1024, high=3000)
    write_dicom_series(truth, tmp_path, modality=modality, transfer_syntax=syntax)
    fast = load_scan(tmp_path)
    assert all(h.native_pixels for h in dicom_io.scan_folder(tmp_path).series[fast.series_uid])
    monkeypatch.setattr(dicom_scan, "_CACHE", {})
    monkeypatch.setattr(dicom_scan, "_native_pixels", lambda ds, fh: None)
    slow = load_scan(tmp_path)
    np.testing.assert_array_equal(fast.array, slow.array)
    _assert_same_volume(fast, truth)


def test_series_thumbnail_is_the_middle_slice_windowed(tmp_path):
    """The picker's preview: small uint8, from one decoded file, None when that file is unreadable."""
    from seg_app.core.dicom_io import series_thumbnail
    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.io import list_series
    from seg_app.core.volume import Volume

    arr = np.zeros((300, 200, 5), np.float32)
    arr[:, :, 2] = np.linspace(0, 1000, 200)[None, :]  # only the middle slice has a ramp
    write_dicom_series(Volume(arr, np.eye(4), modality="MR"), tmp_path / "s")
    (info,) = list_series(tmp_path / "s")
    thumb = series_thumbnail(info, size=96)
    assert thumb.dtype == np.uint8 and max(thumb.shape) <= 96 and thumb.max() > 200 and thumb.min() < 50
    Path(info.files[len(info.files) // 2]).write_bytes(b"\0" * 200)
    assert series_thumbnail(info) is None
