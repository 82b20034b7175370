"""Benchmark: ``seg-app predict`` vs a plain MONAI inference script (same network, weights, ROI).

    python benchmarks/bench_inference.py [--model CKPT] [--repeats N] [--threads N]

Input: a 240x240x155 MRI-sized volume at 1 mm (the sample scan embedded in that grid when it exists,
otherwise a synthetic head with a tumour). Model: ``--model``, else the bundled model, else a
random-weight UNet (16-32-64-128, ROI 64^3, 1 mm) written to a temporary checkpoint.

Each pipeline runs in its own fresh subprocess (so peak RSS = ``ru_maxrss`` of that process alone),
alternating, ``--repeats`` times; the median is reported. Times are from "file path given" to "mask
written" (model loading, reading, preprocessing, inference, resampling back, writing) with the Python
imports done before the clock starts. Our run also writes the JSON/CSV measurements. The ONNX cache is
warmed once before timing (that one-off export is reported separately).

Reference (MONAI tutorial style): LoadImaged -> EnsureChannelFirstd -> Orientationd(RAS) ->
Spacingd(model spacing) -> NormalizeIntensityd(nonzero, channel_wise) -> ``sliding_window_inference``
(ROI, overlap 0.5, Gaussian, spec's sw_batch_size, defaults otherwise) under ``torch.no_grad`` in
fp32 eager -> softmax -> Invertd (bilinear) -> argmax -> NIfTI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (240, 240, 155)


# ---- children --------------------------------------------------------------------------------
def child_ours(inp: str, model: str, out: str) -> dict:
    from seg_app.core import inference, io, measure  # noqa: F401 - imports before the clock
    from seg_app.predict_cli import predict_command

    t0 = time.perf_counter()
    rc = predict_command([inp, "--model", model, "--out", out, "--device", "cpu"])
    dt = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"predict failed with status {rc}")
    mask = next(Path(out).glob("*_labels.nii.gz"))
    return {"seconds": dt, "mask": str(mask)}


def child_reference(inp: str, model: str, out: str) -> dict:
    import nibabel as nib
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        Activationsd,
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        Spacingd,
    )

    from seg_app.core.spec import load_model

    t0 = time.perf_counter()
    spec, net = load_model(model, "cpu")
    pre = Compose(
        [
            LoadImaged("image", image_only=False),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=spec.target_spacing, mode="bilinear"),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),
        ]
    )
    data = pre({"image": inp})
    with torch.no_grad():
        pred = sliding_window_inference(
            data["image"][None], roi_size=spec.inference.roi_size, sw_batch_size=spec.inference.sw_batch_size,
            predictor=net, overlap=0.5, mode="gaussian",
        )
    data["pred"] = pred[0]
    post = Compose(
        [
            Activationsd("pred", softmax=True),
            Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
            AsDiscreted("pred", argmax=True),
        ]
    )
    data = post(data)
    lab = np.asarray(data["pred"][0]).astype(np.uint8)
    ref = nib.load(inp)
    path = Path(out) / "reference_labels.nii.gz"
    nib.save(nib.Nifti1Image(lab, ref.affine), path)
    return {"seconds": time.perf_counter() - t0, "mask": str(path)}


def run_child(kind: str, inp: str, model: str, out: str, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--input", inp, "--model", model, "--out", out],
        capture_output=True, text=True, env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stdout}\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_seconds"] = time.perf_counter() - t0
    return res


# ---- inputs ----------------------------------------------------------------------------------
def make_input(path: Path) -> str:
    """240x240x155 at 1 mm: the sample scan embedded in that grid, else a synthetic head."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    sample = ROOT / "sample_scans" / "brain_tumour_mri.nii.gz"
    out = np.zeros(SHAPE, np.float32)
    if sample.exists():
        img = nib.as_closest_canonical(nib.load(sample))
        data = np.asarray(img.dataobj, dtype=np.float32)
        data = data[..., 0] if data.ndim == 4 else data
        zooms = img.header.get_zooms()[:3]
        if not np.allclose(zooms, 1.0, atol=1e-3):
            data = ndimage.zoom(data, zooms, order=1)
        src, dst = [], []
        for n, m in zip(data.shape, SHAPE):
            if n >= m:
                a = (n - m) // 2
                src.append(slice(a, a + m))
                dst.append(slice(0, m))
            else:
                a = (m - n) // 2
                src.append(slice(0, n))
                dst.append(slice(a, a + n))
        out[tuple(dst)] = data[tuple(src)]
        source = f"sample scan {sample.name} embedded in {SHAPE}"
    else:
        rng = np.random.default_rng(0)
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")).astype(np.float32)
        c = np.array(SHAPE, np.float32)[:, None, None, None] / 2
        r = (((ijk - c) / np.array([75, 95, 70], np.float32)[:, None, None, None]) ** 2).sum(0)
        tex = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 3) * 40
        out[r <= 1] = 300 + tex[r <= 1]
        out[(r > 0.85) & (r <= 1)] = 600
        t = (((ijk - c - np.array([20, -15, 10], np.float32)[:, None, None, None]) / 15) ** 2).sum(0) <= 1
        out[t] = 700 + tex[t]
        source = "synthetic head with a tumour"
    aff = np.eye(4)
    aff[:3, 3] = -np.array(SHAPE) / 2
    nib.save(nib.Nifti1Image(out, aff), path)
    return source


