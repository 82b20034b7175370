"""One plane of a volume with its slice slider: the follow-up and compare windows' view (a :class:`SliceView`).

:class:`PlanePane` shows one of the axial, coronal and sagittal :class:`~seg_app.gui.slice_view.SliceView`s
of a :class:`~seg_app.gui.viewer_state.ViewerState` / :class:`~seg_app.gui.slice_view.ViewData` pair, with
a 1-based slice slider beside it, as the main window's view grid does. Two panes on two states are linked
by copying the cursor (follow-up window); a pane on the main window's state shares its crosshair (compare
window). Until its data has an image the pane shows a short note instead of an empty view.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QStackedWidget, QVBoxLayout, QWidget

from seg_app.gui import render
from seg_app.gui.slice_view import SliceView, ViewData
from seg_app.gui.viewer_state import VIEW_AXES, VIEW_NAMES, ViewerState

__all__ = ["PlanePane", "label_luts_for"]


def label_luts_for(names: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Overlay lookup tables for label values and names: BraTS colours for BraTS names, else a palette."""
    from seg_app.core.regions import BRATS_COLORS, brats_role
    from seg_app.gui.session import EXTRA_COLORS

    colors = []
    for v, name in sorted(names.items()):
        role = brats_role(str(name))
        colors.append((int(v), BRATS_COLORS[role] if role else EXTRA_COLORS[(int(v) - 1) % len(EXTRA_COLORS)]))
    return render.label_luts(colors)


class PlanePane(QWidget):
    """A title, one plane (axial, coronal or sagittal: one :class:`SliceView` each, one shown) and a slice slider.

    The pane listens to its :class:`ViewerState`; ``detach()`` stops listening (a state it does not own).
    """

    def __init__(self, title: str, state: ViewerState, data: ViewData, parent: QWidget | None = None,
                 placeholder: str = "") -> None:
        super().__init__(parent)
        self.state, self.data = state, data
        self.title = QLabel(title)
        self.title.setStyleSheet("font-weight: bold;")
        self.views = {n: SliceView(n, state, data) for n in VIEW_NAMES}
        self.stack = QStackedWidget()
        self.placeholder = QLabel(placeholder)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setStyleSheet("background: #111; color: #999;")
        self.stack.addWidget(self.placeholder)
        for v in self.views.values():
            self.stack.addWidget(v)
        self.slider = QSlider(Qt.Orientation.Vertical)
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider.valueChanged.connect(self._on_slider)
        self.plane = "axial"
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.stack, 1)
        row.addWidget(self.slider)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.title)
        col.addLayout(row, 1)
        self._listener = self._on_state
        state.connect(self._listener)
        self.sync()

    @property
    def view(self) -> SliceView:
        return self.views[self.plane]

    def set_plane(self, plane: str) -> None:
        self.plane = plane
        self.sync()

    def detach(self) -> None:
        self.state.disconnect(self._listener)

    def _on_state(self, _what: str) -> None:
        self.sync()

    def sync(self) -> None:
        """Repaint and put the slider on the crosshair's slice (1-based)."""
        shown = self.view if self.data.image is not None and self.state.geometry is not None else self.placeholder
        if self.stack.currentWidget() is not shown:
            self.stack.setCurrentWidget(shown)
        self.view.update()
        g, normal = self.state.geometry, VIEW_AXES[self.plane][0]
        self.slider.blockSignals(True)
        if g is None:
            self.slider.setRange(1, 1)
            self.slider.setEnabled(False)
        else:
            self.slider.setRange(1, g.shape[normal])
            self.slider.setValue(int(self.state.cursor[normal]) + 1)
            self.slider.setEnabled(g.shape[normal] > 1)
        self.slider.blockSignals(False)

    def _on_slider(self, value: int) -> None:
        if self.state.geometry is not None:
            c = list(self.state.cursor)
            c[VIEW_AXES[self.plane][0]] = int(value) - 1
            self.state.set_cursor(c)
