"""The training loop behind ``seg-train train``: dataset folder -> self-describing ``best.pt`` / ``last.pt``.

Single process, or DDP when started by ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment): one
``DistributedSampler`` in both cases (``num_replicas=1`` alone), so one process gives the same result
either way. Random augmentation is re-seeded from ``(seed, epoch, rank)`` at every epoch start, which
makes ``--resume`` from an epoch-end ``last.pt`` continue exactly as an uninterrupted run.

One fold is trained in stages, each its own function: :func:`_setup_fold` (data loaders, network,
optimiser, loss), ``training.state.resume_progress`` (the training state of ``last.pt``),
``training.loop.run_epoch`` / ``validate_if_due``, ``training.state.record_epoch`` / ``save_epoch``
(history, ``best.pt``, ``last.pt``, metrics). DDP helpers live in ``training.ddp``, run-folder files
in ``training.run_files``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_app.core.errors import CheckpointError, SegAppError
from seg_app.core.regions import BRATS_COLORS, composite_regions
from seg_app.core.runtime import configure_torch_threads
from seg_app.core.spec import (
    DEFAULT_COLORS,
    ChannelSpec,
    InferenceSpec,
    LabelSpec,
    ModelSpec,
    NetworkSpec,
    NormalizationSpec,
    PostprocessSpec,
    build_network,
    load_checkpoint,
    now_iso,
    package_versions,
)
from training.config import TrainConfig, given_options, load_config_file, lr_factor, resume_config
from training.data import (
    DatasetError,
    ProblemList,
    DatasetInfo,
    deterministic_transforms,
    fingerprint,
    holdout_split,
    kfold_split,
    random_transforms,
    read_dataset,
)
from training.ddp import DistEnv, barrier, dist_env, ignore_sigterm, init_distributed, share_from_main, wrap_model
from training.loop import run_epoch, validate, validate_if_due
from training.run_files import open_tensorboard, plot_curves, write_json
from training.state import FoldRun, Progress, record_epoch, resume_progress, save_epoch, save_last

__all__ = [
    "TrainConfig", "TrainingInterrupted", "load_config_file", "build_spec", "train", "summarize_folds", "make_schedule",
    "physical_cores", "configure_threads", "DistEnv", "dist_env", "validate", "plot_curves",
]


class TrainingInterrupted(SegAppError):
    """Training was stopped with Ctrl-C; ``last.pt`` was saved."""


# ---- machine ------------------------------------------------------------------------------------------------
def physical_cores() -> int:
    """Physical CPU cores usable by this process (hyper-threads not counted)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        phys = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                cores.add((phys, core))
    except OSError:
        pass
    n = len(cores) if cores else usable
    return max(1, min(n, usable))



