"""The 3D view: lesion surfaces in their label colours inside a see-through head surface.

Rendering is pyqtgraph's ``GLViewWidget`` (OpenGL through PyOpenGL); the meshes come ready-made from
:mod:`seg_app.core.surface` (built in a worker). Left-drag rotates, the wheel zooms, middle-drag (or
Ctrl+left-drag) pans, a click on a lesion asks to move the crosshair there (:attr:`View3D.picked`
carries the click's ray in RAS mm; the controller casts it against the label map), a double-click
resets the camera.

Without OpenGL (Qt's offscreen platform, a missing driver, ``SEG_APP_NO_3D=1``) the view shows one
sentence saying why, and the rest of the app works as before.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QLabel, QStackedLayout, QWidget

log = logging.getLogger(__name__)

__all__ = ["HEAD_RGBA", "View3D", "opengl_problem"]

#: The head surface: light skin tone, mostly transparent.
HEAD_RGBA = (0.85, 0.78, 0.70, 0.16)
#: The crosshair in 3D, as in the slice views.
CURSOR_RGBA = (0.30, 0.70, 1.0, 1.0)
_CLICK_SLOP_PX = 4  # a press and release closer than this is a click, not a rotation
_problem: list[str | None] = []  # cached answer of opengl_problem()


def opengl_problem() -> str | None:
    """None when the 3D view can render here; otherwise one sentence saying why it cannot."""
    if _problem:
        return _problem[0]
    _problem.append(_find_problem())
    if _problem[0]:
        log.info("3D view disabled: %s", _problem[0])
    return _problem[0]


def _find_problem() -> str | None:
    if os.environ.get("SEG_APP_NO_3D", "") not in ("", "0"):
        return "The 3D view is turned off (SEG_APP_NO_3D is set)."
    from PySide6.QtGui import QGuiApplication, QOffscreenSurface, QOpenGLContext

    platform = QGuiApplication.platformName()
    if platform in ("offscreen", "minimal"):
        return f"The 3D view needs OpenGL, which Qt's '{platform}' platform does not provide."
    try:
        os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
        import OpenGL.GL  # noqa: F401
        import pyqtgraph.opengl  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a missing library or libGL: say which
        return f"The 3D view needs OpenGL, which could not be loaded ({type(exc).__name__}: {exc})."
    context = QOpenGLContext()
    if not context.create():
        return "The 3D view needs OpenGL, but no OpenGL context could be created (graphics driver?)."
    surface = QOffscreenSurface()
    surface.create()
    try:
        if not context.makeCurrent(surface):
            return "The 3D view needs OpenGL, but the OpenGL context could not be used (graphics driver?)."
        major = context.format().majorVersion()
        context.doneCurrent()
    finally:
        surface.destroy()
    if major < 2:
        return f"The 3D view needs OpenGL 2 or later; this driver offers OpenGL {major}."
    return None


@functools.cache
def _canvas_class():
    """The canvas class (defined on first use: pyqtgraph.opengl imports OpenGL)."""
    from OpenGL import GL
    from PySide6.QtGui import QImage, QOffscreenSurface, QOpenGLContext, QPainter
    from PySide6.QtOpenGL import QOpenGLFramebufferObject, QOpenGLFramebufferObjectFormat
    from pyqtgraph.opengl.GLViewWidget import GLViewMixin

    class Canvas(GLViewMixin, QWidget):
        """pyqtgraph's 3D scene (camera, items, mouse) drawn into an offscreen framebuffer, shown as an image.

        Unlike a ``QOpenGLWidget``, this keeps the main window on Qt's raster backing store: the slice
        views' frames never go through OpenGL composition, which costs milliseconds with software
        OpenGL. The scene is rendered again only after a change (camera, items, size).
        """

        clicked = Signal(QPointF)
        double_clicked = Signal()

        def __init__(self) -> None:
            self._dirty = True
            super().__init__()
            self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
            self._context = QOpenGLContext(self)
            if not self._context.create():
                raise RuntimeError("no OpenGL context")
            self._surface = QOffscreenSurface(None, self)
            self._surface.setFormat(self._context.format())
            self._surface.create()
            self._fbo = None
            self._image: QImage | None = None
            self.camera_moved = False  # the user turned, panned or zoomed (no automatic framing then)
            self.renders = 0  # how many times the scene was rendered (tests, benchmarks)

        def isValid(self) -> bool:  # noqa: N802 - pyqtgraph API: items are initialised in render()
            return False

        def update(self) -> None:  # the mixin and the items call this after every change
            self._dirty = True
            super().update()

        def render(self) -> QImage | None:
            """Render the scene at the widget's size (device pixels) and return it; None if OpenGL failed."""
            ratio = self.devicePixelRatioF()
            w, h = max(1, round(self.width() * ratio)), max(1, round(self.height() * ratio))
            if not self._context.makeCurrent(self._surface):
                return None
            try:
                if self._fbo is None or (self._fbo.width(), self._fbo.height()) != (w, h):
                    fmt = QOpenGLFramebufferObjectFormat()
                    fmt.setAttachment(QOpenGLFramebufferObject.Attachment.CombinedDepthStencil)
                    # no multisampling: with software OpenGL (Mesa llvmpipe) 4x MSAA almost triples a frame's cost
                    self._fbo = QOpenGLFramebufferObject(w, h, fmt)
                self._fbo.bind()
                GL.glViewport(0, 0, w, h)
                for item in self.items:
                    if not item.isInitialized():
                        item.initialize()
                self.paint(region=(0, 0, w, h), viewport=(0, 0, w, h))
                image = self._fbo.toImage()
                self._fbo.release()
            finally:
                self._context.doneCurrent()
            image.setDevicePixelRatio(ratio)
            self.renders += 1
            return image

        def image(self) -> QImage | None:
            """The scene as last shown (rendered now if it changed)."""
            if self._dirty or self._image is None:
                self._image = self.render()
                self._dirty = False
            return self._image

        def paintEvent(self, ev) -> None:  # noqa: N802 - Qt API
            image = self.image()
            painter = QPainter(self)
            if image is None:
                painter.fillRect(self.rect(), Qt.GlobalColor.black)
            else:
                painter.drawImage(0, 0, image)
            painter.end()

        def resizeEvent(self, ev) -> None:  # noqa: N802
            self._dirty = True
            super().resizeEvent(ev)

        def mousePressEvent(self, ev) -> None:  # noqa: N802
            self._press = ev.position()
            super().mousePressEvent(ev)

        def mouseMoveEvent(self, ev) -> None:  # noqa: N802
            if ev.buttons() != Qt.MouseButton.NoButton:
                self.camera_moved = True
            super().mouseMoveEvent(ev)

        def wheelEvent(self, ev) -> None:  # noqa: N802
            self.camera_moved = True
            super().wheelEvent(ev)

        def mouseReleaseEvent(self, ev) -> None:  # noqa: N802
            press = getattr(self, "_press", None)
            self._press = None
            if (press is not None and ev.button() == Qt.MouseButton.LeftButton
                    and (ev.position() - press).manhattanLength() <= _CLICK_SLOP_PX):
                self.clicked.emit(ev.position())
            super().mouseReleaseEvent(ev)

        def mouseDoubleClickEvent(self, ev) -> None:  # noqa: N802
            self.double_clicked.emit()

        def remove_items(self, items) -> None:
            """Remove ``items`` from the scene and free their OpenGL buffers (with the context current)."""
            from PySide6.QtOpenGL import QOpenGLBuffer

            current = self._context.makeCurrent(self._surface)
            try:
                for item in items:
                    self.removeItem(item)
                    if current:
                        for value in list(vars(item).values()):
                            if isinstance(value, QOpenGLBuffer) and value.isCreated():
                                value.destroy()
            finally:
                if current:
                    self._context.doneCurrent()

    return Canvas


