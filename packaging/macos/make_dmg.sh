#!/usr/bin/env bash
# macOS: build "Seg Workstation.app" and wrap it in a drag-to-Applications .dmg (run on a Mac).
#
#   bash packaging/macos/make_dmg.sh                 # unsigned (fine for local testing)
#   SEG_APP_CODESIGN_IDENTITY="Developer ID Application: NAME (TEAMID)" NOTARY_PROFILE=seg-notary \
#     bash packaging/macos/make_dmg.sh               # signed + notarised (for distribution)
#
# NOTARY_PROFILE is a keychain profile made once with
#   xcrun notarytool store-credentials seg-notary --apple-id YOU --team-id TEAMID
# Build on the oldest macOS you support, once per architecture (arm64 and x86_64: torch has no
# universal2 wheels), and name the .dmg after it.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
VERSION=$("$PY" -c 'import seg_app; print(seg_app.__version__)')
ARCH=$(uname -m)
APP="dist/Seg Workstation.app"
DMG="dist/seg-workstation-${VERSION}-macos-${ARCH}.dmg"

"$PY" packaging/build.py            # the spec's BUNDLE step makes $APP (signed when the identity is set)
[ -d "$APP" ] || { echo "missing $APP" >&2; exit 1; }
"$APP/Contents/MacOS/seg-app" --version

if [ -n "${SEG_APP_CODESIGN_IDENTITY:-}" ]; then
  codesign --force --deep --options runtime --timestamp --sign "$SEG_APP_CODESIGN_IDENTITY" "$APP"
  codesign --verify --deep --strict --verbose=2 "$APP"
fi

STAGE=build/dmg
rm -rf "$STAGE" && mkdir -p "$STAGE"
cp -R "$APP" "$STAGE/"
ln -s /Applications "$STAGE/Applications"
rm -f "$DMG"
hdiutil create -volname "Seg Workstation ${VERSION}" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov "$DMG"
rm -rf "$STAGE"

if [ -n "${SEG_APP_CODESIGN_IDENTITY:-}" ]; then
  codesign --force --timestamp --sign "$SEG_APP_CODESIGN_IDENTITY" "$DMG"
  if [ -n "${NOTARY_PROFILE:-}" ]; then
    xcrun notarytool submit "$DMG" --keychain-profile "$NOTARY_PROFILE" --wait
    xcrun stapler staple "$DMG"
  fi
fi
hdiutil verify "$DMG"
echo "wrote $DMG"
