"""Bad input: typed ScanLoadError subclasses with one-sentence messages naming the file."""

from __future__ import annotations

import gzip
import resource

import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_factory import make_volume, write_rtstruct
from seg_app.core import NoImageSeriesError, ScanLoadError, load_scan
from seg_app.core.dicom_write import write_dicom_series
from seg_app.core.io import (
    CorruptScanError,
    EmptyScanError,
    ScanNotFoundError,
    ScanTooLargeError,
    UnsupportedScanError,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _one_sentence(err: BaseException, name: str) -> None:
    msg = str(err)
    assert name in msg, msg
    assert "\n" not in msg and msg.endswith("."), msg


def _nifti_bytes(tmp_path, shape=(16, 20, 12), gz=False) -> bytes:
    path = tmp_path / ("tmp.nii.gz" if gz else "tmp.nii")
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=shape).astype(np.float32), np.eye(4)), path)
    data = path.read_bytes()
    path.unlink()
    return data


def test_missing_path(tmp_path):
    with pytest.raises(ScanNotFoundError) as err:
        load_scan(tmp_path / "nope.nii.gz")
    _one_sentence(err.value, "nope.nii.gz")


def test_empty_file(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(EmptyScanError) as err:
        load_scan(tmp_path / "empty.dcm")
    _one_sentence(err.value, "empty.dcm")


def test_truncated_nii_gz(tmp_path):
    data = _nifti_bytes(tmp_path, gz=True)
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptScanError, match="truncated") as err:
        load_scan(tmp_path / "cut.nii.gz")
    _one_sentence(err.value, "cut.nii.gz")


def test_truncated_nii(tmp_path):
    data = _nifti_bytes(tmp_path)
    (tmp_path / "cut.nii").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptScanError, match="truncated") as err:
        load_scan(tmp_path / "cut.nii")
    _one_sentence(err.value, "cut.nii")


def test_text_file_named_nii(tmp_path):
    (tmp_path / "notes.nii").write_text("patient notes, definitely not an image\n" * 20)
    with pytest.raises(CorruptScanError) as err:
        load_scan(tmp_path / "notes.nii")
    _one_sentence(err.value, "notes.nii")


def test_random_bytes_named_dcm(tmp_path):
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CorruptScanError) as err:
        load_scan(tmp_path / "noise.dcm")
    _one_sentence(err.value, "noise.dcm")


@pytest.mark.parametrize("gz", [False, True])
def test_absurd_nifti_header_refused_before_allocating(tmp_path, gz):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((30000, 30000, 30000))  # 2.7e13 voxels, ~100 TB
    raw = bytes(hdr.binaryblock) + b"\0" * 4 + b"\0" * 32
    name = "huge.nii.gz" if gz else "huge.nii"
    (tmp_path / name).write_bytes(gzip.compress(raw) if gz else raw)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ScanTooLargeError) as err:
        load_scan(tmp_path / name)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: no big allocation
    _one_sentence(err.value, name)


def test_gz_header_claiming_more_than_it_can_hold(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((1000, 1000, 1000))  # under the voxel cap, but 4 GB from a few bytes
    raw = bytes(hdr.binaryblock) + b"\0" * 4 + b"\0" * 64
    (tmp_path / "liar.nii.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(CorruptScanError) as err:
        load_scan(tmp_path / "liar.nii.gz")
    _one_sentence(err.value, "liar.nii.gz")


def test_five_dimensional_nifti_unsupported(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2, 3), np.float32), np.eye(4)), tmp_path / "5d.nii")
    with pytest.raises(UnsupportedScanError) as err:
        load_scan(tmp_path / "5d.nii")
    _one_sentence(err.value, "5d.nii")


def test_folder_without_image_series(tmp_path):
    paths = write_dicom_series(make_volume(shape=(4, 4, 2)), tmp_path / "tmp")
    (tmp_path / "folder").mkdir()
    write_rtstruct(tmp_path / "folder" / "rs.dcm", paths)
    (tmp_path / "folder" / "readme.txt").write_text("hello")
    with pytest.raises(NoImageSeriesError) as err:
        load_scan(tmp_path / "folder")
    _one_sentence(err.value, "folder")
    with pytest.raises(NoImageSeriesError):
        load_scan(tmp_path / "folder", series_uid="1.2.3.4")
    with pytest.raises(UnsupportedScanError, match="not an image"):
        load_scan(tmp_path / "folder" / "rs.dcm")


def test_empty_folder(tmp_path):
    with pytest.raises(NoImageSeriesError):
        load_scan(tmp_path)


def test_unknown_series_uid(tmp_path):
    write_dicom_series(make_volume(), tmp_path)
    with pytest.raises(NoImageSeriesError, match="no image series with UID 9.9.9") as err:
        load_scan(tmp_path, series_uid="9.9.9")
    assert isinstance(err.value, ScanLoadError)


def test_series_with_truncated_slice(tmp_path):
    paths = write_dicom_series(make_volume(), tmp_path)
    data = paths[4].read_bytes()
    paths[4].write_bytes(data[: len(data) - 200])  # cut in the middle of the pixel data
    with pytest.raises(CorruptScanError) as err:
        load_scan(tmp_path)
    _one_sentence(err.value, paths[4].name)


def test_single_slice_dicom_loads_as_one_slice(tmp_path):
    vol = make_volume(shape=(16, 20, 1))
    (p,) = write_dicom_series(vol, tmp_path)
    loaded = load_scan(p)
    assert loaded.shape == (16, 20, 1)
    np.testing.assert_array_equal(loaded.array, vol.array)
    assert any("single-slice" in w.lower() for w in loaded.warnings)
    assert pydicom.dcmread(p).Rows == 20


def test_rgb_and_empty_nifti_unsupported(tmp_path):
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((16, 0, 8), np.float32), np.eye(4)), tmp_path / "empty_dim.nii")
    for name in ("rgb.nii.gz", "empty_dim.nii"):
        with pytest.raises(UnsupportedScanError) as err:
            load_scan(tmp_path / name)
        _one_sentence(err.value, name)
