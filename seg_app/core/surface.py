"""Surfaces for the 3D view (Qt-free): label and head meshes in world millimetres, and ray casting.

* :func:`label_surfaces`: one triangle mesh per label value (each tumour sub-region its own colour),
  from scikit-image's marching cubes on the lightly smoothed mask of that value, cropped to its
  bounding box; the marching-cubes step grows until the mesh has at most ``max_faces`` triangles.
* :func:`head_surface`: the outer surface of the head (or body) at a coarse grid: the image is
  subsampled to about ``target_voxels`` voxels, thresholded with Otsu's method, the largest connected
  component kept and its holes filled, so only the outer skin remains.
* :func:`ray_hit`: the first labelled voxel along a ray (a click in the 3D view), found by sampling
  the ray in voxel space; the 3D view needs no picking support from the rendering library.

Every vertex is in RAS+ mm (the label map's or image's voxel -> RAS affine), so meshes of one scan
line up whatever the array's orientation. Nothing here touches a GUI; the app builds meshes in a worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "HEAD_TARGET_VOXELS", "MAX_HEAD_FACES", "MAX_LABEL_FACES", "SurfaceMesh", "head_surface",
    "label_surfaces", "ray_hit", "vertex_normals",
]

#: Triangle budget of one label's mesh (keeps a 3D frame cheap with software OpenGL).
MAX_LABEL_FACES = 40_000
#: Triangle budget of the head surface.
MAX_HEAD_FACES = 60_000
#: The head surface is computed on a grid subsampled to about this many voxels.
HEAD_TARGET_VOXELS = 80**3
#: Gaussian smoothing (voxels) of a binary mask before marching cubes: rounder, less staircased surfaces.
_LABEL_SMOOTHING_VOXELS = 0.6
_HEAD_SMOOTHING_VOXELS = 1.0


@dataclass(frozen=True)
class SurfaceMesh:
    """A triangle mesh in world coordinates.

    Attributes:
        vertices_mm: ``(N, 3)`` float32 vertex positions, RAS+ mm.
        faces: ``(M, 3)`` int32 vertex indices per triangle.
        value: the label value it outlines (0 for the head surface).
        name: what it outlines (the label's name, or ``"head"``).
        step: the marching-cubes step (voxels) it was computed with (1 = full resolution).
    """

    vertices_mm: np.ndarray
    faces: np.ndarray
    value: int
    name: str
    step: int = 1

    @property
    def n_faces(self) -> int:
        return int(len(self.faces))

    @property
    def normals(self) -> np.ndarray:
        """``(N, 3)`` unit vertex normals pointing out of the enclosed region (see :func:`vertex_normals`)."""
        return vertex_normals(self.vertices_mm, self.faces)

    @property
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) corners of the vertices' bounding box, RAS mm."""
        return self.vertices_mm.min(axis=0), self.vertices_mm.max(axis=0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals of a closed triangle mesh, pointing outwards.

    The triangles' winding decides the sign; a mesh whose signed volume is negative (its winding
    points inwards, e.g. after an affine with a reflection) gets its normals flipped.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if len(f) == 0:
        return np.zeros(v.shape, np.float32)
    t0, t1, t2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(t1 - t0, t2 - t0)  # twice the area, along the face normal
    if np.einsum("ij,ij->", t0, np.cross(t1, t2)) < 0:
        cross = -cross
    normals = np.zeros_like(v)
    for k in range(3):
        for d in range(3):
            normals[:, d] += np.bincount(f[:, k], weights=cross[:, d], minlength=len(v))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.where(length > 0, length, 1.0)).astype(np.float32)


def _to_world(vertices_ijk: np.ndarray, affine: np.ndarray) -> np.ndarray:
    a = np.asarray(affine, np.float64)
    return (vertices_ijk.astype(np.float64) @ a[:3, :3].T + a[:3, 3]).astype(np.float32)


