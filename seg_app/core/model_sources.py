"""Where a model comes from, and the one function that loads any of them (Qt-free).

``model_kind(path)``:

* ``"checkpoint"``: a file (``.pt``): this app's self-describing checkpoint (:mod:`seg_app.core.spec`);
* ``"monai_bundle"``: a folder with ``configs/metadata.json`` (or a file in that ``configs/``): a MONAI
  Model Zoo bundle (:mod:`seg_app.core.monai_bundle`);
* ``"nnunet"``: a folder with ``dataset.json`` and ``plans.json`` (and ``fold_*/``): an nnU-Net v2
  trained-model folder (detected here; run by :mod:`seg_app.core.nnunet_model`, ``make_segmenter``).

:func:`load_model_checkpoint` is what the app, ``seg-app predict/followup/info`` and
:class:`~seg_app.core.inference.Segmenter` call with a path: it returns the same
:class:`~seg_app.core.spec.Checkpoint` (spec + weights) whatever the source.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from seg_app.core.errors import CheckpointError
from seg_app.core.spec import Checkpoint, load_checkpoint

__all__ = ["MODEL_KINDS", "is_model_folder", "load_model_checkpoint", "model_kind", "model_sha256"]

#: What :func:`model_kind` answers.
MODEL_KINDS = ("checkpoint", "monai_bundle", "nnunet")


def model_kind(path: str | os.PathLike) -> str:
    """``"checkpoint"``, ``"monai_bundle"`` or ``"nnunet"`` for ``path``.

    A path that does not exist is a ``"checkpoint"`` (loading it then says the file is missing).

    Raises:
        CheckpointError: a folder that is neither a MONAI bundle nor an nnU-Net v2 results folder.
    """
    from seg_app.core.monai_bundle import is_bundle

    p = Path(path)
    if is_bundle(p):
        return "monai_bundle"
    if p.is_dir():
        if (p / "dataset.json").is_file() and (p / "plans.json").is_file():
            return "nnunet"
        raise CheckpointError(
            f"Model folder '{p.name}' is neither a MONAI bundle (configs/metadata.json) nor an nnU-Net v2 "
            "results folder (dataset.json, plans.json, fold_*/)."
        )
    return "checkpoint"


def is_model_folder(path: str | os.PathLike) -> bool:
    """True for a MONAI bundle or an nnU-Net v2 results folder (never raises; a scan folder is False)."""
    try:
        return Path(path).is_dir() and model_kind(path) != "checkpoint"
    except CheckpointError:
        return False


def load_model_checkpoint(path: str | os.PathLike, *, trust_model: bool = False) -> Checkpoint:
    """Load any supported model as a ``Checkpoint`` (spec + state dict), never running code from it.

    Args:
        path: a checkpoint file, a MONAI bundle folder, or an nnU-Net v2 results folder.
        trust_model: allow a bundle's TorchScript ``models/model.ts`` (``--trust-model``).

    Raises:
        CheckpointError: one sentence naming the file and the problem (or what was refused).
    """
    kind = model_kind(path)
    if kind == "monai_bundle":
        from seg_app.core.monai_bundle import load_bundle

        return load_bundle(path, trust_model=trust_model)
    if kind == "nnunet":
        raise CheckpointError(
            f"'{Path(path).name}' is an nnU-Net v2 results folder: it is run by nnU-Net's own predictor, not loaded "
            "as a checkpoint (seg_app.core.nnunet_model.make_segmenter; seg-app predict/followup and the app do so)."
        )
    return load_checkpoint(path)


def model_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a model: a file's bytes, or for a folder the relative paths and bytes of its files."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
