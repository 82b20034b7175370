"""Segmentation of a scan (Qt-free). Used by the app, ``seg-app predict`` and training's validation.

:meth:`Segmenter.segment` runs these stages, each its own method (see ``docs/MEASUREMENTS.md`` for
what the outputs mean):

1. :meth:`~Segmenter.check_input`: channel count, NaN/inf (typed errors), domain warnings;
2. :meth:`~Segmenter.preprocess`: the spec's preprocessing onto the model grid, cropped to the
   sliding windows that touch non-background voxels (:func:`seg_app.core.grid.to_model_grid`);
3. :meth:`~Segmenter.predict_on_model_grid`: MONAI sliding window with the spec's ROI, overlap and
   Gaussian blending (:mod:`seg_app.core.sliding_window`), optionally repeated on flipped copies
   (TTA), retried with smaller batches / on the CPU when out of memory (:mod:`seg_app.core.runtime`);
4. :meth:`~Segmenter.back_to_source`: probabilities mapped back onto the **source grid**
   (:func:`seg_app.core.grid.to_source_grid`), then argmax;
5. :meth:`~Segmenter.postprocess`: the spec's postprocessing (:mod:`seg_app.core.postprocess`).

:meth:`~Segmenter.prepare` (1-2), :meth:`~Segmenter.predict_prepared` (3) and :meth:`~Segmenter.finish`
(4-5) are the same stages in three calls, so a pipeline can run them on different threads for
consecutive scans (``seg-app predict`` over a cohort, :mod:`seg_app.core.cohort`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_app.core.errors import CheckpointError
from seg_app.core.grid import (
    ModelGridImage,
    to_model_grid,
    to_source_grid,
)
from seg_app.core.ood import domain_warnings
from seg_app.core.postprocess import postprocess_labels
from seg_app.core.runtime import (
    configure_torch_threads,
    device_predictor,
    run_with_oom_fallback,
    select_device,
    stitch_device,
)
from seg_app.core.sliding_window import (
    CancelCheck,
    Predictor,
    ProgressCallback,
    blend_windows,
    count_windows,
    raise_if_cancelled,
    softmax_,
)
from seg_app.core.model_sources import load_model_checkpoint
from seg_app.core.regions import nested_region_labels
from seg_app.core.spec import Checkpoint, ModelSpec, default_model_path, network_from_checkpoint
from seg_app.core.volume import Volume

__all__ = ["ModelGridPrediction", "PreparedScan", "SegmentationResult", "Segmenter", "SourceGridPrediction"]

log = logging.getLogger(__name__)

# ---- results ---------------------------------------------------------------------------------
@dataclass
class SegmentationResult:
    """Output of :meth:`Segmenter.segment`, every map on the source scan's grid."""

    labels: Volume  # uint8 label map (same shape and affine as the input)
    probabilities: Volume | None  # (1, I, J, K) float32 foreground probability, 1 - p(background)
    spec: ModelSpec
    device: str  # what actually ran: "cpu", "cuda", "mps", "onnxruntime-cpu"
    seconds: float
    warnings: tuple[str, ...]
    agreement: Volume | None = None  # TTA: fraction of augmented predictions agreeing with the label


@dataclass
class PreparedScan:
    """Output of :meth:`Segmenter.prepare`: a scan checked and preprocessed onto the model grid.

    Attributes:
        volume: the source scan.
        grid: the model-grid image; None once :meth:`Segmenter.predict_prepared` has taken it.
        warnings: domain and padding warnings so far (the prediction appends out-of-memory retries).
        seconds: time spent on this scan by the stages so far.
    """

    volume: Volume
    grid: ModelGridImage | None
    warnings: list[str]
    seconds: float


