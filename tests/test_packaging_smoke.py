"""The standalone installer, built and smoke-tested for real: PyInstaller bundle, .deb, .tar.gz.

Runs ``packaging/build.py`` into a temporary folder (about 2.5 min on 2 cores) and then
``scripts/package_smoke.sh`` on it, which runs only the frozen app: predict on the NIfTI and DICOM
samples (masks aligned with the source), compressed DICOM decoding, offscreen and X11 screenshots,
startup time, the .deb unpacked with ``dpkg -x`` and its launcher, the .tar.gz listing.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.timeout(2700)  # the build's and the smoke run's own limits (1500 + 900 s) apply, not the suite's 600 s
def test_build_and_smoke_test_installer(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "build.py"), "--dist", str(dist), "--work", str(tmp_path / "work"), "--nice", "0"],
        capture_output=True, text=True, timeout=1500, cwd=ROOT,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    env.pop("QT_QPA_PLATFORM", None)
    smoke = subprocess.run(["bash", str(ROOT / "scripts" / "package_smoke.sh"), str(dist)],
                           capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    out = smoke.stdout + smoke.stderr
    assert smoke.returncode == 0, out[-6000:]
    assert "PACKAGE SMOKE: PASS" in out
    summary = out.split("== summary", 1)[-1]
    assert "FAIL" not in summary and "SKIP" not in summary, summary
    assert "startup to ready window" in summary and "DICOM mask aligns with series" in summary
