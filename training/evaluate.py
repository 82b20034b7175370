"""``seg-train evaluate``: per-case Dice, HD95 and lesion-wise detection with the app's inference path.

Every prediction comes from :class:`seg_app.core.inference.Segmenter` (preprocessing, sliding window,
mapping back to the source grid, postprocessing), so the numbers are those of the app. Metrics are
computed per foreground label on the source (label file) grid:

* Dice (MONAI ``compute_dice``): 1.0 when both masks are empty, 0.0 when only one is.
* HD95 in mm (MONAI ``compute_hausdorff_distance`` with the image spacing): 0.0 when both masks are
  empty, NaN (left out of the mean, counted in the summary) when only one is.
* Lesions are 26-connected components. A ground-truth lesion is detected (TP) when at least one of its
  voxels is predicted with its label; otherwise it is a false negative (FN). A predicted lesion that
  touches no ground-truth voxel of its label is a false positive (FP).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_app.core.io import atomic_write, load_scan
from seg_app.core.spec import Checkpoint, ModelSpec, load_checkpoint, save_checkpoint
from training.data import DatasetError, DatasetInfo, read_dataset


def lesion_detection(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """TP/FN ground-truth lesions and FP predicted lesions of two binary masks (26-connectivity)."""
    from seg_app.core.measure import lesion_components

    gt_cc, n_gt = lesion_components(truth.astype(np.uint8))
    pr_cc, n_pr = lesion_components(pred.astype(np.uint8))
    tp = len(np.setdiff1d(np.unique(gt_cc[pred.astype(bool)]), [0])) if n_gt else 0
    fp = n_pr - len(np.setdiff1d(np.unique(pr_cc[truth.astype(bool)]), [0])) if n_pr else 0
    return {"gt_lesions": n_gt, "pred_lesions": n_pr, "tp": tp, "fn": n_gt - tp, "fp": fp}


def case_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float], labels: dict[int, str], voxel_ml: float) -> list[dict[str, Any]]:
    """Dice, HD95 (mm), volumes (ml) and lesion detection per foreground label of one case.

    Args:
        pred, truth: integer label maps ``(I, J, K)`` on the same grid.
        spacing: voxel size in mm along ``(I, J, K)``.
        labels: label value -> name, foreground only.
        voxel_ml: volume of one voxel in ml.
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance

    rows = []
    for value, name in labels.items():
        p, t = pred == value, truth == value
        pe, te = not p.any(), not t.any()
        pt = torch.from_numpy(np.stack([~p, p])[None].astype(np.float32))
        tt = torch.from_numpy(np.stack([~t, t])[None].astype(np.float32))
        dice = float(compute_dice(pt, tt, include_background=False, ignore_empty=False)[0, 0])
        if pe and te:
            hd95 = 0.0
        elif pe or te:
            hd95 = float("nan")
        else:
            hd95 = float(compute_hausdorff_distance(pt, tt, include_background=False, percentile=95, spacing=list(spacing))[0, 0])
        rows.append({
            "label": value, "label_name": name, "dice": dice, "hd95_mm": hd95,
            "gt_ml": float(t.sum() * voxel_ml), "pred_ml": float(p.sum() * voxel_ml), **lesion_detection(p, t),
        })
    return rows


