"""Build the seg-app installer: PyInstaller one-folder bundle, then (Linux) a .deb and a .tar.gz.

    python packaging/build.py                 # bundle + .deb + .tar.gz  (what `make package` runs)
    python packaging/build.py --skip-bundle   # only re-package an existing dist/seg-app/
    python packaging/build.py --no-deb --no-tar

Outputs (all under dist/, gitignored):
    dist/seg-app/                                   the app folder (run dist/seg-app/seg-app)
    dist/seg-workstation_<version>_<arch>.deb       installs to /opt/seg-workstation, /usr/bin/seg-app,
                                                    a .desktop entry and the icon
    dist/seg-workstation-<version>-linux-<machine>.tar.gz   the app folder as seg-workstation/
    dist/package-report.json                        sizes and timings (read by scripts/package_smoke.sh)

The build runs under ``nice`` (``--nice``, default 10) so it does not starve other work. On
Windows and macOS the same command builds the bundle (dist/seg-app/ or dist/Seg Workstation.app); the
installer steps for those are in docs/PACKAGING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "packaging"
SPEC = PKG / "seg-app.spec"
APP_NAME = "seg-app"  # executable and bundle folder name
PACKAGE = "seg-workstation"  # Debian package, install folder, desktop entry and icon name
INSTALL_DIR = f"/opt/{PACKAGE}"
MAINTAINER = "Seg Workstation maintainers <seg-workstation@example.org>"
SUMMARY = "Tumour-segmentation workstation (research use only)"
DESCRIPTION = """\
Desktop app to view MRI/CT scans (DICOM, NIfTI), segment tumours with a bundled
deep-learning model (MONAI/PyTorch, CPU), edit the mask and measure lesions;
also `seg-app predict` for batch segmentation from a terminal.
Self-contained: Python, PyTorch and Qt are inside /opt/seg-workstation.
Research use only. Not for clinical diagnosis or treatment decisions."""
#: Debian packages the bundled Qt needs from the system (X11/Wayland, OpenGL, fonts).
DEB_DEPENDS = [  # libc6 (>= the newest GLIBC_ version a bundled library needs) is added in front
    "libfontconfig1",
    "libfreetype6",
    "libgl1",
    "libegl1",
    "libxkbcommon0",
    "libxkbcommon-x11-0",
    "libxcb-cursor0",
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-xkb1",
    "libxcb-randr0",
    "libdbus-1-3",
    "libglib2.0-0t64 | libglib2.0-0",
]
DEB_RECOMMENDS = ["libwayland-client0", "libwayland-cursor0", "libwayland-egl1"]
ICON_SIZES = (48, 128, 256)
#: dpkg-deb compression levels. zstd is the default: every system the bundle runs on (glibc >= 2.35)
#: has a dpkg that reads it (dpkg >= 1.21.18: Debian 12, Ubuntu 21.10+), and it builds in well under a
#: minute where xz takes 10+ minutes on two busy cores for a few per cent less size.
DEB_LEVELS = {"zstd": 9, "xz": 6, "gzip": 6}


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def version() -> str:
    sys.path.insert(0, str(ROOT))
    from seg_app import __version__

    return __version__


def dir_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``, not following symlinks."""
    total = n = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
            n += 1
    return total, n


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


