"""``seg-train evaluate``: per-case Dice, HD95 and lesion-wise detection with the app's inference path.

Every prediction comes from :class:`seg_app.core.inference.Segmenter` (preprocessing, sliding window,
mapping back to the source grid, postprocessing), so the numbers are those of the app. Metrics are
computed per foreground label on the source (label file) grid, and for BraTS-like label sets also per
composite region (WT = whole tumour, TC = tumour core, ET = enhancing tumour, as BraTS scores them):

* Dice (MONAI ``compute_dice``): 1.0 when both masks are empty, 0.0 when only one is.
* Surface voxels of a mask: its voxels with a face neighbour (6-connectivity) outside the mask or
  outside the image (medpy's ``__surface_distances``: the mask minus its binary erosion by the
  connectivity-1 structure). Surface distances: from each surface voxel of one mask to the nearest
  surface voxel of the other, in mm (Euclidean distance transform with the voxel spacing).
* ``hd95_directed_max_mm``: the larger of the two directed 95th percentiles (MONAI
  ``compute_hausdorff_distance(percentile=95)``; also the legacy ``hd95_mm``).
* ``hd95_pooled_mm``: the 95th percentile of both directions' distances pooled (medpy ``hd95``,
  seg-metrics). Both: 0.0 when both masks are empty, NaN (left out of the mean) when only one is.
* ``hd95_*_brats_mm``: the same with the BraTS convention for empty masks: 0.0 when both are empty,
  :data:`BRATS_HD95_PENALTY_MM` when only one is (a missed or a hallucinated structure), so the
  mean over all cases counts such cases instead of dropping them.
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

from seg_app.core.io import atomic_write, load_scan
from seg_app.core.metrics import (  # noqa: F401 - re-exported for callers of training.evaluate
    BRATS_HD95_PENALTY_MM,
    HD95_KEYS,
    binary_metrics,
    hd95,
    lesion_detection,
    surface_distances,
)
from seg_app.core.spec import Checkpoint, ModelSpec, load_checkpoint, save_checkpoint
from training.data import DatasetError, DatasetInfo, read_dataset


# The metric definitions live in the app's core (one copy; ``seg-app compare`` uses them too).


def case_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float], labels: dict[int, str], voxel_ml: float,
                 regions: dict[str, tuple[int, ...]] | None = None) -> list[dict[str, Any]]:
    """Dice, HD95 variants (mm), volumes (ml) and lesion detection per foreground label of one case.

    Args:
        pred, truth: integer label maps ``(I, J, K)`` on the same grid.
        spacing: voxel size in mm along ``(I, J, K)``.
        labels: label value -> name, foreground only.
        voxel_ml: volume of one voxel in ml.
        regions: composite region name -> label values (e.g. ``{"WT": (1, 2, 3), ...}`` from
            :func:`seg_app.core.regions.composite_regions`); each gets a row too (``kind`` "region",
            ``label`` and ``label_name`` the region name).

    Returns:
        one row per label (``kind`` "label"), then one per region.
    """
    rows = []
    for value, name in labels.items():
        rows.append({"kind": "label", "label": value, "label_name": name,
                     **binary_metrics(pred == value, truth == value, spacing, voxel_ml)})
    for region, values in (regions or {}).items():
        vals = list(values)
        rows.append({"kind": "region", "label": region, "label_name": region,
                     **binary_metrics(np.isin(pred, vals), np.isin(truth, vals), spacing, voxel_ml)})
    return rows


def _mean_std(values: list[float]) -> tuple[float | None, float | None, int]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    return (float(v.mean()), float(v.std()), len(v)) if len(v) else (None, None, 0)


def _median(values: list[float]) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.median(v)) if v else None


def _group_summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    d_mean, d_std, _ = _mean_std([r["dice"] for r in rs])
    dl_mean, dl_std, n_les = _mean_std([r["dice"] for r in rs if r["gt_ml"] > 0])
    h_mean, h_std, n_h = _mean_std([r["hd95_mm"] for r in rs])
    tp, fn, fp = (sum(r[k] for r in rs) for k in ("tp", "fn", "fp"))
    n_pred = sum(r["pred_lesions"] for r in rs)
    both = [r for r in rs if r["gt_ml"] > 0 and r["pred_ml"] > 0]
    out = {
        "dice_mean": d_mean, "dice_std": d_std,
        "dice_mean_cases_with_lesion": dl_mean, "dice_std_cases_with_lesion": dl_std, "n_cases_with_lesion": n_les,
        # legacy: directed-max HD95 over the cases where it is defined (both-empty cases count as 0)
        "hd95_mm_mean": h_mean, "hd95_mm_std": h_std, "hd95_n_finite": n_h,
        "hd95_n_undefined": len(rs) - n_h,
        "hd95_n_both_nonempty": len(both),
        "hd95_n_both_empty": sum(1 for r in rs if r["gt_ml"] == 0 and r["pred_ml"] == 0),
        "hd95_n_penalised": sum(1 for r in rs if (r["gt_ml"] == 0) != (r["pred_ml"] == 0)),
    }
    for key in HD95_KEYS:
        # plain variants: only cases where both masks are non-empty; BraTS variants: every case
        vals = [r[key] for r in (rs if key.endswith("_brats_mm") else both)]
        mean, std, _ = _mean_std(vals)
        out.update({f"{key}_mean": mean, f"{key}_std": std, f"{key}_median": _median(vals)})
    out.update({
        "lesions_tp": tp, "lesions_fn": fn, "lesions_fp": fp,
        "lesion_sensitivity": tp / (tp + fn) if tp + fn else None,
        "lesion_precision": (n_pred - fp) / n_pred if n_pred else None,
        "false_positive_cases": sum(1 for r in rs if r["gt_ml"] == 0 and r["pred_ml"] > 0),
    })
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/std/median of Dice and the HD95 variants and lesion-detection totals, per label and per region.

    ``labels`` holds the per-label summaries, ``regions`` (only when there are region rows) the
    per-composite-region ones. The top level also holds one of them (named by ``top_level``): the
    label's when there is a single label, else the whole tumour's (WT) for BraTS-like labels.
    """
    out: dict[str, Any] = {"n_cases": len({r["case"] for r in rows})}
    groups: dict[str, dict[str, Any]] = {"labels": {}, "regions": {}}
    for kind, key in (("label", "labels"), ("region", "regions")):
        rs_kind = [r for r in rows if r.get("kind", "label") == kind]
        names = list(dict.fromkeys(r["label_name"] for r in rs_kind))  # regions: WT, TC, ET order
        for name in sorted(names) if kind == "label" else names:
            groups[key][name] = _group_summary([r for r in rs_kind if r["label_name"] == name])
    out["labels"] = groups["labels"]
    if groups["regions"]:
        out["regions"] = groups["regions"]
    if len(groups["labels"]) == 1:
        out["top_level"] = next(iter(groups["labels"]))
        out.update(next(iter(groups["labels"].values())))
    elif "WT" in groups["regions"]:
        out["top_level"] = "WT"
        out.update(groups["regions"]["WT"])
    return out


