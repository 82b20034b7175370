"""Meshes for the 3D view (seg_app.core.surface): world millimetres, per-label meshes, the head surface,
the triangle budget and ray casting against a label map."""

from __future__ import annotations

import numpy as np
import pytest

from seg_app.core import surface

# an anisotropic, flipped, shifted grid: vertices must come out in RAS mm, not voxel indices
AFFINE = np.array([[-0.9, 0.0, 0.0, 40.0],
                   [0.0, 1.1, 0.0, -60.0],
                   [0.0, 0.0, 2.5, -20.0],
                   [0.0, 0.0, 0.0, 1.0]])
SHAPE = (64, 56, 30)


def ball(centre_ijk, radius_mm, shape=SHAPE, affine=AFFINE) -> np.ndarray:
    """Voxels whose centre lies within ``radius_mm`` of the centre of voxel ``centre_ijk``."""
    idx = np.indices(shape).reshape(3, -1).T.astype(float)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    c = np.asarray(centre_ijk, float) @ affine[:3, :3].T + affine[:3, 3]
    return (np.linalg.norm(world - c, axis=1) <= radius_mm).reshape(shape)


def world_box(mask: np.ndarray, affine=AFFINE) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box of the mask's voxels, each voxel taken with its full extent (centre +- half a voxel)."""
    idx = np.argwhere(mask).astype(float)
    lo_i, hi_i = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
    pts = np.array([[x, y, z] for x in (lo_i[0], hi_i[0]) for y in (lo_i[1], hi_i[1]) for z in (lo_i[2], hi_i[2])])
    world = pts @ affine[:3, :3].T + affine[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def test_label_mesh_is_in_world_mm_within_the_lesion_box():
    labels = np.zeros(SHAPE, np.uint8)
    lesion = ball((30, 25, 14), 8.0)
    labels[lesion] = 1
    (mesh,) = surface.label_surfaces(labels, AFFINE, names={1: "tumour"})
    assert mesh.value == 1 and mesh.name == "tumour" and mesh.n_faces > 100
    assert mesh.vertices_mm.dtype == np.float32 and mesh.faces.dtype == np.int32
    assert mesh.faces.max() < len(mesh.vertices_mm)
    lo, hi = world_box(lesion)
    v = mesh.vertices_mm
    assert np.all(v >= lo - 1e-3) and np.all(v <= hi + 1e-3)
    # the surface surrounds the lesion: its box is nearly the lesion's (within one voxel per axis)
    vox = np.abs(np.diag(AFFINE)[:3])
    assert np.all(v.min(axis=0) - lo <= vox) and np.all(hi - v.max(axis=0) <= vox)
    centre = np.array([30, 25, 14, 1.0]) @ AFFINE.T
    r = np.linalg.norm(v - centre[:3], axis=1)
    assert 6.0 < np.median(r) < 9.5  # near the 8 mm sphere


def test_one_mesh_per_label_value_each_in_its_own_box():
    labels = np.zeros(SHAPE, np.int16)
    a, b = ball((15, 15, 8), 6.0), ball((48, 40, 22), 7.0)
    labels[a], labels[b] = 3, 1
    labels[:2, :2, :2] = 0
    meshes = surface.label_surfaces(labels, AFFINE, names={1: "necrotic core", 3: "enhancing tumour"})
    assert [m.value for m in meshes] == [1, 3]
    for m, mask in ((meshes[0], b), (meshes[1], a)):
        lo, hi = world_box(mask)
        assert np.all(m.vertices_mm >= lo - 1e-3) and np.all(m.vertices_mm <= hi + 1e-3)
    assert [m.value for m in surface.label_surfaces(labels, AFFINE, values=[3, 7])] == [3]
    assert surface.label_surfaces(np.zeros(SHAPE, np.uint8), AFFINE) == []


def test_lesion_at_the_array_border_and_single_voxel_are_closed_meshes():
    labels = np.zeros(SHAPE, np.uint8)
    labels[0:5, 0:5, 0:3] = 2  # touches three faces of the array
    labels[40, 30, 15] = 1  # one voxel
    meshes = {m.value: m for m in surface.label_surfaces(labels, AFFINE)}
    assert set(meshes) == {1, 2}
    for m in meshes.values():
        # closed surface: every edge is shared by exactly two triangles
        f = m.faces
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        _u, counts = np.unique(edges, axis=0, return_counts=True)
        assert np.all(counts == 2), m.value


def test_face_budget_raises_the_marching_cubes_step():
    labels = ball((32, 28, 15), 25.0).astype(np.uint8)
    full = surface.label_surfaces(labels, AFFINE)[0]
    small = surface.label_surfaces(labels, AFFINE, max_faces=full.n_faces // 4)[0]
    assert full.step == 1 and small.step > 1
    assert small.n_faces <= full.n_faces // 4
    # a coarser step interpolates between samples ``step`` voxels apart: within that much of the box
    lo, hi = world_box(labels.astype(bool))
    slack = small.step * np.abs(np.diag(AFFINE)[:3])
    assert np.all(small.vertices_mm >= lo - slack) and np.all(small.vertices_mm <= hi + slack)


def synthetic_head(shape=(96, 110, 80), seed=0):
    """A noisy ellipsoidal 'head' (bright skin and tissue, a dark ventricle inside) on a 1.2 mm grid."""
    rng = np.random.default_rng(seed)
    affine = np.diag([1.2, 1.2, 1.2, 1.0])
    affine[:3, 3] = [-57.0, -66.0, -48.0]
    idx = np.indices(shape).astype(float)
    c = (np.asarray(shape, float) - 1) / 2
    radii = np.array([40.0, 48.0, 34.0])  # voxels
    d = np.sqrt(sum(((idx[a] - c[a]) / radii[a]) ** 2 for a in range(3)))
    image = np.where(d < 1.0, 500.0, 0.0)
    image[d < 0.2] = 60.0  # a dark hole inside (ventricle): filled, no inner surface
    image += rng.normal(0, 25, shape)
    return image.astype(np.float32), affine, c, radii


def test_head_surface_is_the_outer_skin_at_a_coarse_step():
    image, affine, c, radii = synthetic_head()
    head = surface.head_surface(image, affine)
    assert head is not None and head.value == 0 and head.name == "head"
    assert head.n_faces <= surface.MAX_HEAD_FACES
    assert head.step >= 2  # subsampled (96*110*80 voxels > HEAD_TARGET_VOXELS)
    # every vertex lies near the ellipsoid (no inner surface around the hole, no noise speckles)
    ijk = (head.vertices_mm - affine[:3, 3]) / np.diag(affine)[:3]
    d = np.sqrt(sum(((ijk[:, a] - c[a]) / radii[a]) ** 2 for a in range(3)))
    assert np.all(d > 0.85) and np.all(d < 1.15), (d.min(), d.max())
    assert surface.head_surface(np.zeros((20, 20, 20)), affine) is None
    assert surface.head_surface(np.zeros((20, 20, 1)), affine) is None


def test_head_surface_of_the_sample_scan():
    from pathlib import Path

    from seg_app.core.io import load_scan

    vol = load_scan(Path(__file__).resolve().parents[1] / "sample_scans" / "brain_tumour_mri.nii.gz")
    head = surface.head_surface(vol.array[0], vol.affine)
    assert head is not None and 1000 < head.n_faces <= surface.MAX_HEAD_FACES
    # within the scan's field of view (world box of the grid)
    shape = np.asarray(vol.shape)
    corners = np.array([[x, y, z] for x in (-0.5, shape[0] - 0.5) for y in (-0.5, shape[1] - 0.5)
                        for z in (-0.5, shape[2] - 0.5)]) @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    lo, hi = head.bounds_mm
    assert np.all(lo >= corners.min(axis=0) - 1e-3) and np.all(hi <= corners.max(axis=0) + 1e-3)
    assert np.all(hi - lo > 80)  # a head, not a speck


def test_ray_hit_finds_the_near_side_of_the_lesion():
    labels = np.zeros(SHAPE, np.uint8)
    centre = (30, 25, 14)
    lesion = ball(centre, 8.0)
    labels[lesion] = 2
    c_world = np.append(np.asarray(centre, float), 1) @ AFFINE.T
    origin = c_world[:3] + np.array([0.0, 200.0, 0.0])  # anterior of it, looking back (-y)
    hit = surface.ray_hit(labels, AFFINE, origin, [0.0, -1.0, 0.0])
    assert hit is not None
    point, ijk = hit
    assert labels[ijk] == 2
    assert abs(point[0] - c_world[0]) < 1.0 and abs(point[2] - c_world[2]) < 1.5
    assert 6.0 < point[1] - c_world[1] < 9.0  # the anterior surface, ~8 mm in front of the centre
    # from the other side: the posterior surface
    point2, _ = surface.ray_hit(labels, AFFINE, c_world[:3] - [0, 200, 0], [0, 1, 0])
    assert -9.0 < point2[1] - c_world[1] < -6.0
    # misses: beside the lesion, pointing away, other values only, parallel outside the volume
    assert surface.ray_hit(labels, AFFINE, origin + [30, 0, 0], [0, -1, 0]) is None
    assert surface.ray_hit(labels, AFFINE, origin, [0, 1, 0]) is None
    assert surface.ray_hit(labels, AFFINE, origin, [0, -1, 0], values=[1]) is None
    assert surface.ray_hit(labels, AFFINE, [500, 500, 500], [0, 0, 1]) is None
    assert surface.ray_hit(labels, AFFINE, origin, [0, 0, 0]) is None


@pytest.mark.parametrize("direction", [(1, 1, 0.3), (-0.2, -1, -0.7), (0.5, -0.5, 1)])
def test_ray_hit_from_any_direction_lands_on_a_lesion_voxel(direction):
    labels = np.zeros(SHAPE, np.uint8)
    labels[ball((32, 28, 15), 6.0)] = 1
    c_world = np.append([32.0, 28.0, 15.0], 1) @ AFFINE.T
    d = np.asarray(direction, float)
    hit = surface.ray_hit(labels, AFFINE, c_world[:3] - 300 * d / np.linalg.norm(d), d)
    assert hit is not None and labels[hit[1]] == 1
    assert np.linalg.norm(hit[0] - c_world[:3]) <= 6.0 + 1.5


def test_vertex_normals_point_outwards_whatever_the_affine():
    labels = np.zeros(SHAPE, np.uint8)
    labels[ball((30, 25, 14), 8.0)] = 1
    centre = (np.append([30.0, 25.0, 14.0], 1) @ AFFINE.T)[:3]
    for affine in (AFFINE, np.diag([1.0, 1.0, 1.0, 1.0]) @ AFFINE, AFFINE @ np.diag([-1.0, 1.0, 1.0, 1.0])):
        (mesh,) = surface.label_surfaces(labels, affine)
        c = (np.append([30.0, 25.0, 14.0], 1) @ affine.T)[:3] if affine is not AFFINE else centre
        n = mesh.normals
        assert n.shape == mesh.vertices_mm.shape
        assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-4)
        outward = np.einsum("ij,ij->i", n, mesh.vertices_mm - c)
        assert np.mean(outward > 0) > 0.98
