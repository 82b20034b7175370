"""Qt-free model of what the viewer shows: display geometry, cursor, window/level, overlay settings.

The widgets only adapt this model (napari style): a slider writes to it, and its ``changed`` event
repaints the views. Nothing here imports Qt, so it is unit-testable and reusable.

Display geometry
----------------
A scan is shown on its closest canonical RAS+ array axes: the source array is transposed and flipped
(numpy views, no interpolation, no copy) so display axis 0 points to the patient's Right, axis 1 to
Anterior and axis 2 to Superior. Oblique scans are shown on their closest canonical array planes
(``DisplayGeometry.oblique`` says so; the status bar still reports exact RAS mm from the affine).

Screen convention (radiological): axial and coronal views show the patient's left on the screen's
right; anterior is up in axial views, superior is up in coronal and sagittal views, and anterior is on
the left of sagittal views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

#: View name -> (normal display axis, horizontal display axis, flip horizontal, vertical axis, flip vertical)
VIEW_AXES: dict[str, tuple[int, int, bool, int, bool]] = {
    # col 0 shows patient Right (max x) -> flipped; row 0 shows Anterior (max y) -> flipped
    "axial": (2, 0, True, 1, True),
    "coronal": (1, 0, True, 2, True),
    # col 0 shows Anterior (max y); row 0 shows Superior (max z)
    "sagittal": (0, 1, True, 2, True),
}

#: Orientation letters at (left, right, top, bottom) edges of each view.
VIEW_EDGE_LABELS: dict[str, tuple[str, str, str, str]] = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}

VIEW_NAMES = ("axial", "coronal", "sagittal")

#: CT window/level presets: (width, level) in HU.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "Soft tissue": (400.0, 40.0),
    "Brain": (80.0, 40.0),
    "Bone": (1800.0, 400.0),
    "Lung": (1500.0, -600.0),
}
#: Percentile presets (low %, high % of the tissue intensities): MR and scans of unknown modality,
#: whose intensities have no absolute scale (CT presets would turn them white or black).
PERCENTILE_PRESETS: dict[str, tuple[float, float]] = {
    "Auto (0.5-99.8%)": (0.5, 99.8),
    "High contrast (5-95%)": (5.0, 95.0),
    "Full range (0-100%)": (0.0, 100.0),
}
AUTO_PRESET = "Auto (0.5-99.8%)"
#: What the preset choice shows after the window was changed by hand (right-drag).
CUSTOM_PRESET = "Custom"


def looks_like_ct(modality: str, image: np.ndarray | None = None) -> bool:
    """CT by its DICOM modality, or (modality unknown, e.g. NIfTI) by HU-like air around -1000."""
    if modality:
        return modality.upper() == "CT"
    if image is None:
        return False
    a = np.asarray(image)
    step = max(1, int(np.ceil((a.size / 1_000_000) ** (1 / 3))))
    sample = a[::step, ::step, ::step] if a.ndim == 3 else a
    return bool(np.isfinite(sample).any() and np.nanmin(sample) <= -900.0)


def presets_for(modality: str, image: np.ndarray | None = None) -> list[str]:
    """Preset names offered for a scan: CT windows (HU) and Auto for CT, percentile presets otherwise.

    The first name is the default when the scan opens.
    """
    if looks_like_ct(modality, image):
        return [*CT_PRESETS, AUTO_PRESET]
    return list(PERCENTILE_PRESETS)


def preset_window(name: str, image: np.ndarray) -> tuple[float, float] | None:
    """(width, level) of preset ``name`` for ``image``; None for an unknown name."""
    if name in CT_PRESETS:
        return CT_PRESETS[name]
    if name in PERCENTILE_PRESETS:
        return auto_window(image, *PERCENTILE_PRESETS[name])
    return None


def slice_caption(view: str, display_ijk, display_shape) -> str:
    """``"Axial 12/32"``: the 1-based slice number of ``view`` through ``display_ijk`` (views and status bar)."""
    normal = VIEW_AXES[view][0]
    return f"{view.capitalize()} {int(round(float(display_ijk[normal]))) + 1}/{int(display_shape[normal])}"


OBLIQUE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DisplayGeometry:
    """Maps a source ``(I, J, K)`` grid onto canonical RAS display axes by transpose + flips.

    Attributes:
        perm: ``perm[a]`` is the source axis shown along display axis ``a``.
        flip: ``flip[a]`` is True when that source axis runs opposite to the RAS direction.
        source_shape: source spatial shape ``(I, J, K)``.
        source_affine: source voxel -> RAS mm affine.
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    oblique: bool

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: tuple[int, int, int]) -> "DisplayGeometry":
        affine = np.asarray(affine, dtype=np.float64)
        ornt = nib.orientations.io_orientation(affine)  # per source axis: (RAS axis, +-1)
        perm = [0, 0, 0]
        flip = [False, False, False]
        for src_axis, (ras_axis, direction) in enumerate(ornt):
            if np.isnan(ras_axis):  # degenerate affine: keep array order
                return cls((0, 1, 2), (False, False, False), tuple(shape), affine, True)
            perm[int(ras_axis)] = src_axis
            flip[int(ras_axis)] = bool(direction < 0)
        cosines = affine[:3, :3] / np.maximum(np.linalg.norm(affine[:3, :3], axis=0), 1e-12)
        off_axis = np.abs(cosines).copy()
        for src_axis, (ras_axis, _d) in enumerate(ornt):
            off_axis[int(ras_axis), src_axis] = 0.0
        oblique = bool(off_axis.max() > OBLIQUE_TOLERANCE)
        return cls(tuple(perm), tuple(flip), tuple(int(s) for s in shape), affine, oblique)  # type: ignore[arg-type]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Display shape ``(X, Y, Z)`` (R, A, S)."""
        return tuple(self.source_shape[p] for p in self.perm)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the display axes."""
        sp = np.linalg.norm(self.source_affine[:3, :3], axis=0)
        return tuple(float(sp[p]) for p in self.perm)  # type: ignore[return-value]

    @property
    def display_to_source(self) -> np.ndarray:
        """4x4 matrix mapping display voxel indices to source voxel indices."""
        m = np.zeros((4, 4))
        m[3, 3] = 1.0
        for a, (p, f) in enumerate(zip(self.perm, self.flip)):
            if f:
                m[p, a] = -1.0
                m[p, 3] = self.source_shape[p] - 1
            else:
                m[p, a] = 1.0
        return m

    @property
    def affine(self) -> np.ndarray:
        """Display voxel -> RAS mm."""
        return self.source_affine @ self.display_to_source

    def view(self, array: np.ndarray) -> np.ndarray:
        """A display-oriented *view* (no copy) of a ``(I, J, K)`` or ``(C, I, J, K)`` source array.

        Writing into the returned array writes into the source array (used by the brush).
        """
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in self.perm))
        for a, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=lead + a)
        return out

    def to_source_index(self, display_ijk) -> tuple[int, int, int]:
        d = np.append(np.asarray(display_ijk, dtype=np.float64), 1.0)
        s = self.display_to_source @ d
        return tuple(int(round(v)) for v in s[:3])  # type: ignore[return-value]

    def from_source_index(self, source_ijk) -> tuple[int, int, int]:
        s = np.append(np.asarray(source_ijk, dtype=np.float64), 1.0)
        d = np.linalg.inv(self.display_to_source) @ s
        return tuple(int(round(v)) for v in d[:3])  # type: ignore[return-value]

    def world_to_display(self, ras_mm) -> np.ndarray:
        ras = np.append(np.asarray(ras_mm, dtype=np.float64), 1.0)
        return (np.linalg.inv(self.affine) @ ras)[:3]

    def display_to_world(self, display_ijk) -> np.ndarray:
        d = np.append(np.asarray(display_ijk, dtype=np.float64), 1.0)
        return (self.affine @ d)[:3]


def view_plane(volume_display: np.ndarray, view: str, index: int) -> np.ndarray:
    """The 2D plane of a display-oriented ``(X, Y, Z)`` array for ``view`` at ``index``, in screen order.

    Returns a ``(rows, cols)`` view: row 0 is the top of the screen, column 0 its left.
    """
    normal, h, fh, v, fv = VIEW_AXES[view]
    sl: list = [slice(None)] * 3
    sl[normal] = int(index)
    plane = volume_display[tuple(sl)]  # a view; remaining axes in increasing order
    rem = [a for a in range(3) if a != normal]
    plane = plane if rem.index(v) == 0 else plane.T  # rows = vertical axis
    if fv:
        plane = plane[::-1, :]
    if fh:
        plane = plane[:, ::-1]
    return plane


def plane_shape(display_shape: tuple[int, int, int], view: str) -> tuple[int, int]:
    """``(rows, cols)`` of a view's plane."""
    _n, h, _fh, v, _fv = VIEW_AXES[view]
    return display_shape[v], display_shape[h]


