"""``seg-train export``: ONNX (checked against torch with ONNX Runtime); MONAI bundles are in :mod:`training.bundle`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_app.core import onnx_backend
from seg_app.core.errors import ExportError
from seg_app.core.spec import Checkpoint, load_checkpoint, network_from_checkpoint
from training.bundle import bundle_inference_config, bundle_metadata, export_bundle  # re-exported

__all__ = ["ONNX_OPSET", "export_onnx", "export_bundle", "bundle_metadata", "bundle_inference_config"]

ONNX_OPSET = onnx_backend.ONNX_OPSET


def _network(ckpt: Checkpoint) -> torch.nn.Module:
    return network_from_checkpoint(ckpt)


def export_onnx(checkpoint_path: str | os.PathLike | Checkpoint, out_path: str | os.PathLike, *, atol: float = 1e-4) -> dict[str, Any]:
    """Export a checkpoint's network to ONNX and check it against torch.

    The export itself is the app's (:func:`seg_app.core.onnx_backend.export_onnx`: opset
    :data:`ONNX_OPSET`, dynamic batch, ``image`` ``(B, C, *roi)`` -> ``logits`` ``(B, L, *roi)``), signed
    with the checkpoint's SHA-256, so the app uses the file when it lies beside the checkpoint.
    Agreement is checked with ONNX Runtime on a random batch of 2 windows.

    Returns:
        ``{"path": str, "max_abs_diff": float, "opset": int, "input_shape": [...]}``.

    Raises:
        ExportError: the export failed or the ONNX output differs from torch by more than ``atol``.
    """
    ckpt = checkpoint_path if isinstance(checkpoint_path, Checkpoint) else load_checkpoint(checkpoint_path)
    spec = ckpt.spec
    net = _network(ckpt)
    out = Path(out_path)
    try:
        onnx_backend.export_onnx(net, spec, out, sha256=onnx_backend.checkpoint_sha256(ckpt))
    except Exception as exc:  # noqa: BLE001 - torch.onnx raises many types
        raise ExportError(f"Could not export {spec.name} to ONNX ({exc}).") from exc
    shape = (2, spec.in_channels, *spec.inference.roi_size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x).numpy()
    got = onnx_backend.OnnxPredictor(out, threads=torch.get_num_threads())(x).numpy()
    diff = float(np.max(np.abs(got - ref)))
    if not diff <= atol:
        raise ExportError(f"The ONNX model differs from torch by {diff:.2e} (> {atol:g}); {out} is not reliable.")
    return {"path": str(out), "max_abs_diff": diff, "opset": ONNX_OPSET, "input_shape": ["batch", *shape[1:]]}

