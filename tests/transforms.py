"""Known rigid transforms for the registration tests (follow-up, multi-sequence, the registration module)."""

from __future__ import annotations

import math

import numpy as np


def rigid_matrix(deg: float, axis, shift) -> np.ndarray:
    """4x4 matrix: a rotation of ``deg`` degrees about ``axis`` (Rodrigues' formula), then ``shift`` (mm)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = math.radians(deg)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k
    m[:3, 3] = shift
    return m
