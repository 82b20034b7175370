"""Segmentation of a scan (Qt-free). Used by the app, ``seg-app predict`` and training's validation.

Pipeline of :class:`Segmenter` (see ``docs/MEASUREMENTS.md`` for what the outputs mean):

1. the spec's preprocessing (:func:`seg_app.core.preprocess.preprocess_volume`: RAS, spacing,
   normalisation);
2. crop to the sliding windows that touch non-background voxels (on the uncropped window grid, so the
   result inside the head is identical to an uncropped run) -- windows that would only see air are
   skipped; outside the box the result is background;
3. MONAI ``sliding_window_inference`` with the spec's ROI, overlap and Gaussian blending
   (:func:`sliding_window_probabilities`), optionally repeated on flipped copies (TTA);
4. probabilities mapped back onto the **source grid** (index copy when the grids coincide up to an
   axis permutation/flip, otherwise bilinear resampling of the cropped box only);
5. argmax, then the spec's postprocessing (drop lesions under ``min_lesion_ml``, keep the largest).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from seg_app.core.errors import Cancelled, CheckpointError, IncompatibleInputError
from seg_app.core.ood import domain_warnings
from seg_app.core.spec import Checkpoint, ModelSpec, build_network, default_model_path, load_checkpoint
from seg_app.core.volume import Volume

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
CancelCheck = threading.Event | Callable[[], bool] | None
Predictor = Callable[[torch.Tensor], torch.Tensor]
T = TypeVar("T")

#: Voxels of margin (model grid) added around the non-background bounding box.
CROP_MARGIN = 0


def _is_cancelled(cancel: CancelCheck) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def blend_windows(
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
    """Gaussian-blended network outputs ``(1, L, I, J, K)`` of a batched image (MONAI sliding window).

    Same arguments as :func:`sliding_window_probabilities`; the outputs are whatever ``network``
    returns per window (logits), float32, blended linearly.
    """
    inf = spec.inference
    bs = sw_batch_size or inf.sw_batch_size
    state = {"done": 0}
    total = count_windows(tuple(image.shape[2:]), inf.roi_size, inf.overlap)

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
        out = sliding_window_inference(
            image,
            roi_size=inf.roi_size,
            sw_batch_size=bs,
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


_count_windows = count_windows  # backwards-compatible name


# ---- devices, threads, out-of-memory ---------------------------------------------------------
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


def cpu_threads() -> int:
    """CPU cores this process may use (affinity-aware; ``OMP_NUM_THREADS`` wins when set)."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return max(1, os.cpu_count() or 1)


def configure_cpu_threads() -> int:
    """Use every core we are allowed (torch defaults can exceed a container's CPU quota)."""
    n = cpu_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


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


# ---- geometry helpers ------------------------------------------------------------------------
def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of MONAI's sliding windows along one axis (same rule as ``dense_patch_slices``)."""
    if size <= roi:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    n = int(math.ceil(float(size - roi) / interval)) + 1
    return sorted({min(i * interval, size - roi) for i in range(n)})


#: Windows touching the non-background box only with their outer band (this fraction of the ROI on a
#: side, where the Gaussian blending weight is below exp(-4.5) ~ 1 % of the centre's) are skipped.
WINDOW_EDGE_FRACTION = 0.125


def _aligned_box(
    bounds: Sequence[tuple[int, int] | None], shape: Sequence[int], spec: ModelSpec, margin: int
) -> tuple[slice, slice, slice]:
    """Union of the window-grid windows (of an image of ``shape``) whose inner part meets ``bounds``.

    A window's inner part leaves out :data:`WINDOW_EDGE_FRACTION` of the ROI on each side (not at the
    image border); ``bounds`` are grown by ``margin`` first.
    """
    box = []
    for axis in range(3):
        size, roi = int(shape[axis]), int(spec.inference.roi_size[axis])
        starts = window_starts(size, roi, spec.inference.overlap)
        b = bounds[axis]
        lo, hi = (0, 1) if b is None else (b[0] - margin, b[1] + margin)  # all background: one window
        edge = int(roi * WINDOW_EDGE_FRACTION)
        used = [
            p for p in starts
            if (p if p == 0 else p + edge) < hi and (p + roi if p + roi >= size else p + roi - edge) > lo
        ] or starts[:1]
        box.append(slice(min(used), min(size, max(used) + roi)))
    return tuple(box)  # type: ignore[return-value]


