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

from seg_app.gui.editing import next_brush_radius
from seg_app.gui.lesion_table import LesionTable
from seg_app.gui.model_manager import show_model_manager
from seg_app.gui.slice_view import SliceView, ViewData
from seg_app.gui.viewer_state import AUTO_PRESET, CUSTOM_PRESET, VIEW_AXES, VIEW_NAMES, ViewerState

TOOLS = (("navigate", "Navigate", "N"), ("paint", "Paint", "B"), ("erase", "Erase", "E"))

class BrushSpinBox(QDoubleSpinBox):
    """Brush radius in mm whose arrows (and wheel) move between :data:`BRUSH_STEPS_MM`."""

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        value = self.value()
        for _ in range(abs(steps)):
            value = next_brush_radius(value, 1 if steps > 0 else -1)
        self.setValue(value)


#: Where each view sits in the grid: (row, column, row span).
VIEW_CELLS = {"axial": (0, 0, 2), "coronal": (0, 1, 1), "sagittal": (1, 1, 1)}
COLUMN_STRETCH = (3, 2)


class ViewGrid(QWidget):
    """The out-of-distribution banner above three linked views: axial (large, left), coronal, sagittal.

    Each view has a slice slider on its right (1-based, as the view's caption).
    """

    def __init__(self, state: ViewerState, data: ViewData) -> None:
        super().__init__()
        self.state = state
        self.views: dict[str, SliceView] = {n: SliceView(n, state, data) for n in VIEW_NAMES}
        self.sliders: dict[str, QSlider] = {}
        self.panes: dict[str, QWidget] = {}
        central = QWidget()
        grid = QGridLayout(central)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        for name, view in self.views.items():
            pane = QWidget()
            row_layout = QHBoxLayout(pane)
            row_layout.setContentsMargins(0, 0, 0, 0)
            row_layout.setSpacing(0)
            row_layout.addWidget(view, 1)
            slider = QSlider(Qt.Orientation.Vertical)
            slider.setRange(1, 1)
            slider.setEnabled(False)
            slider.setToolTip(f"{name.capitalize()} slice")
            slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # arrows keep stepping the view under focus
            slider.valueChanged.connect(lambda value, n=name: self._on_slider(n, value))
            row_layout.addWidget(slider)
            self.sliders[name], self.panes[name] = slider, pane
            r, c, span = VIEW_CELLS[name]
            grid.addWidget(pane, r, c, span, 1)
        self._grid = grid
        self._restore_stretch()
        central.setStyleSheet("background: #111;")
        # out-of-distribution banner above the views (hidden until a result says the scan does not fit the model)
        self.domain_banner = QLabel()
        self.domain_banner.setWordWrap(True)
        self.domain_banner.setStyleSheet("background: #7a5a00; color: white; padding: 4px; font-weight: bold;")
        self.domain_banner.setVisible(False)
        # "N segmentation(s) found for this series: Load" (DICOM SEGs beside the opened series; non-modal)
        self.seg_banner = QWidget()
        self.seg_banner.setStyleSheet("background: #1f4e79; color: white;")
        row = QHBoxLayout(self.seg_banner)
        row.setContentsMargins(6, 2, 6, 2)
        self.seg_banner_label = QLabel()
        self.seg_banner_button = QPushButton("Load")
        self.seg_banner_close = QToolButton()
        self.seg_banner_close.setText("\u2715")
        self.seg_banner_close.setToolTip("Hide (File > Segmentations in this folder still lists them)")
        self.seg_banner_close.clicked.connect(lambda: self.seg_banner.setVisible(False))
        row.addWidget(self.seg_banner_label, 1)
        row.addWidget(self.seg_banner_button)
        row.addWidget(self.seg_banner_close)
        self.seg_banner.setVisible(False)
        self._seg_banner_menu = QMenu(self.seg_banner_button)
        self._seg_banner_load: Callable[[], object] | None = None  # what Load does with one segmentation
        self.seg_banner_button.clicked.connect(lambda: self._seg_banner_load and self._seg_banner_load())
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.seg_banner)
        col.addWidget(self.domain_banner)
        col.addWidget(central, 1)
        self.views_widget = central  # the three views only (screenshots)
        self._maximised: str | None = None

    @property
    def maximised(self) -> str | None:
        return self._maximised

    def _restore_stretch(self) -> None:
        for c, stretch in enumerate(COLUMN_STRETCH):
            self._grid.setColumnStretch(c, stretch)
        for r in (0, 1):
            self._grid.setRowStretch(r, 1)

    def toggle_maximise(self, name: str) -> None:
        """Show one view alone, filling the view area (its row and column get all the stretch), or all three."""
        self._maximised = None if self._maximised == name else name
        for n, pane in self.panes.items():
            pane.setVisible(self._maximised in (None, n))
        if self._maximised is None:
            self._restore_stretch()
        else:
            r, c, span = VIEW_CELLS[name]
            for col in (0, 1):
                self._grid.setColumnStretch(col, 1 if col == c else 0)
            for row in (0, 1):
                self._grid.setRowStretch(row, 1 if r <= row < r + span else 0)
        self._grid.invalidate()
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
        self.sync_sliders()

    def sync_sliders(self) -> None:
        """Slider ranges and positions from the geometry and the crosshair (1-based slice numbers)."""
        g = self.state.geometry
        for name, slider in self.sliders.items():
            normal = VIEW_AXES[name][0]
            slider.blockSignals(True)
            if g is None:
                slider.setRange(1, 1)
                slider.setEnabled(False)
            else:
                slider.setRange(1, g.shape[normal])
                slider.setPageStep(10)
                slider.setValue(int(self.state.cursor[normal]) + 1)
                slider.setEnabled(g.shape[normal] > 1)
            slider.blockSignals(False)

    def _on_slider(self, name: str, value: int) -> None:
        if self.state.geometry is None:
            return
        cursor = list(self.state.cursor)
        cursor[VIEW_AXES[name][0]] = int(value) - 1
        self.state.set_cursor(cursor)

    def show_found_segmentations(self, found: list, open_path: Callable[[str], object]) -> None:
        """The banner offering the DICOM SEGs found for the open series (``FoundSegmentation``); hidden when none.

        One: *Load* opens it; several: *Load* has a menu with one entry each.
        """
        self._seg_banner_load = None
        self.seg_banner_button.setMenu(None)
        self._seg_banner_menu.clear()
        if found:
            self.seg_banner_label.setText(f"{len(found)} segmentation(s) found for this series")
            self.seg_banner_label.setToolTip("\n".join(f.path for f in found))

            def load(path: str) -> None:
                self.seg_banner.setVisible(False)
                open_path(path)

            if len(found) == 1:
                self.seg_banner_button.setText("Load")
                self.seg_banner_button.setToolTip(found[0].title)
                self._seg_banner_load = lambda p=found[0].path: load(p)
            else:
                self.seg_banner_button.setText("Load \u25be")
                self.seg_banner_button.setToolTip("")
                for f in found:
                    act = self._seg_banner_menu.addAction(f.title)
                    act.triggered.connect(lambda _=False, p=f.path: load(p))
                self.seg_banner_button.setMenu(self._seg_banner_menu)
        self.seg_banner.setVisible(bool(found))

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
        self.preset_combo.addItem(AUTO_PRESET)
        self.preset_combo.setToolTip("Window/level preset (by modality); right-drag in a view for a custom window")
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
            b.setCheckable(True)  # the key is the Edit menu action's shortcut
            b.setToolTip(f"{text} ({key})")
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            self.tool_group.addButton(b)
            self.tool_buttons[tool] = b
            row.addWidget(b)
        self.tool_buttons["navigate"].setChecked(True)
        form.addRow(row)
        self.label_combo = QComboBox()
        form.addRow("Label", self.label_combo)
        self.radius_spin = BrushSpinBox()
        self.radius_spin.setRange(0.5, 50.0)
        self.radius_spin.setDecimals(1)
        self.radius_spin.setValue(5.0)
        self.radius_spin.setToolTip("Brush radius ([ smaller, ] larger)")
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

    def set_presets(self, names: list[str]) -> None:
        """The window/level presets offered for the open scan."""
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        self.preset_combo.addItems(names)
        self.preset_combo.blockSignals(False)

    def show_preset(self, name: str) -> None:
        """Select ``name`` in the preset choice ("Custom" is added when needed)."""
        i = self.preset_combo.findText(name)
        if i < 0 and name == CUSTOM_PRESET:
            self.preset_combo.addItem(CUSTOM_PRESET)
            i = self.preset_combo.count() - 1
        self.preset_combo.blockSignals(True)
        if i >= 0:
            self.preset_combo.setCurrentIndex(i)
        self.preset_combo.blockSignals(False)

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
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, tools_dock)
    lesion_dock = QDockWidget("Lesions", window)
    lesion_dock.setObjectName("lesion_dock")
    lesion_dock.setWidget(table)
    # the tools take the whole right-hand side; the lesion table only spans the views
    window.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
    window.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, lesion_dock)
    window.resizeDocks([lesion_dock], [170], Qt.Orientation.Vertical)
    tools_dock.toggleViewAction().setText("&Tools panel")
    lesion_dock.toggleViewAction().setText("&Lesion table")
    return tools_dock, lesion_dock


