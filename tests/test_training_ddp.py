"""DDP: two gloo processes on the CPU train one tiny epoch via torchrun.

torchrun is launched by ``tests/torchrun_launch.py`` (``--standalone``: no port picked by the test).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seg_app.core.spec import load_checkpoint
from torchrun_launch import run_torchrun
from training.synth import SynthOptions, write_dataset

pytestmark = pytest.mark.slow  # torchrun subprocesses: 20-30 s each


@pytest.mark.timeout(300)
def test_ddp_two_gloo_processes(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", 6, seed=21, opts=SynthOptions(size=16), progress=False)
    run = tmp_path / "run"
    proc = run_torchrun(["-m", "training.cli", "train", "--data", str(data), "--out", str(run), "--epochs", "1",
                         "--patch-size", "16", "16", "16", "--channels", "4", "8", "--strides", "2", "--device", "cpu",
                         "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = load_checkpoint(run / "last.pt")
    assert last.spec.training["world_size"] == 2
    assert last.training_state["epoch"] == 1
    assert (run / "best.pt").is_file() and (run / "metrics.csv").read_text().count("\n") == 2


def _train_cmd(data: Path, run: Path) -> list[str]:
    return ["-m", "training.cli", "train", "--data", str(data), "--out", str(run), "--epochs", "2",
            "--patch-size", "16", "16", "16", "--channels", "4", "8", "--strides", "2", "--device", "cpu",
            "--seed", "3", "--quiet"]


@pytest.mark.timeout(300)
def test_one_process_same_result_with_or_without_torchrun(tmp_path: Path) -> None:
    """A single process trains to bit-identical weights whether launched plainly or by torchrun."""
    import torch

    data = write_dataset(tmp_path / "data", 4, seed=22, opts=SynthOptions(size=16), progress=False)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = Path(__file__).parent.parent
    plain = subprocess.run([sys.executable, *_train_cmd(data, tmp_path / "plain")], capture_output=True, text=True,
                           env=env, cwd=root, timeout=280)
    assert plain.returncode == 0, plain.stderr[-3000:]
    launched = run_torchrun(_train_cmd(data, tmp_path / "torchrun"), nproc=1)
    assert launched.returncode == 0, launched.stderr[-3000:]
    a = load_checkpoint(tmp_path / "plain" / "last.pt")
    b = load_checkpoint(tmp_path / "torchrun" / "last.pt")
    assert b.spec.training["world_size"] == 1 and a.training_state["epoch"] == b.training_state["epoch"] == 2
    assert a.state_dict.keys() == b.state_dict.keys()
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
