"""The app in a real X server with a window manager (Xvfb + openbox + Qt's xcb platform), not only offscreen.

* ``scripts/xvfb_smoke.sh``: the scripted ``--screenshot`` and the interactive window, grabbed from the screen;
* at 1280x800 and 1920x1080 (``tests/xvfb_window_check.py``): the maximised window is made active by the
  window manager, a dialog takes the focus and gives it back, every control of the tool panel lies inside
  the panel's visible viewport (nothing clipped, no scrolling) and on the screen, and the 3D view is drawn
  by OpenGL (Mesa) with the lesion surfaces in it; a mouse click on the lesion there moves the crosshair onto it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCAN = ROOT / "sample_scans" / "brain_tumour_mri.nii.gz"
LABELS = ROOT / "sample_scans" / "brain_tumour_mri_label.nii.gz"
pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _env(display: str | None = None) -> dict[str, str]:
    env = dict(os.environ, XVFB_SMOKE_REQUIRED="1", PYTHON=sys.executable)
    env.pop("QT_QPA_PLATFORM", None)
    if display:
        env.update(DISPLAY=display, QT_QPA_PLATFORM="xcb")
    return env


def test_app_runs_in_real_x_server(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "xvfb_smoke.sh"), str(SCAN), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "window manager: Openbox" in proc.stdout, proc.stdout[-2000:]
    assert (tmp_path / "root.png").stat().st_size > 10_000


def _free_display() -> int:
    for n in range(121, 160):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number")


@pytest.fixture
def x_screen(request, tmp_path):
    """Xvfb at the requested (width, height) with openbox managing its windows; yields ``DISPLAY``."""
    for tool in ("Xvfb", "openbox", "import", "xprop"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make system-deps` (scripts/install_system_deps.sh)")
    width, height = request.param
    display = f":{_free_display()}"
    procs = [subprocess.Popen(["Xvfb", display, "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "xvfb.log", "w"))]
    env = dict(os.environ, DISPLAY=display)
    try:
        for _ in range(100):
            if Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
                break
            time.sleep(0.1)
        procs.append(subprocess.Popen(["openbox", "--sm-disable"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(tmp_path / "openbox.log", "w")))
        for _ in range(100):  # the window manager announces itself on the root window
            check = subprocess.run(["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"], env=env, capture_output=True, text=True)
            if "window id" in check.stdout:
                break
            time.sleep(0.1)
        else:
            pytest.fail("openbox did not start: " + (tmp_path / "openbox.log").read_text()[-1000:])
        yield display, (width, height)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _inside(inner, outer, slack: int = 0) -> bool:
    x, y, w, h = inner
    ox, oy, ow, oh = outer
    return x >= ox - slack and y >= oy - slack and x + w <= ox + ow + slack and y + h <= oy + oh + slack


def _colours_in(image_path: Path, rect) -> tuple[int, int]:
    """(distinct colours, lesion-coloured pixels) in ``rect`` of a screenshot."""
    from PySide6.QtGui import QImage

    img = QImage(str(image_path)).convertToFormat(QImage.Format.Format_RGB32)
    x, y, w, h = rect
    colours, lesion = set(), 0
    for yy in range(y + 2, y + h - 2, 2):
        for xx in range(x + 2, x + w - 2, 2):
            c = img.pixelColor(xx, yy)
            r, g, b = c.red(), c.green(), c.blue()
            colours.add((r, g, b))
            # a saturated colour that is not the blue crosshair: a label colour (the head is a pale grey-beige)
            lesion += max(r, g, b) - min(r, g, b) > 90 and not (b > r and b > g)
    return len(colours), lesion


@pytest.mark.parametrize("x_screen", [(1280, 800), (1920, 1080)], indirect=True, ids=["1280x800", "1920x1080"])
def test_window_on_real_screens_shows_every_tool_and_the_3d_view(x_screen, tmp_path):
    display, (width, height) = x_screen
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "xvfb_window_check.py"), str(out), str(SCAN), str(LABELS)],
                          capture_output=True, text=True, timeout=900, env=_env(display), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "report.json").read_text())
    shot = out / "screen.png"
    shutil.copy(shot, tmp_path.parent / f"seg_app_screen_{width}x{height}.png")  # kept with pytest's tmp files

    # the window manager: a maximised, decorated window inside the screen, active; dialogs take and return focus
    assert r["screen"] == [0, 0, width, height]
    assert r["maximized"] and _inside(r["frame"], r["screen"])
    assert r["frame"][3] > r["window"][3], "no title bar: is the window manager running?"
    assert r["window"][2] >= width - 10 and r["window"][3] >= height - 60
    assert r["window_active"], "the window manager did not activate the window"
    assert r["dialog_active"] and _inside(r["dialog_frame"], r["screen"])
    assert r["focus_back"]

    # every control of the tool panel visible without scrolling: inside the viewport and on the screen
    assert r["tools_scroll_range"] == [0, 0], r["tools_scroll_range"]
    assert _inside(r["tools_viewport_global"], r["screen"])
    names = {c["text"] for c in r["controls"]}
    assert {"Segment", "Cancel", "TTA", "Show mask", "Outline", "Probability", "Navigate", "Paint", "Erase",
            "3D sphere", "Undo", "Redo"} <= names, names
    assert len(r["controls"]) >= 20
    for c in r["controls"]:
        assert c["visible"], c
        assert _inside(c["in_viewport"], [0, 0, *r["tools_viewport"][2:]]), c
        assert _inside(c["global"], r["screen"]), c

    # the 3D view: OpenGL (Mesa) rendered the head and the lesion surfaces into its dock
    assert r["view3d_available"], r["view3d_problem"]
    assert r["view3d_head_faces"] > 1000 and len(r["view3d_meshes"]) >= 1
    dock = r["view3d_dock"]
    assert _inside(dock, r["screen"]) and dock[3] >= 60 and dock[2] >= 200
    colours, lesion_pixels = _colours_in(shot, dock)
    assert colours > 50, "the 3D view looks empty"
    assert lesion_pixels > 5, "no lesion colour in the 3D view"
    # a mouse click on the lesion in the 3D view moved the crosshair onto it
    click = r["click"]
    assert click is not None and click["label_at_cursor"] > 0, click
    assert click["mm_from_centroid"] <= click["lesion_max_diameter_mm"], click
    assert click["status"].startswith("3D: crosshair on"), click
