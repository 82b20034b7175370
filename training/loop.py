"""One training epoch and one validation pass: the inner loop of ``seg-train train``.

:func:`train_one_epoch` and :func:`validate` are plain functions over a network, a loader and an
optimiser; :func:`run_epoch` and :func:`validate_if_due` apply them to a fold (``training.state.FoldRun``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from seg_app.core.spec import ModelSpec
from training.ddp import mean_over_ranks
from training.state import FoldRun

__all__ = ["epoch_seed", "seed_epoch", "train_one_epoch", "validate", "run_epoch", "validate_if_due"]


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The augmentation seed of one rank's epoch (a pure function, so a resumed run re-creates it)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**31)


def seed_epoch(sampler, dataset, generator: torch.Generator, seed: int, epoch: int, rank: int) -> None:
    """Re-seed shuffling and random augmentation at the start of ``epoch`` (0-based).

    Args:
        sampler: the ``DistributedSampler`` (shuffles with ``seed`` + ``epoch``).
        dataset: the training dataset; its transform's random state is used when the loader has no workers.
        generator: the loader's generator; it seeds the worker copies of the transform otherwise.
    """
    sampler.set_epoch(epoch)
    s = epoch_seed(seed, epoch, rank)
    dataset.transform.set_random_state(seed=s)
    generator.manual_seed(s)


def train_one_epoch(model: torch.nn.Module, loader, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device, use_amp: bool,
                    desc: str = "", progress: bool = False) -> list[float]:
    """One pass over ``loader``; returns the loss of every iteration.

    Args:
        use_amp: autocast the forward pass (CUDA only) with ``scaler`` scaling the loss.
        desc: the progress bar's label; ``progress`` shows the bar.
    """
    from tqdm import tqdm

    model.train()
    losses: list[float] = []
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, mininterval=1.0, dynamic_ncols=True)
    for batch in bar:
        x = batch["image"].to(device)
        y = batch["label"].to(device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, enabled=use_amp):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def validate(net: torch.nn.Module, loader, spec: ModelSpec, device: torch.device) -> float:
    """Mean foreground Dice over validation cases with the app's sliding-window path.

    Computed on the model grid (after the shared preprocessing); a case without lesions scores 1 when
    nothing is predicted and 0 otherwise.
    """
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    from seg_app.core.sliding_window import sliding_window_probabilities

    # compute_dice per case, not DiceMetric: its aggregate() all-gathers across ranks, and only rank 0
    # validates under DDP.
    net.eval()
    n_labels = spec.out_channels
    scores = []
    for batch in loader:
        image = batch["image"].to(device)
        probs = sliding_window_probabilities(net, image, spec)  # (1, L, ...)
        pred = one_hot(probs.argmax(1, keepdim=True), n_labels)
        label = one_hot(batch["label"].to(device).long(), n_labels)
        scores.append(compute_dice(pred, label, include_background=False, ignore_empty=False).mean().item())
    return float(np.mean(scores)) if scores else float("nan")


def run_epoch(fold: FoldRun, epoch: int) -> tuple[float, int, float]:
    """Train epoch ``epoch`` (0-based) and step the schedule; returns (mean loss over ranks, iterations,
    the learning rate this epoch used)."""
    cfg, env = fold.cfg, fold.env
    lr = float(fold.opt.param_groups[0]["lr"])
    seed_epoch(fold.sampler, fold.train_ds, fold.generator, cfg.seed, epoch, env.rank)
    losses = train_one_epoch(fold.model, fold.loader, fold.loss_fn, fold.opt, fold.scaler, fold.device, fold.use_amp,
                             desc=f"epoch {epoch + 1}/{cfg.epochs}", progress=cfg.progress and env.is_main)
    fold.sched.step()
    mean_loss = float(np.mean(losses)) if losses else float("nan")
    return mean_over_ranks(mean_loss, env, fold.device), len(losses), lr  # the epoch loss averaged over ranks, for the log


def validate_if_due(fold: FoldRun, epoch: int) -> float | None:
    """Validation Dice after epoch ``epoch`` (0-based) every ``val_every`` epochs and after the last; else None."""
    cfg = fold.cfg
    if fold.val_loader is not None and ((epoch + 1) % max(1, cfg.val_every) == 0 or epoch + 1 == cfg.epochs):
        return validate(fold.net, fold.val_loader, fold.spec, fold.device)
    return None