# --- bundle ------------------------------------------------------------------------------------------
def build_bundle(dist: Path, work: Path, clean: bool) -> Path:
    """Run PyInstaller on the spec; returns the app folder."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        sys.exit("PyInstaller is missing: pip install -e '.[package]' (or: make package)")
    model = sorted((ROOT / "seg_app" / "models").glob("*.pt"))
    if not model:
        log("WARNING: seg_app/models/*.pt is missing: the bundle will have no default model")
    if not any((ROOT / "sample_scans").glob("*.nii.gz")):
        log("WARNING: sample_scans/*.nii.gz is missing: the bundle will have no sample scans")
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(dist), "--workpath", str(work), str(SPEC)]
    if clean:
        cmd.insert(4, "--clean")
    log(" ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)
    app = dist / APP_NAME
    if sys.platform == "darwin":
        app = dist / "Seg Workstation.app"
    if not app.exists():
        sys.exit(f"PyInstaller finished but {app} is missing")
    return app


def required_glibc(app: Path) -> str:
    """Newest ``GLIBC_2.x`` symbol version any bundled ELF file needs: the oldest glibc it runs on."""
    import re

    pattern = re.compile(rb"GLIBC_2\.(\d+)(?:\.(\d+))?\x00")
    best = (2, 17, 0)
    for p in app.rglob("*"):
        if not p.is_file() or p.is_symlink():
            continue
        with open(p, "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
            data = f.read()
        for minor, patch in set(pattern.findall(data)):
            best = max(best, (2, int(minor), int(patch or 0)))
    return ".".join(map(str, best if best[2] else best[:2]))


# --- .tar.gz -----------------------------------------------------------------------------------------
def build_tar(app: Path, out: Path, top: str) -> Path:
    """The app folder as ``top/`` in a gzip tarball (system tar + pigz/gzip when present: much faster)."""
    out.unlink(missing_ok=True)
    gz = shutil.which("pigz") or shutil.which("gzip")
    tar = shutil.which("tar")
    if tar and gz and sys.platform.startswith("linux"):
        transform = f"s,^{APP_NAME},{top},"
        cmd = f'"{tar}" -C "{app.parent}" --transform "{transform}" --owner=0 --group=0 -cf - "{app.name}" | "{gz}" -6 > "{out}"'
        subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
    else:
        with tarfile.open(out, "w:gz", compresslevel=6) as tf:
            tf.add(app, arcname=top)
    return out


# --- .deb --------------------------------------------------------------------------------------------
def deb_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def control_file(ver: str, arch: str, installed_kib: int, glibc: str = "2.31") -> str:
    desc = "\n".join(" " + (line if line.strip() else ".") for line in DESCRIPTION.splitlines())
    return (
        f"Package: {PACKAGE}\n"
        f"Version: {ver}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {installed_kib}\n"
        f"Depends: libc6 (>= {glibc}), {', '.join(DEB_DEPENDS)}\n"
        f"Recommends: {', '.join(DEB_RECOMMENDS)}\n"
        "Section: science\n"
        "Priority: optional\n"
        "Homepage: https://example.org/seg-workstation\n"
        f"Description: {SUMMARY}\n{desc}\n"
    )


POSTINST = """\
#!/bin/sh
set -e
if [ "$1" = "configure" ]; then
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q /usr/share/applications || true
    command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true
fi
exit 0
"""
POSTRM = """\
#!/bin/sh
set -e
if [ "$1" = "remove" ] || [ "$1" = "purge" ]; then
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q /usr/share/applications || true
    command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true
