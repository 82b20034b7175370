"""Resume semantics (docs/TRAINING.md): what comes from the run folder, what from the new command line;
a longer --epochs extends the schedule as a run of that length; typed validation of options."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg_app.core.spec import load_checkpoint
from training.cli import main
from training.config import lr_factor
from training.train import TrainConfig, train

TINY = dict(batch_size=2, samples_per_case=1, patch_size=[8, 8, 8], channels=[4, 8], strides=[2], num_res_units=0,
            val_every=1, val_fraction=0.25, seed=0, lr=1e-2, progress=False, sw_batch_size=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Four tiny cases (12 x 12 x 10 voxels of 2 mm) in MSD layout."""
    root = tmp_path_factory.mktemp("resume_data")
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        img = rng.normal(100, 10, (12, 12, 10)).astype(np.float32)
        lab = np.zeros(img.shape, np.uint8)
        lab[3 + i % 2:8, 3:8, 2:6] = 1
        img[lab > 0] += 40
        for sub, arr in (("imagesTr", img), ("labelsTr", lab)):
            (root / sub).mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 2.0, 1.0])), root / sub / f"c{i}.nii.gz")
        items.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MR"}, "labels": {"0": "background", "1": "tumour"},
                                                   "training": items}))
    return root


def _lrs(run: Path) -> list[float]:
    with open(run / "metrics.csv") as fh:
        return [float(r["lr"]) for r in csv.DictReader(fh)]


@pytest.mark.slow  # three tiny runs (2, 2 and 4 epochs): 30 s alone, minutes on a busy machine
@pytest.mark.parametrize("schedule", ["poly", "cosine"])
def test_longer_epochs_extends_the_schedule_like_a_run_of_that_length(data: Path, tmp_path: Path, schedule: str) -> None:
    short, full = tmp_path / "short", tmp_path / "full"
    train(TrainConfig(data=str(data), out=str(short), epochs=2, schedule=schedule, **TINY))
    # metrics.csv records the rate each epoch trained with (epoch 1: the full --lr)
    assert _lrs(short) == pytest.approx([1e-2 * lr_factor(schedule, e, 2) for e in range(2)], rel=1e-12)
    assert _lrs(short)[0] == 1e-2
    train(TrainConfig(data=str(data), out=str(short), epochs=4, schedule=schedule, **TINY), resume=True, given={"epochs"})
    train(TrainConfig(data=str(data), out=str(full), epochs=4, schedule=schedule, **TINY))
    extended, reference = _lrs(short), _lrs(full)
    assert len(extended) == len(reference) == 4
    # the resumed epochs use the rate of a 4-epoch run; the first two kept the 2-epoch run's
    assert extended[2:] == pytest.approx(reference[2:], rel=1e-12)
    assert extended[:2] == pytest.approx([1e-2 * lr_factor(schedule, e, 2) for e in range(2)], rel=1e-12)
    assert extended[1] != pytest.approx(reference[1])
    last = load_checkpoint(short / "last.pt").training_state
    assert last["epoch"] == 4 and [h["epoch"] for h in last["history"]] == [1, 2, 3, 4]
    assert json.loads((short / "config.json").read_text())["epochs"] == 4


@pytest.mark.slow  # two tiny runs through the command line
def test_explicit_flags_win_and_defining_options_are_refused(data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    base = ["--patch-size", "8", "8", "8", "--channels", "4", "8", "--strides", "2", "--num-res-units", "0",
            "--samples-per-case", "1", "--val-fraction", "0.25", "--quiet"]
    assert main(["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--lr", "0.01", *base]) == 0
    # --lr 0.002 is the default value, yet given explicitly it wins over the saved 0.01
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--lr", "0.002", "--weight-decay", "0.001", "--quiet"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["lr"] == 0.002 and saved["weight_decay"] == 0.001 and saved["epochs"] == 2
    assert saved["channels"] == [4, 8] and saved["patch_size"] == [8, 8, 8]  # the rest came from the run
    assert _lrs(run) == pytest.approx([0.01, 0.002 * lr_factor("poly", 1, 2)], rel=1e-12)
    ts = load_checkpoint(run / "last.pt").training_state
    assert ts["optimizer"]["param_groups"][0]["weight_decay"] == 0.001
    capsys.readouterr()
    # options that define the run cannot change; every one is named, nothing is trained
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--channels", "4", "16", "--seed", "5",
                 "--patch-size", "8", "8", "8", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[-1].startswith("error: Cannot resume with these options: 2 problems")
    assert "option 'channels'" in err[0] and "[4, 8]" in err[0] and "option 'seed'" in err[1]
    assert load_checkpoint(run / "last.pt").training_state["epoch"] == 2


def test_every_bad_option_is_reported_with_its_origin(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epochs: ten\nlr: -1\nschedule: step\npatch_size: [16, 16]\nchanels: [4, 8]\nchannels: [4, '8']\n"
                   "device: gpu\namp: 1\nval_fraction: 1.5\n")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(cfg), "--batch-size", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    expected = ["'epochs' must be an integer", "'lr' must not be negative", "'schedule' must be one of poly, cosine",
                "'patch_size' must have 3 values", "unknown option 'chanels' (did you mean 'channels'?)",
                "'channels' must be a non-empty list of integers", "'device' must be auto, cpu", "'amp' must be true or false",
                "'val_fraction' must be in [0, 1)", "'batch_size' must be at least 1"]
    assert len(err) == len(expected) + 1 and err[-1] == f"error: Invalid training options: {len(expected)} problems (listed above)."
    for line, what in zip(err, expected):
        assert what in line, (line, what)
        assert line.startswith("command line:" if "batch_size" in what else f"{cfg}:")
    assert not (tmp_path / "run").exists()
