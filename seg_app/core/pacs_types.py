"""PACS settings, typed errors, query/result types and the retry policy (no network code here).

The network clients (:mod:`seg_app.core.pacs_dimse`, :mod:`seg_app.core.pacs_dicomweb`) and the facade
(:mod:`seg_app.core.pacs`) build on this module. Settings live in one JSON (or TOML) file, by default
``$XDG_CONFIG_HOME/seg_app/pacs.json`` (``~/.config/...``), overridden by ``$SEG_APP_PACS_SETTINGS``::

    {"local_ae_title": "SEGAPP",
     "nodes": {"hospital": {"ae_title": "PACS", "host": "pacs.example.org", "port": 104,
                            "dicomweb_url": "https://pacs.example.org/dicom-web",
                            "username": "radiology", "password_env": "HOSPITAL_PACS_PASSWORD",
                            "tls": {"ca_file": "/etc/ssl/hospital-ca.pem"}}}}

Secrets never live in the file: a password or bearer token is read at connection time from the
environment variable named by ``password_env`` / ``token_env`` or from the OS keyring
(``keyring_service``, with the optional ``keyring`` package). :class:`PacsNode` holds only the names, so
printing, logging or serialising a node can never leak a secret.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from seg_app.core.errors import Cancelled, SegAppError

__all__ = [
    "DEFAULT_LOCAL_AE",
    "PacsAssociationRejected",
    "PacsAuthError",
    "PacsConfigError",
    "PacsConnectionError",
    "PacsError",
    "PacsHTTPError",
    "PacsNode",
    "PacsNotFoundError",
    "PacsSettings",
    "PacsStoreError",
    "PacsTimeoutError",
    "ProgressFn",
    "SeriesResult",
    "StudyQuery",
    "StudyResult",
    "TlsSettings",
    "check_cancel",
    "load_settings",
    "save_settings",
    "settings_path",
    "with_retries",
]

DEFAULT_LOCAL_AE = "SEGAPP"
PROTOCOLS = ("dicomweb", "dimse")
ProgressFn = Callable[[int, int], None]
T = TypeVar("T")


# ---- errors ------------------------------------------------------------------------------------
class PacsError(SegAppError):
    """A PACS operation failed; the message names the node and what to check."""


class PacsConfigError(PacsError):
    """The PACS settings file is missing, unreadable, or names no such node."""


class PacsConnectionError(PacsError):
    """The server could not be reached, or the connection broke mid-transfer."""


class PacsTimeoutError(PacsConnectionError):
    """The server did not answer within the node's timeout."""


class PacsAssociationRejected(PacsError):
    """The DICOM server refused the association (AE titles, not allowed to connect)."""


class PacsHTTPError(PacsError):
    """The DICOMweb server answered with an HTTP error status (``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = int(status)


class PacsAuthError(PacsHTTPError):
    """Wrong or missing credentials (HTTP 401/403)."""


class PacsNotFoundError(PacsError):
    """The study or series is not on the server."""


class PacsStoreError(PacsError):
    """The server refused to store one or more instances.

    Attributes:
        failures: ``(SOPInstanceUID, status or reason)`` of each refused instance.
    """

    def __init__(self, message: str, failures: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.failures = list(failures)


# ---- settings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsSettings:
    """TLS for DICOMweb (https) and DIMSE (DICOM TLS)."""

    enabled: bool = True
    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # client certificate (mutual TLS)
    key_file: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class PacsNode:
    """One PACS node. Holds no secret: only the names of where the secrets are read from."""

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 104
    dicomweb_url: str = ""
    protocol: str = ""  # "dicomweb" | "dimse"; default: dicomweb when a URL is set
    local_ae_title: str = ""
    tls: TlsSettings | None = None
    username: str = ""
    username_env: str = ""
    password_env: str = ""
    token_env: str = ""
    keyring_service: str = ""
    timeout_s: float = 30.0
    retries: int = 2
    backoff_s: float = 1.0

    @property
    def default_protocol(self) -> str:
        return self.protocol or ("dicomweb" if self.dicomweb_url else "dimse")

    def protocols(self) -> list[str]:
        """The protocols this node is configured for."""
        out = []
        if self.dicomweb_url:
            out.append("dicomweb")
        if self.host and self.ae_title:
            out.append("dimse")
        return out

    def endpoint(self, protocol: str) -> str:
        """Where ``protocol`` connects, for messages (never includes credentials)."""
        if protocol == "dicomweb":
            return _strip_userinfo(self.dicomweb_url)
        return f"{self.ae_title}@{self.host}:{self.port}"

    def user(self) -> str:
        return os.environ.get(self.username_env, "") if self.username_env else self.username

    def secret(self, kind: str) -> str:
        """The password (``kind="password"``) or bearer token (``"token"``), read now; "" when none."""
        env = self.password_env if kind == "password" else self.token_env
        if env and os.environ.get(env):
            return os.environ[env]
        if self.keyring_service:
            try:
                import keyring  # optional dependency
            except ImportError:
                return ""
            account = self.user() if kind == "password" else "token"
            try:
                return keyring.get_password(self.keyring_service, account) or ""
            except Exception:  # noqa: BLE001 - no keyring backend: no secret
                return ""
        return ""

    def to_dict(self) -> dict[str, Any]:
        """The settings-file entry (no secrets, since none are held)."""
        d = {k: v for k, v in asdict(self).items() if k != "name"}
        default = PacsNode(name=self.name)
        return {k: v for k, v in d.items() if v != getattr(default, k) or k in ("ae_title", "host", "port")}


def _strip_userinfo(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)


@dataclass
class PacsSettings:
    nodes: dict[str, PacsNode] = field(default_factory=dict)
    local_ae_title: str = DEFAULT_LOCAL_AE
    cache_dir: str = ""
    path: Path | None = None

    def node(self, name: str) -> PacsNode:
        if name in self.nodes:
            return self.nodes[name]
        known = ", ".join(sorted(self.nodes)) or "none"
        where = self.path or settings_path()
        raise PacsConfigError(f"No PACS node named '{name}' in {where} (configured nodes: {known}).")

    def cache_root(self) -> Path:
        """Where retrieved series are kept: ``cache_dir`` or ``$SEG_APP_CACHE/pacs`` (~/.cache/seg_app/pacs)."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        base = os.environ.get("SEG_APP_CACHE") or str(Path.home() / ".cache" / "seg_app")
        return Path(base) / "pacs"