#: What each summary metric means (``seg-train evaluate`` prints this once, after the summary).
METRIC_GLOSSARY: dict[str, str] = {
    "dice": "Dice = 2|P&T| / (|P|+|T|) per case and label on the source grid; 1 when both are empty, 0 when only one is",
    "dice_mean_cases_with_lesion": "mean Dice over the cases whose ground truth has this label (n_cases_with_lesion)",
    "hd95_directed_max_mm": "larger of the two directed 95th-percentile surface distances in mm (MONAI compute_hausdorff_distance "
                            "percentile=95; = legacy hd95_mm); mean over cases where both masks are non-empty",
    "hd95_pooled_mm": "95th percentile of both directions' surface distances pooled (medpy hd95); cases with both masks non-empty",
    "hd95_*_brats_mm": f"BraTS convention: 0 when both masks are empty, {BRATS_HD95_PENALTY_MM} mm when only one is; mean over all cases",
    "hd95_mm_mean": "legacy: directed-max HD95 where defined (both empty = 0; one empty left out, counted in hd95_n_undefined)",
    "lesions_tp / fn / fp": "lesions are 26-connected components; a true lesion touched by the prediction is TP, else FN; "
                            "a predicted lesion touching no true voxel is FP",
    "lesion_sensitivity": "TP / (TP + FN) over all true lesions",
    "lesion_precision": "predicted lesions touching a true lesion / all predicted lesions",
    "false_positive_cases": "cases without this label in the truth where something was predicted",
    "top_level": "the group repeated at the top of the summary: the only label, or WT for BraTS-like labels",
}