@functools.cache
def _headlight_shader():
    """Two-sided Lambert shading with the light at the camera (as medical 3D viewers do)."""
    from pyqtgraph.opengl import shaders

    vertex = shaders.VertexShader("""
        uniform mat4 u_mvp;
        uniform mat3 u_normal;
        attribute vec4 a_position;
        attribute vec3 a_normal;
        attribute vec4 a_color;
        varying vec4 v_color;
        varying vec3 v_normal;
        void main() {
            v_normal = normalize(u_normal * a_normal);
            v_color = a_color;
            gl_Position = u_mvp * a_position;
        }
    """)
    fragment = shaders.FragmentShader("""
        #ifdef GL_ES
        precision mediump float;
        #endif
        varying vec4 v_color;
        varying vec3 v_normal;
        void main() {
            float lambert = abs(normalize(v_normal).z);
            gl_FragColor = vec4(v_color.rgb * (0.35 + 0.65 * lambert), v_color.a);
        }
    """)
    return shaders.ShaderProgram("seg_app_headlight", [vertex, fragment])


@functools.cache
def _see_through_mesh_class():
    """A ``GLMeshItem`` that does not write depth: its far and near sides, and what lies inside, all show."""
    import pyqtgraph.opengl as gl
    from OpenGL import GL

    class SeeThroughMesh(gl.GLMeshItem):
        def paint(self) -> None:
            GL.glDepthMask(GL.GL_FALSE)
            try:
                super().paint()
            finally:
                GL.glDepthMask(GL.GL_TRUE)  # the next frame's clear must reset the depth buffer

    return SeeThroughMesh


