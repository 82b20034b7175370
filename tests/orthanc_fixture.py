"""A real Orthanc PACS for the tests: loopback only, random free ports, a temporary storage folder.

``start_orthanc(folder)`` writes a generated configuration (DICOM and DICOMweb enabled, one HTTP user
with a password, the test's calling AE registered for C-FIND/C-GET/C-STORE, a Lua filter that
refuses any instance whose SeriesDescription contains ``REFUSE``) and waits until the REST API answers.
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

__all__ = ["OrthancServer", "find_orthanc", "start_orthanc", "USER", "PASSWORD", "AET", "CALLING_AET"]

USER, PASSWORD = "segtest", "pacs-Secret-42"
AET = "ORTHANCTEST"
CALLING_AET = "SEGAPPTEST"
_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  local desc = dicom.SeriesDescription
  if desc ~= nil and string.find(desc, "REFUSE") ~= nil then
    return false
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
