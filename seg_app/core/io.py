"""Public scan I/O: ``load_scan``, ``list_series``, ``save_labels``, ``atomic_write``.

The DICOM and NIfTI readers (:mod:`seg_app.core.dicom_io`, :mod:`seg_app.core.nifti_io`) are imported
on first use, so ``import seg_app.core`` stays light. The typed load errors live in
:mod:`seg_app.core.errors` with every other error (re-exported here for callers of this module), so
the readers import them from there and no import cycle exists between this module and the readers.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from seg_app.core.errors import (
    CorruptScanError,
    EmptyScanError,
    ExportError,
    ScanNotFoundError,
    ScanTooLargeError,
    UnsupportedScanError,
)
from seg_app.core.files import atomic_write, overwrites_source
from seg_app.core.volume import SeriesInfo, Volume

__all__ = [
    "CorruptScanError",
    "EmptyScanError",
    "ScanNotFoundError",
    "ScanTooLargeError",
    "UnsupportedScanError",
    "atomic_write",
    "label_array_on_grid",
    "list_series",
    "load_scan",
    "save_labels",
]


def _replace_non_finite(volume: Volume) -> Volume:
    """Replace NaN/Inf voxels by 0 and add a warning (cheap check first: the sum is finite)."""
    arr = volume.array
    if arr.dtype.kind != "f" or np.isfinite(np.add.reduce(arr, axis=None)):
        return volume
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return volume
    if not arr.flags.writeable:
        arr = arr.copy()
    arr[bad] = 0
    msg = f"{n_bad:,} voxel(s) were NaN or infinite and were set to 0."
    return volume.replace(array=arr, warnings=(*volume.warnings, msg))


def load_scan(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Load a scan as a float32 ``Volume`` with a voxel -> RAS+ mm affine.

    Args:
        path: a ``.nii`` / ``.nii.gz`` file, one DICOM file (its series is loaded from the files
            beside it), or a folder searched recursively for DICOM (any file names; DICOMDIR,
            RTSTRUCT, SR, RT plans, presentation states and other non-images are skipped).
        series_uid: the SeriesInstanceUID to load when a folder holds several image series.

    Returns:
        A ``Volume`` with ``array`` (C, I, J, K) float32. For DICOM, ``i`` is the column index,
        ``j`` the row index and ``k`` the slice index sorted along the slice normal; values are
        rescaled (CT in HU); ``meta`` holds StudyInstanceUID, FrameOfReferenceUID, PatientID,
        PatientName, StudyDate, SOPClassUID and SOPInstanceUIDs (in ``k`` order). Uneven slice
        spacing is resampled onto a regular grid (warning); gantry tilt keeps a sheared affine
        (warning). NaN/Inf voxels are replaced by 0 with a warning.

    Raises:
        ScanNotFoundError, EmptyScanError, CorruptScanError, ScanTooLargeError,
        UnsupportedScanError, NoImageSeriesError, MultipleSeriesError (all ``ScanLoadError``).
    """
    from seg_app.core import dicom_io, nifti_io

    p = Path(path)
    if not p.exists():
        raise ScanNotFoundError(f"{p} does not exist.")
    if p.is_file():
        if p.stat().st_size == 0:
            raise EmptyScanError(f"The file {p} is empty (0 bytes).")
        if nifti_io.is_nifti_path(p):
            volume = nifti_io.load_nifti(p)
        else:
            volume = dicom_io.load_dicom(p, series_uid)
    elif p.is_dir():
        volume = dicom_io.load_dicom(p, series_uid)
    else:
        raise UnsupportedScanError(f"{p} is neither a file nor a folder.")
    return _replace_non_finite(volume)


def list_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Every DICOM image series under ``folder`` (recursive), read from headers only.

    Raises:
        ScanNotFoundError: when ``folder`` does not exist.
    """
    from seg_app.core import dicom_io

    if not Path(folder).exists():
        raise ScanNotFoundError(f"{folder} does not exist.")
    return dicom_io.list_series(folder)


def _label_dtype(arr: np.ndarray) -> np.dtype:
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo >= 0 and hi <= 255:
        return np.dtype(np.uint8)
    if lo >= -32768 and hi <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


def label_array_on_grid(labels: Volume | np.ndarray, reference: Volume, what: str) -> np.ndarray:
    """The ``(I, J, K)`` integer-valued label array of ``labels``, checked against ``reference``'s grid.

    Args:
        labels: a one-channel label ``Volume`` on the reference grid, or an ``(I, J, K)``/``(1, I, J, K)`` array.
        reference: the scan the labels belong to.
        what: start of the error message, e.g. ``"Cannot save labels to mask.nii.gz"``.

    Raises:
        ExportError: several channels, another grid or shape, non-integer or non-finite values.
    """
    if isinstance(labels, Volume):
        if labels.n_channels != 1:
            raise ExportError(f"{what}: the label map has {labels.n_channels} channels, not 1.")
        if not np.allclose(labels.affine, reference.affine, atol=1e-4):
            raise ExportError(f"{what}: the label map is not on the reference scan's grid.")
        arr = labels.array[0]
    else:
        arr = np.asarray(labels)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
    if arr.shape != reference.shape:
        raise ExportError(f"{what}: label shape {arr.shape} does not match the scan's {reference.shape}.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ExportError(f"{what}: the label map has non-integer values.")
    elif arr.dtype.kind not in "biu":
        raise ExportError(f"{what}: labels of type {arr.dtype} are not integers.")
    return arr


def save_labels(labels: Volume | np.ndarray, reference: Volume, path: str | os.PathLike[str]) -> Path:
    """Write an integer label map on ``reference``'s grid as NIfTI, atomically.

    Args:
        labels: a label ``Volume`` or an array ``(I, J, K)`` / ``(1, I, J, K)`` on the reference grid.
        reference: the image the labels belong to (its affine goes into both sform and qform).
        path: output ``.nii`` / ``.nii.gz``; never one of ``reference.source_paths``.

    Returns:
        The written path. The data type is uint8 when the labels fit, else int16 / int32. The sform
        and qform codes are copied from a NIfTI reference, else 1 (scanner), as dcm2niix writes.

    Raises:
        ExportError: wrong shape or grid, non-integer labels, bad file name, overwriting the source,
            or a write failure.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise ExportError(f"Cannot save labels to {path}: the file name must end in .nii or .nii.gz.")
    if overwrites_source(path, reference.source_paths):
        raise ExportError(f"Refusing to save labels to {path}: that would overwrite the source scan.")
    arr = label_array_on_grid(labels, reference, f"Cannot save labels to {path}")
    data = arr.astype(_label_dtype(arr), copy=False)

    img = nib.Nifti1Image(data, reference.affine)
    sform_code = int(reference.meta.get("sform_code", 0) or 0) or 1
    qform_code = int(reference.meta.get("qform_code", 0) or 0) or 1
    img.set_sform(reference.affine, code=sform_code)
    img.set_qform(reference.affine, code=qform_code)
    img.header.set_xyzt_units("mm")
    img.header.set_intent("label")
    img.header.set_slope_inter(1.0, 0.0)
    if not path.parent.is_dir():
        raise ExportError(f"Cannot save labels to {path}: the folder {path.parent} does not exist.")
    try:
        with atomic_write(path) as tmp:
            nib.save(img, tmp)
    except OSError as exc:
        raise ExportError(f"Cannot save labels to {path}: {exc.strerror or exc}.") from exc
    return path