def make_model(path: Path) -> None:
    import torch

    from seg_app.core.spec import ChannelSpec, InferenceSpec, LabelSpec, ModelSpec, NetworkSpec, build_network, save_checkpoint

    spec = ModelSpec(
        name="bench-random-unet",
        network=NetworkSpec("UNet", {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1}),
        channels=(ChannelSpec("T1w"),),
        labels=(LabelSpec(0, "background"), LabelSpec(1, "tumour")),
        target_spacing=(1.0, 1.0, 1.0),
        inference=InferenceSpec(roi_size=(64, 64, 64), overlap=0.5, blend_mode="gaussian", sw_batch_size=2),
    )
    torch.manual_seed(0)
    save_checkpoint(path, spec, build_network(spec).state_dict())


def dice(a: str, b: str) -> float:
    import nibabel as nib
    import numpy as np

    x, y = np.asarray(nib.load(a).dataobj) > 0, np.asarray(nib.load(b).dataobj) > 0
    s = int(x.sum()) + int(y.sum())
    return 1.0 if s == 0 else 2.0 * int((x & y).sum()) / s


def machine() -> str:
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    import torch

    return (f"{cpu}, {len(os.sched_getaffinity(0))} usable cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both children")
    ap.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = (child_ours if args.child == "ours" else child_reference)(args.input, args.model, args.out)
        res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return 0

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        os.environ["SEG_APP_CACHE"] = str(tmp / "cache")
        inp = tmp / "mri_240x240x155.nii.gz"
        source = make_input(inp)
        bundled = ROOT / "seg_app" / "models" / "default_brain_tumour.pt"
        model = args.model or (str(bundled) if bundled.exists() else None)
        if model is None:
            model = str(tmp / "random_unet.pt")
            make_model(Path(model))
        from seg_app.core.spec import load_checkpoint, model_card

        print(f"machine: {machine()}")
        print(f"input:   {source}")
        print("model:   " + model_card(load_checkpoint(model).spec).replace("\n", "\n         "))
        (tmp / "warm").mkdir()
        warm = run_child("ours", str(inp), model, str(tmp / "warm"), args.threads)
        print(f"cold run of ours (exports ONNX + backend check once per model): {warm['seconds']:.2f} s")
        ours, ref = [], []
        for i in range(args.repeats):
            for kind, acc in (("reference", ref), ("ours", ours)):
                d = tmp / f"{kind}{i}"
                d.mkdir()
                r = run_child(kind, str(inp), model, str(d), args.threads)
                acc.append(r)
                print(f"  {kind:<9} run {i + 1}: {r['seconds']:.2f} s pipeline, {r['wall_seconds']:.2f} s process, "
                      f"peak RSS {r['maxrss_mb']:.0f} MB")
        t_o = statistics.median(r["seconds"] for r in ours)
        t_r = statistics.median(r["seconds"] for r in ref)
        w_o = statistics.median(r["wall_seconds"] for r in ours)
        w_r = statistics.median(r["wall_seconds"] for r in ref)
        m_o = statistics.median(r["maxrss_mb"] for r in ours)
        m_r = statistics.median(r["maxrss_mb"] for r in ref)
        d = dice(ours[-1]["mask"], ref[-1]["mask"])
        print(f"pipeline time:  ours {t_o:.2f} s, reference {t_r:.2f} s, ratio {t_o / t_r:.2f} (goal <= 0.5)")
        print(f"process time:   ours {w_o:.2f} s, reference {w_r:.2f} s, ratio {w_o / w_r:.2f} (incl. Python imports)")
        print(f"peak memory:    ours {m_o:.0f} MB, reference {m_r:.0f} MB, ratio {m_o / m_r:.2f} (goal <= 0.8)")
        print(f"Dice(ours, reference masks): {d:.4f} (goal >= 0.99)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
