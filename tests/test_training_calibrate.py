"""seg-train calibrate: lesion filters chosen on a selection set, scored exactly as the app applies them."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from checkpoints import tiny_spec
from seg_app.core.errors import CheckpointError
from seg_app.core.metrics import dice
from seg_app.core.postprocess import postprocess_labels
from seg_app.core.spec import ModelSpec, PostprocessSpec
from training import calibrate as cal

BRATS = [(0, "background"), (1, "necrotic core"), (2, "oedema"), (3, "enhancing tumour")]
VOXEL_ML = 0.01  # reference lesions of >= 0.5 mL = 50 voxels count for sensitivity


def _crafted() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A found tumour (oedema around a core, confident), a false-positive blob (probability 0.6), a tiny
    confident spot on a small reference lesion, and a missed reference lesion."""
    pred = np.zeros((40, 40, 40), np.uint8)
    fg = np.zeros(pred.shape, np.float32)
    truth = np.zeros_like(pred)
    pred[2:10, 2:10, 2:10] = 2
    pred[4:8, 4:8, 4:8] = 1
    fg[2:10, 2:10, 2:10] = 0.9
    truth[3:11, 2:10, 2:10] = 2
    truth[5:9, 4:8, 4:8] = 3
    pred[20:24, 20:24, 20:24] = 2  # false positive, 64 voxels = 0.64 mL
    fg[20:24, 20:24, 20:24] = 0.6
    pred[30:32, 30:32, 30:32] = 3  # 8 voxels = 0.08 mL, on a 27-voxel reference lesion (not counted)
    fg[30:32, 30:32, 30:32] = 0.95
    truth[30:33, 30:33, 30:33] = 2
    truth[30:35, 2:7, 30:35] = 2  # 125 voxels, missed
    return pred, fg, truth


def test_sweep_scores_what_postprocess_labels_keeps() -> None:
    pred, fg, truth = _crafted()
    case = cal.case_lesions("c", pred, fg, truth, VOXEL_ML, (1, 2, 3))
    assert sorted(case.voxels.tolist()) == [8, 64, 512] and len(case.reference_hits) == 2
    for min_ml, conf in [(0.0, 0.0), (0.1, 0.0), (0.1, 0.7), (0.0, 0.65), (0.7, 0.0)]:
        row = cal.score([case], min_ml, conf)
        spec = tiny_spec(labels=BRATS, postprocess=PostprocessSpec(min_lesion_ml=min_ml, min_lesion_confidence=conf))
        kept, _removed = postprocess_labels(pred.copy(), spec, VOXEL_ML, fg)
        assert row["wt_dice"] == pytest.approx(dice(kept > 0, truth > 0)), (min_ml, conf)
    row = cal.score([case], 0.1, 0.7)  # the blob and the tiny spot go; the tumour stays
    assert row["lesion_sensitivity"] == 0.5 and row["lesion_precision"] == 1.0 and row["fp_lesions"] == 0
    assert cal.score([case], 0.0, 0.0)["lesion_precision"] == pytest.approx(2 / 3)


def test_choice_is_the_mildest_filter_with_the_best_f1_and_never_worse_than_now() -> None:
    pred, fg, truth = _crafted()
    healthy = cal.case_lesions("h", pred * (fg == np.float32(0.6)), fg, np.zeros_like(truth), VOXEL_ML, (1, 2, 3))
    cases = [cal.case_lesions("c", pred, fg, truth, VOXEL_ML, (1, 2, 3)), healthy]
    current = cal.score(cases, 0.0, 0.0)
    table = [cal.score(cases, m, c) for m in cal.MIN_ML_GRID for c in cal.CONFIDENCE_GRID]
    best = cal.choose(table, current)
    assert (best["min_lesion_ml"], best["min_lesion_confidence"]) == (0.0, 0.65)  # 0.6 keeps the blob (>=)
    assert best["healthy_fp_ml_max"] == 0.0 and current["healthy_fp_ml_max"] == pytest.approx(0.64)
    # a filter that would cost sensitivity is not taken, whatever its F1
    worse = [dict(r, lesion_sensitivity=0.0, lesion_f1=1.0) for r in table]
    assert cal.choose(worse, current) is current


