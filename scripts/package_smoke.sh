#!/usr/bin/env bash
# Smoke test of the built installer (run `python packaging/build.py` first, or `make package-smoke`).
#
#   bash scripts/package_smoke.sh [DIST]          # DIST defaults to dist/
#
# Runs the FROZEN app only (never the source tree): the bundle self-check, --version, `predict` on the
# sample NIfTI and on the sample DICOM folder (masks must exist and align with their source), `info` on
# RLE / JPEG 2000 / JPEG-LS copies of the DICOM sample (pixel-decoder plugins), `--screenshot` with the
# offscreen Qt platform (+ a real X server via xvfb-run when installed), time to a ready window, then the
# .deb unpacked with `dpkg -x` and its /usr/bin/seg-app launcher, and the .tar.gz listing.
# A Python with nibabel, numpy, pydicom (+ pylibjpeg-openjpeg, pyjpegls) and Pillow checks the outputs:
# $PYTHON, default .venv/bin/python. Prints a PASS/FAIL table and exits 1 on any FAIL.
#
# Knobs: SMOKE_MAX_BUNDLE_MB (1024), SMOKE_MAX_STARTUP_S (5), SMOKE_MODEL=CKPT (use this checkpoint when
# the bundle has no default model; development only), SMOKE_SCAN_NIFTI / SMOKE_SCAN_DICOM (other inputs
# when the bundle has no sample scans), SMOKE_KEEP=1 (keep the work folder).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIST=$(cd "${1:-$ROOT/dist}" && pwd) || { echo "FAIL: no dist folder (build first: python packaging/build.py)"; exit 1; }
APP="$DIST/seg-app"
EXE="$APP/seg-app"
PY=${PYTHON:-$ROOT/.venv/bin/python}
MAX_MB=${SMOKE_MAX_BUNDLE_MB:-1024}
MAX_START=${SMOKE_MAX_STARTUP_S:-5}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/seg-app-smoke.XXXXXX")
cleanup() { [ "${SMOKE_KEEP:-0}" = 1 ] && echo "work folder kept: $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT

# the frozen app writes its ONNX cache and settings here, never into the user's home
export SEG_APP_CACHE="$WORK/cache" XDG_CONFIG_HOME="$WORK/config" XDG_CACHE_HOME="$WORK/xdgcache"
export QT_QPA_PLATFORM=offscreen PYTHONWARNINGS=ignore
unset PYTHONPATH PYTHONHOME

RESULTS=()
FAILS=0
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
record() {  # record STATUS NAME DETAIL
  RESULTS+=("$(printf '%-4s  %-34s %s' "$1" "$2" "$3")")
  [ "$1" = FAIL ] && FAILS=$((FAILS + 1))
  printf '%-4s  %-34s %s\n' "$1" "$2" "$3"
}
# run NAME LOGFILE CMD...: run, record PASS/FAIL by exit status, keep the log
run() {
  local name=$1 logf=$2; shift 2
  local t0; t0=$(now)
  if "$@" >"$logf" 2>&1; then
    LAST_S=$(elapsed "$t0"); record PASS "$name" "${LAST_S} s"; return 0
  else
    local rc=$?; LAST_S=$(elapsed "$t0")
    record FAIL "$name" "exit $rc after ${LAST_S} s; last lines:"; tail -n 15 "$logf" | sed 's/^/      | /'
    return 1
  fi
}
pycheck() {  # pycheck NAME SCRIPT ARGS...: a python check that prints one detail line
  local name=$1 script=$2; shift 2
  local out
  if out=$("$PY" -c "$script" "$@" 2>&1); then record PASS "$name" "$(tail -n 1 <<<"$out")"
  else record FAIL "$name" "$(tail -n 3 <<<"$out" | tr '\n' ' ')"; fi
}

echo "== seg-app package smoke test: $DIST"
[ -x "$EXE" ] || { record FAIL "bundle executable" "$EXE missing"; echo "FAIL"; exit 1; }
[ -x "$PY" ] || { echo "FAIL: no checking Python at $PY (set PYTHON=...)"; exit 1; }

# --- size ---------------------------------------------------------------------------------------------
BUNDLE_MB=$(du -sm "$APP" | cut -f1)
if [ "$BUNDLE_MB" -le "$MAX_MB" ]; then record PASS "bundle size" "${BUNDLE_MB} MiB unpacked (goal <= $MAX_MB)"
else record FAIL "bundle size" "${BUNDLE_MB} MiB unpacked (goal <= $MAX_MB)"; fi

# --- --version and the bundle self-check ------------------------------------------------------------------
VERSION_S=n/a
if run "--version" "$WORK/version.log" "$EXE" --version; then
  run "--version (warm)" "$WORK/version.log" "$EXE" --version && VERSION_S=$LAST_S
  grep -q '^seg-app [0-9]' "$WORK/version.log" || record FAIL "--version output" "$(head -c 200 "$WORK/version.log")"
fi
T0=$(now)
SEG_APP_BUNDLE_CHECK=1 "$EXE" >"$WORK/bundle.json" 2>"$WORK/bundle.err"
IMPORT_S=$(elapsed "$T0")  # imports torch, MONAI, pydicom, Qt, highdicom, onnx and the GUI modules
pycheck "bundle self-check" '
import json, os, sys
r = json.load(open(sys.argv[1]))
allowed = []
if os.environ.get("SMOKE_MODEL"): allowed.append("bundled default model missing")
if os.environ.get("SMOKE_SCAN_NIFTI"): allowed.append("sample scans missing")
bad = [p for p in r["problems"] if not any(p.startswith(a) for a in allowed)]
for p in r["problems"]: print("problem:", p)
assert r["frozen"], "not frozen"
assert not bad, "; ".join(bad)
v = r["versions"]
print("monai %s, torch %s, pydicom %s, Qt platforms: %s; %d pylibjpeg decoders; bundled model: %s" % (
      v["monai"], v["torch"], v["pydicom"], " ".join(r["qt_platform_plugins"]), len(r["pylibjpeg_decoders"]),
      "yes" if r["default_model"]["exists"] else "NO"))
' "$WORK/bundle.json"

# --- inputs -------------------------------------------------------------------------------------------
SAMPLES="$APP/sample_scans"
NIFTI=${SMOKE_SCAN_NIFTI:-$SAMPLES/brain_tumour_mri.nii.gz}
DICOM=${SMOKE_SCAN_DICOM:-$SAMPLES/brain_tumour_mri_dicom}
MODEL_ARGS=()
[ -n "${SMOKE_MODEL:-}" ] && MODEL_ARGS=(--model "$SMOKE_MODEL") && record WARN "model" "using SMOKE_MODEL=$SMOKE_MODEL, not the bundled model"
[ -f "$NIFTI" ] || record FAIL "sample NIfTI" "$NIFTI missing"
[ -d "$DICOM" ] || record FAIL "sample DICOM folder" "$DICOM missing"

ALIGN='
import json, sys
from pathlib import Path
import numpy as np, nibabel as nib
out, src = Path(sys.argv[1]), Path(sys.argv[2])
masks = sorted(out.glob("*_labels.nii.gz"))
assert len(masks) == 1, f"expected one *_labels.nii.gz in {out}, found {[m.name for m in masks]}"
js = sorted(out.glob("*_measurements.json")); assert js, "no measurements JSON"
m = nib.load(masks[0]); lab = np.asarray(m.dataobj)
assert lab.ndim == 3 and np.issubdtype(lab.dtype, np.integer), f"mask is {lab.dtype} {lab.shape}"
def corners(aff, shape):
    idx = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]).T
    return np.array(sorted(map(tuple, np.round((aff @ idx)[:3].T, 2))))