def configure_threads(env: DistEnv) -> int:
    """One torch thread per physical core, shared between the processes of this node."""
    return configure_torch_threads(max(1, physical_cores() // max(1, env.local_world_size)))


def _device(cfg: TrainConfig, env: DistEnv) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{env.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(cfg.device)



# ---- spec -----------------------------------------------------------------------------------------------
def build_spec(cfg: TrainConfig, info: DatasetInfo, fp: dict[str, Any]) -> ModelSpec:
    """The model description training writes into every checkpoint."""
    spacing = tuple(float(s) for s in (cfg.target_spacing or fp["median_spacing_mm"]))
    roi = tuple(int(s) for s in (cfg.patch_size or fp["patch_size"]))
    factor = int(np.prod(cfg.strides)) if cfg.network == "UNet" else 1
    if any(r % factor for r in roi):
        raise DatasetError(f"Patch size {list(roi)} must be a multiple of {factor} (the network's down-sampling).")
    scheme = cfg.normalization if cfg.normalization != "auto" else ("ct_window" if info.modality == "CT" else "zscore_nonzero")
    if scheme == "ct_window":
        norm = NormalizationSpec("ct_window", tuple(fp.get("ct_window", (-1000.0, 1000.0))))  # type: ignore[arg-type]
    elif scheme == "percentile":
        norm = NormalizationSpec("percentile", (0.5, 99.5))
    elif scheme in ("zscore_nonzero", "none"):
        norm = NormalizationSpec(scheme)
    else:
        raise DatasetError(f"Unknown normalisation '{cfg.normalization}' (auto, zscore_nonzero, percentile, ct_window, none).")
    if cfg.network == "UNet":
        kwargs: dict[str, Any] = {
            "spatial_dims": 3, "in_channels": len(info.channel_names), "out_channels": len(info.labels),
            "channels": list(cfg.channels), "strides": list(cfg.strides), "num_res_units": cfg.num_res_units,
            "norm": "INSTANCE",
        }
    elif cfg.network == "SegResNet":
        kwargs = {"spatial_dims": 3, "in_channels": len(info.channel_names), "out_channels": len(info.labels),
                  "init_filters": int(cfg.channels[0])}
    else:
        raise DatasetError(f"Network '{cfg.network}' is not supported by seg-train (UNet, SegResNet).")
    brats = composite_regions(info.labels)
    labels = tuple(
        LabelSpec(v, name, (0, 0, 0) if v == 0 else (BRATS_COLORS[v] if brats and v in BRATS_COLORS else DEFAULT_COLORS[(v - 1) % len(DEFAULT_COLORS)]))
        for v, name in sorted(info.labels.items())
    )
    return ModelSpec(
        name=cfg.name,
        description=cfg.description,
        network=NetworkSpec(cfg.network, kwargs),
        channels=tuple(ChannelSpec(n, info.modality) for n in info.channel_names),
        labels=labels,
        target_spacing=spacing,  # type: ignore[arg-type]
        inference=InferenceSpec(roi_size=roi, overlap=cfg.overlap, blend_mode="gaussian", sw_batch_size=cfg.sw_batch_size),  # type: ignore[arg-type]
        normalization=norm,
        postprocess=PostprocessSpec(min_lesion_ml=cfg.min_lesion_ml),
        dataset={**{k: fp[k] for k in ("n_cases", "median_spacing_mm", "median_shape", "patch_size", "layout") if k in fp},
                 **({"median_fov_mm": [round(float(a) * float(b), 1) for a, b in zip(fp["median_shape"], fp["median_spacing_mm"])]}
                    if "median_shape" in fp and "median_spacing_mm" in fp else {})},
        training={"command": cfg.command, "seed": cfg.seed, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                  "lr": cfg.lr, "schedule": cfg.schedule, "loss": "DiceCELoss (batch Dice, foreground)" if cfg.batch_dice else "DiceCELoss", "optimizer": "AdamW"},
        versions=package_versions(),
        created=now_iso(),
    )


# ---- training -------------------------------------------------------------------------------------------------
def _splits(cfg: TrainConfig, info: DatasetInfo, base: Path) -> list[dict[str, list[str]]]:
    """Load or create the split file of the run (``splits.json``); validates that it matches the data."""
    names = [c["name"] for c in info.training]
    path = base / "splits.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        splits = saved["splits"]
        if sorted(set(sum((s["train"] + s["val"] for s in splits[:1]), []))) != sorted(names):
            raise DatasetError(f"{path} does not match the cases of {info.root}; use a new run folder.")
        return splits
    if cfg.folds:
        splits = kfold_split(names, cfg.folds, cfg.seed)
    else:
        splits = [holdout_split(names, cfg.val_fraction, cfg.seed)]
    write_json(path, {"folds": cfg.folds, "seed": cfg.seed, "splits": splits})
    return splits


def train(cfg: TrainConfig, resume: bool = False, all_folds: bool = False, on_epoch_end: Callable[[int], None] | None = None,
          given: Iterable[str] | None = None) -> dict[str, Any] | None:
    """Train one model (or, with ``all_folds``, every fold and summarise them).

    Args:
        resume: continue ``cfg.out``: its config.json is the base, and the options named in ``given``
            replace it where :data:`training.config.RESUME_MAY_CHANGE` allows (others must not differ).
        on_epoch_end: ``on_epoch_end(epochs_done)`` after each epoch's checkpoints are written (tests
            use it to interrupt a run).
        given: the options set explicitly (the command line passes them); None: those of ``cfg`` that
            differ from the defaults.

    Returns:
        the summary on rank 0 (the only process under torchrun that returns one); None on other ranks.

    Raises:
        ProblemList: the dataset check (unless ``cfg.check`` is off) or the resume rules failed, with
            every problem; nothing was trained.
    """
    base = Path(cfg.out)
    if resume:
        saved = base / "config.json"
        if not saved.is_file():
            raise DatasetError(f"Cannot resume: {saved} does not exist.")
        try:
            old = json.loads(saved.read_text())
        except ValueError as exc:
            raise DatasetError(f"Cannot resume: {saved} is not valid JSON ({exc}).") from exc
        cfg = resume_config(old, given_options(cfg, given), saved)
    env = dist_env()
    init_distributed(env, cfg.device)
    if cfg.check:  # rank 0 checks, every rank stops on its list (rank 0 first stops listening to SIGTERM)
        from training.check import check_dataset

        problems = check_dataset(cfg.data, splits=("training",)).problems if env.is_main else None
        if problems and env.distributed:
            ignore_sigterm()  # it prints the list before the others' exit makes torchrun stop it
        problems = share_from_main(problems, env)
        if problems:
            raise ProblemList(f"The dataset check of {cfg.data} failed; nothing was run", problems)
    info = read_dataset(cfg.data)
    if env.is_main:
        base.mkdir(parents=True, exist_ok=True)
    fp_path = base / "fingerprint.json"
    if fp_path.is_file():
        fp = json.loads(fp_path.read_text())
    else:
        divisor = int(np.prod(cfg.strides)) if cfg.network == "UNet" else 16
        fp = fingerprint(info, cfg.max_patch_voxels, divisor=divisor)
    if env.is_main:
        write_json(fp_path, fp)
        write_json(base / "config.json", dataclasses.asdict(cfg))
    barrier(env)
    splits = _splits(cfg, info, base)
    if cfg.folds and all_folds:
        for k in range(cfg.folds):
            _train_fold(dataclasses.replace(cfg, fold=k), info, fp, splits[k], base / f"fold_{k}", resume, env, on_epoch_end)
        return summarize_folds(base) if env.is_main else None
    if cfg.folds:
        if not 0 <= cfg.fold < cfg.folds:
            raise DatasetError(f"--fold must be between 0 and {cfg.folds - 1}.")
        out = _train_fold(cfg, info, fp, splits[cfg.fold], base / f"fold_{cfg.fold}", resume, env, on_epoch_end)
        if env.is_main:
            summarize_folds(base)
        return out if env.is_main else None
    out = _train_fold(cfg, info, fp, splits[0], base, resume, env, on_epoch_end)
    return out if env.is_main else None


def summarize_folds(base: Path) -> dict[str, Any]:
    """Mean/std of the best validation Dice over the folds trained so far (``cv_summary.json``)."""
    dices = {}
    for d in sorted(base.glob("fold_*")):
        if (d / "best.pt").is_file():
            try:
                dices[d.name] = float(load_checkpoint(d / "best.pt").spec.metrics.get("val_dice", float("nan")))
            except CheckpointError:
                continue
    vals = np.array(list(dices.values()), dtype=float)
    summary = {
        "folds": dices,
        "mean_val_dice": float(np.nanmean(vals)) if len(vals) else None,
        "std_val_dice": float(np.nanstd(vals)) if len(vals) else None,
        "n_folds_done": len(vals),
    }
    write_json(base / "cv_summary.json", summary)
    return summary


# ---- one fold ------------------------------------------------------------------------------------------------
def _make_loaders(cfg: TrainConfig, spec: ModelSpec, train_files: list[dict[str, Any]], val_files: list[dict[str, Any]],
                  env: DistEnv, n_threads: int) -> tuple[Any, Any, torch.Generator, Any, Any | None]:
    """Cached training dataset, its sampler, generator and loader, and the validation loader (rank 0 only)."""
    from monai.data import CacheDataset, DataLoader, list_data_collate
    from monai.transforms import Compose, DeleteItemsd
    from torch.utils.data.distributed import DistributedSampler

    workers = cfg.workers if cfg.workers is not None else (0 if physical_cores() <= 2 else min(4, physical_cores() // 2))
    det = deterministic_transforms(spec)
    rand = random_transforms(spec, cfg.samples_per_case, cfg.pos_fraction, cfg.augment, cfg.domain_augment)
    rand.insert(1, DeleteItemsd(keys=["label_fg", "label_bg"]))
    # copy_cache=False: the random part never writes into the cached tensors (crops are re-made by the
    # following transforms), so the per-item deep copy of the volume and its crop indices is skipped.
    train_ds = CacheDataset(train_files, Compose(det + rand), cache_rate=cfg.cache_rate, num_workers=max(1, n_threads),
                            progress=cfg.progress and env.is_main, copy_cache=False)
    sampler = DistributedSampler(train_ds, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.seed, drop_last=False)
    gen = torch.Generator()
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=list_data_collate, generator=gen, persistent_workers=False)
    val_loader = None
    if env.is_main and val_files:
        val_ds = CacheDataset(val_files, Compose(det[:-3] + [det[-1]]), cache_rate=1.0,
                              num_workers=max(1, n_threads), progress=False)
        val_loader = DataLoader(val_ds, batch_size=1, num_workers=0)
    return train_ds, sampler, gen, loader, val_loader


def _make_network(cfg: TrainConfig, spec: ModelSpec, device: torch.device, resume: bool) -> torch.nn.Module:
    """The spec's network on ``device``; with ``--init-from`` (and not resuming) another run's weights."""
    net = build_network(spec).to(device)  # (channels_last_3d measured 3x slower on CPU here)
    if cfg.init_from and not resume:  # fine-tune: start from another run's weights (same network)
        init = load_checkpoint(cfg.init_from)
        try:
            net.load_state_dict(init.state_dict, strict=True)
        except RuntimeError as exc:
            raise DatasetError(f"--init-from {cfg.init_from}: its weights do not fit this network ({str(exc).splitlines()[0]}).") from exc
    return net


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch schedule: lr(epoch) = ``cfg.lr * lr_factor(cfg.schedule, epoch, cfg.epochs)`` (a pure function
    of the epoch, see :func:`training.config.lr_factor`)."""
    lr_factor(cfg.schedule, 0, cfg.epochs)  # unknown schedules fail here
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg.schedule, e, cfg.epochs))


def _setup_fold(cfg: TrainConfig, info: DatasetInfo, fp: dict[str, Any], split: dict[str, list[str]], run_dir: Path,
                resume: bool, env: DistEnv) -> FoldRun:
    """Seed, then build the data loaders, network, loss, optimiser and schedule of one fold (in this order)."""
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    import warnings

    warnings.filterwarnings("ignore", message="Num foregrounds 0")  # lesion-free cases: negative crops only
    n_threads = configure_threads(env)
    device = _device(cfg, env)
    set_determinism(seed=cfg.seed)
    spec = build_spec(cfg, info, fp)
    run_dir.mkdir(parents=True, exist_ok=True)
    by_name = {c["name"]: c for c in info.training}
    train_files = [by_name[n] for n in split["train"]]
    val_files = [by_name[n] for n in split["val"]]
    if not train_files:
        raise DatasetError("No training cases left after the validation split.")
    train_ds, sampler, gen, loader, val_loader = _make_loaders(cfg, spec, train_files, val_files, env, n_threads)
    net = _make_network(cfg, spec, device, resume)
    model = wrap_model(net, env, device)
    # nnU-Net's convention: Dice over foreground classes only, pooled over the batch ("batch Dice"), so
    # a crop without some class does not turn every false-positive voxel of it into a full Dice loss
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=not cfg.batch_dice, batch=cfg.batch_dice)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_schedule(opt, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    return FoldRun(cfg, env, spec, device, n_threads, run_dir, len(train_files), len(val_files), train_ds, sampler, gen,
                   loader, val_loader, net, model, loss_fn, opt, sched, scaler, use_amp)


def _train_fold(cfg: TrainConfig, info: DatasetInfo, fp: dict[str, Any], split: dict[str, list[str]], run_dir: Path, resume: bool, env: DistEnv,
                on_epoch_end: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train one fold (or the single holdout split) into ``run_dir``; rank 0 writes the files and logs."""
    from monai.data import set_track_meta
    from tqdm import tqdm

    fold = _setup_fold(cfg, info, fp, split, run_dir, resume, env)
    progress = resume_progress(fold) if resume else Progress()
    tb = open_tensorboard(run_dir) if env.is_main else None
    if cfg.cache_rate >= 1:  # after caching: random transforms and the network need no metadata (faster);
        set_track_meta(False)  # uncached cases still need it (orientation and spacing read the affine)
    progress.start_clock()
    try:
        for epoch in range(progress.epoch, cfg.epochs):
            progress.epoch = epoch
            t0 = time.perf_counter()
            mean_loss, n_iters, lr = run_epoch(fold, epoch)
            val_dice = validate_if_due(fold, epoch)
            dt = time.perf_counter() - t0
            save_best = env.is_main and record_epoch(fold, progress, epoch + 1, mean_loss, val_dice, n_iters, dt, lr)
            progress.epoch = epoch + 1  # epochs completed
            if env.is_main:
                save_epoch(fold, progress, save_best, tb, mean_loss, val_dice)
                msg = f"epoch {progress.epoch}/{cfg.epochs} loss {mean_loss:.4f}" + (f" val Dice {val_dice:.4f}" if val_dice is not None else "") + f" ({dt:.1f} s)"
                if cfg.progress:
                    tqdm.write(msg)
            barrier(env)
            if on_epoch_end is not None:
                on_epoch_end(progress.epoch)
            if cfg.max_minutes and progress.elapsed_s() > 60 * cfg.max_minutes:
                if env.is_main and cfg.progress:
                    tqdm.write(f"stopping: time budget of {cfg.max_minutes} min reached")
                break
    except KeyboardInterrupt:
        if env.is_main:
            save_last(fold, progress, interrupted=True)
        raise TrainingInterrupted(f"Training interrupted at epoch {progress.epoch + 1}; {fold.last_path} was saved (resume with --resume).") from None
    finally:
        set_track_meta(True)
        if tb is not None:
            tb.close()
    if env.is_main and progress.history:
        plot_curves(run_dir, progress.history)
    return {"run_dir": str(run_dir), "best_val_dice": progress.best, "best_epoch": progress.best_epoch, "epochs": progress.epoch,
            "history": progress.history, "best": str(fold.best_path), "last": str(fold.last_path)}
