"""``seg-app compare MASK_A MASK_B --scan SCAN --out DIR``: compare two segmentations of one scan.

Both masks (NIfTI label maps or DICOM SEG, from any producer) are placed on the scan's grid (see
:mod:`seg_app.core.segmentation_io`), then compared (:mod:`seg_app.core.compare`). Writes, atomically:

* ``compare.json``: inputs, warnings, per-label/region and per-lesion rows;
* ``compare_labels.csv`` and ``compare_lesions.csv``;
* ``agreement.nii.gz``: on the scan's grid, 1 both, 2 only A, 3 only B.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "compare_command"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seg-app compare", description="compare two segmentations of one scan "
                                "(Dice, HD95, volume difference per label, region and lesion; an agreement map)")
    p.add_argument("mask_a", help="segmentation A, the reference (NIfTI label map or DICOM SEG)")
    p.add_argument("mask_b", help="segmentation B (NIfTI label map or DICOM SEG)")
    p.add_argument("--scan", required=True, help="the scan both belong to (NIfTI file, DICOM file or folder)")
    p.add_argument("--series", help="SeriesInstanceUID when the scan folder holds several series")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--verbose", action="store_true", help="print tracebacks")
    return p


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def compare_command(argv: Sequence[str]) -> int:
    """Run ``seg-app compare``; 0 on success, 2 with one ``error:`` line on bad input."""
    args = build_parser().parse_args(argv)
    from seg_app.core.errors import SegAppError

    try:
        return _run(args)
    except (SegAppError, ValueError, OSError) as exc:
        if args.verbose:
            import traceback

            traceback.print_exception(exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from seg_app.core.compare import compare_label_maps
    from seg_app.core.compare import agreement_map
    from seg_app.core.files import atomic_write, overwrites_source
    from seg_app.core.io import load_scan, save_labels
    from seg_app.core.segmentation_io import load_segmentation

    scan = load_scan(args.scan, series_uid=args.series)
    seg_a = load_segmentation(args.mask_a, scan)
    seg_b = load_segmentation(args.mask_b, scan)
    names = {**{v: n for v, n in seg_b.names.items()}, **{v: n for v, n in seg_a.names.items() if not n.startswith("label ")}}
    result = compare_label_maps(seg_a.labels, seg_b.labels, scan.spacing, scan.voxel_volume_ml, names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = [*scan.source_paths, seg_a.source, seg_b.source]
    targets = {n: out / n for n in ("compare.json", "compare_labels.csv", "compare_lesions.csv", "agreement.nii.gz")}
    for p in targets.values():
        if overwrites_source(p, sources):
            raise ValueError(f"Refusing to overwrite an input file: {p}.")
    warnings = [*scan.warnings, *seg_a.warnings, *seg_b.warnings]
    doc = {"scan": scan.name, "mask_a": Path(seg_a.source).name, "mask_b": Path(seg_b.source).name,
           "spacing_mm": [float(s) for s in scan.spacing], "warnings": warnings,
           "agreement_values": {"1": "both", "2": "only A", "3": "only B"}, **result.as_dict()}
    with atomic_write(targets["compare.json"]) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1))
    clean = result.as_dict()
    with atomic_write(targets["compare_labels.csv"]) as tmp:
        Path(tmp).write_text(_csv_text(clean["labels"]))
    with atomic_write(targets["compare_lesions.csv"]) as tmp:
        Path(tmp).write_text(_csv_text(clean["lesions"]))
    save_labels(agreement_map(seg_a.labels, seg_b.labels), scan, targets["agreement.nii.gz"])
    for w in warnings:
        print(f"warning: {w}")
    print(f"{'label':<22}{'Dice':>7}{'HD95 max':>10}{'HD95 pool':>10}{'A mL':>9}{'B mL':>9}{'B-A mL':>9}")
    for r in clean["labels"]:
        print(f"{str(r['name'])[:21]:<22}{_fmt(r['dice']):>7}{_fmt(r['hd95_directed_max_mm']):>10}{_fmt(r['hd95_pooled_mm']):>10}"
              f"{_fmt(r['a_ml']):>9}{_fmt(r['b_ml']):>9}{_fmt(r['difference_ml']):>9}")
    paired = sum(1 for r in clean["lesions"] if r["status"] == "paired")
    only_a = sum(1 for r in clean["lesions"] if r["status"] == "only A")
    only_b = sum(1 for r in clean["lesions"] if r["status"] == "only B")
    print(f"lesions: {paired} paired, {only_a} only in A, {only_b} only in B")
    print(f"wrote {', '.join(targets)} to {out}")
    return 0
