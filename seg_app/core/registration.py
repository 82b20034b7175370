"""Rigid registration of one scan onto another (Qt-free, no torch; SimpleITK imported lazily).

Two scans of one patient in different frames of reference -- a follow-up and its baseline
(:mod:`seg_app.core.followup`), or two series of one study (e.g. FLAIR onto T1c) -- are brought onto one
grid. The roles are ITK's:

* **fixed** (the *reference*): the scan whose grid the result is shown on;
* **moving**: the scan resampled onto the fixed grid.

**Convention.** Every result is a :class:`Registration` whose :attr:`Registration.matrix` is a 4x4 matrix
taking **fixed RAS+ mm to moving RAS+ mm**: the anatomy at world point ``p`` of the fixed scan is at
``matrix @ p`` in the moving scan. This is the direction needed to resample the moving scan onto the
fixed grid (:func:`resample_onto`: for each fixed voxel, look up the moving voxel); its inverse
(:attr:`Registration.inverse`) maps moving points (e.g. lesion centroids) into fixed coordinates. The
identity means "scanner coordinates as acquired"; it is only right when both scans share a frame of
reference and the patient did not move.

Ways to get one:

* :func:`register_rigid`: SimpleITK, Mattes mutual information (works across contrasts),
  ``Euler3DTransform`` started from the centres of mass, three resolution levels, a fixed sampling seed
  and one thread, so the result does not depend on the machine. Our RAS+ affines become SimpleITK's LPS
  images here and only here.
* :func:`landmark_registration` / :func:`rigid_from_landmarks`: the least-squares rigid transform
  (Kabsch) of three or more point pairs; :func:`read_landmarks_csv` reads them.
* :func:`identity_registration`: scanner coordinates as acquired.

Each comes with quality numbers to show the user (rotation, shift, box-corner displacement, image
correlation before/after, mutual information) and warnings.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from seg_app.core.dicom_geometry import RAS_FROM_LPS
from seg_app.core.errors import SegAppError
from seg_app.core.volume import Volume

__all__ = [
    "LANDMARK_HINT", "Registration", "RegistrationError", "identity_registration", "landmark_registration",
    "read_landmarks_csv", "register_rigid", "resample_onto", "rigid_from_landmarks", "transform_points",
]

#: What the user can do when the automatic result is off; appended to errors and warnings (``hint=``).
LANDMARK_HINT = "give landmarks (--landmarks)"


class RegistrationError(SegAppError):
    """The two scans could not be registered (or the landmarks given cannot define a rigid transform)."""


# ---- geometry helpers ----------------------------------------------------------------------------
def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 3)`` points (mm) through a 4x4 matrix (e.g. :attr:`Registration.inverse`: moving -> fixed RAS)."""
    pts = np.asarray(points, np.float64)
    return pts @ np.asarray(matrix)[:3, :3].T + np.asarray(matrix)[:3, 3]


def _rotation_deg(matrix: np.ndarray) -> float:
    c = (float(np.trace(matrix[:3, :3])) - 1.0) / 2.0
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def resample_onto(reference: Volume, array: np.ndarray, affine: np.ndarray, transform: np.ndarray | None = None,
                  order: int = 0, cval: float = 0.0) -> np.ndarray:
    """An ``(I, J, K)`` array of the moving scan (voxel->RAS ``affine``) on the grid of ``reference``.

    Args:
        reference: the fixed scan; only its grid (``shape``, ``affine``) is used.
        transform: 4x4 fixed RAS mm -> moving RAS mm (:attr:`Registration.matrix`); ``None``: identity.
        order: 0 nearest neighbour (label maps), 1 trilinear (images).
        cval: value outside the moving scan's field of view.
    """
    t = np.eye(4) if transform is None else np.asarray(transform, np.float64)
    m = np.linalg.inv(np.asarray(affine, np.float64)) @ t @ reference.affine
    return ndimage.affine_transform(np.asarray(array), m[:3, :3], m[:3, 3], output_shape=reference.shape,
                                    order=order, mode="constant", cval=cval, prefilter=False)


