"""Widget groups of the main window: the view grid, the tools panel, the lesion dock and the menus.

Panels only build and lay out widgets; the window connects their signals to the session and the
controllers (see :mod:`seg_app.gui.main_window`).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from seg_app.gui.lesion_table import LesionTable
from seg_app.gui.slice_view import SliceView, ViewData
from seg_app.gui.viewer_state import PRESETS, VIEW_NAMES, ViewerState

TOOLS = (("navigate", "Navigate", "N"), ("paint", "Paint", "B"), ("erase", "Erase", "E"))


class ViewGrid(QWidget):
    """The out-of-distribution banner above three linked views: axial (large, left), coronal, sagittal."""

    def __init__(self, state: ViewerState, data: ViewData) -> None:
        super().__init__()
        self.views: dict[str, SliceView] = {n: SliceView(n, state, data) for n in VIEW_NAMES}
        central = QWidget()
        grid = QGridLayout(central)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        grid.addWidget(self.views["axial"], 0, 0, 2, 1)
        grid.addWidget(self.views["coronal"], 0, 1)
        grid.addWidget(self.views["sagittal"], 1, 1)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        central.setStyleSheet("background: #111;")
        # out-of-distribution banner above the views (hidden until a result says the scan does not fit the model)
        self.domain_banner = QLabel()
        self.domain_banner.setWordWrap(True)
        self.domain_banner.setStyleSheet("background: #7a5a00; color: white; padding: 4px; font-weight: bold;")
        self.domain_banner.setVisible(False)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.domain_banner)
        col.addWidget(central, 1)
        self.views_widget = central  # the three views only (screenshots)
        self._maximised: str | None = None

    def toggle_maximise(self, name: str) -> None:
        """Show one view alone, or all three again."""
        self._maximised = None if self._maximised == name else name
        for n, v in self.views.items():
            v.setVisible(self._maximised in (None, n))
        self.views[name].setFocus()

    def toggle_maximise_focused(self) -> None:
        focused = next((n for n, v in self.views.items() if v.hasFocus()), None)
        self.toggle_maximise(focused or self._maximised or "axial")

    def reset_views(self) -> None:
        for v in self.views.values():
            v.reset_view()

    def update_views(self) -> None:
        for v in self.views.values():
            v.update()

    def show_domain_warnings(self, sentences: list[str]) -> None:
        self.domain_banner.setText("\n".join(f"\u26a0 {w}" for w in sentences))
        self.domain_banner.setVisible(bool(sentences))


class ToolsPanel(QWidget):
    """The right-hand panel: Scan, Segment, Display and Edit groups and the research-use disclaimer."""

    def __init__(self, initial_opacity: float) -> None:
        super().__init__()
        col = QVBoxLayout(self)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self._scan_box())
        col.addWidget(self._segment_box())
        col.addWidget(self._display_box(initial_opacity))
        col.addWidget(self._edit_box())
        col.addStretch(1)
        self.disclaimer = QLabel("Research use only — not for clinical diagnosis.")
        self.disclaimer.setStyleSheet("color: #a33; font-weight: bold;")
        self.disclaimer.setWordWrap(True)
        col.addWidget(self.disclaimer)
        self.setMinimumWidth(300)

    def _scan_box(self) -> QGroupBox:
        box = QGroupBox("Scan")
        form = QFormLayout(box)
        self.scan_info = QLabel("No scan open.")
        self.scan_info.setWordWrap(True)
        self.scan_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.scan_info)
        self.channel_combo = QComboBox()
        form.addRow("Channel", self.channel_combo)
        return box

    def _segment_box(self) -> QGroupBox:
        box = QGroupBox("Segment")
        lay = QVBoxLayout(box)
        self.model_info = QLabel("Loading the bundled model...")
        self.model_info.setWordWrap(True)
        lay.addWidget(self.model_info)
        row = QHBoxLayout()
        self.device_combo = QComboBox()
        for text, dev in (("Auto", "auto"), ("CPU", "cpu"), ("GPU", "cuda")):
            self.device_combo.addItem(text, dev)
        self.device_combo.setToolTip("Where the network runs (Auto: GPU when available)")
        self.tta_check = QCheckBox("TTA")
        self.tta_check.setToolTip("Test-time augmentation (flips): slower, smoother, gives an agreement map")
        row.addWidget(QLabel("Device"))
        row.addWidget(self.device_combo, 1)
        row.addWidget(self.tta_check)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.segment_button = QPushButton("Segment")
        self.segment_button.setToolTip("Run the model on the open scan (Ctrl+R)")
        self.cancel_button = QPushButton("Cancel")
        row.addWidget(self.segment_button, 2)
        row.addWidget(self.cancel_button, 1)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        lay.addWidget(self.progress)
        self.progress_label = QLabel("")
        lay.addWidget(self.progress_label)
        return box

    def _display_box(self, initial_opacity: float) -> QGroupBox:
        box = QGroupBox("Display")
        form = QFormLayout(box)
        self.preset_combo = QComboBox()
        for name in PRESETS:
            self.preset_combo.addItem(name)
        form.addRow("Window", self.preset_combo)
        self.overlay_check = QCheckBox("Show mask")
        self.overlay_check.setChecked(True)
        self.overlay_check.setShortcut(QKeySequence("S"))
        self.outline_check = QCheckBox("Outline")
        self.heatmap_check = QCheckBox("Probability")
        self.heatmap_check.setToolTip("Heat map of the model's foreground probability")
        row = QHBoxLayout()
        row.addWidget(self.overlay_check)
        row.addWidget(self.outline_check)
        row.addWidget(self.heatmap_check)
        form.addRow(row)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(int(initial_opacity * 100))
        form.addRow("Opacity", self.opacity_slider)
        return box

    def _edit_box(self) -> QGroupBox:
        box = QGroupBox("Edit")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: dict[str, QToolButton] = {}
        for tool, text, key in TOOLS:
            b = QToolButton()
            b.setText(text)
            b.setCheckable(True)
            b.setShortcut(QKeySequence(key))
            b.setToolTip(f"{text} ({key})")
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            self.tool_group.addButton(b)
            self.tool_buttons[tool] = b
            row.addWidget(b)
        self.tool_buttons["navigate"].setChecked(True)
        form.addRow(row)
        self.label_combo = QComboBox()
        form.addRow("Label", self.label_combo)
        self.radius_spin = QDoubleSpinBox()
        self.radius_spin.setRange(0.5, 50.0)
        self.radius_spin.setSingleStep(0.5)
        self.radius_spin.setValue(5.0)
        self.radius_spin.setSuffix(" mm")
        self.sphere_check = QCheckBox("3D sphere")
        self.sphere_check.setToolTip("Paint a sphere through neighbouring slices instead of a disc in the view's plane")
        row = QHBoxLayout()
        row.addWidget(self.radius_spin)
        row.addWidget(self.sphere_check)
        form.addRow("Radius", row)
        row = QHBoxLayout()
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        row.addWidget(self.undo_button)
        row.addWidget(self.redo_button)
        form.addRow(row)
        return box

    def set_label_choices(self, specs: list[tuple[int, str, tuple[int, int, int]]]) -> None:
        """Fill the paint-label choice from ``(value, name, rgb)``, keeping the current value when present."""
        current = self.label_combo.currentData()
        self.label_combo.clear()
        for value, name, _c in specs:
            self.label_combo.addItem(f"{value}: {name}", value)
        i = self.label_combo.findData(current)
        self.label_combo.setCurrentIndex(max(i, 0))


def add_docks(window: QMainWindow, tools: ToolsPanel, table: LesionTable) -> tuple[QDockWidget, QDockWidget]:
    """Put the tools panel (scrollable, right) and the lesion table (bottom) in docks of ``window``."""
    scroll = QScrollArea()
    scroll.setWidget(tools)
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    tools_dock = QDockWidget("Tools", window)
    tools_dock.setObjectName("tools_dock")
    tools_dock.setWidget(scroll)
    tools_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, tools_dock)
    lesion_dock = QDockWidget("Lesions", window)
    lesion_dock.setObjectName("lesion_dock")
    lesion_dock.setWidget(table)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, lesion_dock)
    window.resizeDocks([lesion_dock], [190], Qt.Orientation.Vertical)
    return tools_dock, lesion_dock


class Menus:
    """The menu bar's actions; ``win`` provides the slots (the window and its controllers)."""

    def __init__(self, win) -> None:
        self._win = win
        tools, exporter = win.tools, win.exporter
        mb = win.menuBar()
        m = mb.addMenu("&File")
        self._action(m, "&Open scan...", win.open_scan_dialog, QKeySequence.StandardKey.Open, "Open a NIfTI file or a DICOM file")
        self._action(m, "Open DICOM &folder...", win.open_folder_dialog, "Ctrl+Shift+O")
        self.recent_menu: QMenu = m.addMenu("Recent files")
        m.addSeparator()
        self.act_save_mask = self._action(m, "&Save mask as NIfTI...", exporter.save_mask_dialog, QKeySequence.StandardKey.Save)
        self.act_save_seg = self._action(m, "Save mask as &DICOM SEG...", exporter.save_seg_dialog, "Ctrl+Alt+S",
                                         "DICOM Segmentation referencing the source series (DICOM scans only)")
        self.act_save_meas = self._action(m, "Save &measurements (CSV/JSON)...", exporter.save_measurements_dialog, "Ctrl+Shift+S")
        self.act_save_shot = self._action(m, "Save screens&hot (PNG)...", exporter.save_screenshot_dialog, "Ctrl+P")
        m.addSeparator()
        self._action(m, "&Quit", win.close, QKeySequence.StandardKey.Quit)

        m = mb.addMenu("&Edit")
        self.act_undo = self._action(m, "&Undo", win.undo, QKeySequence.StandardKey.Undo)
        self.act_redo = self._action(m, "&Redo", win.redo, "Ctrl+Shift+Z")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        m.addSeparator()
        for text, tool in (("Navigate", "navigate"), ("Paint brush", "paint"), ("Erase brush", "erase")):
            self._action(m, text, lambda _=False, t=tool: tools.tool_buttons[t].setChecked(True))
        self._action(m, "Larger brush", lambda: tools.radius_spin.setValue(tools.radius_spin.value() * 1.25), "]")
        self._action(m, "Smaller brush", lambda: tools.radius_spin.setValue(tools.radius_spin.value() / 1.25), "[")

        m = mb.addMenu("&View")
        self.act_maximise = self._action(m, "&Maximise view under focus / restore", win.toggle_maximise_focused, "M")
        self._action(m, "Reset &zoom and pan", win.reset_views, "Home")
        wl = m.addMenu("Window/level preset")
        for name in PRESETS:
            self._action(wl, name, lambda _=False, n=name: win.apply_preset(n))

        m = mb.addMenu("&Model")
        self.act_segment = self._action(m, "&Segment", win.start_segmentation, "Ctrl+R")
        self._action(m, "&Load model...", win.load_model_dialog)
        self._action(m, "Model &card...", win.show_model_card)

        m = mb.addMenu("&Help")
        self._action(m, "&About seg-app", win.show_about)

    def _action(self, menu: QMenu, text: str, slot: Callable, shortcut=None, tip: str = "") -> QAction:
        act = QAction(text, self._win)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def set_recent(self, paths: list[str], open_path: Callable[[str], object]) -> None:
        """List ``paths`` under File > Recent files; choosing one calls ``open_path(path)``."""
        self.recent_menu.clear()
        for p in paths:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, path=p: open_path(path))
        self.recent_menu.setEnabled(bool(paths))


__all__ = ["Menus", "ToolsPanel", "ViewGrid", "add_docks"]
