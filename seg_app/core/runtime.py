"""Where and how torch runs (Qt-free): device choice, CPU thread policy, out-of-memory fallback.

The one device policy of the project, shared by the app's :class:`~seg_app.core.inference.Segmenter`
and by training (``training`` may import it; nothing here knows about either).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch

from seg_app.core.errors import IncompatibleInputError

__all__ = [
    "configure_torch_threads",
    "cpu_threads",
    "device_predictor",
    "is_out_of_memory",
    "run_with_oom_fallback",
    "select_device",
    "stitch_device",
]

T = TypeVar("T")


# ---- devices ---------------------------------------------------------------------------------
def select_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` = CUDA, then Apple MPS, then CPU; explicit names are checked for availability."""
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise IncompatibleInputError("CUDA was requested but no CUDA GPU is available; use --device cpu or auto.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise IncompatibleInputError("Apple MPS was requested but is not available; use --device cpu or auto.")
    return dev


def device_predictor(network: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """``network`` moved to ``device`` as a window predictor; on CUDA it runs under autocast (bf16/fp16)
    and returns float32 logits. Autocast is never used on the CPU or MPS."""
    net = network.to(device)
    if device.type != "cuda":
        return lambda batch: net(batch.to(device))
    amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def run_cuda(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=amp):
            return net(batch.to(device, non_blocking=True)).float()

    return run_cuda


def stitch_device(device: torch.device, voxels: int, n_channels: int) -> torch.device:
    """Where to stitch sliding-window outputs of ``voxels`` voxels and ``n_channels`` channels:
    on the GPU only when they comfortably fit its free memory, else on the CPU."""
    if device.type != "cuda":
        return torch.device("cpu") if device.type == "cpu" else device
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return torch.device("cpu")
    need = voxels * 4 * (2 * n_channels + 2)  # float32 output + blending weights + count map
    return device if need < 0.4 * free else torch.device("cpu")


# ---- CPU threads -----------------------------------------------------------------------------
def cpu_threads() -> int:
    """CPU cores this process may use (affinity-aware; ``OMP_NUM_THREADS`` wins when set)."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return max(1, os.cpu_count() or 1)


def configure_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    Args:
        n: threads to use; None = every core this process may use (:func:`cpu_threads`; torch's own
            default can exceed a container's CPU quota). Values below 1 become 1.

    Returns:
        the thread count now in effect.
    """
    n = cpu_threads() if n is None else max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n



# ---- out of memory ---------------------------------------------------------------------------
def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures raised by torch."""
    oom_cls = getattr(torch.cuda, "OutOfMemoryError", None) or getattr(torch, "OutOfMemoryError", None)
    if oom_cls is not None and isinstance(exc, oom_cls):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def run_with_oom_fallback(
    run: Callable[[torch.device, int], T],
    device: torch.device,
    sw_batch_size: int,
    warnings: list[str],
) -> tuple[T, torch.device]:
    """Call ``run(device, sw_batch_size)``; on out-of-memory halve the window batch, then use the CPU.

    Every retry is recorded in ``warnings``. Errors other than out-of-memory propagate unchanged.

    Returns:
        ``run``'s result and the device it finally ran on.
    """
    bs = max(1, int(sw_batch_size))
    dev = torch.device(device)
    while True:
        try:
            return run(dev, bs), dev
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is an OOM
            if not is_out_of_memory(exc):
                raise
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            if bs > 1:
                new_bs = bs // 2
                warnings.append(
                    f"Out of memory on {dev.type.upper()} with {bs} windows per batch; retried with {new_bs}."
                )
                bs = new_bs
            elif dev.type != "cpu":
                warnings.append(f"Out of memory on {dev.type.upper()} even with 1 window per batch; ran on the CPU instead.")
                dev = torch.device("cpu")
                bs = max(1, int(sw_batch_size))
            else:
                raise