def _foreground(image: np.ndarray) -> np.ndarray:
    """Voxels of the body (brain, head): above 10 % of the robust intensity range."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, bool)
    lo, hi = np.percentile(finite[:: max(1, finite.size // 200_000)], [1, 99])
    return image > lo + 0.1 * (hi - lo)


def _correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float | None:
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    if x.size < 10 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


# ---- the result ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Registration:
    """A rigid transform between two scans and how trustworthy it looks.

    Attributes:
        matrix: 4x4, fixed RAS mm -> moving RAS mm (a point of the fixed scan's anatomy is at
            ``matrix @ p`` in the moving scan); for the follow-up: baseline -> follow-up.
        method: ``"mutual information"``, ``"landmarks"`` or ``"identity"`` (scanner coordinates as acquired).
        rotation_deg, translation_mm: size of the transform (angle of the rotation, length of the shift
            of the fixed scan's body centre).
        mean_displacement_mm: mean distance by which the corners of the fixed scan's body bounding box move.
        correlation_before, correlation_after: Pearson correlation of the fixed image and the moving image
            over the fixed scan's body, in scanner coordinates and after registration (same contrast: close
            to 1 when aligned; different contrasts correlate less, or negatively).
        metric_initial, metric_final: Mattes mutual information (lower is better) before and after.
        landmark_rms_mm: residual of the landmarks after the landmark fit.
        warnings: what to check on the images.
    """

    matrix: np.ndarray
    method: str
    rotation_deg: float
    translation_mm: float
    mean_displacement_mm: float
    correlation_before: float | None = None
    correlation_after: float | None = None
    metric_initial: float | None = None
    metric_final: float | None = None
    iterations: int | None = None
    stop_condition: str = ""
    landmark_rms_mm: float | None = None
    n_landmarks: int = 0
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    @property
    def inverse(self) -> np.ndarray:
        """4x4 moving RAS mm -> fixed RAS mm."""
        return np.linalg.inv(self.matrix)

    def as_dict(self, matrix_key: str = "fixed_to_moving_ras") -> dict[str, Any]:
        """Plain JSON-able values; the matrix under ``matrix_key`` (the follow-up: ``baseline_to_followup_ras``)."""
        return {"method": self.method, matrix_key: [[float(v) for v in row] for row in self.matrix],
                "rotation_deg": self.rotation_deg, "translation_mm": self.translation_mm,
                "mean_displacement_mm": self.mean_displacement_mm, "correlation_before": self.correlation_before,
                "correlation_after": self.correlation_after, "metric_initial": self.metric_initial,
                "metric_final": self.metric_final, "iterations": self.iterations, "stop_condition": self.stop_condition,
                "landmark_rms_mm": self.landmark_rms_mm, "n_landmarks": self.n_landmarks,
                "seconds": round(self.seconds, 3), "warnings": list(self.warnings)}


def _hinted(text: str, hint: str) -> str:
    return f"{text}; {hint} if it is off." if hint else f"{text}."


def _quality(matrix: np.ndarray, fixed: Volume, moving: Volume, method: str, channels: tuple[int, int] = (0, 0),
             hint: str = LANDMARK_HINT, **extra: Any) -> Registration:
    """Size of the transform, box-corner displacement and image correlation before/after."""
    fixed_img = np.asarray(fixed.array[channels[0]], np.float32)
    body = _foreground(fixed_img)
    idx = np.argwhere(body) if body.any() else np.array([[0, 0, 0], np.array(fixed.shape) - 1])
    lo, hi = idx.min(0), idx.max(0)
    corners = fixed.voxel_to_world(np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                                             for c in (lo[2], hi[2])], np.float64))
    centre = fixed.voxel_to_world((lo + hi) / 2.0)
    moving_img = np.asarray(moving.array[channels[1]], np.float32)
    before = _correlation(fixed_img, resample_onto(fixed, moving_img, moving.affine, None, order=1), body)
    after = _correlation(fixed_img, resample_onto(fixed, moving_img, moving.affine, matrix, order=1), body)
    warnings = list(extra.pop("warnings", ()))
    if before is not None and after is not None and after < before - 0.02:
        warnings.append(_hinted(f"After registration the images agree less than in scanner coordinates (correlation "
                                f"{after:.2f} vs {before:.2f}): check the alignment", hint))
    elif after is not None and after < 0.5:
        warnings.append(_hinted(f"The registered images correlate poorly ({after:.2f}); fine for different contrasts, "
                                "otherwise check the alignment", hint))
    rot = _rotation_deg(matrix)
    if rot > 30.0:
        warnings.append(f"The registration rotates the moving scan by {rot:.0f} degrees: check the alignment.")
    return Registration(
        matrix=np.asarray(matrix, np.float64), method=method, rotation_deg=rot,
        translation_mm=float(np.linalg.norm(transform_points(matrix, centre[None])[0] - centre)),
        mean_displacement_mm=float(np.linalg.norm(transform_points(matrix, corners) - corners, axis=1).mean()),
        correlation_before=before, correlation_after=after, warnings=tuple(warnings), **extra)


# ---- mutual information (SimpleITK) ------------------------------------------------------------
def _to_sitk(volume: Volume, channel: int = 0):
    """One channel of ``volume`` as a float32 SimpleITK image (LPS physical space, same voxels)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume.array[channel], np.float32).transpose(2, 1, 0)))
    lps = RAS_FROM_LPS @ volume.affine  # the diagonal flip is its own inverse: RAS -> LPS
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    return img


