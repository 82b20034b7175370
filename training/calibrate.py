"""``seg-train calibrate``: choose the lesion postprocessing of a checkpoint on a selection set.

nnU-Net decides its postprocessing (keep the largest component or not) on the cross-validation
predictions, never on the test set. This does the same for the two lesion filters the app applies
after the network (``PostprocessSpec``): the minimum lesion volume ``min_lesion_ml`` and the minimum
lesion confidence ``min_lesion_confidence`` (mean foreground probability over the lesion).

1. Every selection case is segmented once with the app's own path (``Segmenter``) and the lesion
   filters off; the label map and the foreground probability are kept (cropped to the tumour box).
2. Each (min_lesion_ml, min_lesion_confidence) of a grid is scored on whole-tumour lesions (the
   components ``postprocess_labels`` removes or keeps; the foreground when the labels are not
   BraTS-like): mean WT Dice over cases with a lesion, lesion sensitivity (reference lesions of at
   least :data:`MIN_REFERENCE_ML`), lesion precision, and false-positive mL on lesion-free cases.
3. The rule, fixed before any run: among settings whose Dice is at most :data:`MAX_DICE_LOSS` and
   whose sensitivity at most :data:`MAX_SENSITIVITY_LOSS` below those of the checkpoint's current
   setting, take the one with the best lesion F1 (ties: the mildest filter). The checkpoint's own
   setting is always allowed, so calibration never makes the selection numbers worse than that.

The chosen setting and the table are written into a copy of the checkpoint (weights unchanged) and
``calibration.json`` / ``calibration.csv`` beside it. Use a selection set the model was not trained on
and that no benchmark uses.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from seg_app.core.io import atomic_write, load_scan
from seg_app.core.spec import load_checkpoint, save_checkpoint
from training.data import DatasetError, read_dataset

MIN_REFERENCE_ML = 0.5  #: reference lesions counted for sensitivity (as in the generalisation benchmark)
MAX_DICE_LOSS = 0.005
MAX_SENSITIVITY_LOSS = 0.02
MIN_ML_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
CONFIDENCE_GRID = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


@dataclasses.dataclass
class CaseLesions:
    """One case reduced to what the sweep needs: its predicted lesions and the reference."""

    name: str
    voxels: np.ndarray  # (n,) size of each predicted lesion
    confidence: np.ndarray  # (n,) mean foreground probability per predicted lesion
    overlap: np.ndarray  # (n,) reference voxels inside each predicted lesion
    reference_voxels: int
    voxel_ml: float
    reference_hits: list[np.ndarray]  # per counted reference lesion: indices of predicted lesions touching it


def case_lesions(name: str, pred: np.ndarray, fg: np.ndarray, truth: np.ndarray, voxel_ml: float,
                 whole: tuple[int, ...] | None) -> CaseLesions:
    """Whole-tumour (or foreground) lesions of one unfiltered prediction and their overlap with the truth."""
    from seg_app.core.measure import lesion_components

    p = np.isin(pred, whole) if whole else pred > 0
    t = np.isin(truth, whole) if whole else truth > 0
    cc, n = lesion_components(p.astype(np.uint8))
    counts = np.bincount(cc.ravel(), minlength=n + 1)[1:]
    sums = np.bincount(cc.ravel(), weights=fg.astype(np.float64).ravel(), minlength=n + 1)[1:]
    overlap = np.bincount(cc.ravel(), weights=t.ravel().astype(np.float64), minlength=n + 1)[1:]
    gcc, gn = lesion_components(t.astype(np.uint8))
    hits = []
    for g in range(1, gn + 1):
        inside = gcc == g
        if inside.sum() * voxel_ml < MIN_REFERENCE_ML:
            continue
        hits.append(np.setdiff1d(np.unique(cc[inside]), [0]) - 1)
    return CaseLesions(name, counts, sums / np.maximum(counts, 1), overlap, int(t.sum()), voxel_ml, hits)


def score(cases: list[CaseLesions], min_ml: float, min_confidence: float) -> dict[str, Any]:
    """Selection numbers of one filter setting (the filters of ``postprocess_labels``)."""
    dices, detected, counted, tp, fp, fp_ml = [], 0, 0, 0, 0, []
    for c in cases:
        keep = (c.voxels >= min_ml / c.voxel_ml) & (c.confidence >= min_confidence)  # as postprocess_labels
        kept_voxels = float(c.voxels[keep].sum())
        if c.reference_voxels:
            denom = kept_voxels + c.reference_voxels
            dices.append(2.0 * float(c.overlap[keep].sum()) / denom if denom else 1.0)
        else:
            fp_ml.append(kept_voxels * c.voxel_ml)
        for h in c.reference_hits:
            counted += 1
            detected += bool(keep[h].any()) if len(h) else False
        tp += int((keep & (c.overlap > 0)).sum())
        fp += int((keep & (c.overlap == 0)).sum())
    sens = detected / counted if counted else 1.0
    prec = tp / (tp + fp) if tp + fp else 1.0
    return {
        "min_lesion_ml": min_ml, "min_lesion_confidence": min_confidence,
        "wt_dice": float(np.mean(dices)) if dices else float("nan"),
        "lesion_sensitivity": sens, "lesion_precision": prec,
        "lesion_f1": 2 * sens * prec / (sens + prec) if sens + prec else 0.0,
        "fp_lesions": fp, "healthy_fp_ml_mean": float(np.mean(fp_ml)) if fp_ml else 0.0,
        "healthy_fp_ml_max": float(np.max(fp_ml)) if fp_ml else 0.0,
    }


def choose(table: list[dict[str, Any]], current: dict[str, Any]) -> dict[str, Any]:
    """The rule of the module docstring: best F1 within the Dice and sensitivity margins of ``current``."""
    ok = [r for r in table
          if r["wt_dice"] >= current["wt_dice"] - MAX_DICE_LOSS - 1e-12
          and r["lesion_sensitivity"] >= current["lesion_sensitivity"] - MAX_SENSITIVITY_LOSS - 1e-12]
    ok.append(current)
    return max(ok, key=lambda r: (round(r["lesion_f1"], 9), -r["min_lesion_confidence"], -r["min_lesion_ml"]))


def collect(model: str | os.PathLike, data: str | os.PathLike, split: str = "test", device: str = "auto",
            progress: bool = True) -> tuple[list[CaseLesions], Any]:
    """Segment every case of ``split`` once with the lesion filters off; returns (cases, checkpoint)."""
    from tqdm import tqdm

    from seg_app.core.inference import Segmenter
    from seg_app.core.regions import composite_regions
    from training.evaluate import select_cases

    model_path = Path(model)
    ckpt = load_checkpoint(model_path)
    spec = ckpt.spec
    off = dataclasses.replace(spec.postprocess, min_lesion_ml=0.0, min_lesion_confidence=0.0)
    seg = Segmenter(model=dataclasses.replace(ckpt, spec=spec.with_updates(postprocess=off)), device=device, tta=False)
    whole = composite_regions({lab.value: lab.name for lab in spec.foreground_labels}).get("WT")
    out = []
    for case in tqdm(select_cases(read_dataset(data), split, model_path, spec), desc=f"calibrate {split}",
                     disable=not progress, unit="case"):
        image, truth = load_scan(case["image"]), load_scan(case["label"])
        if truth.shape != image.shape or not np.allclose(truth.affine, image.affine, atol=1e-3):
            raise DatasetError(f"The label of {case['name']} is not on its image's grid.")
        r = seg.segment(image)
        out.append(case_lesions(case["name"], r.labels.array[0], r.probabilities.array[0],
                                np.rint(truth.array[0]).astype(np.int64), image.voxel_volume_ml,
                                tuple(whole) if whole else None))
    return out, ckpt


def calibrate(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, split: str = "test",
              device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Choose the lesion filters on ``data``'s ``split`` and write the calibrated checkpoint to ``out``."""
    out = Path(out)
    if out.resolve() == Path(model).resolve():
        raise DatasetError("calibrate writes a new checkpoint: --out must differ from --model.")
    cases, ckpt = collect(model, data, split, device, progress)
    if not any(c.reference_voxels for c in cases):
        raise DatasetError(f"No case of the {split} split has a lesion: nothing to calibrate on.")
    pp = ckpt.spec.postprocess
    current = score(cases, pp.min_lesion_ml, pp.min_lesion_confidence)
    table = [score(cases, m, c) for m in MIN_ML_GRID for c in CONFIDENCE_GRID]
    best = choose(table, current)
    record = {
        "data": Path(data).resolve().name, "split": split, "n_cases": len(cases),
        "n_lesion_free": sum(not c.reference_voxels for c in cases),
        "rule": f"best lesion F1 with WT Dice >= current - {MAX_DICE_LOSS} and sensitivity >= current - "
                f"{MAX_SENSITIVITY_LOSS} (reference lesions >= {MIN_REFERENCE_ML} mL)",
        "before": _rounded(current), "after": _rounded(best),
    }
    spec = ckpt.spec.with_updates(
        postprocess=dataclasses.replace(pp, min_lesion_ml=best["min_lesion_ml"],
                                        min_lesion_confidence=best["min_lesion_confidence"]),
        metrics={**ckpt.spec.metrics, "calibration": record},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, spec, ckpt.state_dict, None)
    with atomic_write(out.parent / "calibration.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(_rounded(r) for r in table)
    with atomic_write(out.parent / "calibration.json") as tmp:
        tmp.write_text(json.dumps({**record, "model": str(Path(model).resolve()), "out": str(out.resolve())}, indent=1))
    return record


def _rounded(r: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
