"""One PACS interface over DICOMweb and DIMSE: echo, find, retrieve into the local cache, store.

    settings = load_settings()                       # $SEG_APP_PACS_SETTINGS or ~/.config/seg_app/pacs.json
    node = settings.node("hospital")
    echo(node)                                       # C-ECHO or a QIDO-RS probe
    studies = find_studies(node, StudyQuery(patient_id="123", date="20260101-20261231", modality="MR"))
    series = find_series(node, studies[0].study_uid)
    folders = retrieve(settings, node, study_uid, series_uid)   # cached series folders
    send(node, [seg_path, sr_path])                  # C-STORE / STOW-RS, every status checked

The protocol is the node's ``protocol`` (default DICOMweb when a URL is configured) unless a call
passes ``protocol="dimse"`` / ``"dicomweb"``. Errors are :class:`PacsError` subclasses with one-line
messages; connection errors, timeouts and HTTP 429/5xx are retried with exponential back-off.

**Cache.** A series lives in ``<cache>/<node>/<StudyUID>/<SeriesUID>/`` (one ``<SOPInstanceUID>.dcm``
per instance plus ``.complete.json``). It is downloaded into ``<cache>/<node>/.partial/...`` and
renamed into place only once every instance arrived, so a transfer that fails or is cancelled halfway
leaves no partial series behind; a series already in the cache with as many instances as the server
reports is not downloaded (nor stored) again. Deleting the cache is always safe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seg_app.core.pacs_types import (
    DEFAULT_LOCAL_AE,
    PacsAssociationRejected,
    PacsAuthError,
    PacsConfigError,
    PacsConnectionError,
    PacsError,
    PacsHTTPError,
    PacsNode,
    PacsNotFoundError,
    PacsSettings,
    PacsStoreError,
    PacsTimeoutError,
    ProgressFn,
    SeriesResult,
    StudyQuery,
    StudyResult,
    TlsSettings,
    check_cancel,
    load_settings,
    save_settings,
    settings_path,
    with_retries,
)

__all__ = [
    "NON_IMAGE_MODALITIES",
    "PacsAssociationRejected",
    "PacsAuthError",
    "PacsConfigError",
    "PacsConnectionError",
    "PacsError",
    "PacsHTTPError",
    "PacsLocation",
    "PacsNode",
    "PacsNotFoundError",
    "PacsSettings",
    "PacsStoreError",
    "PacsTimeoutError",
    "SeriesResult",
    "StudyQuery",
    "StudyResult",
    "TlsSettings",
    "cached_series_folder",
    "echo",
    "find_series",
    "find_studies",
    "is_pacs_url",
    "load_settings",
    "open_client",
    "parse_pacs_url",
    "retrieve",
    "save_settings",
    "send",
    "settings_path",
]

#: Series that are results or documents, not scans: skipped when a whole study is retrieved for segmentation.
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "RTSTRUCT", "REG", "DOC", "RTPLAN", "RTDOSE"})
_MANIFEST = ".complete.json"
_UID_RE = re.compile(r"^[0-9.]{1,64}$")


def open_client(node: PacsNode, protocol: str | None = None, local_ae_title: str = DEFAULT_LOCAL_AE):
    """A :class:`~seg_app.core.pacs_dimse.DimseClient` or :class:`~seg_app.core.pacs_dicomweb.DicomWebClient`."""
    protocol = protocol or node.default_protocol
    if protocol not in node.protocols():
        raise PacsConfigError(
            f"PACS node '{node.name}' is not configured for {protocol} "
            f"(it has: {', '.join(node.protocols()) or 'nothing'})."
        )
    if protocol == "dimse":
        from seg_app.core.pacs_dimse import DimseClient

        return DimseClient(node, local_ae_title)
    from seg_app.core.pacs_dicomweb import DicomWebClient

    return DicomWebClient(node)


def echo(node: PacsNode, protocol: str | None = None, local_ae_title: str = DEFAULT_LOCAL_AE) -> float:
    """Check the node answers (C-ECHO over DIMSE, a one-result QIDO-RS search over DICOMweb); returns seconds."""
    client = open_client(node, protocol, local_ae_title)
    t0 = time.perf_counter()
    with_retries(client.echo, node)
    return time.perf_counter() - t0


def find_studies(node: PacsNode, query: StudyQuery, protocol: str | None = None,
                 local_ae_title: str = DEFAULT_LOCAL_AE, cancel: threading.Event | None = None) -> list[StudyResult]:
    client = open_client(node, protocol, local_ae_title)
    studies = with_retries(lambda: client.find_studies(query, cancel), node, cancel)
    return sorted(studies, key=lambda s: (s.study_date, s.patient_id, s.study_uid), reverse=True)


def find_series(node: PacsNode, study_uid: str, protocol: str | None = None,
                local_ae_title: str = DEFAULT_LOCAL_AE, cancel: threading.Event | None = None) -> list[SeriesResult]:
    _check_uid(study_uid, "study")
    client = open_client(node, protocol, local_ae_title)
    series = with_retries(lambda: client.find_series(study_uid, cancel), node, cancel)
    return sorted(series, key=lambda s: (s.number if s.number is not None else 1 << 30, s.series_uid))


# ---- pacs:// URLs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PacsLocation:
    node: str
    study_uid: str
    series_uid: str | None = None

    def url(self) -> str:
        tail = f"/series/{self.series_uid}" if self.series_uid else ""
        return f"pacs://{self.node}/studies/{self.study_uid}{tail}"


_URL_RE = re.compile(r"^pacs://(?P<node>[^/]+)/studies/(?P<study>[^/]+)(?:/series/(?P<series>[^/]+))?/?$")


def is_pacs_url(text: str) -> bool:
    return str(text).startswith("pacs://")


def parse_pacs_url(text: str) -> PacsLocation:
    """``pacs://NODE/studies/<StudyUID>[/series/<SeriesUID>]``."""
    m = _URL_RE.match(str(text).strip())
    if not m:
        raise PacsConfigError(
            f"Bad PACS address '{text}': use pacs://NODE/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]."
        )
    _check_uid(m["study"], "study")
    if m["series"]:
        _check_uid(m["series"], "series")
    return PacsLocation(m["node"], m["study"], m["series"])


