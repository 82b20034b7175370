"""The app in a real X server (Xvfb + Qt's xcb platform), not only offscreen: scripts/xvfb_smoke.sh."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_app_runs_in_real_x_server(tmp_path):
    env = dict(os.environ, XVFB_SMOKE_REQUIRED="1", PYTHON=sys.executable)
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "xvfb_smoke.sh"), str(ROOT / "sample_scans" / "brain_tumour_mri.nii.gz"), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "root.png").stat().st_size > 10_000
