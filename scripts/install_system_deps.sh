#!/usr/bin/env bash
# System tools the tests use: dciodvfy (DICOM validator, Debian dicom3tools), desktop-file-validate
# (installer smoke test), Orthanc + orthanc-dicomweb (PACS tests), Xvfb, the openbox window manager, the xcb
# libraries Qt's X11 platform needs and Mesa's software OpenGL (real-window test, 3D view). Installs only what is missing.
set -euo pipefail
pkgs=()
command -v dciodvfy >/dev/null 2>&1 || pkgs+=(dicom3tools)
command -v Xvfb >/dev/null 2>&1 || pkgs+=(xvfb xauth)
command -v import >/dev/null 2>&1 || pkgs+=(imagemagick)
command -v xwininfo >/dev/null 2>&1 || pkgs+=(x11-utils)
command -v openbox >/dev/null 2>&1 || pkgs+=(openbox)
command -v desktop-file-validate >/dev/null 2>&1 || pkgs+=(desktop-file-utils)
# a real PACS for the PACS tests (tests/orthanc_fixture.py): Orthanc with its DICOMweb plugin
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || pkgs+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || pkgs+=(orthanc-dicomweb)
for lib in libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0 \
           libxcb-xkb1 libxkbcommon-x11-0 libxkbcommon0 libegl1 libgl1 libgl1-mesa-dri libfontconfig1 libdbus-1-3; do
  dpkg -s "$lib" >/dev/null 2>&1 || pkgs+=("$lib")
done
[ ${#pkgs[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Please install these system packages (Debian/Ubuntu names): ${pkgs[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
