"""``seg-app predict``: segment scans headless and write masks + measurements.

    seg-app predict INPUT... [--input-list FILE] [--model CKPT] [--out DIR] [--device auto|cpu|cuda] [--tta]
                    [--series UID] [--format nifti,json,csv,seg,sr] [--send] [--cohort] [--overwrite]
                    [--prefetch N] [--verbose] [--channel NAME=PATH ... [--reference NAME]]

For each input (NIfTI file, DICOM file or DICOM folder) it writes, into ``--out``:
``<name>_labels.nii.gz``, ``<name>_measurements.json`` and ``<name>_measurements.csv`` (and\n``<name>_seg.dcm``, a DICOM SEG, with ``--format ...,seg`` for DICOM sources). All files of
one scan are first written under temporary names and renamed at the end, so a failing scan leaves
nothing behind. An output that cannot be written (a SEG or SR for a NIfTI source -- checked before the
model runs --, a SEG refused because of the source's header values) is a warning for that output only
(stderr and the JSON's ``warnings``); the other outputs are still written.

An INPUT may also be a PACS address, ``pacs://NODE/studies/<StudyUID>[/series/<SeriesUID>]`` (nodes in
the PACS settings, docs/PACS.md): the series are retrieved into the local cache first (a cached series
is not fetched again). ``--format ...,sr`` adds ``<name>_sr.dcm``, a DICOM SR (TID 1500) of the lesion
measurements that references the SEG (so it implies ``seg``). ``--send`` stores the SEG and the SR back
on the node the scan came from (every store status is checked). Exit status: 0 when every scan succeeded, 1 when any failed,
2 for a bad command line or an unusable model.

Several inputs (or ``--input-list FILE``) run as a pipeline with the model loaded once: the next scans
are read and preprocessed in background threads (``--prefetch N``, default 2) while the network runs,
and the previous scan's outputs are written meanwhile; lines and files are the same as one scan after
another. ``--cohort`` (implied by ``--input-list`` and by ``torchrun``) makes the run resumable: a
completion record per scan, scans whose outputs are complete are skipped (``--overwrite`` redoes them),
and ``cohort_summary.csv`` lists every scan; under ``torchrun`` each rank takes its share of the list
on its own device and rank 0 writes the summary (:mod:`seg_app.core.cohort`, docs/COHORT.md).

Reading an input and writing its outputs (the format registry :data:`FORMATS`) live in
:mod:`seg_app.predict_io`; this module is the command line and the scan loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seg_app import DISCLAIMER
from seg_app.predict_io import (  # noqa: F401 - FORMATS, LoadedScan, ScanReport, write_scan: the public surface
    DEFAULT_FORMATS,
    FORMATS,
    LoadedScan,
    ScanReport,
    _retrieve_pacs,
    _send_back,
    _unique_name,
    load_input,
    write_scan,
)


def _formats(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(bad) or '(none)'}; choose from {', '.join(FORMATS)}"
        )
    names = list(dict.fromkeys(names))
    if "sr" in names and "seg" not in names:  # the SR references the SEG's segments
        names.insert(names.index("sr"), "seg")
    if "sr" in names and names.index("seg") > names.index("sr"):
        names.remove("seg")
        names.insert(names.index("sr"), "seg")
    return names


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return n


_RECORDS_DIR = "cohort_records"  # = seg_app.core.cohort.RECORDS_DIR (not imported for --help)
_SUMMARY_NAME = "cohort_summary.csv"  # = seg_app.core.cohort.SUMMARY_NAME


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seg-app predict",
        description=f"Segment scans headless and write label masks and lesion measurements. {DISCLAIMER}",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="NIfTI file, DICOM file, DICOM folder, or pacs://NODE/studies/<UID>[/series/<UID>]")
    p.add_argument("--input-list", metavar="FILE",
                   help="more inputs, one per line ('#' comments and blank lines skipped); implies --cohort")
    p.add_argument("--model", help="model checkpoint (.pt) or MONAI bundle folder (docs/MODELS.md); default: the bundled model "
                   "(always: the model chosen with seg-app models --choose is the desktop app's only)")
    p.add_argument("--trust-model", action="store_true",
                   help="allow a MONAI bundle's TorchScript models/model.ts (it is code: only for bundles you trust)")
    p.add_argument("--out", default=".", help="output folder (created if missing; default: current folder)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where the network runs")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (flips; 4x slower, adds agreement)")
    p.add_argument("--series", help="SeriesInstanceUID to use when a folder holds several series")
    p.add_argument(
        "--format", type=_formats, default=_formats(DEFAULT_FORMATS),
        help=f"comma-separated outputs from {', '.join(FORMATS)} (default: {DEFAULT_FORMATS})",
    )
    p.add_argument("--send", action="store_true",
                   help="store the DICOM SEG and SR back on the PACS node of each pacs:// input (implies --format ...,seg,sr)")
    p.add_argument("--protocol", choices=["dimse", "dicomweb"], help="PACS protocol (default: the node's setting)")
    p.add_argument("--pacs-settings", help="PACS settings file (default: $SEG_APP_PACS_SETTINGS or ~/.config/seg_app/pacs.json)")
    c = p.add_argument_group("cohorts (docs/COHORT.md)")
    c.add_argument("--cohort", action="store_true",
                   help=f"resumable cohort run: a completion record per scan in OUT/{_RECORDS_DIR}/, scans whose "
                        f"outputs are complete are skipped, and OUT/{_SUMMARY_NAME} lists every scan "
                        "(implied by --input-list and under torchrun)")
    c.add_argument("--overwrite", "--no-resume", dest="overwrite", action="store_true",
                   help="with --cohort: segment every scan again, even those whose outputs are complete")
    c.add_argument("--prefetch", type=_non_negative, default=2, metavar="N",
                   help="scans read and preprocessed ahead in background threads while the network runs, the "
                        "previous scan's outputs being written meanwhile (default 2; 0 = one scan after another)")
    from seg_app.multiseq_cli import add_channel_arguments

    add_channel_arguments(p)  # --channel NAME=PATH, --reference NAME (multi-sequence models)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"], help=argparse.SUPPRESS)
    p.add_argument("--verbose", action="store_true", help="print tracebacks and details")
    from seg_app.nnunet_cli import add_nnunet_arguments

    add_nnunet_arguments(p)  # --folds, --checkpoint for an nnU-Net v2 --model folder
    return p


def _error(source: str, exc: BaseException, verbose: bool, prefix: str = "") -> None:
    """One line on stderr (plus the traceback with ``--verbose``)."""
    if verbose:
        import traceback

        traceback.print_exception(exc)
    msg = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {source}: {prefix}{msg}", file=sys.stderr)


def _print_warnings(report: ScanReport) -> None:
    for w in report.warnings:  # out-of-distribution and loading warnings: said before anyone reads a volume
        print(f"warning: {report.name}: {w}", file=sys.stderr)


def _window_bar(name: str) -> tuple[Any, Callable[[int, int], None]]:
    """A tqdm bar of sliding windows on stderr (off when stderr is not a terminal) and its callback."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=name, unit="win", leave=False, disable=None, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


