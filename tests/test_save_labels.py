"""save_labels: integer NIfTI on the reference grid, atomic, never over the source."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from dicom_factory import canonical, make_affine, make_volume, run_dcm2niix
from seg_app.core import ExportError, Volume, atomic_write, load_scan, save_labels
from seg_app.core.dicom_write import write_dicom_series

SHAPE = (16, 20, 12)


def _nifti_reference(tmp_path, sform_code=2) -> Volume:
    img = nib.Nifti1Image(np.random.default_rng(0).normal(size=SHAPE).astype(np.float32), None)
    img.set_sform(make_affine("oblique"), code=sform_code)
    img.set_qform(make_affine("oblique"), code=1)
    nib.save(img, tmp_path / "scan.nii.gz")
    return load_scan(tmp_path / "scan.nii.gz")


def _labels(shape=SHAPE, max_label=2) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.int64)
    lab[3:8, 4:9, 2:5] = 1
    lab[10:12, 12:15, 7:9] = max_label
    return lab


def test_roundtrip_from_nifti_source(tmp_path):
    ref = _nifti_reference(tmp_path)
    out = save_labels(ref.with_array(_labels()[None]), ref, tmp_path / "mask.nii.gz")
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), _labels())
    np.testing.assert_allclose(img.get_sform(), ref.affine, atol=1e-6)
    np.testing.assert_allclose(img.get_qform(), ref.affine, atol=1e-4)
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 1  # copied
    back = load_scan(out)
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "scan.nii.gz"]  # no temp left


@pytest.mark.parametrize(("max_label", "dtype"), [(255, np.uint8), (300, np.int16), (70000, np.int32)])
def test_integer_type_fits_labels(tmp_path, max_label, dtype):
    ref = _nifti_reference(tmp_path)
    save_labels(_labels(max_label=max_label), ref, tmp_path / "m.nii")
    img = nib.load(tmp_path / "m.nii")
    assert img.get_data_dtype() == dtype and int(np.asarray(img.dataobj).max()) == max_label


def test_roundtrip_from_dicom_source_overlays_dcm2niix(tmp_path):
    truth = make_volume("oblique", low=0, high=30000)
    write_dicom_series(truth, tmp_path / "dcm", series_number=9)
    ref = load_scan(tmp_path / "dcm")
    lab = _labels()
    out = save_labels(lab[None].astype(np.float32), ref, tmp_path / "mask.nii.gz")  # float ints ok
    img = nib.load(out)
    assert (int(img.header["sform_code"]), int(img.header["qform_code"])) == (1, 1)

    conv = nib.as_closest_canonical(nib.load(run_dcm2niix(tmp_path / "dcm", tmp_path / "nii")["9"]))
    mask = nib.as_closest_canonical(img)
    np.testing.assert_allclose(mask.affine, conv.affine, atol=1e-3)
    # the labelled voxels sit on the same image values as in our own loaded grid
    image_c, _ = canonical(ref.array[0], ref.affine)
    mask_c = np.asarray(mask.dataobj)
    np.testing.assert_array_equal(conv.get_fdata(), image_c)
    for value in (1, 2):
        np.testing.assert_array_equal(
            np.sort(conv.get_fdata()[mask_c == value]), np.sort(ref.array[0][lab == value])
        )


def test_refuses_to_overwrite_the_source(tmp_path):
    ref = _nifti_reference(tmp_path)
    before = (tmp_path / "scan.nii.gz").read_bytes()
    with pytest.raises(ExportError, match="overwrite the source"):
        save_labels(_labels(), ref, tmp_path / "scan.nii.gz")
    assert (tmp_path / "scan.nii.gz").read_bytes() == before

    paths = write_dicom_series(make_volume(), tmp_path / "dcm")
    dref = load_scan(tmp_path / "dcm")
    with pytest.raises(ExportError):
        save_labels(_labels(), dref, paths[3])


def test_validates_shape_grid_and_values(tmp_path):
    ref = _nifti_reference(tmp_path)
    with pytest.raises(ExportError, match="does not match"):
        save_labels(np.zeros((16, 20, 11), np.uint8), ref, tmp_path / "m.nii.gz")
    with pytest.raises(ExportError, match="grid"):
        save_labels(Volume(_labels(), np.eye(4)), ref, tmp_path / "m.nii.gz")
    with pytest.raises(ExportError, match="non-integer"):
        save_labels(_labels() + 0.5, ref, tmp_path / "m.nii.gz")
    with pytest.raises(ExportError, match=".nii"):
        save_labels(_labels(), ref, tmp_path / "m.png")
    assert not (tmp_path / "m.nii.gz").exists()


def test_atomic_write_cleans_up_and_keeps_old_file(tmp_path, monkeypatch):
    ref = _nifti_reference(tmp_path)
    target = tmp_path / "mask.nii.gz"
    save_labels(_labels(), ref, target)
    old = target.read_bytes()

    def failing_save(img, filename):
        open(filename, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(ExportError, match="No space left"):
        save_labels(_labels(max_label=3), ref, target)
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "scan.nii.gz"]


def test_atomic_write_context_manager(tmp_path):
    with atomic_write(tmp_path / "a.txt") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".txt")
        tmp.write_text("done")
    assert (tmp_path / "a.txt").read_text() == "done"
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert (tmp_path / "a.txt").read_text() == "done" and len(list(tmp_path.iterdir())) == 1


def test_atomic_write_gives_usual_file_mode(tmp_path):
    """mkstemp's 0600 must not leak into outputs: other users (PACS import, colleagues) read them."""
    import os

    from seg_app.core.files import _UMASK, atomic_write

    out = tmp_path / "x.json"
    with atomic_write(out) as tmp:
        tmp.write_text("{}")
    assert out.stat().st_mode & 0o777 == 0o666 & ~_UMASK
