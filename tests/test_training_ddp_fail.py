"""DDP failure: when one of two gloo ranks fails (a corrupt training image only rank 1 reads), every rank
stops with one ``error: rank R/2:`` line and exit status 1, and nothing prints a summary."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from torchrun_launch import run_torchrun

pytestmark = pytest.mark.slow  # torchrun with two processes


def _dataset(root: Path, n: int = 6) -> list[str]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = rng.normal(100, 10, (12, 12, 10)).astype(np.float32)
        lab = np.zeros(img.shape, np.uint8)
        lab[3:8, 3:8, 2:6] = 1
        for sub, arr in (("imagesTr", img), ("labelsTr", lab)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 2.0, 1.0])), root / sub / f"c{i}.nii.gz")
        items.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MR"}, "labels": {"0": "background", "1": "tumour"},
                                                   "training": items}))
    return [f"c{i}" for i in range(n)]


def _only_rank1_reads(names: list[str], seed: int) -> str:
    """A training case that rank 1 (and not rank 0) loads in epoch 0, as train.py shards it."""
    from torch.utils.data.distributed import DistributedSampler

    from training.data import holdout_split

    train = holdout_split(names, 0.2, seed)["train"]
    shards = []
    for rank in (0, 1):
        s = DistributedSampler(range(len(train)), num_replicas=2, rank=rank, shuffle=True, seed=seed, drop_last=False)
        s.set_epoch(0)
        shards.append({train[i] for i in s})
    return sorted(shards[1] - shards[0])[0]


@pytest.mark.timeout(1800)  # minutes only on a heavily loaded machine
def test_a_failing_rank_stops_every_rank_with_a_clear_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    names = _dataset(data)
    victim = _only_rank1_reads(names, seed=0)
    path = data / "imagesTr" / f"{victim}.nii.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:600]))  # header intact, voxels truncated
    args = ["-m", "training.cli", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "2",
            "--patch-size", "8", "8", "8", "--channels", "4", "8", "--strides", "2", "--num-res-units", "0",
            "--samples-per-case", "1", "--device", "cpu", "--cache-rate", "0",
            "--no-check"]  # uncached: each rank reads only its own cases; --no-check: let it start
    proc = run_torchrun(args, timeout=850)  # a rank that hung instead of stopping is killed with torchrun
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 1, err[-3000:]
    found = re.findall(r"error: rank (\d)/2: ([^\n]*)", err)  # both ranks share stderr (and rank 0's progress bar)
    rank1 = [msg for r, msg in found if r == "1"]
    rank0 = [msg for r, msg in found if r == "0"]
    assert len(rank1) == 1 and victim in rank1[0], err[-3000:]
    assert len(rank0) == 1 and "another rank failed" in rank0[0], err[-3000:]
    assert "best_val_dice" not in out  # no summary from any rank
    assert "exitcode  : -15" not in err and "exitcode  : -9" not in err  # no rank killed: each exited 1 itself
    assert not (tmp_path / "run" / "last.pt").exists()

    # the dataset check (on by default) stops every rank before training, the list printed once
    proc = run_torchrun(args[:-1], timeout=850)
    assert proc.returncode == 1
    assert proc.stderr.count(f"{path}: its voxel data cannot be read") == 1, proc.stderr[-3000:]
    assert sorted(r for r, _ in re.findall(r"error: rank (\d)/2: ([^\n]*)", proc.stderr)) == ["0", "1"]
