"""Shared pytest set-up (kept minimal; add fixtures as needed)."""

from __future__ import annotations

import sys
from pathlib import Path

# make the helper modules next to the tests (e.g. ``dicom_factory``) importable
sys.path.insert(0, str(Path(__file__).resolve().parent))
