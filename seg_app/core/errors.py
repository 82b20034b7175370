"""Typed errors raised by the Qt-free core.

Every message is one sentence a clinician can act on: which file, what is wrong. The GUI shows
``str(error)`` in a dialog and the CLI prints it on one line, so messages must not need a traceback.
"""

from __future__ import annotations


class SegAppError(Exception):
    """Base class of every error the core raises on purpose."""


class ScanLoadError(SegAppError):
    """A scan could not be read (missing, empty, corrupt, unsupported or absurd)."""


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
