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
]

# I/O names are re-exported once seg_app.core.io exists (see below).
try:  # pragma: no cover - replaced by a plain import when io.py lands
    from seg_app.core.io import atomic_write, list_series, load_scan, save_labels  # noqa: F401

    __all__ += ["atomic_write", "list_series", "load_scan", "save_labels"]
except ImportError:  # pragma: no cover
    pass