@dataclass
class ModelGridPrediction:
    """Output of :meth:`Segmenter.predict_on_model_grid` (CPU tensors on the cropped model grid).

    Attributes:
        probabilities: ``(1, i, j, k)`` foreground probability for two-label models, the sigmoid
            ``(R, i, j, k)`` of each region for ``sigmoid_nested_regions`` models, otherwise the
            softmax ``(L, i, j, k)``; float32, averaged over the TTA flips.
        affine: voxel->RAS affine of that grid (the crop's).
        agreement: ``(i, j, k)`` fraction of TTA predictions agreeing with the final label, or None.
        device: what actually ran: "cpu", "cuda", "mps", "onnxruntime-cpu".
    """

    probabilities: torch.Tensor
    affine: np.ndarray
    agreement: torch.Tensor | None
    device: str


@dataclass
class SourceGridPrediction:
    """Output of :meth:`Segmenter.back_to_source`: numpy arrays on the source scan's grid.

    Attributes:
        labels: ``(I, J, K)`` uint8 label values (the spec's, not channel indices).
        foreground: ``(1, I, J, K)`` float32 foreground probability in [0, 1].
        agreement: ``(1, I, J, K)`` float32 TTA agreement, or None without TTA.
    """

    labels: np.ndarray
    foreground: np.ndarray
    agreement: np.ndarray | None


# ---- window predictors -----------------------------------------------------------------------
def _logit_difference(base: Predictor) -> Predictor:
    """Two-label models: predict ``l1 - l0``. Blending is linear, so the softmax foreground
    probability is the sigmoid of the blended difference (half the stitching memory)."""

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        out = base(batch)
        return out[:, 1:2] - out[:, 0:1]

    return predictor


def _offset_progress(progress: ProgressCallback | None, offset: int, total: int) -> ProgressCallback | None:
    """Progress of one TTA pass reported as part of all passes (``offset`` windows already done)."""
    if progress is None:
        return None
    return lambda done, _pass_total: progress(offset + done, total)


