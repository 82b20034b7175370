"""RECIST calipers of one lesion for drawing (Qt-free): the long and short axis end points on the
axial slice where the core measured them.

The lengths follow the definitions of :mod:`seg_app.core.shape` (boundary = face centres between lesion
and background pixels; long axis = largest in-plane Feret diameter; short axis = longest extent
perpendicular to it, in strips one voxel wide), recomputed here on the one slice the core reports
(``LesionMeasurement.long_axis_slice``) to get end points the views can draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Calipers", "lesion_mask", "recist_calipers"]


@dataclass(frozen=True)
class Calipers:
    """End points in display voxel coordinates (floats) and lengths in mm."""

    display_slice: int  # index along display axis 2 (axial views)
    long_ends: tuple[np.ndarray, np.ndarray]
    short_ends: tuple[np.ndarray, np.ndarray] | None
    long_mm: float
    short_mm: float


def lesion_mask(labels: np.ndarray, lesion, values: tuple[int, ...] | None = None,
                connectivity: int = 26) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """``(box, mask)``: the voxels of ``lesion`` (a ``LesionMeasurement``) in the source label array.

    Args:
        labels: source-grid label array ``(I, J, K)``.
        lesion: its ``label``, ``bbox_min_voxel``, ``bbox_max_voxel`` and ``voxel_count`` find it.
        values: label values that form lesions of this kind (whole-tumour lesions: every sub-region);
            default ``(lesion.label,)``.

    Returns None when the labels changed so that no connected component matches any more.
    """
    import cc3d

    lo = np.asarray(lesion.bbox_min_voxel, int)
    hi = np.asarray(lesion.bbox_max_voxel, int) + 1
    if np.any(lo < 0) or np.any(hi > np.asarray(labels.shape)) or np.any(hi <= lo):
        return None
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    crop = labels[box]
    inside = np.isin(crop, values if values else (int(lesion.label),))
    cc, n = cc3d.connected_components(np.ascontiguousarray(inside.astype(np.uint8)), connectivity=connectivity,
                                      return_N=True)
    if n == 0:
        return None
    counts = np.bincount(cc.ravel(), minlength=n + 1)
    candidates = [c for c in range(1, n + 1) if counts[c] == int(lesion.voxel_count)]
    for c in candidates:  # the lesion's own component spans the whole box
        m = cc == c
        if all(np.any(m, axis=tuple(x for x in range(3) if x != a))[[0, -1]].all() for a in range(3)):
            return box, m
    return None


def _face_centres_2d(mask2: np.ndarray) -> np.ndarray:
    """Face centres (pixel index units) between a 2D mask and its complement."""
    pm = np.pad(mask2, 1)
    pts = []
    for a in range(2):
        hi = [slice(1, -1)] * 2
        lo = [slice(1, -1)] * 2
        hi[a] = slice(1, None)
        lo[a] = slice(None, -1)
        idx = np.argwhere(pm[tuple(hi)] != pm[tuple(lo)]).astype(np.float64)
        idx[:, a] -= 0.5
        pts.append(idx)
    return np.concatenate(pts)


def recist_calipers(labels: np.ndarray, affine: np.ndarray, lesion, geometry, axial: int,
                    values: tuple[int, ...] | None = None) -> Calipers | None:
    """Calipers of ``lesion`` on its long-axis slice, mapped to ``geometry``'s display voxels.

    Args:
        labels: source-grid label array ``(I, J, K)``; ``affine`` its voxel -> RAS mm matrix.
        lesion: a ``LesionMeasurement`` with ``long_axis_slice`` (source index along ``axial``).
        geometry: the views' ``DisplayGeometry``.
        axial: source array axis of the axial slices (``seg_app.core.shape.axial_axis``).
        values: see :func:`lesion_mask`.
    """
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import cdist

    k = getattr(lesion, "long_axis_slice", None)
    found = lesion_mask(labels, lesion, values) if k is not None else None
    if found is None:
        return None
    box, mask = found
    kk = int(k) - box[axial].start
    if not 0 <= kk < mask.shape[axial]:
        return None
    b, c = [x for x in range(3) if x != axial]
    mask2 = np.take(mask, kk, axis=axial)
    if not mask2.any():
        return None
    pts2 = _face_centres_2d(mask2)
    vox = np.zeros((len(pts2), 3))
    vox[:, axial] = int(k)
    vox[:, b] = pts2[:, 0] + box[b].start
    vox[:, c] = pts2[:, 1] + box[c].start
    lin = np.asarray(affine, float)[:3, :3]
    world = vox @ lin.T + np.asarray(affine, float)[:3, 3]
    basis, _ = np.linalg.qr(lin[:, [b, c]])  # orthonormal in-plane directions (world)
    origin = world[0]
    xy = (world - origin) @ basis
    try:
        hull = xy[ConvexHull(xy).vertices] if len(xy) > 3 else xy
    except (QhullError, ValueError):
        hull = xy
    d = cdist(hull, hull)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    long_mm = float(d[i, j])
    p, q = hull[i], hull[j]
    short_ends = None
    short_mm = 0.0
    if long_mm > 0:
        u = (q - p) / long_mm
        v = np.array([-u[1], u[0]])
        pu, pv = xy @ u, xy @ v
        width = float(max(np.linalg.norm(lin[:, b]), np.linalg.norm(lin[:, c])))
        centre = 0.5 * (pu.min() + pu.max())
        bins = np.floor((pu - centre) / width + 0.5).astype(np.int64)
        best = None
        for bin_ in np.unique(bins):
            sel = pv[bins == bin_]
            ext = float(sel.max() - sel.min())
            if best is None or ext > best[0] + 1e-9 or (abs(ext - best[0]) <= 1e-9 and abs(bin_) < abs(best[1])):
                best = (ext, int(bin_), float(sel.min()), float(sel.max()))
        short_mm, at = min(best[0], long_mm), centre + best[1] * width
        short_ends = (at * u + best[2] * v, at * u + best[3] * v)

    def to_display(pt2) -> np.ndarray:
        return np.asarray(geometry.world_to_display(origin + basis @ pt2), float)

    long_ends = (to_display(p), to_display(q))
    shorts = None if short_ends is None else (to_display(short_ends[0]), to_display(short_ends[1]))
    display_slice = int(round(float(long_ends[0][2])))
    return Calipers(display_slice, long_ends, shorts, long_mm, short_mm)
