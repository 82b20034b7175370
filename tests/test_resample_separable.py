"""The fast axis-by-axis resampling back to the source grid equals MONAI's SpatialResample."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from seg_app.core.grid import _resample_separable, _separable_map
from seg_app.core.preprocess import resample_to_reference
from seg_app.core.volume import Volume


@pytest.mark.parametrize("seed", range(8))
def test_separable_resampling_matches_monai(seed):
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((2, 17, 13, 11)).astype(np.float32)
    perm = np.eye(3)[rng.permutation(3)] * rng.choice([-1, 1], 3)
    src_aff = np.eye(4)
    src_aff[:3, :3] = perm @ np.diag(rng.uniform(1.5, 3.0, 3))
    src_aff[:3, 3] = rng.uniform(-20, 20, 3)
    dst_aff = np.eye(4)
    dst_aff[:3, :3] = np.diag(rng.uniform(0.7, 1.3, 3) * rng.choice([-1, 1], 3))
    dst_aff[:3, 3] = rng.uniform(-10, 10, 3)
    shape = (31, 27, 23)
    expected = resample_to_reference(MetaTensor(torch.from_numpy(src), affine=torch.from_numpy(src_aff)),
                                     Volume(np.zeros((1, *shape), np.uint8), dst_aff)).numpy()
    m, axes = _separable_map(dst_aff, src_aff)
    np.testing.assert_allclose(_resample_separable(src, m, axes, shape), expected, atol=1e-4)


def test_rotated_grids_are_not_separable():
    rot = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    rot[:2, :2] = [[c, -s], [s, c]]
    assert _separable_map(np.eye(4), rot) is None