fi
exit 0
"""


def _copy_tree(src: Path, dst: Path) -> None:
    """Hard-link when possible (same file system: instant, no extra disk), copy otherwise."""
    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy)


def _normalise_modes(root: Path) -> None:
    """0755 for folders and executables, 0644 for everything else (dpkg-deb refuses odd modes)."""
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode
        if p.is_dir() or mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            p.chmod(0o755)
        else:
            p.chmod(0o644)


def stage_deb(app: Path, staging: Path, ver: str, arch: str, glibc: str = "2.31") -> Path:
    """Lay out the package tree in ``staging`` (removed first); returns it."""
    if staging.exists():
        shutil.rmtree(staging)
    opt = staging / INSTALL_DIR.lstrip("/")
    opt.parent.mkdir(parents=True)
    _copy_tree(app, opt)
    bin_dir = staging / "usr" / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(PKG / "linux" / "seg-app.sh", bin_dir / APP_NAME)
    apps = staging / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    shutil.copy2(PKG / "linux" / f"{PACKAGE}.desktop", apps / f"{PACKAGE}.desktop")
    _install_icons(staging / "usr" / "share" / "icons" / "hicolor")
    doc = staging / "usr" / "share" / "doc" / PACKAGE
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(textwrap.dedent(f"""\
        Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
        Upstream-Name: {PACKAGE}

        Files: *
        License: Apache-2.0
        Comment: {INSTALL_DIR} bundles Python, PyTorch, MONAI, Qt (LGPLv3, PySide6), pydicom and
         their dependencies under their own licences; see {INSTALL_DIR}/_internal/*.dist-info.
        """))
    debian = staging / "DEBIAN"
    debian.mkdir()
    (debian / "postinst").write_text(POSTINST)
    (debian / "postrm").write_text(POSTRM)
    _normalise_modes(staging)
    for script in ("postinst", "postrm"):
        (debian / script).chmod(0o755)
    size, _ = dir_size(staging)
    (debian / "control").write_text(control_file(ver, arch, (size + 1023) // 1024, glibc))
    (debian / "control").chmod(0o644)
    return staging


def _install_icons(hicolor: Path) -> None:
    from PIL import Image

    src = Image.open(PKG / "icons" / f"{PACKAGE}.png")
    for s in ICON_SIZES:
        d = hicolor / f"{s}x{s}" / "apps"
        d.mkdir(parents=True, exist_ok=True)
        (src if src.size == (s, s) else src.resize((s, s), Image.Resampling.LANCZOS)).save(d / f"{PACKAGE}.png")


def build_deb(staging: Path, out: Path, compression: str) -> Path:
    """``dpkg-deb --build`` (root-owned files; no fakeroot needed)."""
    if not shutil.which("dpkg-deb"):
        sys.exit("dpkg-deb is missing (Debian/Ubuntu: apt-get install dpkg); or pass --no-deb")
    out.unlink(missing_ok=True)
    cmd = ["dpkg-deb", "--root-owner-group", f"-Z{compression}"]
    if compression in DEB_LEVELS:
        cmd.append(f"-z{DEB_LEVELS[compression]}")
    cmd += ["--build", str(staging), str(out)]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dist", default=str(ROOT / "dist"), help="output folder (default: dist/)")
    p.add_argument("--work", default=str(ROOT / "build" / "pyinstaller"), help="PyInstaller work folder")
    p.add_argument("--skip-bundle", action="store_true", help="reuse dist/seg-app/ (only re-package)")
    p.add_argument("--clean", action="store_true", help="empty PyInstaller's cache first (slower)")
    p.add_argument("--no-deb", action="store_true", help="skip the .deb")
    p.add_argument("--no-tar", action="store_true", help="skip the .tar.gz")
    p.add_argument("--deb-compression", default=os.environ.get("SEG_APP_DEB_COMPRESSION", "zstd"),
                   choices=["zstd", "xz", "gzip", "none"],
                   help="dpkg-deb compressor (default zstd: fast; xz: slightly smaller, 10x slower; "
                        "gzip: for dpkg older than 1.21.18)")
    p.add_argument("--nice", type=int, default=int(os.environ.get("SEG_APP_BUILD_NICE", "10")),
                   help="nice level for the whole build (default 10; 0: none)")
    args = p.parse_args(argv)

    if args.nice > 0 and hasattr(os, "nice"):
        os.nice(args.nice)  # PyInstaller, tar/gzip and dpkg-deb inherit it
    dist, work = Path(args.dist).resolve(), Path(args.work).resolve()
    ver = version()
    report: dict = {"version": ver, "platform": sys.platform, "machine": platform.machine()}
    t0 = time.perf_counter()
    if args.skip_bundle:
        app = dist / (APP_NAME if sys.platform != "darwin" else "Seg Workstation.app")
        if not app.exists():
            sys.exit(f"--skip-bundle: {app} does not exist; build it first")
    else:
        app = build_bundle(dist, work, args.clean)
        report["bundle_seconds"] = round(time.perf_counter() - t0, 1)
    size, files = dir_size(app)
    report.update(bundle=str(app), bundle_bytes=size, bundle_files=files)
    log(f"bundle: {app} ({mib(size)} unpacked, {files} files)")

    if sys.platform.startswith("linux"):
        machine = platform.machine()
        glibc = required_glibc(app)
        report["requires_glibc"] = glibc
        log(f"bundle needs glibc >= {glibc} (the build machine's libraries set this: build on the oldest distro)")
        if not args.no_tar:
            t = time.perf_counter()
            tgz = build_tar(app, dist / f"{PACKAGE}-{ver}-linux-{machine}.tar.gz", PACKAGE)
            report.update(tar=str(tgz), tar_bytes=tgz.stat().st_size, tar_seconds=round(time.perf_counter() - t, 1))
            log(f"tarball: {tgz} ({mib(tgz.stat().st_size)})")
        if not args.no_deb:
            t = time.perf_counter()
            arch = deb_arch()
            staging = stage_deb(app, work.parent / "deb" / f"{PACKAGE}_{ver}_{arch}", ver, arch, glibc)
            deb = build_deb(staging, dist / f"{PACKAGE}_{ver}_{arch}.deb", args.deb_compression)
            shutil.rmtree(staging)
            report.update(deb=str(deb), deb_bytes=deb.stat().st_size, deb_seconds=round(time.perf_counter() - t, 1))
            log(f"deb: {deb} ({mib(deb.stat().st_size)})")
    else:
        log("not Linux: bundle only; see docs/PACKAGING.md for the Windows installer and the macOS .dmg")
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    (dist / "package-report.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"done in {report['total_seconds']:.0f} s; report: {dist / 'package-report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