def _check_uid(uid: str, what: str) -> None:
    if not _UID_RE.match(uid or ""):
        raise PacsConfigError(f"'{uid}' is not a valid {what} instance UID (digits and dots, at most 64 characters).")


# ---- cache -------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "node"


def cached_series_folder(settings: PacsSettings, node: PacsNode, study_uid: str, series_uid: str) -> Path:
    return settings.cache_root() / _safe(node.name) / study_uid / series_uid


def _manifest(folder: Path) -> dict | None:
    try:
        doc = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_partials(partial_root: Path) -> None:
    """Remove the download folders of processes that no longer run (a crash or a kill -9)."""
    if not partial_root.is_dir():
        return
    for p in partial_root.iterdir():
        m = re.match(r"^.*-pid(\d+)-", p.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


def _retrieve_series(client, settings: PacsSettings, node: PacsNode, series: SeriesResult, progress_base: int,
                     grand_total: int, progress: ProgressFn | None, cancel: threading.Event | None,
                     refresh: bool) -> tuple[Path, int]:
    final = cached_series_folder(settings, node, series.study_uid, series.series_uid)
    done = _manifest(final)
    if done is not None and not refresh and (series.n_instances is None or done.get("n_instances", 0) >= series.n_instances):
        if progress is not None:
            progress(progress_base + int(done.get("n_instances", 0)), grand_total)
        return final, 0  # already complete in the cache: not downloaded (nor stored) twice
    partial_root = settings.cache_root() / _safe(node.name) / ".partial"
    partial_root.mkdir(parents=True, exist_ok=True)
    _clean_stale_partials(partial_root)
    tmp = Path(tempfile.mkdtemp(prefix=f"{series.series_uid}-pid{os.getpid()}-", dir=partial_root))

    def step(done_n: int, _total: int) -> None:
        if progress is not None:
            progress(progress_base + done_n, grand_total)

    try:
        def attempt() -> int:
            for f in tmp.iterdir():  # a retry starts from an empty folder
                f.unlink()
            return client.retrieve_series(series.study_uid, series.series_uid, tmp, step, cancel, series.n_instances)

        n = with_retries(attempt, node, cancel)
        check_cancel(cancel, "The retrieve")
        (tmp / _MANIFEST).write_text(json.dumps({
            "node": node.name, "study_uid": series.study_uid, "series_uid": series.series_uid,
            "modality": series.modality, "description": series.description, "n_instances": n,
            "protocol": client.protocol, "retrieved": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }, indent=1))
        final.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if final.exists():  # stale or refreshed copy: swap, then delete the old one
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final, n
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def retrieve(settings: PacsSettings, node: PacsNode, study_uid: str, series_uid: str | None = None, *,
             protocol: str | None = None, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
             images_only: bool = True, refresh: bool = False) -> list[Path]:
    """Retrieve one series (or every image series of a study) into the cache; returns the series folders.

    Args:
        settings: gives the cache folder and the calling AE title.
        node: the PACS node.
        study_uid, series_uid: what to fetch; without ``series_uid`` every series of the study whose
            modality is not a result/document (:data:`NON_IMAGE_MODALITIES`) when ``images_only``.
        protocol: ``"dimse"`` (C-GET) or ``"dicomweb"`` (WADO-RS); default: the node's.
        progress: ``progress(instances_done, instances_total)``.
        cancel: set to stop; raises ``Cancelled`` and leaves nothing partial.
        refresh: download again even when the series is complete in the cache.

    Raises:
        PacsError: (subclasses) the study/series is not on the server, the server is down, refused,
            timed out or sent fewer instances than it announced.
    """
    _check_uid(study_uid, "study")
    client = open_client(node, protocol, settings.local_ae_title)
    all_series = with_retries(lambda: client.find_series(study_uid, cancel), node, cancel)
    if series_uid is not None:
        _check_uid(series_uid, "series")
        chosen = [s for s in all_series if s.series_uid == series_uid]
        if not chosen:
            raise PacsNotFoundError(f"PACS node '{node.name}' has no series {series_uid} in study {study_uid}.")
    else:
        chosen = [s for s in all_series if not (images_only and s.modality.upper() in NON_IMAGE_MODALITIES)]
        if not chosen:
            raise PacsNotFoundError(
                f"PACS node '{node.name}' has no {'image ' if images_only else ''}series in study {study_uid}."
            )
    grand_total = sum(s.n_instances or 0 for s in chosen)
    folders, base = [], 0
    for s in chosen:
        check_cancel(cancel, "The retrieve")
        folder, _n = _retrieve_series(client, settings, node, s, base, grand_total, progress, cancel, refresh)
        folders.append(folder)
        base += s.n_instances or 0
    return folders


def study_folder(settings: PacsSettings, node: PacsNode, study_uid: str) -> Path:
    """The cache folder holding a study's retrieved series."""
    return settings.cache_root() / _safe(node.name) / study_uid


def send(node: PacsNode, paths: Sequence[str | os.PathLike[str]], protocol: str | None = None,
         local_ae_title: str = DEFAULT_LOCAL_AE, progress: ProgressFn | None = None) -> list[str]:
    """Store DICOM files on the node (C-STORE or STOW-RS); returns the SOPInstanceUIDs stored.

    Raises:
        PacsStoreError: the server refused one or more instances (status checked for each).
    """
    client = open_client(node, protocol, local_ae_title)
    files = [Path(p) for p in paths]
    return with_retries(lambda: client.store(files, progress), node)
