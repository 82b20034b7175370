"""File > Open multi-sequence study...: the model's input channels matched to the series of a study folder.

The matching and the assembly are the core's (:mod:`seg_app.core.multiseq`); this module only shows the
proposed channel <-> series mapping in :class:`ChannelDialog` (one combo box per channel, the reference
grid chosen in another), and runs the two background jobs: listing the study's series, then loading and
assembling the chosen ones onto the reference grid (registration when the frames of reference differ).
The assembled scan opens like any other; the tools panel's *Channel* box switches the displayed channel,
and the mask and measurements refer to the reference grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget,
)

from seg_app.core.multiseq import Candidate, ChannelMatch

__all__ = ["ChannelDialog", "add_study_menu", "open_study", "show_checkerboard"]

_NONE = "(choose a series)"


class ChannelDialog(QDialog):
    """The proposed mapping of model channels to series, editable; OK when every channel has its own series.

    Args:
        channels: the model's input channel names, in model order.
        candidates: the study's series and files.
        match: the proposal (:func:`seg_app.core.multiseq.match_channels`).
    """

    def __init__(self, channels: Sequence[str], candidates: Sequence[Candidate], match: ChannelMatch,
                 folder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Channels of the study")
        self.channels = [str(c) for c in channels]
        self.candidates = list(candidates)
        self.match = match
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"The model takes {len(self.channels)} sequences. Check which series of "
                                f"<b>{folder or 'the study'}</b> is each one:"))
        form = QFormLayout()
        self.combos: dict[str, QComboBox] = {}
        self.notes: dict[str, QLabel] = {}
        for ch in self.channels:
            combo = QComboBox()
            combo.addItem(_NONE, -1)
            for i, c in enumerate(self.candidates):
                combo.addItem(c.label, i)
                combo.setItemData(i + 1, c.summary or c.key, 3)  # Qt.ToolTipRole
            chosen = match.mapping.get(ch)
            if chosen is not None and chosen in self.candidates:
                combo.setCurrentIndex(self.candidates.index(chosen) + 1)
            note = QLabel(self._note(ch))
            note.setWordWrap(True)
            row = QHBoxLayout()
            row.addWidget(combo, 2)
            row.addWidget(note, 3)
            form.addRow(ch, row)
            combo.currentIndexChanged.connect(self._changed)
            self.combos[ch], self.notes[ch] = combo, note
        self.reference_combo = QComboBox()
        self.reference_combo.addItems(self.channels)
        form.addRow("Reference grid", self.reference_combo)
        layout.addLayout(form)
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        layout.addWidget(self.problem)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._changed()

    def _note(self, ch: str) -> str:
        if ch in self.match.mapping:
            return f"matched (confidence {self.match.confidence[ch]:.1f})"
        return self.match.unmatched.get(ch, "")

    def choose(self, channel: str, candidate: Candidate | None) -> None:
        """Select ``candidate`` (None: none) for ``channel``, as the user would."""
        combo = self.combos[channel]
        combo.setCurrentIndex(0 if candidate is None else self.candidates.index(candidate) + 1)

    def mapping(self) -> dict[str, Candidate]:
        """Channel -> the chosen candidate (channels without one left out)."""
        out = {}
        for ch, combo in self.combos.items():
            i = combo.currentData()
            if i is not None and i >= 0:
                out[ch] = self.candidates[i]
        return out

    def reference(self) -> str:
        return self.reference_combo.currentText()

    def problem_text(self) -> str:
        """Why OK is disabled ("" when the mapping is usable)."""
        chosen = self.mapping()
        missing = [ch for ch in self.channels if ch not in chosen]
        if missing:
            return f"Choose a series for {', '.join(missing)}."
        keys = [c.key for c in chosen.values()]
        dup = sorted({chosen[ch].label for ch in chosen if keys.count(chosen[ch].key) > 1})
        if dup:
            return f"{', '.join(dup)} is chosen for several channels."
        return ""

    def _changed(self, *_: Any) -> None:
        for ch, note in self.notes.items():
            chosen = self.mapping().get(ch)
            note.setText(self._note(ch) if chosen is not None and chosen is self.match.mapping.get(ch)
                         else ("chosen by you" if chosen is not None else self.match.unmatched.get(ch, "")))
        text = self.problem_text()
        self.problem.setText(text)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not text)


def _spec(win) -> Any:
    return win.session.spec


def open_study(win, folder: str) -> Any:
    """List the series of ``folder``, propose the channel mapping of the loaded model, then load the study.

    Returns the listing job (None when refused). In scripted mode (``win.interactive`` False) a complete
    proposal is loaded as is and an incomplete one is an error naming the unmatched channels.
    """
    spec = _spec(win)
    if spec is None:
        win.show_error("Load a model first: its input channels decide which series to open.")
        return None
    if getattr(win, "study_job", None) is not None or win.load_job is not None:
        win.statusBar().showMessage("Still loading...", 4000)
        return None
    if not win.confirm_discard("Open another scan"):
        return None
    order = [c.name for c in spec.channels]

    def listing(progress, cancel):
        from seg_app.core.multiseq import match_channels, study_candidates

        cands = study_candidates(folder)
        return cands, match_channels(order, cands)

    job = win.start_job(listing, "study series")
    win.study_job = job
    job.succeeded.connect(lambda res: _propose(win, folder, order, *res))
    job.failed.connect(lambda exc: win.report(exc, "open study"))
    job.finished.connect(lambda: setattr(win, "study_job", None))
    win.statusBar().showMessage(f"Looking for the series of {Path(folder).name}...")
    job.start()
    return job


def _propose(win, folder: str, order: list[str], candidates: list[Candidate], match: ChannelMatch) -> None:
    if not win.interactive:
        if not match.complete:
            win.show_error("Cannot match the model's channels to the study's series: "
                           + "; ".join(f"{ch}: {why}" for ch, why in match.unmatched.items()))
            return
        _load(win, folder, order, dict(match.mapping), order[0])
        return
    dlg = ChannelDialog(order, candidates, match, folder=Path(folder).name, parent=win)
    win.channel_dialog = dlg
    dlg.accepted.connect(lambda: _load(win, folder, order, dlg.mapping(), dlg.reference()))
    dlg.finished.connect(lambda _r: setattr(win, "channel_dialog", None))
    dlg.open()


def _load(win, folder: str, order: list[str], mapping: dict[str, Candidate], reference: str) -> None:
    def load(progress, cancel):
        from seg_app.core.multiseq import load_channels

        return load_channels(mapping, order, reference)[0]

    job = win.start_job(load, "study")
    win.study_job = job
    job.succeeded.connect(lambda vol: _opened(win, vol))
    job.failed.connect(lambda exc: win.report(exc, "open study"))
    job.finished.connect(lambda: setattr(win, "study_job", None))
    win.statusBar().showMessage(f"Loading {len(order)} series of {Path(folder).name}"
                                " (registering those in another frame of reference)...")
    job.start()


def _opened(win, volume) -> None:
    win.set_volume(volume)
    win.statusBar().showMessage(f"Opened {volume.name} with channels {', '.join(volume.channel_names)}", 6000)
    if volume.warnings:
        win.show_info(f"The study was loaded with {len(volume.warnings)} warning(s); check the images carefully "
                      "(the Channel box switches between the sequences).", "Loading warnings",
                      "\n".join(f"- {w}" for w in volume.warnings))


def add_study_menu(win) -> QAction:
    """File > Open multi-sequence study... (after Open DICOM folder...)."""
    act = QAction("Open multi-sequence st&udy...", win)
    act.setStatusTip("Open the series of a study folder as the model's input channels (T1c, T1, T2, FLAIR...)")

    def ask() -> None:
        path = win.ask_open_path("Open multi-sequence study (folder)", "", folder=True)
        if path:
            open_study(win, path)

    act.triggered.connect(ask)
    menu = win.menus.file_menu
    actions = menu.actions()
    anchor = next((a for a in actions if a.text().startswith("Open DICOM")), None)
    after = actions[actions.index(anchor) + 1] if anchor is not None and actions.index(anchor) + 1 < len(actions) else None
    if after is not None:
        menu.insertAction(after, act)
    else:
        menu.addAction(act)
    win.study_job = None
    win.channel_dialog = None
    win.menus.act_open_study = act
    _add_checkerboard(win)
    return act


def _reference_index(volume) -> int | None:
    """The reference channel's index of an assembled study (None for other scans)."""
    if volume is None or volume.n_channels < 2:
        return None
    ref = volume.meta.get("reference_channel")
    return volume.channel_names.index(ref) if ref in volume.channel_names else None


