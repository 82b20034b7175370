"""DICOM headers: read one file's header, walk a folder, group image files into series, summarise.

Headers are read once with ``stop_before_pixels`` and only the needed tags, and cached per file
(path, mtime, size); pixel data is never decoded here (see :mod:`seg_app.core.dicom_pixels`). The
slice order and spacing of a series come from :func:`seg_app.core.dicom_geometry.plan_geometry`.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from seg_app.core.dicom_geometry import MAX_VOXELS, FrameHeader, plan_geometry
from seg_app.core.errors import CorruptScanError, MultipleSeriesError, NoImageSeriesError, ScanLoadError
from seg_app.core.errors import ScanTooLargeError
from seg_app.core.volume import SeriesInfo

__all__ = [
    "FileHeader", "FolderScan", "choose_series", "is_image_dataset", "list_series", "read_header",
    "scan_folder", "series_info", "series_infos", "unique_instances",
]

#: SOP class UID prefixes of objects that are never scans (RT objects incl. dose and RT images,
#: structured reports, presentation states, raw data / registration / SEG, documents, waveforms).
_NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.481.",
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.66",
    "1.2.840.10008.5.1.4.1.1.104.",
    "1.2.840.10008.5.1.4.1.1.9.",
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
)

_HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesDescription",
    "SeriesNumber", "StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName",
    "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "Rows",
    "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
    "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "BitsStored",
    "PixelRepresentation",
]
_HEADER_TAG_NUMBERS = [Tag(tag_for_keyword(k)) for k in _HEADER_TAGS]  # ints parse faster
_NATIVE_LE = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)


@dataclass(frozen=True)
class FileHeader:
    """The header fields of one DICOM image file that series grouping and loading need."""

    path: str
    series_uid: str
    sop_class_uid: str
    modality: str
    description: str
    series_number: int | None
    frames: tuple[FrameHeader, ...]
    slice_thickness: float | None
    spacing_between_slices: float | None
    meta: dict[str, Any] = field(default_factory=dict)
    # uncompressed little-endian single-frame pixels: (file offset of the value, numpy dtype)
    native_pixels: tuple[int, str] | None = None

    @property
    def slice_spacing_hint(self) -> float | None:
        """Slice spacing in mm the header states (SpacingBetweenSlices, else SliceThickness), or None."""
        return self.spacing_between_slices or self.slice_thickness


@dataclass
class FolderScan:
    """Image files of a folder grouped by series, plus files that looked like DICOM but failed."""

    series: dict[str, list[FileHeader]]
    unreadable: list[tuple[str, str]]
    n_files: int
    n_non_image: int


def _float(v: Any, default: float | None = None) -> float | None:
    """A finite float from a DS/IS/number value, else ``default`` (NaN/Inf count as missing)."""
    try:
        out = float(v) if v is not None and v != "" else default
    except (TypeError, ValueError, OverflowError):
        return default
    return out if out is None or np.isfinite(out) else default


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _orientation(v: Any) -> tuple[float, ...] | None:
    """ImageOrientationPatient as 6 floats, or None when missing or degenerate (zero/parallel vectors)."""
    out = _floats(v, 6)
    if out is None:
        return None
    a, b = np.asarray(out[:3]), np.asarray(out[3:])
    with np.errstate(over="ignore", invalid="ignore"):
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    # DICOM direction cosines are unit vectors; allow sloppy rounding, not garbage
    if not (0.5 < na < 2.0 and 0.5 < nb < 2.0) or abs(float(a @ b)) / (na * nb) > 0.05:
        return None
    return out


def _spacing(v: Any) -> tuple[float, float] | None:
    """PixelSpacing as 2 positive floats, or None."""
    out = _floats(v, 2)
    return out if out is not None and min(out) > 0 else None  # type: ignore[return-value]


def _group_item(groups: Any, seq: str) -> Any:
    """First item of functional-group sequence ``seq`` in a functional groups item, or None."""
    if groups is None:
        return None
    s = groups.get(seq)
    return s[0] if s else None


def _frame_attr(per_frame: Any, shared: Any, seq: str, attr: str) -> Any:
    for groups in (per_frame, shared):
        item = _group_item(groups, seq)
        if item is not None and attr in item:
            return item.get(attr)
    return None


def is_image_dataset(ds: pydicom.Dataset) -> bool:
    """True when ``ds`` is a grayscale image object a scan can be made of (header only)."""
    sop = str(ds.get("SOPClassUID", ""))
    if any(sop.startswith(p) for p in _NON_IMAGE_SOP_PREFIXES):
        return False
    if "Rows" not in ds or "Columns" not in ds:
        return False
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return False
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).startswith("MONOCHROME")


def _native_pixels(ds: pydicom.Dataset, fh: Any) -> tuple[int, str] | None:
    """Where the uncompressed pixels of a single-frame little-endian file start, if that simple.

    ``fh`` is positioned on the Pixel Data tag (``dcmread(..., stop_before_pixels=True)`` rewinds
    there). Anything unusual returns None and the file is decoded by pydicom instead.
    """
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if ts not in _NATIVE_LE or bits not in (8, 16, 32) or int(_float(ds.get("NumberOfFrames"), 1) or 1) != 1:
        return None
    start = fh.tell()
    head = fh.read(12)
    if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":
        return None
    if ts == ImplicitVRLittleEndian:
        length, offset = int.from_bytes(head[4:8], "little"), start + 8
    else:
        length, offset = int.from_bytes(head[8:12], "little"), start + 12
    expected = int(ds.Rows) * int(ds.Columns) * bits // 8
    if length == 0xFFFFFFFF or length < expected:
        return None
    kind = "i" if int(ds.get("PixelRepresentation", 0) or 0) == 1 else "u"
    return offset, f"<{kind}{bits // 8}"


def _check_frame_count(path: str, ds: pydicom.Dataset, n_frames: int, rows: int, cols: int) -> None:
    """Refuse a NumberOfFrames the file cannot hold, before making one record per frame."""
    if n_frames * rows * cols > MAX_VOXELS:
        raise ScanTooLargeError(
            f"its header claims {n_frames:,} frames of {cols}x{rows} pixels, more than this app can load"
        )
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else "")
    bits = int(_float(ds.get("BitsAllocated"), 0) or 0)
    spp = int(_float(ds.get("SamplesPerPixel"), 1) or 1)
    raw_bytes = n_frames * rows * cols * spp * bits // 8
    if ts.is_transfer_syntax and not ts.is_compressed and not ts.is_deflated:
        needed = raw_bytes
    elif ts.is_transfer_syntax and ts.is_deflated:
        needed = raw_bytes // 1100  # deflate cannot compress better than about 1032:1
    else:  # compressed, or an unknown transfer syntax: each frame is at least one 8-byte item
        needed = n_frames * 8
    size = os.path.getsize(path)
    if needed > size:
        raise CorruptScanError(
            f"its header claims {n_frames:,} frames of {cols}x{rows} pixels ({needed:,} bytes) but the "
            f"file has only {size:,} bytes"
        )


def _file_header(path: str, ds: pydicom.Dataset, native: tuple[int, str] | None = None) -> FileHeader:
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows <= 0 or cols <= 0:
        raise CorruptScanError(f"its header says the image is {cols}x{rows} pixels")
    top_pos = _floats(ds.get("ImagePositionPatient"), 3)
    top_ori = _orientation(ds.get("ImageOrientationPatient"))
    top_ps = _spacing(ds.get("PixelSpacing"))
    top_slope = _float(ds.get("RescaleSlope"), 1.0) or 1.0
    top_inter = _float(ds.get("RescaleIntercept"), 0.0) or 0.0
    inst = int(_float(ds.get("InstanceNumber"), 0) or 0)
    sop_uid = str(ds.get("SOPInstanceUID", ""))
    n_frames = int(_float(ds.get("NumberOfFrames"), 1) or 1)
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if n_frames < 1:
        raise CorruptScanError(f"its header says it holds {n_frames} frames")
    if n_frames > 1:
        _check_frame_count(path, ds, n_frames, rows, cols)
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence")
    if n_frames > 1 and per_frame_seq is not None and len(per_frame_seq) != n_frames:
        raise CorruptScanError(
            f"its per-frame header (PerFrameFunctionalGroupsSequence) describes {len(per_frame_seq)} of "
            f"its {n_frames} frames, so the frame positions are unknown"
        )
    thickness = _float(ds.get("SliceThickness"))
    between = _float(ds.get("SpacingBetweenSlices"))

    frames: list[FrameHeader] = []
    if n_frames > 1 or per_frame_seq is not None or shared is not None:
        for f in range(n_frames):
            pf = per_frame_seq[f] if per_frame_seq is not None and f < len(per_frame_seq) else None
            pos = _floats(_frame_attr(pf, shared, "PlanePositionSequence", "ImagePositionPatient"), 3)
            ori = _orientation(_frame_attr(pf, shared, "PlaneOrientationSequence", "ImageOrientationPatient"))
            ps = _spacing(_frame_attr(pf, shared, "PixelMeasuresSequence", "PixelSpacing"))
            slope = _float(_frame_attr(pf, shared, "PixelValueTransformationSequence", "RescaleSlope"))
            inter = _float(_frame_attr(pf, shared, "PixelValueTransformationSequence", "RescaleIntercept"))
            thickness = thickness or _float(_frame_attr(pf, shared, "PixelMeasuresSequence", "SliceThickness"))
            between = between or _float(
                _frame_attr(pf, shared, "PixelMeasuresSequence", "SpacingBetweenSlices")
            )
            frames.append(
                FrameHeader(
                    path, f, sop_uid, inst, pos or top_pos, ori or top_ori, ps or top_ps,
                    slope if slope else top_slope, inter if inter is not None else top_inter, rows, cols,
                )
            )
    else:
        frames.append(
            FrameHeader(path, None, sop_uid, inst, top_pos, top_ori, top_ps, top_slope, top_inter, rows, cols)
        )
    meta = {
        "StudyInstanceUID": str(ds.get("StudyInstanceUID", "")),
        "FrameOfReferenceUID": str(ds.get("FrameOfReferenceUID", "")),
        "PatientID": str(ds.get("PatientID", "")),
        "PatientName": str(ds.get("PatientName", "")),
        "PatientBirthDate": str(ds.get("PatientBirthDate", "")),
        "PatientSex": str(ds.get("PatientSex", "")),
        "StudyDate": str(ds.get("StudyDate", "")),
        "StudyTime": str(ds.get("StudyTime", "")),
        "StudyID": str(ds.get("StudyID", "")),
        "AccessionNumber": str(ds.get("AccessionNumber", "")),
        "SOPClassUID": str(ds.get("SOPClassUID", "")),
        "TransferSyntaxUID": str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else "",
    }
    sn = ds.get("SeriesNumber")
    return FileHeader(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "")) or f"(no SeriesInstanceUID) {Path(path).parent}",
        sop_class_uid=meta["SOPClassUID"],
        modality=str(ds.get("Modality", "")),
        description=str(ds.get("SeriesDescription", "")),
        series_number=int(sn) if sn not in (None, "") else None,
        frames=tuple(frames),
        slice_thickness=thickness,
        spacing_between_slices=between,
        meta=meta,
        native_pixels=native,
    )


_CACHE: dict[str, tuple[int, int, FileHeader | str | None]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 200_000


def read_header(path: str | os.PathLike[str]) -> FileHeader | str | None:
    """Header-only read of one file.

    Returns:
        a ``FileHeader`` for an image object; ``None`` when the file is not DICOM or not an image
        object; a string (the reason) when the file looks like DICOM but cannot be parsed.
    """
    path = str(path)
    st = os.stat(path)
    key = (st.st_mtime_ns, st.st_size)
    cached = _CACHE.get(path)
    if cached is not None and cached[:2] == key:
        return cached[2]
    result: FileHeader | str | None
    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=_HEADER_TAG_NUMBERS)
            image = is_image_dataset(ds)
            native = _native_pixels(ds, fh) if image else None
        result = _file_header(path, ds, native) if image else None
    except InvalidDicomError:
        result = None
    except ScanLoadError as exc:  # a readable header that contradicts itself or is absurd
        result = str(exc)
    except Exception as exc:  # noqa: BLE001 - any parse failure of a DICOM-looking file
        result = f"{type(exc).__name__}: {exc}"
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[path] = (*key, result)
    return result


def _iter_files(folder: Path, recursive: bool) -> list[str]:
    if not recursive:
        return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.name.upper() != "DICOMDIR")
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        out.extend(os.path.join(root, f) for f in sorted(files) if f.upper() != "DICOMDIR")
    return out


def scan_folder(folder: str | os.PathLike[str], recursive: bool = True) -> FolderScan:
    """Read the headers of every file under ``folder`` and group image files by series UID."""
    files = _iter_files(Path(folder), recursive)
    series: dict[str, list[FileHeader]] = defaultdict(list)
    unreadable: list[tuple[str, str]] = []
    n_non_image = 0
    for path, h in zip(files, map(read_header, files)):
        if isinstance(h, FileHeader):
            series[h.series_uid].append(h)
        elif isinstance(h, str):
            unreadable.append((path, h))
        else:
            n_non_image += 1
    return FolderScan(dict(series), unreadable, len(files), n_non_image)



def unique_instances(headers: Sequence[FileHeader], prefer: str | None = None) -> tuple[list[FileHeader], int]:
    """Drop files repeating an SOPInstanceUID already seen (copies); ``prefer`` wins its duplicates.

    Returns:
        The kept headers sorted by path, and how many were dropped.
    """
    ordered = sorted(headers, key=lambda h: (h.path != prefer, h.path))
    seen: set[str] = set()
    kept = []
    for h in ordered:
        uid = h.frames[0].sop_uid
        if uid and uid in seen:
            continue
        seen.add(uid)
        kept.append(h)
    kept.sort(key=lambda h: h.path)
    return kept, len(headers) - len(kept)


def series_info(series_uid: str, headers: Sequence[FileHeader]) -> SeriesInfo:
    """Header-only summary of one series."""
    headers, _ = unique_instances(headers)
    frames = [f for h in headers for f in h.frames]
    geo = plan_geometry(frames, headers[0].slice_spacing_hint)
    sp = np.linalg.norm(geo.affine[:3, :3], axis=0)
    h0 = headers[0]
    return SeriesInfo(
        series_uid=series_uid,
        description=h0.description,
        modality=h0.modality,
        n_slices=len(frames),
        rows=frames[0].rows,
        columns=frames[0].columns,
        spacing=(float(sp[1]), float(sp[0]), float(sp[2])),
        files=tuple(sorted(h.path for h in headers)),
        series_number=h0.series_number,
        study_uid=h0.meta.get("StudyInstanceUID", ""),
        patient_id=h0.meta.get("PatientID", ""),
    )


def series_infos(scan: FolderScan) -> list[SeriesInfo]:
    """Header-only summaries of every series of ``scan``, ordered by series number."""
    infos = [series_info(uid, hs) for uid, hs in scan.series.items()]
    infos.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.description, s.series_uid))
    return infos


def list_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Every image series under ``folder`` (recursive), from headers only, ordered by series number."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    return series_infos(scan_folder(folder))


def choose_series(scan: FolderScan, where: Path, series_uid: str | None) -> str:
    """The UID of the one series to load from ``scan`` (found under ``where``).

    Raises:
        NoImageSeriesError: no (such) image series; MultipleSeriesError: several and none chosen.
    """
    uids = list(scan.series)
    if series_uid is not None:
        if series_uid in scan.series:
            return series_uid
        listing = "; ".join(i.summary() for i in series_infos(scan)) or "none"
        raise NoImageSeriesError(
            f"{where} holds no image series with UID {series_uid} (image series found: {listing})."
        )
    if not uids and scan.n_files == 0:
        raise NoImageSeriesError(f"The folder {where} holds no files.")
    if not uids:
        extra = f"; {len(scan.unreadable)} file(s) looked like DICOM but could not be read" if scan.unreadable else ""
        raise NoImageSeriesError(
            f"{where} holds no DICOM image series ({scan.n_files} file(s) looked at, "
            f"{scan.n_non_image} not DICOM images{extra})."
        )
    if len(uids) > 1:
        infos = series_infos(scan)
        listing = "; ".join(i.summary() for i in infos)
        raise MultipleSeriesError(
            f"{where} holds {len(infos)} image series; choose one: {listing}.", series=infos
        )
    return uids[0]