def _mean_std(values: list[float]) -> tuple[float | None, float | None, int]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    return (float(v.mean()), float(v.std()), len(v)) if len(v) else (None, None, 0)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/std of Dice and HD95 and lesion-detection totals, per label and overall."""
    out: dict[str, Any] = {"n_cases": len({r["case"] for r in rows})}
    per_label = {}
    for name in sorted({r["label_name"] for r in rows}):
        rs = [r for r in rows if r["label_name"] == name]
        d_mean, d_std, _ = _mean_std([r["dice"] for r in rs])
        dl_mean, dl_std, n_les = _mean_std([r["dice"] for r in rs if r["gt_ml"] > 0])
        h_mean, h_std, n_h = _mean_std([r["hd95_mm"] for r in rs])
        tp, fn, fp = (sum(r[k] for r in rs) for k in ("tp", "fn", "fp"))
        n_pred = sum(r["pred_lesions"] for r in rs)
        per_label[name] = {
            "dice_mean": d_mean, "dice_std": d_std,
            "dice_mean_cases_with_lesion": dl_mean, "dice_std_cases_with_lesion": dl_std, "n_cases_with_lesion": n_les,
            "hd95_mm_mean": h_mean, "hd95_mm_std": h_std, "hd95_n_finite": n_h,
            "hd95_n_undefined": len(rs) - n_h,
            "lesions_tp": tp, "lesions_fn": fn, "lesions_fp": fp,
            "lesion_sensitivity": tp / (tp + fn) if tp + fn else None,
            "lesion_precision": (n_pred - fp) / n_pred if n_pred else None,
            "false_positive_cases": sum(1 for r in rs if r["gt_ml"] == 0 and r["pred_ml"] > 0),
        }
    out["labels"] = per_label
    if len(per_label) == 1:
        out.update({k: v for k, v in next(iter(per_label.values())).items()})
    return out


def select_cases(info: DatasetInfo, split: str, model_path: Path, spec: ModelSpec) -> list[dict[str, str]]:
    """Labelled cases of ``split``: test (imagesTs + labelsTs), val (the run's splits.json), train, all."""
    if split == "test":
        cases = [c for c in info.test if "label" in c]
        if not cases:
            raise DatasetError(f"{info.root} has no labelled test cases (imagesTs/ with labelsTs/).")
        return cases
    if split in ("train", "all"):
        extra = [c for c in info.test if "label" in c] if split == "all" else []
        return info.training + extra
    for folder in (model_path.parent, model_path.parent.parent):
        sp = folder / "splits.json"
        if sp.is_file():
            splits = json.loads(sp.read_text())["splits"]
            fold = int(spec.metrics.get("fold", 0) or 0)
            names = set(splits[fold]["val"])
            return [c for c in info.training if c["name"] in names]
    raise DatasetError(f"--split val needs the run's splits.json beside {model_path}.")


def _predict_fn(ckpt: Checkpoint, device: str):
    """The app's inference path: Segmenter(...).segment(volume).labels."""
    from seg_app.core.inference import Segmenter

    segmenter = Segmenter(model=ckpt, device=device, tta=False)
    return lambda volume: segmenter.segment(volume, return_probabilities=False).labels


def evaluate(model: str | os.PathLike, data: str | os.PathLike, split: str = "test", out_dir: str | os.PathLike | None = None,
             device: str = "auto", record: bool = False, progress: bool = True) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split; writes ``per_case.csv`` and ``summary.json``.

    With ``record`` the summary is stored in the checkpoint's ``metrics`` (prefix ``<split>_``).
    Returns ``{"summary": ..., "rows": [...], "out_dir": ...}``.
    """
    from tqdm import tqdm

    model_path = Path(model)
    ckpt = load_checkpoint(model_path)
    spec = ckpt.spec
    info = read_dataset(data)
    cases = select_cases(info, split, model_path, spec)
    predict = _predict_fn(ckpt, device)
    fg = {lab.value: lab.name for lab in spec.foreground_labels}
    rows: list[dict[str, Any]] = []
    for case in tqdm(cases, desc=f"evaluate {split}", disable=not progress, unit="case"):
        image = load_scan(case["image"])
        truth = load_scan(case["label"])
        if truth.shape != image.shape or not np.allclose(truth.affine, image.affine, atol=1e-3):
            raise DatasetError(f"The label of {case['name']} is not on its image's grid.")
        pred = predict(image)
        t = np.rint(truth.array[0]).astype(np.int64)
        for r in case_metrics(np.asarray(pred.array[0]), t, image.spacing, fg, image.voxel_volume_ml):
            rows.append({"case": case["name"], **r})
    summary = summarize(rows)
    summary.update({"split": split, "data": str(Path(data).resolve()), "model": str(model_path.resolve())})
    out = Path(out_dir) if out_dir else model_path.parent / f"eval_{split}_{Path(data).resolve().name}"
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        with atomic_write(out / "per_case.csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    with atomic_write(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, allow_nan=False, default=str) if _finite(summary) else json.dumps(summary, indent=1))
    if record:
        record_metrics(model_path, split, summary, Path(data).resolve().name)
    return {"summary": summary, "rows": rows, "out_dir": str(out)}


def _finite(obj: Any) -> bool:
    try:
        json.dumps(obj, allow_nan=False)
        return True
    except ValueError:
        return False


def record_metrics(model_path: Path, split: str, summary: dict[str, Any], data_name: str) -> None:
    """Store evaluation results in the checkpoint's spec metrics (weights unchanged, atomic)."""
    ckpt = load_checkpoint(model_path)
    keep = ("dice_mean", "dice_std", "dice_mean_cases_with_lesion", "hd95_mm_mean", "hd95_mm_std",
            "lesion_sensitivity", "lesion_precision", "false_positive_cases", "n_cases_with_lesion")
    m = dict(ckpt.spec.metrics)
    m[f"{split}_data"] = data_name
    m[f"{split}_n_cases"] = summary["n_cases"]
    for k in keep:
        if k in summary:
            v = summary[k]
            m[f"{split}_{k}"] = round(v, 4) if isinstance(v, float) else v
    save_checkpoint(model_path, ckpt.spec.with_updates(metrics=m), ckpt.state_dict, ckpt.training_state)
