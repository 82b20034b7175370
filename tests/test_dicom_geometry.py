"""Pure DICOM slice geometry (no files): sorting along the normal, spacing, uneven stacks, tilt.

Expected values are written out by hand (closed-form normals, LPS->RAS by negating x and y), not
computed with the code under test.
"""

import math
import random

import numpy as np
import pytest

from seg_app.core.dicom_geometry import FrameHeader, plan_geometry
from seg_app.core.dicom_pixels import resample_slices

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
PIXEL_SPACING = (0.8, 0.6)  # (row spacing, column spacing) mm


def _frame(k, position, orientation=AXIAL, instance=None, rows=4, columns=5):
    return FrameHeader(
        path=f"/scan/{k:03d}.dcm", frame=None, sop_uid=f"1.2.3.{k}",
        instance_number=k + 1 if instance is None else instance,
        position=None if position is None else tuple(float(x) for x in position),
        orientation=orientation, pixel_spacing=PIXEL_SPACING, slope=1.0, intercept=0.0,
        rows=rows, columns=columns,
    )


def _ras(v):
    """LPS vector -> RAS vector."""
    return np.array([-v[0], -v[1], v[2]], dtype=np.float64)


def _axial_stack(z_positions, **kw):
    return [_frame(k, (10.0, -20.0, z), **kw) for k, z in enumerate(z_positions)]


def test_oblique_stack_sorted_along_normal_not_instance_number_or_input_order():
    theta, phi = math.radians(30), math.radians(20)
    row = (math.cos(theta), math.sin(theta), 0.0)
    col = (-math.sin(theta) * math.cos(phi), math.cos(theta) * math.cos(phi), math.sin(phi))
    normal = np.array([math.sin(theta) * math.sin(phi), -math.cos(theta) * math.sin(phi), math.cos(phi)])
    origin = np.array([-40.0, 25.0, 7.5])
    n, step_mm = 9, 2.5
    frames = [
        _frame(k, origin + k * step_mm * normal, orientation=row + col, instance=100 - 7 * k)  # reversed
        for k in range(n)
    ]
    shuffled = frames[:]
    random.Random(4).shuffle(shuffled)

    geo = plan_geometry(shuffled, slice_spacing_hint=5.0)

    assert [f.sop_uid for f in geo.frames] == [f"1.2.3.{k}" for k in range(n)]
    assert geo.shape == (5, 4, n) and geo.resample is None and geo.warnings == []
    expected = np.eye(4)
    expected[:3, 0] = _ras(np.array(row) * 0.6)  # i runs along the row direction, column spacing
    expected[:3, 1] = _ras(np.array(col) * 0.8)  # j runs along the column direction, row spacing
    expected[:3, 2] = _ras(normal * step_mm)
    expected[:3, 3] = _ras(origin)
    np.testing.assert_allclose(geo.affine, expected, atol=1e-9)


