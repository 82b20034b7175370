"""Slice rendering in numpy (no Qt, no per-pixel Python loops): window/level, label and heat-map layers.

Every function takes 2D planes in screen order (row 0 at the top). Layers are ``uint32`` ARGB32 arrays
(opaque grey base; premultiplied overlays made by one table lookup per pixel) that ``slice_view`` wraps
in ``QImage``s without copying and lets Qt scale and blend.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def window_to_uint8(plane: np.ndarray, width: float, level: float) -> np.ndarray:
    """Map intensities to 0..255 with a linear window ``level +- width/2`` (clipped)."""
    lo = level - width / 2.0
    scale = np.float32(255.0 / max(width, 1e-6))
    out = np.subtract(plane, np.float32(lo), dtype=np.float32)
    out *= scale
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def _argb32_premultiplied(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Pack RGB ``(N, 3)`` and alpha ``(N,)`` in 0..1 into premultiplied ARGB32 ``uint32`` values."""
    a = np.clip(np.asarray(alpha, np.float64), 0.0, 1.0)
    c = np.round(np.asarray(rgb, np.float64) * a[:, None]).astype(np.uint32)
    a8 = np.round(a * 255).astype(np.uint32)
    return (a8 << 24) | (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


#: grey level -> opaque ARGB32 (``QImage.Format_RGB32``)
GRAY_LUT32 = (np.uint32(0xFF000000) | (np.arange(256, dtype=np.uint32) * np.uint32(0x010101))).astype(np.uint32)


def gray_to_rgb32(gray: np.ndarray) -> np.ndarray:
    """``uint8`` plane -> ``uint32`` opaque grey pixels (one table lookup)."""
    return np.take(GRAY_LUT32, gray)


def label_luts(colors: Iterable[tuple[int, tuple[int, int, int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables for label values 0..255: RGB colours ``(256, 3) uint8`` and visibility ``(256,) bool``.

    Args:
        colors: ``(value, (r, g, b))`` for each foreground label; other non-zero values get a default
            yellow so hand-painted unknown labels are still visible.
    """
    rgb = np.zeros((256, 3), np.uint8)
    rgb[1:] = (255, 220, 0)
    visible = np.ones(256, bool)
    visible[0] = False
    for value, color in colors:
        if 0 < int(value) < 256:
            rgb[int(value)] = color
    return rgb, visible


def label_lut32(lut_rgb: np.ndarray, lut_visible: np.ndarray, opacity: float) -> np.ndarray:
    """Label value -> premultiplied ARGB32 with ``opacity`` (0 for background / hidden labels)."""
    return _argb32_premultiplied(lut_rgb, lut_visible.astype(np.float64) * float(opacity))


def _hot_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    r = np.clip(3 * x, 0, 1)
    g = np.clip(3 * x - 1, 0, 1)
    b = np.clip(3 * x - 2, 0, 1)
    return (np.stack([r, g, b], axis=1) * 255).astype(np.uint8)


HOT_LUT = _hot_lut()


def heat_lut32(opacity: float, threshold: float = 0.05) -> np.ndarray:
    """Probability (0..255 quantised) -> premultiplied ARGB32 of the "hot" map, alpha ~ probability."""
    p = np.arange(256) / 255.0
    alpha = np.where(p >= threshold, p * float(opacity), 0.0)
    return _argb32_premultiplied(HOT_LUT, alpha)




def outline_mask(labels: np.ndarray) -> np.ndarray:
    """Pixels of a non-zero label that touch a different value (4-neighbourhood) or the plane edge."""
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[0, :] = edge[-1, :] = True
    edge[:, 0] = edge[:, -1] = True
    return edge & (labels != 0)


def labels_layer(labels: np.ndarray, lut32: np.ndarray, outline: bool = False) -> np.ndarray | None:
    """Premultiplied ARGB32 overlay of a label plane (None when the plane has no label)."""
    lab = labels if labels.dtype == np.uint8 else np.clip(labels, 0, 255).astype(np.uint8)
    if not lab.any():
        return None
    if outline:
        lab = np.where(outline_mask(lab), lab, np.uint8(0))
    return np.take(lut32, lab)


def heat_layer(probability: np.ndarray, lut32: np.ndarray) -> np.ndarray:
    """Premultiplied ARGB32 heat map of a probability plane (0..1)."""
    q = np.multiply(probability, np.float32(255.0), dtype=np.float32)
    np.clip(q, 0, 255, out=q)
    return np.take(lut32, q.astype(np.uint8))


def composite_rgb(*layers: np.ndarray | None) -> np.ndarray:
    """Reference compositing in numpy (tests, exports): ARGB32 layers over an opaque base -> RGB uint8.

    The views let Qt blend the same layers (``QImage.Format_ARGB32_Premultiplied``) while drawing.
    """
    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.stack([(x >> s) & 0xFF for s in (16, 8, 0)], axis=-1).astype(np.float32)
        return c, ((x >> 24) & 0xFF).astype(np.float32)[..., None] / 255.0

    base, _ = split(layers[0])
    for layer in layers[1:]:
        if layer is None:
            continue
        c, a = split(layer)
        base = c + base * (1.0 - a)
    return np.clip(np.round(base), 0, 255).astype(np.uint8)
