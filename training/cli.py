"""``seg-train``: synth / train / evaluate / export. Errors print one line ``error: ...`` and exit non-zero."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from seg_app.core.errors import SegAppError


def _synth(a: argparse.Namespace) -> int:
    from training.synth import SynthOptions, write_dataset

    if a.cases < 0 or a.test_cases < 0:
        raise SegAppError("--cases and --test-cases must not be negative.")
    opts = SynthOptions(spacing_mm=a.spacing, size=a.size, channels=a.channels, style=a.style)
    out = write_dataset(a.out, a.cases, a.seed, a.test_cases, opts, progress=not a.quiet, workers=max(1, a.workers))
    print(f"wrote {a.cases} training and {a.test_cases} test cases to {out}")
    return 0


_TRAIN_FLAGS = {
    "epochs": int, "batch_size": int, "samples_per_case": int, "lr": float, "weight_decay": float,
    "schedule": str, "val_every": int, "val_fraction": float, "folds": int, "seed": int, "workers": int,
    "cache_rate": float, "device": str, "network": str, "name": str, "description": str, "overlap": float,
    "max_minutes": float, "num_res_units": int, "max_patch_voxels": int, "min_lesion_ml": float,
    "normalization": str, "init_from": str, "pos_fraction": float,
}


def _train(a: argparse.Namespace) -> int:
    import torch

    from training.train import TrainConfig, load_config_file, train

    values: dict = load_config_file(a.config) if a.config else {}
    for key in _TRAIN_FLAGS:
        v = getattr(a, key)
        if v is not None:
            values[key] = v
    for key in ("patch_size", "target_spacing", "channels", "strides"):
        v = getattr(a, key)
        if v is not None:
            values[key] = v
    if a.no_augment:
        values["augment"] = False
    if a.no_amp:
        values["amp"] = False
    if a.domain_augment:
        values["domain_augment"] = True
    if a.batch_dice:
        values["batch_dice"] = True
    if a.quiet:
        values["progress"] = False
    all_folds = a.fold == "all"
    if a.fold is not None and not all_folds:
        values["fold"] = int(a.fold)
    values["data"], values["out"] = a.data or values.get("data", ""), a.out or values.get("out", "")
    if not values["out"] or (not values["data"] and not a.resume):
        raise SegAppError("train needs --data and --out (or both in the config file).")
    values["command"] = "seg-train " + " ".join(shlex.quote(x) for x in a.argv)
    cfg = TrainConfig.from_mapping(values)
    try:
        result = train(cfg, resume=a.resume, all_folds=all_folds)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not a.quiet:
        summary = {k: v for k, v in result.items() if k != "history"} if isinstance(result, dict) else result
        print(json.dumps(summary, indent=1))
    return 0


def _evaluate(a: argparse.Namespace) -> int:
    from training.evaluate import evaluate

    summary = evaluate(a.model, a.data, split=a.split, out_dir=a.out, device=a.device, record=a.record,
                       progress=not a.quiet)
    print(json.dumps(summary["summary"], indent=1))
    return 0


def _export(a: argparse.Namespace) -> int:
    from training.export import export_bundle, export_onnx

    if not a.onnx and not a.bundle:
        raise SegAppError("export needs --onnx OUT.onnx and/or --bundle DIR.")
    if a.onnx:
        r = export_onnx(a.model, a.onnx, atol=a.atol)
        print(f"wrote {r['path']} (max |onnx - torch| = {r['max_abs_diff']:.2e})")
    if a.bundle:
        print(f"wrote MONAI bundle {export_bundle(a.model, a.bundle)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seg-train", description="Train, evaluate and export tumour-segmentation models (research use only).")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic brain-tumour dataset (MSD layout)")
    s.add_argument("--out", required=True, help="output dataset folder")
    s.add_argument("--cases", type=int, default=40, help="training cases (imagesTr/labelsTr)")
    s.add_argument("--test-cases", type=int, default=0, help="test cases (imagesTs, with labelsTs for evaluation)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--spacing", type=float, default=2.0, help="voxel size in mm of the written images (the model's grid)")
    s.add_argument("--workers", type=int, default=1, help="parallel processes (the data do not depend on it)")
    s.add_argument("--size", type=int, default=None, help="voxels per axis (tiny volumes for tests)")
    s.add_argument("--channels", type=int, choices=(1, 2), default=1, help="2 writes two random contrasts of each case (4D NIfTI)")
    s.add_argument("--style", type=int, choices=(1, 2), default=2,
                   help="appearance model: 2 (default) heterogeneous, irregular tumours; 1 the v2.0/v2.1 recipe's data")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_synth)

    t = sub.add_parser("train", help="train a model from an MSD or paired (images/, labels/) folder")
    t.add_argument("--data", help="dataset folder")
    t.add_argument("--out", help="run folder (best.pt, last.pt, metrics.csv, curves.png, splits.json)")
    t.add_argument("--config", help="YAML/JSON file with options (flags override it)")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    t.add_argument("--fold", default=None, help="fold index, or 'all' to train every fold and report mean/std")
    t.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("I", "J", "K"))
    t.add_argument("--target-spacing", type=float, nargs=3, default=None, metavar=("SI", "SJ", "SK"))
    t.add_argument("--channels", type=int, nargs="+", default=None, help="UNet feature channels per level")
    t.add_argument("--strides", type=int, nargs="+", default=None, help="UNet down-sampling strides")
    for key, typ in _TRAIN_FLAGS.items():
        t.add_argument("--" + key.replace("_", "-"), type=typ, default=None)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--no-amp", action="store_true")
    t.add_argument("--batch-dice", action="store_true",
                   help="nnU-Net loss convention: Dice over foreground classes pooled over the batch (+ CE)")
    t.add_argument("--domain-augment", action="store_true",
                   help="stronger appearance randomisation per patch (random intensity curve, bias, low resolution, noise)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="per-case Dice, HD95 and lesion detection with the app's inference path")
    e.add_argument("--model", required=True, help="checkpoint (.pt)")
    e.add_argument("--data", required=True, help="dataset folder")
    e.add_argument("--split", default="test", choices=("test", "val", "train", "all"),
                   help="test: imagesTs+labelsTs; val: validation cases of the run (splits.json beside the model)")
    e.add_argument("--out", default=None, help="folder for per_case.csv and summary.json (default: beside the model)")
    e.add_argument("--device", default="auto")
    e.add_argument("--record", action="store_true", help="write the summary into the checkpoint's metrics")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_evaluate)

    x = sub.add_parser("export", help="export to ONNX and/or a MONAI bundle folder")
    x.add_argument("--model", required=True)
    x.add_argument("--onnx", default=None, help="output .onnx file")
    x.add_argument("--bundle", default=None, help="output MONAI bundle folder")
    x.add_argument("--atol", type=float, default=1e-4, help="largest allowed |onnx - torch| difference")
    x.set_defaults(func=_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args))
    except SegAppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 130 if type(exc).__name__ == "TrainingInterrupted" else 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
