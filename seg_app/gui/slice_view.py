"""One 2D view (axial, coronal or sagittal) of the display-oriented volume with overlays and crosshair.

Rendering: the plane is cut from the display array (a numpy view), windowed to an opaque ARGB32 grey
layer, and the label / heat-map overlays become premultiplied ARGB32 layers by table lookups
(:mod:`seg_app.gui.render`); each layer is wrapped in a ``QImage`` without a copy and cached until its
inputs change. Qt scales them with nearest-neighbour sampling to the physical aspect ratio (pixel size
from the voxel spacing) and blends the overlays while drawing.

Mouse: left click/drag moves the crosshair (or paints with the brush tools); wheel changes slice;
Ctrl+wheel zooms about the mouse; middle-drag pans; right-drag changes window (horizontal) and level
(vertical); double-click maximises the view. Keys: Up/Right and Down/Left step one slice, PageUp/PageDown
ten slices, Home resets zoom and pan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QGuiApplication, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from seg_app.gui import render
from seg_app.gui.viewer_state import (
    VIEW_AXES,
    VIEW_EDGE_LABELS,
    ViewerState,
    display_to_screen,
    plane_shape,
    screen_to_display,
    slice_caption,
    view_plane,
)


@dataclass
class ViewData:
    """Arrays the views show, all display-oriented ``(X, Y, Z)`` views of the source grids."""

    image: np.ndarray | None = None  # current channel
    labels: np.ndarray | None = None
    probability: np.ndarray | None = None
    lut_rgb: np.ndarray | None = None
    lut_visible: np.ndarray | None = None
    labels_version: int = 0  # bump after every edit so cached frames are redrawn
    #: patient overlay: (top-left lines, top-right lines), ``PatientInfo.overlay_corners``
    patient_corners: tuple[list[str], list[str]] = ([], [])
    #: RECIST calipers of the selected lesion (``seg_app.gui.calipers.Calipers``), drawn in the axial view
    calipers: object = None


CROSSHAIR_COLOR = QColor(80, 200, 255, 170)
TEXT_COLOR = QColor(255, 230, 120)
CALIPER_LONG_COLOR = QColor(255, 60, 255)  # magenta: unlike the cyan crosshair and the label colours
CALIPER_SHORT_COLOR = QColor(255, 150, 0)


def _qimage(array: np.ndarray | None, fmt: QImage.Format) -> QImage | None:
    """Wrap a C-contiguous ``uint32 (rows, cols)`` array without copying (the caller keeps it alive)."""
    if array is None:
        return None
    h, w = array.shape
    return QImage(array.data, w, h, 4 * w, fmt)


class SliceView(QWidget):
    """A view of one plane. Signals carry display voxel indices (``np.ndarray`` of 3 floats).

    Signals:
        hovered(object): display ijk under the mouse, or None when outside the image.
        stroke(str, object): brush phases "begin" / "move" / "end" with display ijk (tools paint/erase).
        maximize_requested(): double-click (the crosshair stays where it was before the double-click).
    """

    hovered = Signal(object)
    stroke = Signal(str, object)
    maximize_requested = Signal()

    def __init__(self, name: str, state: ViewerState, data: ViewData, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        assert name in VIEW_AXES
        self.name = name
        self.state = state
        self.data = data
        self.zoom = 1.0
        self.pan = QPointF(0.0, 0.0)
        self.tool = "navigate"  # "navigate" | "paint" | "erase"
        self.brush_radius_mm = 5.0
        self.oblique_note = ""
        self._drag: str | None = None
        self._presses: list[tuple[int, tuple]] = []  # (timestamp ms, crosshair before the press): last few clicks
        self._last_pos = QPointF()
        self._mouse_pos: QPointF | None = None
        self._base_key: tuple | None = None
        self._heat_key: tuple | None = None
        self._labels_key: tuple | None = None
        self._lut_key: tuple | None = None
        self._base = self._heat = self._labels = self._lut32 = None
        self._base_img = self._heat_img = self._labels_img = None
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(120, 120)
        self.setAutoFillBackground(False)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    # ---- geometry --------------------------------------------------------------------
    @property
    def normal(self) -> int:
        return VIEW_AXES[self.name][0]

    def _plane_spacing(self) -> tuple[float, float]:
        """(row spacing, column spacing) in mm."""
        g = self.state.geometry
        _n, h, _fh, v, _fv = VIEW_AXES[self.name]
        sp = g.spacing if g is not None else (1.0, 1.0, 1.0)
        return sp[v], sp[h]

    def image_rect(self) -> QRectF:
        """Where the plane is drawn, in widget coordinates (physical aspect ratio)."""
        g = self.state.geometry
        if g is None:
            return QRectF()
        rows, cols = plane_shape(g.shape, self.name)
        sv, sh = self._plane_spacing()
        w_mm, h_mm = cols * sh, rows * sv
        margin = 4.0
        fit = min((self.width() - 2 * margin) / w_mm, (self.height() - 2 * margin) / h_mm)
        ppm = max(fit, 1e-6) * self.zoom
        w, h = w_mm * ppm, h_mm * ppm
        return QRectF((self.width() - w) / 2 + self.pan.x(), (self.height() - h) / 2 + self.pan.y(), w, h)

    def pixels_per_mm(self) -> float:
        g = self.state.geometry
        if g is None:
            return 1.0
        _rows, cols = plane_shape(g.shape, self.name)
        return self.image_rect().width() / (cols * self._plane_spacing()[1])

    def widget_to_display(self, pos: QPointF) -> np.ndarray | None:
        """Continuous display ijk under a widget position (None outside the image)."""
        g = self.state.geometry
        if g is None:
            return None
        rect = self.image_rect()
        rows, cols = plane_shape(g.shape, self.name)
        col = (pos.x() - rect.x()) / rect.width() * cols - 0.5
        row = (pos.y() - rect.y()) / rect.height() * rows - 0.5
        if not (-0.5 <= col < cols - 0.5 and -0.5 <= row < rows - 0.5):
            return None
        return screen_to_display(self.name, g.shape, self.state.cursor[self.normal], row, col)

    def display_to_widget(self, ijk) -> QPointF:
        g = self.state.geometry
        rect = self.image_rect()
        rows, cols = plane_shape(g.shape, self.name)
        row, col = display_to_screen(self.name, g.shape, ijk)
        return QPointF(rect.x() + (col + 0.5) / cols * rect.width(), rect.y() + (row + 0.5) / rows * rect.height())

    def reset_view(self) -> None:
        self.zoom = 1.0
        self.pan = QPointF(0.0, 0.0)
        self.update()

    # ---- rendering -------------------------------------------------------------------
    def _layers(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
        """The current plane as ARGB32 layers: opaque grey base, heat map, labels (each cached)."""
        d, s = self.data, self.state
        if d.image is None or s.geometry is None:
            return None
        index = s.cursor[self.normal]
        ov = s.overlay
        key = (id(d.image), index, s.window, s.level)
        if key != self._base_key:
            gray = render.window_to_uint8(view_plane(d.image, self.name, index), s.window, s.level)
            self._base = render.gray_to_rgb32(gray)
            self._base_img = _qimage(self._base, QImage.Format.Format_RGB32)
            self._base_key = key
        show_heat = d.probability is not None and ov.visible and ov.heatmap
        key = (id(d.probability), index, ov.heatmap_opacity) if show_heat else None
        if key != self._heat_key:
            self._heat = None
            if show_heat:
                lut = render.heat_lut32(ov.heatmap_opacity)
                self._heat = render.heat_layer(view_plane(d.probability, self.name, index), lut)
            self._heat_img = _qimage(self._heat, QImage.Format.Format_ARGB32_Premultiplied)
            self._heat_key = key
        show_labels = d.labels is not None and ov.visible and ov.opacity > 0
        key = (id(d.labels), d.labels_version, index, ov.opacity, ov.outline, id(d.lut_rgb)) if show_labels else None
        if key != self._labels_key:
            self._labels = None
            if show_labels:
                lut_rgb, lut_vis = (d.lut_rgb, d.lut_visible) if d.lut_rgb is not None else render.label_luts(())
                alpha = min(1.0, 0.35 + ov.opacity) if ov.outline else ov.opacity
                lut_key = (id(lut_rgb), alpha)
                if lut_key != self._lut_key:
                    self._lut32 = render.label_lut32(lut_rgb, lut_vis, alpha)
                    self._lut_key = lut_key
                self._labels = render.labels_layer(view_plane(d.labels, self.name, index), self._lut32, ov.outline)
            self._labels_img = _qimage(self._labels, QImage.Format.Format_ARGB32_Premultiplied)
            self._labels_key = key
        return self._base, self._heat, self._labels

    def render_rgb(self) -> np.ndarray | None:
        """The current plane as composited RGB ``(rows, cols, 3) uint8`` (tests, exports)."""
        layers = self._layers()
        return None if layers is None else render.composite_rgb(*layers)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), Qt.GlobalColor.black)
        if self._layers() is None:
            p.setPen(QColor(150, 150, 150))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, f"{self.name.capitalize()}\n\nOpen a scan (File > Open) or drop it here")
            p.end()
            return
        rect = self.image_rect()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        for img in (self._base_img, self._heat_img, self._labels_img):
            if img is not None:  # Qt scales (nearest) and blends the premultiplied overlays
                p.drawImage(rect, img, QRectF(0, 0, img.width(), img.height()))
        self._paint_crosshair(p, rect)
        self._paint_calipers(p)
        self._paint_labels(p)
        if self.tool in ("paint", "erase") and self._mouse_pos is not None:
            r = self.brush_radius_mm * self.pixels_per_mm()
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            p.setPen(QPen(QColor(255, 255, 255, 200) if self.tool == "paint" else QColor(255, 120, 120, 220), 1.2))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawEllipse(self._mouse_pos, r, r)
        if self.hasFocus():
            p.setPen(QPen(QColor(80, 200, 255, 120), 2))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(self.rect().adjusted(1, 1, -1, -1))
        p.end()

    def _paint_crosshair(self, p: QPainter, rect: QRectF) -> None:
        c = self.display_to_widget(self.state.cursor)
        p.setPen(QPen(CROSSHAIR_COLOR, 1))
        gap = 6.0
        left, right = max(rect.left(), 0.0), min(rect.right(), float(self.width()))
        top, bottom = max(rect.top(), 0.0), min(rect.bottom(), float(self.height()))
        p.drawLine(QPointF(left, c.y()), QPointF(c.x() - gap, c.y()))
        p.drawLine(QPointF(c.x() + gap, c.y()), QPointF(right, c.y()))
        p.drawLine(QPointF(c.x(), top), QPointF(c.x(), c.y() - gap))
        p.drawLine(QPointF(c.x(), c.y() + gap), QPointF(c.x(), bottom))

    def caliper_segments(self) -> list[tuple[QPointF, QPointF, float]]:
        """Widget-space (start, end, mm) of the calipers drawn now (axial view, on the measured slice)."""
        cal = self.data.calipers
        if cal is None or self.name != "axial" or self.state.geometry is None or self.state.cursor[2] != cal.display_slice:
            return []
        out = [(self.display_to_widget(cal.long_ends[0]), self.display_to_widget(cal.long_ends[1]), cal.long_mm)]
        if cal.short_ends is not None:
            out.append((self.display_to_widget(cal.short_ends[0]), self.display_to_widget(cal.short_ends[1]), cal.short_mm))
        return out

    def _paint_calipers(self, p: QPainter) -> None:
        segments = self.caliper_segments()
        if not segments:
            return
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        font = QFont(self.font())
        font.setBold(True)
        p.setFont(font)
        for (a, b, mm), color in zip(segments, (CALIPER_LONG_COLOR, CALIPER_SHORT_COLOR)):
            p.setPen(QPen(color, 1.6))
            p.drawLine(a, b)
            d = b - a
            n = (d.x() ** 2 + d.y() ** 2) ** 0.5 or 1.0
            tick = QPointF(-d.y() / n * 4, d.x() / n * 4)  # end ticks perpendicular to the line
            for end in (a, b):
                p.drawLine(end - tick, end + tick)
            label = f"{mm:.1f} mm"
            # just beyond the right-hand end, along the line: the end points stay visible
            end, other = (b, a) if b.x() >= a.x() else (a, b)
            out = QPointF((end - other).x() / n, (end - other).y() / n)
            at = end + out * 8 + QPointF(0, 4)
            p.setPen(QColor(0, 0, 0, 200))
            p.drawText(at + QPointF(1, 1), label)
            p.setPen(color)
            p.drawText(at, label)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)

    def overlay_text(self) -> dict[str, list[str]]:
        """Corner texts of the view: ``top_left`` / ``top_right`` (patient, study), ``bottom_left``
        (slice, window/level, zoom), ``bottom_right`` (oblique note)."""
        g = self.state.geometry
        left, right = self.data.patient_corners
        bottom = [slice_caption(self.name, self.state.cursor, g.shape) if g is not None else self.name.capitalize()]
        if self.name == "axial":
            bottom.append(f"W {self.state.window:.0f}  L {self.state.level:.0f}")
        if self.zoom != 1.0:
            bottom[0] += f"  x{self.zoom:.2g}"
        return {"top_left": list(left), "top_right": list(right), "bottom_left": bottom,
                "bottom_right": [self.oblique_note] if self.oblique_note else []}

    def _paint_labels(self, p: QPainter) -> None:
        font = QFont(self.font())
        font.setPointSizeF(max(9.0, font.pointSizeF()))
        font.setBold(True)
        p.setFont(font)
        p.setPen(TEXT_COLOR)
        left, right, top, bottom = VIEW_EDGE_LABELS[self.name]
        w, h = self.width(), self.height()
        m = 6
        p.drawText(QRectF(m, 0, 30, h), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, left)
        p.drawText(QRectF(w - 30 - m, 0, 30, h), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, right)
        p.drawText(QRectF(0, m, w, 20), Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, top)
        p.drawText(QRectF(0, h - 20 - m, w, 20), Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom, bottom)
        font.setBold(False)
        if self.width() < 320:  # small views: smaller corner text, so it stays clear of the image
            font.setPointSizeF(max(7.0, font.pointSizeF() - 1.5))
        p.setFont(font)
        line = p.fontMetrics().height()
        text = self.overlay_text()
        half = w / 2 - 2 * m
        flags = {"top_left": Qt.AlignmentFlag.AlignLeft, "top_right": Qt.AlignmentFlag.AlignRight,
                 "bottom_left": Qt.AlignmentFlag.AlignLeft, "bottom_right": Qt.AlignmentFlag.AlignRight}
        for corner, lines in text.items():
            x = m if corner.endswith("left") else w / 2 + m
            for n, s in enumerate(lines):
                y = m + n * line if corner.startswith("top") else h - m - (len(lines) - n) * line
                color = QColor(255, 170, 60) if corner == "bottom_right" else QColor(225, 225, 225)
                elided = p.fontMetrics().elidedText(s, Qt.TextElideMode.ElideRight, int(half))
                p.setPen(QColor(0, 0, 0, 190))  # shadow: readable on bright tissue
                p.drawText(QRectF(x + 1, y + 1, half, line), flags[corner] | Qt.AlignmentFlag.AlignTop, elided)
                p.setPen(color)
                p.drawText(QRectF(x, y, half, line), flags[corner] | Qt.AlignmentFlag.AlignTop, elided)

    # ---- interaction -----------------------------------------------------------------
    def _set_cursor_from(self, pos: QPointF) -> None:
        ijk = self.widget_to_display(pos)
        if ijk is not None:
            self.state.set_cursor(ijk)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self.setFocus()
        self._presses = [*self._presses[-2:], (int(event.timestamp()), tuple(self.state.cursor))]
        pos = event.position()
        self._last_pos = pos
        btn = event.button()
        if btn == Qt.MouseButton.LeftButton:
            if self.tool in ("paint", "erase") and not (event.modifiers() & Qt.KeyboardModifier.ShiftModifier):
                ijk = self.widget_to_display(pos)
                if ijk is not None:
                    self._drag = "paint"
                    self.stroke.emit("begin", ijk)
            else:
                self._drag = "cursor"
                self._set_cursor_from(pos)
        elif btn == Qt.MouseButton.MiddleButton:
            self._drag = "pan"
        elif btn == Qt.MouseButton.RightButton:
            self._drag = "window"
        event.accept()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        pos = event.position()
        self._mouse_pos = pos
        delta = pos - self._last_pos
        self._last_pos = pos
        ijk = self.widget_to_display(pos)
        if self._drag == "cursor":
            self._set_cursor_from(pos)
        elif self._drag == "paint":
            if ijk is not None:
                self.stroke.emit("move", ijk)
        elif self._drag == "pan":
            self.pan += delta
        elif self._drag == "window":
            s = self.state
            step = max(s.window, 1.0) * 0.005
            s.set_window(max(1e-3, s.window + delta.x() * step), s.level - delta.y() * step)
        self.hovered.emit(ijk)
        self.update()

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._drag == "paint":
            self.stroke.emit("end", self.widget_to_display(event.position()))
        self._drag = None
        event.accept()

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton and self.tool == "navigate":
            self._drag = None
            # the first click of the double-click moved the crosshair: put it back where it was before
            interval = QGuiApplication.styleHints().mouseDoubleClickInterval()
            before = [c for t, c in self._presses if 0 <= int(event.timestamp()) - t <= interval]
            if before:
                self.state.set_cursor(before[0])
            self.maximize_requested.emit()
        event.accept()

    def leaveEvent(self, event) -> None:  # noqa: N802
        self._mouse_pos = None
        self.hovered.emit(None)
        self.update()

    def enterEvent(self, event) -> None:  # noqa: N802
        self.setFocus()

    def wheelEvent(self, event) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if steps == 0:
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom_about(event.position(), 1.15**steps)
        else:
            self.state.step_slice(self.name, int(np.sign(steps) * max(1, round(abs(steps)))))
        event.accept()

    def zoom_about(self, pos: QPointF, factor: float) -> None:
        """Zoom by ``factor`` keeping the image point under ``pos`` fixed."""
        rect = self.image_rect()
        if rect.width() <= 0:
            return
        fx = (pos.x() - rect.x()) / rect.width()
        fy = (pos.y() - rect.y()) / rect.height()
        self.zoom = float(min(max(self.zoom * factor, 0.25), 40.0))
        new = self.image_rect()
        # shift so the same relative image point lies under the mouse again
        self.pan += QPointF(pos.x() - (new.x() + fx * new.width()), pos.y() - (new.y() + fy * new.height()))
        self.update()

    def keyPressEvent(self, event) -> None:  # noqa: N802
        key = event.key()
        steps = {
            Qt.Key.Key_Up: 1, Qt.Key.Key_Right: 1, Qt.Key.Key_Down: -1, Qt.Key.Key_Left: -1,
            Qt.Key.Key_PageUp: 10, Qt.Key.Key_PageDown: -10,
        }
        if key in steps:
            self.state.step_slice(self.name, steps[key])
        elif key == Qt.Key.Key_Home:
            self.reset_view()
        else:
            super().keyPressEvent(event)
