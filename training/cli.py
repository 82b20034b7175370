"""``seg-train``: synth / train / evaluate / export. Errors print one line ``error: ...`` and exit non-zero."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from seg_app.core.errors import SegAppError
from training.data import ProblemList


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


def _train_options(a: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The options given explicitly (config file, then flags on top) and where each came from."""
    from training.config import load_config_file

    values: dict[str, Any] = load_config_file(a.config) if a.config else {}
    origins = dict.fromkeys(values, str(a.config))
    flags: dict[str, Any] = {k: getattr(a, k) for k in (*_TRAIN_FLAGS, "patch_size", "target_spacing", "channels", "strides")
                             if getattr(a, k) is not None}
    for flag, key, value in (("no_augment", "augment", False), ("no_amp", "amp", False), ("domain_augment", "domain_augment", True),
                             ("batch_dice", "batch_dice", True), ("quiet", "progress", False), ("no_check", "check", False)):
        if getattr(a, flag):
            flags[key] = value
    if a.fold is not None and a.fold != "all":
        try:
            flags["fold"] = int(a.fold)
        except ValueError:
            flags["fold"] = a.fold  # reported by the validation
    for key in ("data", "out"):
        if getattr(a, key):
            flags[key] = getattr(a, key)
    values.update(flags)
    origins.update(dict.fromkeys(flags, "command line"))
    return values, origins


def _train(a: argparse.Namespace) -> int:
    import torch

    from training.config import TrainConfig
    from training.train import train

    values, origins = _train_options(a)
    if not values.get("out") or (not values.get("data") and not a.resume):
        raise SegAppError("train needs --data and --out (or both in the config file).")
    values["command"] = "seg-train " + " ".join(shlex.quote(x) for x in a.argv)
    cfg = TrainConfig.from_mapping(values, origins)
    result = train(cfg, resume=a.resume, all_folds=a.fold == "all", given=set(values))
    # on success only: a failing rank keeps its connections until it has printed its error and exits
    # (closing them first would make the other ranks fail, and torchrun stop this one, before it says why)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if result is not None and not a.quiet:  # rank 0 only under torchrun
        summary = {k: v for k, v in result.items() if k != "history"}
        print(json.dumps(summary, indent=1))
    return 0


def _check(a: argparse.Namespace) -> int:
    from training.check import check_dataset

    splits = {"training": ("training",), "test": ("test",), "all": ("training", "test")}[a.split]
    report = check_dataset(a.data, splits=splits)
    for line in report.problems:
        print(line)
    print(report.summary())
    return 0 if report.ok else 1


def _evaluate(a: argparse.Namespace) -> int:
    from training.evaluate import evaluate

    from training.evaluate import metric_glossary

    summary = evaluate(a.model, a.data, split=a.split, out_dir=a.out, device=a.device, record=a.record,
                       progress=not a.quiet, check=not a.no_check)
    print(json.dumps(summary["summary"], indent=1))
    if not a.quiet:  # what the numbers mean, once (stderr: stdout stays plain JSON)
        print("metrics:\n" + metric_glossary(), file=sys.stderr)
    return 0


