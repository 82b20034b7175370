"""Sliding-window prediction on the model grid (Qt-free): MONAI window blending, progress and cancel.

The one place that runs a network window by window over a preprocessed image: the app's
:class:`seg_app.core.inference.Segmenter` and training's validation both come through here, so they
use the same windows, overlap and Gaussian blending.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from seg_app.core.errors import Cancelled
from seg_app.core.spec import ModelSpec

__all__ = [
    "CancelCheck",
    "Predictor",
    "ProgressCallback",
    "blend_windows",
    "count_windows",
    "is_cancelled",
    "raise_if_cancelled",
    "sliding_window_probabilities",
    "softmax_",
    "window_starts",
]

#: Called with (windows done, windows total).
ProgressCallback = Callable[[int, int], None]
#: An Event, or a callable returning True once the job should stop, or None (never cancelled).
CancelCheck = threading.Event | Callable[[], bool] | None
#: A window batch ``(B, C, *roi)`` -> logits ``(B, L, *roi)``.
Predictor = Callable[[torch.Tensor], torch.Tensor]


def is_cancelled(cancel: CancelCheck) -> bool:
    """True when ``cancel`` (an Event or a callable) asks the job to stop."""
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def raise_if_cancelled(cancel: CancelCheck) -> None:
    """Raise :class:`~seg_app.core.errors.Cancelled` when ``cancel`` is set."""
    if is_cancelled(cancel):
        raise Cancelled("Segmentation was cancelled.")


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of MONAI's sliding windows along one axis (same rule as ``dense_patch_slices``)."""
    if size <= roi:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    n = int(math.ceil(float(size - roi) / interval)) + 1
    return sorted({min(i * interval, size - roi) for i in range(n)})


def count_windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits (same scan-interval rule)."""
    n = 1
    for s, r in zip(shape, roi):
        size = max(s, r)  # MONAI pads the image up to the ROI first
        if r >= size:
            continue
        interval = max(int(r * (1 - overlap)), 1)
        n *= int(math.ceil(float(size - r) / interval)) + 1
    return n


class _CountingPredictor:
    """Wraps a predictor: honours ``cancel`` before each window batch, reports progress after it."""

    def __init__(self, network: Predictor, total: int, progress: ProgressCallback | None, cancel: CancelCheck) -> None:
        self.network, self.total, self.progress, self.cancel = network, total, progress, cancel
        self.done = 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        raise_if_cancelled(self.cancel)
        out = self.network(batch)
        self.done = min(self.total, self.done + batch.shape[0])
        if self.progress is not None:
            self.progress(self.done, self.total)
        return out


def blend_windows(
    network: Predictor,
    image: torch.Tensor,
    spec: ModelSpec,
    *,
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    sw_batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck = None,
) -> torch.Tensor:
    """Gaussian-blended network outputs ``(1, L, I, J, K)`` of a batched image (MONAI sliding window).

    Same arguments as :func:`sliding_window_probabilities`; the outputs are whatever ``network``
    returns per window (logits), float32, blended linearly.
    """
    inf = spec.inference
    total = count_windows(tuple(image.shape[2:]), inf.roi_size, inf.overlap)
    predictor = _CountingPredictor(network, total, progress, cancel)
    with torch.inference_mode():
        raise_if_cancelled(cancel)
        out = sliding_window_inference(
            image,
            roi_size=inf.roi_size,
            sw_batch_size=sw_batch_size or inf.sw_batch_size,
            predictor=predictor,
            overlap=inf.overlap,
            mode=inf.blend_mode,
            padding_mode="constant",
            sw_device=sw_device,
            device=device,
        )
        if isinstance(out, MetaTensor):
            out = out.as_tensor()
        return out if out.dtype == torch.float32 else out.float()


def softmax_(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax computed in place (no second full-size buffer)."""
    logits.sub_(logits.amax(dim=dim, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim=dim, keepdim=True))


def sliding_window_probabilities(
    network: Predictor,
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
        sw_batch_size: windows per network call (default: the spec's).
        progress: called with (windows done, windows total) after each window batch.
        cancel: an Event or callable; checked before each window batch, raises ``Cancelled``.

    Returns:
        probabilities ``(L, I, J, K)`` (or ``(1, L, ...)`` when a batch was given), float32.
    """
    batched = image.dim() == 5
    x = image if batched else image[None]
    if isinstance(x, MetaTensor):
        x = x.as_tensor()
    logits = blend_windows(
        network, x, spec, sw_device=sw_device, device=device, sw_batch_size=sw_batch_size, progress=progress, cancel=cancel
    )
    with torch.inference_mode():
        probs = softmax_(logits, dim=1)
    return probs if batched else probs[0]
