"""DIMSE client (pynetdicom): C-ECHO, C-FIND, C-GET and C-STORE against one PACS node.

Every call opens its own association, checks it was accepted, and turns every failure into one typed
:class:`~seg_app.core.pacs_types.PacsError` naming the node: server down (connection refused),
timeout, association rejected (AE titles), a failure status, or a connection lost mid-transfer.
Retrieval uses C-GET, so no inbound port has to be opened on the workstation.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from seg_app.core.pacs_types import (
    SERIES_KEYS,
    STUDY_KEYS,
    PacsAssociationRejected,
    PacsConnectionError,
    PacsError,
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

__all__ = ["DimseClient"]

_STORE_OK = {0x0000, 0xB000, 0xB006, 0xB007}  # success and the coercion/elements-discarded warnings
_PENDING = {0xFF00, 0xFF01}
_GET_CONTEXT_LIMIT = 120  # presentation contexts are limited to 128 per association


def _quiet_pynetdicom() -> None:
    # pynetdicom logs every PDU at INFO; keep the app's output to one line per error
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _status_text(code: int) -> str:
    try:
        from pynetdicom.status import code_to_category

        return f"0x{code:04X} ({code_to_category(code).lower()})"
    except Exception:  # noqa: BLE001 - unknown code: hex only
        return f"0x{code:04X}"


class DimseClient:
    """One node over DIMSE. ``local_ae_title`` is the workstation's calling AE title."""

    protocol = "dimse"

    def __init__(self, node: PacsNode, local_ae_title: str) -> None:
        if not (node.host and node.ae_title):
            raise PacsError(f"PACS node '{node.name}' has no DIMSE address (ae_title, host, port).")
        self.node = node
        self.local_ae_title = node.local_ae_title or local_ae_title
        _quiet_pynetdicom()

    # ---- association ---------------------------------------------------------------------------
    def _where(self) -> str:
        return f"PACS node '{self.node.name}' ({self.node.endpoint('dimse')})"

    def _ae(self):
        from pynetdicom import AE

        ae = AE(ae_title=self.local_ae_title)
        t = float(self.node.timeout_s)
        ae.acse_timeout = t
        ae.dimse_timeout = t
        ae.network_timeout = t
        ae.connection_timeout = t
        ae.maximum_pdu_size = 0  # no limit
        return ae

    def _tls_args(self):
        tls = self.node.tls
        if tls is None or not tls.enabled:
            return None
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file or None)
        if not tls.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
        return ctx, self.node.host

    def _associate(self, ae, ext_neg=None, evt_handlers=None):
        try:
            assoc = ae.associate(
                self.node.host, int(self.node.port), ae_title=self.node.ae_title, ext_neg=ext_neg,
                evt_handlers=evt_handlers, tls_args=self._tls_args(),
            )
        except (OSError, ValueError) as exc:
            raise PacsConnectionError(f"{self._where()} cannot be reached: {exc}.") from exc
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            raise PacsAssociationRejected(
                f"{self._where()} rejected the association: check that the server knows the calling AE title "
                f"'{self.local_ae_title}' and that '{self.node.ae_title}' is its AE title."
            )
        if assoc.is_aborted:
            raise PacsConnectionError(
                f"{self._where()} aborted the association: the server accepted the connection but refused the "
                "requested services."
            )
        raise PacsConnectionError(
            f"{self._where()} cannot be reached (no answer on {self.node.host}:{self.node.port} within "
            f"{self.node.timeout_s:g} s, or the connection was refused): check that the server is running and "
            "the host and port in the PACS settings."
        )

    def _lost(self, what: str, assoc) -> PacsError:
        if assoc.is_aborted or not assoc.is_alive():
            return PacsConnectionError(f"{self._where()}: the connection was lost during the {what}.")
        return PacsTimeoutError(
            f"{self._where()} did not answer the {what} within {self.node.timeout_s:g} s."
        )

    # ---- services ------------------------------------------------------------------------------
    def echo(self) -> None:
        from pynetdicom.sop_class import Verification

        ae = self._ae()
        ae.add_requested_context(Verification)
        assoc = self._associate(ae)
        try:
            status = assoc.send_c_echo()
            if "Status" not in status:
                raise self._lost("C-ECHO", assoc)
            if status.Status != 0:
                raise PacsError(f"{self._where()} answered the C-ECHO with status {_status_text(status.Status)}.")
        finally:
            assoc.release()

    def _find(self, identifier, what: str, cancel: threading.Event | None = None) -> list:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        ae = self._ae()
        ae.add_requested_context(FIND)
        assoc = self._associate(ae)
        out = []
        try:
            for status, ds in assoc.send_c_find(identifier, FIND):
                if "Status" not in status:
                    raise self._lost(f"C-FIND ({what})", assoc)
                code = int(status.Status)
                if code in _PENDING:
                    if ds is not None:
                        out.append(ds)
                    if cancel is not None and cancel.is_set():
                        assoc.abort()
                        check_cancel(cancel, "The search")
                    continue
                if code != 0:
                    raise PacsError(f"{self._where()} refused the C-FIND ({what}) with status {_status_text(code)}.")
        finally:
            if assoc.is_established:
                assoc.release()
        return out

    @staticmethod
    def _identifier(level: str, keys: Sequence[str], filters: dict[str, str]):
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = level
        for key in keys:
            setattr(ds, key, "")
        for key, value in filters.items():
            setattr(ds, key, value)
        return ds

    def find_studies(self, query: StudyQuery, cancel: threading.Event | None = None) -> list[StudyResult]:
        ident = self._identifier("STUDY", STUDY_KEYS, query.filters())
        return [StudyResult.from_dataset(ds) for ds in self._find(ident, "studies", cancel)][: query.limit]

    def find_series(self, study_uid: str, cancel: threading.Event | None = None) -> list[SeriesResult]:
        ident = self._identifier("SERIES", SERIES_KEYS, {"StudyInstanceUID": study_uid})
        return [SeriesResult.from_dataset(ds, study_uid) for ds in self._find(ident, "series", cancel)]

    def find_instances(self, study_uid: str, series_uid: str) -> list[tuple[str, str]]:
        """(SOPInstanceUID, SOPClassUID) of every instance of the series."""
        ident = self._identifier("IMAGE", ("SOPInstanceUID", "SOPClassUID"),
                                 {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid})
        return [(str(ds.get("SOPInstanceUID", "")), str(ds.get("SOPClassUID", ""))) for ds in self._find(ident, "instances")]

    def retrieve_series(self, study_uid: str, series_uid: str, dest: Path, progress: ProgressFn | None = None,
                        cancel: threading.Event | None = None, expected: int | None = None) -> int:
        """C-GET one series into ``dest`` (one ``<SOPInstanceUID>.dcm`` per instance); returns the count."""
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import ALL_TRANSFER_SYNTAXES, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        instances = self.find_instances(study_uid, series_uid)
        if not instances:
            raise PacsNotFoundError(f"{self._where()} has no series {series_uid} in study {study_uid}.")
        total = len(instances)
        classes = sorted({c for _, c in instances if c})
        if len(classes) > _GET_CONTEXT_LIMIT:
            raise PacsError(f"{self._where()}: series {series_uid} mixes {len(classes)} SOP classes; cannot C-GET it.")
        ae = self._ae()
        ae.add_requested_context(GET)
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian] + [
            ts for ts in ALL_TRANSFER_SYNTAXES if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        ]
        for cls in classes:
            ae.add_requested_context(cls, syntaxes)
        roles = [build_role(cls, scp_role=True) for cls in classes]
        received: list[int] = [0]
        write_errors: list[str] = []
        dest.mkdir(parents=True, exist_ok=True)

        def on_store(event):
            if cancel is not None and cancel.is_set():
                return 0xFE00
            try:
                ds = event.dataset
                sop = str(ds.SOPInstanceUID)
                name = "".join(ch for ch in sop if ch.isdigit() or ch == ".") or f"instance{received[0]}"
                path = dest / f"{name}.dcm"
                tmp = dest / f".{name}.tmp"
                with open(tmp, "wb") as f:
                    f.write(event.encoded_dataset())
                os.replace(tmp, path)
            except Exception as exc:  # noqa: BLE001 - reported as a failed sub-operation
                write_errors.append(str(exc))
                return 0xA700
            received[0] += 1
            if progress is not None:
                try:
                    progress(received[0], total)
                except Exception:  # noqa: BLE001 - a cancelling progress callback
                    if cancel is not None:
                        cancel.set()
            return 0x0000

        assoc = self._associate(ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        ident = self._identifier("SERIES", (), {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid})
        final = None
        try:
            for status, _ds in assoc.send_c_get(ident, GET):
                if "Status" not in status:
                    check_cancel(cancel, "The retrieve")
                    raise self._lost("C-GET", assoc)
                code = int(status.Status)
                if code in _PENDING:
                    if cancel is not None and cancel.is_set():
                        assoc.abort()
                        check_cancel(cancel, "The retrieve")
                    continue
                final = code
        finally:
            if assoc.is_established:
                assoc.release()
        check_cancel(cancel, "The retrieve")
        if write_errors:
            raise PacsError(f"Cannot write a retrieved instance into {dest}: {write_errors[0]}.")
        if final not in (0x0000,):
            raise PacsError(
                f"{self._where()} could not send series {series_uid}: C-GET status {_status_text(final or 0)} "
                f"({received[0]} of {total} instances received)."
            )
        if received[0] < total:
            raise PacsError(
                f"{self._where()} sent only {received[0]} of the {total} instances of series {series_uid}."
            )
        return received[0]

    def store(self, paths: Sequence[Path], progress: ProgressFn | None = None) -> list[str]:
        """C-STORE the DICOM files; returns their SOPInstanceUIDs. Every status is checked."""
        import pydicom
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        datasets = []
        for p in paths:
            try:
                datasets.append(pydicom.dcmread(p))
            except Exception as exc:  # noqa: BLE001
                raise PacsError(f"Cannot send {p}: not a readable DICOM file ({exc}).") from exc
        ae = self._ae()
        contexts: dict[str, set[str]] = {}
        for ds in datasets:
            contexts.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
        for cls, tss in contexts.items():
            ae.add_requested_context(cls, sorted(tss | {ExplicitVRLittleEndian, ImplicitVRLittleEndian}))
        assoc = self._associate(ae)
        failures: list[tuple[str, str]] = []
        sent: list[str] = []
        try:
            for n, ds in enumerate(datasets, start=1):
                sop = str(ds.SOPInstanceUID)
                status = assoc.send_c_store(ds)
                if "Status" not in status:
                    raise self._lost("C-STORE", assoc)
                code = int(status.Status)
                if code in _STORE_OK:
                    sent.append(sop)
                else:
                    failures.append((sop, _status_text(code)))
                if progress is not None:
                    progress(n, len(datasets))
        finally:
            if assoc.is_established:
                assoc.release()
        if failures:
            raise PacsStoreError(
                f"{self._where()} refused to store {len(failures)} of {len(datasets)} instance(s) "
                f"(C-STORE status {failures[0][1]}).", failures,
            )
        return sent
