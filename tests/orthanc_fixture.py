"""A real Orthanc PACS for the tests: loopback only, random free ports, a temporary storage folder.

``start_orthanc(folder)`` writes a generated configuration (DICOM and DICOMweb enabled, one HTTP user
with a password, the test's calling AE registered for C-FIND/C-GET/C-STORE, a Lua filter that
fails the storage of any instance whose SeriesDescription contains ``REFUSE``: C-STORE answers
0xA700, STOW-RS acknowledges nothing) and waits until the REST API answers.
``OrthancServer.stop()`` terminates it; ``kill()`` ends it abruptly (server-down tests).

Orthanc is a hard requirement of the suite, like dciodvfy: ``make test`` runs
``scripts/install_system_deps.sh``, which installs Debian's ``orthanc`` and ``orthanc-dicomweb``.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AET", "CALLING_AET", "PASSWORD", "USER", "OrthancServer", "PacsStudy", "find_orthanc", "make_study", "orthanc",
           "pacs_settings", "standard_studies", "start_orthanc", "write_settings"]

USER, PASSWORD = "segtest", "pacs-Secret-42"
AET = "ORTHANCTEST"
CALLING_AET = "SEGAPPTEST"
_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  local desc = dicom.SeriesDescription
  if desc ~= nil and string.find(desc, "REFUSE") ~= nil then
    error("seg_app test server: series refused")
  end
  return true
end
"""