# ---- the segmenter ---------------------------------------------------------------------------
class Segmenter:
    """Segments ``Volume``s with one model; reusable across scans and threads (one call at a time).

    Args:
        model: checkpoint path or MONAI bundle folder (:func:`~seg_app.core.model_sources.load_model_checkpoint`),
            a loaded ``Checkpoint``, or None for the bundled default model.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        tta: test-time augmentation (identity + flips along each axis, probabilities averaged).
        backend: ``auto`` (ONNX Runtime on the CPU when available, matching and faster), ``torch`` or
            ``onnxruntime``.
        crop_foreground: skip windows outside the non-background box (see :func:`foreground_box`).
        sw_batch_size: windows per network call (default: the spec's; 2-4 windows per call are ~15 % faster than 1 with ONNX Runtime on the CPU).
        cpu_spinning: ONNX Runtime's idle threads spin between operators (lowest latency when nothing else
            runs); False when other threads need the cores meanwhile (``seg-app predict``'s pipeline).
        trust_model: allow a MONAI bundle's TorchScript ``models/model.ts`` (``--trust-model``).
    """

    def __init__(
        self,
        model: str | os.PathLike | Checkpoint | None = None,
        device: str = "auto",
        tta: bool = False,
        backend: str = "auto",
        *,
        crop_foreground: bool = True,
        sw_batch_size: int | None = None,
        cpu_spinning: bool = True,
        trust_model: bool = False,
    ) -> None:
        if backend not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"Unknown backend '{backend}' (auto, torch or onnxruntime).")
        if model is None:
            model = default_model_path()
            if not Path(model).is_file():
                raise CheckpointError(f"The bundled model '{Path(model).name}' is missing; pass a checkpoint with --model.")
        ckpt = model if isinstance(model, Checkpoint) else load_model_checkpoint(model, trust_model=trust_model)
        self.checkpoint = ckpt
        self.spec: ModelSpec = ckpt.spec
        self.device = select_device(device)
        self.tta = bool(tta)
        self.backend = backend
        self.crop_foreground = crop_foreground
        self.cpu_spinning = bool(cpu_spinning)
        # CPU: one window per call is as fast per window and needs half the activation memory
        self.sw_batch_size = int(sw_batch_size or self.spec.inference.sw_batch_size)
        self.threads = configure_torch_threads()
        self.network: torch.nn.Module = network_from_checkpoint(ckpt)
        self._onnx: Any = None  # OnnxPredictor once chosen; False when ruled out
        self._lock = threading.RLock()  # segment() holds it around predict_prepared()

    @property
    def _binary(self) -> bool:
        """Two labels: one foreground-probability channel is enough."""
        return self.spec.out_channels == 2 and not self._regions

    @property
    def _regions(self) -> bool:
        """Sigmoid outputs of the nested regions TC/WT/ET (MONAI Model Zoo BraTS bundle)."""
        return self.spec.inference.activation == "sigmoid_nested_regions"

    @property
    def _flips(self) -> list[tuple[int, ...]]:
        """Spatial flips of the TTA passes (channel-first axes); just the identity without TTA."""
        return [()] + ([(1,), (2,), (3,)] if self.tta else [])

    # -- main entry --
    def segment(
        self,
        volume: Volume,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck = None,
        return_probabilities: bool = True,
    ) -> SegmentationResult:
        """Segment ``volume``; every returned map lies on its grid (same shape and affine).

        The same as :meth:`prepare` -> :meth:`predict_prepared` -> :meth:`finish`, which a pipeline
        (``seg-app predict`` over a cohort) runs on different threads for consecutive scans.

        Raises:
            IncompatibleInputError: wrong channel count, NaN/inf values, empty dimension.
            Cancelled: ``cancel`` was set (checked between window batches); nothing is kept.
        """
        with self._lock:
            raise_if_cancelled(cancel)
            prepared = self.prepare(volume)
            # passed on directly, so each stage's input is freed as soon as the next one has its output
            return self.finish(prepared, self.predict_prepared(prepared, progress=progress, cancel=cancel),
                               return_probabilities=return_probabilities)

    def prepare(self, volume: Volume) -> PreparedScan:
        """:meth:`check_input` and :meth:`preprocess` (thread-safe: the network is not touched)."""
        t0 = time.perf_counter()
        warnings = self.check_input(volume)
        grid = self.preprocess(volume)
        warnings.extend(self._padding_warnings(grid.full_shape))
        return PreparedScan(volume, grid, warnings, time.perf_counter() - t0)

    def predict_prepared(
        self, prepared: PreparedScan, *, progress: ProgressCallback | None = None, cancel: CancelCheck = None
    ) -> ModelGridPrediction:
        """:meth:`predict_on_model_grid` on a prepared scan (one call at a time per segmenter); the
        model-grid image is released from ``prepared`` (it is not needed again)."""
        with self._lock:
            t0 = time.perf_counter()
            grid, prepared.grid = prepared.grid, None
            if grid is None:
                raise ValueError("This prepared scan was already predicted.")
            pred = self.predict_on_model_grid(grid, progress=progress, cancel=cancel, warnings=prepared.warnings)
            prepared.seconds += time.perf_counter() - t0
            return pred

    def finish(
        self, prepared: PreparedScan, pred: ModelGridPrediction, *, return_probabilities: bool = True
    ) -> SegmentationResult:
        """:meth:`back_to_source` and :meth:`postprocess` (thread-safe: the network is not touched);
        ``seconds`` of the result is the time of all three stages."""
        t0 = time.perf_counter()
        volume, warnings = prepared.volume, prepared.warnings
        device_name = pred.device
        src = self.back_to_source(pred, volume)
        del pred  # the model-grid probabilities are no longer needed (when the caller holds none)
        labels = self.postprocess(src.labels, volume, src.foreground[0])
        return SegmentationResult(
            labels=volume.with_array(labels[None], channel_names=(), warnings=tuple(warnings), modality=volume.modality),
            probabilities=(
                volume.with_array(src.foreground, channel_names=("foreground probability",), warnings=())
                if return_probabilities else None
            ),
            spec=self.spec,
            device=device_name,
            seconds=prepared.seconds + time.perf_counter() - t0,
            warnings=tuple(warnings),
            agreement=(
                volume.with_array(src.agreement, channel_names=("TTA agreement",), warnings=())
                if src.agreement is not None else None
            ),
        )

    # -- stages --
    def check_input(self, volume: Volume) -> list[str]:
        """Raise clear typed errors first (channels, NaN/inf); return the domain warnings
        (CT for an MR model, 2D, not the body part)."""
        from seg_app.core.preprocess import check_compatible

        check_compatible(volume, self.spec)
        return list(domain_warnings(volume, self.spec))

    def preprocess(self, volume: Volume) -> ModelGridImage:
        """The spec's preprocessing onto the model grid (cropped when ``crop_foreground``)."""
        return to_model_grid(volume, self.spec, self.crop_foreground)

    def predict_on_model_grid(
        self,
        grid: ModelGridImage,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck = None,
        warnings: list[str] | None = None,
    ) -> ModelGridPrediction:
        """Sliding-window probabilities (averaged over the TTA flips) on the model grid.

        Out of memory: retried with smaller window batches, then on the CPU; each retry is appended
        to ``warnings``.
        """
        warnings = [] if warnings is None else warnings
        onnx_pred = self._onnx_predictor() if self.device.type == "cpu" else None
        run = functools.partial(self._predict_passes, grid.image, onnx_pred=onnx_pred, progress=progress, cancel=cancel)
        try:
            (probs, agree), used = run_with_oom_fallback(run, self.device, self.sw_batch_size, warnings)
        finally:
            if self.device.type != "cpu":
                self.network.to(self.device)  # back from a CPU fallback
        device_name = "onnxruntime-cpu" if onnx_pred is not None and used.type == "cpu" else used.type
        return ModelGridPrediction(probs, grid.affine, agree, device_name)

    def back_to_source(self, pred: ModelGridPrediction, volume: Volume) -> SourceGridPrediction:
        """Map a model-grid prediction onto ``volume``'s grid: labels (argmax), foreground
        probability and TTA agreement. Voxels outside the predicted box are background."""
        values = np.array([lab.value for lab in self.spec.labels], dtype=np.uint8)
        if self._regions:
            # thresholded after mapping back, as the bundle's Invertd -> AsDiscreted; foreground = the
            # largest region probability, so it is above 0.5 exactly where the label is not background
            full = to_source_grid(pred.probabilities, pred.affine, volume, fill=[0.0] * self.spec.out_channels)
            labels = nested_region_labels(full, self.spec.inference.region_channels)
            fg = full.max(axis=0, keepdims=True)
            del full
        elif self._binary:
            fg = to_source_grid(pred.probabilities, pred.affine, volume, fill=[0.0])
            labels = np.where(fg[0] > 0.5, values[1], values[0]).astype(np.uint8)
        else:
            n_lab = self.spec.out_channels
            full = to_source_grid(pred.probabilities, pred.affine, volume, fill=[1.0] + [0.0] * (n_lab - 1))
            labels = values[np.argmax(full, axis=0)]
            fg = 1.0 - full[0:1]
            del full
        np.clip(fg, 0.0, 1.0, out=fg)
        agree = None
        if pred.agreement is not None:
            agree = to_source_grid(pred.agreement[None], pred.affine, volume, fill=[1.0])
        return SourceGridPrediction(labels, fg, agree)

    def postprocess(self, labels: np.ndarray, volume: Volume, foreground: np.ndarray | None = None) -> np.ndarray:
        """The spec's postprocessing (small or unconfident lesions, keep largest) of a source-grid label
        map, in place; ``foreground``: the foreground probability ``(I, J, K)`` (lesion confidence)."""
        labels, removed = postprocess_labels(labels, self.spec, volume.voxel_volume_ml, foreground)
        if removed:
            log.info("postprocessing removed %d lesion(s)", removed)
        return labels

    # -- helpers of the stages --
    def _padding_warnings(self, full_shape: tuple[int, ...]) -> list[str]:
        roi = self.spec.inference.roi_size
        if all(s >= r for s, r in zip(full_shape, roi)):
            return []
        return [
            f"The scan ({'x'.join(map(str, full_shape))} voxels at the model's spacing) is smaller than the "
            f"model's window ({'x'.join(map(str, roi))}); it was padded."
        ]

    @torch.inference_mode()
    def _predict_passes(
        self,
        x: torch.Tensor,
        device: torch.device,
        sw_batch_size: int,
        *,
        onnx_pred: Predictor | None,
        progress: ProgressCallback | None,
        cancel: CancelCheck,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All TTA passes on ``device``: (mean probabilities, agreement or None), on the CPU."""
        predictor = self._window_predictor(device, onnx_pred)
        stitch = stitch_device(device, x[0].numel(), 1 if self._binary else self.spec.out_channels)
        flips = self._flips
        per_pass = count_windows(tuple(x.shape[1:]), self.spec.inference.roi_size, self.spec.inference.overlap)
        acc: torch.Tensor | None = None
        votes: list[torch.Tensor] = []
        for n, axes in enumerate(flips):
            pass_progress = _offset_progress(progress, n * per_pass, per_pass * len(flips))
            p = self._predict_flipped(predictor, x, axes, device, stitch, sw_batch_size, pass_progress, cancel)
            if self.tta:
                votes.append(self._hard_labels(p))
            acc = p if acc is None else acc.add_(p)
        assert acc is not None
        if len(flips) > 1:
            acc /= len(flips)
        agree = None
        if self.tta:
            final = self._hard_labels(acc)
            agree = torch.stack([v == final for v in votes]).float().mean(dim=0)
        return acc, agree

    def _predict_flipped(
        self,
        predictor: Predictor,
        x: torch.Tensor,
        axes: tuple[int, ...],
        device: torch.device,
        stitch: torch.device,
        sw_batch_size: int,
        progress: ProgressCallback | None,
        cancel: CancelCheck,
    ) -> torch.Tensor:
        """Probabilities of one pass on ``x`` flipped along ``axes`` (flipped back), on the CPU."""
        xi = torch.flip(x, axes) if axes else x
        out = blend_windows(  # the module global, so tests can patch it here
            predictor, xi[None], self.spec, sw_device=device, device=stitch, sw_batch_size=sw_batch_size,
            progress=progress, cancel=cancel,
        )[0].to("cpu")
        p = out.sigmoid_() if self._binary or self._regions else softmax_(out, dim=0)  # (1, L or R, ...) probabilities
        return torch.flip(p, axes) if axes else p

    def _hard_labels(self, p: torch.Tensor) -> torch.Tensor:
        """Channel indices (uint8; region models: label values) of probabilities as :meth:`_predict_flipped` returns them."""
        if self._regions:
            return torch.from_numpy(nested_region_labels(p.numpy(), self.spec.inference.region_channels))
        return (p[0] > 0.5).to(torch.uint8) if self._binary else torch.argmax(p, dim=0).to(torch.uint8)

    # -- backends --
    def _window_predictor(self, device: torch.device, onnx_pred: Predictor | None) -> Predictor:
        """ONNX Runtime on the CPU when chosen, else torch on ``device``; two-label models predict
        the logit difference (see :func:`_logit_difference`)."""
        base = onnx_pred if onnx_pred is not None and device.type == "cpu" else device_predictor(self.network, device)
        return _logit_difference(base) if self._binary else base

    def _onnx_predictor(self) -> Any:
        """The ONNX Runtime predictor when the backend setting and a speed/accuracy check allow it."""
        if self.backend == "torch" or self._onnx is False:
            return None
        if self._onnx is not None:
            return self._onnx
        from seg_app.core import onnx_backend

        forced = self.backend == "onnxruntime"
        try:
            pred = onnx_backend.predictor_for(self.network, self.spec, self.checkpoint, threads=self.threads, check=not forced,
                                              spinning=self.cpu_spinning)
        except Exception as exc:  # noqa: BLE001 - any ORT/export failure falls back to torch
            if forced:
                raise CheckpointError(f"The ONNX Runtime backend could not be used ({exc}).") from exc
            log.info("ONNX Runtime backend not used: %s", exc)
            pred = None
        self._onnx = pred if pred is not None else False
        return pred