def _mesh(field: np.ndarray, level: float, max_faces: int, step: int = 1) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Marching cubes of ``field`` at ``level``: (vertices in index units, faces, step), the step grown until
    the mesh has at most ``max_faces`` triangles; None when the field never crosses ``level``."""
    from skimage.measure import marching_cubes

    if not (field.min() < level < field.max()):
        return None
    step = max(1, int(step))
    best = None
    while True:
        try:
            verts, faces, _n, _v = marching_cubes(field, level, step_size=step, allow_degenerate=False)
        except (ValueError, RuntimeError):  # a step too coarse for a small field: keep the finer mesh
            return best
        best = verts, faces.astype(np.int32), step
        if len(faces) <= max_faces or step >= max(2, min(field.shape) // 2):
            return best
        # faces scale about as 1 / step^2: jump straight to a step that should fit
        step = max(step + 1, math.ceil(step * math.sqrt(len(faces) / max_faces)))


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest box (slices) holding every True voxel of a 3D ``mask``; None when it is empty."""
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def label_surfaces(labels: np.ndarray, affine: np.ndarray, names: Mapping[int, str] | None = None,
                   values: Iterable[int] | None = None, max_faces: int = MAX_LABEL_FACES) -> list[SurfaceMesh]:
    """One mesh per label value present in ``labels`` (or in ``values``), in RAS mm.

    Args:
        labels: ``(I, J, K)`` integer label map (0 = background).
        affine: its voxel -> RAS affine (4 x 4).
        names: label value -> name (``"label <v>"`` otherwise).
        values: which label values to mesh (default: every non-zero value present).
        max_faces: triangle budget per mesh (the marching-cubes step grows to meet it).

    Each mask is cropped to its bounding box plus a margin and smoothed by a Gaussian of
    0.6 voxel before marching cubes at 0.5, so the surface lies on the boundary between the
    value's voxels and the others.
    """
    labels = np.asarray(labels)
    if labels.ndim == 4:
        labels = labels[0]
    names = dict(names or {})
    outer = _bounding_box(labels != 0)
    if outer is None:
        return []
    origin = np.asarray([b.start for b in outer])
    labels = np.asarray(labels[outer])  # everything below works on the labelled part only
    present = {int(v) for v in np.unique(labels)}
    wanted = sorted({int(v) for v in (values if values is not None else present)} & present - {0})
    pad = 3
    meshes = []
    for v in wanted:
        mask = labels == v
        box = _bounding_box(mask)
        lo = [max(s.start - pad, 0) for s in box]
        hi = [min(s.stop + pad, n) for s, n in zip(box, labels.shape)]
        crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
        # pad with background so surfaces at the array's border are closed
        field = ndimage.gaussian_filter(np.pad(crop, 2).astype(np.float32), _LABEL_SMOOTHING_VOXELS)
        if field.max() <= 0.5:  # a single voxel (or line) smoothed away: mesh it unsmoothed
            field = np.pad(crop, 2).astype(np.float32)
        found = _mesh(field, 0.5, max_faces)
        if found is None:
            continue
        verts, faces, step = found
        verts = verts + origin + np.asarray(lo, np.float64) - 2.0
        meshes.append(SurfaceMesh(_to_world(verts, affine), faces, v, names.get(v, f"label {v}"), step))
    return meshes