def screen_to_display(view: str, display_shape, index: int, row: float, col: float) -> np.ndarray:
    """Continuous display voxel coordinates of plane pixel ``(row, col)`` of ``view`` at slice ``index``."""
    normal, h, fh, v, fv = VIEW_AXES[view]
    out = np.zeros(3)
    out[normal] = index
    out[h] = (display_shape[h] - 1 - col) if fh else col
    out[v] = (display_shape[v] - 1 - row) if fv else row
    return out


def display_to_screen(view: str, display_shape, ijk) -> tuple[float, float]:
    """Plane ``(row, col)`` of display voxel ``ijk`` in ``view``."""
    _normal, h, fh, v, fv = VIEW_AXES[view]
    col = (display_shape[h] - 1 - ijk[h]) if fh else ijk[h]
    row = (display_shape[v] - 1 - ijk[v]) if fv else ijk[v]
    return float(row), float(col)


def auto_window(array: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.8, max_samples: int = 2_000_000) -> tuple[float, float]:
    """(width, level) from intensity percentiles of a subsample (non-zero voxels when mostly zero)."""
    a = np.asarray(array)
    step = max(1, int(np.ceil((a.size / max_samples) ** (1 / 3))))
    sample = a[::step, ::step, ::step].ravel() if a.ndim == 3 else a.ravel()[:: step**3]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 1.0, 0.0
    nz = sample[sample != 0]
    if nz.size > 0.05 * sample.size and nz.size < 0.9 * sample.size:
        sample = nz  # MR with a zero background: window the tissue, not the air
    lo, hi = np.percentile(sample, [low_pct, high_pct])
    if hi <= lo:
        hi = lo + 1.0
    return float(hi - lo), float((hi + lo) / 2)