class Menus:
    """The menu bar's actions; ``win`` provides the slots (the window and its controllers).

    ``file_menu``, ``edit_menu``, ``view_menu``, ``model_menu`` and ``help_menu`` stay reachable so other
    parts can add entries.
    """

    def __init__(self, win) -> None:
        self._win = win
        tools, exporter = win.tools, win.exporter
        mb = win.menuBar()
        m = self.file_menu = mb.addMenu("&File")
        self._action(m, "&Open scan...", win.open_scan_dialog, QKeySequence.StandardKey.Open, "Open a NIfTI file or a DICOM file")
        self._action(m, "Open DICOM &folder...", win.open_folder_dialog, "Ctrl+Shift+O")
        self.recent_menu: QMenu = m.addMenu("Recent files")
        m.addSeparator()
        self.act_open_seg = self._action(m, "Open s&egmentation...", win.open_segmentation_dialog, "Ctrl+Alt+O",
                                         "Open a NIfTI label map or a DICOM SEG on the open scan (replaces the mask; undoable)")
        self.found_seg_menu: QMenu = m.addMenu("Segmentations in this folder")
        self.found_seg_menu.setEnabled(False)
        m.addSeparator()
        self.act_save_mask = self._action(m, "&Save mask as NIfTI...", exporter.save_mask_dialog, QKeySequence.StandardKey.Save)
        self.act_save_seg = self._action(m, "Save mask as &DICOM SEG...", exporter.save_seg_dialog, "Ctrl+Alt+S",
                                         "DICOM Segmentation referencing the source series (DICOM scans only)")
        self.act_save_meas = self._action(m, "Save &measurements (CSV/JSON)...", exporter.save_measurements_dialog, "Ctrl+Shift+S")
        self.act_save_shot = self._action(m, "Save screens&hot (PNG)...", exporter.save_screenshot_dialog, "Ctrl+P")
        m.addSeparator()
        self._action(m, "&Quit", win.close, QKeySequence.StandardKey.Quit)

        m = self.edit_menu = mb.addMenu("&Edit")
        self.act_undo = self._action(m, "&Undo", win.undo, QKeySequence.StandardKey.Undo)
        self.act_redo = self._action(m, "&Redo", win.redo, "Ctrl+Shift+Z")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        m.addSeparator()
        self.tool_actions: dict[str, QAction] = {}
        for tool, text, key in TOOLS:
            label = {"paint": "Paint brush", "erase": "Erase brush"}.get(tool, text)
            self.tool_actions[tool] = self._action(m, label, lambda _=False, t=tool: tools.tool_buttons[t].setChecked(True), key)
        self._action(m, "Larger brush", lambda: tools.radius_spin.setValue(next_brush_radius(tools.radius_spin.value(), 1)), "]")
        self._action(m, "Smaller brush", lambda: tools.radius_spin.setValue(next_brush_radius(tools.radius_spin.value(), -1)), "[")
        m.addSeparator()
        self.act_delete_lesion = self._action(m, "&Delete selected lesion", win.delete_selected_lesion,
                                              QKeySequence.StandardKey.Delete, "Erase the lesion selected in the lesion table")

        m = self.view_menu = mb.addMenu("&View")
        self.act_maximise = self._action(m, "&Maximise view under focus / restore", win.toggle_maximise_focused, "M")
        self._action(m, "Reset &zoom and pan", win.reset_views, "Home")
        self.preset_menu: QMenu = m.addMenu("Window/level preset")
        m.addSeparator()
        self.act_anonymise = self._action(m, "&Anonymise (hide patient details)", win.set_anonymise, "Ctrl+Shift+A",
                                          "Hide name, ID, dates and accession in the views, title, panel and exports")
        self.act_anonymise.setCheckable(True)
        m.addSeparator()
        m.addAction(win.tools_dock.toggleViewAction())
        m.addAction(win.lesion_dock.toggleViewAction())

        m = self.model_menu = mb.addMenu("&Model")
        self.act_segment = self._action(m, "&Segment", win.start_segmentation, "Ctrl+R")
        self._action(m, "&Load model...", win.load_model_dialog)
        self._action(m, "&Models...", lambda: show_model_manager(win))  # bundled + recent models, their cards
        self._action(m, "Model &card...", win.show_model_card)

        m = self.help_menu = mb.addMenu("&Help")
        self._action(m, "&User guide", win.show_user_guide, QKeySequence.StandardKey.HelpContents)
        self._action(m, "&Keyboard shortcuts", win.show_shortcuts, "Ctrl+/")
        m.addSeparator()
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

    def set_presets(self, names: list[str], apply: Callable[[str], object]) -> None:
        """List the window/level presets offered for the open scan under View > Window/level preset."""
        self.preset_menu.clear()
        for name in names:
            act = self.preset_menu.addAction(name)
            act.triggered.connect(lambda _=False, n=name: apply(n))

    def set_recent(self, paths: list[str], open_path: Callable[[str], object]) -> None:
        """List ``paths`` under File > Recent files; choosing one calls ``open_path(path)``."""
        self.recent_menu.clear()
        for p in paths:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, path=p: open_path(path))
        self.recent_menu.setEnabled(bool(paths))

    def set_found_segmentations(self, found: list, open_path: Callable[[str], object]) -> None:
        """List the DICOM SEGs found for the open series under File > Segmentations in this folder."""
        self.found_seg_menu.clear()
        for f in found:
            act = self.found_seg_menu.addAction(f.title)
            act.setStatusTip(f.path)
            act.triggered.connect(lambda _=False, p=f.path: open_path(p))
        self.found_seg_menu.setEnabled(bool(found))

    def shortcut_rows(self) -> list[tuple[str, str, str]]:
        """(menu, action, keys) of every menu action with a shortcut (the Help > Keyboard shortcuts sheet)."""
        rows = []
        for menu in (self.file_menu, self.edit_menu, self.view_menu, self.model_menu, self.help_menu):
            for act in menu.actions():
                keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts())
                if keys and not act.isSeparator():
                    rows.append((menu.title().replace("&", ""), act.text().replace("&", ""), keys))
        return rows


__all__ = ["Menus", "ToolsPanel", "ViewGrid", "add_docks"]
