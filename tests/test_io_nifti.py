"""NIfTI loading: best affine, scaling, 4D channels, 2D, non-finite values."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from dicom_factory import make_affine
from seg_app.core import load_scan
from seg_app.core.io import UnsupportedScanError

SHAPE = (16, 20, 12)


def _data(shape=SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 30, size=shape).astype(np.float32)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_3d_sform_affine_and_values(tmp_path, suffix):
    aff = make_affine("oblique")
    data = _data()
    path = tmp_path / f"scan{suffix}"
    nib.save(nib.Nifti1Image(data, aff), path)
    vol = load_scan(path)
    assert vol.array.shape == (1, *SHAPE) and vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(vol.array[0], data)
    assert vol.source_paths == (str(path),) and vol.name == "scan" and not vol.warnings


def test_qform_used_when_sform_unset(tmp_path):
    aff = make_affine("sagittal")
    img = nib.Nifti1Image(_data(), None)
    img.set_qform(aff, code=1)
    img.set_sform(np.diag([9.0, 9.0, 9.0, 1.0]), code=0)
    nib.save(img, tmp_path / "q.nii.gz")
    vol = load_scan(tmp_path / "q.nii.gz")
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)


def test_scl_slope_inter_applied(tmp_path):
    raw = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 1000
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.5, -10.0)
    nib.save(img, tmp_path / "s.nii")
    vol = load_scan(tmp_path / "s.nii")
    np.testing.assert_allclose(vol.array[0], raw * 2.5 - 10.0)
    assert vol.array.dtype == np.float32


def test_4d_multichannel_msd_style(tmp_path):
    data = np.stack([_data(seed=c) + 1000 * c for c in range(4)], axis=-1)  # (I, J, K, 4)
    nib.save(nib.Nifti1Image(data, make_affine("axial")), tmp_path / "brats.nii.gz")
    vol = load_scan(tmp_path / "brats.nii.gz")
    assert vol.array.shape == (4, *SHAPE) and vol.n_channels == 4
    for c in range(4):
        np.testing.assert_array_equal(vol.array[c], data[..., c])


def test_4d_time_series_rejected(tmp_path):
    data = np.zeros((8, 8, 6, 40), dtype=np.int16)
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(UnsupportedScanError, match="time series of 40 volumes") as err:
        load_scan(path)
    assert str(path) in str(err.value)


def test_2d_nifti_is_one_slice(tmp_path):
    data = _data(shape=(16, 20))
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 3.0, 1.0])), tmp_path / "slice.nii")
    vol = load_scan(tmp_path / "slice.nii")
    assert vol.shape == (16, 20, 1)
    np.testing.assert_array_equal(vol.array[0, :, :, 0], data)
    assert vol.spacing == pytest.approx((0.5, 0.5, 3.0))


def test_nan_and_inf_replaced_by_zero_with_warning(tmp_path):
    data = _data()
    data[0, 0, 0] = np.nan
    data[1, 2, 3] = np.inf
    data[2, 2, 2] = -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    vol = load_scan(tmp_path / "nan.nii.gz")
    assert np.isfinite(vol.array).all()
    assert vol.array[0, 0, 0, 0] == 0 and vol.array[0, 1, 2, 3] == 0 and vol.array[0, 2, 2, 2] == 0
    assert any("3 voxel(s) were NaN or infinite" in w for w in vol.warnings)