class View3D(QWidget):
    """Head and lesion surfaces with the crosshair; a message instead when OpenGL is missing.

    Signals:
        picked(origin_mm, direction_mm): a click; the ray through the clicked pixel, RAS mm.
    """

    picked = Signal(object, object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("view3d")
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setStyleSheet("background: #111; color: #ccc; padding: 8px;")
        self._stack = QStackedLayout(self)
        self._stack.addWidget(self.message)
        self.canvas = None
        self._head_item = None
        self._lesion_items: list = []
        self._cursor_item = None
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None
        self.problem = opengl_problem()
        if self.problem is None:
            try:
                self._make_canvas()
            except Exception as exc:  # noqa: BLE001 - never let the 3D view break the window
                log.warning("3D view disabled", exc_info=True)
                self.problem = f"The 3D view could not start ({type(exc).__name__}: {exc})."
        self.set_message(self.problem or "Open a scan to see its 3D surfaces.")

    def sizeHint(self):  # noqa: N802 - Qt API: modest, the tools above it come first
        from PySide6.QtCore import QSize

        return QSize(280, 200)

    @property
    def available(self) -> bool:
        """True when OpenGL works and the canvas exists."""
        return self.canvas is not None

    def _make_canvas(self) -> None:
        import pyqtgraph.opengl as gl

        self.canvas = _canvas_class()()
        self.canvas.setBackgroundColor((17, 17, 17))
        self.canvas.setMinimumSize(120, 60)
        self.canvas.clicked.connect(self._on_click)
        self.canvas.double_clicked.connect(self.reset_camera)
        self.canvas.setToolTip("3D: drag to rotate, wheel to zoom, middle-drag to pan, click a lesion to go there, "
                               "double-click to reset")
        self._cursor_item = gl.GLLinePlotItem(pos=np.zeros((6, 3), np.float32), color=CURSOR_RGBA, width=2.0,
                                              mode="lines", antialias=True, glOptions="additive")
        self._cursor_item.setDepthValue(20)
        self._cursor_item.setVisible(False)
        self.canvas.addItem(self._cursor_item)
        self._stack.addWidget(self.canvas)

    def set_message(self, text: str) -> None:
        """Show ``text`` instead of the 3D canvas (kept as the canvas's fallback when OpenGL is missing)."""
        self.message.setText(text)
        self._stack.setCurrentWidget(self.message)

    def _show_canvas(self) -> None:
        if self.canvas is not None:
            self._stack.setCurrentWidget(self.canvas)

    # ---- content
    def clear(self, message: str = "Open a scan to see its 3D surfaces.") -> None:
        """Remove every surface (a new scan is coming)."""
        self.set_head(None)
        self.set_lesions([], {})
        self._bounds = None
        if self.canvas is not None and self._cursor_item is not None:
            self._cursor_item.setVisible(False)
        self.set_message(self.problem or message)

    def _mesh_item(self, mesh, rgba, shader, gl_options, see_through: bool = False):
        import pyqtgraph.opengl as gl

        data = gl.MeshData(vertexes=mesh.vertices_mm, faces=mesh.faces)
        data._vertexNormals = mesh.normals  # noqa: SLF001 - pyqtgraph computes these in a Python loop
        cls = _see_through_mesh_class() if see_through else gl.GLMeshItem
        return cls(meshdata=data, color=rgba, shader=shader, smooth=True, glOptions=gl_options)

    def set_head(self, mesh) -> None:
        """The head surface (a :class:`~seg_app.core.surface.SurfaceMesh`, or None), drawn see-through."""
        if self.canvas is None:
            return
        from OpenGL import GL

        if self._head_item is not None:
            self.canvas.remove_items([self._head_item])
            self._head_item = None
        if mesh is not None:
            options = {GL.GL_DEPTH_TEST: True, GL.GL_BLEND: True, GL.GL_CULL_FACE: False,
                       # the framebuffer's alpha stays 1: the window composes the canvas as opaque
                       "glBlendFuncSeparate": (GL.GL_SRC_ALPHA, GL.GL_ONE_MINUS_SRC_ALPHA, GL.GL_ONE,
                                               GL.GL_ONE_MINUS_SRC_ALPHA)}
            self._head_item = self._mesh_item(mesh, HEAD_RGBA, "balloon", options, see_through=True)
            self._head_item.setDepthValue(10)  # after the opaque lesions: they show through it
            self.canvas.addItem(self._head_item)
            first = self._bounds is None
            self._bounds = mesh.bounds_mm
            if first:
                self.reset_camera()
            self._show_canvas()
        self.canvas.update()

    def set_lesions(self, meshes, colors: dict[int, tuple[int, int, int]]) -> None:
        """Lesion surfaces, one per label value, each in its label's colour (``colors``: value -> RGB 0-255)."""
        if self.canvas is None:
            return
        old, self._lesion_items = self._lesion_items, []
        self.canvas.remove_items(old)
        for mesh in meshes:
            rgb = colors.get(mesh.value, (230, 60, 60))
            item = self._mesh_item(mesh, (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255, 1.0), _headlight_shader(), "opaque")
            self._lesion_items.append(item)
            self.canvas.addItem(item)
        if meshes and self._bounds is None:
            lo = np.min([m.bounds_mm[0] for m in meshes], axis=0)
            hi = np.max([m.bounds_mm[1] for m in meshes], axis=0)
            self._bounds = (lo, hi)
            self.reset_camera()
        if meshes:
            self._show_canvas()
        self.canvas.update()

    def set_cursor(self, ras_mm, size_mm: float = 12.0) -> None:
        """Draw the crosshair (three short axis-aligned lines) at ``ras_mm``; None hides it."""
        if self.canvas is None or self._cursor_item is None:
            return
        if ras_mm is None:
            self._cursor_item.setVisible(False)
        else:
            c = np.asarray(ras_mm, np.float32)
            h = size_mm / 2
            pts = np.array([c - [h, 0, 0], c + [h, 0, 0], c - [0, h, 0], c + [0, h, 0], c - [0, 0, h], c + [0, 0, h]],
                           np.float32)
            self._cursor_item.setData(pos=pts)
            self._cursor_item.setVisible(True)
        self.canvas.update()

    # ---- camera
    def reset_camera(self) -> None:
        """Look at the head (or the lesions) from the front, the patient's left and a little above (left anterior oblique)."""
        if self.canvas is None or self._bounds is None:
            return
        from PySide6.QtGui import QVector3D

        lo, hi = self._bounds
        centre = (np.asarray(lo) + np.asarray(hi)) / 2
        radius = 0.6 * float(np.max(np.asarray(hi) - np.asarray(lo)))  # the largest extent, with a margin
        # pyqtgraph's fov is horizontal: fit the bounding sphere in the narrower of the two angles
        fov_h = math.radians(float(self.canvas.opts.get("fov", 60)))
        aspect = max(self.canvas.height(), 1) / max(self.canvas.width(), 1)
        half = min(fov_h, 2 * math.atan(math.tan(fov_h / 2) * aspect)) / 2
        distance = max(radius, 1.0) / math.sin(half)
        self.canvas.setCameraPosition(pos=QVector3D(*[float(x) for x in centre]), distance=distance,
                                      elevation=20, azimuth=135)
        self.canvas.camera_moved = False

    def resizeEvent(self, ev) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        if self.canvas is not None and not self.canvas.camera_moved:
            self.reset_camera()  # keep the whole head in view until the user turns or zooms it

    def camera_ray(self, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
        """The ray (origin, direction) in RAS mm through widget pixel ``(x, y)`` (logical pixels)."""
        c = self.canvas
        w, h = max(c.width(), 1), max(c.height(), 1)
        proj = c.projectionMatrix((0, 0, w, h), (0, 0, w, h))
        inv = np.linalg.inv(_matrix(proj) @ _matrix(c.viewMatrix()))
        ndc_x, ndc_y = 2.0 * x / w - 1.0, 1.0 - 2.0 * y / h
        near = inv @ np.array([ndc_x, ndc_y, -1.0, 1.0])
        far = inv @ np.array([ndc_x, ndc_y, 1.0, 1.0])
        near, far = near[:3] / near[3], far[:3] / far[3]
        return near, far - near

    def _on_click(self, pos: QPointF) -> None:
        origin, direction = self.camera_ray(pos.x(), pos.y())
        self.picked.emit(origin, direction)


def _matrix(m) -> np.ndarray:
    """A ``QMatrix4x4`` as a numpy 4 x 4 array (row-major)."""
    return np.array(m.data(), np.float64).reshape(4, 4).T
