"""Cohort throughput: ``seg-app predict`` over 20 scans, one after another vs pipelined.

    .venv/bin/python benchmarks/bench_cohort.py [--scans 20] [--size brats|sample] [--repeats 1]
                                                [--prefetch 2] [--model CKPT] [--threads N]

Input: ``--scans`` copies of one realistic-size scan: by default the bundled sample scan embedded in a
240 x 240 x 155, 1 mm grid (BraTS size; the input of ``bench_inference.py``); ``--size sample`` uses
the sample scan as it is (104 x 132 x 113 at 1.5 mm). Model: ``--model``, else the bundled model.

Both modes run ``seg-app predict SCAN... --out DIR`` (NIfTI + JSON + CSV per scan) with the model
loaded once:

* sequential: ``--prefetch 0``, every stage of a scan on one thread, one scan after another;
* pipelined: ``--prefetch N`` (default 2): the next scans are read and preprocessed in background
  threads while the network runs, and the previous scan is mapped back, measured and written on a
  writer thread; ONNX Runtime's idle threads sleep instead of spinning (``Segmenter(cpu_spinning=False)``)
  so that those threads get the cores. ``--diagnose`` adds "sequential, no spinning" (one scan after
  another with that setting) to tell the two effects apart.

Each run is a fresh subprocess (Python imports excluded from the clock, model loading included),
alternating sequential / pipelined ``--repeats`` times; the ONNX cache is warmed by one untimed scan
first. Printed: scans/hour of each (median), the ratio, CPU seconds per scan (user + sys of the
child), and from a separate child where one scan's time goes, stage by stage. Results and machine
details: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


# ---- children --------------------------------------------------------------------------------
def child_run(scans: list[str], model: str, out: str, prefetch: int, no_spinning: bool = False) -> dict:
    import functools

    from seg_app.core import inference, io, measure  # noqa: F401 - imports before the clock
    from seg_app.predict_cli import predict_command

    if no_spinning:  # diagnostic: one scan after another, ONNX Runtime's threads not spinning (as in the pipeline)
        inference.Segmenter = functools.partial(inference.Segmenter, cpu_spinning=False)

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    rc = predict_command([*scans, "--model", model, "--out", out, "--device", "cpu", "--prefetch", str(prefetch)])
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    if rc != 0:
        raise SystemExit(f"predict failed with status {rc}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"seconds": dt, "cpu_seconds": cpu, "scans": len(scans)}


def child_stages(scans: list[str], model: str, out: str) -> dict:
    """Seconds per stage of a few scans run one stage after another (no overlap)."""
    from seg_app.core.inference import Segmenter
    from seg_app.predict_io import load_input, write_scan

    seg = Segmenter(model, device="cpu")
    seg.segment(load_input(scans[0], None, ["nifti"]).volume)  # backend chosen, caches warm
    acc: dict[str, list[float]] = {k: [] for k in ("read", "preprocess", "network", "back_to_source", "measure_write")}
    for i, path in enumerate(scans):
        t = time.perf_counter()
        loaded = load_input(path, None, ["nifti", "json", "csv"])
        acc["read"].append(time.perf_counter() - t)
        t = time.perf_counter()
        prep = seg.prepare(loaded.volume)
        acc["preprocess"].append(time.perf_counter() - t)
        t = time.perf_counter()
        pred = seg.predict_prepared(prep)
        acc["network"].append(time.perf_counter() - t)
        t = time.perf_counter()
        result = seg.finish(prep, pred)
        acc["back_to_source"].append(time.perf_counter() - t)
        t = time.perf_counter()
        write_scan(loaded, result, Path(out), f"s{i}", model, False)
        acc["measure_write"].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in acc.items()} | {"device": result.device, "threads": seg.threads}


def run_child(args: list[str], threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- inputs ----------------------------------------------------------------------------------
def make_scans(folder: Path, n: int, size: str) -> tuple[list[str], str]:
    import nibabel as nib

    sample = ROOT / "sample_scans" / "brain_tumour_mri.nii.gz"
    first = folder / "scan00.nii.gz"
    if size == "brats":
        from bench_inference import make_input

        what = make_input(first)
    else:
        shutil.copyfile(sample, first)
        what = f"sample scan {sample.name}"
    shape = nib.load(first).shape
    for i in range(1, n):
        shutil.copyfile(first, folder / f"scan{i:02d}.nii.gz")
    mb = first.stat().st_size / 1e6
    return sorted(str(p) for p in folder.glob("scan*.nii.gz")), f"{n} copies of {what} ({'x'.join(map(str, shape))}, {mb:.1f} MB gzipped)"


def machine() -> str:
    """bench_inference's machine line (CPU, cores, Python, torch) plus the ONNX Runtime version."""
    import onnxruntime
    from bench_inference import machine as cpu_torch_line

    return f"{cpu_torch_line()}, onnxruntime {onnxruntime.__version__}"


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=20)
    ap.add_argument("--size", choices=["brats", "sample"], default="brats")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--prefetch", type=int, default=2, help="--prefetch of the pipelined runs")
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the children")
    ap.add_argument("--diagnose", action="store_true",
                    help="also run 'sequential, no spinning': one scan after another with ONNX Runtime's idle threads "
                         "sleeping as in the pipeline (how much of the gain is the overlap itself)")
    ap.add_argument("--child", choices=["run", "stages"], help=argparse.SUPPRESS)
    ap.add_argument("--no-spinning", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--list", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        scans = Path(args.list).read_text().split()
        res = (child_run(scans, args.model, args.out, args.prefetch, args.no_spinning) if args.child == "run"
               else child_stages(scans, args.model, args.out))
        print(json.dumps(res))
        return 0

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        os.environ["SEG_APP_CACHE"] = str(tmp / "cache")
        (tmp / "scans").mkdir()
        scans, what = make_scans(tmp / "scans", args.scans, args.size)
        lst = tmp / "scans.txt"
        lst.write_text("\n".join(scans) + "\n")
        few = tmp / "few.txt"
        few.write_text("\n".join(scans[:4]) + "\n")
        model = args.model or str(ROOT / "seg_app" / "models" / "default_brain_tumour.pt")
        print(f"machine: {machine()}")
        print(f"load average at start (1/5/15 min): {load_average()}")
        print(f"input:   {what}")
        from seg_app.core.spec import load_checkpoint

        spec = load_checkpoint(model).spec
        print(f"model:   {model} ({spec.name} v{spec.version}, ROI {'x'.join(map(str, spec.inference.roi_size))}, "
              f"{'x'.join(f'{s:g}' for s in spec.target_spacing)} mm)")
        (tmp / "warm").mkdir()
        warm = run_child(["--child", "stages", "--list", str(few), "--model", model, "--out", str(tmp / "warm")], args.threads)
        total = sum(v for k, v in warm.items() if isinstance(v, float))
        print(f"one scan, stage by stage (median of {min(4, len(scans))}; {warm['device']}, "
              f"{warm['threads']} threads): " + ", ".join(f"{k} {v:.2f} s" for k, v in warm.items() if isinstance(v, float))
              + f"; total {total:.2f} s, network {100 * warm['network'] / total:.0f} %")
        modes = [("sequential", 0, False), ("pipelined", args.prefetch, False)]
        if args.diagnose:
            modes.append(("sequential, no spinning", 0, True))
        runs: dict[str, list[dict]] = {m: [] for m, _p, _s in modes}
        for i in range(args.repeats):
            for mode, prefetch, no_spin in modes:
                out = tmp / f"run{i}-{prefetch}-{int(no_spin)}"
                res = run_child(["--child", "run", "--list", str(lst), "--model", model, "--out", str(out),
                                 "--prefetch", str(prefetch), *(["--no-spinning"] if no_spin else [])], args.threads)
                runs[mode].append(res)
                shutil.rmtree(out, ignore_errors=True)
                print(f"  {mode:<10} run {i + 1}: {res['seconds']:.1f} s for {res['scans']} scans = "
                      f"{3600 * res['scans'] / res['seconds']:.0f} scans/hour, CPU {res['cpu_seconds'] / res['scans']:.2f} s/scan "
                      f"(load average {load_average()})")
        rate = {m: statistics.median(3600 * r["scans"] / r["seconds"] for r in rs) for m, rs in runs.items()}
        cpu = {m: statistics.median(r["cpu_seconds"] / r["scans"] for r in rs) for m, rs in runs.items()}
        print(f"sequential: {rate['sequential']:.0f} scans/hour ({cpu['sequential']:.2f} CPU s/scan)")
        print(f"pipelined:  {rate['pipelined']:.0f} scans/hour ({cpu['pipelined']:.2f} CPU s/scan), --prefetch {args.prefetch}")
        if args.diagnose:
            m = "sequential, no spinning"
            print(f"{m}: {rate[m]:.0f} scans/hour ({cpu[m]:.2f} CPU s/scan); pipelined / this: "
                  f"{rate['pipelined'] / rate[m]:.2f}x")
        print(f"ratio pipelined / sequential: {rate['pipelined'] / rate['sequential']:.2f}x (goal >= 1.5x)")
        print(f"load average at end (1/5/15 min): {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