def _matrix_from_sitk(transform, centre_lps: np.ndarray) -> np.ndarray:
    """The 4x4 RAS matrix of a SimpleITK transform (fixed LPS -> moving LPS), read off four points."""
    pts = centre_lps + np.vstack([np.zeros(3), 50.0 * np.eye(3)])
    out = np.array([transform.TransformPoint([float(v) for v in p]) for p in pts])
    lin = ((out[1:] - out[0]) / 50.0).T
    lps = np.eye(4)
    lps[:3, :3] = lin
    lps[:3, 3] = out[0] - lin @ pts[0]
    return RAS_FROM_LPS @ lps @ RAS_FROM_LPS


def register_rigid(fixed: Volume, moving: Volume, *, sampling_percentage: float = 0.05, seed: int = 20240101,
                   threads: int = 1, max_iterations: int = 200, channels: tuple[int, int] = (0, 0),
                   hint: str = LANDMARK_HINT) -> Registration:
    """Rigid registration of ``moving`` onto ``fixed`` by mutual information.

    Mattes mutual information (32 bins) on a random 5 % of the voxels drawn with a fixed ``seed``,
    regular-step gradient descent with scales from physical shifts, shrink factors 4/2/1 with smoothing
    sigmas 2/1/0 voxels, an ``Euler3DTransform`` started from the images' centres of mass. One thread by
    default: two runs then give bit-identical results (more threads sum in varying order, ~1e-13 mm
    apart), and a busy machine does not stall the run on thread synchronisation (~4 s of CPU for a
    2 mm head). Mutual information does not need the two contrasts to match (T1c vs FLAIR), nor the
    frames of reference or grids to be the same.

    Args:
        fixed: the reference scan (e.g. the baseline, or the T1c series of a study).
        moving: the scan to bring onto it (the follow-up, or the FLAIR series).
        channels: channel of ``fixed`` and of ``moving`` to register (first by default).
        hint: what the user can do when it fails or looks off, put into the messages ("" for none).

    Returns:
        the :class:`Registration`; ``matrix`` maps fixed RAS mm to moving RAS mm.

    Raises:
        RegistrationError: SimpleITK missing, or the optimiser failed (e.g. no overlap).
    """
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # the standalone bundle leaves SimpleITK out (size)
        raise RegistrationError("Automatic registration needs the SimpleITK package, which this installation lacks; "
                                f"install it (pip install SimpleITK){' or ' + hint if hint else ''}.") from exc
    t0 = time.perf_counter()
    # every ITK filter of the run (moments, pyramid smoothing, metric) on ``threads`` threads: with one
    # thread the sums run in one order and two runs give bit-identical matrices (with more, they differ
    # by ~1e-13 mm); restored afterwards
    saved_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        return _register_mi(sitk, fixed, moving, sampling_percentage, seed, threads, max_iterations, channels, hint, t0)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(saved_threads)


