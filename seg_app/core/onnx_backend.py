"""Optional ONNX Runtime backend for CPU inference (Qt-free).

Where the ONNX model comes from, in order:

1. ``<checkpoint stem>.onnx`` beside the checkpoint (e.g. written by ``seg-train export``): used when
   its metadata property ``checkpoint_sha256`` equals the checkpoint file's SHA-256, or, without that
   property, only after the automatic accuracy check below (a file from other weights fails it);
2. the cache ``$SEG_APP_CACHE/onnx/<sha256>.onnx`` (default ``~/.cache/seg_app``), exported from the
   checkpoint's network on first use (legacy TorchScript exporter, dynamic batch axis).

Before it is used automatically, one ROI-sized window is run through both backends: ONNX Runtime is
chosen only when its softmax output matches torch within :data:`ORT_TOLERANCE` and it is at least
10 % faster. The verdict is cached beside the ONNX file (per thread count), so later runs skip the check.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_app.core.io import atomic_write
from seg_app.core.spec import Checkpoint, ModelSpec

__all__ = [
    "ONNX_OPSET", "ORT_TOLERANCE", "OnnxPredictor", "SPEED_MARGIN", "available", "cache_dir",
    "checkpoint_sha256", "compare_backends", "export_onnx", "predictor_for",
]

#: Largest allowed difference between torch and ONNX Runtime softmax probabilities.
ORT_TOLERANCE = 1e-3
#: ONNX Runtime must take at most this fraction of torch's time to be chosen automatically.
SPEED_MARGIN = 0.9
#: ONNX opset of every exported model (app cache and ``seg-train export``).
ONNX_OPSET = 17


def available() -> bool:
    """True when ``onnxruntime`` can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    """Folder for exported models and backend verdicts (``SEG_APP_CACHE`` overrides)."""
    root = os.environ.get("SEG_APP_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seg_app"
    return base / "onnx"


def checkpoint_sha256(checkpoint: Checkpoint) -> str:
    """SHA-256 of the checkpoint file, or of its spec and weights when it has no file."""
    h = hashlib.sha256()
    if checkpoint.path and Path(checkpoint.path).is_file():
        with open(checkpoint.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    h.update(checkpoint.spec.to_json().encode())
    for name in sorted(checkpoint.state_dict):
        h.update(name.encode())
        h.update(checkpoint.state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_onnx(network: torch.nn.Module, spec: ModelSpec, path: str | os.PathLike, sha256: str = "") -> Path:
    """Export ``network`` (moved to the CPU, eval) to ONNX, atomically: the one ONNX export of the project.

    The graph maps ``image`` ``(B, C, *roi)`` to ``logits`` ``(B, L, *roi)``: dynamic batch axis, the
    spatial size fixed to the spec's ROI (what sliding-window inference feeds it), opset
    :data:`ONNX_OPSET`, legacy TorchScript exporter. When the ``onnx`` package is installed the file
    records ``checkpoint_sha256`` (when given) and ``seg_app_spec`` metadata properties.

    Args:
        network: the checkpoint's network (its weights are exported as they are).
        spec: the checkpoint's spec (channels, ROI size).
        path: output ``.onnx`` file; its folder is created when missing.
        sha256: :func:`checkpoint_sha256` of the checkpoint the weights come from, or "" (unsigned).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = network.to("cpu").eval()
    example = torch.zeros((1, spec.in_channels, *spec.inference.roi_size), dtype=torch.float32)
    with atomic_write(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about instance norm / shape checks
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        _add_metadata(tmp, {"checkpoint_sha256": sha256, "seg_app_spec": spec.to_json()})
    return path


def _add_metadata(path: Path, props: dict[str, str]) -> None:
    """Record metadata properties when the ``onnx`` package is installed (optional)."""
    try:
        import onnx
    except ImportError:
        return
    model = onnx.load(str(path))
    for k, v in props.items():
        if not v:
            continue
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))


class OnnxPredictor:
    """Window predictor running an ONNX model with ONNX Runtime on the CPU: ``(B, C, *roi) -> logits``."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, spinning: bool = True) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        if not spinning:  # idle intra-op threads sleep instead of spinning, leaving the cores to other threads
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if os.environ.get("SEG_APP_ORT_ARENA", "0") != "1":
            opts.enable_cpu_mem_arena = False  # peak memory: activations are freed, not pooled
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        out = self.session.run([self.output_name], {self.input_name: arr})[0]
        return torch.from_numpy(out)


def _beside_checkpoint(checkpoint: Checkpoint, sha256: str, allow_unsigned: bool) -> Path | None:
    if not checkpoint.path:
        return None
    cand = Path(checkpoint.path).with_suffix(".onnx")
    if not cand.is_file():
        return None
    try:
        meta = OnnxPredictor(cand).metadata
    except Exception:  # noqa: BLE001 - an unreadable file is simply not used
        return None
    signed = meta.get("checkpoint_sha256")
    return cand if signed == sha256 or (signed is None and allow_unsigned) else None


def compare_backends(network: torch.nn.Module, predictor: OnnxPredictor, spec: ModelSpec, repeats: int = 2) -> dict[str, Any]:
    """Run one ROI-sized window through torch and ONNX Runtime: max probability difference (softmax, or
    sigmoid for region models) and seconds."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, spec.in_channels, *spec.inference.roi_size), generator=gen)
    net = network.to("cpu").eval()
    with torch.inference_mode():
        ref = net(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(x)
        t_torch = (time.perf_counter() - t0) / repeats
        out = predictor(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            predictor(x)
        t_ort = (time.perf_counter() - t0) / repeats
        act = torch.sigmoid if spec.inference.activation != "softmax" else (lambda t: torch.softmax(t, 1))
        diff = float((act(ref.float()) - act(out.float())).abs().max())  # probabilities as the Segmenter makes them
    return {"max_abs_prob_diff": diff, "torch_s": t_torch, "ort_s": t_ort, "match": diff <= ORT_TOLERANCE}


def predictor_for(
    network: torch.nn.Module, spec: ModelSpec, checkpoint: Checkpoint, threads: int = 1, check: bool = True,
    spinning: bool = True,
) -> OnnxPredictor | None:
    """An ONNX Runtime predictor for this checkpoint, or None when unavailable/slower/mismatching.

    With ``check=False`` (backend forced) it is returned without the speed and accuracy check.
    ``spinning=False``: ONNX Runtime's idle intra-op threads sleep instead of spinning (for pipelines
    whose other threads need the cores while the network runs).
    """
    if not available():
        return None
    sha = checkpoint_sha256(checkpoint)
    path = _beside_checkpoint(checkpoint, sha, allow_unsigned=check)
    key = sha
    if path is not None:
        st = path.stat()
        key = f"{sha}-beside-{st.st_size}-{st.st_mtime_ns}"
    else:
        path = cache_dir() / f"{sha}.onnx"
        if not path.is_file():
            export_onnx(network, spec, path, sha)
    pred = OnnxPredictor(path, threads, spinning=spinning)
    if not check:
        return pred
    verdict_path = cache_dir() / f"{key}.threads{threads}.json"
    verdict: dict[str, Any] | None = None
    if verdict_path.is_file():
        try:
            verdict = json.loads(verdict_path.read_text())
        except (OSError, ValueError):
            verdict = None
    if verdict is None:
        verdict = compare_backends(network, pred, spec)
        verdict_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(verdict_path) as tmp:
            tmp.write_text(json.dumps(verdict))
    if not verdict.get("match") or verdict.get("ort_s", 1e9) > SPEED_MARGIN * verdict.get("torch_s", 0.0):
        return None
    return pred
