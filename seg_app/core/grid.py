"""Between the source scan's grid and the model's grid (Qt-free): preprocess and crop onto the model
grid, then map model-grid outputs back onto the source grid.

Cropping keeps only the sliding windows that touch non-background voxels, chosen on the *uncropped*
window grid, so the result inside the head is identical to an uncropped run; windows that would only
see air are skipped. Mapping back is an index copy when the grids coincide up to an axis
permutation/flip, otherwise bilinear resampling of the covered box only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor

from seg_app.core import preprocess
from seg_app.core.sliding_window import window_starts
from seg_app.core.spec import ModelSpec
from seg_app.core.volume import Volume

__all__ = [
    "CROP_MARGIN",
    "WINDOW_EDGE_FRACTION",
    "ModelGridImage",
    "foreground_box",
    "to_model_grid",
    "to_source_grid",
]

#: Voxels of margin (model grid) added around the non-background bounding box.
CROP_MARGIN = 0


# ---- cropping to the windows that matter ----------------------------------------------------
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
    if spec.native_grid:  # nothing is resampled: the general path crops the normalised scan as it is
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


# ---- model grid -> source grid ---------------------------------------------------------------
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
    res = preprocess.resample_to_reference(mt, sub_ref, mode=mode)
    out[(slice(None), *box)] = res.numpy()
    return out




# ---- source grid -> model grid ---------------------------------------------------------------
@dataclass
class ModelGridImage:
    """A scan preprocessed onto the model grid, possibly cropped to the windows that matter.

    Attributes:
        image: float32 tensor ``(C, i, j, k)`` (the crop).
        affine: float64 voxel->RAS affine of ``image`` (the crop's, not the whole grid's).
        full_shape: spatial shape of the whole, uncropped scan on the model grid.
    """

    image: torch.Tensor
    affine: np.ndarray
    full_shape: tuple[int, ...]


def to_model_grid(volume: Volume, spec: ModelSpec, crop_foreground: bool = True) -> ModelGridImage:
    """The spec's preprocessing of ``volume`` (RAS, spacing, normalisation), cropped to
    :func:`foreground_box` when ``crop_foreground``.

    When the source grid already is the model grid up to an axis permutation/flip, only the crop of
    the source is preprocessed (no full-size float copies); otherwise the whole scan is.
    """
    if crop_foreground:
        fast = _preprocessed_source_crop(volume, spec)
        if fast is not None:
            return fast
    with torch.inference_mode():
        pre = preprocess.preprocess_volume(volume, spec)
    model_affine = np.asarray(pre.affine, dtype=np.float64)
    x = pre.as_tensor()
    del pre
    full_shape = tuple(int(v) for v in x.shape[1:])
    box = foreground_box(x, spec) if crop_foreground else None
    if box is None:
        return ModelGridImage(x, model_affine, full_shape)
    crop = x[(slice(None), *box)].contiguous()
    return ModelGridImage(crop, _shift_affine(model_affine, [b.start for b in box]), full_shape)


def _preprocessed_source_crop(volume: Volume, spec: ModelSpec) -> ModelGridImage | None:
    """:func:`_source_crop` preprocessed, or None when that shortcut does not apply."""
    fast = _source_crop(volume, spec)
    if fast is None:
        return None
    sub, expected = fast
    with torch.inference_mode():
        pre = preprocess.preprocess_volume(sub, spec)
    aff = np.asarray(pre.affine, dtype=np.float64)
    if tuple(pre.shape[1:]) != expected or _index_map(aff, sub.affine) is None:
        return None  # unexpected grid: the caller takes the general path
    return ModelGridImage(pre.as_tensor(), aff, _model_shape(volume, aff))


def _model_shape(volume: Volume, model_affine: np.ndarray) -> tuple[int, ...]:
    """Shape of the whole scan on the model grid when that grid is a permutation of the source grid."""
    mapping = _index_map(volume.affine, model_affine)  # source voxel -> model voxel
    if mapping is None:
        return volume.shape
    perm = mapping[0]
    return tuple(volume.shape[perm[r]] for r in range(3))
