"""Both console scripts print a useful --help."""

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_seg_app_help_lists_commands():
    proc = subprocess.run([str(BIN / "seg-app"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for word in ("info", "predict", "--screenshot", "Research use only"):
        assert word in proc.stdout


def test_seg_app_version():
    proc = subprocess.run([str(BIN / "seg-app"), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("seg-app ")


def test_seg_train_help_lists_commands():
    proc = subprocess.run([str(BIN / "seg-train"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for word in ("synth", "train", "evaluate", "export"):
        assert word in proc.stdout


def test_info_on_missing_path_is_one_clear_line(tmp_path):
    proc = subprocess.run([str(BIN / "seg-app"), "info", str(tmp_path / "nope.nii.gz")], capture_output=True, text=True)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope.nii.gz" in lines[0]
    assert "Traceback" not in proc.stderr