def _calibrate(a: argparse.Namespace) -> int:
    from training.calibrate import calibrate

    r = calibrate(a.model, a.data, a.out, split=a.split, device=a.device, progress=not a.quiet)
    b, c = r["before"], r["after"]
    for tag, x in (("before", b), ("after", c)):
        print(f"{tag}: min_lesion_ml {x['min_lesion_ml']}, min_lesion_confidence {x['min_lesion_confidence']}: "
              f"WT Dice {x['wt_dice']:.3f}, lesion sensitivity {x['lesion_sensitivity']:.3f}, precision "
              f"{x['lesion_precision']:.3f}, F1 {x['lesion_f1']:.3f}, FP on lesion-free cases {x['healthy_fp_ml_mean']:.2f} mL "
              f"mean / {x['healthy_fp_ml_max']:.2f} max")
    print(f"wrote {a.out} (table: {Path(a.out).parent / 'calibration.csv'})")
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
    s.add_argument("--style", type=int, choices=(1, 2, 3), default=3,
                   help="appearance model: 3 (default) heterogeneous tumours, more small foci, wider tumour contrast, "
                        "thin slabs; 2 the v2.2 recipe's data; 1 the v2.0/v2.1 recipe's data")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_synth)

    t = sub.add_parser("train", help="train a model from an MSD or paired (images/, labels/) folder")
    t.add_argument("--data", help="dataset folder")
    t.add_argument("--out", help="run folder (best.pt, last.pt, metrics.csv, curves.png, splits.json)")
    t.add_argument("--config", help="YAML/JSON file with options (flags override it)")
    t.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR/last.pt: options from RUN_DIR/config.json; --epochs, --lr, --schedule, ... given now win "
                        "(see docs/TRAINING.md); options that define the run may not change")
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
    t.add_argument("--no-check", action="store_true", help="skip the dataset check (seg-train check) before training")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)

    c = sub.add_parser("check", help="check a dataset folder (grids, labels, channels, NaNs, unreadable files); lists every problem")
    c.add_argument("data", help="dataset folder (MSD or paired layout)")
    c.add_argument("--split", default="all", choices=("training", "test", "all"), help="which cases to check")
    c.set_defaults(func=_check)

    e = sub.add_parser("evaluate", help="per-case Dice, HD95 and lesion detection with the app's inference path")
    e.add_argument("--model", required=True, help="checkpoint (.pt)")
    e.add_argument("--data", required=True, help="dataset folder")
    e.add_argument("--split", default="test", choices=("test", "val", "train", "all"),
                   help="test: imagesTs+labelsTs; val: validation cases of the run (splits.json beside the model)")
    e.add_argument("--out", default=None, help="folder for per_case.csv and summary.json (default: beside the model)")
    e.add_argument("--device", default="auto")
    e.add_argument("--record", action="store_true", help="write the summary into the checkpoint's metrics")
    e.add_argument("--no-check", action="store_true", help="skip the dataset check of the split's files")
    e.add_argument("--quiet", action="store_true", help="no progress bar and no metric glossary")
    e.set_defaults(func=_evaluate)

    k = sub.add_parser("calibrate", help="choose the lesion filters (minimum mL, minimum confidence) on a selection set")
    k.add_argument("--model", required=True, help="checkpoint (.pt)")
    k.add_argument("--data", required=True, help="selection dataset folder (not used for training, nor by any benchmark)")
    k.add_argument("--split", default="test", choices=("test", "val", "train", "all"), help="as for evaluate")
    k.add_argument("--out", required=True, help="calibrated checkpoint to write (calibration.csv/.json beside it)")
    k.add_argument("--device", default="auto")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=_calibrate)

    x = sub.add_parser("export", help="export to ONNX and/or a MONAI bundle folder")
    x.add_argument("--model", required=True)
    x.add_argument("--onnx", default=None, help="output .onnx file")
    x.add_argument("--bundle", default=None, help="output MONAI bundle folder")
    x.add_argument("--atol", type=float, default=1e-4, help="largest allowed |onnx - torch| difference")
    x.set_defaults(func=_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 error, 130 interrupted).

    Under torchrun every rank runs this: errors are prefixed ``rank R/W:``, a dataset or option problem
    list is printed by rank 0 only, and a rank whose peer failed (its collective broke, or torchrun
    stopped it with SIGTERM) exits 1 with a line saying so, like the rank that failed.
    """
    from training.ddp import rank_prefix

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    prefix = rank_prefix()
    status = _run(args, prefix)
    if prefix and status:  # a failed rank: exit now, without the process group's slow (or hung) teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _run(args: argparse.Namespace, prefix: str) -> int:
    """The command, with every error turned into ``error: ...`` lines and an exit status."""
    from training.ddp import StoppedByLauncher, is_peer_failure, stop_on_sigterm

    try:
        with stop_on_sigterm(enabled=bool(prefix)):
            return int(args.func(args))
    except ProblemList as exc:
        if prefix and os.environ.get("RANK", "0") != "0":  # the same list on every rank: rank 0 prints it
            print(f"error: {prefix}{exc.summary} (listed by rank 0).", file=sys.stderr)
            time.sleep(2.0)  # let rank 0 print before this exit makes torchrun stop it
            return 1
        for line in exc.problems if len(exc.problems) > 1 else []:
            print(line, file=sys.stderr)
        print(f"error: {prefix}{exc}", file=sys.stderr)
        return 1
    except SegAppError as exc:
        print(f"error: {prefix}{exc}", file=sys.stderr)
        return 130 if type(exc).__name__ == "TrainingInterrupted" else 1
    except StoppedByLauncher:
        print(f"error: {prefix}stopped by torchrun because another rank failed (its error is above).", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: {prefix}interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        print(f"error: {prefix}{exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - distributed only: one line, and every rank exits 1
        if not prefix:
            raise
        cause = _first_error(exc)
        first = (str(cause).strip().splitlines() or [""])[0]
        if is_peer_failure(exc):
            print(f"error: {prefix}stopped because another rank failed (its error is above; {type(exc).__name__}: {first})",
                  file=sys.stderr)
        else:
            print(f"error: {prefix}{first if isinstance(cause, SegAppError) else f'{type(cause).__name__}: {first}'}",
                  file=sys.stderr)
        return 1


def _first_error(exc: BaseException) -> BaseException:
    """The app's own error inside ``exc``'s chain (MONAI wraps transform errors in RuntimeError), else ``exc``."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            break
        if isinstance(seen, SegAppError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


if __name__ == "__main__":
    sys.exit(main())
