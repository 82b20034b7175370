"""DICOM series discovery and loading with exact patient geometry.

Conventions (shared with :mod:`seg_app.core.dicom_write` and matching dcm2niix/nibabel):

* array axis ``i`` = DICOM column index (along the first ImageOrientationPatient vector, the row
  direction), ``j`` = row index (along the second vector), ``k`` = slice index sorted by position
  along the slice normal ``row x col`` (never by InstanceNumber or file name);
* the affine is built in LPS from ImageOrientationPatient, PixelSpacing and ImagePositionPatient and
  converted to RAS+ once, here;
* the slice step is ``(last position - first position) / (K - 1)``, so a gantry tilt shows as a
  sheared affine (reported as a warning) instead of misplaced voxels;
* uneven slice spacing (a missing slice, variable spacing) is resampled onto a regular grid at the
  median spacing by linear interpolation between the two neighbouring acquired slices, with a
  warning; ``meta["resampled_slices"]`` is then ``True`` and ``source_paths`` lists the acquired
  files in position order (they no longer map one-to-one onto ``k``).

Headers are read once with ``stop_before_pixels`` and only the needed tags, cached per file
(path, mtime, size), and pixels are decoded by pydicom's pixel handlers (pylibjpeg plugins for
JPEG / JPEG-LS / JPEG 2000 / RLE) straight into a preallocated float32 array by a thread pool.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from seg_app.core.errors import MultipleSeriesError, NoImageSeriesError, ScanLoadError
from seg_app.core.errors import CorruptScanError, ScanTooLargeError, UnsupportedScanError
from seg_app.core.volume import SeriesInfo, Volume

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Refuse series whose float32 array would exceed this many voxels (8 GiB).
MAX_VOXELS = 2**31

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

_GEOMETRY_TOL_MM = 1e-3  # positions closer than this along the normal are the same slice
_TILT_TOL_DEG = 0.05


# --------------------------------------------------------------------------------------------
# header records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameHeader:
    """One 2D image: a single-frame file, or one frame of a multi-frame file."""

    path: str
    frame: int | None  # 0-based frame index in a multi-frame file, None for single-frame files
    sop_uid: str
    instance_number: int
    position: tuple[float, float, float] | None  # ImagePositionPatient, LPS mm
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6 values)
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    slope: float
    intercept: float
    rows: int
    columns: int


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


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
@dataclass
class SeriesGeometry:
    """How the frames of a series become a regular (I, J, K) grid."""

    frames: list[FrameHeader]  # acquired frames used, sorted along the normal
    affine: np.ndarray  # voxel -> RAS+ mm
    shape: tuple[int, int, int]  # (I, J, K) = (columns, rows, slices)
    warnings: list[str]
    # for resampled series: per output slice (lower acquired index, weight of the upper one)
    resample: list[tuple[int, float]] | None = None


def _normalise(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def plan_geometry(frames: Sequence[FrameHeader], headers: Sequence[FileHeader]) -> SeriesGeometry:
    """Sort the frames of one series along the slice normal and build the exact affine."""
    warnings: list[str] = []
    frames = list(frames)
    # keep the largest group of frames sharing size and orientation (drops localizers etc.)
    def key(f: FrameHeader) -> tuple:
        ori = tuple(round(x, 4) for x in f.orientation) if f.orientation else None
        return (f.rows, f.columns, ori)

    groups = Counter(key(f) for f in frames)
    if len(groups) > 1:
        best = groups.most_common(1)[0][0]
        dropped = len(frames) - groups[best]
        frames = [f for f in frames if key(f) == best]
        warnings.append(
            f"{dropped} image(s) of this series have another size or orientation (e.g. a localizer) "
            "and were left out."
        )
    f0 = frames[0]
    ps = f0.pixel_spacing
    if ps is None:
        ps = (1.0, 1.0)
        warnings.append("No PixelSpacing: assuming 1 mm pixels.")
    elif any(f.pixel_spacing is not None and not np.allclose(f.pixel_spacing, ps, atol=1e-4) for f in frames):
        warnings.append("PixelSpacing differs between slices; using the first slice's value.")
    row_spacing, col_spacing = ps
    thickness_hint = headers[0].spacing_between_slices or headers[0].slice_thickness or 1.0

    if any(f.position is None or f.orientation is None for f in frames):
        warnings.append(
            "The images have no patient position/orientation; slices are ordered by instance number "
            "and the orientation is a guess (do not use for measurements across planes)."
        )
        frames.sort(key=lambda f: (f.instance_number, f.path, f.frame or 0))
        lps = np.diag([col_spacing, row_spacing, thickness_hint, 1.0])
        return SeriesGeometry(frames, RAS_FROM_LPS @ lps, (f0.columns, f0.rows, len(frames)), warnings)

    row_cos = _normalise(np.asarray(f0.orientation[:3]))
    col_cos = _normalise(np.asarray(f0.orientation[3:]))
    normal = np.cross(row_cos, col_cos)
    dist = np.array([np.dot(f.position, normal) for f in frames])
    # along the normal; images at the same position (within the tolerance) by InstanceNumber
    order = np.lexsort((np.array([f.instance_number for f in frames]), np.round(dist / _GEOMETRY_TOL_MM)))
    frames = [frames[i] for i in order]
    dist = dist[order]

    # several images at one position: several echoes / time points / duplicates
    keep = np.concatenate([[True], np.diff(dist) > _GEOMETRY_TOL_MM])
    if not keep.all():
        n_dup = int((~keep).sum())
        warnings.append(
            f"{n_dup} image(s) share a slice position with another (several echoes, time points or "
            "duplicate files); the first image at each position was kept."
        )
        frames = [f for f, k in zip(frames, keep) if k]
        dist = dist[keep]

    positions = np.array([f.position for f in frames], dtype=np.float64)
    n_k = len(frames)
    origin = positions[0]
    resample = None
    if n_k == 1:
        step = normal * thickness_hint
        warnings.append(
            f"Single-slice image: loaded as a volume with 1 slice of {thickness_hint:g} mm "
            "(3D measurements are not meaningful)."
        )
    else:
        diffs = np.diff(dist)
        spacing = float(np.median(diffs))
        along = positions[-1] - positions[0]
        tol = max(_GEOMETRY_TOL_MM * 10, 0.01 * spacing)
        if np.max(np.abs(diffs - spacing)) > tol:
            n_out = int(np.floor((dist[-1] - dist[0]) / spacing + 0.5)) + 1
            step = along / (dist[-1] - dist[0]) * spacing
            targets = dist[0] + spacing * np.arange(n_out)
            lower = np.clip(np.searchsorted(dist, targets, side="right") - 1, 0, n_k - 2)
            w = np.clip((targets - dist[lower]) / (dist[lower + 1] - dist[lower]), 0.0, 1.0)
            resample = [(int(a), float(b)) for a, b in zip(lower, w)]
            n_missing = int(np.sum(np.round(diffs / spacing) - 1).clip(0))
            hint = f", probably {n_missing} missing slice(s)" if n_missing else ""
            warnings.append(
                f"Uneven slice spacing ({diffs.min():.3g} to {diffs.max():.3g} mm{hint}): resampled "
                f"onto a regular {spacing:.3g} mm grid of {n_out} slices by linear interpolation "
                "between neighbouring slices."
            )
        else:
            step = along / (n_k - 1)
        cos_tilt = abs(float(np.dot(_normalise(step), normal)))
        tilt_deg = float(np.degrees(np.arccos(min(1.0, cos_tilt))))
        if tilt_deg > _TILT_TOL_DEG:
            warnings.append(
                f"Gantry tilt of {tilt_deg:.2f} degrees: slices are sheared, which the affine keeps "
                "exactly (some viewers that ignore shear will show the volume slanted)."
            )
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing
    lps[:3, 1] = col_cos * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    n_out_k = len(resample) if resample is not None else n_k
    return SeriesGeometry(frames, RAS_FROM_LPS @ lps, (f0.columns, f0.rows, n_out_k), warnings, resample)


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
    geo = plan_geometry(frames, headers)
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


def _infos(scan: FolderScan) -> list[SeriesInfo]:
    infos = [series_info(uid, hs) for uid, hs in scan.series.items()]
    infos.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.description, s.series_uid))
    return infos


def list_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Every image series under ``folder`` (recursive), from headers only, ordered by series number."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    return _infos(scan_folder(folder))


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def _read_native(path: str, native: tuple[int, str], rows: int, cols: int) -> np.ndarray:
    offset, dtype = native
    raw = np.fromfile(path, dtype=dtype, count=rows * cols, offset=offset)
    if raw.size < rows * cols:
        raise CorruptScanError(f"The DICOM file {path} is truncated: its pixel data ends early.")
    return raw.reshape(rows, cols)


def _decode(path: str) -> np.ndarray:
    try:
        arr = pixel_array(path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - every decoder failure (incl. Rust panics of
        # pylibjpeg-rle, which derive from BaseException) means the same to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptScanError(
            f"The DICOM file {path} has pixel data that cannot be decoded (truncated, corrupt or an "
            f"unsupported compression): {reason}."
        ) from exc
    return arr


def _n_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _read_pixels(geo: SeriesGeometry, headers: Sequence[FileHeader]) -> np.ndarray:
    """Decode every acquired frame, rescaled, into a (K_acquired, rows, cols) float32 array."""
    frames = geo.frames
    n_cols, n_rows = geo.shape[0], geo.shape[1]
    n_vox = len(frames) * n_rows * n_cols
    if n_vox > MAX_VOXELS:
        raise ScanTooLargeError(
            f"The DICOM series in {Path(frames[0].path).parent} would need {n_vox:,} voxels, more "
            f"than this app can load ({MAX_VOXELS:,})."
        )
    buf = np.empty((len(frames), n_rows, n_cols), dtype=np.float32)
    by_file: dict[str, list[tuple[int, FrameHeader]]] = defaultdict(list)
    for k, f in enumerate(frames):
        by_file[f.path].append((k, f))
    native = {h.path: h.native_pixels for h in headers}

    def fill(item: tuple[str, list[tuple[int, FrameHeader]]]) -> None:
        path, targets = item
        fast = native.get(path)
        raw = _read_native(path, fast, n_rows, n_cols) if fast else _decode(path)
        if raw.ndim == 2:
            raw = raw[None]
        for k, f in targets:
            src = raw[f.frame or 0]
            if src.shape != (n_rows, n_cols):
                raise CorruptScanError(
                    f"The DICOM file {path} holds a {src.shape[1]}x{src.shape[0]} image where the "
                    f"header says {n_cols}x{n_rows}."
                )
            out = buf[k]
            if f.slope == 1.0:
                np.add(src, np.float32(f.intercept), out=out, casting="unsafe")
            else:
                np.multiply(src, np.float32(f.slope), out=out, casting="unsafe")
                out += np.float32(f.intercept)

    items = list(by_file.items())
    if len(items) == 1:
        fill(items[0])
    else:
        with ThreadPoolExecutor(max_workers=_n_workers()) as pool:
            list(pool.map(fill, items))
    return buf


def _choose_series(scan: FolderScan, where: Path, series_uid: str | None) -> str:
    uids = list(scan.series)
    if series_uid is not None:
        if series_uid in scan.series:
            return series_uid
        listing = "; ".join(i.summary() for i in _infos(scan)) or "none"
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
        infos = _infos(scan)
        listing = "; ".join(i.summary() for i in infos)
        raise MultipleSeriesError(
            f"{where} holds {len(infos)} image series; choose one: {listing}.", series=infos
        )
    return uids[0]


def load_dicom(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Load one DICOM image series as a float32 ``Volume`` (see the module docstring for geometry).

    Args:
        path: a folder (searched recursively) or one DICOM file (its series is loaded from the files
            in the same folder).
        series_uid: which series to load when the folder holds several.

    Raises:
        NoImageSeriesError, MultipleSeriesError, CorruptScanError, ScanTooLargeError,
        UnsupportedScanError.
    """
    path = Path(path)
    if path.is_file():
        h = read_header(path)
        if isinstance(h, str):
            raise CorruptScanError(f"The DICOM file {path} cannot be read ({h}).")
        if h is None:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            except Exception as exc:  # noqa: BLE001
                raise CorruptScanError(
                    f"{path} is not a DICOM file (NIfTI files must be named .nii or .nii.gz)."
                ) from exc
            sop = getattr(ds.get("SOPClassUID"), "name", "") or str(ds.get("SOPClassUID", "unknown"))
            raise UnsupportedScanError(f"The DICOM file {path} is not an image ({sop}).")
        series_uid = series_uid or h.series_uid
        scan = scan_folder(path.parent, recursive=False)
        where = path.parent
    else:
        scan = scan_folder(path)
        where = path
    uid = _choose_series(scan, where, series_uid)
    headers, n_copies = unique_instances(scan.series[uid], prefer=str(path) if path.is_file() else None)
    geo = plan_geometry([f for h in headers for f in h.frames], headers)

    stack = _read_pixels(geo, headers)  # (K_acq, rows, cols)
    if geo.resample is not None:
        out = np.empty((len(geo.resample), stack.shape[1], stack.shape[2]), dtype=np.float32)
        for m, (lo, w) in enumerate(geo.resample):
            np.multiply(stack[lo], np.float32(1.0 - w), out=out[m])
            if w > 0:
                out[m] += np.float32(w) * stack[lo + 1]
        stack = out
    array = stack.transpose(2, 1, 0)[None]  # (1, I=columns, J=rows, K): a view, no copy

    h0 = headers[0]
    warnings = list(geo.warnings)
    if n_copies:
        warnings.append(f"{n_copies} file(s) repeat an image (same SOPInstanceUID) of another file and were ignored.")
    if scan.unreadable:
        names = ", ".join(Path(p).name for p, _ in scan.unreadable[:5])
        warnings.append(f"{len(scan.unreadable)} DICOM-looking file(s) could not be read and were skipped: {names}.")
    meta = dict(h0.meta)
    meta["SOPInstanceUIDs"] = [f.sop_uid for f in geo.frames]
    meta["SeriesNumber"] = h0.series_number
    if any(f.frame is not None for f in geo.frames):
        meta["FrameNumbers"] = [(f.frame or 0) + 1 for f in geo.frames]
    if geo.resample is not None:
        meta["resampled_slices"] = True
    multi = len(headers) == 1 and len(h0.frames) > 1
    source_paths = (h0.path,) if multi else tuple(f.path for f in geo.frames)
    return Volume(
        array=array,
        affine=geo.affine,
        modality=h0.modality,
        source_paths=source_paths,
        series_uid=uid,
        series_description=h0.description,
        warnings=tuple(warnings),
        meta=meta,
    )


def series_thumbnail(info: SeriesInfo, size: int = 96) -> np.ndarray | None:
    """A small greyscale preview (uint8, at most ``size`` pixels a side) of a series' middle file.

    For pickers: decodes one file only, windows it to its 1-99 percentiles, and returns None when
    the file cannot be decoded (a preview must never stop a series from being listed).
    """
    if not info.files:
        return None
    try:
        arr = np.asarray(_decode(info.files[len(info.files) // 2]), dtype=np.float32)
    except ScanLoadError:
        return None
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):  # multi-frame: its middle frame
        arr = arr[arr.shape[0] // 2]
    if arr.ndim != 2 or arr.size == 0:
        return None
    step = max(1, int(np.ceil(max(arr.shape) / size)))
    arr = arr[::step, ::step]
    lo, hi = np.percentile(arr, [1, 99])
    return np.clip((arr - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)