@dataclass
class _Job:
    """One input of this run: its place in the full list, and its completion record (cohort mode)."""

    index: int
    source: str
    record: Path | None = None


@dataclass
class _Ready:
    """A job after the load stage (and, with ``pred``, after the network)."""

    job: _Job
    loaded: LoadedScan | None = None
    prepared: Any = None  # PreparedScan
    location: Any = None  # PacsLocation of a pacs:// input
    load_seconds: float = 0.0
    done: dict[str, Any] | None = None  # the completion record of a scan already complete
    redo_reason: str = ""  # why an earlier record did not count
    pred: Any = None  # ModelGridPrediction


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _inputs(args: argparse.Namespace) -> list[str] | None:
    """The positional inputs, then those of ``--input-list``; None (after one error line) when there are none."""
    from seg_app.core.cohort import read_input_list

    sources = list(args.inputs)
    if args.input_list:
        try:
            sources += read_input_list(args.input_list)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"error: cannot read the input list {args.input_list}: {getattr(exc, 'strerror', None) or exc}",
                  file=sys.stderr)
            return None
    if not sources:
        print("error: no input: give scans as arguments or with --input-list FILE", file=sys.stderr)
        return None
    return sources


def predict_command(argv: Sequence[str]) -> int:
    """Run ``seg-app predict``; returns the exit status (0 ok, 1 some scans failed, 2 unusable setup)."""
    args = build_parser().parse_args(list(argv))
    from seg_app import multiseq_cli
    from seg_app.core import cohort
    from seg_app.core.errors import SegAppError

    sources = multiseq_cli.study_sources(args) or _inputs(args)
    if sources is None:
        return 2
    ctx = cohort.dist_context()
    args.cohort = bool(args.cohort or args.input_list or ctx.distributed)
    pacs_inputs = [s for s in sources if s.startswith("pacs://")]
    settings = None
    if args.send:
        if len(pacs_inputs) != len(sources):
            print("error: --send stores the results back on the PACS a scan came from: every input must be a "
                  "pacs:// address", file=sys.stderr)
            return 2
        args.format = _formats(",".join([*args.format, "seg", "sr"]))
    if pacs_inputs:
        from seg_app.core import pacs

        try:
            settings = pacs.load_settings(args.pacs_settings)
            for url in pacs_inputs:
                settings.node(pacs.parse_pacs_url(url).node)
        except SegAppError as exc:
            _error("PACS", exc, args.verbose)
            return 2

    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create the output folder {out_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    device = cohort.rank_device(args.device, ctx)
    try:
        cohort.init_distributed(ctx, device)
        from seg_app.core.spec import default_model_path
        from seg_app.nnunet_cli import segmenter_from_args

        pipelined = args.prefetch > 0 and len(sources) > ctx.world_size  # this process gets several scans
        # our Segmenter, or an NnUNetSegmenter for an nnU-Net folder (same interface)
        segmenter = segmenter_from_args(args, args.model, device, backend=args.backend, cpu_spinning=not pipelined)
    except SegAppError as exc:
        _error(args.model or "model", exc, args.verbose)
        return 2
    model_path = str(args.model or default_model_path())
    try:
        problem = multiseq_cli.check_channel_arguments(args, segmenter.spec)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return _run(args, sources, segmenter, model_path, out_dir, settings, ctx)
    finally:
        cohort.finish_distributed(ctx)


def _run(args: argparse.Namespace, sources: list[str], segmenter: Any, model_path: str, out_dir: Path, settings: Any,
         ctx: Any) -> int:
    """Every scan of this process (its shard under torchrun) through the load -> network -> write pipeline."""
    from seg_app import multiseq_cli
    from seg_app.core import cohort
    from seg_app.core.errors import MultipleSeriesError, SegAppError
    from seg_app.core.export import safe_file_name

    jobs = [_Job(i, s) for i, s in enumerate(sources)]
    record_settings: dict[str, Any] = {}
    if args.cohort:
        unique: dict[str, _Job] = {}
        for job in jobs:
            key = cohort.scan_key(job.source, args.series)
            if key in unique:
                if ctx.rank == 0:
                    print(f"note: {job.source} is listed more than once; it is done once", flush=True)
                continue
            job.record = cohort.record_path(out_dir, job.source, args.series)
            unique[key] = job
        jobs = list(unique.values())
        from seg_app.core.model_sources import model_sha256

        record_settings = {"model_sha256": model_sha256(model_path), "formats": list(args.format),
                           "tta": bool(args.tta), "series": args.series}
    n_total = len(jobs)
    mine = [jobs[i] for i in cohort.shard(len(jobs), ctx.rank, ctx.world_size)]
    used: set[str] = set()  # output names of this run (without --cohort; with it, names are claimed in OUT)

    def load(job: _Job) -> _Ready:
        t0 = time.perf_counter()
        why = ""
        if job.record is not None:
            if not args.overwrite:
                done, why = cohort.check_record(job.record, record_settings)
                if done is not None:
                    return _Ready(job, done=done)
            cohort.remove_record(job.record)
        local, loc = (job.source, None) if not job.source.startswith("pacs://") else _retrieve_pacs(job.source, settings, args.protocol)
        if multiseq_cli.uses_study(args, segmenter.spec):  # one series per model channel, on one grid
            loaded = multiseq_cli.load_study(str(local), args, segmenter.spec, args.format)
        else:
            loaded = load_input(str(local), args.series, args.format)
        t1 = time.perf_counter()
        return _Ready(job, loaded, segmenter.prepare(loaded.volume), loc, t1 - t0, redo_reason=why)

    def infer(ready: _Ready) -> _Ready:
        if ready.done is None:
            bar, progress = _window_bar(safe_file_name(ready.loaded.volume.name))
            try:
                ready.pred = segmenter.predict_prepared(ready.prepared, progress=progress)
            finally:
                bar.close()
        return ready

    def finish(job: _Job, outcome: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"scan": job.source, "series": args.series, "rank": ctx.rank}
        try:
            if outcome.error is not None:
                raise outcome.error
            ready: _Ready = outcome.value
            if ready.done is not None:
                done = ready.done
                print(f"{done['name']}: skipped, its outputs are complete -> {out_dir / done['name']}_*", flush=True)
                row.update({k: done.get(k) for k in ("name", "seconds", "lesions", "volume_ml", "volumes_ml", "warnings")},
                           status="skipped", rank=done.get("rank"))
                return row
            if ready.redo_reason:
                print(f"note: {job.source}: segmented again: {ready.redo_reason}", flush=True)
            t0 = time.perf_counter()
            pred, ready.pred = ready.pred, None
            result = segmenter.finish(ready.prepared, pred)
            del pred
            volume = ready.loaded.volume
            if job.record is not None:
                name = cohort.claim_name(out_dir, safe_file_name(volume.name), cohort.scan_key(job.source, args.series))
            else:
                name = _unique_name(volume, used)
            report = write_scan(ready.loaded, result, out_dir, name, model_path, segmenter.tta)
            used.add(name)
            _print_warnings(report)
            print(report.line, flush=True)
            if args.send and ready.location is not None:
                print(_send_back(ready.location, settings, args.protocol, report.written), flush=True)
            details = {
                "seconds": round(ready.load_seconds + result.seconds + time.perf_counter() - t0, 3),
                "lesions": report.lesions,
                "volume_ml": float(sum(t["volume_ml"] for t in report.totals)),
                "volumes_ml": cohort.scan_volumes_ml(report.totals),
                "warnings": len(report.warnings),
            }
            if job.record is not None:  # last: only now do the outputs count as complete
                cohort.write_record(job.record, source=job.source, series=args.series, name=name,
                                    outputs=report.written, settings=record_settings, rank=ctx.rank, **details)
            row.update(details, name=name, status="ok")
            return row
        except MultipleSeriesError as exc:
            _error(job.source, exc, args.verbose)
            for s in exc.series:
                print(f"  {s.summary()}", file=sys.stderr)
            print("  choose one with --series UID", file=sys.stderr)
            row.update(status="failed", error=_one_line(exc))
        except SegAppError as exc:
            _error(job.source, exc, args.verbose)
            row.update(status="failed", error=_one_line(exc))
        except Exception as exc:  # noqa: BLE001 - one line per scan, the others still run
            _error(job.source, exc, args.verbose, prefix=f"unexpected {type(exc).__name__}: ")
            row.update(status="failed", error=f"unexpected {type(exc).__name__}: {_one_line(exc)}")
        return row

    t0 = time.perf_counter()
    try:
        rows = cohort.run_pipeline(mine, load, infer, finish, prefetch=args.prefetch if len(mine) > 1 else 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - t0
    failed = sum(r["status"] == "failed" for r in rows)
    if not args.cohort:
        if len(sources) > 1:
            print(f"{len(rows) - failed} of {len(rows)} scan(s) done in {seconds:.1f} s", flush=True)
        return 1 if failed else 0

    def counts(rs: Sequence[dict[str, Any]]) -> str:
        n_fail, n_skip = sum(r["status"] == "failed" for r in rs), sum(r["status"] == "skipped" for r in rs)
        return (f"{len(rs) - n_fail} of {len(rs)} scan(s) done ({n_skip} skipped as complete, {n_fail} failed) "
                f"in {seconds:.1f} s")

    if ctx.distributed:
        print(f"rank {ctx.rank}/{ctx.world_size}: {counts(rows)}", flush=True)
    merged = cohort.gather_rows(ctx, [(j.index, r) for j, r in zip(mine, rows)])
    if merged is None:  # not rank 0: rank 0 writes the summary
        return 1 if failed else 0
    all_rows = [r for _i, r in merged]
    assert len(all_rows) == n_total
    names = {lab.value: lab.name for lab in segmenter.spec.labels}
    summary = cohort.write_summary(out_dir / cohort.SUMMARY_NAME, all_rows, cohort.volume_columns(names))
    print(f"{counts(all_rows)} -> {summary}", flush=True)
    return 1 if any(r["status"] == "failed" for r in all_rows) else 0
