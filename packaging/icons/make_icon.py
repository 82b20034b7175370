"""Draw the app icon (an axial brain slice with a highlighted lesion and a crosshair) with numpy + Pillow.

    python packaging/icons/make_icon.py

Writes, next to this file: ``seg-workstation.png`` (256 px, Linux .desktop / hicolor theme),
``seg-workstation.ico`` (16-256 px, Windows EXE and installer) and ``seg-workstation.icns`` (macOS
.app). The outputs are committed; rerun only to change the design. Deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
NAME = "seg-workstation"
SIZE = 1024  # drawn large, then downsampled (anti-aliasing for free)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def draw(size: int = SIZE) -> Image.Image:
    """RGBA icon at ``size`` pixels."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size  # 0..1
    rgba = np.zeros((size, size, 4))

    # rounded dark-blue tile
    r, m = 0.18, 0.04
    qx = np.maximum(np.abs(x - 0.5) - (0.5 - m - r), 0)
    qy = np.maximum(np.abs(y - 0.5) - (0.5 - m - r), 0)
    tile = 1 - _smoothstep(r - 0.004, r, np.hypot(qx, qy))
    shade = 0.75 + 0.25 * (1 - y)
    rgba[..., 0] = 0.08 * shade
    rgba[..., 1] = 0.16 * shade
    rgba[..., 2] = 0.30 * shade
    rgba[..., 3] = tile

    # brain slice: an ellipse with a grey-matter rim and a darker midline
    ex, ey = (x - 0.5) / 0.34, (y - 0.52) / 0.40
    rho = np.hypot(ex, ey)
    brain = 1 - _smoothstep(0.97, 1.0, rho)
    texture = 0.80 + 0.06 * np.sin(40 * x + 9 * np.sin(12 * y)) * np.sin(36 * y)
    grey = np.where(rho > 0.82, 0.93, texture)
    grey = grey * (1 - 0.35 * np.exp(-((x - 0.5) / 0.012) ** 2) * (np.abs(y - 0.52) < 0.36))
    for c in range(3):
        rgba[..., c] = rgba[..., c] * (1 - brain) + grey * brain

    # lesion: warm blob with a bright rim (segmentation overlay look)
    lx, ly = (x - 0.62) / 0.11, (y - 0.42) / 0.095
    lr = np.hypot(lx, ly)
    fill = (1 - _smoothstep(0.9, 1.0, lr)) * 0.75
    rim = np.exp(-((lr - 1.0) / 0.08) ** 2)
    for c, v in enumerate((0.95, 0.25, 0.20)):
        rgba[..., c] = rgba[..., c] * (1 - fill) + v * fill
    for c, v in enumerate((1.0, 0.85, 0.25)):
        rgba[..., c] = rgba[..., c] * (1 - rim) + v * rim

    # crosshair through the lesion
    line = np.zeros_like(x)
    line = np.maximum(line, np.exp(-((x - 0.62) / 0.006) ** 2) * ((np.abs(y - 0.42) > 0.14) & (y > 0.10) & (y < 0.90)))
    line = np.maximum(line, np.exp(-((y - 0.42) / 0.006) ** 2) * ((np.abs(x - 0.62) > 0.16) & (x > 0.10) & (x < 0.90)))
    for c, v in enumerate((0.35, 0.95, 0.55)):
        rgba[..., c] = rgba[..., c] * (1 - line) + v * line

    rgba[..., 3] = np.maximum(tile * 1.0, 0) * (tile > 0)
    img = (np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(img, "RGBA")


def main() -> None:
    big = draw()
    png = big.resize((256, 256), Image.Resampling.LANCZOS)
    png.save(HERE / f"{NAME}.png", optimize=True)
    big.resize((256, 256), Image.Resampling.LANCZOS).save(
        HERE / f"{NAME}.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)]
    )
    big.resize((512, 512), Image.Resampling.LANCZOS).save(HERE / f"{NAME}.icns")
    print(f"wrote {NAME}.png, {NAME}.ico, {NAME}.icns in {HERE}")


if __name__ == "__main__":
    main()