if src.is_dir():  # DICOM: world corners of the series (LPS -> RAS) must be the mask voxel corners
    import pydicom
    ds = []
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        try:
            d = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
        if "ImagePositionPatient" in d:
            ds.append(d)
    iop = np.array(ds[0].ImageOrientationPatient, float); row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    ds.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    dr, dc = (float(x) for x in ds[0].PixelSpacing)  # row spacing, column spacing
    first, last = (np.array(d.ImagePositionPatient, float) for d in (ds[0], ds[-1]))
    pts = [first + r * dr * col + c * dc * row + (last - first) * s
           for r in (0, ds[0].Rows - 1) for c in (0, ds[0].Columns - 1) for s in (0, 1)]
    want = np.array(sorted(map(tuple, np.round(np.array(pts) * [-1, -1, 1], 2))))
    n_src = ds[0].Rows * ds[0].Columns * len(ds)
else:
    s = nib.load(src); want = corners(s.affine, s.shape[:3]); n_src = int(np.prod(s.shape[:3]))
got = corners(m.affine, lab.shape)
assert lab.size == n_src, f"mask has {lab.size} voxels, source {n_src}"
err = float(np.abs(got - want).max())
assert err < 0.05, f"mask corners differ from the source by {err:.3f} mm:\n{got}\n{want}"
json.load(open(js[0]))
print(f"{masks[0].name}: {lab.shape}, {int((lab > 0).sum())} labelled voxels, geometry matches source (max {err:.3f} mm)")
'