def head_surface(image: np.ndarray, affine: np.ndarray, target_voxels: int = HEAD_TARGET_VOXELS,
                 max_faces: int = MAX_HEAD_FACES) -> SurfaceMesh | None:
    """The outer surface of the head (or body) in ``image`` at a coarse grid, in RAS mm; None if there is none.

    Args:
        image: ``(I, J, K)`` intensities (one channel).
        affine: its voxel -> RAS affine.
        target_voxels: the image is subsampled by a whole factor per axis to about this many voxels.
        max_faces: triangle budget.

    Otsu's threshold splits the (subsampled) image into background and tissue; the largest connected
    tissue component with its holes filled (ventricles, sinuses) is lightly smoothed and meshed.
    """
    from skimage.filters import threshold_otsu

    image = np.asarray(image)
    if image.ndim == 4:
        image = image[0]
    if image.ndim != 3 or min(image.shape) < 2:
        return None
    factor = max(1, math.ceil((image.size / max(target_voxels, 1)) ** (1.0 / 3.0)))
    coarse = np.asarray(image[::factor, ::factor, ::factor], np.float32)
    finite = np.isfinite(coarse)
    if not finite.any():
        return None
    coarse = np.where(finite, coarse, np.nanmin(coarse[finite]))
    if float(coarse.max()) <= float(coarse.min()):
        return None
    coarse = ndimage.gaussian_filter(coarse, 0.5)  # noise would make Otsu's tissue mask speckled
    tissue = coarse > threshold_otsu(coarse)
    components, n = ndimage.label(tissue)
    if n == 0:
        return None
    if n > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        tissue = components == int(np.argmax(sizes))
    tissue = ndimage.binary_fill_holes(tissue)
    field = ndimage.gaussian_filter(np.pad(tissue, 2).astype(np.float32), _HEAD_SMOOTHING_VOXELS)
    found = _mesh(field, 0.5, max_faces)
    if found is None:
        return None
    verts, faces, step = found
    verts = (verts - 2.0) * factor  # back to the full grid's voxel indices
    return SurfaceMesh(_to_world(verts, affine), faces, 0, "head", step * factor)


def ray_hit(labels: np.ndarray, affine: np.ndarray, origin_mm, direction_mm,
            values: Iterable[int] | None = None) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """The first voxel along a ray whose label is non-zero (or in ``values``).

    Args:
        labels: ``(I, J, K)`` label map.
        affine: its voxel -> RAS affine.
        origin_mm: the ray's start, RAS mm (e.g. the camera).
        direction_mm: its direction, RAS (any length).
        values: label values that count as a hit (default: any non-zero).

    Returns:
        (world position of that voxel's centre in RAS mm, its ``(i, j, k)`` index), or None when the ray
        misses every labelled voxel.
    """
    labels = np.asarray(labels)
    if labels.ndim == 4:
        labels = labels[0]
    a = np.asarray(affine, np.float64)
    inv = np.linalg.inv(a)
    o = inv[:3, :3] @ np.asarray(origin_mm, np.float64) + inv[:3, 3]
    d = inv[:3, :3] @ np.asarray(direction_mm, np.float64)
    norm = float(np.linalg.norm(d))
    if norm == 0 or not np.all(np.isfinite(d)) or not np.all(np.isfinite(o)):
        return None
    d = d / norm
    shape = np.asarray(labels.shape, np.float64)
    lo, hi = np.full(3, -0.5), shape - 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / d, (hi - o) / d
    t_near = np.where(d != 0, np.minimum(t1, t2), -np.inf)
    t_far = np.where(d != 0, np.maximum(t1, t2), np.inf)
    if np.any((d == 0) & ((o < lo) | (o > hi))):
        return None
    t0, t_end = max(float(t_near.max()), 0.0), float(t_far.min())
    if t_end < t0:
        return None
    ts = np.arange(t0, t_end + 0.25, 0.25)  # quarter-voxel steps: no voxel is jumped over
    idx = np.rint(o[None, :] + ts[:, None] * d[None, :]).astype(np.int64)
    idx = np.clip(idx, 0, np.asarray(labels.shape) - 1)
    hit = labels[idx[:, 0], idx[:, 1], idx[:, 2]]
    hit = np.isin(hit, list(values)) if values is not None else hit != 0
    if not hit.any():
        return None
    ijk = tuple(int(x) for x in idx[int(np.argmax(hit))])
    return _to_world(np.asarray([ijk], np.float64), a)[0].astype(np.float64), ijk  # type: ignore[return-value]
