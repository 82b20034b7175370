"""Measurement files: JSON (lesions + per-label totals + provenance) and CSV (one row per lesion).

Both are written atomically with :func:`seg_app.core.io.atomic_write`; a failure raises
``ExportError`` and leaves no partial file. Column/key meanings: ``docs/MEASUREMENTS.md``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from seg_app.core.errors import ExportError
from seg_app.core.measure import LesionMeasurement, _jsonable

__all__ = [
    "CSV_COLUMNS", "MEASUREMENTS_FORMAT", "MEASUREMENTS_VERSION", "measurements_document",
    "measurements_metadata", "safe_file_name", "save_measurements_csv", "save_measurements_json",
]

#: Format tag and version of the measurement JSON.
MEASUREMENTS_FORMAT = "seg_app.measurements"
MEASUREMENTS_VERSION = 1

#: CSV columns, in order (vectors are split into ``_x/_y/_z`` or ``_i/_j/_k`` columns). Lesions with
#: tumour sub-regions add one ``volume_ml_<region>`` column per sub-region and composite after these.
CSV_COLUMNS: tuple[str, ...] = tuple(
    col
    for f in fields(LesionMeasurement)
    if f.name != "region_volumes_ml"
    for col in (
        [f"{f.name}_{a}" for a in "xyz"] if f.name == "centroid_ras_mm"
        else [f"{f.name}_{a}" for a in "ijk"] if f.name in ("centroid_voxel", "bbox_min_voxel", "bbox_max_voxel")
        else [f.name]
    )
)


def safe_file_name(name: str) -> str:
    """A file-name-safe version of a scan name (series descriptions may contain anything); GUI and CLI."""
    out = re.sub(r"[^A-Za-z0-9._+-]+", "_", name.strip()).strip("._")
    return out or "scan"


def measurements_metadata(
    volume: Any, spec: Any = None, *, source: str = "", result: Any = None, model_path: str = "", tta: bool = False
) -> dict[str, Any]:
    """Provenance written beside the lesions in every measurements JSON (the GUI's and ``predict``'s):
    app and disclaimer, model (name, version, labels, tumour regions), source scan geometry (for a
    multi-sequence study also each channel's series and transform onto the reference grid),
    segmentation run (device, time, TTA) and every warning (loading, out-of-distribution)."""
    from seg_app import DISCLAIMER, __version__
    from seg_app.core.regions import composite_regions

    doc: dict[str, Any] = {"app": {"name": "seg-app", "version": __version__, "disclaimer": DISCLAIMER}}
    if spec is not None:
        names = {lab.value: lab.name for lab in spec.labels}
        doc["model"] = {
            "name": spec.name, "version": spec.version, "network": spec.network.name, "path": model_path,
            "labels": {str(v): n for v, n in names.items()},
            "regions": {k: list(v) for k, v in composite_regions(names).items()},
        }
    doc["source"] = {
        "path": source or (volume.source_paths[0] if volume.source_paths else ""),
        "name": volume.name,
        "modality": volume.modality,
        "series_uid": volume.series_uid,
        "series_description": volume.series_description,
        "shape": list(volume.shape),
        "spacing_mm": list(volume.spacing),
        "orientation": volume.orientation,
        "affine": [list(map(float, row)) for row in volume.affine],
    }
    if volume.meta.get("channels"):  # a multi-sequence study (core/multiseq.py): where each channel came from
        doc["source"]["channels"] = list(volume.meta["channels"])
        doc["source"]["reference_channel"] = volume.meta.get("reference_channel")
    if result is not None:
        doc["segmentation"] = {"device": result.device, "seconds": round(result.seconds, 3), "tta": tta}
    doc["warnings"] = list(volume.warnings) + list(getattr(result, "warnings", ()) or ())
    return doc


def _check_folder(path: Path) -> None:
    if not path.parent.is_dir():
        raise ExportError(f"Cannot write {path}: the folder {path.parent} does not exist.")


def measurements_document(
    lesions: Sequence[LesionMeasurement], totals: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON document as a dict: ``format``, ``version``, ``lesions``, ``totals`` and ``extra``'s keys."""
    doc: dict[str, Any] = {"format": MEASUREMENTS_FORMAT, "version": MEASUREMENTS_VERSION}
    doc.update({str(k): _jsonable(v) if not isinstance(v, Mapping) else v for k, v in (extra or {}).items()})
    doc["lesions"] = [les.to_dict() for les in lesions]
    doc["totals"] = [{k: _jsonable(v) for k, v in t.items()} for t in totals]
    return doc


def save_measurements_json(
    path: str | os.PathLike,
    lesions: Sequence[LesionMeasurement],
    totals: Sequence[Mapping[str, Any]],
    *,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write lesions, per-label totals and ``extra`` (model, source, warnings...) as JSON, atomically."""
    from seg_app.core.io import atomic_write

    path = Path(path)
    _check_folder(path)
    try:
        text = json.dumps(measurements_document(lesions, totals, extra), indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"Cannot write {path}: the measurements are not JSON-serialisable ({exc}).") from exc
    try:
        with atomic_write(path) as tmp:
            Path(tmp).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    return path


def _csv_row(les: LesionMeasurement, region_keys: Sequence[str]) -> list[Any]:
    row: list[Any] = []
    regions = les.region_volumes_ml or {}
    for f in fields(LesionMeasurement):
        v = getattr(les, f.name)
        if f.name == "region_volumes_ml":
            v = tuple(regions.get(k) for k in region_keys)
        vals = list(v) if isinstance(v, tuple) else [v]
        for x in vals:
            if x is None or (isinstance(x, float) and not math.isfinite(x)):
                row.append("")
            elif isinstance(x, float):
                row.append(f"{x:.6g}")
            else:
                row.append(x)
    return row


def save_measurements_csv(
    path: str | os.PathLike, lesions: Sequence[LesionMeasurement], *, header: Sequence[tuple[str, str]] = ()
) -> Path:
    """Write one row per lesion (header :data:`CSV_COLUMNS` + ``volume_ml_<region>`` columns when the
    lesions have sub-regions; empty cell = not available), atomically.

    ``header``: ``(key, value)`` pairs (patient and scan identifiers, :meth:`PatientInfo.header_rows`)
    written first as ``# key,value`` comment rows (``pandas.read_csv(..., comment="#")`` skips them).
    """
    from seg_app.core.io import atomic_write

    path = Path(path)
    _check_folder(path)
    region_keys = list(dict.fromkeys(k for les in lesions for k in (les.region_volumes_ml or {})))
    try:
        with atomic_write(path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                for key, value in header:
                    w.writerow([f"# {key}", value])
                w.writerow([*CSV_COLUMNS, *(f"volume_ml_{k}" for k in region_keys)])
                for les in lesions:
                    w.writerow(_csv_row(les, region_keys))
    except OSError as exc:
        raise ExportError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    return path
