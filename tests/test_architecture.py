"""Layering rules: the app never imports training; only seg_app.gui imports Qt (import-linter)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


def test_core_imports_without_qt():
    code = "import sys, seg_app.core, seg_app.core.spec, seg_app.core.preprocess, seg_app.core.inference; " \
           "assert not any(m.startswith('PySide6') for m in sys.modules), 'Qt imported by core'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
