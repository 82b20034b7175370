"""Desktop-app benchmarks (offscreen Qt): slice frame time and event-loop latency during inference.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui.py [--frames 200] [--model CKPT] [--scan PATH]

1. **Frame time**: a synthetic 512 x 512 x 120 CT (float32 HU) with a label overlay in a real
   ``SliceView`` (700 x 700 px). Each frame moves the crosshair one slice (new plane) and calls
   ``repaint()`` (synchronous paint: numpy windowing + overlay compositing + QImage + Qt's scaled draw).
   Reported per overlay mode (filled, outline, filled + probability heat map). Goal <= 8 ms/frame.
2. **Event-loop latency during inference**: the main window segments a scan in its worker thread
   while a 10 ms ``QTimer`` on the GUI thread records how late each tick fires. Goal <= 50 ms
   (max over the run). Model: ``--model``, else the bundled model, else a random-weight UNet of the
   bundled model's size (16-32-64-128 channels, 96^3 ROI) so the load on the CPU is realistic.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_ct(shape=(512, 512, 120), seed=0):
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x**2 / 0.8 + y**2 / 0.6) < 1
    slab = np.where(body, 40.0, -1000.0).astype(np.float32)
    vol = np.repeat(slab[:, :, None], shape[2], axis=2)
    vol += rng.normal(0, 15, size=(shape[0], shape[1], 1)).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    zz = np.arange(shape[2])[None, None, :]
    for cx, cy, r, lab in ((0.2, 0.1, 0.15, 1), (-0.3, -0.2, 0.08, 2), (0.0, 0.4, 0.05, 1)):
        d = ((x - cx) ** 2 + (y - cy) ** 2)[:, :, None] + ((zz - shape[2] / 2) / shape[2]) ** 2
        labels[d < r**2] = lab
    vol[labels > 0] += 60
    prob = np.clip(labels.astype(np.float32) * 0.8 + 0.05, 0, 1)
    return vol, labels, prob


def bench_frames(n_frames: int, layout: str = "F") -> dict[str, dict[str, float]]:
    """Frame times per overlay mode; ``layout`` "F" = axial planes contiguous (what ``load_scan`` returns
    for NIfTI and DICOM), "C" = the worst case (axial planes strided)."""
    from PySide6.QtWidgets import QApplication

    from seg_app.gui.render import label_luts
    from seg_app.gui.slice_view import SliceView, ViewData
    from seg_app.gui.viewer_state import DisplayGeometry, ViewerState

    app = QApplication.instance() or QApplication([])
    vol, labels, prob = synthetic_ct()
    if layout == "F":
        vol, labels, prob = (np.asfortranarray(a) for a in (vol, labels, prob))
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    geom = DisplayGeometry.from_affine(affine, vol.shape)
    state = ViewerState()
    state.set_geometry(geom)
    state.set_window(400, 40)
    lut, vis = label_luts([(1, (230, 60, 60)), (2, (60, 200, 80))])
    data = ViewData(image=geom.view(vol), labels=geom.view(labels), probability=geom.view(prob), lut_rgb=lut, lut_visible=vis)
    view = SliceView("axial", state, data)
    view.resize(700, 700)
    view.show()
    app.processEvents()
    results = {}
    for mode, settings in (
        ("no overlay", dict(visible=False, outline=False, heatmap=False)),
        ("filled labels", dict(outline=False, heatmap=False)),
        ("outlined labels", dict(outline=True, heatmap=False)),
        ("filled labels + heat map", dict(outline=False, heatmap=True)),
    ):
        state.set_overlay(**{"visible": True, **settings})
        wall, cpu, render_cpu = [], [], []
        for n in range(n_frames + 10):
            z = 10 + n % (vol.shape[2] - 20)
            t0, c0 = time.perf_counter(), time.thread_time()
            state.set_cursor((256, 256, z))
            c1 = time.thread_time()
            view._layers()  # the numpy part of a frame (what paintEvent draws)
            c2 = time.thread_time()
            view.repaint()
            t3, c3 = time.perf_counter(), time.thread_time()
            if n >= 10:  # warm-up
                wall.append((t3 - t0) * 1000)
                cpu.append((c3 - c0) * 1000)
                render_cpu.append((c2 - c1) * 1000)
        results[mode] = {
            "wall_median_ms": statistics.median(wall),
            "wall_p95_ms": float(np.percentile(wall, 95)),
            "cpu_median_ms": statistics.median(cpu),
            "cpu_p95_ms": float(np.percentile(cpu, 95)),
            "numpy_cpu_median_ms": statistics.median(render_cpu),
        }
    view.close()
    return results


def _bundled_or_standin(model: str | None, tmp: Path) -> tuple[str, str]:
    from seg_app.core.spec import default_model_path

    if model:
        return model, f"given checkpoint {Path(model).name}"
    if default_model_path().is_file():
        return str(default_model_path()), "bundled model"
    import torch

    from seg_app.core.spec import (
        ChannelSpec, InferenceSpec, LabelSpec, ModelSpec, NetworkSpec, build_network, save_checkpoint,
    )

    spec = ModelSpec(
        name="latency-standin",
        network=NetworkSpec("UNet", {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2}),
        channels=(ChannelSpec("T1", "MR"),),
        labels=(LabelSpec(0, "background"), LabelSpec(1, "tumour")),
        target_spacing=(1.5, 1.5, 1.5),
        inference=InferenceSpec(roi_size=(96, 96, 96), overlap=0.25, sw_batch_size=1),
    )
    path = tmp / "standin.pt"
    torch.manual_seed(0)
    save_checkpoint(path, spec, build_network(spec).state_dict())
    return str(path), "random-weight UNet 16-32-64-128, ROI 96^3 (bundled model not present)"


def bench_latency(model: str | None, scan: str | None, interval_ms: int = 10, tta: bool = False) -> dict[str, float | str]:
    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from seg_app.gui.main_window import MainWindow
    from seg_app.gui.workers import wait_for

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        ckpt, model_desc = _bundled_or_standin(model, tmp)
        if scan is None:
            default = Path(__file__).resolve().parent.parent / "sample_scans" / "brain_tumour_mri.nii.gz"
            scan = str(default)
        win = MainWindow(settings=QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat), model_path=ckpt, interactive=False)
        win.resize(1400, 900)
        win.show()
        wait_for(win.open_path(scan))
        if win.model_job is not None:
            wait_for(win.model_job)
        win.tta_check.setChecked(tta)
        lateness: list[float] = []
        clock = QElapsedTimer()
        last = {"t": 0}

        stamps: list[float] = []

        def tick() -> None:
            now = clock.elapsed()
            lateness.append(max(0.0, now - last["t"] - interval_ms))
            stamps.append(time.perf_counter())
            last["t"] = now
            # repaint a view on every tick, as scrolling would, so paints compete with the worker too
            win.views["axial"].update()

        timer = QTimer()
        timer.setTimerType(__import__("PySide6.QtCore", fromlist=["Qt"]).Qt.TimerType.PreciseTimer)
        timer.timeout.connect(tick)
        # baseline: 1 s idle
        clock.start()
        timer.start(interval_ms)
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.001)
        baseline = list(lateness)
        lateness.clear()
        stamps.clear()
        t0 = time.perf_counter()
        job = win.start_segmentation()
        ok = wait_for(job)
        seconds = time.perf_counter() - t0
        during = list(lateness)
        timer.stop()
        worst = sorted(zip(during, stamps), reverse=True)[:5]
        worst_at = ", ".join(f"{lat:.0f} ms at {t - t0:.1f} s" for lat, t in worst)
        result = win.last_result
        n_lesions = len(win.lesions)
        win.setWindowModified(False)
        win.close()
        app.processEvents()
    return {
        "model": model_desc,
        "scan": Path(scan).name,
        "device": getattr(result, "device", "?"),
        "inference_s": seconds,
        "ticks": len(during),
        "idle_max_ms": max(baseline) if baseline else float("nan"),
        "max_ms": max(during) if during else float("nan"),
        "p99_ms": float(np.percentile(during, 99)) if during else float("nan"),
        "median_ms": float(np.median(during)) if during else float("nan"),
        "finished": bool(ok),
        "lesions": n_lesions,
        "worst": worst_at,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--model", default=None)
    p.add_argument("--scan", default=None)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    args = p.parse_args(argv)
    import PySide6
    import torch

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"PySide6 {PySide6.__version__}, torch {torch.__version__}, platform {os.environ.get('QT_QPA_PLATFORM')}")
    for layout, desc in (("F", "axial planes contiguous, as load_scan returns them"), ("C", "C-order array, axial planes strided: worst case")):
        print(f"\nFrame time, axial 512x512 plane of a 512x512x120 CT ({desc}), 700x700 view, one slice step per frame "
              f"({args.frames} frames; wall clock and GUI-thread CPU time):")
        frames = bench_frames(args.frames, layout)
        print("| overlay | wall median ms | wall p95 ms | CPU median ms | CPU p95 ms | numpy layers CPU median ms |")
        print("| --- | --- | --- | --- | --- | --- |")
        for mode, r in frames.items():
            print(f"| {mode} | {r['wall_median_ms']:.2f} | {r['wall_p95_ms']:.2f} | {r['cpu_median_ms']:.2f} | "
                  f"{r['cpu_p95_ms']:.2f} | {r['numpy_cpu_median_ms']:.2f} |")
    if not args.skip_latency:
        lat = bench_latency(args.model, args.scan, tta=args.tta)
        print(f"\nEvent-loop latency during inference ({lat['model']}, {lat['scan']}, device {lat['device']}, "
              f"{'TTA, ' if args.tta else ''}{lat['inference_s']:.1f} s, {lat['ticks']} ticks of a 10 ms timer, "
              f"{lat['lesions']} lesion(s)):")
        print(f"  lateness: max {lat['max_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, median {lat['median_ms']:.1f} ms "
              f"(idle baseline max {lat['idle_max_ms']:.1f} ms); finished: {lat['finished']}")
        print(f"  worst ticks: {lat['worst']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
