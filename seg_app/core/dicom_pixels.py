"""DICOM pixels: decode the frames of a planned series into one rescaled float32 stack.

Uncompressed little-endian single-frame files are read straight from their pixel offset (found by
:mod:`seg_app.core.dicom_scan`); everything else is decoded by pydicom's pixel handlers (pylibjpeg
plugins for JPEG / JPEG-LS / JPEG 2000 / RLE). A thread pool fills a preallocated array, and
RescaleSlope/Intercept are applied per frame on the way in.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pydicom.pixels import pixel_array

from seg_app.core.dicom_geometry import MAX_VOXELS, FrameHeader, SeriesGeometry
from seg_app.core.errors import CorruptScanError, ScanLoadError, ScanTooLargeError
from seg_app.core.volume import SeriesInfo

__all__ = ["read_pixels", "resample_slices", "series_thumbnail"]


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


def read_pixels(geo: SeriesGeometry, native: Mapping[str, tuple[int, str] | None]) -> np.ndarray:
    """Decode every acquired frame of ``geo``, rescaled, into a (K_acquired, rows, cols) float32 array.

    Args:
        geo: the planned series (its frames in slice order).
        native: per file path, where its uncompressed pixels start (``FileHeader.native_pixels``),
            or None to decode the file with pydicom.
    """
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


def resample_slices(stack: np.ndarray, resample: list[tuple[int, float]]) -> np.ndarray:
    """Slices of ``stack`` (K_acquired, rows, cols) interpolated onto the regular grid ``resample``.

    ``resample`` is :attr:`SeriesGeometry.resample`: per output slice, the lower acquired slice and
    the weight of the one above it.
    """
    out = np.empty((len(resample), stack.shape[1], stack.shape[2]), dtype=np.float32)
    for m, (lo, w) in enumerate(resample):
        np.multiply(stack[lo], np.float32(1.0 - w), out=out[m])
        if w > 0:
            out[m] += np.float32(w) * stack[lo + 1]
    return out


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
