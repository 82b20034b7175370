"""*Model > Models...*: the bundled model and the recently opened ones, each with its card.

The list and the cards come from :mod:`seg_app.core.model_registry` (the same as ``seg-app models``), read
in a worker. *Use this model* loads the selected one through the window's model job (which remembers it
as the chosen model); *Open model...* is *Model > Load model...*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QListWidget, QListWidgetItem, QPlainTextEdit,
                               QPushButton, QVBoxLayout)

if TYPE_CHECKING:
    from seg_app.core.model_registry import ModelEntry
    from seg_app.gui.main_window import MainWindow

__all__ = ["ModelManagerDialog", "show_model_manager"]


class ModelManagerDialog(QDialog):
    """A list of :class:`~seg_app.core.model_registry.ModelEntry` and the selected entry's card."""

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.entries: list[ModelEntry] = []
        self.setWindowTitle("Models")
        self.resize(820, 480)
        self.list = QListWidget()
        self.card = QPlainTextEdit()
        self.card.setReadOnly(True)
        self.card.setPlainText("Reading the models...")
        self.use_button = QPushButton("Use this model")
        self.use_button.setEnabled(False)
        self.open_button = QPushButton("Open model...")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.use_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.open_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.list, 1)
        row.addWidget(self.card, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(buttons)
        self.list.currentRowChanged.connect(self._on_selected)
        self.use_button.clicked.connect(self.use_selected)
        self.open_button.clicked.connect(self._open)
        self.job = None

    def refresh(self):
        """Read the models in a worker (checkpoints are read to describe them); returns the job."""
        from seg_app.core.model_registry import list_models

        self.job = self.win.start_job(lambda progress, cancel: list_models(), "model list")
        self.job.succeeded.connect(self.set_entries)
        self.job.failed.connect(lambda exc: self.card.setPlainText(f"The models could not be read: {exc}"))
        self.job.start()
        return self.job

    def set_entries(self, entries) -> None:
        self.entries = list(entries)
        self.list.clear()
        for e in self.entries:
            marks = "".join(m for m, on in ((" (bundled)", e.bundled), (" (chosen)", e.chosen)) if on)
            item = QListWidgetItem(f"{e.name} v{e.version}{marks}" if e.version else f"{e.name}{marks}")
            item.setToolTip(e.path)
            self.list.addItem(item)
        current = next((i for i, e in enumerate(self.entries) if e.chosen), 0)
        if self.entries:
            self.list.setCurrentRow(current)
        else:
            self.card.setPlainText("No models (the bundled model is missing): use Open model...")

    def selected(self) -> ModelEntry | None:
        row = self.list.currentRow()
        return self.entries[row] if 0 <= row < len(self.entries) else None

    def _on_selected(self, _row: int) -> None:
        e = self.selected()
        self.use_button.setEnabled(e is not None and not e.error)
        if e is not None:
            self.card.setPlainText(f"{e.error}\n\n{e.path}" if e.error else f"{e.card}\n\nKind: {e.kind}\nPath: {e.path}")

    def use_selected(self):
        """Load the selected model (remembered as the chosen one once it has loaded); returns the job."""
        e = self.selected()
        if e is None or e.error:
            return None
        job = self.win.load_model(e.path, show_card=False)
        if job is not None:
            self.accept()
        return job

    def _open(self) -> None:
        self.accept()
        self.win.load_model_dialog()


def show_model_manager(win: MainWindow) -> ModelManagerDialog:
    """Open *Model > Models...* (non-modal) and start reading the list."""
    dlg = ModelManagerDialog(win)
    win.model_manager = dlg
    dlg.show()
    dlg.refresh()
    return dlg
