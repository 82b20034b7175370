#!/bin/sh
# /usr/bin/seg-app: the app folder's executable, wherever the package root was unpacked
# (so `dpkg -x pkg.deb ROOT && ROOT/usr/bin/seg-app --version` works too).
here=$(dirname "$(readlink -f "$0")")
exec "$here/../../opt/seg-workstation/seg-app" "$@"