def test_confidence_filter_round_trips_and_is_validated() -> None:
    spec = tiny_spec(labels=BRATS, postprocess=PostprocessSpec(min_lesion_ml=0.1, min_lesion_confidence=0.7))
    back = ModelSpec.from_json(spec.to_json())
    assert back.postprocess.min_lesion_confidence == 0.7
    old = json.loads(spec.to_json())
    del old["postprocess"]["min_lesion_confidence"]  # checkpoints from before the field: filter off
    assert ModelSpec.from_dict(old).postprocess.min_lesion_confidence == 0.0
    with pytest.raises(CheckpointError, match="confidence"):
        dataclasses.replace(spec, postprocess=PostprocessSpec(min_lesion_confidence=1.5)).validate()


def test_calibrate_command_writes_a_new_checkpoint(tmp_path: Path) -> None:
    from checkpoints import make_tiny_checkpoint
    from seg_app.core.spec import load_checkpoint
    from training.cli import main
    from training.data import read_dataset
    from training.synth import SynthOptions, write_dataset

    data = write_dataset(tmp_path / "sel", 2, seed=5, test_cases=2, opts=SynthOptions(size=20), progress=False)
    model = make_tiny_checkpoint(tmp_path / "m.pt", labels=sorted(read_dataset(data).labels.items()))
    before = model.read_bytes()
    assert main(["calibrate", "--model", str(model), "--data", str(data), "--out", str(model), "--quiet"]) == 1
    out = tmp_path / "cal" / "m_cal.pt"
    assert main(["calibrate", "--model", str(model), "--data", str(data), "--out", str(out), "--quiet"]) == 0
    assert model.read_bytes() == before  # the source checkpoint is never modified
    spec = load_checkpoint(out).spec
    rec = spec.metrics["calibration"]
    assert rec["n_cases"] == 2 and rec["split"] == "test"
    assert spec.postprocess.min_lesion_ml == rec["after"]["min_lesion_ml"] in cal.MIN_ML_GRID
    assert spec.postprocess.min_lesion_confidence == rec["after"]["min_lesion_confidence"]
    assert rec["after"]["lesion_f1"] >= rec["before"]["lesion_f1"]
    rows = list(csv.DictReader(open(tmp_path / "cal" / "calibration.csv")))
    assert len(rows) == len(cal.MIN_ML_GRID) * len(cal.CONFIDENCE_GRID)
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["after"] == rec["after"]


def test_segmenter_drops_unconfident_lesions(tmp_path: Path) -> None:
    """The app's Segmenter applies the filter with the probabilities it computed (mean per lesion)."""
    from checkpoints import make_tiny_checkpoint
    from seg_app.core.inference import Segmenter
    from seg_app.core.spec import load_checkpoint
    from seg_app.core.volume import Volume

    ckpt = load_checkpoint(make_tiny_checkpoint(tmp_path / "m.pt", labels=BRATS))
    image = Volume(np.random.default_rng(3).normal(100, 20, (1, 24, 24, 24)).astype(np.float32), np.eye(4), modality="MR")

    def run(conf: float):
        spec = ckpt.spec.with_updates(postprocess=PostprocessSpec(min_lesion_confidence=conf))
        return Segmenter(model=dataclasses.replace(ckpt, spec=spec), device="cpu", backend="torch").segment(image)

    from seg_app.core.measure import lesion_components

    plain = run(0.0)
    cc, n = lesion_components((plain.labels.array[0] > 0).astype(np.uint8))
    assert n >= 1
    fg = plain.probabilities.array[0]
    means = np.array([fg[cc == i].mean() for i in range(1, n + 1)])
    tau = float(np.median(means)) + 1e-6  # about half the lesions are under it
    kept = run(tau).labels.array[0] > 0
    for i, m in enumerate(means, start=1):
        assert kept[cc == i].all() if m >= tau else not kept[cc == i].any()
    assert not run(float(means.max()) + 1e-3).labels.array[0].any()