if [ -f "$NIFTI" ] && run "predict NIfTI" "$WORK/predict_nifti.log" "$EXE" predict "$NIFTI" --out "$WORK/out_nifti" "${MODEL_ARGS[@]}"; then
  PREDICT_S=$LAST_S
  pycheck "NIfTI mask aligns with source" "$ALIGN" "$WORK/out_nifti" "$NIFTI"
fi
if [ -d "$DICOM" ] && run "predict DICOM folder" "$WORK/predict_dicom.log" "$EXE" predict "$DICOM" --out "$WORK/out_dicom" "${MODEL_ARGS[@]}"; then
  pycheck "DICOM mask aligns with series" "$ALIGN" "$WORK/out_dicom" "$DICOM"
  if [ -f "$NIFTI" ] && [ -z "${SMOKE_SCAN_NIFTI:-}" ]; then  # the two samples are one scan: masks must agree
    pycheck "DICOM vs NIfTI masks agree" '
import sys, numpy as np, nibabel as nib
from pathlib import Path
a, b = (nib.as_closest_canonical(nib.load(next(Path(d).glob("*_labels.nii.gz")))) for d in sys.argv[1:3])
assert a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-3), f"{a.shape} vs {b.shape}"
x, y = np.asarray(a.dataobj) > 0, np.asarray(b.dataobj) > 0
dice = 2 * (x & y).sum() / max(x.sum() + y.sum(), 1)
assert dice >= 0.9 or x.sum() + y.sum() == 0, f"Dice {dice:.3f}"
print(f"Dice {dice:.3f} ({x.sum()} / {y.sum()} voxels)")
' "$WORK/out_nifti" "$WORK/out_dicom"
  fi
fi

# --- compressed DICOM: pydicom's pixel-decoder plugins inside the bundle ----------------------------------
if [ -d "$DICOM" ]; then
  if "$PY" - "$DICOM" "$WORK/compressed" >"$WORK/compress.log" 2>&1 <<'EOF'
import sys
from pathlib import Path
import pydicom
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
src, out = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(f for f in src.iterdir() if f.is_file())
for name, uid in (("rle", RLELossless), ("j2k", JPEG2000Lossless), ("jpegls", JPEGLSLossless)):
    d = out / name
    d.mkdir(parents=True)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(uid)
        ds.save_as(d / f.name)
