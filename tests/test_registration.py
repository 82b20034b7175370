"""The generic rigid registration (:mod:`seg_app.core.registration`): a moving series in another frame of
reference and another contrast (a FLAIR-like inversion of a T1-like brain) onto a reference series.

The brain is the MNI152 template (2 mm, nilearn, offline); the moving series is the same brain moved by
a known rigid transform, resampled (trilinear) onto its own grid and contrast-inverted.
"""

from __future__ import annotations


import numpy as np
import pytest
from scipy import ndimage

from seg_app.core import followup
from seg_app.core.registration import (
    Registration, RegistrationError, landmark_registration, read_landmarks_csv, register_rigid, resample_onto,
    transform_points,
)
from seg_app.core.volume import Volume
from transforms import rigid_matrix as _rigid


#: reference RAS -> moving RAS (the documented convention of Registration.matrix)
TRUE = _rigid(6.0, (0.2, 0.4, 1.0), (3.0, -4.0, 2.0))


def _world(shape, affine) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)


@pytest.fixture(scope="module")
def pair() -> tuple[Volume, Volume]:
    """A T1-like reference (MNI152, 2 mm, RAS grid) and a FLAIR-like moving series of the same brain moved by
    :data:`TRUE`, with inverted contrast, on another grid (flipped axes, other spacing and origin)."""
    from nilearn.datasets import load_mni152_template

    t = load_mni152_template(resolution=2)
    brain, ref_aff = np.asarray(t.get_fdata(), np.float32), np.asarray(t.affine, np.float64)
    ref = Volume(brain[None], ref_aff, modality="MR", series_description="T1")
    mov_aff = np.diag([-2.5, -2.5, 3.0, 1.0])
    mov_aff[:3, 3] = [95.0, 110.0, -80.0]
    mov_shape = (76, 92, 62)
    anatomy = transform_points(np.linalg.inv(TRUE), _world(mov_shape, mov_aff).reshape(-1, 3))
    ijk = transform_points(np.linalg.inv(ref_aff), anatomy).T
    moved = ndimage.map_coordinates(brain, ijk, order=1, cval=0.0).reshape(mov_shape)
    flair = (1.2 - moved).astype(np.float32)  # inverted contrast: the same anatomy, other intensities
    return ref, Volume(flair[None], mov_aff, modality="MR", series_description="FLAIR")


def _error_mm(matrix: np.ndarray, ref: Volume) -> float:
    pts = ref.voxel_to_world(np.argwhere(np.asarray(ref.array[0]) > 0.2)[::50].astype(float))
    return float(np.linalg.norm(transform_points(matrix, pts) - transform_points(TRUE, pts), axis=1).mean())


def test_mutual_information_across_contrasts_and_frames(pair):
    ref, mov = pair
    reg = register_rigid(ref, mov, hint="")
    assert isinstance(reg, Registration) and reg.method == "mutual information"
    assert _error_mm(reg.matrix, ref) < 1.0
    assert reg.rotation_deg == pytest.approx(6.0, abs=0.5)
    assert reg.metric_final < reg.metric_initial
    # inverted contrast: the registered images anti-correlate more strongly than in scanner coordinates
    assert reg.correlation_after < reg.correlation_before
    assert not any("--landmarks" in w for w in reg.warnings)  # hint="" keeps the follow-up's advice out
    assert "fixed_to_moving_ras" in reg.as_dict()


def test_landmarks_with_roles_and_resample_onto(pair, tmp_path):
    ref, mov = pair
    p = np.array([[0, 0, 0], [40, 0, 0], [0, 50, 0], [0, 0, 30], [20, -30, 10]], float)
    q = transform_points(TRUE, p)
    csv = tmp_path / "lm.csv"
    csv.write_text("name,moving_x,moving_y,moving_z,reference_x,reference_y,reference_z\n" +
                   "".join(f"p{i},{b[0]},{b[1]},{b[2]},{a[0]},{a[1]},{a[2]}\n" for i, (a, b) in enumerate(zip(p, q))))
    a, b = read_landmarks_csv(csv, roles=("reference", "moving"))
    np.testing.assert_allclose(a, p) and np.testing.assert_allclose(b, q)
    with pytest.raises(RegistrationError, match="baseline_x"):
        read_landmarks_csv(csv)  # default roles (baseline/followup): the columns are missing
    reg = landmark_registration(ref, mov, a, b)
    assert reg.landmark_rms_mm < 1e-6 and _error_mm(reg.matrix, ref) < 1e-6
    # the moving image on the reference grid matches the reference's anatomy (inverted contrast)
    on_ref = resample_onto(ref, np.asarray(mov.array[0]), mov.affine, reg.matrix, order=1, cval=np.nan)
    inside = np.isfinite(on_ref) & (np.asarray(ref.array[0]) > 0.2)
    assert inside.sum() > 1000
    assert np.corrcoef(on_ref[inside], np.asarray(ref.array[0])[inside])[0, 1] < -0.9  # two trilinear resamplings
    # the follow-up's old names are the same functions / an alias on the same grid
    assert followup.register_rigid is register_rigid and followup.RegistrationError is RegistrationError
    np.testing.assert_array_equal(followup.resample_onto_baseline(np.asarray(mov.array[0]), mov.affine, ref, reg.matrix),
                                  resample_onto(ref, np.asarray(mov.array[0]), mov.affine, reg.matrix))
