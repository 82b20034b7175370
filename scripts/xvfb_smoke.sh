#!/usr/bin/env bash
# Launch the desktop app once in a real X server (Xvfb, Qt's xcb platform), not the offscreen plugin.
#
#   scripts/xvfb_smoke.sh [SCAN] [OUT_DIR]
#
# 1. starts Xvfb on a free display (1600x1000x24) and the openbox window manager on it (focus, decorations
#    and dialogs as on a desktop);
# 2. runs `seg-app --screenshot` there with QT_QPA_PLATFORM=xcb (the app's own rendering path);
# 3. starts the interactive app on the same scan, waits until its window is mapped, and grabs the X root
#    window with ImageMagick's `import -window root` (what a user would see);
# 4. checks both PNGs are non-trivial (size and number of distinct colours) and exits non-zero otherwise.
#
# Needs (Debian): xvfb xauth openbox x11-utils imagemagick libgl1-mesa-dri libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 (see
# scripts/install_system_deps.sh). Without Xvfb it prints a note and exits 0 so CI without X keeps working,
# unless XVFB_SMOKE_REQUIRED=1.
set -euo pipefail
cd "$(dirname "$0")/.."

SCAN=${1:-sample_scans/brain_tumour_mri.nii.gz}
OUT=${2:-${TMPDIR:-/tmp}/seg_app_xvfb_smoke}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"

if ! command -v Xvfb >/dev/null; then
    echo "xvfb_smoke: Xvfb not installed; skipped (apt-get install xvfb xauth imagemagick)"
    [[ "${XVFB_SMOKE_REQUIRED:-0}" == 1 ]] && exit 1 || exit 0
fi

# a free display number
for n in $(seq 91 120); do
    if [[ ! -e /tmp/.X$n-lock && ! -e /tmp/.X11-unix/X$n ]]; then DISPLAY_NUM=$n; break; fi
done
export DISPLAY=":${DISPLAY_NUM:?no free X display}"
Xvfb "$DISPLAY" -screen 0 1600x1000x24 -nolisten tcp >"$OUT/xvfb.log" 2>&1 &
XVFB_PID=$!
APP_PID=""
WM_PID=""
cleanup() {
    [[ -n "$APP_PID" ]] && kill "$APP_PID" 2>/dev/null || true
    [[ -n "$WM_PID" ]] && kill "$WM_PID" 2>/dev/null || true
    kill "$XVFB_PID" 2>/dev/null || true
    wait "$XVFB_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do
    xdpyinfo >/dev/null 2>&1 && break
    [[ -e /tmp/.X11-unix/X${DISPLAY_NUM} ]] && break
    sleep 0.1
done

if command -v openbox >/dev/null; then
    openbox --sm-disable >"$OUT/openbox.log" 2>&1 &
    WM_PID=$!
    for _ in $(seq 100); do  # the window manager announces itself on the root window
        wm=$(xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | awk '/window id/ {print $NF}' || true)
        [[ -n "$wm" ]] && break
        sleep 0.1
    done
    echo "xvfb_smoke: window manager: $(xprop -id "${wm:-0}" _NET_WM_NAME 2>/dev/null | cut -d'"' -f2 || true)"
elif [[ "${XVFB_SMOKE_REQUIRED:-0}" == 1 ]]; then
    echo "xvfb_smoke: openbox not installed (apt-get install openbox)"; exit 1
fi

export QT_QPA_PLATFORM=xcb
MODEL_ARGS=()
if [[ -n "${SEG_APP_MODEL:-}" ]]; then MODEL_ARGS=(--model "$SEG_APP_MODEL"); fi
SEGMENT=()
if [[ -n "${SEG_APP_MODEL:-}" || -f seg_app/models/default_brain_tumour.pt ]]; then SEGMENT=(--segment); fi

echo "xvfb_smoke: scripted screenshot on $DISPLAY (xcb) ${SEGMENT[*]}"
timeout 300 "$PY" -m seg_app.cli --screenshot "$OUT/app_screenshot.png" "${SEGMENT[@]}" "${MODEL_ARGS[@]}" "$SCAN"

echo "xvfb_smoke: interactive window + import -window root"
timeout 120 "$PY" -m seg_app.cli "${MODEL_ARGS[@]}" "$SCAN" >"$OUT/app.log" 2>&1 &
APP_PID=$!
ok=0
for _ in $(seq 120); do
    if command -v xwininfo >/dev/null && xwininfo -root -tree 2>/dev/null | grep -q "seg-app"; then ok=1; break; fi
    sleep 0.5
    if ! kill -0 "$APP_PID" 2>/dev/null; then break; fi
    [[ $ok == 0 && ! -x "$(command -v xwininfo)" ]] && { sleep 8; ok=1; break; }
done
sleep 3  # let it load the scan and paint
if ! kill -0 "$APP_PID" 2>/dev/null; then
    echo "xvfb_smoke: the app exited early:"; cat "$OUT/app.log"; exit 1
fi
import -window root "$OUT/root.png"
kill "$APP_PID"; wait "$APP_PID" 2>/dev/null || true; APP_PID=""

check() {  # file min_bytes min_colours
    local f=$1 bytes colours
    bytes=$(stat -c %s "$f")
    colours=$(identify -format '%k' "$f")
    echo "xvfb_smoke: $f: $(identify -format '%wx%h' "$f"), $bytes bytes, $colours colours"
    (( bytes > $2 && colours > $3 )) || { echo "xvfb_smoke: $f looks empty"; exit 1; }
}
check "$OUT/app_screenshot.png" 20000 200
check "$OUT/root.png" 20000 200
echo "xvfb_smoke: OK ($OUT)"
