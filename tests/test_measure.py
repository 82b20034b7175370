"""Lesion measurements against analytic shapes on anisotropic and oblique grids."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from seg_app.core.export import CSV_COLUMNS, save_measurements_csv, save_measurements_json
from seg_app.core.measure import axial_axis, label_totals, measure_lesions
from seg_app.core.volume import Volume


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation (degrees about x, then y, then z)."""
    out = np.eye(3)
    for axis, deg in ((0, ax), (1, ay), (2, az)):
        t = math.radians(deg)
        c, s = math.cos(t), math.sin(t)
        r = np.eye(3)
        i, j = [a for a in range(3) if a != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


def grid(shape, spacing, rot=np.eye(3), origin=(-40.0, 25.0, 7.0)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def world_coords(shape, affine) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def ellipsoid(shape, affine, center_world, semi_axes, axes_world=np.eye(3)) -> np.ndarray:
    """Voxels whose centre lies in the ellipsoid (semi-axes along the columns of ``axes_world``)."""
    d = (world_coords(shape, affine) - center_world) @ axes_world
    return (((d / np.asarray(semi_axes)) ** 2).sum(-1) <= 1.0).astype(np.uint8)


def ellipsoid_area(a: float, b: float, c: float) -> float:
    p = 1.6075  # Knud Thomsen's approximation (< 1.1 % error)
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def center_of(shape, affine) -> np.ndarray:
    return (np.array(shape) - 1) / 2 @ affine[:3, :3].T + affine[:3, 3]


SHAPE = (72, 64, 40)
GRIDS = {
    "anisotropic": grid(SHAPE, (0.7, 0.9, 1.6)),
    "oblique": grid(SHAPE, (0.8, 1.0, 1.5), rotation(18, -12, 30)),
}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_sphere_volume_diameters_surface(name):
    aff = GRIDS[name]
    r = 14.0
    lab = ellipsoid(SHAPE, aff, center_of(SHAPE, aff), (r, r, r))
    diag = float(np.linalg.norm(Volume(lab, aff).spacing))
    (les,) = measure_lesions(Volume(lab, aff))
    assert les.volume_ml == pytest.approx(4 / 3 * math.pi * r**3 / 1000, rel=0.02)
    assert abs(les.max_diameter_mm - 2 * r) <= diag
    assert abs(les.long_axis_mm - 2 * r) <= diag
    assert abs(les.short_axis_mm - 2 * r) <= diag
    assert les.surface_area_mm2 == pytest.approx(4 * math.pi * r**2, rel=0.10)  # staircase residue
    assert 0.9 < les.sphericity < 1  # mesh volume and area of one closed mesh: never above 1
    np.testing.assert_allclose(les.centroid_ras_mm, center_of(SHAPE, aff), atol=0.3)
    np.testing.assert_allclose(les.centroid_voxel, (np.array(SHAPE) - 1) / 2, atol=0.3)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_ellipsoid_aligned_with_the_grid(name):
    """Semi-axes along the grid's own directions, so the axial-slice cross-section is known."""
    aff = GRIDS[name]
    dirs = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
    a, b, c = 18.0, 11.0, 8.0  # along i, j, k
    lab = ellipsoid(SHAPE, aff, center_of(SHAPE, aff), (a, b, c), dirs)
    vol = Volume(lab, aff)
    diag = float(np.linalg.norm(vol.spacing))
    assert axial_axis(aff) == 2
    (les,) = measure_lesions(vol)
    assert les.volume_ml == pytest.approx(4 / 3 * math.pi * a * b * c / 1000, rel=0.02)
    assert abs(les.max_diameter_mm - 2 * a) <= diag
    assert abs(les.long_axis_mm - 2 * a) <= diag
    assert abs(les.short_axis_mm - 2 * b) <= diag
    assert les.surface_area_mm2 == pytest.approx(ellipsoid_area(a, b, c), rel=0.10)


def test_ellipsoid_rotated_within_the_axial_plane():
    """Long axis at 40 degrees to the array axes: RECIST axes still found."""
    aff = GRIDS["anisotropic"]
    rot = rotation(0, 0, 40)
    lab = ellipsoid(SHAPE, aff, center_of(SHAPE, aff), (16.0, 9.0, 6.0), rot)
    (les,) = measure_lesions(Volume(lab, aff))
    diag = float(np.linalg.norm(Volume(lab, aff).spacing))
    assert abs(les.long_axis_mm - 32.0) <= diag
    assert abs(les.short_axis_mm - 18.0) <= diag
    assert abs(les.max_diameter_mm - 32.0) <= diag


def test_axial_plane_of_a_sagittal_acquisition():
    # array axes: i -> A (rows), j -> S... k -> R (slices across the head)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]]) @ np.diag([1.0, 1.0, 3.0])
    assert axial_axis(aff) == 1  # slices perpendicular to j (which runs along S) are axial


def test_two_blobs_are_two_lesions_and_diagonal_contact_joins():
    aff = GRIDS["anisotropic"]
    lab = np.zeros(SHAPE, np.uint8)
    lab[5:15, 5:15, 5:10] = 1
    lab[30:40, 30:40, 20:25] = 1
    les = measure_lesions(Volume(lab, aff), label_names={1: "tumour"})
    assert len(les) == 2 and {x.label_name for x in les} == {"tumour"}
    assert [x.lesion_id for x in les] == [1, 2]
    lab2 = np.zeros(SHAPE, np.uint8)
    lab2[5, 5, 5] = lab2[6, 6, 6] = 1  # touching corners: one lesion with 26-connectivity
    assert len(measure_lesions(Volume(lab2, aff))) == 1
    assert len(measure_lesions(Volume(lab2, aff), connectivity=6)) == 2


def test_labels_are_separate_and_sorted_by_volume():
    aff = GRIDS["anisotropic"]
    lab = np.zeros(SHAPE, np.uint8)
    lab[10:20, 10:20, 10:20] = 2
    lab[20:24, 10:20, 10:20] = 1  # touches label 2 but is another label
    lab[40:50, 40:50, 30:38] = 1  # bigger lesion of label 1
    les = measure_lesions(Volume(lab, aff))
    assert [(x.label, x.lesion_id, x.voxel_count) for x in les] == [(1, 1, 800), (1, 2, 400), (2, 1, 1000)]
    assert les[1].bbox_min_voxel == (20, 10, 10) and les[1].bbox_max_voxel == (23, 19, 19)
    totals = label_totals(les)
    assert [(t["label"], t["n_lesions"], t["voxel_count"]) for t in totals] == [(1, 2, 1200), (2, 1, 1000)]
    assert totals[0]["volume_ml"] == pytest.approx(1200 * Volume(lab, aff).voxel_volume_ml)


def test_intensity_confidence_and_agreement():
    aff = GRIDS["anisotropic"]
    lab = np.zeros(SHAPE, np.uint8)
    lab[10:14, 10:15, 10:12] = 1
    img = np.zeros(SHAPE, np.float32)
    img[10:14, 10:15, 10:12] = np.arange(40, dtype=np.float32).reshape(4, 5, 2)
    prob = np.full(SHAPE, 0.8, np.float32)
    agree = np.full(SHAPE, 0.75, np.float32)
    (les,) = measure_lesions(Volume(lab, aff), Volume(img, aff), Volume(prob, aff), Volume(agree, aff))
    vals = np.arange(40.0)
    assert (les.mean, les.min, les.max, les.median) == pytest.approx((vals.mean(), 0.0, 39.0, np.median(vals)))
    assert les.std == pytest.approx(vals.std())
    assert les.confidence == pytest.approx(0.8) and les.tta_agreement == pytest.approx(0.75)
    (bare,) = measure_lesions(Volume(lab, aff))
    assert math.isnan(bare.mean) and bare.confidence is None and bare.tta_agreement is None
    assert bare.to_dict()["mean"] is None


def test_empty_and_mismatched_inputs():
    aff = GRIDS["anisotropic"]
    assert measure_lesions(Volume(np.zeros(SHAPE, np.uint8), aff)) == []
    assert label_totals([]) == []
    lab = np.zeros(SHAPE, np.uint8)
    lab[1, 1, 1] = 1
    with pytest.raises(ValueError, match="grid"):
        measure_lesions(Volume(lab, aff), image=Volume(np.zeros((3, 3, 3)), aff))
    (one,) = measure_lesions(Volume(lab, aff))  # a single voxel still gets finite numbers
    assert one.voxel_count == 1 and one.max_diameter_mm > 0 and one.surface_area_mm2 > 0


def test_large_label_map_with_a_few_lesions():
    """256^3 label map with a few lesions (timings are in benchmarks/, not asserted here)."""
    shape = (256, 256, 256)
    lab = np.zeros(shape, np.uint8)
    aff = grid(shape, (0.9, 0.9, 1.0))
    for c, r, v in (((80, 90, 100), 14, 1), ((170, 160, 120), 9, 1), ((120, 120, 180), 6, 2)):
        sl = tuple(slice(x - r, x + r + 1) for x in c)
        zz = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"))
        lab[sl][(zz**2).sum(0) <= r * r] = v
    les = measure_lesions(Volume(lab, aff))
    assert [(x.label, x.lesion_id) for x in les] == [(1, 1), (1, 2), (2, 1)]
    assert all(0.9 < x.sphericity < 1 for x in les)


def test_json_and_csv_files(tmp_path):
    aff = GRIDS["oblique"]
    lab = np.zeros(SHAPE, np.uint8)
    lab[10:20, 10:20, 10:15] = 1
    lab[40:44, 40:44, 30:33] = 2
    les = measure_lesions(Volume(lab, aff), label_names={1: "tumour", 2: "oedema"})
    totals = label_totals(les)
    pj = save_measurements_json(tmp_path / "m.json", les, totals, extra={"model": {"name": "m"}, "warnings": []})
    doc = json.loads(pj.read_text())
    assert doc["model"]["name"] == "m" and len(doc["lesions"]) == 2 and len(doc["totals"]) == 2
    for key in ("label", "volume_ml", "max_diameter_mm", "long_axis_mm", "short_axis_mm", "mean", "confidence", "centroid_ras_mm"):
        assert key in doc["lesions"][0]
    assert doc["lesions"][0]["mean"] is None  # no image: not a number, written as null
    pc = save_measurements_csv(tmp_path / "m.csv", les)
    rows = list(csv.DictReader(pc.open()))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 2
    assert float(rows[0]["volume_ml"]) == pytest.approx(les[0].volume_ml, rel=1e-5)
    assert rows[0]["label_name"] == "tumour" and rows[0]["confidence"] == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.json"]  # no temp files left
    from seg_app.core.errors import ExportError

    with pytest.raises(ExportError):
        save_measurements_csv(tmp_path / "missing" / "m.csv", les)


def test_ragged_masks_use_the_binary_mesh(monkeypatch):
    """Above MAX_MESH_FACES boundary faces even thick lesions get the binary (IBSI) mesh, not the smoothed one."""
    import seg_app.core.shape as m

    aff = GRIDS["oblique"]
    r = 14.0
    lab = ellipsoid(SHAPE, aff, center_of(SHAPE, aff), (r, r, r))
    smooth = measure_lesions(Volume(lab, aff))[0]
    monkeypatch.setattr(m, "MAX_MESH_FACES", 0)
    binary = measure_lesions(Volume(lab, aff))[0]
    # the binary mesh keeps the staircase: larger area, lower sphericity, both still sensible
    assert smooth.surface_area_mm2 < binary.surface_area_mm2 < 1.25 * 4 * math.pi * r**2
    assert binary.sphericity < smooth.sphericity < 1