def _bounds(fg: np.ndarray | torch.Tensor) -> list[tuple[int, int] | None]:
    """Per axis, [first, last + 1) of the True voxels of a 3D mask (None when empty)."""
    out: list[tuple[int, int] | None] = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        if isinstance(fg, torch.Tensor):
            nz = torch.nonzero(fg.any(dim=other)).flatten().tolist()
        else:
            nz = np.flatnonzero(fg.any(axis=other)).tolist()
        out.append((nz[0], nz[-1] + 1) if nz else None)
    return out


def foreground_box(image: torch.Tensor, spec: ModelSpec, margin: int = CROP_MARGIN) -> tuple[slice, slice, slice] | None:
    """Box (model grid) made of the sliding windows that touch non-background voxels, or None for all.

    Background is exactly 0 after ``zscore_nonzero`` (zeros are not normalised) and 0 after
    ``ct_window`` or ``percentile`` (at or below the window's low end). With ``none`` nothing is cropped. The box is the
    union of the windows of the *uncropped* image's window grid that overlap the non-background box
    grown by ``margin``; it starts on that grid, so MONAI places the same windows inside it and every
    voxel of the grown box gets exactly the same blended result as without cropping.
    """
    scheme = spec.normalization.scheme
    if scheme == "zscore_nonzero":
        fg = (image != 0).any(dim=0)
    elif scheme in ("ct_window", "percentile"):
        fg = (image > 0).any(dim=0)
    else:
        return None
    return _aligned_box(_bounds(fg), tuple(fg.shape), spec, margin)


def _source_crop(volume: Volume, spec: ModelSpec, margin: int = CROP_MARGIN) -> tuple[Volume, tuple[int, ...]] | None:
    """Crop the *source* when its grid already is the model grid up to an axis permutation/flip.

    Then preprocessing the crop gives exactly :func:`foreground_box`'s crop of the fully preprocessed
    image, without ever building the full-size float copies. Returns (cropped volume, expected
    model-grid shape), or None when the spec resamples or does not crop.
    """
    import nibabel as nib

    scheme = spec.normalization.scheme
    if scheme not in ("zscore_nonzero", "ct_window"):  # percentiles depend on the whole scan: general path
        return None
    ornt = nib.orientations.io_orientation(volume.affine)
    target = nib.orientations.axcodes2ornt(spec.orientation)
    tr = nib.orientations.ornt_transform(ornt, target)  # source axis a -> model axis tr[a, 0], flip tr[a, 1]
    src_to_model = [int(t) for t in tr[:, 0]]
    flip = [t < 0 for t in tr[:, 1]]
    model_axis_src = [src_to_model.index(r) for r in range(3)]
    model_spacing = [volume.spacing[model_axis_src[r]] for r in range(3)]
    if not np.allclose(model_spacing, spec.target_spacing, rtol=1e-5, atol=1e-6):
        return None
    arr = volume.array
    if scheme == "zscore_nonzero":
        fg = np.any(arr != 0, axis=0)
    else:
        assert spec.normalization.window is not None
        fg = np.any(arr > spec.normalization.window[0], axis=0)
    src_bounds = _bounds(fg)
    del fg
    model_shape = [volume.shape[model_axis_src[r]] for r in range(3)]
    model_bounds: list[tuple[int, int] | None] = []
    for r in range(3):
        a = model_axis_src[r]
        b = src_bounds[a]
        if b is not None and flip[a]:
            b = (volume.shape[a] - b[1], volume.shape[a] - b[0])
        model_bounds.append(b)
    mbox = _aligned_box(model_bounds, model_shape, spec, margin)
    sbox = []
    for a in range(3):
        m = mbox[src_to_model[a]]
        lo, hi = (volume.shape[a] - m.stop, volume.shape[a] - m.start) if flip[a] else (m.start, m.stop)
        sbox.append(slice(lo, hi))
    sub = volume.with_array(arr[(slice(None), *sbox)], affine=_shift_affine(volume.affine, [b.start for b in sbox]))
    return sub, tuple(m.stop - m.start for m in mbox)


