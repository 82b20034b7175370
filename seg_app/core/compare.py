"""Compare two label maps of one scan (prediction vs ground truth, reader A vs reader B).

Per label and per BraTS composite region (WT/TC/ET when the names allow): Dice, HD95 in both
conventions (see :mod:`seg_app.core.metrics`), volumes of A and B in mL and their difference (B - A),
lesion detection with A as the reference. Per lesion (26-connected components of the foreground):
lesions of A and B are paired by overlap (largest intersection, each lesion used once), then each pair
gets both volumes, the difference and the Dice of the two lesions; unpaired lesions are listed as
"only A" / "only B". The agreement map has 1 where both mark foreground, 2 only A, 3 only B.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seg_app.core.measure import lesion_components
from seg_app.core.metrics import binary_metrics, dice
from seg_app.core.regions import composite_regions

__all__ = ["AGREEMENT_NAMES", "Comparison", "agreement_map", "compare_label_maps"]

#: Values of :func:`agreement_map`.
AGREEMENT_NAMES = {0: "background", 1: "both", 2: "only A", 3: "only B"}


@dataclass
class Comparison:
    """Result of :func:`compare_label_maps` (plain values, ready for JSON)."""

    rows: list[dict[str, Any]] = field(default_factory=list)  # one per label, then per region
    lesions: list[dict[str, Any]] = field(default_factory=list)  # one per lesion pair or unpaired lesion

    def as_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {"labels": [{k: clean(v) for k, v in r.items()} for r in self.rows],
                "lesions": [{k: clean(v) for k, v in r.items()} for r in self.lesions]}


def agreement_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 map: 1 foreground in both, 2 only in ``a``, 3 only in ``b``, 0 elsewhere."""
    fa, fb = np.asarray(a) > 0, np.asarray(b) > 0
    out = np.zeros(fa.shape, np.uint8)
    out[fa & fb] = 1
    out[fa & ~fb] = 2
    out[~fa & fb] = 3
    return out


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    return tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0), idx.max(0)))


def _pair_lesions(a: np.ndarray, b: np.ndarray, voxel_ml: float) -> list[dict[str, Any]]:
    cc_a, n_a = lesion_components((np.asarray(a) > 0).astype(np.uint8))
    cc_b, n_b = lesion_components((np.asarray(b) > 0).astype(np.uint8))
    vol_a = np.bincount(cc_a.ravel(), minlength=n_a + 1)
    vol_b = np.bincount(cc_b.ravel(), minlength=n_b + 1)
    both = (cc_a > 0) & (cc_b > 0)
    pairs = np.stack([cc_a[both], cc_b[both]], 1) if both.any() else np.zeros((0, 2), np.int64)
    overlaps: dict[tuple[int, int], int] = {}
    if len(pairs):
        keys, counts = np.unique(pairs, axis=0, return_counts=True)
        overlaps = {(int(k[0]), int(k[1])): int(c) for k, c in zip(keys, counts)}
    used_a: set[int] = set()
    used_b: set[int] = set()
    rows: list[dict[str, Any]] = []
    for (ia, ib), ov in sorted(overlaps.items(), key=lambda kv: -kv[1]):  # greedy by largest overlap
        if ia in used_a or ib in used_b:
            continue
        used_a.add(ia)
        used_b.add(ib)
        ma, mb = cc_a == ia, cc_b == ib
        box = _bbox(ma | mb)
        rows.append({"status": "paired", "lesion_a": ia, "lesion_b": ib, "a_ml": float(vol_a[ia] * voxel_ml),
                     "b_ml": float(vol_b[ib] * voxel_ml), "difference_ml": float((vol_b[ib] - vol_a[ia]) * voxel_ml),
                     "dice": dice(ma[box], mb[box]), "overlap_ml": float(ov * voxel_ml)})
    for ia in range(1, n_a + 1):
        if ia not in used_a:
            rows.append({"status": "only A", "lesion_a": ia, "lesion_b": None, "a_ml": float(vol_a[ia] * voxel_ml), "b_ml": 0.0,
                         "difference_ml": float(-vol_a[ia] * voxel_ml), "dice": 0.0, "overlap_ml": 0.0})
    for ib in range(1, n_b + 1):
        if ib not in used_b:
            rows.append({"status": "only B", "lesion_a": None, "lesion_b": ib, "a_ml": 0.0, "b_ml": float(vol_b[ib] * voxel_ml),
                         "difference_ml": float(vol_b[ib] * voxel_ml), "dice": 0.0, "overlap_ml": 0.0})
    return rows


def compare_label_maps(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...], voxel_ml: float,
                       label_names: Mapping[int, str] | None = None) -> Comparison:
    """Compare label maps ``a`` (reference) and ``b`` on the same grid.

    Args:
        a, b: integer label maps ``(I, J, K)``.
        spacing: voxel size in mm along ``(I, J, K)``.
        voxel_ml: volume of one voxel in mL.
        label_names: value -> name; labels present in either map without a name are called "label <v>".
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"The label maps have different shapes {a.shape} and {b.shape}.")
    values = sorted({int(v) for v in np.union1d(np.unique(a), np.unique(b)) if v})
    names = {v: (label_names or {}).get(v, f"label {v}") for v in values}
    for v, n in (label_names or {}).items():
        names.setdefault(int(v), n)
    out = Comparison()
    for v in sorted(names):
        m = binary_metrics(b == v, a == v, spacing, voxel_ml)
        out.rows.append({"kind": "label", "label": v, "name": names[v], **_rename(m)})
    for region, vals in composite_regions(names).items():
        m = binary_metrics(np.isin(b, vals), np.isin(a, vals), spacing, voxel_ml)
        out.rows.append({"kind": "region", "label": region, "name": region, **_rename(m)})
    out.lesions = _pair_lesions(a, b, voxel_ml)
    return out


def _rename(m: dict[str, Any]) -> dict[str, Any]:
    """binary_metrics(pred=B, truth=A) names -> A/B names."""
    r = dict(m)
    r["a_ml"], r["b_ml"] = r.pop("gt_ml"), r.pop("pred_ml")
    r["difference_ml"] = r["b_ml"] - r["a_ml"]
    r["lesions_a"], r["lesions_b"] = r.pop("gt_lesions"), r.pop("pred_lesions")
    r["a_lesions_found_in_b"], r["a_lesions_missed_in_b"], r["b_lesions_not_in_a"] = r.pop("tp"), r.pop("fn"), r.pop("fp")
    r.pop("hd95_mm", None)
    return r
