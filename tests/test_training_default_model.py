"""The bundled default model: self-describing, BraTS sub-regions, finds the sample tumour, and leaves a
healthy brain alone (the sample scan and the healthy brain come from outside the training generator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seg_app.core.io import load_scan
from seg_app.core.regions import composite_regions, region_mask
from seg_app.core.spec import default_model_path, load_checkpoint
from seg_app.core.volume import Volume

SAMPLES = Path(__file__).resolve().parent.parent / "sample_scans"


@pytest.fixture(scope="module")
def segmenter():
    from seg_app.core.inference import Segmenter

    return Segmenter(device="cpu")


def test_default_model_is_self_describing() -> None:
    ck = load_checkpoint(default_model_path())
    spec = ck.spec
    assert ck.training_state is None
    names = {lab.value: lab.name for lab in spec.labels}
    assert names == {0: "background", 1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}
    assert composite_regions(names) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    assert spec.normalization.scheme == "percentile"
    assert "seg-train synth" in " ".join(spec.training["reproduce"])
    gen = spec.metrics["generalisation"]  # the independent benchmark's result travels with the model
    assert {"t1c_1mm", "t2_like", "flair_like", "skull_on", "thick_slices", "healthy"} <= set(gen["per_domain"])
    assert default_model_path().stat().st_size < 30 * 2**20


def _ras(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    ornt = nib.orientations.io_orientation(vol.affine)
    arr = nib.orientations.apply_orientation(vol.array[0], ornt)
    return arr, vol.affine @ nib.orientations.inv_ornt_aff(ornt, vol.shape)


@pytest.mark.parametrize("scan", ["brain_tumour_mri.nii.gz", "brain_tumour_mri_dicom"])
def test_default_model_finds_the_sample_tumour(scan: str, segmenter) -> None:
    image = load_scan(SAMPLES / scan)
    truth = load_scan(SAMPLES / "brain_tumour_mri_label.nii.gz")
    pred_vol = segmenter.segment(image, return_probabilities=False).labels
    # NIfTI and DICOM store the same voxels in different array orders: compare both in RAS order
    pred, pred_aff = _ras(pred_vol)
    t, t_aff = _ras(truth)
    assert np.allclose(pred_aff, t_aff, atol=1e-3)
    # tumour core (what T1c shows) and whole tumour. v2.3 measured TC 0.88, WT 0.52 (v2.2: 0.90, 0.58): on a T1c
    # image the oedema is faint, and the model draws a wider oedema rim than the truth (29.2 mL whole tumour for
    # 11.4 mL true; v2.1: WT 0.72). The core, which this contrast shows, must stay right; the whole tumour must still overlap well.
    for region, least in (((1, 3), 0.8), ((1, 2, 3), 0.5)):
        p, g = region_mask(pred, region), region_mask(t, region)
        dice = 2 * (p & g).sum() / (p.sum() + g.sum())
        assert dice > least, (region, dice)


def test_default_model_leaves_a_healthy_brain_alone(segmenter) -> None:
    """The real MNI152 1 mm T1 template (no lesion) with scanner-like noise and bias: under 0.5 mL marked."""
    from nilearn.datasets import load_mni152_template

    t = load_mni152_template(resolution=1)
    rng = np.random.default_rng(0)
    a = np.asarray(t.get_fdata(), np.float32) * 1000
    ii = np.linspace(-1, 1, a.shape[0], dtype=np.float32)[:, None, None]
    a = a * (1 + 0.15 * ii) + rng.normal(0, 10, a.shape).astype(np.float32)
    res = segmenter.segment(Volume(np.clip(a, 0, None)[None], np.asarray(t.affine, float), modality="MR"), return_probabilities=False)
    marked_ml = float((res.labels.array[0] > 0).sum()) * res.labels.voxel_volume_ml
    assert marked_ml <= 0.5, marked_ml
