"""Lesion table dock widget: one row per lesion, sortable, with per-label totals rows pinned at the bottom."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableView, QVBoxLayout, QWidget

#: (header, LesionMeasurement / totals attribute, decimals); "slice" and "delete" are the table's own.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("Label", "label_name", -1),
    ("#", "lesion_id", 0),
    ("Volume\n(mL)", "volume_ml", 2),
    ("RECIST\nlong axis\n(axial, mm)", "long_axis_mm", 1),
    ("Short\naxis\n(axial, mm)", "short_axis_mm", 1),
    ("Slice\n(axial)", "slice", 0),
    ("Max 3D\ndiameter\n(mm)", "max_diameter_mm", 1),
    ("Mean\nintensity", "mean", 1),
    ("Confidence", "confidence", 2),
    ("Delete", "delete", -1),
)

#: Header tooltips: what each measurement means (definitions: docs/MEASUREMENTS.md).
TOOLTIPS: dict[str, str] = {
    "label_name": "The lesion's label (with a tumour sub-region model: the whole tumour)",
    "lesion_id": "Lesion number within its label, largest first",
    "volume_ml": "Lesion volume: number of voxels x voxel volume, in millilitres (1 mL = 1000 mm³)",
    "long_axis_mm": "RECIST 1.1 long axis: the longest diameter of the lesion in any single axial slice, "
                    "between points of its boundary (the magenta caliper)",
    "short_axis_mm": "RECIST short axis: the longest diameter perpendicular to the long axis, "
                     "in the same axial slice (the orange caliper)",
    "slice": "Axial slice where the long and short axes were measured, numbered as in the axial view "
             "(1 = most inferior); the calipers are drawn on it for the selected lesion",
    "max_diameter_mm": "Maximum 3D diameter: the largest distance between two points of the lesion surface, "
                       "in any direction (3D Feret diameter)",
    "mean": "Mean image intensity inside the lesion (HU for CT; scanner units for MR, which have no absolute scale)",
    "confidence": "The model's mean foreground probability inside the lesion (0-1); blank for lesions "
                  "painted by hand, which the model did not predict",
    "delete": "Delete this lesion from the mask (one click; Edit > Undo brings it back)",
}
DELETE_TEXT = "\u2715"

#: Tumour sub-region columns (shown when the lesions have ``region_volumes_ml``): composites first.
REGION_COLUMNS: tuple[str, ...] = ("WT", "TC", "ET")

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
TOTALS_ROLE = Qt.ItemDataRole.UserRole + 2


def _fmt(value: Any, decimals: int) -> str:
    if value is None:  # not applicable (a hand-painted lesion's confidence, a total's axes)
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.{max(decimals, 0)}f}"
    return str(value)


class LesionTableModel(QAbstractTableModel):
    """Rows: lesions (``LesionMeasurement``), then totals (dicts from ``label_totals``)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.lesions: list = []
        self.totals: list[dict] = []
        self.colors: dict[int, tuple[int, int, int]] = {}
        self.region_colors: dict[str, tuple[int, int, int]] = {}
        self.intensity_unit = ""
        self.columns: list[tuple[str, str, int]] = list(COLUMNS)
        #: lesion -> its RECIST slice as numbered in the axial view (set by the window), or None
        self.slice_of: Any = lambda lesion: None

    def set_data(self, lesions: list, totals: list[dict], colors: dict[int, tuple[int, int, int]] | None = None,
                 region_colors: dict[str, tuple[int, int, int]] | None = None) -> None:
        """Lesions and totals; with tumour sub-regions one "<region> (mL)" column per region follows Volume."""
        self.beginResetModel()
        self.lesions = list(lesions)
        self.totals = list(totals)
        if colors is not None:
            self.colors = dict(colors)
        if region_colors is not None:
            self.region_colors = dict(region_colors)
        keys = list(dict.fromkeys(k for les in self.lesions for k in (getattr(les, "region_volumes_ml", None) or {})))
        keys.sort(key=lambda k: (k not in REGION_COLUMNS, REGION_COLUMNS.index(k) if k in REGION_COLUMNS else 0))
        # sub-region names are long: two-line headers ("necrotic\ncore (mL)") keep the table narrow
        heads = [f"{k} (mL)" if k in REGION_COLUMNS else f"{k}\n(mL)".replace(" ", "\n") for k in keys]
        self.columns = [*COLUMNS[:3], *((h, f"region:{k}", 2) for h, k in zip(heads, keys)), *COLUMNS[3:]]
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.lesions) + len(self.totals)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.columns):
            return None
        name, attr, _ = self.columns[section]
        if role == Qt.ItemDataRole.DisplayRole:
            if attr == "mean":
                name = f"Mean\nintensity\n({self.intensity_unit or 'a.u.'})"
            return name
        if role == Qt.ItemDataRole.ToolTipRole and attr in TOOLTIPS:
            return TOOLTIPS[attr]
        if role == Qt.ItemDataRole.DecorationRole and attr.startswith("region:"):
            c = self.region_colors.get(attr.split(":", 1)[1])
            return QColor(*c) if c else None
        if role == Qt.ItemDataRole.ToolTipRole and attr.startswith("region:"):
            from seg_app.core.regions import COMPOSITE_NAMES

            key = attr.split(":", 1)[1]
            return f"{COMPOSITE_NAMES.get(key, key)}: volume in mL inside this lesion"
        return None

    def row_object(self, row: int) -> tuple[bool, Any]:
        """(is_totals, LesionMeasurement or totals dict)."""
        if row < len(self.lesions):
            return False, self.lesions[row]
        return True, self.totals[row - len(self.lesions)]

    def _value(self, row: int, col: int) -> Any:
        is_total, obj = self.row_object(row)
        attr = self.columns[col][1]
        if attr.startswith("region:"):
            regions = obj.get("region_volumes_ml") if is_total else getattr(obj, "region_volumes_ml", None)
            return (regions or {}).get(attr.split(":", 1)[1])
        if is_total:
            if attr == "label_name":
                return f"Total {obj.get('label_name', '')}"
            if attr == "lesion_id":
                return f"n={obj.get('n_lesions', 0)}"
            if attr in ("long_axis_mm", "short_axis_mm", "slice", "delete"):
                return None
            return obj.get(attr)
        if attr == "slice":
            return self.slice_of(obj)
        if attr == "delete":
            return DELETE_TEXT
        return getattr(obj, attr, None)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, col = index.row(), index.column()
        is_total, obj = self.row_object(row)
        if role == Qt.ItemDataRole.DisplayRole:
            return _fmt(self._value(row, col), self.columns[col][2])
        if role == SORT_ROLE:
            v = self._value(row, col)
            if isinstance(v, float) and not math.isfinite(v):
                return -math.inf
            return -math.inf if v is None else v
        if role == TOTALS_ROLE:
            return is_total
        attr = self.columns[col][1]
        if role == Qt.ItemDataRole.ToolTipRole and attr == "delete" and not is_total:
            return TOOLTIPS["delete"]
        if role == Qt.ItemDataRole.TextAlignmentRole and attr == "delete":
            return int(Qt.AlignmentFlag.AlignCenter)
        if role == Qt.ItemDataRole.ForegroundRole and attr == "delete":
            return QBrush(QColor(190, 40, 40))
        if role == Qt.ItemDataRole.TextAlignmentRole and col > 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.FontRole and is_total:
            f = QFont()
            f.setBold(True)
            return f
        if role == Qt.ItemDataRole.DecorationRole and col == 0:
            label = obj.get("label") if is_total else obj.label
            c = self.colors.get(int(label)) if label is not None else None
            if c is None and self.region_colors:  # whole-tumour lesions: the core's colour
                c = self.region_colors.get("TC") or next(iter(self.region_colors.values()))
            return QColor(*c) if c else None
        if role == Qt.ItemDataRole.BackgroundRole and is_total:
            return QBrush(QColor(0, 0, 0, 28))
        return None


