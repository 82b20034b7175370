"""The files of a follow-up assessment, written the same way by ``seg-app followup`` and the GUI's
*Save report...*: the JSON document, the change CSV (one row per lesion track and a total), the
one-page PNG (:mod:`seg_app.core.followup_report`, when matplotlib is there), the follow-up lesion map
on the baseline grid and the model's masks of the time points it segmented.

Every file is written atomically, only after everything is computed, and never over an input file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seg_app.core.followup import FollowUpResult
from seg_app.core.volume import Volume

__all__ = ["FOLLOWUP_FORMAT", "FOLLOWUP_VERSION", "change_csv_text", "followup_document", "scan_document",
           "write_followup_files"]

FOLLOWUP_FORMAT = "seg_app.followup"
FOLLOWUP_VERSION = 1

_CSV_COLUMNS = [
    "track", "status", "target", "baseline_lesions", "followup_lesions", "matched_by", "centroid_distance_mm",
    "baseline_volume_ml", "followup_volume_ml", "volume_change_ml", "volume_change_percent",
    "baseline_long_axis_mm", "followup_long_axis_mm", "long_axis_change_mm", "long_axis_change_percent",
    "baseline_short_axis_mm", "followup_short_axis_mm",
    "baseline_product_mm2", "followup_product_mm2", "product_change_mm2", "product_change_percent",
]


def change_csv_text(result: FollowUpResult) -> str:
    """One row per lesion track, then the total row (``followup.csv``)."""

    def row(track: Any, status: str, target: Any, bl: str, fl: str, by: Any, dist: Any, b: dict, f: dict, ch: dict) -> list[Any]:
        vals = [track, status, target, bl, fl, by, dist, b["volume_ml"], f["volume_ml"], ch["volume_ml"], ch["volume_percent"],
                b["long_axis_mm"], f["long_axis_mm"], ch["long_axis_mm"], ch["long_axis_percent"], b["short_axis_mm"],
                f["short_axis_mm"], b["bidimensional_product_mm2"], f["bidimensional_product_mm2"],
                ch["bidimensional_product_mm2"], ch["bidimensional_product_percent"]]
        return ["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in vals]

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_COLUMNS)
    doc = result.as_dict()
    for t in doc["tracks"]:
        w.writerow(row(t["track"], t["status"], "yes" if t["target"] else "no", " ".join(map(str, t["baseline_lesions"])),
                       " ".join(map(str, t["followup_lesions"])), t["matched_by"] or "", t["centroid_distance_mm"],
                       t["baseline"], t["followup"], t["change"]))
    tot = doc["totals"]
    w.writerow(row("total", f"{tot['new_lesions']} new, {tot['disappeared_lesions']} disappeared", "",
                   str(tot["baseline"]["lesions"]), str(tot["followup"]["lesions"]), "", None,
                   tot["baseline"], tot["followup"], tot["change"]))
    return buf.getvalue()


def scan_document(scan: Volume, info: Mapping[str, Any], source: str, model_path: str) -> dict[str, Any]:
    """One time point in the JSON: the scan's provenance, its study date, where its mask came from.

    ``info``: ``labels``, ``names``, ``warnings``, ``mask`` (the mask file, or None when the model
    segmented it) and ``result`` (the model's ``SegmentationResult``, or None)."""
    from seg_app.core.export import measurements_metadata
    from seg_app.core.patient import patient_info

    result = info["result"]
    meta = measurements_metadata(scan, result.spec if result is not None else None, source=source, result=result,
                                 model_path=model_path if result is not None else "")
    meta.pop("app", None)
    meta["study_date"] = patient_info(scan, read_files=False).study_date
    meta["mask"] = info["mask"] or "segmented by the model"
    meta["warnings"] = [*meta.get("warnings", []), *info["warnings"]]
    return meta


def followup_document(result: FollowUpResult, baseline: Volume, followup: Volume, baseline_info: Mapping[str, Any],
                      followup_info: Mapping[str, Any], baseline_source: str, followup_source: str, model_path: str,
                      warnings: Sequence[str]) -> dict[str, Any]:
    """The ``followup.json`` document: format, app, both time points, the assessment, warnings."""
    from seg_app import DISCLAIMER, __version__

    return {"format": FOLLOWUP_FORMAT, "version": FOLLOWUP_VERSION,
            "app": {"name": "seg-app", "version": __version__, "disclaimer": DISCLAIMER},
            "baseline": scan_document(baseline, baseline_info, baseline_source, model_path),
            "followup": scan_document(followup, followup_info, followup_source, model_path),
            **result.as_dict(), "warnings": list(warnings)}


def write_followup_files(out: str | Path, doc: Mapping[str, Any], result: FollowUpResult, baseline: Volume,
                         png: bytes | None, masks: Sequence[tuple[str, Any, Volume]], sources: Sequence[str]) -> list[str]:
    """Write ``followup.json``/``.csv``/``.png`` (``png`` None: none), ``followup_labels_on_baseline.nii.gz``
    and each ``(name, labels, scan)`` of ``masks`` as ``<name>.nii.gz`` into ``out``; returns the names written.

    Raises:
        ValueError: one of the outputs is one of ``sources`` (nothing is written then).
    """
    from seg_app.core.files import atomic_write, overwrites_source
    from seg_app.core.io import save_labels

    out = Path(out)
    json_text = json.dumps(doc, indent=1, allow_nan=False) + "\n"  # before any file: NaN fails here
    targets = {"json": out / "followup.json", "csv": out / "followup.csv", "png": out / "followup.png",
               "map": out / "followup_labels_on_baseline.nii.gz"}
    targets.update({name: out / f"{name}.nii.gz" for name, _labels, _scan in masks})
    for p in targets.values():
        if overwrites_source(p, sources):
            raise ValueError(f"Refusing to overwrite an input file: {p}.")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, text in (("json", json_text), ("csv", change_csv_text(result))):
        with atomic_write(targets[key]) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        written.append(targets[key].name)
    if png is not None:
        with atomic_write(targets["png"]) as tmp:
            Path(tmp).write_bytes(png)
        written.append(targets["png"].name)
    save_labels(result.followup_map_on_baseline.astype("int32"), baseline, targets["map"])
    written.append(targets["map"].name)
    for name, labels, scan in masks:
        save_labels(labels, scan, targets[name])
        written.append(targets[name].name)
    return written
