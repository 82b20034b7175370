"""``seg-app predict``: segment scans headless and write masks + measurements.

    seg-app predict INPUT... [--model CKPT] [--out DIR] [--device auto|cpu|cuda] [--tta]
                    [--series UID] [--format nifti,json,csv,seg,sr] [--send] [--verbose]

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

Output formats are a registry (:data:`FORMATS`): adding one is one writer function and one entry.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg_app import DISCLAIMER


@dataclass
class ScanOutputs:
    """What a format writer gets: one segmented scan and its measurements."""

    name: str
    source: str
    volume: Any  # Volume
    result: Any  # SegmentationResult
    lesions: list
    totals: list
    extra: dict[str, Any] = field(default_factory=dict)
    written: dict[str, Path] = field(default_factory=dict)  # format -> (temporary) path, for later writers


#: A writer puts one file for ``outputs`` at ``path`` (a temporary name with the final suffix).
Writer = Callable[[ScanOutputs, Path], None]


def _write_nifti(o: ScanOutputs, path: Path) -> None:
    from seg_app.core.io import save_labels

    save_labels(o.result.labels, o.volume, path)


def _write_json(o: ScanOutputs, path: Path) -> None:
    from seg_app.core.export import save_measurements_json

    save_measurements_json(path, o.lesions, o.totals, extra=o.extra)


def _write_csv(o: ScanOutputs, path: Path) -> None:
    from seg_app.core.export import save_measurements_csv

    save_measurements_csv(path, o.lesions)


def _write_dicom_seg(o: ScanOutputs, path: Path) -> None:
    """DICOM SEG referencing the source series (refused with one clear line for NIfTI sources)."""
    from seg_app.core.dicom_seg import export_dicom_seg

    export_dicom_seg(o.result.labels, o.volume, path, spec=o.result.spec)
    o.written["seg"] = path


def _write_dicom_sr(o: ScanOutputs, path: Path) -> None:
    """DICOM SR (TID 1500) of the measurements, referencing the SEG written just before it."""
    from seg_app.core.dicom_sr import export_dicom_sr
    from seg_app.core.errors import ExportError

    if "seg" not in o.written:
        raise ExportError("The DICOM SR references the DICOM SEG: add 'seg' to --format.")
    export_dicom_sr(o.lesions, o.volume, o.written["seg"], path, spec=o.result.spec)
    o.written["sr"] = path


#: format name -> (file name suffix after ``<name>``, writer).
FORMATS: dict[str, tuple[str, Writer]] = {
    "nifti": ("_labels.nii.gz", _write_nifti),
    "json": ("_measurements.json", _write_json),
    "csv": ("_measurements.csv", _write_csv),
    "seg": ("_seg.dcm", _write_dicom_seg),
    "sr": ("_sr.dcm", _write_dicom_sr),
}
DEFAULT_FORMATS = "nifti,json,csv"
_FORMAT_NAMES = {"nifti": "NIfTI label map", "json": "measurements JSON", "csv": "measurements CSV",
                 "seg": "DICOM SEG", "sr": "DICOM SR"}


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seg-app predict",
        description=f"Segment scans headless and write label masks and lesion measurements. {DISCLAIMER}",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="NIfTI file, DICOM file, DICOM folder, or pacs://NODE/studies/<UID>[/series/<UID>]")
    p.add_argument("--model", help="model checkpoint (.pt); default: the bundled model")
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
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"], help=argparse.SUPPRESS)
    p.add_argument("--verbose", action="store_true", help="print tracebacks and details")
    return p


def _error(source: str, exc: BaseException, verbose: bool, prefix: str = "") -> None:
    """One line on stderr (plus the traceback with ``--verbose``)."""
    if verbose:
        import traceback

        traceback.print_exception(exc)
    msg = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {source}: {prefix}{msg}", file=sys.stderr)


def _commit(staged: list[tuple[Path, Path]]) -> None:
    for tmp, final in staged:
        os.replace(tmp, final)


def _discard(staged: list[tuple[Path, Path]]) -> None:
    for tmp, _ in staged:
        try:
            tmp.unlink()
        except OSError:
            pass


def predict_one(
    source: str, segmenter: Any, out_dir: Path, formats: Sequence[str], series: str | None, used_names: set[str],
    model_path: str, verbose: bool, written: list[Path] | None = None,
) -> str:
    """Segment one input and write its outputs (all or nothing); returns the summary line.

    ``written`` (when given) receives the final paths of the files written, in format order."""
    from tqdm import tqdm

    from seg_app.core.errors import ExportError, SegAppError
    from seg_app.core.export import measurements_metadata, safe_file_name
    from seg_app.core.io import load_scan
    from seg_app.core.measure import label_totals, measure_lesions
    from seg_app.core.regions import composite_regions

    volume = load_scan(source, series_uid=series)
    output_warnings: list[str] = []
    if not volume.meta.get("SOPInstanceUIDs"):  # checked before the model runs
        for fmt in ("seg", "sr"):
            if fmt in formats:
                output_warnings.append(f"no {_FORMAT_NAMES[fmt]} written: it needs a DICOM source, and this scan is "
                                       f"{'NIfTI' if source.lower().endswith(('.nii', '.nii.gz')) else 'not DICOM'}")
        formats = [f for f in formats if f not in ("seg", "sr")]
    base = safe_file_name(volume.name)
    name, n = base, 2
    while name in used_names:
        name, n = f"{base}_{n}", n + 1
    bar = tqdm(total=0, desc=name, unit="win", leave=False, disable=None, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        result = segmenter.segment(volume, progress=progress)
    finally:
        bar.close()
    spec = result.spec
    names = {lab.value: lab.name for lab in spec.labels}
    lesions = measure_lesions(
        result.labels, image=volume, probabilities=result.probabilities, agreement=result.agreement,
        label_names=names, regions=composite_regions(names),
    )
    totals = label_totals(lesions)
    outputs = ScanOutputs(name, source, volume, result, lesions, totals, measurements_metadata(volume, spec, source=source, result=result, model_path=model_path, tta=segmenter.tta))
    staged: list[tuple[Path, Path]] = []
    # DICOM objects first (header values of the source can make them fail), so that the JSON written
    # after them records which outputs could not be written
    order = [f for f in formats if f in ("seg", "sr")] + [f for f in formats if f not in ("seg", "sr")]
    try:
        for fmt in order:
            suffix, writer = FORMATS[fmt]
            final = out_dir / f"{name}{suffix}"
            tmp = out_dir / f".{name}{suffix}.partial-{os.getpid()}{_ext(suffix)}"
            if fmt == "sr" and "seg" not in outputs.written:
                output_warnings.append("no DICOM SR written: it references the DICOM SEG, which could not be written")
                continue
            if fmt == "json":
                outputs.extra["warnings"] = [*outputs.extra.get("warnings", []), *output_warnings]
            try:
                writer(outputs, tmp)
            except SegAppError as exc:  # this output only: the others are still written
                _discard([(tmp, final)])
                output_warnings.append(f"no {_FORMAT_NAMES[fmt]} written: {exc}")
                continue
            staged.append((tmp, final))
        if not staged:
            raise ExportError(f"No output could be written for {name}: " + "; ".join(output_warnings))
        _commit(staged)
        if written is not None:
            written.extend(final for _tmp, final in staged)
    except BaseException:
        _discard(staged)
        raise
    used_names.add(name)
    vol = sum(t["volume_ml"] for t in totals)
    per_label = ", ".join(f"{t['label_name']} {t['n_lesions']}x {t['volume_ml']:.2f} mL" for t in totals) or "none"
    regions = {k: v for t in totals for k, v in t.get("region_volumes_ml", {}).items() if k in ("WT", "TC", "ET")}
    if regions:
        per_label += "; " + ", ".join(f"{k} {v:.2f} mL" for k, v in regions.items())
    all_warnings = list(dict.fromkeys([*outputs.extra.get("warnings", []), *output_warnings]))
    warn = f" [{len(all_warnings)} warning(s)]" if all_warnings else ""
    for w in all_warnings:  # out-of-distribution and loading warnings: said before anyone reads a volume
        print(f"warning: {name}: {w}", file=sys.stderr)
    return (
        f"{name}: {len(lesions)} lesion(s), {vol:.2f} mL ({per_label}), {result.seconds:.1f} s on {result.device}"
        f" -> {out_dir / name}_*{warn}"
    )


def _ext(suffix: str) -> str:
    """Keep the real extension at the end of temporary names (writers pick the format from it)."""
    low = suffix.lower()
    for ext in (".nii.gz", ".nii", ".json", ".csv", ".dcm"):
        if low.endswith(ext):
            return ext
    return ""


def _retrieve_pacs(source: str, settings: Any, protocol: str | None) -> tuple[Path, Any]:
    """Retrieve a ``pacs://`` input into the cache; returns (local series or study folder, PacsLocation)."""
    from tqdm import tqdm

    from seg_app.core import pacs

    loc = pacs.parse_pacs_url(source)
    node = settings.node(loc.node)
    bar = tqdm(total=0, desc=f"retrieve {loc.node}", unit="img", leave=False, disable=None, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        folders = pacs.retrieve(settings, node, loc.study_uid, loc.series_uid, protocol=protocol, progress=progress)
    finally:
        bar.close()
    local = folders[0] if loc.series_uid else pacs.study_folder(settings, node, loc.study_uid)
    return local, loc


def _send_back(loc: Any, settings: Any, protocol: str | None, written: Sequence[Path]) -> str:
    """Store the SEG and SR just written on the node the scan came from; returns the summary line."""
    from seg_app.core import pacs
    from seg_app.core.errors import SegAppError

    files = [p for p in written if p.name.endswith(("_seg.dcm", "_sr.dcm"))]
    if not any(p.name.endswith("_seg.dcm") for p in files):
        from seg_app.core.errors import ExportError

        raise ExportError("nothing sent: the DICOM SEG could not be written (see the warning above)")
    node = settings.node(loc.node)
    try:
        sent = pacs.send(node, files, protocol=protocol, local_ae_title=settings.local_ae_title)
    except SegAppError as exc:  # same error type, its message says the files exist locally
        exc.args = (f"the results were written ({', '.join(p.name for p in files)}) but not sent: {exc}",)
        raise
    return f"  sent {', '.join(p.name for p in files)} to '{node.name}' ({len(sent)} instance(s) stored)"


def predict_command(argv: Sequence[str]) -> int:
    """Run ``seg-app predict``; returns the exit status (0 ok, 1 some scans failed, 2 unusable setup)."""
    args = build_parser().parse_args(list(argv))
    from seg_app.core.errors import MultipleSeriesError, SegAppError

    pacs_inputs = [s for s in args.inputs if s.startswith("pacs://")]
    settings = None
    if args.send:
        if len(pacs_inputs) != len(args.inputs):
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
    try:
        from seg_app.core.inference import Segmenter
        from seg_app.core.spec import default_model_path

        segmenter = Segmenter(args.model, device=args.device, tta=args.tta, backend=args.backend)
    except SegAppError as exc:
        _error(args.model or "model", exc, args.verbose)
        return 2
    model_path = str(args.model or default_model_path())
    failed = 0
    used: set[str] = set()
    t0 = time.perf_counter()
    for source in args.inputs:
        try:
            local, loc = (source, None) if not source.startswith("pacs://") else _retrieve_pacs(source, settings, args.protocol)
            written: list[Path] = []
            print(predict_one(str(local), segmenter, out_dir, args.format, args.series, used, model_path, args.verbose,
                              written=written), flush=True)
            if args.send and loc is not None:
                print(_send_back(loc, settings, args.protocol, written), flush=True)
        except MultipleSeriesError as exc:
            failed += 1
            _error(source, exc, args.verbose)
            for s in exc.series:
                print(f"  {s.summary()}", file=sys.stderr)
            print("  choose one with --series UID", file=sys.stderr)
        except SegAppError as exc:
            failed += 1
            _error(source, exc, args.verbose)
        except KeyboardInterrupt:
            print(f"error: {source}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - one line per scan, the others still run
            failed += 1
            _error(source, exc, args.verbose, prefix=f"unexpected {type(exc).__name__}: ")
    if len(args.inputs) > 1:
        print(f"{len(args.inputs) - failed} of {len(args.inputs)} scan(s) done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 1 if failed else 0
