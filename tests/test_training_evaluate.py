"""seg-train evaluate: Dice/HD95/lesion detection on perfect and crafted predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_app.core import metrics
from seg_app.core.io import load_scan
from training import evaluate as ev
from training.synth import SynthOptions, write_dataset


def test_crafted_case_metrics() -> None:
    truth = np.zeros((20, 20, 20), np.int64)
    truth[2:6, 2:6, 2:6] = 1  # 64 voxels
    truth[14:16, 14:16, 14:16] = 1  # second lesion, 8 voxels, missed
    pred = np.zeros_like(truth)
    pred[3:7, 2:6, 2:6] = 1  # shifted by one voxel: 48 overlap
    pred[10, 0, 0] = 1  # false-positive lesion
    (row,) = ev.case_metrics(pred, truth, (1.0, 1.0, 2.0), {1: "tumour"}, 0.002)
    assert row["dice"] == pytest.approx(2 * 48 / (65 + 72))
    assert row["tp"] == 1 and row["fn"] == 1 and row["fp"] == 1
    assert row["gt_lesions"] == 2 and row["pred_lesions"] == 2
    assert row["gt_ml"] == pytest.approx(72 * 0.002)
    assert np.isfinite(row["hd95_mm"]) and row["hd95_mm"] > 0


def test_empty_cases() -> None:
    z = np.zeros((8, 8, 8), np.int64)
    (both,) = ev.case_metrics(z, z, (1, 1, 1), {1: "tumour"}, 0.001)
    assert both["dice"] == 1.0 and both["hd95_mm"] == 0.0 and both["fp"] == 0
    assert all(both[k] == 0.0 for k in ev.HD95_KEYS)
    p = z.copy()
    p[1, 1, 1] = 1
    (fp,) = ev.case_metrics(p, z, (1, 1, 1), {1: "tumour"}, 0.001)
    assert fp["dice"] == 0.0 and np.isnan(fp["hd95_mm"]) and fp["fp"] == 1
    # BraTS: an empty truth with a prediction (or the reverse) is scored, not dropped
    assert np.isnan(fp["hd95_pooled_mm"]) and np.isnan(fp["hd95_directed_max_mm"])
    assert fp["hd95_pooled_brats_mm"] == fp["hd95_directed_max_brats_mm"] == 373.13
    (missed,) = ev.case_metrics(z, p, (1, 1, 1), {1: "tumour"}, 0.001)
    assert missed["dice"] == 0.0 and missed["fn"] == 1 and missed["hd95_pooled_brats_mm"] == 373.13


# ---- HD95: surface voxels and the directed-max / pooled 95th percentiles ----------------------
def test_surface_voxels_follow_medpy() -> None:
    """Surface = mask minus its erosion by the 6-neighbour cross; the array border counts as outside."""
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    assert metrics._surface(cube).sum() == 26  # only the centre has all 6 face neighbours inside
    full = np.ones((3, 3, 3), bool)
    assert metrics._surface(full).sum() == 26  # touching the array border: border voxels are surface


def test_hd95_of_single_voxels_uses_the_spacing() -> None:
    a = np.zeros((9, 9, 12), bool)
    b = a.copy()
    a[5, 5, 5] = True
    b[5, 5, 8] = True
    h = ev.hd95(a, b, (1.0, 1.0, 2.0))  # 3 voxels apart along k, 2 mm each
    assert h["hd95_directed_max_mm"] == h["hd95_pooled_mm"] == pytest.approx(6.0)


def test_hd95_directed_and_pooled_by_hand() -> None:
    """truth = voxels A and B 10 mm apart, prediction = A.

    pred -> truth: [0]; truth -> pred: [0, 10]. Directed max = max(P95[0], P95[0, 10]) = 9.5 mm;
    pooled = P95[0, 0, 10] = 9.0 mm (numpy's linear interpolation, as medpy and MONAI).
    """
    truth = np.zeros((10, 5, 5), bool)
    truth[2, 2, 2] = truth[7, 2, 2] = True
    pred = np.zeros_like(truth)
    pred[2, 2, 2] = True
    h = ev.hd95(pred, truth, (2.0, 1.0, 1.0))
    assert h["hd95_directed_max_mm"] == pytest.approx(9.5)
    assert h["hd95_pooled_mm"] == pytest.approx(9.0)
    assert ev.hd95(truth, pred, (2.0, 1.0, 1.0)) == h  # symmetric


def test_a_missed_small_lesion_moves_only_the_directed_hd95() -> None:
    """Truth: a 5^3 cube (98 surface voxels) and a missed 2^3 cube 10-11 mm away; prediction: the big cube.

    truth -> pred: 98 zeros and 8 distances (4 x 10 mm, 4 x 11 mm): 7.5 % of them are > 0, so its 95th
    percentile is 10 mm; pred -> truth: 98 zeros. Pooled: 196 zeros + 8 distances (3.9 %): 0 mm.
    """
    truth = np.zeros((20, 8, 8), np.int64)
    truth[2:7, 2:7, 2:7] = 1
    truth[16:18, 2:4, 2:4] = 1
    pred = np.zeros_like(truth)
    pred[2:7, 2:7, 2:7] = 1
    (row,) = ev.case_metrics(pred, truth, (1.0, 1.0, 1.0), {1: "tumour"}, 0.001)
    assert row["hd95_directed_max_mm"] == pytest.approx(10.0) and row["hd95_mm"] == row["hd95_directed_max_mm"]
    assert row["hd95_pooled_mm"] == 0.0
    assert row["fn"] == 1


def _brute_force(a: np.ndarray, b: np.ndarray, spacing) -> tuple[float, float]:
    """Directed-max and pooled HD95 from explicit pairwise distances between surface voxel centres."""
    from scipy.spatial.distance import cdist

    def surface(m):
        pm = np.pad(m, 1)
        inner = np.ones_like(m)
        for axis in range(3):
            for shift in (-1, 1):
                inner &= np.roll(pm, shift, axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    d = cdist(surface(a), surface(b))
    ab, ba = d.min(axis=1), d.min(axis=0)
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), float(np.percentile(np.r_[ab, ba], 95))


@pytest.mark.parametrize("seed", range(6))
def test_hd95_matches_brute_force_and_monai(seed: int) -> None:
    from monai.metrics import compute_hausdorff_distance
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (14, 12, 9)
    spacing = tuple(float(x) for x in rng.uniform(0.5, 3.0, 3))
    a = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.52
    b = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.52
    a[0, 0, 0] = b[-1, -1, -1] = True  # never empty; touches the array border
    h = ev.hd95(a, b, spacing)
    directed, pooled = _brute_force(a, b, spacing)
    assert h["hd95_directed_max_mm"] == pytest.approx(directed, rel=1e-9)
    assert h["hd95_pooled_mm"] == pytest.approx(pooled, rel=1e-9)
    pt = torch.from_numpy(np.stack([~a, a])[None].astype(np.float32))
    tt = torch.from_numpy(np.stack([~b, b])[None].astype(np.float32))
    monai = float(compute_hausdorff_distance(pt, tt, include_background=False, percentile=95, spacing=list(spacing))[0, 0])
    assert h["hd95_directed_max_mm"] == pytest.approx(monai, rel=1e-5)


def test_summary_keeps_penalised_cases_apart() -> None:
    truth = np.zeros((20, 8, 8), np.int64)
    truth[2:7, 2:7, 2:7] = 1
    truth[16:18, 2:4, 2:4] = 1
    pred = np.zeros_like(truth)
    pred[2:7, 2:7, 2:7] = 1
    empty = np.zeros_like(truth)
    rows = []
    for case, (p, t) in {"hit": (pred, truth), "missed": (empty, truth), "clean": (empty, empty)}.items():
        rows += [{"case": case, **r} for r in ev.case_metrics(p, t, (1.0, 1.0, 1.0), {1: "tumour"}, 0.001)]
    s = ev.summarize(rows)
    assert s["n_cases"] == 3 and s["hd95_n_both_nonempty"] == 1
    assert s["hd95_n_penalised"] == 1 and s["hd95_n_both_empty"] == 1
    # plain means: only the case where both are non-empty
    assert s["hd95_directed_max_mm_mean"] == pytest.approx(10.0) and s["hd95_pooled_mm_mean"] == 0.0
    # BraTS means: every case, 373.13 mm for the missed one and 0 for the clean one
    assert s["hd95_pooled_brats_mm_mean"] == pytest.approx((0.0 + 373.13 + 0.0) / 3)
    assert s["hd95_directed_max_brats_mm_mean"] == pytest.approx((10.0 + 373.13 + 0.0) / 3)
    assert s["hd95_pooled_brats_mm_median"] == 0.0
    # legacy keys unchanged: the clean case counts as 0, the missed one is left out
    assert s["hd95_mm_mean"] == pytest.approx(5.0) and s["hd95_n_undefined"] == 1
    assert s["dice_mean"] == pytest.approx((2 * 125 / (125 + 133) + 0.0 + 1.0) / 3)  # hit, missed, clean


def test_brats_composite_regions() -> None:
    """WT / TC / ET rows: a prediction that swaps core and oedema is perfect on WT only."""
    from seg_app.core.regions import composite_regions

    names = {1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}
    regions = composite_regions(names)
    assert regions == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    truth = np.zeros((12, 12, 12), np.int64)
    truth[2:10, 2:10, 2:10] = 2  # oedema shell: 512 - 216 = 296 voxels
    truth[3:9, 3:9, 3:9] = 1  # core: 216 - 8
    truth[5:7, 5:7, 5:7] = 3  # enhancing: 8
    pred = truth.copy()
    pred[truth == 1], pred[truth == 2] = 2, 1
    rows = ev.case_metrics(pred, truth, (1.0, 1.0, 1.0), names, 0.001, regions)
    by = {(r["kind"], r["label"]): r for r in rows}
    assert [r["label_name"] for r in rows] == ["necrotic core", "oedema", "enhancing tumour", "WT", "TC", "ET"]
    assert by[("label", 1)]["dice"] == 0.0 and by[("label", 3)]["dice"] == 1.0
    assert by[("region", "WT")]["dice"] == 1.0 and by[("region", "WT")]["hd95_pooled_mm"] == 0.0
    assert by[("region", "ET")]["dice"] == 1.0
    # TC: truth = core + enhancing (216 voxels), prediction = oedema shell + enhancing (296 + 8)
    assert by[("region", "TC")]["dice"] == pytest.approx(2 * 8 / (216 + 304))
    s = ev.summarize([{"case": "c", **r} for r in rows])
    assert list(s["regions"]) == ["WT", "TC", "ET"] and sorted(s["labels"]) == sorted(names.values())
    assert s["regions"]["WT"]["dice_mean"] == 1.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random-weight model with the dataset's (BraTS) labels, and a dataset with 2 labelled test cases."""
    from checkpoints import make_tiny_checkpoint
    from training.data import read_dataset

    root = tmp_path_factory.mktemp("ev")
    data = write_dataset(root / "data", 4, seed=11, test_cases=2, opts=SynthOptions(size=20), progress=False)
    labels = sorted(read_dataset(data).labels.items())
    return make_tiny_checkpoint(root / "best.pt", labels=labels), data


def test_perfect_prediction_gives_dice_one(tiny_model, monkeypatch, tmp_path: Path) -> None:
    model, data = tiny_model

    def oracle(ckpt, device):
        def predict(volume):
            name = Path(volume.source_paths[0]).name
            lab = load_scan(Path(volume.source_paths[0]).parent.parent / "labelsTs" / name)
            return lab.with_array(np.rint(lab.array).astype(np.uint8))

        return predict

    monkeypatch.setattr(ev, "_predict_fn", oracle)
    out = ev.evaluate(model, data, split="test", out_dir=tmp_path / "e", progress=False)
    assert out["summary"]["dice_mean"] == 1.0
    assert out["summary"]["lesions_fn"] == 0 and out["summary"]["lesions_fp"] == 0
    assert out["summary"]["hd95_n_penalised"] == 0 and out["summary"]["hd95_pooled_brats_mm_mean"] == 0.0
    rows = list(csv.DictReader(open(tmp_path / "e" / "per_case.csv")))
    assert len({r["case"] for r in rows}) == 2 and all(float(r["dice"]) == 1.0 for r in rows)
    assert all(float(r["hd95_pooled_brats_mm"]) == 0.0 for r in rows)
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["n_cases"] == 2


def test_evaluate_runs_app_inference_and_records(tiny_model, tmp_path: Path) -> None:
    from seg_app.core.spec import load_checkpoint
    from training.cli import main

    model, data = tiny_model
    copy = tmp_path / "m.pt"
    copy.write_bytes(model.read_bytes())
    assert main(["evaluate", "--model", str(copy), "--data", str(data), "--split", "test", "--record", "--quiet",
                 "--out", str(tmp_path / "e")]) == 0
    m = load_checkpoint(copy).spec.metrics
    assert m["test_n_cases"] == 2 and 0.0 <= m["test_dice_mean"] <= 1.0
