"""The independent generalisation benchmark: case generator and metric functions.

Cases are generated on a 2 mm grid (``voxel_mm=2``: same lesions and pose, 8x fewer voxels) to keep
the whole file well under a minute; the template anatomy is loaded once per session.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import nilearn  # noqa: E402,F401  (the test extra installs it; the benchmark needs the MNI template)

import bench_generalisation as bg  # noqa: E402
import generalisation_cases as gc  # noqa: E402

from seg_app.core.spec import LabelSpec  # noqa: E402

VOX = 2.0
_CACHE: dict[tuple[str, int], gc.BenchCase] = {}


def case(domain: str, index: int = 0) -> gc.BenchCase:
    key = (domain, index)
    if key not in _CACHE:
        _CACHE[key] = gc.make_case(domain, index, voxel_mm=VOX)
    return _CACHE[key]


# ---- generator ---------------------------------------------------------------------------------
def test_domains_and_regions():
    assert gc.DOMAINS == ("t1c_1mm", "thick_slices", "skull_on", "small_foci", "t2_like", "flair_like", "low_snr", "healthy")
    for d in ("t1c_1mm", "thick_slices", "skull_on", "small_foci", "low_snr"):
        assert gc.REGION_FOR_DICE[d] == "TC"
    assert gc.REGION_FOR_DICE["t2_like"] == gc.REGION_FOR_DICE["flair_like"] == "WT"
    assert gc.REGION_FOR_DICE["healthy"] is None
    with pytest.raises(ValueError):
        gc.make_case("nope", 0)


def test_make_case_is_deterministic():
    a = case("small_foci", 0)
    b = gc.make_case("small_foci", 0, voxel_mm=VOX)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.affine, b.affine)
    assert a.lesions == b.lesions
    c = case("small_foci", 1)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)
    assert a.lesions != c.lesions
    assert gc._plan("small_foci", 0, gc._rng("small_foci", 0, 7)) != gc._plan("small_foci", 0, gc._rng("small_foci", 0, 2026))


@pytest.mark.parametrize("domain", ["t1c_1mm", "small_foci", "t2_like", "thick_slices"])
def test_case_structure(domain):
    c = case(domain)
    assert c.image.dtype == np.float32 and c.image.ndim == 3
    assert c.labels.dtype == np.uint8 and c.labels.shape == c.image.shape
    assert c.affine.shape == (4, 4) and c.affine.dtype == np.float64
    assert set(np.unique(c.labels).tolist()) <= {0, 1, 2, 3}
    assert np.isfinite(c.image).all() and c.image.min() >= 0
    assert c.name == f"{domain}_000" and c.domain == domain
    assert c.region_for_dice == gc.REGION_FOR_DICE[domain]
    # lesions lie inside the brain; the core exists and has enhancement
    assert not (c.labels > 0)[~c.brain_mask].any()
    assert (c.labels == 3).any() and np.isin(c.labels, (1, 3)).any()
    assert c.lesions and all(les["volume_ml"] > 0 for les in c.lesions)
    for les in c.lesions:
        assert {"centre_mm", "centre_vox", "volume_ml", "wt_volume_ml", "location"} <= set(les)
    # the listed core volumes add up to the labelled core (same grid up to interpolation)
    core_ml = np.isin(c.labels, (1, 3)).sum() * c.voxel_volume_ml
    assert core_ml == pytest.approx(sum(les["volume_ml"] for les in c.lesions), rel=0.35)


def test_single_lesion_sizes_and_small_foci():
    c = case("t1c_1mm")
    assert len(c.lesions) == 1 and 5.0 <= c.lesions[0]["volume_ml"] <= 85.0
    f = case("small_foci")
    assert 2 <= len(f.lesions) <= 5
    assert all(0.15 <= les["volume_ml"] <= 3.8 for les in f.lesions)  # 0.2-3 mL x head-size scaling


def test_healthy_has_no_label_and_cycles_variants():
    h = case("healthy", 0)
    assert h.region_for_dice is None and h.lesions == []
    assert not h.labels.any()
    assert h.meta["variant"] == gc.HEALTHY_VARIANTS[0]
    assert gc._plan("healthy", 3, np.random.default_rng(0))["contrast"] == "flair"
    assert gc._plan("healthy", 1, np.random.default_rng(0))["skull"] is True


def test_contrasts():
    t1 = case("t1c_1mm")
    wm = t1.image[t1.wm_mask].mean()
    assert t1.image[t1.labels == 3].mean() > 1.1 * wm  # enhancing tumour brighter than WM on T1c
    assert t1.image[t1.labels == 1].mean() < wm  # necrosis dark
    t2 = case("t2_like")
    wm2 = t2.image[t2.wm_mask].mean()
    assert t2.image[t2.labels == 2].mean() > 1.3 * wm2  # oedema bright on T2
    assert t2.image[t2.labels == 1].mean() > wm2
    fl = case("flair_like")
    assert fl.image[fl.labels == 2].mean() > 1.3 * fl.image[fl.wm_mask].mean()


def test_thick_slices_spacing():
    c = case("thick_slices")
    sp = sorted(c.spacing)
    assert sp[-1] >= 5.0 and sp[-1] <= 6.0 + 1e-6
    assert sp[0] == pytest.approx(VOX)
    assert c.meta["thick_slices"]["mm"] == pytest.approx(sp[-1])


def test_skull_on_has_signal_outside_the_brain():
    c = case("skull_on")
    outside = c.image[~c.brain_mask]
    assert (outside > 0).mean() > 0.9  # background noise and head tissue everywhere
    # bright scalp fat well above the noise floor, somewhere outside the brain
    assert np.percentile(outside, 99) > 0.8 * c.image[c.wm_mask].mean()
    # skull-stripped domains are exactly zero outside the brain
    t1 = case("t1c_1mm")
    assert not t1.image[~t1.brain_mask].any()


# ---- metrics ---------------------------------------------------------------------------------
def test_dice_conventions():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    assert bg.dice(a, b) == 1.0  # both empty
    b[0, 0, :2] = True
    assert bg.dice(a, b) == 0.0  # empty prediction
    assert bg.dice(b, a) == 0.0  # empty ground truth
    a[0, 0, 1:3] = True
    assert bg.dice(a, b) == pytest.approx(2 * 1 / 4)
    assert bg.dice(b, b) == 1.0


def test_lesion_metrics_hand_made():
    gt = np.zeros((30, 30, 30), bool)
    gt[2:12, 2:12, 2:12] = True  # 1000 voxels = 1 mL at 1 mm
    gt[20:28, 20:28, 20:28] = True  # 512 voxels: 0.512 mL
    gt[0, 29, 29] = True  # 1 voxel: below 0.5 mL, not counted
    pred = np.zeros_like(gt)
    pred[3:10, 3:10, 3:10] = True  # 343 voxels, inside lesion 1
    pred[15:22, 0:7, 20:27] = True  # 343 voxels = 0.343 mL, touches nothing
    pred[25, 0, 0] = True  # 1 voxel FP, below the 0.2 mL precision threshold
    m = bg.lesion_metrics(pred, gt, voxel_ml=0.001)
    assert m["n_gt"] == 2 and m["n_detected"] == 1 and m["sensitivity"] == 0.5
    assert m["n_pred"] == 2 and m["n_pred_tp"] == 1 and m["precision"] == 0.5
    assert m["fp_ml"] == pytest.approx(0.344)  # the 343-voxel and the 1-voxel false components
    assert m["missed_lesion_ml"] == [0.512]
    # empty prediction: nothing detected, precision undefined
    e = bg.lesion_metrics(np.zeros_like(gt), gt, 0.001)
    assert e["sensitivity"] == 0.0 and e["precision"] is None and e["fp_ml"] == 0.0
    # empty ground truth: sensitivity undefined, every prediction false
    h = bg.lesion_metrics(pred, np.zeros_like(gt), 0.001)
    assert h["sensitivity"] is None and h["precision"] == 0.0 and h["fp_ml"] == pytest.approx(0.343 + 0.343 + 0.001)
    # diagonal neighbours are one lesion (26-connectivity)
    d = np.zeros((5, 5, 5), bool)
    d[1, 1, 1] = d[2, 2, 2] = True
    assert bg.lesion_metrics(d, d, 1.0)["n_gt"] == 1


def test_region_mapping():
    binary = [LabelSpec(0, "background"), LabelSpec(1, "tumour")]
    assert bg.region_label_values(binary) == {"TC": (1,), "WT": (1,), "ET": None}
    brats = [LabelSpec(0, "background"), LabelSpec(1, "necrotic core"), LabelSpec(2, "oedema"), LabelSpec(3, "enhancing tumour")]
    assert bg.region_label_values(brats) == {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)}
    unnamed = [LabelSpec(0, "bg"), LabelSpec(1, "a"), LabelSpec(2, "b"), LabelSpec(3, "c")]
    assert bg.region_label_values(unnamed) == {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)}
    us = [LabelSpec(0, "background"), LabelSpec(1, "non-enhancing core"), LabelSpec(2, "edema"), LabelSpec(3, "enhancing")]
    assert bg.region_label_values(us)["ET"] == (3,) and bg.region_label_values(us)["TC"] == (1, 3)
    two = [LabelSpec(0, "background"), LabelSpec(1, "tumour"), LabelSpec(2, "oedema")]
    assert bg.region_label_values(two) == {"TC": (1,), "WT": (1, 2), "ET": None}
    lab = np.array([0, 1, 2, 3], np.uint8)
    assert bg.region_mask(lab, (1, 3)).tolist() == [False, True, False, True]
    assert not bg.region_mask(lab, None).any()


def test_score_case_perfect_and_binary_prediction():
    c = case("t2_like")
    brats = [LabelSpec(0, "background"), LabelSpec(1, "necrotic"), LabelSpec(2, "oedema"), LabelSpec(3, "enhancing")]
    s = bg.score_case(c, c.labels.copy(), brats)
    assert s["dice"] == 1.0 and s["fp_ml"] == 0.0 and s["lesion"]["sensitivity"] == 1.0
    assert s["dice_ET"] == 1.0
    binary = [LabelSpec(0, "background"), LabelSpec(1, "tumour")]
    s2 = bg.score_case(c, (c.labels > 0).astype(np.uint8), binary)  # binary model: foreground = WT
    assert s2["dice"] == 1.0 and "dice_ET" not in s2
    h = case("healthy", 0)
    pred = np.zeros(h.labels.shape, np.uint8)
    pred[10:12, 10:12, 10:12] = 1
    s3 = bg.score_case(h, pred, binary)
    assert s3["dice"] is None and s3["fp_ml"] == pytest.approx(8 * h.voxel_volume_ml)


def test_montage_png(tmp_path):
    import matplotlib  # noqa: F401
    c = case("thick_slices")
    out = tmp_path / "m.png"
    bg.save_montage(out, c.image, c.affine, np.isin(c.labels, (1, 3)), c.labels == 3, "test", gt_outer=c.labels > 0)
    assert out.stat().st_size > 1000


def test_crop_case_keeps_geometry():
    c = case("small_foci")
    k = gc.crop_case(c, 20)
    assert k.image.shape == (20, 20, 20) and k.labels.shape == (20, 20, 20)
    lo = k.meta["crop"][:3]
    assert np.array_equal(k.image, c.image[lo[0] : lo[0] + 20, lo[1] : lo[1] + 20, lo[2] : lo[2] + 20])
    # voxel (0, 0, 0) of the crop is voxel ``lo`` of the case, in the same place in the patient
    assert np.allclose(k.affine @ [0, 0, 0, 1], c.affine @ [*lo, 1])
    assert k.lesions and k.labels.any()


def test_bench_end_to_end_with_bundled_model(tmp_path, monkeypatch):
    """Two small cropped cases through the real Segmenter (bundled model) and the whole report."""
    from seg_app.core.spec import default_model_path

    assert Path(default_model_path()).is_file(), "the bundled model ships with the repository"

    def small_case(domain, index, seed=2026, voxel_mm=1.0):  # one model window per case
        return gc.crop_case(case(domain, index), 40)

    monkeypatch.setattr(bg, "make_case", small_case)
    out = tmp_path / "r.json"
    png = tmp_path / "png"
    rc = bg.main(["--domains", "small_foci,healthy", "--cases", "1", "--backend", "torch", "--no-package-mr", "--json", str(out), "--png", str(png)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data["per_domain"]) == {"small_foci", "healthy"}
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["torch_threads"] >= 1
    assert set(data["summary"]["targets"]) == set(bg.TARGETS)
    assert all("seconds_segment" in c and c["dice"] is None or 0 <= c["dice"] <= 1 for c in data["cases"])
    assert sorted(p.name for p in png.iterdir()) == ["healthy_000.png", "small_foci_000.png"]