def _shift_affine(affine: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, 3] = affine[:3, :3] @ np.asarray(offset, dtype=np.float64) + affine[:3, 3]
    return out


def _index_map(src_affine: np.ndarray, dst_affine: np.ndarray, tol: float = 1e-4) -> tuple[list[int], list[int], list[int]] | None:
    """When ``src`` voxels land exactly on ``dst`` voxels (signed axis permutation + integer shift).

    Returns ``(perm, sign, shift)`` with ``dst[r] = sign[r] * src[perm[r]] + shift[r]``, else None.
    """
    m = np.linalg.solve(dst_affine, src_affine)  # src voxel -> dst voxel
    lin, t = m[:3, :3], m[:3, 3]
    rounded = np.rint(lin)
    if not np.allclose(lin, rounded, atol=tol) or not np.allclose(t, np.rint(t), atol=tol):
        return None
    if not np.array_equal(np.abs(rounded).sum(axis=0), np.ones(3)) or not np.array_equal(np.abs(rounded).sum(axis=1), np.ones(3)):
        return None
    perm = [int(np.flatnonzero(rounded[r])[0]) for r in range(3)]
    sign = [int(rounded[r, perm[r]]) for r in range(3)]
    return perm, sign, [int(x) for x in np.rint(t)]


def _paste_exact(src: np.ndarray, mapping: tuple[list[int], list[int], list[int]], dst: np.ndarray) -> None:
    """Copy ``src`` (C, a, b, c) into ``dst`` (C, I, J, K) through an exact index map (clipped)."""
    perm, sign, shift = mapping
    arr = src.transpose([0] + [p + 1 for p in perm])
    sl_src, sl_dst = [slice(None)], [slice(None)]
    for r in range(3):
        n = arr.shape[r + 1]
        if sign[r] < 0:
            arr = np.flip(arr, axis=r + 1)
            start = shift[r] - n + 1
        else:
            start = shift[r]
        lo, hi = max(0, start), min(dst.shape[r + 1], start + n)
        if hi <= lo:
            return
        sl_src.append(slice(lo - start, hi - start))
        sl_dst.append(slice(lo, hi))
    dst[tuple(sl_dst)] = arr[tuple(sl_src)]


def _separable_map(dst_affine: np.ndarray, src_affine: np.ndarray, tol: float = 1e-6) -> tuple[np.ndarray, list[int]] | None:
    """``(m, perm)`` when each source axis depends on one destination axis only (scaling, flips,
    permutation, shift: no rotation between the grids), with ``m`` the dst-voxel -> src-voxel matrix
    and ``perm[r]`` the destination axis feeding source axis ``r``; else None."""
    m = np.linalg.solve(src_affine, dst_affine)
    lin = np.abs(m[:3, :3])
    big = lin > tol * lin.max()
    if not (big.sum(axis=0) == 1).all() or not (big.sum(axis=1) == 1).all():
        return None
    return m, [int(np.flatnonzero(big[r])[0]) for r in range(3)]


