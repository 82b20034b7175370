"""DICOM series discovery and loading with exact patient geometry: the public facade.

The work is split in three modules; this one puts them together into a :class:`Volume`:

* :mod:`seg_app.core.dicom_scan`: header-only reads (cached per file), folder walking, grouping
  into series, :func:`list_series` summaries, choosing the series to load;
* :mod:`seg_app.core.dicom_geometry`: pure geometry, no file I/O: slices sorted by position along
  the slice normal ``row x col`` (never by InstanceNumber or file name), an exact LPS affine
  converted to RAS+ once, gantry tilt kept as shear, uneven spacing (a missing slice) planned as a
  linear resampling onto a regular grid at the median spacing;
* :mod:`seg_app.core.dicom_pixels`: pixel decoding, rescale, multi-frame, the resampling itself
  and :func:`series_thumbnail`.

Array axis ``i`` = DICOM column index, ``j`` = row index, ``k`` = slice index (shared with
:mod:`seg_app.core.dicom_write`, matching dcm2niix/nibabel). When slices were resampled,
``meta["resampled_slices"]`` is ``True`` and ``source_paths`` lists the acquired files in position
order (they no longer map one-to-one onto ``k``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom

from seg_app.core.dicom_geometry import MAX_VOXELS, RAS_FROM_LPS, FrameHeader, SeriesGeometry, plan_geometry
from seg_app.core.dicom_pixels import read_pixels, resample_slices, series_thumbnail
from seg_app.core.dicom_scan import (
    FileHeader,
    FolderScan,
    choose_series,
    is_image_dataset,
    list_series,
    read_header,
    scan_folder,
    series_info,
    unique_instances,
)
from seg_app.core.errors import CorruptScanError, UnsupportedScanError
from seg_app.core.volume import Volume

__all__ = [
    "MAX_VOXELS", "RAS_FROM_LPS", "FileHeader", "FolderScan", "FrameHeader", "SeriesGeometry",
    "is_image_dataset", "list_series", "load_dicom", "plan_geometry", "read_header", "scan_folder",
    "series_info", "series_thumbnail", "unique_instances",
]


def load_dicom(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Load one DICOM image series as a float32 ``Volume`` (see the module docstring).

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
    uid = choose_series(scan, where, series_uid)
    headers, n_copies = unique_instances(scan.series[uid], prefer=str(path) if path.is_file() else None)
    geo = plan_geometry([f for h in headers for f in h.frames], headers[0].slice_spacing_hint)

    stack = read_pixels(geo, {h.path: h.native_pixels for h in headers})  # (K_acq, rows, cols)
    if geo.resample is not None:
        stack = resample_slices(stack, geo.resample)
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
