"""Training throughput: seg-train's loop vs a plain MONAI tutorial-style loop (same data, network, patch, batch).

    .venv/bin/python benchmarks/bench_train.py [--cases 8] [--iters 20] [--patch 48] [--repeats 2]

Both loops train the same UNet with DiceCELoss + AdamW on the same synthetic cases (``seg-train synth``,
seed 99), the same patch size and batch (2 cases x 2 crops). What differs is the data pipeline:

* tutorial: ``Dataset`` (no cache) with LoadImaged / EnsureChannelFirstd / Orientationd / Spacingd /
  NormalizeIntensityd, then RandCropByPosNegLabeld (foreground indices searched every time) and the
  standard augmentations, ``DataLoader(num_workers=min(4, cpus), shuffle=True)``, default torch threads;
* ours (``training.data``): the shared preprocessing cached once in ``CacheDataset`` with
  pre-computed crop indices, metadata tracking off after caching (``set_track_meta(False)``), crop
  first then augment the small patch,
  ``num_workers`` 0 on <= 2 cores, one torch thread per physical core.

Prints steady-state iterations/s of each (after a warm-up), the one-off cache build time, and the ratio.
Runs alternate (ours, tutorial, ours, ...) so load from other processes affects both alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_spec(data: Path, patch: int):
    from training.data import read_dataset
    from training.train import TrainConfig, build_spec
    from training.data import fingerprint

    info = read_dataset(data)
    cfg = TrainConfig(data=str(data), patch_size=[patch] * 3)
    return info, build_spec(cfg, info, fingerprint(info))


def tutorial_loader(files, spec, batch: int, samples: int):
    from monai.data import DataLoader, Dataset
    from monai.transforms import (
        Compose, EnsureChannelFirstd, LoadImaged, NormalizeIntensityd, Orientationd, RandAffined,
        RandCropByPosNegLabeld, RandFlipd, RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd, Spacingd,
        SpatialPadd,
    )

    roi = list(spec.inference.roi_size)
    t = Compose([
        LoadImaged(keys=["image", "label"]),
        EnsureChannelFirstd(keys=["image", "label"]),
        Orientationd(keys=["image", "label"], axcodes="RAS"),
        Spacingd(keys=["image", "label"], pixdim=spec.target_spacing, mode=("bilinear", "nearest")),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        SpatialPadd(keys=["image", "label"], spatial_size=roi),
        RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=roi, pos=2, neg=1,
                               num_samples=samples, image_key="image", image_threshold=0),
        RandAffined(keys=["image", "label"], prob=0.3, rotate_range=[0.26] * 3, scale_range=[0.12] * 3,
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
        RandFlipd(keys=["image", "label"], prob=0.2, spatial_axis=1),
        RandFlipd(keys=["image", "label"], prob=0.2, spatial_axis=2),
        RandScaleIntensityd(keys="image", factors=0.15, prob=0.3),
        RandShiftIntensityd(keys="image", offsets=0.15, prob=0.3),
        RandGaussianNoised(keys="image", std=0.05, prob=0.15),
    ])
    workers = min(4, os.cpu_count() or 1)
    return DataLoader(Dataset(files, t), batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=True), 0.0


def our_loader(files, spec, batch: int, samples: int):
    from monai.data import CacheDataset, DataLoader, list_data_collate
    from monai.transforms import Compose, DeleteItemsd

    from training.data import deterministic_transforms, random_transforms

    rand = random_transforms(spec, samples)
    rand.insert(1, DeleteItemsd(keys=["label_fg", "label_bg"]))
    t0 = time.perf_counter()
    ds = CacheDataset(files, Compose(deterministic_transforms(spec) + rand), cache_rate=1.0, num_workers=1, progress=False,
                      copy_cache=False)
    cache_s = time.perf_counter() - t0
    return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0, collate_fn=list_data_collate), cache_s


def time_loop(loader, spec, iters: int, warmup: int, threads: int | None, track_meta: bool = True) -> float:
    """Steady-state training iterations per second (data loading included)."""
    from monai.data import set_track_meta
    from monai.losses import DiceCELoss

    set_track_meta(track_meta)

    from seg_app.core.spec import build_network

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_network(spec)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    done, t0 = 0, 0.0
    while done < warmup + iters:
        for batch in loader:
            if done == warmup:
                t0 = time.perf_counter()
            opt.zero_grad()
            loss = loss_fn(net(batch["image"]), batch["label"])
            loss.backward()
            opt.step()
            done += 1
            if done >= warmup + iters:
                break
    return iters / (time.perf_counter() - t0)


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data", default=None, help="existing MSD dataset (default: synthesise one)")
    a = p.parse_args()

    from monai.data import set_track_meta

    from training.synth import write_dataset
    from training.train import physical_cores

    tmp = tempfile.TemporaryDirectory()
    data = Path(a.data) if a.data else write_dataset(Path(tmp.name) / "data", a.cases, seed=99, progress=False)
    info, spec = make_spec(data, a.patch)
    files = [{"image": c["image"], "label": c["label"]} for c in info.training]
    default_threads = torch.get_num_threads()
    ours, tut, cache = [], [], []
    for r in range(a.repeats):
        loader, c = our_loader(files, spec, 2, 2)
        cache.append(c)
        ours.append(time_loop(loader, spec, a.iters, a.warmup, physical_cores(), track_meta=False))
        set_track_meta(True)
        loader, _ = tutorial_loader(files, spec, 2, 2)
        tut.append(time_loop(loader, spec, a.iters, a.warmup, default_threads))
        del loader
        print(f"repeat {r + 1}: ours {ours[-1]:.3f} it/s, tutorial {tut[-1]:.3f} it/s", flush=True)
    o, t = statistics.median(ours), statistics.median(tut)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {physical_cores()} physical cores; "
          f"torch {torch.__version__}")
    print(f"data: {len(files)} cases, spacing {spec.target_spacing}, patch {a.patch}^3, batch 2 cases x 2 crops, "
          f"UNet {spec.network.kwargs['channels']}")
    print(f"ours: {o:.3f} it/s (cache build {statistics.median(cache):.1f} s once); tutorial: {t:.3f} it/s; "
          f"ratio {o / t:.2f}x")


if __name__ == "__main__":
    main()