def _resample_separable(src: np.ndarray, m: np.ndarray, perm: list[int], out_shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling (voxel centres, border padding) done one axis at a time.

    Same result as MONAI's ``SpatialResample(mode="bilinear", padding_mode="border")`` for grids that
    differ by scaling/flips/permutation only, without building a full-size sampling grid.
    """
    arr = src
    for r in range(3):
        p = perm[r]
        n = arr.shape[r + 1]
        u = np.clip(m[r, p] * np.arange(out_shape[p], dtype=np.float64) + m[r, 3], 0.0, n - 1.0)
        i0 = np.minimum(np.floor(u).astype(np.int64), max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        w = (u - i0).astype(np.float32).reshape([-1 if a == r + 1 else 1 for a in range(4)])
        a0 = np.take(arr, i0, axis=r + 1)
        a1 = np.take(arr, i1, axis=r + 1)
        a1 -= a0
        a1 *= w
        a0 += a1
        arr = a0
    order = [perm.index(p) + 1 for p in range(3)]
    return np.ascontiguousarray(arr.transpose([0, *order]))


def _source_box(crop_affine: np.ndarray, crop_shape: Sequence[int], reference: Volume) -> tuple[slice, slice, slice] | None:
    """Source-grid voxels covered by a box on another grid (plus one voxel)."""
    corners = np.array([[a, b, c] for a in (-0.5, crop_shape[0] - 0.5) for b in (-0.5, crop_shape[1] - 0.5) for c in (-0.5, crop_shape[2] - 0.5)])
    world = corners @ crop_affine[:3, :3].T + crop_affine[:3, 3]
    vox = reference.world_to_voxel(world)
    lo = np.maximum(np.floor(vox.min(axis=0)) - 1, 0).astype(int)
    hi = np.minimum(np.ceil(vox.max(axis=0)) + 2, reference.shape).astype(int)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def to_source_grid(data: torch.Tensor, data_affine: np.ndarray, reference: Volume, fill: Sequence[float], mode: str = "bilinear") -> np.ndarray:
    """Map a channel-first tensor on any grid onto ``reference``'s grid; voxels it does not cover get ``fill``.

    Exact index copy when the grids coincide up to a signed permutation and an integer shift,
    otherwise MONAI resampling (``resample_to_reference``) of the covered sub-box only.
    """
    from seg_app.core.preprocess import resample_to_reference

    n_ch = int(data.shape[0])
    out = np.empty((n_ch, *reference.shape), dtype=np.float32)
    for c in range(n_ch):
        out[c].fill(fill[c])
    mapping = _index_map(np.asarray(data_affine, dtype=np.float64), reference.affine)
    arr = data.detach().to("cpu", torch.float32)
    if mapping is not None:
        _paste_exact(arr.numpy(), mapping, out)
        return out
    box = _source_box(np.asarray(data_affine, dtype=np.float64), tuple(data.shape[1:]), reference)
    if box is None:
        return out
    sub_shape = tuple(s.stop - s.start for s in box)
    sub_affine = _shift_affine(reference.affine, [s.start for s in box])
    if mode == "bilinear":
        sep = _separable_map(sub_affine, np.asarray(data_affine, dtype=np.float64))
        if sep is not None:  # the usual case: model grid = source grid rescaled (3-4x faster, less memory)
            out[(slice(None), *box)] = _resample_separable(arr.numpy(), sep[0], sep[1], sub_shape)
            return out
    sub_ref = Volume(np.broadcast_to(np.zeros((), np.uint8), (1, *sub_shape)), _shift_affine(reference.affine, [s.start for s in box]))
    mt = MetaTensor(arr, affine=torch.as_tensor(data_affine, dtype=torch.float64))
    res = resample_to_reference(mt, sub_ref, mode=mode)
    out[(slice(None), *box)] = res.numpy()
    return out


def postprocess_labels(labels: np.ndarray, spec: ModelSpec, voxel_volume_ml: float) -> tuple[np.ndarray, int]:
    """Apply the spec's postprocessing in place; returns (labels, number of lesions removed).

    A lesion is a connected component of one label, or of the whole tumour when the labels are tumour
    sub-regions (``seg_app.core.regions``): a small enhancing part of a large tumour is never removed.
    """
    pp = spec.postprocess
    if pp.min_lesion_ml <= 0 and not pp.keep_largest:
        return labels, 0
    from seg_app.core.measure import _nonzero_bbox, lesion_components
    from seg_app.core.regions import composite_regions

    box = _nonzero_bbox(labels)
    if box is None:
        return labels, 0
    crop = labels[box]
    whole = composite_regions({lab.value: lab.name for lab in spec.labels}).get("WT")
    cc, n = lesion_components(np.isin(crop, whole).astype(np.uint8) if whole else crop)
    if n == 0:
        return labels, 0
    counts = np.bincount(cc.ravel(), minlength=n + 1)
    ids, first = np.unique(cc.ravel(), return_index=True)  # first voxel of each component
    comp_label = np.zeros(n + 1, dtype=np.int64)
    comp_label[ids] = 1 if whole else crop.ravel()[first]  # whole-tumour lesions form one group
    remove = np.zeros(n + 1, dtype=bool)
    min_vox = pp.min_lesion_ml / voxel_volume_ml if voxel_volume_ml > 0 else 0
    for cid in range(1, n + 1):
        if counts[cid] < min_vox:
            remove[cid] = True
    if pp.keep_largest:
        for value in np.unique(comp_label[1:]):
            ids = [i for i in range(1, n + 1) if comp_label[i] == value and not remove[i]]
            if len(ids) > 1:
                keep = max(ids, key=lambda i: counts[i])
                for i in ids:
                    remove[i] = i != keep
    removed = int(remove.sum())
    if removed:
        crop[remove[cc]] = 0
    return labels, removed


# ---- the segmenter ---------------------------------------------------------------------------
class Segmenter:
    """Segments ``Volume``s with one model; reusable across scans and threads (one call at a time).

    Args:
        model: checkpoint path, a loaded ``Checkpoint``, or None for the bundled default model.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        tta: test-time augmentation (identity + flips along each axis, probabilities averaged).
        backend: ``auto`` (ONNX Runtime on the CPU when available, matching and faster), ``torch`` or
            ``onnxruntime``.
        crop_foreground: skip windows outside the non-background box (see :func:`foreground_box`).
        sw_batch_size: windows per network call (default: the spec's; 2-4 windows per call are ~15 % faster than 1 with ONNX Runtime on the CPU).
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
    ) -> None:
        if backend not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"Unknown backend '{backend}' (auto, torch or onnxruntime).")
        if model is None:
            model = default_model_path()
            if not Path(model).is_file():
                raise CheckpointError(f"The bundled model '{Path(model).name}' is missing; pass a checkpoint with --model.")
        ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
        self.checkpoint = ckpt
        self.spec: ModelSpec = ckpt.spec
        self.device = select_device(device)
        self.tta = bool(tta)
        self.backend = backend
        self.crop_foreground = crop_foreground
        # CPU: one window per call is as fast per window and needs half the activation memory
        self.sw_batch_size = int(sw_batch_size or self.spec.inference.sw_batch_size)
        self.threads = configure_cpu_threads()
        net = build_network(self.spec)
        net.load_state_dict(ckpt.state_dict, strict=True)
        self.network: torch.nn.Module = net.eval()
        self._onnx: Any = None  # OnnxPredictor once chosen; False when ruled out
        self._lock = threading.Lock()

    # -- backends --
    def _torch_predictor(self, device: torch.device) -> Predictor:
        net = self.network.to(device)
        if device.type == "cuda":
            amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

            def run_cuda(batch: torch.Tensor) -> torch.Tensor:
                with torch.autocast("cuda", dtype=amp):
                    return net(batch.to(device, non_blocking=True)).float()

            return run_cuda
        return lambda batch: net(batch.to(device))

    def _onnx_predictor(self) -> Any:
        """The ONNX Runtime predictor when the backend setting and a speed/accuracy check allow it."""
        if self.backend == "torch" or self._onnx is False:
            return None
        if self._onnx is not None:
            return self._onnx
        from seg_app.core import onnx_backend

        forced = self.backend == "onnxruntime"
        try:
            pred = onnx_backend.predictor_for(self.network, self.spec, self.checkpoint, threads=self.threads, check=not forced)
        except Exception as exc:  # noqa: BLE001 - any ORT/export failure falls back to torch
            if forced:
                raise CheckpointError(f"The ONNX Runtime backend could not be used ({exc}).") from exc
            log.info("ONNX Runtime backend not used: %s", exc)
            pred = None
        self._onnx = pred if pred is not None else False
        return pred

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

        Raises:
            IncompatibleInputError: wrong channel count, NaN/inf values, empty dimension.
            Cancelled: ``cancel`` was set (checked between window batches); nothing is kept.
        """
        from seg_app.core.preprocess import check_compatible

        with self._lock:
            t0 = time.perf_counter()
            warnings: list[str] = []
            if _is_cancelled(cancel):
                raise Cancelled("Segmentation was cancelled.")
            spec = self.spec
            check_compatible(volume, spec)  # channels, NaN/inf: clear typed errors first
            warnings.extend(domain_warnings(volume, spec))  # CT for an MR model, 2D, not the body part
            x, crop_affine, full_shape = self._preprocess(volume)
            small = [s for s, r in zip(full_shape, spec.inference.roi_size) if s < r]
            if small:
                warnings.append(
                    f"The scan ({'x'.join(map(str, full_shape))} voxels at the model's spacing) is smaller than the "
                    f"model's window ({'x'.join(map(str, spec.inference.roi_size))}); it was padded."
                )
            flips: list[tuple[int, ...]] = [()] + ([(1,), (2,), (3,)] if self.tta else [])
            per_pass = count_windows(tuple(x.shape[1:]), spec.inference.roi_size, spec.inference.overlap)
            total = per_pass * len(flips)

            onnx_pred = self._onnx_predictor() if self.device.type == "cpu" else None
            device_name = "onnxruntime-cpu" if onnx_pred is not None else self.device.type

            binary = spec.out_channels == 2

            @torch.inference_mode()
            def run(dev: torch.device, bs: int) -> tuple[torch.Tensor, torch.Tensor | None]:
                base: Predictor = onnx_pred if (onnx_pred is not None and dev.type == "cpu") else self._torch_predictor(dev)
                if binary:  # blend l1 - l0 (blending is linear): softmax = sigmoid of the blended difference
                    def predictor(b: torch.Tensor) -> torch.Tensor:
                        out = base(b)
                        return out[:, 1:2] - out[:, 0:1]
                else:
                    predictor = base
                stitch = self._stitch_device(dev, x, 1 if binary else spec.out_channels)
                acc: torch.Tensor | None = None
                votes: list[torch.Tensor] = []
                for n, axes in enumerate(flips):
                    def prog(done: int, _tot: int, _n: int = n) -> None:
                        if progress is not None:
                            progress(_n * per_pass + done, total)

                    xi = torch.flip(x, axes) if axes else x
                    p = blend_windows(
                        predictor, xi[None], spec, sw_device=dev, device=stitch, sw_batch_size=bs, progress=prog, cancel=cancel
                    )[0].to("cpu")
                    p = p.sigmoid_() if binary else softmax_(p, dim=0)  # (1 or L, ...) probabilities
                    if axes:
                        p = torch.flip(p, axes)
                    if self.tta:
                        votes.append((p[0] > 0.5).to(torch.uint8) if binary else torch.argmax(p, dim=0).to(torch.uint8))
                    acc = p if acc is None else acc.add_(p)
                assert acc is not None
                if len(flips) > 1:
                    acc /= len(flips)
                agree = None
                if self.tta:
                    final = (acc[0] > 0.5).to(torch.uint8) if binary else torch.argmax(acc, dim=0).to(torch.uint8)
                    agree = torch.stack([v == final for v in votes]).float().mean(dim=0)
                return acc, agree

            try:
                (probs, agree), used = run_with_oom_fallback(run, self.device, self.sw_batch_size, warnings)
            finally:
                if self.device.type != "cpu":
                    self.network.to(self.device)
            if used != self.device:
                device_name = "onnxruntime-cpu" if onnx_pred is not None else used.type

            # back to the source grid: labels + foreground probability (+ agreement)
            n_lab = spec.out_channels
            values = np.array([lab.value for lab in spec.labels], dtype=np.uint8)
            if binary:
                fg = to_source_grid(probs, crop_affine, volume, fill=[0.0])
                labels = np.where(fg[0] > 0.5, values[1], values[0]).astype(np.uint8)
            else:
                full = to_source_grid(probs, crop_affine, volume, fill=[1.0] + [0.0] * (n_lab - 1))
                labels = values[np.argmax(full, axis=0)]
                fg = 1.0 - full[0:1]
                del full
            del probs
            labels, removed = postprocess_labels(labels, spec, volume.voxel_volume_ml)
            if removed:
                log.info("postprocessing removed %d lesion(s)", removed)
            label_vol = volume.with_array(labels[None], channel_names=(), warnings=tuple(warnings), modality=volume.modality)
            prob_vol = volume.with_array(np.clip(fg, 0.0, 1.0, out=fg), channel_names=("foreground probability",), warnings=()) if return_probabilities else None
            agree_vol = None
            if agree is not None:
                ag = to_source_grid(agree[None], crop_affine, volume, fill=[1.0])
                agree_vol = volume.with_array(ag, channel_names=("TTA agreement",), warnings=())
            return SegmentationResult(
                labels=label_vol,
                probabilities=prob_vol,
                spec=spec,
                device=device_name,
                seconds=time.perf_counter() - t0,
                warnings=tuple(warnings),
                agreement=agree_vol,
            )

    def _preprocess(self, volume: Volume) -> tuple[torch.Tensor, np.ndarray, tuple[int, ...]]:
        """Preprocessed (and cropped) image, its affine, and the uncropped model-grid shape."""
        from seg_app.core.preprocess import preprocess_volume

        spec = self.spec
        if self.crop_foreground:
            fast = _source_crop(volume, spec)
            if fast is not None:
                sub, expected = fast
                with torch.inference_mode():
                    pre = preprocess_volume(sub, spec)
                aff = np.asarray(pre.affine, dtype=np.float64)
                if tuple(pre.shape[1:]) == expected and _index_map(aff, sub.affine) is not None:
                    return pre.as_tensor(), aff, self._model_shape(volume, aff)
                del pre  # unexpected grid: fall back to the general path
        with torch.inference_mode():
            pre = preprocess_volume(volume, spec)
        model_affine = np.asarray(pre.affine, dtype=np.float64)
        x = pre.as_tensor()
        del pre
        full_shape = tuple(int(v) for v in x.shape[1:])
        box = foreground_box(x, spec) if self.crop_foreground else None
        if box is None:
            return x, model_affine, full_shape
        return x[(slice(None), *box)].contiguous(), _shift_affine(model_affine, [b.start for b in box]), full_shape

    @staticmethod
    def _model_shape(volume: Volume, model_affine: np.ndarray) -> tuple[int, ...]:
        """Shape of the whole scan on the model grid when that grid is a permutation of the source grid."""
        mapping = _index_map(volume.affine, model_affine)  # source voxel -> model voxel
        if mapping is None:
            return volume.shape
        perm = mapping[0]
        return tuple(volume.shape[perm[r]] for r in range(3))

    @staticmethod
    def _stitch_device(dev: torch.device, x: torch.Tensor, n_labels: int) -> torch.device:
        """Stitch on the GPU only when the output comfortably fits its free memory."""
        if dev.type != "cuda":
            return torch.device("cpu") if dev.type == "cpu" else dev
        try:
            free, _ = torch.cuda.mem_get_info(dev)
        except RuntimeError:
            return torch.device("cpu")
        need = x[0].numel() * 4 * (2 * n_labels + 2)
        return dev if need < 0.4 * free else torch.device("cpu")