EOF
  then
    "$EXE" info "$DICOM" >"$WORK/info_plain.log" 2>&1
    for c in rle j2k jpegls; do
      if run "info on $c-compressed DICOM" "$WORK/info_$c.log" "$EXE" info "$WORK/compressed/$c"; then
        # lossless: the decoded volume must be the uncompressed one (same shape and intensity range)
        for key in shape intensity; do
          if [ "$(grep -m1 "^  $key:" "$WORK/info_$c.log")" != "$(grep -m1 "^  $key:" "$WORK/info_plain.log")" ]; then
            record FAIL "$c pixels = uncompressed" "$(grep -m1 "^  $key:" "$WORK/info_$c.log") vs $(grep -m1 "^  $key:" "$WORK/info_plain.log")"
          fi
        done
      fi
    done
  else
    record SKIP "compressed DICOM" "could not encode test copies with $PY: $(tail -n 1 "$WORK/compress.log")"
  fi
fi

# --- GUI: screenshot (offscreen), time to a ready window, real X server -------------------------------
PNGCHECK='
import sys, numpy as np
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB"); a = np.asarray(im)
kb = len(open(sys.argv[1], "rb").read()) / 1024
colours = len(np.unique(a.reshape(-1, 3), axis=0))
assert im.width >= 800 and im.height >= 500, f"{im.size}"
assert kb > 20 and a.std() > 10 and colours > 64, f"looks blank: {kb:.0f} KiB, std {a.std():.1f}, {colours} colours"
print(f"{im.width}x{im.height}, {kb:.0f} KiB, {colours} colours, std {a.std():.0f}")
'
STARTUP_S=n/a
if [ -f "$NIFTI" ]; then
  if run "--screenshot --segment" "$WORK/shot_seg.log" "$EXE" --screenshot "$WORK/shot_seg.png" --segment "${MODEL_ARGS[@]}" "$NIFTI"; then
    pycheck "screenshot PNG non-trivial" "$PNGCHECK" "$WORK/shot_seg.png"
  fi
  # time to a ready window: start, open the scan, lay out and render the window, save it, quit
  if run "--screenshot (startup, 1st)" "$WORK/shot1.log" "$EXE" --screenshot "$WORK/shot1.png" "$NIFTI"; then
    run "--screenshot (startup, 2nd)" "$WORK/shot2.log" "$EXE" --screenshot "$WORK/shot2.png" "$NIFTI" && STARTUP_S=$LAST_S
    if [ "$STARTUP_S" != n/a ] && awk -v s="$STARTUP_S" -v m="$MAX_START" 'BEGIN { exit !(s <= m) }'; then
      record PASS "startup to ready window" "${STARTUP_S} s (goal <= ${MAX_START} s)"
    else
      record FAIL "startup to ready window" "${STARTUP_S} s (goal <= ${MAX_START} s)"
    fi
  fi
  # time until the model is loaded (torch + MONAI imported, checkpoint read): `predict` on a missing input
  # builds the segmenter first, then fails on the input with exit status 1
  T0=$(now)
  "$EXE" predict "$WORK/no-such-scan.nii.gz" --out "$WORK/out_none" "${MODEL_ARGS[@]}" >"$WORK/model_ready.log" 2>&1
  rc=$?
  MODEL_READY_S=$(elapsed "$T0")
  if [ "$rc" = 1 ] && grep -q "no-such-scan" "$WORK/model_ready.log"; then
    record PASS "model loaded (torch + checkpoint)" "${MODEL_READY_S} s (in the GUI this runs behind the open window)"
  else
    record FAIL "model loaded (torch + checkpoint)" "exit $rc: $(tail -n 2 "$WORK/model_ready.log" | tr '\n' ' ')"
  fi
  if command -v xvfb-run >/dev/null 2>&1; then
    if run "--screenshot on X11 (xcb, Xvfb)" "$WORK/shot_xcb.log" \
        xvfb-run -a -s "-screen 0 1600x1000x24" env QT_QPA_PLATFORM=xcb "$EXE" --screenshot "$WORK/shot_xcb.png" "$NIFTI"; then
      pycheck "X11 screenshot non-trivial" "$PNGCHECK" "$WORK/shot_xcb.png"
    fi
  else
    record SKIP "--screenshot on X11" "xvfb-run not installed"
  fi
