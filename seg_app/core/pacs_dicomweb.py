"""DICOMweb client (dicomweb-client): QIDO-RS search, WADO-RS retrieve, STOW-RS store for one node.

Credentials are read when the session is built (HTTP basic from ``username`` + the password from the
environment/keyring, or a bearer token) and live only in the ``requests`` session headers; they are
never logged. Every ``requests`` failure becomes one typed
:class:`~seg_app.core.pacs_types.PacsError` naming the node and the endpoint.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seg_app.core.pacs_types import (
    SERIES_KEYS,
    STUDY_KEYS,
    PacsAuthError,
    PacsConnectionError,
    PacsError,
    PacsHTTPError,
    PacsNode,
    PacsNotFoundError,
    PacsStoreError,
    PacsTimeoutError,
    ProgressFn,
    SeriesResult,
    StudyQuery,
    StudyResult,
    check_cancel,
)

__all__ = ["DicomWebClient"]


class DicomWebClient:
    protocol = "dicomweb"

    def __init__(self, node: PacsNode) -> None:
        if not node.dicomweb_url:
            raise PacsError(f"PACS node '{node.name}' has no dicomweb_url.")
        self.node = node
        logging.getLogger("dicomweb_client").setLevel(logging.ERROR)  # it logs request headers at debug
        self._client = None

    def _where(self) -> str:
        return f"PACS node '{self.node.name}' ({self.node.endpoint('dicomweb')})"

    @property
    def client(self):
        if self._client is None:
            import requests
            from dicomweb_client.api import DICOMwebClient

            session = requests.Session()
            token = self.node.secret("token")
            user = self.node.user()
            if token:
                session.headers["Authorization"] = f"Bearer {token}"
            elif user:
                session.auth = (user, self.node.secret("password"))
            tls = self.node.tls
            if tls is not None:
                session.verify = (tls.ca_file or True) if tls.verify else False
                if tls.cert_file:
                    session.cert = (tls.cert_file, tls.key_file) if tls.key_file else tls.cert_file
            t = float(self.node.timeout_s)
            self._client = DICOMwebClient(self.node.dicomweb_url.rstrip("/"), session=session, timeout=(t, t))
            self._client.set_http_retry_params(retry=False)  # retries are ours (pacs_types.with_retries)
        return self._client

    # ---- error mapping -------------------------------------------------------------------------
    def _map(self, exc: BaseException, what: str) -> PacsError:
        import requests

        if isinstance(exc, PacsError):
            return exc
        if isinstance(exc, requests.exceptions.SSLError):
            return PacsConnectionError(f"{self._where()}: the TLS handshake failed during the {what} ({_short(exc)}).")
        if isinstance(exc, requests.exceptions.Timeout):
            return PacsTimeoutError(f"{self._where()} did not answer the {what} within {self.node.timeout_s:g} s.")
        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            code = int(exc.response.status_code)
            if code in (401, 403):
                return PacsAuthError(
                    f"{self._where()} refused the credentials for the {what} (HTTP {code}): check the user name and "
                    "the password/token environment variable or keyring entry in the PACS settings.", code,
                )
            if code == 404:
                return PacsNotFoundError(f"{self._where()}: not found on the server ({what}, HTTP 404).")
            kind = "server error" if code >= 500 else "request refused"
            return PacsHTTPError(f"{self._where()}: {kind} during the {what} (HTTP {code} {exc.response.reason}).", code)
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            return PacsConnectionError(
                f"{self._where()} cannot be reached or dropped the connection during the {what}: check that the server "
                "is running and the dicomweb_url in the PACS settings."
            )
        if isinstance(exc, requests.exceptions.RequestException):
            return PacsConnectionError(f"{self._where()}: the {what} failed ({_short(exc)}).")
        if isinstance(exc, ValueError):  # dicomweb-client: malformed multipart/JSON answer
            return PacsConnectionError(f"{self._where()} sent an incomplete or malformed answer to the {what} ({_short(exc)}).")
        raise exc

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - mapped to one typed error
            raise self._map(exc, what) from exc

    # ---- services ------------------------------------------------------------------------------
    def _qido(self, path: str, filters: dict[str, str], fields: Sequence[str], what: str,
              limit: int | None = None) -> list[dict]:
        """QIDO-RS search. Query values keep ``*``/``?`` unescaped (legal in a query string), since some
        servers (Orthanc 1.10) do not decode ``%2A`` back into a wildcard."""
        from urllib.parse import quote

        params = [f"{quote(k)}={quote(str(v), safe='*?,-')}" for k, v in filters.items()]
        params += [f"includefield={quote(f)}" for f in fields]
        if limit:
            params.append(f"limit={int(limit)}")
        url = f"{self.node.dicomweb_url.rstrip('/')}/{path}" + ("?" + "&".join(params) if params else "")
        client = self.client

        def get():
            response = client._session.get(url, headers={"Accept": "application/dicom+json"}, timeout=client._timeout)
            response.raise_for_status()
            return response.json() if response.content else []

        found = self._call(what, get)
        if not isinstance(found, list):
            raise PacsConnectionError(f"{self._where()} sent a malformed answer to the {what}.")
        return found

    def echo(self) -> None:
        self._qido("studies", {}, (), "QIDO-RS echo", limit=1)

    def find_studies(self, query: StudyQuery, cancel: threading.Event | None = None) -> list[StudyResult]:
        import pydicom

        found = self._qido("studies", query.filters(), STUDY_KEYS, "study search (QIDO-RS)", limit=query.limit)
        return [StudyResult.from_dataset(pydicom.Dataset.from_json(d)) for d in found]

    def find_series(self, study_uid: str, cancel: threading.Event | None = None) -> list[SeriesResult]:
        import pydicom

        found = self._qido(f"studies/{study_uid}/series", {}, SERIES_KEYS, "series search (QIDO-RS)")
        return [SeriesResult.from_dataset(pydicom.Dataset.from_json(d), study_uid) for d in found]

    def retrieve_series(self, study_uid: str, series_uid: str, dest: Path, progress: ProgressFn | None = None,
                        cancel: threading.Event | None = None, expected: int | None = None) -> int:
        """WADO-RS one series into ``dest`` (one ``<SOPInstanceUID>.dcm`` per instance); returns the count."""
        import pydicom

        dest.mkdir(parents=True, exist_ok=True)
        what = f"retrieve of series {series_uid} (WADO-RS)"
        stream = self._call(what, self.client.iter_series, study_uid, series_uid)
        n = 0
        try:
            while True:
                check_cancel(cancel, "The retrieve")
                try:
                    ds = next(stream)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - mapped below
                    raise self._map(exc, what) from exc
                sop = str(ds.get("SOPInstanceUID", "")) or f"instance{n}"
                name = "".join(ch for ch in sop if ch.isdigit() or ch == ".") or f"instance{n}"
                tmp = dest / f".{name}.tmp"
                pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
                os.replace(tmp, dest / f"{name}.dcm")
                n += 1
                if progress is not None:
                    progress(n, max(n, expected or 0))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if n == 0:
            raise PacsNotFoundError(f"{self._where()} has no instances in series {series_uid} of study {study_uid}.")
        if expected and n < expected:
            raise PacsConnectionError(f"{self._where()} sent only {n} of the {expected} instances of series {series_uid}.")
        return n

    def store(self, paths: Sequence[Path], progress: ProgressFn | None = None) -> list[str]:
        """STOW-RS the DICOM files; returns their SOPInstanceUIDs. The answer is checked instance by instance."""
        import pydicom
        import requests

        datasets = []
        for p in paths:
            try:
                datasets.append(pydicom.dcmread(p))
            except Exception as exc:  # noqa: BLE001
                raise PacsError(f"Cannot send {p}: not a readable DICOM file ({exc}).") from exc
        what = "store (STOW-RS)"
        try:
            answer = self.client.store_instances(datasets)
        except requests.exceptions.HTTPError as exc:
            answer = _stow_answer(exc.response)
            if answer is None or "FailedSOPSequence" not in answer:
                raise self._map(exc, what) from exc
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, what) from exc
        failures = [(str(it.get("ReferencedSOPInstanceUID", "")), _reason(it)) for it in answer.get("FailedSOPSequence", [])]
        stored = {str(it.get("ReferencedSOPInstanceUID", "")) for it in answer.get("ReferencedSOPSequence", [])}
        wanted = [str(ds.SOPInstanceUID) for ds in datasets]
        missing = [(u, "not acknowledged") for u in wanted if u not in stored and u not in {f[0] for f in failures}]
        failures += missing
        if progress is not None:
            progress(len(datasets), len(datasets))
        if failures:
            raise PacsStoreError(
                f"{self._where()} refused to store {len(failures)} of {len(datasets)} instance(s) ({failures[0][1]}).", failures
            )
        return wanted


def _reason(item: Any) -> str:
    code = item.get("FailureReason")
    code = getattr(code, "value", code)
    return f"failure reason 0x{int(code):04X}" if code is not None else "refused"


def _stow_answer(response):
    """The STOW-RS answer dataset of an error response (409 with a FailedSOPSequence), or None."""
    import pydicom

    if response is None or not response.content:
        return None
    try:
        return pydicom.Dataset.from_json(response.json())
    except Exception:  # noqa: BLE001 - an XML or HTML error page
        return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")
