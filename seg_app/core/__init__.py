"""Qt-free core: volumes, scan I/O, checkpoints, preprocessing, inference, measurements, export."""

from seg_app.core.errors import (
    Cancelled,
    CheckpointError,
    ExportError,
    IncompatibleInputError,
    MultipleSeriesError,
    NoImageSeriesError,
    ScanLoadError,
    SegAppError,
)
from seg_app.core.io import atomic_write, list_series, load_scan, save_labels
from seg_app.core.volume import SeriesInfo, Volume

__all__ = [
    "Cancelled",
    "CheckpointError",
    "ExportError",
    "IncompatibleInputError",
    "MultipleSeriesError",
    "NoImageSeriesError",
    "ScanLoadError",
    "SegAppError",
    "SeriesInfo",
    "Volume",
    "atomic_write",
    "list_series",
    "load_scan",
    "save_labels",
]
