"""seg-train evaluate: Dice/HD95/lesion detection on perfect and crafted predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

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
    p = z.copy()
    p[1, 1, 1] = 1
    (fp,) = ev.case_metrics(p, z, (1, 1, 1), {1: "tumour"}, 0.001)
    assert fp["dice"] == 0.0 and np.isnan(fp["hd95_mm"]) and fp["fp"] == 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("ev")
    data = write_dataset(root / "data", 4, seed=11, test_cases=2, opts=SynthOptions(size=20), progress=False)
    train(TrainConfig(data=str(data), out=str(root / "run"), epochs=1, patch_size=[16, 16, 16], channels=[4, 8],
                      strides=[2], num_res_units=0, progress=False))
    return root / "run" / "best.pt", data


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
    rows = list(csv.DictReader(open(tmp_path / "e" / "per_case.csv")))
    assert len(rows) == 2 and all(float(r["dice"]) == 1.0 for r in rows)
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
