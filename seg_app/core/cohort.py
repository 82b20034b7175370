"""Cohort inference mechanics (Qt-free; torch only imported under ``torchrun``).

``seg-app predict`` over hundreds or thousands of scans keeps one model loaded and runs each scan in
three stages (:func:`run_pipeline`): reading, decoding and preprocessing the next scans in background
threads, the network pass of the current scan on the calling thread, and mapping back, measuring and
writing the previous scan's outputs on a writer thread. What makes a cohort resumable lives here too:

- **completion records** (:func:`write_record`, :func:`check_record`): once every output of a scan has
  been written, a small JSON file ``<out>/cohort_records/<scan>-<key>.json`` listing each output's
  name, size and SHA-256 is written, last and atomically. A scan is *complete* when its record exists,
  was made with the same settings (model file, formats, TTA, series) and every output listed still has
  that size and hash, so a crash between outputs, a truncated or replaced file, or a deleted record all
  mean "do it again";
- **output names** claimed once per cohort folder (:func:`claim_name`), so ranks and resumed runs never
  give two scans the same name;
- **the summary** ``<out>/cohort_summary.csv`` (:func:`write_summary`), one row per scan of the run;
- **torchrun**: :func:`dist_context` reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, :func:`shard` is
  rank ``r``'s share of the scan list (scans ``i`` with ``i % world_size == r``), :func:`rank_device`
  its device, and :func:`gather_rows` brings every rank's summary rows to rank 0.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from seg_app.core.export import safe_file_name
from seg_app.core.files import atomic_write

__all__ = [
    "DEFAULT_DIST_TIMEOUT_H",
    "RECORDS_DIR",
    "RECORD_FORMAT",
    "SUMMARY_FIELDS",
    "SUMMARY_NAME",
    "DistContext",
    "Outcome",
    "check_record",
    "claim_name",
    "dist_context",
    "file_sha256",
    "finish_distributed",
    "gather_rows",
    "init_distributed",
    "read_input_list",
    "rank_device",
    "record_path",
    "remove_record",
    "run_pipeline",
    "scan_key",
    "scan_volumes_ml",
    "shard",
    "volume_columns",
    "write_record",
    "write_summary",
]

#: Folder (inside the output folder) holding the completion records and the name claims.
RECORDS_DIR = "cohort_records"
#: File name of the cohort summary (inside the output folder).
SUMMARY_NAME = "cohort_summary.csv"
#: ``format`` value of a completion record.
RECORD_FORMAT = "seg_app cohort record 1"
#: Summary columns before the per-region volumes, and after them.
SUMMARY_FIELDS = ("scan", "series", "name", "status", "seconds", "rank", "lesions", "volume_ml")
_SUMMARY_TAIL = ("warnings", "error")
#: Hours a rank waits for the others at the end (``SEG_APP_DIST_TIMEOUT_H`` overrides).
DEFAULT_DIST_TIMEOUT_H = 24.0

T = TypeVar("T")
L = TypeVar("L")
R = TypeVar("R")


# ---- the pipeline ----------------------------------------------------------------------------
@dataclass
class Outcome(Generic[T]):
    """What the first two stages made of one item: ``value``, or the ``error`` that stopped it."""

    value: T | None = None
    error: Exception | None = None


def _attempt(fn: Callable[[], T]) -> Outcome[T]:
    try:
        return Outcome(fn())
    except Exception as exc:  # noqa: BLE001 - handed to the finish stage: this item fails, the others go on
        return Outcome(error=exc)


def run_pipeline(
    items: Sequence[T],
    load: Callable[[T], L],
    infer: Callable[[L], Any],
    finish: Callable[[T, Outcome[Any]], R],
    *,
    prefetch: int = 2,
    backlog: int = 1,
) -> list[R]:
    """Run ``load -> infer -> finish`` over ``items``; returns ``finish``'s results in item order.

    Args:
        items: the work, in order.
        load: reads and prepares one item; runs in ``prefetch`` background threads, at most
            ``prefetch`` items ahead of the one in ``infer`` (so at most ``prefetch`` loaded items wait).
        infer: the network pass; runs on the calling thread, one item at a time, in order.
        finish: gets the item and the :class:`Outcome` of ``load`` + ``infer`` (an exception of either
            is the outcome's ``error``: that item fails, the others go on); runs on one writer thread, in
            item order, with at most ``backlog`` finished-inferring items waiting for it. Exceptions
            it raises stop the pipeline and propagate.
        prefetch: 0 runs every stage on the calling thread, one item after another (no threads).
        backlog: items allowed to wait for the writer besides the one it is writing.

    A ``KeyboardInterrupt`` (or any exception from ``finish``) cancels the loads not yet started,
    lets the writer finish the item it is writing and propagates.
    """
    items = list(items)
    if prefetch <= 0:
        return [finish(it, _attempt(lambda it=it: infer(load(it)))) for it in items]

    results: list[Any] = [None] * len(items)
    loaders = ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="cohort-load")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohort-write")
    loading: deque[Future] = deque()
    writing: deque[tuple[int, Future]] = deque()
    submitted = 0

    def top_up() -> None:
        nonlocal submitted
        while submitted < len(items) and len(loading) < prefetch:
            loading.append(loaders.submit(load, items[submitted]))
            submitted += 1

    try:
        for i, item in enumerate(items):
            top_up()
            loaded = loading.popleft()
            top_up()  # the next ``prefetch`` items load while this one is in the network
            outcome = _attempt(lambda f=loaded: infer(f.result()))
            del loaded
            while len(writing) > backlog:
                j, fut = writing.popleft()
                results[j] = fut.result()
            writing.append((i, writer.submit(finish, item, outcome)))
            del outcome
        while writing:
            j, fut = writing.popleft()
            results[j] = fut.result()
    except BaseException:
        for fut in loading:
            fut.cancel()
        for _j, fut in writing:
            fut.cancel()
        raise
    finally:
        loaders.shutdown(wait=False, cancel_futures=True)
        writer.shutdown(wait=True)
    return results


# ---- the scan list ---------------------------------------------------------------------------
def read_input_list(path: str | os.PathLike) -> list[str]:
    """Scan paths from a text file, one per line, as given (relative paths are relative to the current
    folder, like paths on the command line); blank lines and lines starting with ``#`` are skipped.

    Raises:
        OSError: the file cannot be read.
    """
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(s)
    return out


def scan_key(source: str, series: str | None = None) -> str:
    """A short stable key of one scan of a cohort: the absolute path (or the ``pacs://`` address) and
    the series UID."""
    ident = source if "://" in source else os.path.abspath(source)
    return hashlib.sha256(f"{ident}\n{series or ''}".encode()).hexdigest()[:20]


def shard(n_items: int, rank: int, world_size: int) -> list[int]:
    """Indices of the items rank ``rank`` of ``world_size`` processes takes: ``i % world_size == rank``
    (deterministic, interleaved so that a sorted list spreads evenly)."""
    return [i for i in range(n_items) if i % world_size == rank]


# ---- completion records ----------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def record_path(out_dir: str | os.PathLike, source: str, series: str | None = None) -> Path:
    """Where the completion record of ``source`` lives: ``<out>/cohort_records/<file name>-<key>.json``."""
    label = safe_file_name(Path(source.rstrip("/")).name or "scan")[:60]
    return Path(out_dir) / RECORDS_DIR / f"{label}-{scan_key(source, series)}.json"


def write_record(
    path: str | os.PathLike,
    *,
    source: str,
    series: str | None,
    name: str,
    outputs: Iterable[str | os.PathLike],
    settings: Mapping[str, Any],
    rank: int = 0,
    **details: Any,
) -> dict[str, Any]:
    """Write the completion record of one scan, atomically; call it after every output is in place.

    Args:
        path: from :func:`record_path`.
        source, series: the scan as given.
        name: the output name (``<name>_labels.nii.gz`` ...).
        outputs: the files written (in the record's folder's parent, the output folder).
        settings: what the outputs depend on (model file hash, formats, TTA, series); a record made with
            other settings does not count as complete.
        rank: the ``torchrun`` rank that made the outputs.
        **details: JSON-able extras for the summary (seconds, lesions, volumes, warnings).

    Returns:
        the record.
    """
    path = Path(path)
    files = [Path(p) for p in outputs]
    doc = {
        "format": RECORD_FORMAT,
        "source": source,
        "series": series,
        "name": name,
        "rank": int(rank),
        "settings": dict(settings),
        "outputs": [{"file": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files],
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **details,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def check_record(path: str | os.PathLike, settings: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")`` when the scan is complete, else ``(None, why)``; ``why`` is ``""`` when there
    is no record at all (never done), else one phrase (\"its labels file changed since ...\")."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError):
        return None, "its completion record is unreadable"
    if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT or not isinstance(doc.get("outputs"), list):
        return None, "its completion record is unreadable"
    if doc.get("settings") != dict(settings):
        changed = sorted(k for k in set(settings) | set(doc.get("settings") or {})
                         if (doc.get("settings") or {}).get(k) != settings.get(k))
        return None, f"it was done with other settings ({', '.join(changed)})"
    if not doc["outputs"]:
        return None, "its completion record lists no output"
    folder = path.parent.parent
    for entry in doc["outputs"]:
        try:
            out = folder / str(entry["file"])
            if out.stat().st_size != int(entry["bytes"]):
                return None, f"{out.name} has changed size since it was written"
            if file_sha256(out) != entry["sha256"]:
                return None, f"{out.name} has changed since it was written"
        except FileNotFoundError:
            return None, f"{entry.get('file')} is missing"
        except (OSError, KeyError, TypeError, ValueError):
            return None, "its completion record is unreadable"
    return doc, ""


def remove_record(path: str | os.PathLike) -> None:
    """Delete a completion record (before a scan is done again); a missing one is fine."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass


def claim_name(out_dir: str | os.PathLike, base: str, key: str) -> str:
    """The output name of the scan ``key``: ``base``, else ``base_2``, ``base_3``... -- the first one not
    claimed by another scan in this output folder. Claims are files ``cohort_records/names/<name>``
    holding the key, created atomically (a hard link of a complete temporary file, so concurrent ranks,
    even on other nodes sharing the folder, never both get one name), and kept: a resumed scan gets its
    name again."""
    folder = Path(out_dir) / RECORDS_DIR / "names"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".claim-{key}-{os.getpid()}-{threading.get_ident()}"
    tmp.write_text(key, encoding="utf-8")
    try:
        name, n = base, 2
        while True:
            target = folder / name
            try:
                os.link(tmp, target)
                return name
            except FileExistsError:
                try:
                    if target.read_text(encoding="utf-8").strip() == key:
                        return name
                except OSError:
                    pass
            name, n = f"{base}_{n}", n + 1
    finally:
        tmp.unlink(missing_ok=True)


# ---- the summary -----------------------------------------------------------------------------
def volume_columns(label_names: Mapping[int, str]) -> list[str]:
    """The regions whose total mL the summary lists: the sub-region labels and the composites WT/TC/ET
    for BraTS-like models, else every label but background (value 0)."""
    from seg_app.core.regions import composite_regions

    regions = composite_regions(label_names)
    if regions:
        values = sorted({v for vs in regions.values() for v in vs})
        return [label_names.get(v, f"label {v}") for v in values] + list(regions)
    return [n for v, n in sorted(label_names.items()) if v != 0]


def scan_volumes_ml(totals: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Total mL per region of one scan from ``measure.label_totals`` (sub-regions and composites of
    whole-tumour lesions, else per label)."""
    out: dict[str, float] = {}
    for t in totals:
        parts = t.get("region_volumes_ml") or {t.get("label_name", str(t.get("label"))): t.get("volume_ml", 0.0)}
        for k, v in parts.items():
            out[k] = out.get(k, 0.0) + float(v or 0.0)
    return out


def _column(region: str) -> str:
    return re.sub(r"\W+", "_", region.strip()).strip("_") + "_ml"


def write_summary(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], regions: Sequence[str]) -> Path:
    """Write ``cohort_summary.csv`` atomically: one row per scan.

    Args:
        path: the CSV file.
        rows: dicts with the keys of :data:`SUMMARY_FIELDS`, ``volumes_ml`` (region -> mL),
            ``warnings`` (a count) and ``error`` (one line, failed scans).
        regions: the region columns (:func:`volume_columns`), written as ``<region>_ml``.

    Columns: scan, series, name, status (ok, skipped = complete before this run, failed), seconds
    (this scan's own stage times; for a skipped scan, those of the run that did it), rank, lesions,
    volume_ml (all lesions), one ``<region>_ml`` per region, warnings, error.
    """
    path = Path(path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*SUMMARY_FIELDS, *(_column(r) for r in regions), *_SUMMARY_TAIL])
    for row in rows:
        failed = row.get("status") == "failed"
        vols = row.get("volumes_ml") or {}
        cells: list[Any] = []
        for f in SUMMARY_FIELDS:
            v = row.get(f)
            if f in ("seconds", "volume_ml") and isinstance(v, (int, float)):
                v = f"{v:.3f}" if f == "seconds" else f"{v:.4f}"
            cells.append("" if v is None else v)
        cells += ["" if failed else f"{float(vols.get(r, 0.0)):.4f}" for r in regions]
        cells += [row.get("warnings", 0) if not failed else row.get("warnings", ""), row.get("error") or ""]
        w.writerow(cells)
    with atomic_write(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return path


# ---- torchrun --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistContext:
    """This process's place among ``torchrun``'s workers (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_context(environ: Mapping[str, str] | None = None) -> DistContext:
    """Rank, world size and local rank from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``); one process when they are not set."""
    e = os.environ if environ is None else environ
    try:
        return DistContext(int(e.get("RANK", 0)), max(1, int(e.get("WORLD_SIZE", 1))), int(e.get("LOCAL_RANK", 0)))
    except ValueError:
        return DistContext()


def rank_device(device: str, ctx: DistContext) -> str:
    """The device of this rank: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` when CUDA GPUs exist (several
    ranks per GPU share them round-robin), the CPU for ``auto`` without CUDA, else ``device`` as given."""
    if not ctx.distributed or device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{ctx.local_rank % torch.cuda.device_count()}"
    return "cpu" if device == "auto" else device


def init_distributed(ctx: DistContext, device: str) -> None:
    """Join ``torchrun``'s process group: NCCL for CUDA devices (with gloo for the CPU-side exchange of
    summary rows), gloo otherwise. Ranks wait for each other at the end for up to
    ``SEG_APP_DIST_TIMEOUT_H`` hours (default :data:`DEFAULT_DIST_TIMEOUT_H`)."""
    if not ctx.distributed:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    try:
        hours = float(os.environ.get("SEG_APP_DIST_TIMEOUT_H", DEFAULT_DIST_TIMEOUT_H))
    except ValueError:
        hours = DEFAULT_DIST_TIMEOUT_H
    timeout = _dt.timedelta(hours=hours)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend="cpu:gloo,cuda:nccl", timeout=timeout)
    else:
        dist.init_process_group(backend="gloo", timeout=timeout)


def gather_rows(ctx: DistContext, rows: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]] | None:
    """Every rank's ``(index, summary row)`` pairs, merged in index order, on rank 0 (None on the others).

    Rank 0 waits here until every rank has finished its shard (and written its records)."""
    if not ctx.distributed:
        return sorted(rows, key=lambda r: r[0])
    import torch.distributed as dist

    parts: list[Any] | None = [None] * ctx.world_size if ctx.rank == 0 else None
    dist.gather_object(rows, parts, dst=0)
    if ctx.rank != 0:
        return None
    assert parts is not None
    return sorted((r for part in parts for r in (part or [])), key=lambda r: r[0])


def finish_distributed(ctx: DistContext) -> None:
    """Leave the process group (no-op for one process)."""
    if not ctx.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
