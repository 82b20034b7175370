"""Fast checks of the installer sources in packaging/ (no PyInstaller run: that is scripts/package_smoke.sh).

The .deb test lays out a package around a stand-in executable and unpacks it with ``dpkg -x`` the way
the smoke test does with the real bundle.
"""

from __future__ import annotations

import configparser
import importlib.util
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "packaging"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("packaging_build", PKG / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spec_and_scripts_parse():
    compile((PKG / "seg-app.spec").read_text(), "seg-app.spec", "exec")
    compile((PKG / "seg_app_entry.py").read_text(), "seg_app_entry.py", "exec")
    compile((PKG / "hooks" / "rthook_seg_app.py").read_text(), "rthook_seg_app.py", "exec")
    for script in (ROOT / "scripts" / "package_smoke.sh", PKG / "linux" / "seg-app.sh", PKG / "macos" / "make_dmg.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_spec_keeps_training_and_test_tooling_out():
    text = (PKG / "seg-app.spec").read_text()
    for module in ('"training"', '"tests"', '"pytest"', '"matplotlib"', '"tensorboard"', '"torch.utils.tensorboard"'):
        assert module in text.split("EXCLUDES = [", 1)[1].split("]", 1)[0], module
    assert 'copy_metadata' in text and '"pylibjpeg-openjpeg"' in text and '"monai"' in text


def test_desktop_entry(build):
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(PKG / "linux" / f"{build.PACKAGE}.desktop")
    entry = cp["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Exec"].split()[0] == f"{build.INSTALL_DIR}/{build.APP_NAME}"
    assert entry["Icon"] == build.PACKAGE
    assert entry["Terminal"] == "false"
    assert entry["Categories"].endswith(";")


def test_icons_exist_and_png_is_256_rgba():
    png = (PKG / "icons" / "seg-workstation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour_type = struct.unpack(">IIBB", png[16:26])
    assert (width, height, depth, colour_type) == (256, 256, 8, 6)  # 8-bit RGBA
    ico = (PKG / "icons" / "seg-workstation.ico").read_bytes()
    assert ico[:4] == b"\x00\x00\x01\x00" and struct.unpack("<H", ico[4:6])[0] >= 4
    assert (PKG / "icons" / "seg-workstation.icns").read_bytes()[:4] == b"icns"


def test_inno_setup_script_has_start_menu_and_uninstaller():
    iss = (PKG / "seg-workstation.iss").read_text()
    assert r'Source: "{#BundleDir}\*"' in iss and r'#define BundleDir "..\dist\seg-app"' in iss
    assert "[Icons]" in iss and r'Name: "{group}\{#AppName}"' in iss and "{uninstallexe}" in iss
    assert "AppId={{" in iss and "UninstallDisplayIcon" in iss


def test_control_file(build):
    text = build.control_file("1.2.3", "amd64", 4242)
    fields = dict(line.split(": ", 1) for line in text.splitlines() if line and not line.startswith(" "))
    assert fields["Package"] == "seg-workstation" and fields["Version"] == "1.2.3"
    assert fields["Architecture"] == "amd64" and fields["Installed-Size"] == "4242"
    assert "libxcb-cursor0" in fields["Depends"]
    assert all(line.startswith(" ") for line in text.split("Description: ", 1)[1].splitlines()[1:])


def test_deb_layout_and_launcher(build, tmp_path):
    app = tmp_path / "dist" / build.APP_NAME
    app.mkdir(parents=True)
    exe = app / build.APP_NAME
    exe.write_text('#!/bin/sh\necho "fake seg-app $*"\n')
    exe.chmod(0o755)
    (app / "sample_scans").mkdir()
    staging = build.stage_deb(app, tmp_path / "stage", "9.9.9", "amd64")
    deb = build.build_deb(staging, tmp_path / "x.deb", "gzip")
    fields = subprocess.run(["dpkg-deb", "--field", str(deb), "Package", "Version"], capture_output=True,
                            text=True, check=True).stdout
    assert "Package: seg-workstation" in fields and "Version: 9.9.9" in fields
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    assert " root/root " in listing
    root = tmp_path / "root"
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    for rel in ("opt/seg-workstation/seg-app", "usr/share/applications/seg-workstation.desktop",
                "usr/share/icons/hicolor/48x48/apps/seg-workstation.png", "usr/share/doc/seg-workstation/copyright"):
        assert (root / rel).exists(), rel
    out = subprocess.run([str(root / "usr" / "bin" / "seg-app"), "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "fake seg-app --version"


def test_runtime_hook_pins_monai_version_from_metadata():
    """The frozen app's MONAI version comes from distribution metadata (what the runtime hook does)."""
    import sys

    code = (
        f"exec(open({str(PKG / 'hooks' / 'rthook_seg_app.py')!r}).read())\n"
        "import monai\n"
        "from importlib import metadata\n"
        "assert monai.__version__ == metadata.version('monai'), monai.__version__\n"
        "import sys\n"
        "assert 'bundled distribution metadata' in sys.modules['monai._version'].__doc__\n"
        "print(monai.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()[0].isdigit()
