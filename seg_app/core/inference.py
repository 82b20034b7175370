"""Sliding-window segmentation (Qt-free). Used by the app, ``seg-app predict`` and training's validation."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from monai.inferers import sliding_window_inference

from seg_app.core.errors import Cancelled
from seg_app.core.spec import ModelSpec

ProgressCallback = Callable[[int, int], None]
CancelCheck = threading.Event | Callable[[], bool] | None


def _is_cancelled(cancel: CancelCheck) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def sliding_window_probabilities(
    network: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    spec: ModelSpec,
    *,
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    sw_batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck = None,
) -> torch.Tensor:
    """Softmax probabilities of a preprocessed image with the spec's sliding-window settings.

    Args:
        network: callable mapping a window batch ``(B, C, *roi)`` to logits ``(B, L, *roi)``.
        image: preprocessed tensor ``(C, I, J, K)`` or ``(1, C, I, J, K)``.
        spec: model spec (ROI size, overlap, blending mode).
        sw_device: where windows are computed (e.g. CUDA); default: the image's device.
        device: where the stitched output lives (e.g. CPU for big volumes); default: the image's device.
        progress: called with (windows done, windows total) after each window batch.
        cancel: an Event or callable; checked before each window batch, raises ``Cancelled``.

    Returns:
        probabilities ``(L, I, J, K)`` (or ``(1, L, ...)`` when a batch was given), float32.
    """
    batched = image.dim() == 5
    x = image if batched else image[None]
    inf = spec.inference
    bs = sw_batch_size or inf.sw_batch_size
    state = {"done": 0}
    total = _count_windows(tuple(x.shape[2:]), inf.roi_size, inf.overlap)

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        if _is_cancelled(cancel):
            raise Cancelled("Segmentation was cancelled.")
        out = network(batch)
        state["done"] = min(total, state["done"] + batch.shape[0])
        if progress is not None:
            progress(state["done"], total)
        return out

    with torch.inference_mode():
        if _is_cancelled(cancel):
            raise Cancelled("Segmentation was cancelled.")
        logits = sliding_window_inference(
            x,
            roi_size=inf.roi_size,
            sw_batch_size=bs,
            predictor=predictor,
            overlap=inf.overlap,
            mode=inf.blend_mode,
            padding_mode="constant",
            sw_device=sw_device,
            device=device,
        )
        probs = torch.softmax(logits.float(), dim=1)
    if isinstance(probs, torch.Tensor) and hasattr(probs, "as_tensor"):
        probs = probs.as_tensor()
    return probs if batched else probs[0]


def _count_windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits (same scan-interval rule)."""
    import math

    n = 1
    for s, r in zip(shape, roi):
        r = min(r, s) if s < r else r
        size = max(s, r)
        interval = int(r * (1 - overlap)) if r < size else r
        interval = max(interval, 1)
        n *= int(math.ceil(float(size - r) / interval)) + 1 if r < size else 1
    return n
