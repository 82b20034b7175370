"""Brush editing of a label map with undo/redo (Qt-free).

The editor works on a display-oriented *view* of the label array (see ``DisplayGeometry.view``), so
every write lands in the source-grid labels the app saves. Undo history stores only what a stroke
changed: for each dab, the bounding box, the mask of changed voxels in it and their old values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seg_app.gui.viewer_state import VIEW_AXES


#: Brush radius steps in mm ("[" / "]" and the radius box's arrows move between them).
BRUSH_STEPS_MM = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0)


def next_brush_radius(current: float, direction: int) -> float:
    """The next clean step above (``direction`` > 0) or below ``current``, clamped to the ends."""
    if direction > 0:
        return next((r for r in BRUSH_STEPS_MM if r > current + 1e-9), BRUSH_STEPS_MM[-1])
    return next((r for r in reversed(BRUSH_STEPS_MM) if r < current - 1e-9), BRUSH_STEPS_MM[0])


@dataclass
class _Dab:
    box: tuple[slice, slice, slice]
    changed: np.ndarray  # bool mask inside box
    old: np.ndarray  # old values of the changed voxels
    new: int


@dataclass
class Stroke:
    """One mouse press-drag-release: the unit of undo."""

    dabs: list[_Dab] = field(default_factory=list)
    #: what the session attaches to the step (e.g. the label names before/after opening a segmentation)
    note: object = None

    @property
    def n_changed(self) -> int:
        return int(sum(int(d.changed.sum()) for d in self.dabs))


def brush_offsets(radius_mm: float, spacing: tuple[float, float, float], normal: int | None) -> np.ndarray:
    """Integer voxel offsets ``(N, 3)`` inside a disc (in the plane orthogonal to ``normal``) or a sphere.

    Args:
        radius_mm: brush radius in mm (at least the centre voxel is always included).
        spacing: voxel size in mm of the three display axes.
        normal: display axis orthogonal to the disc; None for a 3D sphere.
    """
    ranges = []
    for a in range(3):
        r = 0 if a == normal else int(np.floor(radius_mm / spacing[a]))
        ranges.append(np.arange(-r, r + 1))
    g = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    d2 = ((g * np.asarray(spacing)) ** 2).sum(axis=1)
    return g[d2 <= radius_mm**2 + 1e-9]


class LabelEditor:
    """Paints into a display-oriented label array and keeps an undo/redo history of strokes.

    Args:
        labels_display: writable ``(X, Y, Z)`` integer array (a view onto the saved labels).
        spacing: voxel size in mm of the display axes.
        max_undo: strokes kept for undo (at least 20).
    """

    def __init__(self, labels_display: np.ndarray, spacing: tuple[float, float, float], max_undo: int = 50) -> None:
        self.labels = labels_display
        self.spacing = tuple(float(s) for s in spacing)
        self.max_undo = max(20, int(max_undo))
        self._undo: list[Stroke] = []
        self._redo: list[Stroke] = []
        self._current: Stroke | None = None

    # ---- strokes ----------------------------------------------------------------------
    def begin_stroke(self) -> None:
        self._current = Stroke()

    def dab(self, center, radius_mm: float, value: int, view: str | None = None, sphere: bool = False) -> tuple[slice, slice, slice] | None:
        """Set voxels within the brush around display voxel ``center`` to ``value`` (0 erases).

        Args:
            center: display voxel indices.
            radius_mm: brush radius in mm.
            value: label to paint (0 to erase).
            view: view name; the disc lies in that view's plane (ignored for a sphere).
            sphere: paint a 3D sphere instead of a 2D disc.

        Returns:
            The bounding box touched (display indices), or None when nothing changed.
        """
        if self._current is None:
            self.begin_stroke()
        normal = None if sphere or view is None else VIEW_AXES[view][0]
        offs = brush_offsets(radius_mm, self.spacing, normal) + np.round(np.asarray(center)).astype(int)
        shape = np.asarray(self.labels.shape)
        offs = offs[np.all((offs >= 0) & (offs < shape), axis=1)]
        if offs.size == 0:
            return None
        lo = offs.min(axis=0)
        hi = offs.max(axis=0) + 1
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        region = self.labels[box]
        inside = np.zeros(region.shape, bool)
        rel = offs - lo
        inside[rel[:, 0], rel[:, 1], rel[:, 2]] = True
        changed = inside & (region != value)
        if not changed.any():
            return None
        old = region[changed].copy()
        region[changed] = value
        assert self._current is not None
        self._current.dabs.append(_Dab(box, changed, old, int(value)))  # type: ignore[arg-type]
        return box  # type: ignore[return-value]

    def line(self, start, end, radius_mm: float, value: int, view: str | None = None, sphere: bool = False) -> bool:
        """Dabs along the segment from ``start`` to ``end`` (display voxels) so fast drags leave no gaps."""
        start = np.asarray(start, float)
        end = np.asarray(end, float)
        n = int(np.ceil(np.abs(end - start).max())) + 1
        changed = False
        for t in np.linspace(0.0, 1.0, max(n, 1)):
            changed |= self.dab(start + (end - start) * t, radius_mm, value, view, sphere) is not None
        return changed

    def end_stroke(self) -> Stroke | None:
        """Finish the stroke; it becomes one undo step when it changed anything."""
        stroke, self._current = self._current, None
        if stroke is None or not stroke.dabs:
            return None
        self._undo.append(stroke)
        del self._undo[: -self.max_undo]
        self._redo.clear()
        return stroke

    def fill(self, box: tuple[slice, slice, slice], mask: np.ndarray, value: int) -> Stroke | None:
        """Set the voxels of ``mask`` (bool, shaped like ``labels[box]``) to ``value`` as one undo step
        (deleting a whole lesion); None when nothing changed."""
        self.begin_stroke()
        region = self.labels[box]
        changed = np.asarray(mask, bool) & (region != value)
        if changed.any():
            old = region[changed].copy()
            region[changed] = value
            assert self._current is not None
            self._current.dabs.append(_Dab(box, changed, old, int(value)))
        return self.end_stroke()

    def replace(self, new_labels: np.ndarray, note: object = None) -> Stroke:
        """Set the whole label map to ``new_labels`` (display axes, same shape) as one undo step.

        The step is recorded even when no voxel changes (its ``note`` may still matter); it stores, per
        new value, the bounding box of the voxels that changed to it, their mask and old values.
        """
        new = np.asarray(new_labels)
        if new.shape != self.labels.shape:
            raise ValueError(f"label shape {new.shape} does not match {self.labels.shape}")
        self._current = None
        stroke = Stroke(note=note)
        changed_all = self.labels != new
        for value in np.unique(new[changed_all]):
            changed = changed_all & (new == value)
            idx = np.nonzero(changed)
            box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
            region = self.labels[box]
            mask = changed[box]
            stroke.dabs.append(_Dab(box, mask, region[mask].copy(), int(value)))
            region[mask] = value
        self._undo.append(stroke)
        del self._undo[: -self.max_undo]
        self._redo.clear()
        return stroke

    # ---- history ----------------------------------------------------------------------
    @property
    def next_undo(self) -> Stroke | None:
        """The step :meth:`undo` would revert, or None."""
        return self._undo[-1] if self._undo else None

    @property
    def next_redo(self) -> Stroke | None:
        """The step :meth:`redo` would apply again, or None."""
        return self._redo[-1] if self._redo else None

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        if not self._undo:
            return False
        stroke = self._undo.pop()
        for d in reversed(stroke.dabs):
            self.labels[d.box][d.changed] = d.old
        self._redo.append(stroke)
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        stroke = self._redo.pop()
        for d in stroke.dabs:
            self.labels[d.box][d.changed] = d.new
        self._undo.append(stroke)
        return True

    def clear_history(self) -> None:
        self._undo.clear()
        self._redo.clear()