def _register_mi(sitk: Any, fixed: Volume, moving: Volume, sampling_percentage: float, seed: int, threads: int,
                 max_iterations: int, channels: tuple[int, int], hint: str, t0: float) -> Registration:
    f_img, m_img = _to_sitk(fixed, channels[0]), _to_sitk(moving, channels[1])
    shift_f = float(np.min(sitk.GetArrayViewFromImage(f_img)))
    shift_m = float(np.min(sitk.GetArrayViewFromImage(m_img)))
    f_img, m_img = f_img - shift_f, m_img - shift_m  # moments need non-negative "mass" (CT air at 0)
    try:
        init = sitk.CenteredTransformInitializer(f_img, m_img, sitk.Euler3DTransform(),
                                                 sitk.CenteredTransformInitializerFilter.MOMENTS)
        reg = sitk.ImageRegistrationMethod()
        reg.SetNumberOfThreads(int(threads))
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(float(sampling_percentage), int(seed))
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=int(max_iterations),
                                                     gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([4, 2, 1])
        reg.SetSmoothingSigmasPerLevel([2, 1, 0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetInitialTransform(sitk.Euler3DTransform(), inPlace=False)
        metric_initial = float(reg.MetricEvaluate(f_img, m_img))  # scanner coordinates as acquired
        reg.SetInitialTransform(init, inPlace=False)
        final = reg.Execute(f_img, m_img)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())[-200:]
        raise RegistrationError(f"The moving scan could not be registered onto the fixed scan ({msg})"
                                f"{'; ' + hint if hint else ''}.") from exc
    centre = RAS_FROM_LPS[:3, :3] @ fixed.voxel_to_world((np.array(fixed.shape) - 1) / 2.0)
    matrix = _matrix_from_sitk(final, centre)
    metric_final = float(reg.GetMetricValue())
    warnings = []
    if metric_final > metric_initial:
        warnings.append(_hinted("Mutual information is lower after registration than in scanner coordinates: check "
                                "the alignment", hint))
    return _quality(matrix, fixed, moving, "mutual information", channels, hint, metric_initial=metric_initial,
                    metric_final=metric_final, iterations=int(reg.GetOptimizerIteration()),
                    stop_condition=str(reg.GetOptimizerStopConditionDescription()),
                    seconds=time.perf_counter() - t0, warnings=warnings)


def identity_registration(fixed: Volume, moving: Volume, *, channels: tuple[int, int] = (0, 0),
                          hint: str = LANDMARK_HINT) -> Registration:
    """No registration: the scans are compared in scanner coordinates as acquired."""
    return _quality(np.eye(4), fixed, moving, "identity", channels, hint)


# ---- landmarks ---------------------------------------------------------------------------------------
def rigid_from_landmarks(fixed_pts: Sequence[Sequence[float]], moving_pts: Sequence[Sequence[float]]) -> tuple[np.ndarray, float]:
    """Least-squares rigid transform (Kabsch) with ``matrix @ fixed ~= moving``.

    Args:
        fixed_pts, moving_pts: ``(N, 3)`` corresponding points in mm (``N >= 3``, not all on one line),
            fixed and moving RAS (the follow-up: baseline and follow-up).

    Returns:
        the 4x4 matrix (fixed RAS mm -> moving RAS mm) and the root-mean-square residual in mm.

    Raises:
        RegistrationError: fewer than three pairs, different counts, non-finite or collinear points.
    """
    p = np.asarray(fixed_pts, np.float64)
    q = np.asarray(moving_pts, np.float64)
    if p.ndim != 2 or p.shape[1:] != (3,) or p.shape != q.shape:
        raise RegistrationError(f"Landmarks must be pairs of 3D points; got {p.shape} and {q.shape}.")
    if len(p) < 3:
        raise RegistrationError(f"A rigid transform needs at least 3 landmark pairs; got {len(p)}.")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise RegistrationError("The landmarks contain non-numeric or infinite coordinates.")
    cp, cq = p.mean(0), q.mean(0)
    pc, qc = p - cp, q - cq
    sv = np.linalg.svd(pc, compute_uv=False)
    if sv[1] < 1e-3 * max(sv[0], 1e-9):
        raise RegistrationError("The fixed-scan landmarks lie on one line: a rigid transform needs points spread in "
                                "two directions.")
    u, _, vt = np.linalg.svd(pc.T @ qc)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = cq - rot @ cp
    rms = float(np.sqrt(np.mean(np.sum((transform_points(m, p) - q) ** 2, axis=1))))
    return m, rms


def landmark_registration(fixed: Volume, moving: Volume, fixed_pts: Sequence[Sequence[float]],
                          moving_pts: Sequence[Sequence[float]], *, channels: tuple[int, int] = (0, 0),
                          hint: str = LANDMARK_HINT) -> Registration:
    """The rigid transform defined by landmark pairs (fixed RAS mm, moving RAS mm), with its quality."""
    matrix, rms = rigid_from_landmarks(fixed_pts, moving_pts)
    warnings = [f"The landmarks fit a rigid transform with a residual of {rms:.1f} mm: check the landmark pairs."] \
        if rms > 5.0 else []
    return _quality(matrix, fixed, moving, "landmarks", channels, hint, landmark_rms_mm=rms, n_landmarks=len(fixed_pts),
                    warnings=warnings)


def read_landmarks_csv(path: str | os.PathLike[str], roles: tuple[str, str] = ("baseline", "followup")) -> tuple[np.ndarray, np.ndarray]:
    """Landmark pairs from a CSV file: ``(fixed (N, 3), moving (N, 3))`` in RAS mm.

    Either a header with the columns ``<fixed>_x, <fixed>_y, <fixed>_z, <moving>_x, <moving>_y,
    <moving>_z`` named after ``roles`` (default ``baseline_x ... followup_z``; any order, other columns
    such as a name ignored), or no header and six numbers per row in that order. Rows starting with
    ``#`` are comments.

    Raises:
        RegistrationError: unreadable file, missing columns, non-numeric values, fewer than 3 rows.
    """
    columns = tuple(f"{r}_{a}" for r in roles for a in "xyz")
    p = Path(path)
    try:
        lines = [ln for ln in p.read_text(encoding="utf-8-sig").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistrationError(f"The landmark file {p} cannot be read ({exc}).") from exc
    rows = list(csv.reader(lines))
    if not rows:
        raise RegistrationError(f"The landmark file {p.name} has no landmark rows.")
    head = [c.strip().lower() for c in rows[0]]
    if all(c in head for c in columns):
        cols, body = [head.index(c) for c in columns], rows[1:]
    elif any(c and not _is_number(c) for c in head):
        raise RegistrationError(f"The landmark file {p.name} needs the columns {', '.join(columns)} "
                                "(RAS mm), or six numbers per row.")
    else:
        cols, body = list(range(6)), rows
    pts = []
    for n, row in enumerate(body, start=2 if body is not rows else 1):
        try:
            pts.append([float(row[c]) for c in cols])
        except (IndexError, ValueError) as exc:
            raise RegistrationError(f"The landmark file {p.name} has a bad row {n}: six numbers (RAS mm) expected.") from exc
    arr = np.array(pts, np.float64).reshape(-1, 6)
    if len(arr) < 3:
        raise RegistrationError(f"The landmark file {p.name} has {len(arr)} pair(s); a rigid transform needs at least 3.")
    return arr[:, :3], arr[:, 3:]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
