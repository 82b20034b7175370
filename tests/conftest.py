"""Shared pytest set-up: helper modules on the path, a private app cache, and the tiny test checkpoint.

Tiny checkpoints come from one factory, ``checkpoints.make_tiny_checkpoint``; call it directly for a
variant (other seed, channels, labels, grid) and use the ``tiny_checkpoint_path`` fixture otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# make the helper modules next to the tests (e.g. ``dicom_factory``) importable
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True, scope="session")
def _private_app_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point the app's cache (ONNX exports, backend verdicts) at a temporary folder for the whole run,
    so no test reads or writes ``~/.cache/seg_app`` and the backend a test exercises never depends on
    an earlier run."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SEG_APP_CACHE", str(tmp_path_factory.mktemp("seg_app_cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _private_model_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own (empty) model registry (``seg_app.core.model_registry``), so no test reads or
    writes ``~/.config/seg_app/models.json`` and a model one test loads is not the next window's model."""
    monkeypatch.setenv("SEG_APP_MODEL_REGISTRY", str(tmp_path_factory.mktemp("models", numbered=True) / "models.json"))


@pytest.fixture(scope="session")
def tiny_checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight, deterministic 1-channel checkpoint on the corpus grid (``corpus.CORPUS_MODEL``)."""
    from checkpoints import make_tiny_checkpoint
    from corpus import CORPUS_MODEL

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_model") / "tiny.pt", **CORPUS_MODEL)