def metric_glossary() -> str:
    """One line per metric of :data:`METRIC_GLOSSARY`."""
    width = max(map(len, METRIC_GLOSSARY))
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in METRIC_GLOSSARY.items())


def _check_split(data: str | os.PathLike, split: str, channels: int) -> None:
    """The dataset check (``training.check``) of the files ``split`` reads, with the model's channel count."""
    from training.check import check_dataset

    splits = {"test": ("test",), "all": ("training", "test")}.get(split, ("training",))
    check_dataset(data, splits=splits, channels=channels, raise_on_problems=True)


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
             device: str = "auto", record: bool = False, progress: bool = True, check: bool = True) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split; writes ``per_case.csv`` and ``summary.json``.

    With ``record`` the summary is stored in the checkpoint's ``metrics`` (prefix ``<split>_``). With
    ``check`` the files of the split are checked first (``training.check``; every problem is raised
    at once as ``ProblemList``).
    Returns ``{"summary": ..., "rows": [...], "out_dir": ...}``.
    """
    from tqdm import tqdm

    model_path = Path(model)
    ckpt = load_checkpoint(model_path)
    spec = ckpt.spec
    if check:
        _check_split(data, split, spec.in_channels)
    info = read_dataset(data)
    cases = select_cases(info, split, model_path, spec)
    predict = _predict_fn(ckpt, device)
    fg = {lab.value: lab.name for lab in spec.foreground_labels}
    from seg_app.core.regions import composite_regions

    regions = composite_regions(fg)  # {} unless the labels are BraTS-like
    rows: list[dict[str, Any]] = []
    for case in tqdm(cases, desc=f"evaluate {split}", disable=not progress, unit="case"):
        image = load_scan(case["image"])
        truth = load_scan(case["label"])
        if truth.shape != image.shape or not np.allclose(truth.affine, image.affine, atol=1e-3):
            raise DatasetError(f"The label of {case['name']} is not on its image's grid.")
        pred = predict(image)
        t = np.rint(truth.array[0]).astype(np.int64)
        for r in case_metrics(np.asarray(pred.array[0]), t, image.spacing, fg, image.voxel_volume_ml, regions):
            rows.append({"case": case["name"], **r})
    summary = summarize(rows)
    summary.update({"split": split, "data": str(Path(data).resolve()), "model": str(model_path.resolve()),
                    "brats_hd95_penalty_mm": BRATS_HD95_PENALTY_MM})
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
            "hd95_directed_max_mm_mean", "hd95_pooled_mm_mean", "hd95_pooled_brats_mm_mean", "hd95_n_penalised",
            "lesion_sensitivity", "lesion_precision", "false_positive_cases", "n_cases_with_lesion")
    m = dict(ckpt.spec.metrics)
    m[f"{split}_data"] = data_name
    m[f"{split}_n_cases"] = summary["n_cases"]
    for k in keep:
        if k in summary:
            v = summary[k]
            m[f"{split}_{k}"] = round(v, 4) if isinstance(v, float) else v
    save_checkpoint(model_path, ckpt.spec.with_updates(metrics=m), ckpt.state_dict, ckpt.training_state)