def show_checkerboard(win, on: bool) -> bool:
    """Show the displayed channel and the reference channel as a 3D checkerboard (``on``), or the channel
    alone again; False when the open scan is not a multi-sequence study."""
    from seg_app.core.multiseq import checkerboard

    volume, geometry = win.session.volume, win.state.geometry
    ref = _reference_index(volume)
    if ref is None or geometry is None:
        return False
    channel = win.state.channel
    image = checkerboard(volume.array[channel], volume.array[ref]) if on else volume.array[channel]
    win.data.image = geometry.view(image)
    win.apply_preset(win.tools.preset_combo.itemText(0))  # both halves scaled alike: the automatic window
    win.view_grid.update_views()
    return True


def _add_checkerboard(win) -> None:
    """View > Checkerboard with the reference channel (multi-sequence studies; off when the channel changes)."""
    act = QAction("Checkerboard with the &reference channel", win)
    act.setCheckable(True)
    act.setStatusTip("Alternate 8-voxel blocks of the shown channel and the reference channel, to check the "
                     "registration at the block edges")
    act.toggled.connect(lambda on: show_checkerboard(win, on) or act.setChecked(False))
    win.menus.view_menu.addAction(act)

    def update(what: str = "") -> None:
        if what in ("channel", "geometry", "volume") and act.isChecked():
            act.blockSignals(True)
            act.setChecked(False)  # main_window shows the newly chosen channel
            act.blockSignals(False)
        act.setEnabled(_reference_index(win.session.volume) is not None)

    win.state.connect(update)
    win.session.connect(update)
    update()
    win.menus.act_checkerboard = act
