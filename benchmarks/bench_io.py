"""Benchmark: ``list_series`` + ``load_scan`` against SimpleITK's ImageSeriesReader (GDCM).

Builds a CT-sized series (default 512 x 512 x 300, int16 values, one file per slice) in a temporary
folder, then runs each reader several times, alternating, each run in a fresh subprocess so that its
peak resident memory (VmHWM, else ``ru_maxrss``) is its own. Times are wall-clock seconds for the work after
imports (import time is printed separately); the page cache is warm for both readers.

    .venv/bin/python benchmarks/bench_io.py              # full size
    .venv/bin/python benchmarks/bench_io.py --slices 60  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_PRELUDE = r"""
import json, resource, sys, time
def peak_kib():
    # VmHWM is this process's own high-water mark (ru_maxrss on Linux also counts the parent's
    # memory before exec, so it is only the fallback)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

CHILD_OURS = CHILD_PRELUDE + r"""
t0 = time.perf_counter()
from seg_app.core import list_series, load_scan
t1 = time.perf_counter()
rss0 = peak_kib()
infos = list_series(sys.argv[1])
t2 = time.perf_counter()
vol = load_scan(sys.argv[1], series_uid=infos[0].series_uid)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "list_s": t2 - t1, "load_s": t3 - t2, "total_s": t3 - t1,
                  "rss_after_import_kib": rss0,
                  "maxrss_kib": peak_kib(),
                  "shape": list(vol.array.shape), "dtype": str(vol.array.dtype),
                  "sum": float(vol.array.sum(dtype="float64"))}))
"""

CHILD_SITK = CHILD_PRELUDE + r"""
t0 = time.perf_counter()
import SimpleITK as sitk
t1 = time.perf_counter()
rss0 = peak_kib()
reader = sitk.ImageSeriesReader()
uids = reader.GetGDCMSeriesIDs(sys.argv[1])
files = reader.GetGDCMSeriesFileNames(sys.argv[1], uids[0])
t2 = time.perf_counter()
reader.SetFileNames(files)
img = reader.Execute()
arr = sitk.GetArrayViewFromImage(img)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "list_s": t2 - t1, "load_s": t3 - t2, "total_s": t3 - t1,
                  "rss_after_import_kib": rss0,
                  "maxrss_kib": peak_kib(),
                  "shape": list(arr.shape), "dtype": str(arr.dtype),
                  "sum": float(arr.sum(dtype="float64"))}))
"""


def build_series(folder: Path, size: int, slices: int) -> None:
    """Write a synthetic CT (int16 HU-like values, uint16 stored with intercept -1024)."""
    import numpy as np

    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.volume import Volume

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (0.4 * size) ** 2)
    arr = np.empty((size, size, slices), dtype=np.int16)
    for k in range(slices):
        arr[:, :, k] = np.where(body, 40, -1000) + rng.integers(-20, 20, (size, size), dtype=np.int16)
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])
    affine[:3, 3] = [180.0, 180.0, -150.0]
    write_dicom_series(Volume(arr, affine), folder, modality="CT", series_description="bench CT")


def run_child(code: str, folder: Path) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    ap.add_argument("--slices", type=int, default=300, help="number of slices (default 300)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per reader (default 5)")
    ap.add_argument("--folder", type=Path, help="reuse/keep the series in this folder")
    args = ap.parse_args(argv)

    import numpy as np
    import pydicom
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp:
        folder = args.folder or Path(tmp) / "ct"
        if not (folder.exists() and any(folder.iterdir())):
            t = time.perf_counter()
            build_series(folder, args.size, args.slices)
            print(f"built {args.slices} slices of {args.size}x{args.size} in {time.perf_counter() - t:.1f} s")
        n_vox = args.size * args.size * args.slices
        float32_mb = n_vox * 4 / 2**20
        runs: dict[str, list[dict]] = {"seg_app": [], "SimpleITK": []}
        run_child(CHILD_OURS, folder)  # warm the page cache for both
        for _ in range(args.repeat):
            runs["seg_app"].append(run_child(CHILD_OURS, folder))
            runs["SimpleITK"].append(run_child(CHILD_SITK, folder))
        a, b = runs["seg_app"][0], runs["SimpleITK"][0]
        same = np.isclose(a["sum"], b["sum"], rtol=1e-9)

        print(f"machine: {machine()}")
        print(f"pydicom {pydicom.__version__}, SimpleITK {sitk.Version.VersionString()}, numpy {np.__version__}")
        print(f"series: {args.size}x{args.size}x{args.slices} int16, volume as float32 = {float32_mb:.0f} MiB; "
              f"identical voxel sums: {same}")
        med = {}
        for name, rs in runs.items():
            m = {k: statistics.median(r[k] for r in rs) for k in ("import_s", "list_s", "load_s", "total_s")}
            peak = max(r["maxrss_kib"] for r in rs) / 1024
            base = statistics.median(r["rss_after_import_kib"] for r in rs) / 1024
            med[name] = m["total_s"]
            print(f"{name:10s} list {m['list_s']:.3f} s + load {m['load_s']:.3f} s = {m['total_s']:.3f} s "
                  f"(median of {len(rs)}; best {min(r['total_s'] for r in rs):.3f} s); import {m['import_s']:.2f} s; "
                  f"peak RSS {peak:.0f} MiB ({peak / float32_mb:.2f}x the float32 volume; "
                  f"{base:.0f} MiB after imports); output {rs[0]['dtype']}")
        print(f"ratio seg_app / SimpleITK (median total): {med['seg_app'] / med['SimpleITK']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
