"""Slice rendering in numpy (no Qt, no per-pixel Python loops): window/level, label and heat-map overlays.

Every function takes 2D planes in screen order (row 0 at the top) and returns ``uint8`` arrays that
``slice_view`` wraps in a ``QImage`` without copying.
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


def _hot_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    r = np.clip(3 * x, 0, 1)
    g = np.clip(3 * x - 1, 0, 1)
    b = np.clip(3 * x - 2, 0, 1)
    return (np.stack([r, g, b], axis=1) * 255).astype(np.uint8)


HOT_LUT = _hot_lut()


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


def _blend(rgb: np.ndarray, sel: np.ndarray, color: np.ndarray, alpha) -> None:
    """In place: ``rgb[sel] = rgb[sel] * (1 - alpha) + color * alpha`` for the selected pixels only."""
    base = rgb[sel].astype(np.float32)
    a = np.asarray(alpha, np.float32)
    if a.ndim == 1:
        a = a[:, None]
    base += (color.astype(np.float32) - base) * a
    rgb[sel] = base.astype(np.uint8)


def compose_rgb(
    gray: np.ndarray,
    labels: np.ndarray | None = None,
    lut_rgb: np.ndarray | None = None,
    lut_visible: np.ndarray | None = None,
    opacity: float = 0.5,
    outline: bool = False,
    probability: np.ndarray | None = None,
    heat_opacity: float = 0.6,
    heat_threshold: float = 0.05,
) -> np.ndarray:
    """RGB ``(rows, cols, 3) uint8`` (C-contiguous) of a grey plane with optional overlays.

    Args:
        gray: windowed plane ``uint8``.
        labels: label plane (integers 0..255) or None.
        lut_rgb, lut_visible: from :func:`label_luts`.
        opacity: label fill opacity 0..1 (outlines are drawn more opaque).
        outline: draw only label borders.
        probability: foreground probability plane 0..1 shown as a heat map under the labels.
    """
    rgb = np.empty(gray.shape + (3,), np.uint8)
    rgb[...] = gray[..., None]
    if probability is not None and heat_opacity > 0:
        p = np.asarray(probability, np.float32)
        sel = p >= heat_threshold
        if sel.any():
            ps = p[sel]
            _blend(rgb, sel, HOT_LUT[(np.clip(ps, 0, 1) * 255).astype(np.uint8)], ps * heat_opacity)
    if labels is not None and opacity > 0:
        if lut_rgb is None or lut_visible is None:
            lut_rgb, lut_visible = label_luts(())
        lab = labels if labels.dtype == np.uint8 else np.clip(labels, 0, 255).astype(np.uint8)
        sel = outline_mask(lab) if outline else lab != 0
        sel &= lut_visible[lab]
        if sel.any():
            alpha = min(1.0, 0.35 + opacity) if outline else opacity
            _blend(rgb, sel, lut_rgb[lab[sel]], alpha)
    return rgb
