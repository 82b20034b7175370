"""Pure DICOM slice geometry: frames in, sorted frames and an exact voxel->RAS+ affine out.

No file I/O (numpy only), so every rule here can be tested with hand-made :class:`FrameHeader`
records. Conventions (shared with :mod:`seg_app.core.dicom_write`, matching dcm2niix/nibabel):

* array axis ``i`` = DICOM column index (along the first ImageOrientationPatient vector, the row
  direction), ``j`` = row index (along the second vector), ``k`` = slice index sorted by position
  along the slice normal ``row x col`` (never by InstanceNumber or file name);
* the affine is built in LPS from ImageOrientationPatient, PixelSpacing and ImagePositionPatient and
  converted to RAS+ once, here (:data:`RAS_FROM_LPS`);
* the slice step is ``(last position - first position) / (K - 1)``, so a gantry tilt shows as a
  sheared affine (reported as a warning) instead of misplaced voxels;
* uneven slice spacing (a missing slice, variable spacing) is planned as a resampling onto a regular
  grid at the median spacing, by linear interpolation between the two neighbouring acquired slices
  (:attr:`SeriesGeometry.resample`), with a warning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seg_app.core.volume import MAX_VOXELS

__all__ = ["MAX_VOXELS", "RAS_FROM_LPS", "FrameHeader", "SeriesGeometry", "plan_geometry"]

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


_GEOMETRY_TOL_MM = 1e-3  # positions closer than this along the normal are the same slice
_TILT_TOL_DEG = 0.05


@dataclass(frozen=True)
class FrameHeader:
    """One 2D image: a single-frame file, or one frame of a multi-frame file."""

    path: str
    frame: int | None  # 0-based frame index in a multi-frame file, None for single-frame files
    sop_uid: str
    instance_number: int
    position: tuple[float, float, float] | None  # ImagePositionPatient, LPS mm
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6 values)
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    slope: float
    intercept: float
    rows: int
    columns: int


@dataclass
class SeriesGeometry:
    """How the frames of a series become a regular (I, J, K) grid."""

    frames: list[FrameHeader]  # acquired frames used, sorted along the normal
    affine: np.ndarray  # voxel -> RAS+ mm
    shape: tuple[int, int, int]  # (I, J, K) = (columns, rows, slices)
    warnings: list[str]
    # for resampled series: per output slice (lower acquired index, weight of the upper one)
    resample: list[tuple[int, float]] | None = None


def _normalise(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _main_stack(frames: list[FrameHeader], warnings: list[str]) -> list[FrameHeader]:
    """The largest group of frames sharing size and orientation (drops localizers etc.)."""

    def key(f: FrameHeader) -> tuple:
        ori = tuple(round(x, 4) for x in f.orientation) if f.orientation else None
        return (f.rows, f.columns, ori)

    groups = Counter(key(f) for f in frames)
    if len(groups) <= 1:
        return frames
    best = groups.most_common(1)[0][0]
    dropped = len(frames) - groups[best]
    warnings.append(
        f"{dropped} image(s) of this series have another size or orientation (e.g. a localizer) "
        "and were left out."
    )
    return [f for f in frames if key(f) == best]


def _pixel_spacing(frames: list[FrameHeader], warnings: list[str]) -> tuple[float, float]:
    """(row spacing, column spacing) in mm of the first frame, with warnings when missing or varying."""
    ps = frames[0].pixel_spacing
    if ps is None:
        warnings.append("No PixelSpacing: assuming 1 mm pixels.")
        return (1.0, 1.0)
    if any(f.pixel_spacing is not None and not np.allclose(f.pixel_spacing, ps, atol=1e-4) for f in frames):
        warnings.append("PixelSpacing differs between slices; using the first slice's value.")
    return ps


def _sort_along_normal(
    frames: list[FrameHeader], normal: np.ndarray, warnings: list[str]
) -> tuple[list[FrameHeader], np.ndarray]:
    """Frames sorted by distance along ``normal``, one per position; and those distances (mm)."""
    dist = np.array([np.dot(f.position, normal) for f in frames])
    # along the normal; images at the same position (within the tolerance) by InstanceNumber
    order = np.lexsort((np.array([f.instance_number for f in frames]), np.round(dist / _GEOMETRY_TOL_MM)))
    frames = [frames[i] for i in order]
    dist = dist[order]

    # several images at one position: several echoes / time points / duplicates
    keep = np.concatenate([[True], np.diff(dist) > _GEOMETRY_TOL_MM])
    if not keep.all():
        n_dup = int((~keep).sum())
        warnings.append(
            f"{n_dup} image(s) share a slice position with another (several echoes, time points or "
            "duplicate files); the first image at each position was kept."
        )
        frames = [f for f, k in zip(frames, keep) if k]
        dist = dist[keep]
    return frames, dist


def _slice_step(
    positions: np.ndarray, dist: np.ndarray, warnings: list[str]
) -> tuple[np.ndarray, list[tuple[int, float]] | None]:
    """The LPS step between slices of a stack of >= 2 slices, and a resampling plan when uneven."""
    n_k = len(dist)
    diffs = np.diff(dist)
    spacing = float(np.median(diffs))
    along = positions[-1] - positions[0]
    tol = max(_GEOMETRY_TOL_MM * 10, 0.01 * spacing)
    if np.max(np.abs(diffs - spacing)) <= tol:
        return along / (n_k - 1), None
    n_out = int(np.floor((dist[-1] - dist[0]) / spacing + 0.5)) + 1
    step = along / (dist[-1] - dist[0]) * spacing
    targets = dist[0] + spacing * np.arange(n_out)
    lower = np.clip(np.searchsorted(dist, targets, side="right") - 1, 0, n_k - 2)
    w = np.clip((targets - dist[lower]) / (dist[lower + 1] - dist[lower]), 0.0, 1.0)
    resample = [(int(a), float(b)) for a, b in zip(lower, w)]
    n_missing = int(np.sum(np.round(diffs / spacing) - 1).clip(0))
    hint = f", probably {n_missing} missing slice(s)" if n_missing else ""
    warnings.append(
        f"Uneven slice spacing ({diffs.min():.3g} to {diffs.max():.3g} mm{hint}): resampled "
        f"onto a regular {spacing:.3g} mm grid of {n_out} slices by linear interpolation "
        "between neighbouring slices."
    )
    return step, resample


def plan_geometry(frames: Sequence[FrameHeader], slice_spacing_hint: float | None = None) -> SeriesGeometry:
    """Sort the frames of one series along the slice normal and build the exact affine.

    Args:
        frames: every frame of one series, in any order.
        slice_spacing_hint: slice spacing in mm from the header (SpacingBetweenSlices, else
            SliceThickness); used only when positions cannot give it (one slice, no positions).
            1 mm when None.
    """
    warnings: list[str] = []
    frames = _main_stack(list(frames), warnings)
    f0 = frames[0]
    row_spacing, col_spacing = _pixel_spacing(frames, warnings)
    thickness_hint = slice_spacing_hint or 1.0

    if any(f.position is None or f.orientation is None for f in frames):
        warnings.append(
            "The images have no patient position/orientation; slices are ordered by instance number "
            "and the orientation is a guess (do not use for measurements across planes)."
        )
        frames.sort(key=lambda f: (f.instance_number, f.path, f.frame or 0))
        lps = np.diag([col_spacing, row_spacing, thickness_hint, 1.0])
        return SeriesGeometry(frames, RAS_FROM_LPS @ lps, (f0.columns, f0.rows, len(frames)), warnings)

    row_cos = _normalise(np.asarray(f0.orientation[:3]))
    col_cos = _normalise(np.asarray(f0.orientation[3:]))
    normal = np.cross(row_cos, col_cos)
    frames, dist = _sort_along_normal(frames, normal, warnings)

    positions = np.array([f.position for f in frames], dtype=np.float64)
    n_k = len(frames)
    resample = None
    if n_k == 1:
        step = normal * thickness_hint
        warnings.append(
            f"Single-slice image: loaded as a volume with 1 slice of {thickness_hint:g} mm "
            "(3D measurements are not meaningful)."
        )
    else:
        step, resample = _slice_step(positions, dist, warnings)
        cos_tilt = abs(float(np.dot(_normalise(step), normal)))
        tilt_deg = float(np.degrees(np.arccos(min(1.0, cos_tilt))))
        if tilt_deg > _TILT_TOL_DEG:
            warnings.append(
                f"Gantry tilt of {tilt_deg:.2f} degrees: slices are sheared, which the affine keeps "
                "exactly (some viewers that ignore shear will show the volume slanted)."
            )
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing
    lps[:3, 1] = col_cos * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    n_out_k = len(resample) if resample is not None else n_k
    return SeriesGeometry(frames, RAS_FROM_LPS @ lps, (f0.columns, f0.rows, n_out_k), warnings, resample)