def find_orthanc() -> tuple[str, str]:
    """(Orthanc executable, DICOMweb plugin path); fails with a clear message when missing."""
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    plugin = next((str(Path(d) / "libOrthancDicomWeb.so") for d in _PLUGIN_DIRS
                   if (Path(d) / "libOrthancDicomWeb.so").exists()), None)
    if not exe or not plugin:
        missing = " and ".join(n for n, ok in (("orthanc", exe), ("orthanc-dicomweb", plugin)) if not ok)
        raise AssertionError(
            f"The PACS tests need a real Orthanc server but {missing} is not installed: run "
            "scripts/install_system_deps.sh (Debian/Ubuntu packages orthanc and orthanc-dicomweb), "
            "as `make test` does."
        )
    return exe, plugin


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OrthancServer:
    folder: Path
    http_port: int
    dicom_port: int
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        """Call Orthanc's REST API as the test user; returns the decoded JSON (or raw bytes)."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Authorization", "Basic " + b64encode(f"{USER}:{PASSWORD}".encode()).decode())
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
        try:
            return json.loads(data)
        except ValueError:
            return data

    def upload(self, paths) -> list[str]:
        """Upload DICOM files through the REST API; returns Orthanc's instance ids."""
        ids = []
        for p in paths:
            ids.append(self.rest("POST", "/instances", Path(p).read_bytes(), "application/dicom")["ID"])
        return ids

    def node_settings(self, name: str = "orthanc", **changes) -> dict:
        """A node entry for seg_app's PACS settings file pointing at this server."""
        node = {
            "ae_title": AET, "host": "127.0.0.1", "port": self.dicom_port,
            "dicomweb_url": self.dicomweb_url, "username": USER, "password_env": "SEG_APP_TEST_PACS_PASSWORD",
            "timeout_s": 10, "retries": 1, "backoff_s": 0.05,
        }
        node.update(changes)
        return node

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_orthanc(folder: Path, timeout_s: float = 60.0) -> OrthancServer:
    """Start Orthanc with a generated configuration in ``folder``; returns once its REST API answers."""
    exe, plugin = find_orthanc()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "filter.lua").write_text(_LUA)
    server = OrthancServer(folder, free_port(), free_port())
    config = {
        "Name": "seg_app test PACS",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "StorageCompression": False,
        "HttpPort": server.http_port,
        "DicomPort": server.dicom_port,
        "DicomAet": AET,
        "DicomCheckCalledAet": True,
        "DicomServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "HttpsCACertificates": "",
        "Plugins": [plugin],
        "LuaScripts": [str(folder / "filter.lua")],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "StudiesMetadata": "Full",
                     "SeriesMetadata": "Full"},
        "DicomModalities": {"segapp": {"AET": CALLING_AET, "Host": "127.0.0.1", "Port": free_port()}},
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomScpTimeout": 30,
        "HttpTimeout": 30,
        "ConcurrentJobs": 1,
        "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    server.log_path = folder / "orthanc.log"
    log = open(server.log_path, "wb")  # noqa: SIM115 - kept open for the server's lifetime
    server.proc = subprocess.Popen([exe, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=folder, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited at start-up:\n{server.log_path.read_text()[-3000:]}")
        try:
            server.rest("GET", "/system")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError(f"Orthanc did not answer within {timeout_s:.0f} s:\n{server.log_path.read_text()[-3000:]}")
            time.sleep(0.1)


# ---- test data and pytest fixtures --------------------------------------------------------------
@dataclass(frozen=True)
class PacsStudy:
    patient_id: str
    patient_name: str
    birth_date: str
    study_date: str
    modality: str
    accession: str
    description: str
    study_uid: str
    series_uid: str
    n_instances: int


def make_study(folder: Path, *, patient_id: str, patient_name: str, birth_date: str, study_date: str,
               modality: str, accession: str, description: str, shape=(24, 24, 6), series_description: str = "T1 axial",
               seed: int = 0) -> tuple[PacsStudy, list[Path]]:
    """A small DICOM series (``core.dicom_write``) with the given patient/study attributes."""
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.volume import Volume

    # MR-like noise with a bright blob in the middle (like corpus.corpus_volume, without importing torch)
    rng = np.random.default_rng(seed)
    arr = rng.integers(50, 150, size=shape).astype(np.float32)
    c = [n // 2 for n in shape]
    arr[max(c[0] - 3, 0): c[0] + 3, max(c[1] - 3, 0): c[1] + 3, max(c[2] - 1, 0): c[2] + 2] += 400
    vol = Volume(arr, np.diag([-0.9, -0.9, 2.0, 1.0]), modality=modality)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = write_dicom_series(vol, folder, modality=modality, patient_id=patient_id, patient_name=patient_name,
                               study_date=study_date, study_uid=study_uid, series_uid=series_uid,
                               series_description=series_description)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientBirthDate = birth_date
        ds.AccessionNumber = accession
        ds.StudyDescription = description
        ds.save_as(f)
    info = PacsStudy(patient_id, patient_name, birth_date, study_date, modality, accession, description,
                     study_uid, series_uid, len(files))
    return info, files


def standard_studies(folder: Path) -> dict[str, tuple[PacsStudy, list[Path]]]:
    """Two patients: an MR head study in 2026 and a CT study in 2025."""
    return {
        "mr": make_study(folder / "mr", patient_id="P001", patient_name="DOE^JANE", birth_date="19700102",
                         study_date="20260315", modality="MR", accession="ACC001", description="MRI head"),
        "ct": make_study(folder / "ct", patient_id="P002", patient_name="ROE^RICHARD", birth_date="19551231",
                         study_date="20250610", modality="CT", accession="ACC002", description="CT chest", seed=1),
    }


def write_settings(path: Path, nodes: dict, cache_dir: Path, local_ae_title: str = CALLING_AET) -> Path:
    path.write_text(json.dumps({"local_ae_title": local_ae_title, "cache_dir": str(cache_dir), "nodes": nodes}, indent=2))
    return path


try:
    import pytest
except ImportError:  # pragma: no cover - imported by tests only
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module")
    def orthanc(tmp_path_factory):
        """A running Orthanc holding :func:`standard_studies`; ``orthanc.studies`` maps "mr"/"ct" to PacsStudy."""
        folder = tmp_path_factory.mktemp("orthanc")
        server = start_orthanc(folder / "server")
        try:
            studies = standard_studies(folder / "data")
            for _info, files in studies.values():
                server.upload(files)
            server.extra["studies"] = {k: v[0] for k, v in studies.items()}
            yield server
        finally:
            server.stop()

    @pytest.fixture
    def pacs_settings(orthanc, tmp_path, monkeypatch):
        """Settings file with node "orthanc" (password from the environment), cache and settings under tmp_path."""
        from seg_app.core.pacs import load_settings

        monkeypatch.setenv("SEG_APP_TEST_PACS_PASSWORD", PASSWORD)
        monkeypatch.setenv("SEG_APP_CACHE", str(tmp_path / "app_cache"))
        path = write_settings(tmp_path / "pacs.json", {"orthanc": orthanc.node_settings()}, tmp_path / "pacs_cache")
        monkeypatch.setenv("SEG_APP_PACS_SETTINGS", str(path))
        return load_settings(path)
