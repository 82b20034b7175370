"""``seg-app followup BASELINE FOLLOWUP --out DIR``: compare two time points of one patient.

The scans (NIfTI files, DICOM files or folders) are loaded, segmented with the model unless a mask is
given (``--baseline-mask`` / ``--followup-mask``: NIfTI label map or DICOM SEG), the follow-up is
registered rigidly onto the baseline (mutual information, or ``--landmarks`` pairs), and the lesions are
matched and compared (:mod:`seg_app.core.followup`). Writes, atomically, into ``--out``:

* ``followup.json``: inputs, registration, per-lesion tracks, totals, RECIST 1.1 and volumetric RANO 2.0
  categories (each a computed suggestion, not a diagnosis), the lesions of both time points, warnings;
* ``followup.csv``: one row per lesion track and a ``total`` row;
* ``followup.png``: the one-page report (key slices, registration check, volume over time);
* ``followup_labels_on_baseline.nii.gz``: the follow-up lesions (numbered as in the JSON) on the
  baseline grid after registration; with the model also ``baseline_labels.nii.gz`` / ``followup_labels.nii.gz``.

Nothing is written when anything fails before the writing; a bad input is one ``error:`` line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seg_app import DISCLAIMER

__all__ = ["build_parser", "followup_command"]



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seg-app followup",
        description="Compare a baseline and a follow-up scan of one patient: rigid registration, lesion matching, "
                    "volume / RECIST long axis / bidimensional product per lesion and in total, new and disappeared "
                    "lesions, RECIST 1.1 and volumetric RANO 2.0 categories (computed suggestions, not a diagnosis). "
                    f"{DISCLAIMER}")
    p.add_argument("baseline", help="baseline scan (NIfTI file, DICOM file or folder)")
    p.add_argument("followup", help="follow-up scan of the same patient")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--baseline-mask", help="baseline segmentation (NIfTI label map or DICOM SEG); default: segment with the model")
    p.add_argument("--followup-mask", help="follow-up segmentation; default: segment with the model")
    p.add_argument("--model", help="model checkpoint for the scans without a mask (default: the bundled model)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where the network runs")
    p.add_argument("--tta", action="store_true", help="test-time augmentation when segmenting")
    p.add_argument("--landmarks", metavar="CSV",
                   help="landmark pairs (baseline_x,baseline_y,baseline_z,followup_x,followup_y,followup_z in RAS mm, "
                        ">= 3 rows): use their rigid transform instead of the automatic registration")
    p.add_argument("--baseline-series", help="SeriesInstanceUID when the baseline folder holds several series")
    p.add_argument("--followup-series", help="SeriesInstanceUID when the follow-up folder holds several series")
    p.add_argument("--rano-region", default="lesion", choices=["lesion", "WT", "TC", "ET"],
                   help="volume for the RANO category: every lesion voxel (default) or a BraTS region "
                        "(RANO 2.0 measures enhancing disease: ET)")
    p.add_argument("--verbose", action="store_true", help="print tracebacks")
    from seg_app.nnunet_cli import add_nnunet_arguments

    add_nnunet_arguments(p)  # --folds/--checkpoint/--trust-model for an nnU-Net --model folder
    return p


def followup_command(argv: Sequence[str]) -> int:
    """Run ``seg-app followup``; 0 on success, 2 with one ``error:`` line on bad input."""
    args = build_parser().parse_args(list(argv))
    from seg_app.core.errors import MultipleSeriesError, SegAppError

    try:
        return _run(args)
    except MultipleSeriesError as exc:
        print(f"error: {exc} (choose one with --baseline-series / --followup-series)", file=sys.stderr)
        return 2
    except (SegAppError, ValueError, OSError) as exc:
        if args.verbose:
            import traceback

            traceback.print_exception(exc)
        print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2


def _segment(scan: Any, segmenter_box: dict[str, Any], args: argparse.Namespace) -> tuple[Any, dict[int, str], list[str], Any]:
    """Labels of ``scan`` from the model (one ``Segmenter`` for both time points)."""
    from seg_app.nnunet_cli import segmenter_from_args

    if "segmenter" not in segmenter_box:  # our checkpoint, or an nnU-Net folder (NnUNetSegmenter)
        segmenter_box["segmenter"] = segmenter_from_args(args, args.model, args.device)
    result = segmenter_box["segmenter"].segment(scan)
    names = {lab.value: lab.name for lab in result.spec.labels if lab.value}
    return result.labels.array[0], names, list(result.warnings), result


def _labels_for(scan: Any, mask: str | None, segmenter_box: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from seg_app.core.segmentation_io import load_segmentation

    if mask:
        seg = load_segmentation(mask, scan)
        return {"labels": seg.labels, "names": seg.names, "warnings": list(seg.warnings), "mask": str(mask), "result": None}
    labels, names, warnings, result = _segment(scan, segmenter_box, args)
    return {"labels": labels, "names": names, "warnings": warnings, "mask": None, "result": result}


def _run(args: argparse.Namespace) -> int:
    from seg_app.core.followup import (
        assess_followup, landmark_registration, read_landmarks_csv, register_rigid,
    )
    from seg_app.core.followup_export import followup_document, write_followup_files
    from seg_app.core.io import load_scan
    from seg_app.core.patient import patient_info

    out = Path(args.out)
    landmarks = read_landmarks_csv(args.landmarks) if args.landmarks else None  # bad file: fail before the work
    baseline = load_scan(args.baseline, series_uid=args.baseline_series)
    followup = load_scan(args.followup, series_uid=args.followup_series)
    box: dict[str, Any] = {}
    b_info = _labels_for(baseline, args.baseline_mask, box, args)
    f_info = _labels_for(followup, args.followup_mask, box, args)
    if landmarks is not None:
        registration = landmark_registration(baseline, followup, *landmarks)
    else:
        registration = register_rigid(baseline, followup)
    result = assess_followup(baseline, b_info["labels"], followup, f_info["labels"], registration,
                             baseline_names=b_info["names"], followup_names=f_info["names"], rano_region=args.rano_region)
    model_path = ""
    if box:
        from seg_app.core.spec import default_model_path

        model_path = str(args.model or default_model_path())
    warnings = list(dict.fromkeys([*(f"baseline: {w}" for w in baseline.warnings), *(f"follow-up: {w}" for w in followup.warnings),
                                   *(f"baseline mask: {w}" for w in b_info["warnings"]),
                                   *(f"follow-up mask: {w}" for w in f_info["warnings"]), *result.warnings]))
    dates = (patient_info(baseline, read_files=False).study_date, patient_info(followup, read_files=False).study_date)
    doc = followup_document(result, baseline, followup, b_info, f_info, args.baseline, args.followup, model_path, warnings)
    png, png_note = None, ""
    try:
        from seg_app.core.followup_report import render_followup_report

        png = render_followup_report(result, baseline, followup, titles=(baseline.name, followup.name), dates=dates,
                                     disclaimer=DISCLAIMER)
    except ImportError as exc:  # the standalone bundle leaves matplotlib out (size)
        png_note = f"no followup.png written: the report needs matplotlib ({exc})"
    # -- write (everything is computed: a failure above left nothing behind)
    masks = [(name, info["labels"], scan) for name, info, scan in (("baseline_labels", b_info, baseline),
                                                                   ("followup_labels", f_info, followup))
             if info["result"] is not None]  # the model's masks
    sources = [*baseline.source_paths, *followup.source_paths, *(m for m in (args.baseline_mask, args.followup_mask, args.landmarks) if m)]
    written = write_followup_files(out, doc, result, baseline, png, masks, sources)
    _print_summary(result, warnings + ([png_note] if png_note else []))
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def _pct(v: float | None) -> str:
    return "    n/a" if v is None else f"{v:+6.1f}%"


def _print_summary(result: Any, warnings: Sequence[str]) -> None:
    from seg_app.core.followup import DISCLAIMER_SUGGESTION

    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    reg = result.registration
    extra = f", landmark residual {reg.landmark_rms_mm:.2f} mm" if reg.landmark_rms_mm is not None else ""
    corr = "" if reg.correlation_after is None else f", correlation {reg.correlation_before or 0:.3f} -> {reg.correlation_after:.3f}"
    print(f"registration ({reg.method}): rotation {reg.rotation_deg:.2f} deg, shift {reg.translation_mm:.2f} mm{corr}{extra}")
    print(f"{'track':<6}{'status':<17}{'base mL':>9}{'follow mL':>10}{'change':>9}{'base LD':>9}{'follow LD':>10}{'change':>9}")
    for t in result.tracks:
        ch = t.as_dict()["change"]
        print(f"{t.track_id:<6}{(t.status + (' *' if t.target else ''))[:16]:<17}{t.baseline.volume_ml:>9.2f}"
              f"{t.followup.volume_ml:>10.2f}{_pct(ch['volume_percent']):>9}{t.baseline.long_axis_mm:>9.1f}"
              f"{t.followup.long_axis_mm:>10.1f}{_pct(ch['long_axis_percent']):>9}")
    tot = result.totals
    print(f"{'total':<23}{tot['baseline']['volume_ml']:>9.2f}{tot['followup']['volume_ml']:>10.2f}"
          f"{_pct(tot['change']['volume_percent']):>9}   (* target lesion; LD = RECIST long axis, mm)")
    for r in (result.recist, result.rano):
        print(f"{r.criteria}: {r.category} ({r.name}) [{DISCLAIMER_SUGGESTION}]: {'; '.join(r.reasons)}")
