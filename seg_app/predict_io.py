"""The per-scan I/O of ``seg-app predict``: read one input (local, or retrieved from a PACS), write its
outputs all or nothing (staged under temporary names, renamed at the end; an output that cannot be
written is a warning for that output only), and send the DICOM results back to the PACS.

Output formats are a registry (:data:`FORMATS`): adding one is one writer function and one entry.
:mod:`seg_app.predict_cli` holds the command line and the scan loop.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

def _commit(staged: list[tuple[Path, Path]]) -> None:
    for tmp, final in staged:
        os.replace(tmp, final)


def _discard(staged: list[tuple[Path, Path]]) -> None:
    for tmp, _ in staged:
        try:
            tmp.unlink()
        except OSError:
            pass


@dataclass
class LoadedScan:
    """A scan read for ``predict`` (the first stage), with the outputs it can have."""

    source: str  # the input as given (a path, or a pacs:// address)
    volume: Any  # Volume
    formats: list[str]  # the requested formats this scan can have
    warnings: list[str]  # outputs that cannot be written, said before the model runs


@dataclass
class ScanReport:
    """What :func:`write_scan` wrote for one scan."""

    name: str
    line: str  # the one-line summary printed on stdout
    lesions: int
    totals: list
    warnings: list[str]  # loading, out-of-distribution and output warnings, each once
    written: list[Path]  # final paths, in format order


def load_input(path: str, series: str | None, formats: Sequence[str], source: str | None = None) -> LoadedScan:
    """Read one local scan and drop the outputs it cannot have (a SEG or SR needs a DICOM source)."""
    from seg_app.core.io import load_scan

    volume = load_scan(path, series_uid=series)
    output_warnings: list[str] = []
    formats = list(formats)
    if not volume.meta.get("SOPInstanceUIDs"):  # checked before the model runs
        for fmt in ("seg", "sr"):
            if fmt in formats:
                output_warnings.append(f"no {_FORMAT_NAMES[fmt]} written: it needs a DICOM source, and this scan is "
                                       f"{'NIfTI' if path.lower().endswith(('.nii', '.nii.gz')) else 'not DICOM'}")
        formats = [f for f in formats if f not in ("seg", "sr")]
    return LoadedScan(source or path, volume, formats, output_warnings)


def _unique_name(volume: Any, used_names: set[str]) -> str:
    """The scan's output name, ``_2``, ``_3``... appended when an earlier scan of this run has it."""
    from seg_app.core.export import safe_file_name

    base = safe_file_name(volume.name)
    name, n = base, 2
    while name in used_names:
        name, n = f"{base}_{n}", n + 1
    return name


def write_scan(loaded: LoadedScan, result: Any, out_dir: Path, name: str, model_path: str, tta: bool) -> ScanReport:
    """Measure the lesions of one segmented scan and write its outputs as ``<name>_*`` (all or nothing:
    staged under temporary names, renamed at the end; an output that cannot be written is a warning)."""
    from seg_app.core.errors import ExportError, SegAppError
    from seg_app.core.export import measurements_metadata
    from seg_app.core.measure import label_totals, measure_lesions
    from seg_app.core.regions import composite_regions

    volume, source, formats, output_warnings = loaded.volume, loaded.source, loaded.formats, list(loaded.warnings)
    spec = result.spec
    names = {lab.value: lab.name for lab in spec.labels}
    lesions = measure_lesions(
        result.labels, image=volume, probabilities=result.probabilities, agreement=result.agreement,
        label_names=names, regions=composite_regions(names),
    )
    totals = label_totals(lesions)
    outputs = ScanOutputs(name, source, volume, result, lesions, totals, measurements_metadata(volume, spec, source=source, result=result, model_path=model_path, tta=tta))
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
    except BaseException:
        _discard(staged)
        raise
    vol = sum(t["volume_ml"] for t in totals)
    per_label = ", ".join(f"{t['label_name']} {t['n_lesions']}x {t['volume_ml']:.2f} mL" for t in totals) or "none"
    regions = {k: v for t in totals for k, v in t.get("region_volumes_ml", {}).items() if k in ("WT", "TC", "ET")}
    if regions:
        per_label += "; " + ", ".join(f"{k} {v:.2f} mL" for k, v in regions.items())
    all_warnings = list(dict.fromkeys([*outputs.extra.get("warnings", []), *output_warnings]))
    warn = f" [{len(all_warnings)} warning(s)]" if all_warnings else ""
    line = (
        f"{name}: {len(lesions)} lesion(s), {vol:.2f} mL ({per_label}), {result.seconds:.1f} s on {result.device}"
        f" -> {out_dir / name}_*{warn}"
    )
    return ScanReport(name, line, len(lesions), totals, all_warnings, [final for _tmp, final in staged])


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
