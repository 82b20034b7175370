"""Overlap and surface metrics of two binary masks (numpy/scipy only; no torch).

The one definition used by ``seg-train evaluate``, ``seg-app compare`` and the benchmarks:

* Dice: ``2|A and B| / (|A| + |B|)``; 1.0 when both masks are empty, 0.0 when only one is (MONAI
  ``compute_dice(ignore_empty=False)``).
* Surface voxels of a mask: its voxels with a face neighbour (6-connectivity) outside the mask or
  outside the image (medpy's ``__surface_distances``). Surface distances: from each surface voxel of one
  mask to the nearest surface voxel of the other, in mm.
* ``hd95_directed_max_mm``: the larger of the two directed 95th percentiles (MONAI
  ``compute_hausdorff_distance(percentile=95)``).
* ``hd95_pooled_mm``: the 95th percentile of both directions' distances pooled (medpy ``hd95``). Both
  are 0.0 when both masks are empty and NaN when only one is.
* ``hd95_*_brats_mm``: the BraTS convention for empty masks: 0.0 when both are empty,
  :data:`BRATS_HD95_PENALTY_MM` when only one is.
* Lesions are 26-connected components. A reference lesion is detected when at least one of its voxels
  is in the other mask; a lesion of the other mask that touches no reference voxel is a false positive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["BRATS_HD95_PENALTY_MM", "HD95_KEYS", "binary_metrics", "dice", "hd95", "lesion_detection", "surface_distances"]

#: HD95 given to a case where exactly one of the masks is empty (BraTS): the diagonal of the BraTS
#: 240 x 240 x 155 grid of 1 mm voxels, sqrt(240^2 + 240^2 + 155^2) mm.
BRATS_HD95_PENALTY_MM = 373.13

#: Names of the HD95 variants (all in mm).
HD95_KEYS = ("hd95_directed_max_mm", "hd95_pooled_mm", "hd95_directed_max_brats_mm", "hd95_pooled_brats_mm")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it or outside the array (medpy's convention)."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from every surface voxel of ``a`` to the nearest surface voxel of ``b``, and from ``b`` to ``a``.

    Both masks must be non-empty. They are cropped to the bounding box of their union plus one voxel
    (clipped to the array), which changes no distance and no surface voxel.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    both = a | b
    box = []
    for axis in range(a.ndim):
        nz = np.flatnonzero(both.any(axis=tuple(x for x in range(a.ndim) if x != axis)))
        box.append(slice(max(0, int(nz[0]) - 1), int(nz[-1]) + 2))
    a, b = a[tuple(box)], b[tuple(box)]
    sa, sb = _surface(a), _surface(b)
    sampling = [float(x) for x in spacing]
    a_to_b = ndimage.distance_transform_edt(~sb, sampling=sampling)[sa]
    b_to_a = ndimage.distance_transform_edt(~sa, sampling=sampling)[sb]
    return a_to_b, b_to_a


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """The four HD95 variants of :data:`HD95_KEYS` (mm) for two binary masks."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    pe, te = not pred.any(), not truth.any()
    if pe and te:
        return dict.fromkeys(HD95_KEYS, 0.0)
    if pe or te:
        nan = float("nan")
        return {"hd95_directed_max_mm": nan, "hd95_pooled_mm": nan,
                "hd95_directed_max_brats_mm": BRATS_HD95_PENALTY_MM, "hd95_pooled_brats_mm": BRATS_HD95_PENALTY_MM}
    p_to_t, t_to_p = surface_distances(pred, truth, spacing)
    directed = max(float(np.percentile(p_to_t, 95)), float(np.percentile(t_to_p, 95)))
    pooled = float(np.percentile(np.concatenate([p_to_t, t_to_p]), 95))
    return {"hd95_directed_max_mm": directed, "hd95_pooled_mm": pooled,
            "hd95_directed_max_brats_mm": directed, "hd95_pooled_brats_mm": pooled}


def lesion_detection(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """TP/FN reference lesions and FP lesions of ``pred`` for two binary masks (26-connectivity)."""
    from seg_app.core.measure import lesion_components

    gt_cc, n_gt = lesion_components(np.asarray(truth, np.uint8))
    pr_cc, n_pr = lesion_components(np.asarray(pred, np.uint8))
    tp = len(np.setdiff1d(np.unique(gt_cc[np.asarray(pred, bool)]), [0])) if n_gt else 0
    fp = n_pr - len(np.setdiff1d(np.unique(pr_cc[np.asarray(truth, bool)]), [0])) if n_pr else 0
    return {"gt_lesions": n_gt, "pred_lesions": n_pr, "tp": tp, "fn": n_gt - tp, "fp": fp}


def binary_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], voxel_ml: float) -> dict[str, Any]:
    """Dice, the HD95 variants, both volumes (mL) and lesion detection of two binary masks."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    h = hd95(p, t, spacing)
    return {
        "dice": dice(p, t), "hd95_mm": h["hd95_directed_max_mm"], **h,
        "gt_ml": float(t.sum() * voxel_ml), "pred_ml": float(p.sum() * voxel_ml), **lesion_detection(p, t),
    }
