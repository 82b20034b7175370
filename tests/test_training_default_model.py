"""The bundled default model loads, describes itself, and finds the lesion in the sample scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seg_app.core.io import load_scan
from seg_app.core.spec import default_model_path, load_checkpoint

SAMPLES = Path(__file__).resolve().parent.parent / "sample_scans"


def test_default_model_is_self_describing() -> None:
    ck = load_checkpoint(default_model_path())
    spec = ck.spec
    assert ck.training_state is None
    assert [lab.name for lab in spec.labels] == ["background", "tumour"]
    assert spec.metrics["test_dice_mean"] >= 0.85
    assert "seg-train synth" in " ".join(spec.training["reproduce"])
    assert default_model_path().stat().st_size < 10 * 2**20


@pytest.mark.parametrize("scan", ["brain_tumour_mri.nii.gz", "brain_tumour_mri_dicom"])
def test_default_model_finds_the_sample_lesion(scan: str) -> None:
    from seg_app.core.inference import Segmenter

    image = load_scan(SAMPLES / scan)
    truth = load_scan(SAMPLES / "brain_tumour_mri_label.nii.gz")
    if scan.endswith("dicom"):  # same voxels, the DICOM reader orders slices along the normal
        assert np.allclose(image.affine[:3, 3], truth.voxel_to_world([0, 0, truth.shape[2] - 1]), atol=1e-3)
        t = truth.array[0][..., ::-1]
    else:
        t = truth.array[0]
    pred = Segmenter(device="cpu").segment(image, return_probabilities=False).labels.array[0]
    t = t > 0
    p = pred == 1
    dice = 2 * (p & t).sum() / (p.sum() + t.sum())
    assert dice > 0.7, dice
