"""Find DICOM SEG files that belong to the opened series (Qt-free; runs in a background job).

After a DICOM series opens, the folder it came from (and the folders of its files) are searched for
Segmentation Storage files (header read only, :func:`~seg_app.core.segmentation_io.is_dicom_seg`) whose
referenced series (:func:`~seg_app.core.segmentation_io.describe_dicom_seg`) is the opened one; the
window offers them (File > Segmentations in this folder, and a banner above the views).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from seg_app.core.errors import Cancelled, SegAppError

__all__ = ["MAX_FILES", "FoundSegmentation", "find_series_segmentations", "search_folders"]

#: Files looked at, at most, per search (a huge folder is not read to the end).
MAX_FILES = 5000


@dataclass(frozen=True)
class FoundSegmentation:
    """A DICOM SEG of the opened series: its file and a one-line description for the menu."""

    path: str
    title: str


def search_folders(opened_path: str | os.PathLike[str], source_paths: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The folders to search: the opened folder (or the opened file's folder) and the folders of the series' files."""
    p = Path(opened_path)
    folders = [p if p.is_dir() else p.parent]
    folders += [Path(s).parent for s in source_paths]
    out: list[Path] = []
    for f in folders:
        if f not in out and f.is_dir():
            out.append(f)
    return out


def _files(folders: list[Path], max_files: int) -> list[Path]:
    seen: set[Path] = set()
    out: list[Path] = []
    for folder in folders:
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            for name in sorted(names):
                f = Path(root) / name
                if f in seen:
                    continue
                seen.add(f)
                out.append(f)
                if len(out) >= max_files:
                    return out
    return out


def find_series_segmentations(
    folders: list[Path],
    series_uid: str,
    exclude: Iterable[str | os.PathLike[str]] = (),
    cancel: threading.Event | None = None,
    max_files: int = MAX_FILES,
) -> list[FoundSegmentation]:
    """DICOM SEG files under ``folders`` (recursively, ``max_files`` at most) that reference ``series_uid``.

    ``exclude`` (the series' own image files) are skipped without being read; unreadable SEGs are
    skipped. Raises ``Cancelled`` when ``cancel`` is set.
    """
    from seg_app.core.segmentation_io import describe_dicom_seg, is_dicom_seg

    if not series_uid:
        return []
    skip = {Path(e) for e in exclude}
    found: list[FoundSegmentation] = []
    for f in _files(folders, max_files):
        if cancel is not None and cancel.is_set():
            raise Cancelled("The search for segmentations was cancelled.")
        if f in skip or not is_dicom_seg(f):
            continue
        try:
            info = describe_dicom_seg(f)
        except (SegAppError, OSError):
            continue
        if series_uid not in info.get("referenced_series", ()):
            continue
        segments = ", ".join(s["label"] for s in info.get("segments", ()))
        found.append(FoundSegmentation(str(f), f"{f.name} ({segments})" if segments else f.name))
    return found