def test_slice_spacing_from_positions_not_slice_thickness():
    geo = plan_geometry(_axial_stack([0.0, 3.0, 6.0, 9.0]), slice_spacing_hint=5.0)
    np.testing.assert_allclose(geo.affine[:3, 2], [0.0, 0.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(geo.affine[:3, 3], [-10.0, 20.0, 0.0], atol=1e-12)
    assert geo.warnings == []


def test_descending_positions_give_a_negative_step():
    geo = plan_geometry(_axial_stack([9.0, 6.0, 3.0, 0.0]))
    assert [f.sop_uid for f in geo.frames] == ["1.2.3.3", "1.2.3.2", "1.2.3.1", "1.2.3.0"]
    np.testing.assert_allclose(geo.affine[:3, 2], [0.0, 0.0, 3.0], atol=1e-12)


def test_single_slice_uses_the_header_spacing():
    geo = plan_geometry(_axial_stack([4.0]), slice_spacing_hint=5.0)
    assert geo.shape == (5, 4, 1)
    np.testing.assert_allclose(geo.affine[:3, 2], [0.0, 0.0, 5.0], atol=1e-12)
    assert any("Single-slice" in w and "5 mm" in w for w in geo.warnings)


def test_small_jitter_in_positions_is_not_uneven_spacing():
    geo = plan_geometry(_axial_stack([0.0, 2.004, 3.998, 6.002, 8.0]))
    assert geo.resample is None and geo.warnings == []
    np.testing.assert_allclose(geo.affine[:3, 2], [0.0, 0.0, 2.0], atol=1e-12)  # (last - first) / 4


def test_missing_slice_is_detected_and_planned_as_resampling():
    z = [0.0, 2.0, 4.0, 8.0, 10.0]  # 6.0 is missing
    geo = plan_geometry(_axial_stack(z))
    # regular grid 0, 2, ..., 10: per output slice (lower acquired index, weight of the upper one)
    assert geo.resample == [(0, 0.0), (1, 0.0), (2, 0.0), (2, 0.5), (3, 0.0), (3, 1.0)]
    assert geo.shape == (5, 4, 6)
    np.testing.assert_allclose(geo.affine[:3, 2], [0.0, 0.0, 2.0], atol=1e-12)
    (warning,) = geo.warnings
    assert "Uneven slice spacing (2 to 4 mm, probably 1 missing slice(s))" in warning
    assert "regular 2 mm grid of 6 slices" in warning

    # the plan interpolates linearly: a stack whose value is its z lands on the regular z grid
    stack = np.broadcast_to(np.array(z, np.float32)[:, None, None], (5, 4, 5)).copy()
    out = resample_slices(stack, geo.resample)
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 2.0, 4.0, 6.0, 8.0, 10.0], atol=1e-6)


def test_variable_spacing_without_a_gap_is_uneven_but_not_missing():
    geo = plan_geometry(_axial_stack([0.0, 2.0, 4.5, 6.5]))
    (warning,) = geo.warnings
    assert "Uneven slice spacing (2 to 2.5 mm)" in warning and "missing" not in warning
    assert geo.resample is not None and len(geo.resample) == 4  # round(6.5 / 2) + 1


def test_same_position_keeps_the_lowest_instance_number():
    frames = _axial_stack([0.0, 2.0, 4.0]) + [_frame(7, (10.0, -20.0, 2.0), instance=0)]
    geo = plan_geometry(frames)
    assert [f.sop_uid for f in geo.frames] == ["1.2.3.0", "1.2.3.7", "1.2.3.2"]
    assert any("1 image(s) share a slice position" in w for w in geo.warnings)


def test_gantry_tilt_is_kept_as_shear_and_reported():
    tilt, d = math.radians(10), 2.0
    frames = [_frame(k, (0.0, k * d * math.tan(tilt), k * d)) for k in range(6)]
    geo = plan_geometry(frames)
    np.testing.assert_allclose(geo.affine[:3, 2], [0.0, -d * math.tan(tilt), d], atol=1e-12)
    assert any("Gantry tilt of 10.00 degrees" in w for w in geo.warnings)


def test_localizer_of_another_orientation_is_left_out():
    frames = _axial_stack([0.0, 2.0, 4.0, 6.0]) + [_frame(9, (0.0, 0.0, 0.0), orientation=(0, 1, 0, 0, 0, -1))]
    geo = plan_geometry(frames)
    assert len(geo.frames) == 4 and "1.2.3.9" not in {f.sop_uid for f in geo.frames}
    assert any("another size or orientation" in w for w in geo.warnings)


def test_no_positions_falls_back_to_instance_order_and_header_spacing():
    frames = [_frame(k, None, instance=10 - k) for k in range(3)]
    geo = plan_geometry(frames, slice_spacing_hint=4.0)
    assert [f.instance_number for f in geo.frames] == [8, 9, 10]
    np.testing.assert_allclose(geo.affine, np.diag([-0.6, -0.8, 4.0, 1.0]))
    assert any("no patient position" in w for w in geo.warnings)


@pytest.mark.parametrize("hint, expected", [(None, 1.0), (3.0, 3.0)])
def test_single_slice_spacing_defaults_to_1_mm(hint, expected):
    geo = plan_geometry(_axial_stack([0.0]), slice_spacing_hint=hint)
    assert geo.affine[2, 2] == pytest.approx(expected)