@dataclass
class OverlaySettings:
    visible: bool = True
    opacity: float = 0.5
    outline: bool = False
    heatmap: bool = False
    heatmap_opacity: float = 0.6


@dataclass
class ViewerState:
    """What the views show. Call :meth:`connect` to be told about changes (``what`` names the part).

    ``cursor`` is in display voxel indices (see :class:`DisplayGeometry`).
    """

    geometry: DisplayGeometry | None = None
    cursor: tuple[int, int, int] = (0, 0, 0)
    window: float = 1.0
    level: float = 0.0
    channel: int = 0
    overlay: OverlaySettings = field(default_factory=OverlaySettings)
    _listeners: list[Callable[[str], None]] = field(default_factory=list, repr=False)
    _emitting: bool = field(default=False, repr=False)

    def connect(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def disconnect(self, callback: Callable[[str], None]) -> None:
        """Stop calling ``callback`` (no error when it is not connected)."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def emit(self, what: str) -> None:
        for cb in list(self._listeners):
            cb(what)

    # ---- setters (each emits once) ----------------------------------------------------
    def set_geometry(self, geometry: DisplayGeometry) -> None:
        self.geometry = geometry
        self.cursor = tuple(s // 2 for s in geometry.shape)  # type: ignore[assignment]
        self.emit("geometry")

    def set_cursor(self, ijk) -> None:
        if self.geometry is None:
            return
        shape = self.geometry.shape
        c = tuple(int(min(max(round(float(v)), 0), s - 1)) for v, s in zip(ijk, shape))
        if c != self.cursor:
            self.cursor = c  # type: ignore[assignment]
            self.emit("cursor")

    def step_slice(self, view: str, delta: int) -> None:
        normal = VIEW_AXES[view][0]
        c = list(self.cursor)
        c[normal] += delta
        self.set_cursor(c)

    def set_window(self, width: float, level: float) -> None:
        width = max(float(width), 1e-6)
        if (width, float(level)) != (self.window, self.level):
            self.window, self.level = width, float(level)
            self.emit("window")

    def set_overlay(self, **changes) -> None:
        for k, v in changes.items():
            if not hasattr(self.overlay, k):
                raise AttributeError(k)
            setattr(self.overlay, k, v)
        self.emit("overlay")

    def set_channel(self, channel: int) -> None:
        if channel != self.channel:
            self.channel = int(channel)
            self.emit("channel")