fi

# --- .deb: unpack into a temporary root, run the launcher ---------------------------------------------
DEB=$(ls -t "$DIST"/seg-workstation_*.deb 2>/dev/null | head -n 1)
DEB_MB=n/a
if [ -n "$DEB" ]; then
  DEB_MB=$(du -m "$DEB" | cut -f1)
  dpkg-deb --field "$DEB" Package Version Architecture Depends >"$WORK/deb_fields.txt" 2>&1 \
    && record PASS ".deb control" "$(head -n 3 "$WORK/deb_fields.txt" | cut -d' ' -f2 | tr '\n' ' ')(${DEB_MB} MiB)" \
    || record FAIL ".deb control" "$(tail -n 1 "$WORK/deb_fields.txt")"
  if run ".deb unpack (dpkg -x)" "$WORK/dpkg_x.log" dpkg -x "$DEB" "$WORK/root"; then
    missing=""
    for f in opt/seg-workstation/seg-app usr/bin/seg-app usr/share/applications/seg-workstation.desktop \
             usr/share/icons/hicolor/256x256/apps/seg-workstation.png; do
      [ -e "$WORK/root/$f" ] || missing="$missing $f"
    done
    [ -z "$missing" ] && record PASS ".deb layout" "/opt/seg-workstation, launcher, .desktop, icon" \
                      || record FAIL ".deb layout" "missing:$missing"
    if command -v desktop-file-validate >/dev/null 2>&1; then
      run ".desktop entry valid" "$WORK/desktop.log" desktop-file-validate "$WORK/root/usr/share/applications/seg-workstation.desktop"
    fi
    run "launcher --version (from .deb)" "$WORK/deb_version.log" "$WORK/root/usr/bin/seg-app" --version
    [ -f "$NIFTI" ] && run "launcher info (from .deb)" "$WORK/deb_info.log" "$WORK/root/usr/bin/seg-app" info "$NIFTI"
    [ -f "$NIFTI" ] && run "launcher screenshot (from .deb)" "$WORK/deb_shot.log" \
      "$WORK/root/usr/bin/seg-app" --screenshot "$WORK/deb_shot.png" "$NIFTI"
    rm -rf "$WORK/root"
  fi
else
  record FAIL ".deb" "no seg-workstation_*.deb in $DIST"
fi

TGZ=$(ls -t "$DIST"/seg-workstation-*.tar.gz 2>/dev/null | head -n 1)
TGZ_MB=n/a
if [ -n "$TGZ" ]; then
  TGZ_MB=$(du -m "$TGZ" | cut -f1)
  if tar -tzf "$TGZ" >"$WORK/tar.txt" 2>&1 && grep -qx 'seg-workstation/seg-app' "$WORK/tar.txt"; then
    record PASS ".tar.gz contents" "$(wc -l <"$WORK/tar.txt") entries, seg-workstation/seg-app (${TGZ_MB} MiB)"
  else
    record FAIL ".tar.gz contents" "seg-workstation/seg-app not in $TGZ"
  fi
else
  record FAIL ".tar.gz" "no seg-workstation-*.tar.gz in $DIST"
fi

# --- summary ------------------------------------------------------------------------------------------
echo
echo "== summary"
printf '%s\n' "${RESULTS[@]}"
echo "bundle ${BUNDLE_MB} MiB unpacked | .deb ${DEB_MB} MiB | .tar.gz ${TGZ_MB} MiB | --version ${VERSION_S} s |" \
     "startup to ready window ${STARTUP_S} s | model loaded ${MODEL_READY_S:-n/a} s | self-check ${IMPORT_S} s |" \
     "predict (NIfTI) ${PREDICT_S:-n/a} s"
if [ "$FAILS" -eq 0 ]; then echo "PACKAGE SMOKE: PASS"; exit 0; fi
echo "PACKAGE SMOKE: FAIL ($FAILS check(s) failed)"
exit 1
