"""Qt-free parts of the GUI: display geometry (radiological convention), rendering, brush editing."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

from seg_app.gui import render
from seg_app.gui.editing import BRUSH_STEPS_MM, LabelEditor, brush_offsets, next_brush_radius
from seg_app.gui.viewer_state import (
    CT_PRESETS,
    VIEW_NAMES,
    DisplayGeometry,
    ViewerState,
    auto_window,
    display_to_screen,
    plane_shape,
    preset_window,
    presets_for,
    screen_to_display,
    slice_caption,
    view_plane,
)

LAS = np.array([[-1.2, 0, 0, 30.0], [0, 1.0, 0, -20.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])
# array axes: i -> Superior, j -> Left (x decreasing), k -> Posterior
PERMUTED = np.array([[0, -0.8, 0, 10.0], [0, 0, -1.5, 5.0], [2.5, 0, 0, -7.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [np.eye(4), LAS, PERMUTED])
def test_display_geometry_is_canonical_ras_view(affine):
    shape = (7, 9, 11)
    g = DisplayGeometry.from_affine(affine, shape)
    assert not g.oblique
    # display axes point to R, A, S with positive spacing
    assert np.all(np.diag(g.affine[:3, :3]) > 0)
    assert np.allclose(g.affine[:3, :3] - np.diag(np.diag(g.affine[:3, :3])), 0)
    src = np.arange(np.prod(shape)).reshape(shape)
    disp = g.view(src)
    assert disp.shape == g.shape
    assert np.shares_memory(disp, src)  # a view: brush writes reach the saved labels
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = tuple(int(rng.integers(0, s)) for s in g.shape)
        s = g.to_source_index(d)
        assert disp[d] == src[s]
        assert g.from_source_index(s) == d
        # same world point either way
        assert np.allclose(g.display_to_world(d), affine[:3, :3] @ np.array(s) + affine[:3, 3])


def test_oblique_scan_is_flagged():
    c, s = np.cos(0.3), np.sin(0.3)
    aff = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    g = DisplayGeometry.from_affine(aff, (5, 5, 5))
    assert g.oblique


def test_radiological_convention():
    """Axial/coronal: patient right on screen left; axial: anterior up; sagittal: anterior left, superior up."""
    g = DisplayGeometry.from_affine(LAS, (12, 10, 8))
    world = lambda view, row, col: g.display_to_world(screen_to_display(view, g.shape, 3, row, col))  # noqa: E731
    rows, cols = plane_shape(g.shape, "axial")
    assert world("axial", 0, 0)[0] > world("axial", 0, cols - 1)[0]  # left of screen = patient right (+x)
    assert world("axial", 0, 0)[1] > world("axial", rows - 1, 0)[1]  # top = anterior (+y)
    rows, cols = plane_shape(g.shape, "coronal")
    assert world("coronal", 0, 0)[0] > world("coronal", 0, cols - 1)[0]
    assert world("coronal", 0, 0)[2] > world("coronal", rows - 1, 0)[2]  # top = superior
    rows, cols = plane_shape(g.shape, "sagittal")
    assert world("sagittal", 0, 0)[1] > world("sagittal", 0, cols - 1)[1]  # left = anterior
    assert world("sagittal", 0, 0)[2] > world("sagittal", rows - 1, 0)[2]


def test_view_plane_and_screen_mapping_agree():
    g = DisplayGeometry.from_affine(PERMUTED, (6, 7, 8))
    vol = np.arange(np.prod(g.shape)).reshape(g.shape)
    for view in VIEW_NAMES:
        plane = view_plane(vol, view, 2)
        assert plane.shape == plane_shape(g.shape, view)
        for row, col in [(0, 0), (plane.shape[0] - 1, 1), (2, plane.shape[1] - 1)]:
            d = screen_to_display(view, g.shape, 2, row, col).astype(int)
            assert plane[row, col] == vol[tuple(d)]
            assert display_to_screen(view, g.shape, d) == (row, col)


def test_viewer_state_events_and_clamping():
    st = ViewerState()
    seen = []
    st.connect(seen.append)
    st.set_geometry(DisplayGeometry.from_affine(np.eye(4), (4, 5, 6)))
    assert st.cursor == (2, 2, 3)
    st.set_cursor((100, -3, 2.6))
    assert st.cursor == (3, 0, 3)
    st.step_slice("axial", 5)
    assert st.cursor == (3, 0, 5)
    st.set_window(100, 20)
    assert seen == ["geometry", "cursor", "cursor", "window"]


def test_auto_window_uses_tissue_percentiles():
    a = np.zeros((20, 20, 20), np.float32)
    a[5:15, 5:15, 5:15] = np.linspace(100, 200, 1000).reshape(10, 10, 10)
    w, lvl = auto_window(a)
    assert 90 < lvl - w / 2 < 110 and 190 < lvl + w / 2 < 201


def test_window_and_overlay_rendering():
    plane = np.linspace(-1000, 1000, 64 * 48, dtype=np.float32).reshape(64, 48)
    g1 = render.window_to_uint8(plane, 400, 40)
    g2 = render.window_to_uint8(plane, 2000, 0)
    assert g1.dtype == np.uint8 and not np.array_equal(g1, g2)
    assert g2.min() == 0 and g2.max() == 255
    labels = np.zeros((64, 48), np.uint8)
    labels[10:30, 10:20] = 1
    lut, vis = render.label_luts([(1, (255, 0, 0))])
    base = render.gray_to_rgb32(g2)
    assert base.dtype == np.uint32 and base.flags.c_contiguous
    assert render.labels_layer(np.zeros_like(labels), render.label_lut32(lut, vis, 1.0)) is None
    rgb = render.composite_rgb(base, render.labels_layer(labels, render.label_lut32(lut, vis, 1.0)))
    assert rgb.shape == (64, 48, 3)
    assert np.all(rgb[15, 15] == (255, 0, 0))
    assert np.all(rgb[0, 0] == g2[0, 0])
    half = render.composite_rgb(base, render.labels_layer(labels, render.label_lut32(lut, vis, 0.5)))
    assert abs(int(half[15, 15, 0]) - (255 + int(g2[15, 15])) / 2) <= 1
    outl = render.composite_rgb(base, render.labels_layer(labels, render.label_lut32(lut, vis, 1.0), outline=True))
    assert np.all(outl[15, 15] == g2[15, 15]) and np.all(outl[10, 15] == (255, 0, 0))
    prob = np.zeros((64, 48), np.float32)
    prob[40:50, 5:10] = 0.9
    heat = render.composite_rgb(base, render.heat_layer(prob, render.heat_lut32(0.6)))
    assert not np.array_equal(heat[45, 7], rgb[45, 7]) and np.array_equal(heat[0, 0], rgb[0, 0])


def test_brush_disc_and_sphere_respect_spacing():
    disc = brush_offsets(3.0, (1.0, 0.5, 2.0), normal=2)
    assert np.all(disc[:, 2] == 0)
    assert disc[:, 0].max() == 3 and disc[:, 1].max() == 6
    sphere = brush_offsets(3.0, (1.0, 0.5, 2.0), normal=None)
    assert sphere[:, 2].max() == 1 and len(sphere) > len(disc)


def test_editor_undo_redo_restores_exactly_with_diffs():
    rng = np.random.default_rng(0)
    src = (rng.random((20, 18, 16)) > 0.8).astype(np.uint8)
    g = DisplayGeometry.from_affine(LAS, src.shape)
    original = src.copy()
    ed = LabelEditor(g.view(src), g.spacing)
    states = [src.copy()]
    for n in range(25):
        ed.begin_stroke()
        ed.line((2 + n % 10, 3, n % 16), (12, 10, n % 16), 2.0, value=(n % 2) + 1, view="axial", sphere=n % 3 == 0)
        assert ed.end_stroke() is not None
        states.append(src.copy())
    # history stores only changed voxels, never a full copy
    assert all(d.changed.size < src.size for s in ed._undo for d in s.dabs)
    for n in range(25, 0, -1):
        assert np.array_equal(src, states[n])
        assert ed.undo()
    assert np.array_equal(src, original)
    assert not ed.undo()
    for n in range(1, 26):
        assert ed.redo()
        assert np.array_equal(src, states[n])
    # a new stroke clears the redo stack
    ed.undo()
    ed.begin_stroke()
    ed.dab((5, 5, 5), 1.0, 0, "coronal")
    ed.end_stroke()
    assert not ed.can_redo


def test_erase_and_empty_stroke():
    src = np.ones((8, 8, 8), np.uint8)
    g = DisplayGeometry.from_affine(np.eye(4), src.shape)
    ed = LabelEditor(g.view(src), g.spacing)
    ed.begin_stroke()
    ed.dab((4, 4, 4), 1.0, 0, "sagittal")
    assert src[4, 4, 4] == 0 and src[4, 4, 3] == 0 and src[3, 4, 4] == 1  # disc in the sagittal plane (x fixed)
    ed.end_stroke()
    ed.begin_stroke()
    ed.dab((4, 4, 4), 1.0, 0, "sagittal")  # nothing left to erase
    assert ed.end_stroke() is None


def test_presets_follow_the_modality():
    mr = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32) * 600 + 200
    ct = mr - 1200.0  # air at about -1000 HU
    assert presets_for("MR", mr)[0].startswith("Auto") and not set(presets_for("MR", mr)) & set(CT_PRESETS)
    assert not set(presets_for("", mr)) & set(CT_PRESETS)  # NIfTI without HU-like air: percentiles
    assert presets_for("CT")[0] == "Soft tissue" and {"Brain", "Bone", "Lung"} <= set(presets_for("CT"))
    assert "Brain" in presets_for("", ct)  # NIfTI CT recognised by its air
    for name in presets_for("MR", mr):  # no MR preset turns the image white (or black)
        w, lvl = preset_window(name, mr)
        grey = render.window_to_uint8(mr[8], w, lvl)
        assert (grey == 255).mean() < 0.2 and (grey == 0).mean() < 0.2
    assert preset_window("Brain", mr) == (80.0, 40.0) and preset_window("Custom", mr) is None


def test_slice_caption_is_one_based_in_view_order():
    assert slice_caption("axial", (3, 4, 0), (10, 11, 12)) == "Axial 1/12"
    assert slice_caption("coronal", (3, 10, 5), (10, 11, 12)) == "Coronal 11/11"
    assert slice_caption("sagittal", (9.4, 0, 0), (10, 11, 12)) == "Sagittal 10/10"


def test_brush_radius_steps_are_clean():
    r, seen = 5.0, []
    for _ in range(20):
        r = next_brush_radius(r, 1)
        seen.append(r)
    assert seen[:4] == [6.0, 8.0, 10.0, 12.0] and seen[-1] == 50.0
    assert next_brush_radius(9.76, -1) == 8.0 and next_brush_radius(9.76, 1) == 10.0
    assert next_brush_radius(0.5, -1) == 0.5
    assert all(v in BRUSH_STEPS_MM for v in seen)


def test_editor_fill_is_one_undo_step():
    src = np.zeros((8, 8, 8), np.uint8)
    src[2:5, 2:5, 2:5] = 1
    g = DisplayGeometry.from_affine(LAS, src.shape)
    ed = LabelEditor(g.view(src), g.spacing)
    box = (slice(0, 8),) * 3
    assert ed.fill(box, g.view(src)[box] == 1, 0) is not None
    assert src.sum() == 0 and ed.can_undo
    assert ed.fill(box, np.ones((8, 8, 8), bool), 0) is None  # nothing left to change
    assert ed.undo() and src.sum() == 27


@pytest.mark.parametrize("affine", [np.eye(4), LAS, np.diag([0.7, 0.7, 3.0, 1.0])])
def test_recist_calipers_match_the_core_measurement(affine):
    from types import SimpleNamespace

    from seg_app.core.measure import measure_lesions
    from seg_app.core.shape import axial_axis
    from seg_app.core.volume import Volume
    from seg_app.gui.calipers import lesion_mask, recist_calipers

    x, y, z = np.meshgrid(np.arange(40), np.arange(36), np.arange(12), indexing="ij")
    labels = np.zeros((40, 36, 12), np.uint8)
    labels[((x - 18) / 11.0) ** 2 + ((y - 17) / 5.0) ** 2 + ((z - 6) / 4.0) ** 2 <= 1] = 1  # ellipsoid
    labels[2:4, 30:33, 1:3] = 1  # a second, small lesion
    (les, small) = measure_lesions(Volume(labels[None], affine))
    assert les.long_axis_slice is not None and 2 <= les.long_axis_slice <= 10
    g = DisplayGeometry.from_affine(affine, labels.shape)
    cal = recist_calipers(labels, affine, les, g, axial_axis(affine))
    assert cal is not None
    assert cal.long_mm == pytest.approx(les.long_axis_mm, rel=1e-6)
    assert cal.short_mm == pytest.approx(les.short_axis_mm, rel=1e-6)
    assert cal.display_slice == g.from_source_index((0, 0, les.long_axis_slice))[2]
    # end points lie on that slice; the drawn lines are as long as the measured axes
    for ends, mm in ((cal.long_ends, les.long_axis_mm), (cal.short_ends, les.short_axis_mm)):
        assert all(abs(e[2] - cal.display_slice) < 1e-6 for e in ends)
        world = [g.display_to_world(e) for e in ends]
        assert np.linalg.norm(world[0] - world[1]) == pytest.approx(mm, rel=1e-6)
    # the mask of each lesion is found again (and only its own voxels)
    box, mask = lesion_mask(labels, small)
    assert mask.sum() == small.voxel_count == 12
    gone = SimpleNamespace(**{**les.__dict__, "voxel_count": les.voxel_count + 1})
    assert lesion_mask(labels, gone) is None
