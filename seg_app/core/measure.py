"""Per-lesion measurements in world millimetres (Qt-free, fast enough to rerun after each brush stroke).

A *lesion* is one connected component (26-connectivity) of one label value. Every definition is
documented in ``docs/MEASUREMENTS.md``; in short:

* the lesion boundary is the set of **face centres between lesion and non-lesion voxels** — exactly
  the vertices of the marching-cubes surface of the mask at level 0.5 (the pyradiomics convention);
  diameters are distances between boundary points, mapped through the affine (anisotropic and oblique
  grids are exact, not approximated);
* ``max_diameter_mm``: 3D Feret diameter (convex hull of the boundary points, then the largest
  pairwise distance between hull vertices);
* RECIST axes in the array plane whose normal is closest to the patient S axis ("axial"): the long
  axis is the largest in-plane Feret diameter over all slices; the short axis is the longest extent
  perpendicular to it in that same slice;
* surface area: marching cubes (level 0.5) on the cropped, padded binary mask, vertices mapped through
  the affine (IBSI / pyradiomics); lesions at least three voxels thick somewhere are meshed after a
  0.5-voxel Gaussian smoothing instead, which halves the staircase over-estimate on them. Sphericity
  ``pi^(1/3) (6V)^(2/3) / A`` with ``V`` the volume enclosed by that same mesh (as pyradiomics), so it
  never exceeds 1.

Each component is cropped to its bounding box before anything expensive happens.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cc3d
import numpy as np
from nibabel import orientations as nib_orientations
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist

from seg_app.core.volume import Volume

#: ``S`` axis of RAS+ world coordinates ("axial" plane normal).
_S_AXIS = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class LesionMeasurement:
    """Measurements of one lesion (one connected component of one label). Lengths in mm, volumes in mL.

    Intensity statistics (``mean`` ... ``median``) are of the source image's first channel inside the
    lesion (HU for CT) and NaN without an image. ``confidence`` is the mean foreground probability
    inside the lesion (None without probabilities); ``tta_agreement`` the mean fraction of
    test-time-augmented predictions that agree with the final label (None without TTA).

    With tumour sub-regions (BraTS-style labels, :mod:`seg_app.core.regions`) a lesion is one connected
    component of the **whole tumour** (``label`` 0, ``label_name`` "whole tumour"); its geometry is the
    whole tumour's and ``region_volumes_ml`` gives each sub-region's volume inside it and the
    composites ``WT``, ``TC``, ``ET``. Without sub-regions ``region_volumes_ml`` is None.
    """

    label: int
    label_name: str
    lesion_id: int
    voxel_count: int
    volume_ml: float
    max_diameter_mm: float
    long_axis_mm: float
    short_axis_mm: float
    surface_area_mm2: float
    sphericity: float
    mean: float
    std: float
    min: float
    max: float
    median: float
    centroid_ras_mm: tuple[float, float, float]
    centroid_voxel: tuple[float, float, float]
    bbox_min_voxel: tuple[int, int, int]
    bbox_max_voxel: tuple[int, int, int]
    confidence: float | None
    tta_agreement: float | None
    region_volumes_ml: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists, NaN becomes None)."""
        return {k: _jsonable(v) for k, v in asdict(self).items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if not math.isfinite(f) else f
    if isinstance(v, np.integer):
        return int(v)
    return v


# ---- geometry helpers ------------------------------------------------------------------------
def _boundary_points(mask: np.ndarray, axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Face centres (voxel index units, float) between ``mask`` and its complement across ``axes``.

    These are the marching-cubes vertices of the binary mask at level 0.5. Restricting ``axes`` to
    two in-plane axes gives each slice's 2D (marching-squares) boundary.
    """
    pm = np.pad(mask, 1)
    out = []
    for a in axes:
        hi = [slice(1, -1)] * 3
        lo = [slice(1, -1)] * 3
        hi[a] = slice(1, None)
        lo[a] = slice(None, -1)
        faces = pm[tuple(hi)] != pm[tuple(lo)]  # face between padded index p-1 and p along a
        idx = np.argwhere(faces).astype(np.float64)
        idx[:, a] -= 0.5  # faces[p] lies between padded p and p + 1, i.e. original p - 1 and p
        out.append(idx)
    return np.concatenate(out) if out else np.zeros((0, 3))


def _run_end_points(mask: np.ndarray, axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Outer face centres of the first and last lesion voxel on every grid line along ``axes``.

    Every boundary face centre lies between two of these on its own grid line, so they have the same
    convex hull as the whole boundary -- but there are far fewer of them (bounded by the projections).
    """
    out = []
    for a in axes:
        present = mask.any(axis=a)
        if not present.any():
            continue
        n = mask.shape[a]
        first = np.argmax(mask, axis=a)
        last = n - 1 - np.argmax(np.flip(mask, axis=a), axis=a)
        other = np.argwhere(present)  # (M, 2) indices of the two other axes
        for ends, shift in ((first[present], -0.5), (last[present], 0.5)):
            pts = np.empty((len(other), 3), dtype=np.float64)
            cols = [x for x in range(3) if x != a]
            pts[:, cols] = other
            pts[:, a] = ends + shift
            out.append(pts)
    return np.concatenate(out) if out else np.zeros((0, 3))


def _hull_vertices(points: np.ndarray) -> np.ndarray:
    """Convex-hull vertices of ``points`` (N, D); all points when the hull is degenerate."""
    if len(points) <= points.shape[1] + 1:
        return points
    try:
        return points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return points


def _farthest_pair(points: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Largest distance between two points (exact; blockwise over convex-hull vertices)."""
    if len(points) == 0:
        return 0.0, np.zeros(points.shape[1]), np.zeros(points.shape[1])
    hv = _hull_vertices(points)
    best, bi, bj = -1.0, 0, 0
    block = max(1, (1 << 21) // len(hv))  # <= 16 MB of distances at a time
    for s in range(0, len(hv), block):
        d = cdist(hv[s : s + block], hv, "sqeuclidean")
        k = int(np.argmax(d))
        r, c = divmod(k, d.shape[1])
        if d[r, c] > best:
            best, bi, bj = float(d[r, c]), s + r, c
    return math.sqrt(max(best, 0.0)), hv[bi], hv[bj]


def axial_axis(affine: np.ndarray) -> int:
    """Array axis whose slices are closest to the patient axial plane.

    The normal of the slices perpendicular to array axis ``a`` is the cross product of the world
    directions of the two other axes; the axis whose normal is most parallel to S (RAS+) wins.
    """
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    best, best_axis = -1.0, 2
    for a in range(3):
        b, c = [x for x in range(3) if x != a]
        n = np.cross(lin[:, b], lin[:, c])
        score = abs(float(n @ _S_AXIS)) / (float(np.linalg.norm(n)) or 1.0)
        if score > best + 1e-9:
            best, best_axis = score, a
    return best_axis


def _diameter_directions(points: np.ndarray, rel_tol: float = 1e-9) -> tuple[float, list[np.ndarray]]:
    """Largest pairwise distance of 2D ``points`` and the unit direction of every pair reaching it.

    Several pairs can tie (squares, discs on a grid); callers break ties on a criterion that does
    not depend on how the grid is flipped or permuted.
    """
    hv = _hull_vertices(points)
    if len(hv) < 2:
        return 0.0, []
    d = cdist(hv, hv)
    best = float(d.max())
    if best <= 0:
        return 0.0, []
    ii, jj = np.nonzero(np.triu(d >= best * (1 - rel_tol), k=1))
    return best, [(hv[j] - hv[i]) / d[i, j] for i, j in zip(ii, jj)]


def _perpendicular_extent(pts2: np.ndarray, u: np.ndarray, width: float) -> float:
    """Longest extent of ``pts2`` perpendicular to unit vector ``u``, in strips ``width`` wide along ``u``.

    Strips are centred on the points' mid-extent along ``u`` so a mirrored lesion gets mirrored strips.
    """
    v = np.array([-u[1], u[0]])
    pu, pv = pts2 @ u, pts2 @ v
    centre = 0.5 * (pu.min() + pu.max())
    bins = np.floor((pu - centre) / width + 0.5).astype(np.int64)
    o = np.argsort(bins, kind="stable")
    bins, pv = bins[o], pv[o]
    bstart = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    extent = np.maximum.reduceat(pv, bstart) - np.minimum.reduceat(pv, bstart)
    return float(extent.max())


def _recist_axes(mask: np.ndarray, lin: np.ndarray, axis: int) -> tuple[float, float]:
    """(long axis, short axis) in mm of a cropped mask, in slices perpendicular to ``axis``.

    When several long axes tie (in one slice or across slices), the one with the longest
    perpendicular short axis wins, so the result does not depend on array order or flips.
    """
    b, c = [x for x in range(3) if x != axis]
    pts = _run_end_points(mask, axes=(b, c))  # per slice: same 2D hull as the slice's boundary
    if len(pts) == 0:
        return 0.0, 0.0
    q, _ = np.linalg.qr(lin[:, [b, c]])  # orthonormal basis of the slice plane (world)
    to2d = lin[:, [b, c]].T @ q  # (2, 2): in-plane voxel offsets -> isometric 2D mm

    slices = np.rint(pts[:, axis]).astype(np.int64)
    plane2d = pts[:, [b, c]] @ to2d
    order = np.argsort(slices, kind="stable")
    slices, plane2d = slices[order], plane2d[order]
    starts = np.flatnonzero(np.r_[True, slices[1:] != slices[:-1]])
    ends = np.r_[starts[1:], len(slices)]
    per_slice = [(int(slices[s]), *_diameter_directions(plane2d[s:e])) for s, e in zip(starts, ends)]
    best_len = max(d for _, d, _ in per_slice)
    if best_len <= 0:
        return 0.0, 0.0
    width = float(max(np.linalg.norm(lin[:, b]), np.linalg.norm(lin[:, c])))
    best_short = 0.0
    for k, d, dirs in per_slice:
        if d < best_len * (1 - 1e-9):
            continue
        # short axis: longest extent perpendicular to the long axis, from that slice's full boundary
        sl = [slice(None)] * 3
        sl[axis] = slice(k, k + 1)
        pts2 = _boundary_points(mask[tuple(sl)], axes=(b, c))[:, [b, c]] @ to2d
        for u in dirs:
            best_short = max(best_short, _perpendicular_extent(pts2, u, width))
    return float(best_len), float(min(best_short, best_len))


#: Gaussian pre-smoothing (voxels) of the mask before marching cubes, used only for lesions at least
#: three voxels thick somewhere (see :func:`_is_thick`): it removes about half of the staircase
#: over-estimate of the binary mesh on such lesions, but shrinks thinner ones (see docs/MEASUREMENTS.md).
SURFACE_SMOOTHING_VOXELS = 0.5


#: Above this many boundary voxel faces, thick lesions are not smoothed either: the binary (IBSI) mesh
#: is computed cube by cube from a lookup table in bounded memory, while marching cubes on the smoothed
#: volume of such ragged masks takes tens of seconds and gigabytes.
MAX_MESH_FACES = 1_000_000

#: Corner offsets of one marching cube; bit ``b`` of a configuration is corner ``_CUBE_CORNERS[b]``.
_CUBE_CORNERS = tuple((i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1))


@functools.lru_cache(maxsize=1)
def _cube_triangles() -> tuple[np.ndarray, np.ndarray]:
    """Triangles (T, 3, 3) in cube-local voxel units and their configuration (T,), for every cube
    configuration of a binary mask meshed at level 0.5.

    Each configuration is meshed once by scikit-image's marching cubes (Lewiner's topologically
    consistent tables) on that single 2x2x2 cube, so a sum over the cubes of a mask gives exactly the
    mesh ``marching_cubes(mask, 0.5)`` would build (vertices at edge midpoints), without building it.
    """
    from skimage.measure import marching_cubes

    tris, cfg = [], []
    for c in range(1, 255):
        cube = np.zeros((2, 2, 2), np.float32)
        for b, corner in enumerate(_CUBE_CORNERS):
            if c >> b & 1:
                cube[corner] = 1.0
        verts, faces, _, _ = marching_cubes(cube, 0.5, method="lewiner", allow_degenerate=False)
        tris.append(verts[faces].astype(np.float64))
        cfg.append(np.full(len(faces), c, np.int64))
    return np.concatenate(tris), np.concatenate(cfg)


def _ibsi_mesh(mask: np.ndarray, lin: np.ndarray) -> tuple[float, float]:
    """(area mm², enclosed volume mm³) of the marching-cubes surface of the binary ``mask`` at level 0.5.

    This is the IBSI / pyradiomics ``SurfaceArea`` and ``MeshVolume`` convention (mask padded with
    background, vertices at the midpoints of the edges between lesion and background voxels, mapped
    through ``lin``, the affine's 3x3 part). Computed from per-configuration triangle areas and the
    divergence theorem, slab by slab: memory stays bounded for any mask.
    """
    tri, cfg = _cube_triangles()
    tw = tri @ lin.T
    cross = np.cross(tw[:, 1] - tw[:, 0], tw[:, 2] - tw[:, 0])  # 2 x area vector (orientation: outward or inward, consistently)
    area_c = np.bincount(cfg, weights=0.5 * np.linalg.norm(cross, axis=1), minlength=256)
    # signed volume of the tetrahedron (cube origin, triangle) plus, for a cube at offset t, t . (area vector) / 3
    vol_c = np.bincount(cfg, weights=np.einsum("ij,ij->i", tw[:, 0], np.cross(tw[:, 1], tw[:, 2])) / 6.0, minlength=256)
    avec_c = np.stack([np.bincount(cfg, weights=0.5 * cross[:, d], minlength=256) for d in range(3)], axis=1)

    pm = np.pad(np.asarray(mask, dtype=bool), 1).view(np.uint8)
    ni, nj, nk = (s - 1 for s in pm.shape)
    count = np.zeros(256)
    offset_sum = np.zeros((256, 3))  # per configuration: sum of the cubes' voxel-index origins
    step = max(1, (1 << 22) // max(1, nj * nk))  # ~4 M cubes per slab
    for s in range(0, ni, step):
        e = min(ni, s + step)
        idx = np.zeros((e - s, nj, nk), np.uint8)
        for b, (di, dj, dk) in enumerate(_CUBE_CORNERS):
            idx |= pm[s + di : e + di, dj : dj + nj, dk : dk + nk] << b
        pos = np.nonzero((idx != 0) & (idx != 255))
        ids = idx[pos]
        count += np.bincount(ids, minlength=256)
        for d in range(3):
            offset_sum[:, d] += np.bincount(ids, weights=pos[d] + (s if d == 0 else 0), minlength=256)
    area = float(count @ area_c)
    volume = float(count @ vol_c + np.einsum("cd,cd->", offset_sum @ lin.T, avec_c) / 3.0)
    return area, abs(volume)


def _is_thick(mask: np.ndarray) -> bool:
    """Whether some lesion voxel has all 26 neighbours in the lesion (three voxels thick somewhere)."""
    return bool(ndimage.binary_erosion(mask, structure=np.ones((3, 3, 3), bool), border_value=0).any())


def _smoothed_mesh(mask: np.ndarray, lin: np.ndarray) -> tuple[float, float]:
    """(area mm², enclosed volume mm³) of the level-0.5 surface of the Gaussian-smoothed mask."""
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = ndimage.gaussian_filter(np.pad(mask, 2).astype(np.float32), SURFACE_SMOOTHING_VOXELS)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, allow_degenerate=False)
    verts = verts.astype(np.float64) @ lin.T
    t = verts[faces]
    volume = float(np.einsum("ij,ij->", t[:, 0], np.cross(t[:, 1], t[:, 2]))) / 6.0
    return float(mesh_surface_area(verts, faces)), abs(volume)


def _surface_mesh(mask: np.ndarray, lin: np.ndarray) -> tuple[float, float, bool]:
    """(surface area mm², mesh volume mm³, smoothed?) of a cropped lesion mask (see ``docs/MEASUREMENTS.md``).

    Lesions at least three voxels thick somewhere (:func:`_is_thick`) with at most
    :data:`MAX_MESH_FACES` boundary faces are meshed after a light Gaussian smoothing; all others with
    the IBSI / pyradiomics binary marching cubes (:func:`_ibsi_mesh`). Area and volume always come
    from the same closed mesh, so the sphericity computed from them never exceeds 1.
    """
    # Marching cubes resolves ambiguous cubes differently when the array is flipped or its axes are
    # permuted; meshing the mask in its closest-canonical (RAS) array order makes the area a property
    # of the physical object, not of the array layout.
    aff = np.eye(4)
    aff[:3, :3] = lin
    ornt = nib_orientations.io_orientation(aff)
    lin = (aff @ nib_orientations.inv_ornt_aff(ornt, mask.shape))[:3, :3]
    mask = np.ascontiguousarray(nib_orientations.apply_orientation(mask, ornt), dtype=bool)
    if SURFACE_SMOOTHING_VOXELS > 0 and _is_thick(mask):
        pm = np.pad(mask, 1)
        faces = sum(int(np.count_nonzero(np.diff(pm, axis=a))) for a in range(3))
        if faces <= MAX_MESH_FACES:
            return (*_smoothed_mesh(mask, lin), True)
    return (*_ibsi_mesh(mask, lin), False)


def _sphericity(area_mm2: float, volume_mm3: float) -> float:
    """``pi^(1/3) (6 V)^(2/3) / A`` (IBSI); NaN without a surface."""
    if not area_mm2 > 0:
        return float("nan")
    return float(math.pi ** (1 / 3) * (6.0 * volume_mm3) ** (2 / 3) / area_mm2)


# ---- public API ------------------------------------------------------------------------------
def _grid_check(name: str, vol: Volume | None, shape: tuple[int, int, int]) -> np.ndarray | None:
    if vol is None:
        return None
    if vol.shape != shape:
        raise ValueError(f"{name} has shape {vol.shape} but the label map has shape {shape}; they must share a grid.")
    return vol.array[0]


def lesion_components(labels: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected components of an integer label map (components never cross label values)."""
    cc, n = cc3d.connected_components(np.ascontiguousarray(labels), connectivity=connectivity, return_N=True)
    return cc, int(n)


def _nonzero_bbox(arr: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the non-zero voxels (three cheap projections)."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.flatnonzero(np.any(arr, axis=other))
        if nz.size == 0:
            return None
        out.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def measure_lesions(
    labels: Volume,
    image: Volume | None = None,
    probabilities: Volume | None = None,
    agreement: Volume | None = None,
    label_names: Mapping[int, str] | None = None,
    connectivity: int = 26,
    regions: Mapping[str, Sequence[int]] | None = None,
) -> list[LesionMeasurement]:
    """Measure every lesion of a label map.

    Args:
        labels: integer label map ``(1, I, J, K)``; its affine defines every length.
        image: source scan on the same grid (first channel is used for intensity statistics).
        probabilities: foreground probability ``(1, I, J, K)`` on the same grid (lesion confidence).
        agreement: TTA agreement map on the same grid.
        label_names: value -> name (default ``"label N"``).
        connectivity: 6, 18 or 26 (default 26: touching corners join lesions).
        regions: composite name -> label values (``composite_regions``'s ``WT``/``TC``/``ET``); when
            given, lesions are connected components of ``WT`` with per-region volumes.

    Returns:
        lesions sorted by label value, then by volume (largest first); ``lesion_id`` counts from 1
        within each label in that order.
    """
    lab = np.asarray(labels.array[0])
    shape = labels.shape
    img = _grid_check("The image", image, shape)
    prob = _grid_check("The probability map", probabilities, shape)
    agr = _grid_check("The agreement map", agreement, shape)
    names = dict(label_names or {})
    box = _nonzero_bbox(lab)
    if box is None:
        return []
    origin = np.array([s.start for s in box])
    crop = lab[box]
    if not np.issubdtype(crop.dtype, np.integer):
        crop = crop.astype(np.int32)
    whole = tuple(int(v) for v in regions["WT"]) if regions else ()
    if whole:
        names[0] = "whole tumour"
    cc, n = lesion_components(np.isin(crop, whole).astype(np.uint8) if whole else crop, connectivity)
    objects = ndimage.find_objects(cc)
    counts = np.bincount(cc.ravel(), minlength=n + 1)
    lin = labels.affine[:3, :3]
    axial = axial_axis(labels.affine)
    vox_ml = labels.voxel_volume_ml
    per_label: dict[int, list[tuple[int, tuple[slice, ...]]]] = {}
    for cid, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        sub = cc[sl] == cid
        value = 0 if whole else int(crop[sl][np.unravel_index(int(np.argmax(sub)), sub.shape)])
        per_label.setdefault(value, []).append((cid, sl))
    results: list[LesionMeasurement] = []
    for value in sorted(per_label):
        comps = sorted(per_label[value], key=lambda t: (-int(counts[t[0]]), t[0]))
        for lesion_id, (cid, sl) in enumerate(comps, start=1):
            mask = cc[sl] == cid
            lo = origin + np.array([s.start for s in sl])
            gsl = tuple(slice(int(a), int(a) + m) for a, m in zip(lo, mask.shape))
            voxels = int(counts[cid])
            centroid_vox = np.array(
                [float(np.dot(mask.sum(axis=tuple(x for x in range(3) if x != a)), np.arange(mask.shape[a]))) for a in range(3)]
            ) / voxels + lo  # from projections: no (N, 3) index array
            centroid_ras = labels.voxel_to_world(centroid_vox)
            bpts = _run_end_points(mask) @ lin.T
            max_d, _, _ = _farthest_pair(bpts)
            long_ax, short_ax = _recist_axes(mask, lin, axial)
            area, mesh_mm3, _ = _surface_mesh(mask, lin)
            sphericity = _sphericity(area, mesh_mm3)
            if img is not None:
                vals = img[gsl][mask]
                stats = (
                    float(vals.mean(dtype=np.float64)),
                    float(vals.std(dtype=np.float64)),
                    float(vals.min()),
                    float(vals.max()),
                    float(np.median(vals, overwrite_input=True)),
                )
            else:
                stats = (float("nan"),) * 5
            conf = float(np.mean(prob[gsl][mask], dtype=np.float64)) if prob is not None else None
            agree = float(np.mean(agr[gsl][mask], dtype=np.float64)) if agr is not None else None
            region_ml = _region_volumes(crop[sl][mask], names, regions, vox_ml) if whole else None
            results.append(
                LesionMeasurement(
                    label=value,
                    label_name=names.get(value, f"label {value}"),
                    lesion_id=lesion_id,
                    voxel_count=voxels,
                    volume_ml=voxels * vox_ml,
                    max_diameter_mm=float(max_d),
                    long_axis_mm=long_ax,
                    short_axis_mm=short_ax,
                    surface_area_mm2=area,
                    sphericity=float(sphericity),
                    mean=stats[0],
                    std=stats[1],
                    min=stats[2],
                    max=stats[3],
                    median=stats[4],
                    centroid_ras_mm=tuple(float(x) for x in centroid_ras),  # type: ignore[arg-type]
                    centroid_voxel=tuple(float(x) for x in centroid_vox),  # type: ignore[arg-type]
                    bbox_min_voxel=tuple(int(x) for x in lo),  # type: ignore[arg-type]
                    bbox_max_voxel=tuple(int(x) + m - 1 for x, m in zip(lo, mask.shape)),  # type: ignore[arg-type]
                    confidence=conf,
                    tta_agreement=agree,
                    region_volumes_ml=region_ml,
                )
            )
    return results


def _region_volumes(values: np.ndarray, names: Mapping[int, str], regions: Mapping[str, Sequence[int]] | None, vox_ml: float) -> dict[str, float]:
    """mL of each sub-region (by name) and of each composite among the label ``values`` of one lesion."""
    counts = np.bincount(values.astype(np.int64).ravel())
    def ml(vs: Sequence[int]) -> float:
        return float(sum(int(counts[v]) for v in vs if v < len(counts))) * vox_ml
    out = {names.get(v, f"label {v}"): ml([v]) for v in sorted({int(v) for vs in (regions or {}).values() for v in vs})}
    out.update({key: ml(vs) for key, vs in (regions or {}).items()})
    return out


def label_totals(lesions: Sequence[LesionMeasurement]) -> list[dict[str, Any]]:
    """Per label value: lesion count, total voxels and mL, largest diameter, volume-weighted means."""
    out: list[dict[str, Any]] = []
    for value in sorted({les.label for les in lesions}):
        group = [les for les in lesions if les.label == value]
        vox = sum(les.voxel_count for les in group)

        def weighted(attr: str) -> float | None:
            vals = [(getattr(les, attr), les.voxel_count) for les in group if getattr(les, attr) is not None]
            if not vals or any(not math.isfinite(v) for v, _ in vals):
                return None
            return float(sum(v * w for v, w in vals) / max(1, sum(w for _, w in vals)))

        out.append(
            {
                "label": value,
                "label_name": group[0].label_name,
                "n_lesions": len(group),
                "voxel_count": vox,
                "volume_ml": float(sum(les.volume_ml for les in group)),
                "largest_lesion_ml": float(max(les.volume_ml for les in group)),
                "max_diameter_mm": float(max(les.max_diameter_mm for les in group)),
                "mean": weighted("mean"),
                "confidence": weighted("confidence"),
                "tta_agreement": weighted("tta_agreement"),
            }
        )
        regions = [les.region_volumes_ml for les in group if les.region_volumes_ml]
        if regions:  # whole-tumour lesions: total mL of every sub-region and composite
            out[-1]["region_volumes_ml"] = {k: float(sum(r.get(k, 0.0) for r in regions)) for k in regions[0]}
    return out
