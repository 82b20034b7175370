"""Label-map postprocessing on the source grid (Qt-free): drop small or unconfident lesions, keep the largest.

What the spec's :class:`~seg_app.core.spec.PostprocessSpec` asks for, applied after argmax by
:class:`~seg_app.core.inference.Segmenter` (see ``docs/MEASUREMENTS.md``).
"""

from __future__ import annotations

import numpy as np

from seg_app.core.spec import ModelSpec

__all__ = ["postprocess_labels"]


def postprocess_labels(labels: np.ndarray, spec: ModelSpec, voxel_volume_ml: float,
                       foreground: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Apply the spec's postprocessing in place; returns (labels, number of lesions removed).

    A lesion is a connected component of one label, or of the whole tumour when the labels are tumour
    sub-regions (``seg_app.core.regions``): a small enhancing part of a large tumour is never removed.
    ``foreground`` (the foreground probability on the same grid) is needed for the spec's
    ``min_lesion_confidence``: a lesion whose mean probability is under it is removed (the same mean
    as the lesion's ``confidence`` in the measurements); without it that rule is not applied.
    """
    pp = spec.postprocess
    by_confidence = pp.min_lesion_confidence > 0 and foreground is not None
    if pp.min_lesion_ml <= 0 and not pp.keep_largest and not by_confidence:
        return labels, 0
    from seg_app.core.measure import _nonzero_bbox, lesion_components
    from seg_app.core.regions import composite_regions

    box = _nonzero_bbox(labels)
    if box is None:
        return labels, 0
    crop = labels[box]
    whole = composite_regions({lab.value: lab.name for lab in spec.labels}).get("WT")
    cc, n = lesion_components(np.isin(crop, whole).astype(np.uint8) if whole else crop)
    if n == 0:
        return labels, 0
    counts = np.bincount(cc.ravel(), minlength=n + 1)
    ids, first = np.unique(cc.ravel(), return_index=True)  # first voxel of each component
    comp_label = np.zeros(n + 1, dtype=np.int64)
    comp_label[ids] = 1 if whole else crop.ravel()[first]  # whole-tumour lesions form one group
    remove = np.zeros(n + 1, dtype=bool)
    min_vox = pp.min_lesion_ml / voxel_volume_ml if voxel_volume_ml > 0 else 0
    for cid in range(1, n + 1):
        if counts[cid] < min_vox:
            remove[cid] = True
    if by_confidence:
        sums = np.bincount(cc.ravel(), weights=np.asarray(foreground, dtype=np.float64)[box].ravel(), minlength=n + 1)
        mean = sums / np.maximum(counts, 1)
        remove[1:] |= mean[1:] < pp.min_lesion_confidence
    if pp.keep_largest:
        for value in np.unique(comp_label[1:]):
            ids = [i for i in range(1, n + 1) if comp_label[i] == value and not remove[i]]
            if len(ids) > 1:
                keep = max(ids, key=lambda i: counts[i])
                for i in ids:
                    remove[i] = i != keep
    removed = int(remove.sum())
    if removed:
        crop[remove[cc]] = 0
    return labels, removed
