"""What a training run writes next to its checkpoints: JSON files, ``metrics.csv``, ``curves.png``,
TensorBoard logs, and the random-number state that ``last.pt`` carries for an exact ``--resume``.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_app.core.io import atomic_write

__all__ = ["write_json", "write_metrics_csv", "plot_curves", "open_tensorboard", "rng_state", "set_rng_state"]


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented, key-sorted JSON, written atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def write_metrics_csv(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """One row per epoch in ``run_dir/metrics.csv`` (nothing is written for an empty history)."""
    if not history:
        return
    cols = list(dict.fromkeys(k for row in history for k in row))
    with atomic_write(run_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, restval="")
        w.writeheader()
        w.writerows(history)


def plot_curves(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Loss and validation Dice against epoch, as ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(ep, [h["train_loss"] for h in history], "b-", label="train loss (Dice+CE)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss", color="b")
    ax2 = ax1.twinx()
    val = [(h["epoch"], h["val_dice"]) for h in history if h["val_dice"] != ""]
    if val:
        ax2.plot(*zip(*val), "r.-", label="validation Dice")
    ax2.set_ylabel("validation Dice", color="r")
    ax2.set_ylim(0, 1)
    fig.tight_layout()
    with atomic_write(run_dir / "curves.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def open_tensorboard(run_dir: Path):
    """A ``SummaryWriter`` logging to ``run_dir/tb``, or ``None`` where TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


def rng_state() -> dict[str, Any]:
    """The torch, NumPy and Python global RNG states as plain values (storable in a checkpoint)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