class _TotalsLastProxy(QSortFilterProxyModel):
    """Sorts lesion rows by the column's numeric value; totals rows stay at the bottom either way."""

    def lessThan(self, left: QModelIndex | QPersistentModelIndex, right: QModelIndex | QPersistentModelIndex) -> bool:
        lt = bool(left.data(TOTALS_ROLE))
        rt = bool(right.data(TOTALS_ROLE))
        ascending = self.sortOrder() == Qt.SortOrder.AscendingOrder
        if lt != rt:
            return rt if ascending else lt
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)


class LesionTable(QWidget):
    """Table of lesions. Emits ``lesion_activated(LesionMeasurement)`` when a lesion row is clicked and
    ``lesion_delete_requested(LesionMeasurement)`` when its delete cell is."""

    lesion_activated = Signal(object)
    lesion_delete_requested = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.model = LesionTableModel(self)
        self.proxy = _TotalsLastProxy(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.view = QTableView(self)
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(22)
        header = self.view.horizontalHeader()
        font = QFont(header.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1.5))
        header.setFont(font)  # short multi-line headers: every column fits without scrolling sideways
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.view.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignCenter | Qt.AlignmentFlag.AlignVCenter)
        self.view.clicked.connect(self._clicked)
        self.status = QLabel("No segmentation yet.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.view)
        layout.addWidget(self.status)

    def set_lesions(self, lesions: list, totals: list[dict], colors: dict | None = None, unit: str = "",
                    region_colors: dict | None = None) -> None:
        self.model.intensity_unit = unit
        self.model.set_data(lesions, totals, colors, region_colors)
        n = len(lesions)
        if n == 0:
            self.status.setText("No lesions in the mask.")
        else:
            total_ml = sum(t.get("volume_ml", 0.0) for t in totals)
            self.status.setText(f"{n} lesion(s), {total_ml:.2f} mL in total. Click a row to jump to it.")

    def clear(self, message: str = "No segmentation yet.") -> None:
        self.model.set_data([], [])
        self.status.setText(message)

    def set_busy(self, busy: bool) -> None:
        if busy:
            self.status.setText("Updating measurements...")

    def column_of(self, attr: str) -> int:
        """Model column showing ``attr`` (-1 when absent)."""
        return next((c for c, (_h, a, _d) in enumerate(self.model.columns) if a == attr), -1)

    def proxy_index_of(self, lesion, attr: str = "label_name") -> QModelIndex:
        """The view's index of ``lesion``'s row (in column ``attr``); invalid when not listed."""
        try:
            row = next(r for r, les in enumerate(self.model.lesions) if les is lesion)
        except StopIteration:
            return QModelIndex()
        return self.proxy.mapFromSource(self.model.index(row, max(self.column_of(attr), 0)))

    def select_lesion(self, lesion) -> None:
        """Select (and scroll to) ``lesion``'s row without emitting anything."""
        index = self.proxy_index_of(lesion)
        if index.isValid():
            self.view.selectRow(index.row())
            self.view.scrollTo(index)

    def selected_lesion(self):
        rows = self.view.selectionModel().selectedRows()
        if not rows:
            return None
        is_total, obj = self.model.row_object(self.proxy.mapToSource(rows[0]).row())
        return None if is_total else obj

    def _clicked(self, proxy_index: QModelIndex) -> None:
        source = self.proxy.mapToSource(proxy_index)
        is_total, obj = self.model.row_object(source.row())
        if is_total:
            return
        if self.model.columns[source.column()][1] == "delete":
            self.lesion_delete_requested.emit(obj)
        else:
            self.lesion_activated.emit(obj)