def settings_path() -> Path:
    """``$SEG_APP_PACS_SETTINGS``, else ``$XDG_CONFIG_HOME/seg_app/pacs.json`` (``~/.config``)."""
    from seg_app.core.files import config_file

    return config_file("SEG_APP_PACS_SETTINGS", "pacs.json")


_SECRET_KEYS = {"password", "token", "secret", "pass"}


def _node_from(name: str, raw: Mapping[str, Any], where: Path) -> PacsNode:
    if not isinstance(raw, Mapping):
        raise PacsConfigError(f"PACS node '{name}' in {where} must be a table of settings.")
    leaked = sorted(k for k in raw if k.lower() in _SECRET_KEYS)
    if leaked:
        raise PacsConfigError(
            f"PACS node '{name}' in {where} holds a secret ({', '.join(leaked)}): secrets are read from the "
            "environment or the OS keyring; use password_env / token_env / keyring_service instead."
        )
    known = {f.name for f in fields(PacsNode)} - {"name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PacsConfigError(f"PACS node '{name}' in {where} has unknown settings: {', '.join(unknown)}.")
    values = dict(raw)
    tls = values.get("tls")
    if tls is True:
        values["tls"] = TlsSettings()
    elif not tls:
        values["tls"] = None
    elif isinstance(tls, Mapping):
        try:
            values["tls"] = TlsSettings(**tls)
        except TypeError as exc:
            raise PacsConfigError(f"PACS node '{name}' in {where}: bad tls settings ({exc}).") from exc
    try:
        for key, kind in (("port", int), ("timeout_s", float), ("retries", int), ("backoff_s", float)):
            if key in values:
                values[key] = kind(values[key])
        node = PacsNode(name=name, **values)
    except (TypeError, ValueError) as exc:
        raise PacsConfigError(f"PACS node '{name}' in {where} has a bad value ({exc}).") from exc
    if node.protocol and node.protocol not in PROTOCOLS:
        raise PacsConfigError(f"PACS node '{name}' in {where}: protocol must be one of {', '.join(PROTOCOLS)}.")
    if not node.protocols():
        raise PacsConfigError(
            f"PACS node '{name}' in {where} needs a dicomweb_url, or ae_title + host + port for DIMSE."
        )
    return node


def load_settings(path: str | os.PathLike[str] | None = None) -> PacsSettings:
    """Read the PACS settings (JSON, or TOML for a ``.toml`` file)."""
    where = Path(path).expanduser() if path else settings_path()
    if not where.exists():
        raise PacsConfigError(
            f"No PACS settings file at {where}: create it (see docs/PACS.md) or point SEG_APP_PACS_SETTINGS at one."
        )
    try:
        text = where.read_text(encoding="utf-8")
        if where.suffix.lower() == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except (OSError, ValueError, ImportError) as exc:
        raise PacsConfigError(f"The PACS settings file {where} cannot be read ({exc}).") from exc
    if not isinstance(raw, Mapping) or not isinstance(raw.get("nodes", {}), Mapping):
        raise PacsConfigError(f"The PACS settings file {where} must hold a 'nodes' table.")
    nodes = {str(n): _node_from(str(n), v, where) for n, v in raw.get("nodes", {}).items()}
    return PacsSettings(
        nodes=nodes, local_ae_title=str(raw.get("local_ae_title") or DEFAULT_LOCAL_AE),
        cache_dir=str(raw.get("cache_dir") or ""), path=where,
    )


def save_settings(settings: PacsSettings, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the settings as JSON (atomically). Nodes hold no secrets, so none is written."""
    from seg_app.core.files import atomic_write

    where = Path(path) if path else (settings.path or settings_path())
    where.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"local_ae_title": settings.local_ae_title}
    if settings.cache_dir:
        doc["cache_dir"] = settings.cache_dir
    doc["nodes"] = {n: node.to_dict() for n, node in settings.nodes.items()}
    with atomic_write(where) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return where


# ---- queries and results -----------------------------------------------------------------------
_DATE_RE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")


@dataclass(frozen=True)
class StudyQuery:
    """Study-level search. ``patient_name`` may use ``*`` / ``?`` wildcards; ``date`` is ``YYYYMMDD``,
    ``YYYYMMDD-``, ``-YYYYMMDD`` or ``YYYYMMDD-YYYYMMDD``."""

    patient_id: str = ""
    patient_name: str = ""
    date: str = ""
    modality: str = ""
    accession: str = ""
    study_uid: str = ""
    limit: int = 200

    def __post_init__(self) -> None:
        if self.date:
            m = _DATE_RE.match(self.date.strip())
            if not m or not (m.group(1) or m.group(3)):
                raise PacsConfigError(
                    f"Bad study date '{self.date}': use YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end may be open)."
                )

    def filters(self) -> dict[str, str]:
        """Keyword -> matching value for the given criteria."""
        out = {}
        for key, value in (("PatientID", self.patient_id), ("PatientName", self.patient_name),
                           ("StudyDate", self.date.strip()), ("ModalitiesInStudy", self.modality.upper()),
                           ("AccessionNumber", self.accession), ("StudyInstanceUID", self.study_uid)):
            if value:
                out[key] = value
        return out


#: Study-level attributes asked for in every study search.
STUDY_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyTime",
              "AccessionNumber", "ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances")
SERIES_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
               "NumberOfSeriesRelatedInstances")


def _text(ds: Any, key: str) -> str:
    value = ds.get(key, "") if ds is not None else ""
    value = getattr(value, "value", value)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _int(ds: Any, key: str) -> int | None:
    try:
        return int(_text(ds, key))
    except ValueError:
        return None


@dataclass(frozen=True)
class StudyResult:
    study_uid: str
    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    study_date: str = ""
    accession: str = ""
    modalities: str = ""
    description: str = ""
    n_series: int | None = None
    n_instances: int | None = None

    @classmethod
    def from_dataset(cls, ds: Any) -> StudyResult:
        return cls(
            study_uid=_text(ds, "StudyInstanceUID"), patient_name=_text(ds, "PatientName"),
            patient_id=_text(ds, "PatientID"), birth_date=_text(ds, "PatientBirthDate"),
            study_date=_text(ds, "StudyDate"), accession=_text(ds, "AccessionNumber"),
            modalities=_text(ds, "ModalitiesInStudy"), description=_text(ds, "StudyDescription"),
            n_series=_int(ds, "NumberOfStudyRelatedSeries"), n_instances=_int(ds, "NumberOfStudyRelatedInstances"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SeriesResult:
    study_uid: str
    series_uid: str
    modality: str = ""
    description: str = ""
    number: int | None = None
    n_instances: int | None = None

    @classmethod
    def from_dataset(cls, ds: Any, study_uid: str = "") -> SeriesResult:
        return cls(
            study_uid=_text(ds, "StudyInstanceUID") or study_uid, series_uid=_text(ds, "SeriesInstanceUID"),
            modality=_text(ds, "Modality"), description=_text(ds, "SeriesDescription"),
            number=_int(ds, "SeriesNumber"), n_instances=_int(ds, "NumberOfSeriesRelatedInstances"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- retries and cancel ------------------------------------------------------------------------
def check_cancel(cancel: threading.Event | None, what: str = "The PACS transfer") -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled.")


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, PacsConnectionError):
        return True
    return isinstance(exc, PacsHTTPError) and not isinstance(exc, PacsAuthError) and exc.status in (429, 502, 503, 504)


def with_retries(fn: Callable[[], T], node: PacsNode, cancel: threading.Event | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn``; on a connection error, timeout or HTTP 429/502/503/504 retry up to ``node.retries``
    times, waiting ``backoff_s``, ``2 * backoff_s``, ``4 * backoff_s``... in between. Other errors
    (rejected association, 4xx, refused store) are raised at once: retrying would not change them."""
    attempt = 0
    while True:
        check_cancel(cancel)
        try:
            return fn()
        except PacsError as exc:
            if not _retryable(exc) or attempt >= node.retries:
                raise
        delay = node.backoff_s * (2 ** attempt)
        attempt += 1
        if cancel is None:
            sleep(delay)
        elif cancel.wait(delay):  # wakes at once on cancel
            check_cancel(cancel)
