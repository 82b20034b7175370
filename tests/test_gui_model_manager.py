"""*Model > Models...* (pytest-qt, offscreen): the list and cards, *Use this model*, the remembered model."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import pytest

from gui_fixtures import gui_data, make_window, no_leftover_threads  # noqa: F401 - fixtures
from seg_app.core import model_registry as mr
from seg_app.gui.workers import wait_for

pytestmark = pytest.mark.gui


def test_model_manager_lists_cards_uses_and_remembers_a_model(make_window, gui_data):
    from seg_app.gui.model_manager import show_model_manager

    tiny = str(Path(gui_data["ckpt"]).resolve())
    mr.remember_model(tiny, chosen=False)  # opened once before, not chosen
    win = make_window(model="")
    assert [a.text() for a in win.menus.model_menu.actions()].count("&Models...") == 1
    dlg = show_model_manager(win)
    wait_for(dlg.job)
    assert [dlg.list.item(i).text() for i in range(dlg.list.count())] == [
        "default_brain_tumour v2.3.1 (bundled) (chosen)", f"{dlg.entries[1].name} v{dlg.entries[1].version}"]
    assert dlg.list.currentRow() == 0 and "Licence: the app's own model" in dlg.card.toPlainText()
    dlg.list.setCurrentRow(1)
    card = dlg.card.toPlainText()
    assert card.startswith(dlg.entries[1].name) and f"Path: {tiny}" in card and "Labels: 0=background" in card
    job = dlg.use_selected()
    assert job is not None and not dlg.isVisible()
    wait_for(job)
    assert Path(win.session.checkpoint.path).resolve() == Path(tiny)
    assert mr.chosen_model() == tiny

    again = make_window(model=None)  # a new window (no explicit model) starts with the chosen one
    assert Path(again.session.checkpoint.path).resolve() == Path(tiny)
