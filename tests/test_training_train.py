"""Tiny end-to-end training runs (16-24 voxel volumes, a few epochs, seconds each)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from seg_app.core.spec import build_network, load_checkpoint
from training.cli import main
from training.data import kfold_split, read_dataset
from training.synth import SynthOptions, write_dataset
from training.train import TrainConfig, TrainingInterrupted, train

TINY = dict(epochs=3, batch_size=2, samples_per_case=2, patch_size=[16, 16, 16], channels=[4, 8, 16], strides=[2, 2],
            num_res_units=0, val_every=1, val_fraction=0.25, seed=0, lr=1e-2, progress=False, sw_batch_size=4)


@pytest.fixture(scope="module")
def msd(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("msd"), 8, seed=5, test_cases=2, opts=SynthOptions(size=20), progress=False)


def _check_run(run: Path, in_channels: int = 1) -> None:
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "splits.json", "config.json", "fingerprint.json"):
        assert (run / name).is_file(), name
    best = load_checkpoint(run / "best.pt")
    assert best.spec.in_channels == in_channels
    assert len(best.spec.labels) == 4 and best.spec.labels[0].name == "background"  # BraTS labels 0-3
    assert best.training_state is None
    last = load_checkpoint(run / "last.pt")
    ts = last.training_state
    assert ts["epoch"] == TINY["epochs"]
    losses = [h["train_loss"] for h in ts["history"]]
    assert losses[-1] < losses[0], losses
    net = build_network(best.spec)
    net.load_state_dict(best.state_dict)
    out = net(torch.zeros(1, in_channels, 16, 16, 16))
    assert out.shape == (1, 4, 16, 16, 16)


def test_train_msd(msd: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(TrainConfig(data=str(msd), out=str(run), **TINY))
    _check_run(run)
    assert 0.0 <= result["best_val_dice"] <= 1.0
    spec = load_checkpoint(run / "best.pt").spec
    assert spec.dataset["n_cases"] == 8 and spec.inference.roi_size == (16, 16, 16)
    assert spec.metrics["n_val_cases"] == 2


def test_train_msd_4d_multichannel(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "msd4d", 6, seed=6, opts=SynthOptions(size=20, channels=2), progress=False)
    img = nib.load(next((data / "imagesTr").iterdir()))
    assert img.ndim == 4 and img.shape[3] == 2
    info = read_dataset(data)
    assert info.channel_names == ("MRI contrast 1", "MRI contrast 2")
    run = tmp_path / "run"
    train(TrainConfig(data=str(data), out=str(run), **TINY))
    _check_run(run, in_channels=2)


def test_train_paired_layout_via_cli_and_config(msd: Path, tmp_path: Path) -> None:
    data = tmp_path / "paired"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for f in sorted((msd / "imagesTr").iterdir())[:6]:
        shutil.copy(f, data / "images" / f.name)
        shutil.copy(msd / "labelsTr" / f.name, data / "labels" / f.name)
    info = read_dataset(data)
    assert info.layout == "paired" and len(info.training) == 6
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in TINY.items() if k != "progress") + "\n")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(cfg), "--quiet"]) == 0
    _check_run(run)
    assert "--config" in load_checkpoint(run / "best.pt").spec.training["command"]


def test_resume_continues_exactly(msd: Path, tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    cfg = dict(TINY, epochs=4)
    train(TrainConfig(data=str(msd), out=str(full), **cfg))

    def stop_after_two(done: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(TrainConfig(data=str(msd), out=str(part), **cfg), on_epoch_end=stop_after_two)
    assert load_checkpoint(part / "last.pt").training_state["epoch"] == 2
    train(TrainConfig(data=str(msd), out=str(part), **cfg), resume=True)
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    assert [h["epoch"] for h in b.training_state["history"]] == [1, 2, 3, 4]
    for k in a.state_dict:
        torch.testing.assert_close(a.state_dict[k], b.state_dict[k], rtol=1e-5, atol=1e-6)
    la = [h["train_loss"] for h in a.training_state["history"]]
    lb = [h["train_loss"] for h in b.training_state["history"]]
    assert la == pytest.approx(lb, rel=1e-4)


def test_kfold_split_disjoint_and_covering(msd: Path, tmp_path: Path) -> None:
    names = [f"case{i}" for i in range(11)]
    splits = kfold_split(names, 3, seed=1)
    vals = [set(s["val"]) for s in splits]
    assert sum(len(v) for v in vals) == len(names) and set().union(*vals) == set(names)
    for s in splits:
        assert not set(s["train"]) & set(s["val"]) and set(s["train"]) | set(s["val"]) == set(names)
    assert kfold_split(names, 3, seed=1) == splits
    run = tmp_path / "cv"
    assert main(["train", "--data", str(msd), "--out", str(run), "--folds", "2", "--fold", "all", "--epochs", "1",
                 "--patch-size", "16", "16", "16", "--channels", "4", "8", "--strides", "2", "--quiet"]) == 0
    saved = json.loads((run / "splits.json").read_text())["splits"]
    assert set(saved[0]["val"]).isdisjoint(saved[1]["val"])
    summary = json.loads((run / "cv_summary.json").read_text())
    assert summary["n_folds_done"] == 2 and summary["mean_val_dice"] is not None
    assert load_checkpoint(run / "fold_1" / "best.pt").spec.metrics["fold"] == 1


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert main(["evaluate", "--model", str(tmp_path / "missing.pt"), "--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_init_from_starts_from_another_runs_weights_and_batch_dice(msd: Path, tmp_path: Path) -> None:
    """--init-from copies the weights (with lr 0 they come out unchanged); a different network is refused."""
    first = tmp_path / "first"
    train(TrainConfig(data=str(msd), out=str(first), **{**TINY, "epochs": 1}))
    second = tmp_path / "second"
    train(TrainConfig(data=str(msd), out=str(second), init_from=str(first / "last.pt"), batch_dice=True,
                      **{**TINY, "epochs": 1, "lr": 0.0}))
    a, b = load_checkpoint(first / "last.pt"), load_checkpoint(second / "last.pt")
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert "batch Dice" in b.spec.training["loss"]
    from training.data import DatasetError

    with pytest.raises(DatasetError, match="do not fit"):
        train(TrainConfig(data=str(msd), out=str(tmp_path / "third"), init_from=str(first / "last.pt"),
                          **{**TINY, "epochs": 1, "channels": [4, 8, 8]}))
