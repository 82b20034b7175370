"""``seg-app``: the clinician's desktop app and its headless commands.

    seg-app [PATH] [--model CKPT] [--screenshot OUT.png [--segment] [--slice-fraction F]]
    seg-app info PATH [--series UID]      (PATH a scan, a DICOM SEG or a model checkpoint .pt)
    seg-app predict INPUT... [--model CKPT] [--out DIR] [--device auto|cpu|cuda] [--tta] ...
    seg-app compare MASK_A MASK_B --scan SCAN --out DIR
    seg-app followup BASELINE FOLLOWUP --out DIR [--baseline-mask M] [--followup-mask M] [--landmarks CSV]
    seg-app pacs echo|find|retrieve|nodes ...
    seg-app models [--json] [--choose PATH]   (bundled + recent models, their cards; the GUI's chosen one)

Errors from the core are printed as one line (``error: ...``) with a non-zero exit status; add
``--verbose`` for the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from seg_app import DISCLAIMER, __version__

COMMANDS = {
    "info": "show a scan's series, geometry, intensity range and loading warnings, or a checkpoint's model card",
    "predict": "segment scans headless and write masks + measurements",
    "pacs": "PACS: echo, find, retrieve (see docs/PACS.md)",
    "compare": "compare two segmentations of one scan (Dice, HD95, volume per label/region/lesion, agreement map)",
    "followup": "baseline vs follow-up of one patient: registration, lesion changes, RECIST/RANO suggestions, report",
    "models": "the bundled and recently opened models with their cards; --choose PATH sets the GUI's model",
}


def _gui_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seg-app",
        description=(
            "Tumour-segmentation workstation. Without a command it opens the desktop app "
            f"(optionally on PATH). {DISCLAIMER}"
        ),
        epilog="Commands:\n"
        + "\n".join(f"  {name:<9} {text}" for name, text in COMMANDS.items())
        + "\n\nRun 'seg-app COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", nargs="?", help="scan to open: NIfTI file, DICOM file or DICOM folder")
    p.add_argument("--model", help="model checkpoint, bundle or nnU-Net folder (default: the chosen one, "
                   "see seg-app models; else the bundled model)")
    p.add_argument("--series", help="SeriesInstanceUID to open when PATH holds several series")
    p.add_argument("--screenshot", metavar="OUT.png", help="scripted mode: open PATH, render, save a PNG, exit")
    p.add_argument("--segment", action="store_true", help="with --screenshot: segment before the screenshot")
    p.add_argument("--slice-fraction", type=float, default=None, help="with --screenshot: slice position 0..1")
    p.add_argument("--version", action="version", version=f"seg-app {__version__}")
    p.add_argument("--verbose", action="store_true", help="print tracebacks")
    return p


def _info_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seg-app info", description=COMMANDS["info"])
    p.add_argument("path", help="NIfTI file, DICOM file or folder, or a model checkpoint (.pt)")
    p.add_argument("--series", help="SeriesInstanceUID to load when the folder holds several series")
    p.add_argument("--verbose", action="store_true")
    return p


def _fail(exc: BaseException, verbose: bool) -> int:
    if verbose:
        import traceback

        traceback.print_exception(exc)
    print(f"error: {exc}", file=sys.stderr)
    return 2


def checkpoint_info(path: str) -> None:
    """Print a checkpoint's (or MONAI bundle's) model card, then its full spec as JSON (``seg-app info MODEL.pt``)."""
    import json

    from seg_app.core.model_sources import load_model_checkpoint
    from seg_app.core.spec import model_card

    from seg_app.core.nnunet_model import describe_nnunet, nnunet_root

    root = nnunet_root(path)
    if root is not None:  # an nnU-Net v2 folder (or a file in it): its JSON files, no weights read
        model = describe_nnunet(root[0])
        print(model.summary())
        print(model_card(model.spec))
        return

    ckpt = load_model_checkpoint(path)
    print(f"Checkpoint: {path}")
    print(model_card(ckpt.spec))
    if ckpt.training_state:
        print(f"Training state: epoch {ckpt.training_state.get('epoch')} (resumable with seg-train train --resume)")
    print("Spec:")
    print(json.dumps(ckpt.spec.to_dict(), indent=1, sort_keys=True, default=str))


def info_command(argv: Sequence[str]) -> int:
    """Print a scan's summary (or a checkpoint's spec and model card); exit 2 with one line on bad input."""
    import numpy as np

    from seg_app.core import MultipleSeriesError, SegAppError
    from seg_app.core.io import list_series, load_scan

    args = _info_parser().parse_args(argv)
    try:
        from seg_app.core.model_sources import is_model_folder

        if args.path.lower().endswith((".pt", ".pth")) or is_model_folder(args.path):
            checkpoint_info(args.path)
            return 0
        from seg_app.core.segmentation_io import describe_dicom_seg, is_dicom_seg

        if is_dicom_seg(args.path):
            d = describe_dicom_seg(args.path)
            print(f"DICOM SEG: {d['file']} ({d['segmentation_type'].lower()}, {d['frames']} frames)")
            print(f"  frame of reference: {d['frame_of_reference']}")
            for uid in d["referenced_series"]:
                print(f"  references series:  {uid}")
            for seg in d["segments"]:
                print(f"  segment {seg['number']}: label {seg['label_value']} \"{seg['label']}\"")
            return 0
        try:
            vol = load_scan(args.path, series_uid=args.series)
        except MultipleSeriesError as exc:
            print(f"{args.path}: {len(exc.series)} image series (choose one with --series UID):")
            for s in exc.series:
                print("  " + s.summary())
            return 2
        from pathlib import Path

        if Path(args.path).is_dir():
            series = list_series(args.path)
            print(f"Folder: {args.path} ({len(series)} image series)")
            for s in series:
                print("  " + s.summary())
        finite = vol.array[np.isfinite(vol.array)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"), float("nan"))
        print(f"Scan: {vol.name}")
        print(f"  modality:     {vol.modality or 'unknown'}")
        if vol.series_uid:
            print(f"  series UID:   {vol.series_uid}")
        print(f"  shape:        {' x '.join(map(str, vol.shape))} voxels, {vol.n_channels} channel(s)"
              + (f" ({', '.join(vol.channel_names)})" if vol.channel_names else ""))
        print(f"  spacing:      {' x '.join(f'{s:.4g}' for s in vol.spacing)} mm")
        print(f"  orientation:  {vol.orientation}+ (array axes i, j, k)")
        extent = [n * s for n, s in zip(vol.shape, vol.spacing)]
        print(f"  extent:       {' x '.join(f'{e:.1f}' for e in extent)} mm")
        print(f"  intensity:    {lo:.6g} .. {hi:.6g}" + (" HU" if vol.modality == "CT" else ""))
        print(f"  warnings:     {len(vol.warnings) or 'none'}")
        for w in vol.warnings:
            print(f"    - {w}")
        return 0
    except SegAppError as exc:
        return _fail(exc, args.verbose)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "info":
        return info_command(argv[1:])
    if argv and argv[0] == "predict":
        from seg_app.predict_cli import predict_command

        return predict_command(argv[1:])
    if argv and argv[0] == "compare":
        from seg_app.compare_cli import compare_command

        return compare_command(argv[1:])
    if argv and argv[0] == "followup":
        from seg_app.followup_cli import followup_command

        return followup_command(argv[1:])
    if argv and argv[0] == "models":
        from seg_app.models_cli import models_command

        return models_command(argv[1:])
    if argv and argv[0] == "pacs":
        from seg_app.pacs_cli import pacs_command

        return pacs_command(argv[1:])
    args = _gui_parser().parse_args(argv)
    from seg_app.gui.app import run_app

    return run_app(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
