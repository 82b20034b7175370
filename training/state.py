"""The state of one fold's training: what :func:`training.train._setup_fold` built (:class:`FoldRun`),
how far it got (:class:`Progress`), resuming both from ``last.pt`` and saving them after an epoch.

``last.pt`` holds the weights plus :func:`training_state` (optimiser, schedule, scaler, history, RNG
state, time spent); ``best.pt`` the weights alone. Both carry the spec of :func:`spec_now`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from seg_app.core.spec import ModelSpec, load_checkpoint, save_checkpoint
from training.data import DatasetError
from training.ddp import DistEnv
from training.run_files import plot_curves, rng_state, set_rng_state, write_metrics_csv

if TYPE_CHECKING:
    from training.train import TrainConfig

__all__ = ["FoldRun", "Progress", "resume_progress", "set_schedule_epoch", "record_epoch", "spec_now", "training_state", "save_last", "save_epoch"]


@dataclass
class FoldRun:
    """Everything one fold's training loop works with (built by ``training.train._setup_fold``)."""

    cfg: TrainConfig
    env: DistEnv
    spec: ModelSpec
    device: torch.device
    n_threads: int
    run_dir: Path
    n_train: int
    n_val: int
    train_ds: Any
    sampler: Any
    generator: torch.Generator
    loader: Any
    val_loader: Any | None
    net: torch.nn.Module
    model: torch.nn.Module  # ``net``, DDP-wrapped when distributed
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    use_amp: bool

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"


@dataclass
class Progress:
    """Where a fold stands: epochs done, best validation Dice, history, and time spent (including the
    time of the run it resumed)."""

    epoch: int = 0  # epochs completed (the 0-based index of the running epoch while it runs)
    best: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0
    cpu_before: float = 0.0
    t_start: float = 0.0
    cpu_start: float = 0.0

    def start_clock(self) -> None:
        self.t_start, self.cpu_start = time.perf_counter(), time.process_time()

    def elapsed_s(self) -> float:
        """Wall seconds of training so far."""
        return self.elapsed_before + time.perf_counter() - self.t_start

    def cpu_s(self) -> float:
        """CPU seconds of this process over all threads (wall time is inflated on a shared machine)."""
        return round(self.cpu_before + time.process_time() - self.cpu_start, 1)


def resume_progress(fold: FoldRun) -> Progress:
    """Load weights, optimiser, schedule, scaler, history and RNG state from ``last.pt``."""
    if not fold.last_path.is_file():
        raise DatasetError(f"Cannot resume: {fold.last_path} does not exist.")
    ck = load_checkpoint(fold.last_path)
    ts = ck.training_state or {}
    if "optimizer" not in ts:
        raise DatasetError(f"{fold.last_path} holds no training state to resume from.")
    fold.net.load_state_dict(ck.state_dict)
    fold.opt.load_state_dict(ts["optimizer"])  # Adam moments; lr and weight decay are set below
    if "scaler" in ts and fold.use_amp:
        fold.scaler.load_state_dict(ts["scaler"])
    progress = Progress(int(ts["epoch"]), float(ts["best_dice"]), int(ts["best_epoch"]), list(ts.get("history", [])),
                        float(ts.get("elapsed_s", 0.0)), float(ts.get("cpu_s", 0.0)))
    set_schedule_epoch(fold, progress.epoch)
    set_rng_state(ts["rng"])
    return progress


def set_schedule_epoch(fold: FoldRun, epoch: int) -> None:
    """Put the schedule at 0-based ``epoch`` of the *current* config: ``--lr``, ``--weight-decay``,
    ``--schedule`` and ``--epochs`` as given now (the schedule is a pure function of the epoch, so the
    saved scheduler state is not needed)."""
    from training.config import lr_factor

    cfg = fold.cfg
    lr = cfg.lr * lr_factor(cfg.schedule, epoch, cfg.epochs)
    for group in fold.opt.param_groups:
        group["initial_lr"], group["lr"], group["weight_decay"] = cfg.lr, lr, cfg.weight_decay
    fold.sched.base_lrs = [cfg.lr] * len(fold.opt.param_groups)
    fold.sched.last_epoch = epoch
    fold.sched._last_lr = [lr] * len(fold.opt.param_groups)  # what get_last_lr() reports


