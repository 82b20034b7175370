"""Write a ``Volume`` as a classic one-file-per-slice DICOM series (tests, sample scans, benchmarks).

The objects are real MR / CT Image Storage instances (valid for ``dciodvfy``): the geometry comes from
the volume's RAS+ affine, converted to DICOM's LPS here (the only RAS<->LPS conversion on the write
side). Array axis ``i`` runs along the DICOM row direction (column index), ``j`` along the column
direction (row index) and ``k`` is the slice index, matching :mod:`seg_app.core.dicom_io`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

from seg_app.core.volume import Volume

__all__ = ["LPS_FROM_RAS", "write_dicom_series"]

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_SOP_CLASS = {"MR": MRImageStorage, "CT": CTImageStorage}

Rescale = tuple[float, float]


def _fmt_ds(values: Sequence[float]) -> list[str]:
    """Decimal-string values with enough digits for sub-micrometre geometry (DS max 16 chars)."""
    out = []
    for v in values:
        v = 0.0 if abs(v) < 5e-11 else float(v)
        s = f"{v:.10g}"
        if len(s) > 16:
            s = f"{v:.8g}"
        out.append(s)
    return out


def _value_range(data: np.ndarray) -> tuple[float, float, bool]:
    """(min, max, all integral) of the finite values, slice by slice to keep memory flat."""
    if data.dtype.kind in "iub":
        return float(data.min()), float(data.max()), True
    lo, hi, integral = np.inf, -np.inf, True
    for k in range(data.shape[2]):
        s = data[:, :, k]
        f = s[np.isfinite(s)]
        if f.size:
            lo, hi = min(lo, float(f.min())), max(hi, float(f.max()))
            integral = integral and bool(np.all(f == np.round(f)))
    return (lo, hi, integral) if lo <= hi else (0.0, 0.0, True)


def _stored(slice_: np.ndarray, pair: Rescale | None) -> np.ndarray:
    s = slice_.astype(np.float64)
    return np.round(s if pair is None else (s - pair[1]) / pair[0])


def _choose_rescale(data: np.ndarray, modality: str) -> tuple[Rescale, np.dtype]:
    """Pick (slope, intercept) and the stored integer type for ``data``."""
    lo, hi, integral = _value_range(data)
    if integral and lo >= -32768 and hi <= 32767:
        if modality == "CT" and lo >= -1024 and hi <= 65535 - 1024:
            return (1.0, -1024.0), np.dtype(np.uint16)  # typical CT storage
        return (1.0, 0.0), np.dtype(np.int16)
    if integral and lo >= 0 and hi <= 65535:
        return (1.0, 0.0), np.dtype(np.uint16)
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    return (slope, lo), np.dtype(np.uint16)


def _stored_dtype(data: np.ndarray, pairs: Sequence[Rescale | None]) -> np.dtype:
    lo = min(float(_stored(data[:, :, k], p).min()) for k, p in enumerate(pairs))
    hi = max(float(_stored(data[:, :, k], p).max()) for k, p in enumerate(pairs))
    if lo >= 0 and hi <= 65535:
        return np.dtype(np.uint16)
    if lo >= -32768 and hi <= 32767:
        return np.dtype(np.int16)
    raise ValueError("rescaled values do not fit 16-bit storage; choose another rescale")


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    modality: str = "MR",
    series_description: str = "seg_app series",
    series_number: int = 1,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    instance_number_order: str = "ascending",
    slice_thickness: float | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    file_names: Sequence[str] | Callable[[int], str] | None = None,
    rescale: Rescale | Sequence[Rescale] | None | str = "auto",
    patient_name: str = "Anonymous^Test",
    patient_id: str = "SEGAPP0001",
    study_date: str = "20240101",
    channel: int = 0,
) -> list[Path]:
    """Write channel ``channel`` of ``volume`` as one DICOM file per ``k`` slice.

    Args:
        volume: the image; its affine (RAS+) gives ImagePositionPatient / ImageOrientationPatient /
            PixelSpacing (converted to LPS). Columns 0 and 1 of the affine must be orthogonal; a
            sheared third column (gantry tilt) is written as is.
        folder: output folder (created).
        modality: "MR" or "CT" (MR / CT Image Storage).
        instance_number_order: "ascending" (InstanceNumber grows with ``k``) or "reversed".
        slice_thickness: SliceThickness to write (default: the real slice spacing).
        transfer_syntax: any syntax pydicom can encode (e.g. ExplicitVRLittleEndian, RLELossless).
        file_names: names per slice (sequence or ``f(k)``); default ``IM{k:04d}.dcm``.
        rescale: "auto" (int16/uint16 with a rescale when the values need it), ``(slope, intercept)``
            for all slices, a list of per-slice pairs, or ``None`` (values stored as integers).
        channel: which channel of a multi-channel volume to write.

    Returns:
        The written paths in ``k`` order.
    """
    modality = modality.upper()
    if modality not in _SOP_CLASS:
        raise ValueError(f"modality must be MR or CT, got {modality!r}")
    if instance_number_order not in ("ascending", "reversed"):
        raise ValueError("instance_number_order must be 'ascending' or 'reversed'")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    data = np.asarray(volume.array[channel])  # (I, J, K)
    n_i, n_j, n_k = data.shape
    lps = LPS_FROM_RAS @ volume.affine
    col_step, row_step, slice_step, origin = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3]
    d_col, d_row = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    row_cos, col_cos = col_step / d_col, row_step / d_row
    if abs(float(row_cos @ col_cos)) > 1e-6:
        raise ValueError("the affine's first two columns must be orthogonal to be written as DICOM")
    normal = np.cross(row_cos, col_cos)
    spacing_k = float(abs(slice_step @ normal)) if n_k > 1 else float(np.linalg.norm(slice_step))

    if rescale == "auto":
        pair, auto_dtype = _choose_rescale(data, modality)
        pairs: list[Rescale | None] = [pair] * n_k
    elif rescale is None:
        pairs = [None] * n_k
    elif isinstance(rescale, tuple) and len(rescale) == 2 and np.isscalar(rescale[0]):
        pairs = [(float(rescale[0]), float(rescale[1]))] * n_k
    else:
        pairs = [(float(s), float(b)) for s, b in rescale]  # type: ignore[union-attr]
        if len(pairs) != n_k:
            raise ValueError(f"rescale has {len(pairs)} pairs for {n_k} slices")

    dtype = auto_dtype if rescale == "auto" else _stored_dtype(data, pairs)
    if modality == "CT" and pairs[0] is None:
        pairs = [(1.0, 0.0)] * n_k  # CT Image module requires rescale attributes

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    now = _dt.datetime.now()
    sop_class = _SOP_CLASS[modality]
    ts = UID(transfer_syntax)
    if not ts.is_little_endian:
        raise ValueError("big-endian output is not supported (retired transfer syntax)")

    paths: list[Path] = []
    for k in range(n_k):
        inst = k + 1 if instance_number_order == "ascending" else n_k - k
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = study_date
        ds.SeriesDate = study_date
        ds.ContentDate = study_date
        ds.StudyTime = "120000"
        ds.SeriesTime = "120000"
        ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = ""
        ds.Modality = modality
        ds.Manufacturer = "seg_app"
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.Laterality = ""
        ds.InstanceNumber = inst
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.ImagePositionPatient = _fmt_ds(origin + k * slice_step)
        ds.ImageOrientationPatient = _fmt_ds(np.concatenate([row_cos, col_cos]))
        ds.PixelSpacing = _fmt_ds([d_row, d_col])  # row spacing (between rows), column spacing
        ds.SliceThickness = _fmt_ds([slice_thickness if slice_thickness is not None else spacing_k])[0]
        ds.SliceLocation = _fmt_ds([float((origin + k * slice_step) @ normal)])[0]
        if modality == "MR":
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.RepetitionTime = "8"
            ds.EchoTime = "3"
            ds.EchoTrainLength = "1"
            ds.MagneticFieldStrength = "3"
        else:
            ds.KVP = "120"
            ds.AcquisitionNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = n_j
        ds.Columns = n_i
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if dtype == np.int16 else 0
        if pairs[k] is not None and (modality == "CT" or pairs[k] != (1.0, 0.0)):
            ds.RescaleSlope = _fmt_ds([pairs[k][0]])[0]  # type: ignore[index]
            ds.RescaleIntercept = _fmt_ds([pairs[k][1]])[0]  # type: ignore[index]
            ds.RescaleType = "HU" if modality == "CT" else "US"
        pixels = np.ascontiguousarray(_stored(data[:, :, k], pairs[k]).T).astype(dtype)  # (rows=J, cols=I)
        ds.PixelData = pixels.tobytes()
        if ts.is_compressed:
            ds.compress(ts, pixels)
        else:
            ds.file_meta.TransferSyntaxUID = ts

        if file_names is None:
            name = f"IM{k:04d}.dcm"
        elif callable(file_names):
            name = file_names(k)
        else:
            name = file_names[k]
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
