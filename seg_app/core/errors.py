"""Typed errors raised by the Qt-free core.

Every message is one sentence a clinician can act on: which file, what is wrong. The GUI shows
``str(error)`` in a dialog and the CLI prints it on one line, so messages must not need a traceback.
"""

from __future__ import annotations


__all__ = [
    "Cancelled",
    "CheckpointError",
    "CorruptScanError",
    "EmptyScanError",
    "ExportError",
    "IncompatibleInputError",
    "MultipleSeriesError",
    "NoImageSeriesError",
    "ScanLoadError",
    "ScanNotFoundError",
    "ScanTooLargeError",
    "SegAppError",
    "UnsupportedScanError",
]


class SegAppError(Exception):
    """Base class of every error the core raises on purpose."""


class ScanLoadError(SegAppError):
    """A scan could not be read (missing, empty, corrupt, unsupported or absurd)."""


class ScanNotFoundError(ScanLoadError):
    """The path given does not exist."""


class EmptyScanError(ScanLoadError):
    """The file is empty (0 bytes)."""


class CorruptScanError(ScanLoadError):
    """The file is truncated, corrupt, or not a DICOM/NIfTI file at all."""


class ScanTooLargeError(ScanLoadError):
    """The header claims an absurd image size; nothing was allocated."""


class UnsupportedScanError(ScanLoadError):
    """A valid file the app cannot use as a scan (time series, 5D, non-image DICOM object)."""


class NoImageSeriesError(ScanLoadError):
    """A folder holds no image series the app can load."""


class MultipleSeriesError(ScanLoadError):
    """A folder holds several image series and none was chosen.

    Attributes:
        series: the ``SeriesInfo`` of every image series found, for a picker.
    """

    def __init__(self, message: str, series: list) -> None:
        super().__init__(message)
        self.series = list(series)


class ExportError(SegAppError):
    """A mask or measurement file could not be written (or would overwrite the source)."""


class CheckpointError(SegAppError):
    """A model checkpoint is not valid, not safe, or does not match its own spec."""


class IncompatibleInputError(SegAppError):
    """The scan cannot be segmented by this model (channels, size, values)."""


class Cancelled(SegAppError):
    """A long-running job was cancelled by the user."""
