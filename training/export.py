"""``seg-train export``: ONNX (checked against torch with ONNX Runtime) and MONAI bundle folders."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_app.core import onnx_backend
from seg_app.core.errors import ExportError
from seg_app.core.io import atomic_write
from seg_app.core.spec import Checkpoint, ModelSpec, load_checkpoint, model_card, network_from_checkpoint

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


def bundle_metadata(spec: ModelSpec) -> dict[str, Any]:
    """MONAI bundle ``metadata.json`` for a spec (network_data_format with channel definitions)."""
    v = spec.versions
    roi = list(spec.inference.roi_size)
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": spec.version,
        "changelog": {spec.version: "exported by seg-train export"},
        "monai_version": v.get("monai", ""),
        "pytorch_version": v.get("torch", ""),
        "numpy_version": v.get("numpy", ""),
        "required_packages_version": {},
        "name": spec.name,
        "task": "Tumour segmentation",
        "description": spec.description or spec.name,
        "authors": "seg-workstation seg-train",
        "copyright": "see docs/README.md",
        "data_source": json.dumps(spec.dataset, sort_keys=True),
        "data_type": "nifti",
        "image_classes": ", ".join(f"{c.name} ({c.modality})" for c in spec.channels),
        "label_classes": ", ".join(f"{lab.value}={lab.name}" for lab in spec.labels),
        "pred_classes": ", ".join(f"{lab.value}={lab.name}" for lab in spec.labels),
        "eval_metrics": {k: v for k, v in spec.metrics.items() if isinstance(v, (int, float))},
        "intended_use": "Research demonstration only; not for clinical use.",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image", "format": "magnitude", "modality": spec.channels[0].modality,
                    "num_channels": spec.in_channels, "spatial_shape": roi, "dtype": "float32",
                    "value_range": [], "is_patch_data": True,
                    "channel_def": {str(i): c.name for i, c in enumerate(spec.channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image", "format": "segmentation", "num_channels": spec.out_channels,
                    "spatial_shape": roi, "dtype": "float32", "value_range": [], "is_patch_data": True,
                    "channel_def": {str(lab.value): lab.name for lab in spec.labels},
                }
            },
        },
    }


def bundle_inference_config(spec: ModelSpec) -> dict[str, Any]:
    """A minimal MONAI bundle ``inference.json`` reproducing the spec's preprocessing and sliding window."""
    kwargs = dict(spec.network.kwargs)
    kwargs.setdefault("spatial_dims", 3)
    norm = spec.normalization
    if norm.scheme == "ct_window":
        assert norm.window is not None
        intensity = {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": norm.window[0], "a_max": norm.window[1],
                     "b_min": 0.0, "b_max": 1.0, "clip": True}
    elif norm.scheme == "percentile":
        lo, hi = norm.window or (0.5, 99.5)
        intensity = {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": lo, "upper": hi,
                     "b_min": 0.0, "b_max": 1.0, "clip": True, "channel_wise": True}
    else:
        intensity = {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True}
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": f"monai.networks.nets.{spec.network.name}", **kwargs},
        "network": "$@network_def.to(@device)",
        "datalist": [],
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": spec.orientation},
                {"_target_": "Spacingd", "keys": "image", "pixdim": list(spec.target_spacing), "mode": "bilinear"},
                intensity,
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(spec.inference.roi_size),
                    "sw_batch_size": spec.inference.sw_batch_size, "overlap": spec.inference.overlap,
                    "mode": spec.inference.blend_mode},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            ],
        },
        "checkpoint": "$@bundle_root + '/models/model.pt'",
    }


def export_bundle(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a MONAI bundle folder: configs/metadata.json, configs/inference.json, models/model.pt
    (plain state dict, as MONAI's ``CheckpointLoader`` expects), models/seg_app_checkpoint.pt (the
    self-describing original) and docs/README.md (model card)."""
    src = Path(checkpoint_path)
    ckpt = load_checkpoint(src)
    spec = ckpt.spec
    root = Path(out_dir)
    for sub in ("configs", "models", "docs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with atomic_write(root / "configs" / "metadata.json") as tmp:
        tmp.write_text(json.dumps(bundle_metadata(spec), indent=1))
    with atomic_write(root / "configs" / "inference.json") as tmp:
        tmp.write_text(json.dumps(bundle_inference_config(spec), indent=1))
    with atomic_write(root / "models" / "model.pt") as tmp:
        torch.save({k: v.clone() for k, v in ckpt.state_dict.items()}, tmp)
    with atomic_write(root / "models" / "seg_app_checkpoint.pt") as tmp:
        shutil.copyfile(src, tmp)
    readme = (
        f"# {spec.name}\n\nMONAI bundle exported by `seg-train export`.\n\n```\n{model_card(spec)}\n```\n\n"
        "`models/model.pt` is a plain state dict for `network_def`; `models/seg_app_checkpoint.pt` is the "
        "self-describing checkpoint the seg_app desktop app loads.\n\nResearch use only; not for clinical use.\n"
    )
    with atomic_write(root / "docs" / "README.md") as tmp:
        tmp.write_text(readme)
    return root
