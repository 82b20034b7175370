"""Shape geometry of one binary lesion mask in world millimetres (Qt-free): boundary points, the 3D
Feret diameter, RECIST long/short axes in the axial plane, and the IBSI surface mesh with sphericity.

Definitions are in ``seg_app/core/measure.py``'s docstring and ``docs/MEASUREMENTS.md``; this module
holds the geometry so that ``measure.py`` is only about lesions, labels and totals.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from nibabel import orientations as nib_orientations
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist

__all__ = [
    "MAX_MESH_FACES", "SURFACE_SMOOTHING_VOXELS", "axial_axis", "feret_diameter", "recist_axes",
    "sphericity", "surface_mesh",
]

#: ``S`` axis of RAS+ world coordinates ("axial" plane normal).
_S_AXIS = np.array([0.0, 0.0, 1.0])

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


def _recist_axes(mask: np.ndarray, lin: np.ndarray, axis: int) -> tuple[float, float, int | None]:
    """(long axis, short axis) in mm of a cropped mask, in slices perpendicular to ``axis``, and the
    slice (index along ``axis`` in ``mask``) they were measured on.

    When several long axes tie (in one slice or across slices), the one with the longest
    perpendicular short axis wins, so the result does not depend on array order or flips.
    """
    b, c = [x for x in range(3) if x != axis]
    pts = _run_end_points(mask, axes=(b, c))  # per slice: same 2D hull as the slice's boundary
    if len(pts) == 0:
        return 0.0, 0.0, None
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
        return 0.0, 0.0, None
    width = float(max(np.linalg.norm(lin[:, b]), np.linalg.norm(lin[:, c])))
    best_short, best_k = -1.0, None
    for k, d, dirs in per_slice:
        if d < best_len * (1 - 1e-9):
            continue
        # short axis: longest extent perpendicular to the long axis, from that slice's full boundary
        sl = [slice(None)] * 3
        sl[axis] = slice(k, k + 1)
        pts2 = _boundary_points(mask[tuple(sl)], axes=(b, c))[:, [b, c]] @ to2d
        for u in dirs:
            extent = _perpendicular_extent(pts2, u, width)
            if extent > best_short:
                best_short, best_k = extent, k
    return float(best_len), float(min(max(best_short, 0.0), best_len)), best_k


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


def feret_diameter(mask: np.ndarray, lin: np.ndarray) -> float:
    """Largest distance (mm) between boundary points of ``mask`` mapped by the 3x3 matrix ``lin``."""
    return _farthest_pair(_run_end_points(mask) @ lin.T)[0]


def recist_axes(mask: np.ndarray, lin: np.ndarray, axis: int, with_slice: bool = False):
    """RECIST (long, short) axes in mm in the array planes normal to ``axis``; with ``with_slice``,
    (long, short, slice) where slice is the index along ``axis`` in ``mask`` they were measured on."""
    long_ax, short_ax, k = _recist_axes(mask, lin, axis)
    return (long_ax, short_ax, k) if with_slice else (long_ax, short_ax)


def surface_mesh(mask: np.ndarray, lin: np.ndarray) -> tuple[float, float, bool]:
    """(surface area mm², enclosed mesh volume mm³, smoothed?) of ``mask``."""
    return _surface_mesh(mask, lin)


def sphericity(area_mm2: float, volume_mm3: float) -> float:
    """``pi^(1/3) (6 V)^(2/3) / A`` (IBSI); NaN without a surface."""
    return _sphericity(area_mm2, volume_mm3)