def record_epoch(fold: FoldRun, progress: Progress, done: int, mean_loss: float, val_dice: float | None, n_iters: int,
                 dt: float, lr: float | None = None) -> bool:
    """Update the best Dice and append the history row of epoch ``done`` (1-based); True if best.pt is due.

    ``lr`` is the learning rate the epoch trained with (default: the optimiser's current one).
    """
    improved = val_dice is not None and val_dice > progress.best
    no_val_end = fold.val_loader is None and done == fold.cfg.epochs  # without validation, best = last
    if improved or no_val_end:
        progress.best, progress.best_epoch = (float(val_dice), done) if improved else (progress.best, done)  # type: ignore[arg-type]
    progress.history.append({
        "epoch": done, "train_loss": round(mean_loss, 5), "val_dice": round(val_dice, 5) if val_dice is not None else "",
        "lr": float(fold.opt.param_groups[0]["lr"] if lr is None else lr), "epoch_s": round(dt, 2), "iters_per_s": round(n_iters / dt, 3) if dt else 0,
        "elapsed_s": round(progress.elapsed_s(), 1), "cpu_s": progress.cpu_s(),
    })
    return improved or no_val_end


def spec_now(fold: FoldRun, progress: Progress) -> ModelSpec:
    """The fold's spec with the metrics and training record as of now."""
    cfg = fold.cfg
    m: dict[str, Any] = {"val_dice": round(progress.best, 4) if progress.best >= 0 else None, "best_epoch": progress.best_epoch,
                         "n_val_cases": fold.n_val, "n_train_cases": fold.n_train}
    if cfg.folds:
        m["fold"], m["folds"] = cfg.fold, cfg.folds
    tr = dict(fold.spec.training, training_time_s=round(progress.elapsed_s(), 1), cpu_time_s=progress.cpu_s(),
              epochs_done=progress.epoch, threads=fold.n_threads, world_size=fold.env.world_size, device=fold.device.type)
    return fold.spec.with_updates(metrics=m, training=tr)


def training_state(fold: FoldRun, progress: Progress, interrupted: bool = False) -> dict[str, Any]:
    """What ``last.pt`` needs for ``--resume`` besides the weights."""
    cfg = fold.cfg
    return {
        "epoch": progress.epoch, "optimizer": fold.opt.state_dict(), "scheduler": fold.sched.state_dict(),
        "scaler": fold.scaler.state_dict() if fold.use_amp else {}, "best_dice": progress.best, "best_epoch": progress.best_epoch,
        "history": progress.history, "rng": rng_state(), "elapsed_s": progress.elapsed_s(),
        "cpu_s": progress.cpu_s(), "interrupted_mid_epoch": interrupted, "fold": cfg.fold if cfg.folds else -1,
    }


def save_last(fold: FoldRun, progress: Progress, interrupted: bool = False) -> None:
    """``last.pt`` (weights + training state) and ``metrics.csv``."""
    save_checkpoint(fold.last_path, spec_now(fold, progress), fold.net.state_dict(), training_state(fold, progress, interrupted))
    write_metrics_csv(fold.run_dir, progress.history)


def save_epoch(fold: FoldRun, progress: Progress, save_best: bool, tb, mean_loss: float, val_dice: float | None) -> None:
    """Rank 0 after an epoch: ``best.pt`` when due, ``last.pt``, ``metrics.csv``, TensorBoard, ``curves.png``."""
    if save_best:
        save_checkpoint(fold.best_path, spec_now(fold, progress), fold.net.state_dict())
    save_last(fold, progress)
    if tb is not None:
        tb.add_scalar("loss/train", mean_loss, progress.epoch)
        if val_dice is not None:
            tb.add_scalar("dice/val", float(val_dice), progress.epoch)
    if val_dice is not None or progress.epoch == fold.cfg.epochs:
        plot_curves(fold.run_dir, progress.history)
