"""Entry point of the frozen ``seg-app`` bundle (PyInstaller; see ``packaging/seg-app.spec``).

It is ``seg_app.cli:main`` plus two things only a frozen program needs:

* ``multiprocessing.freeze_support()``, so a worker process started by torch or the standard library
  runs the worker instead of a second copy of the app;
* a self-check for the packaging smoke test: with ``SEG_APP_BUNDLE_CHECK=1`` in the environment the
  executable prints one JSON object (package versions, pydicom pixel decoders, Qt platform plugins,
  bundled model and sample scans, modules that must stay out of the bundle) and exits 0, or 1 when a
  check failed. Nothing of this runs in a normal start.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path

#: Modules the bundle must not contain (training code, test tooling, heavy optional dependencies).
MUST_BE_ABSENT = ("training", "tests", "matplotlib", "pandas", "tensorboard", "sklearn", "sympy", "pytest",
                  "SimpleITK", "nilearn", "torchvision")

#: Transfer syntaxes whose pixel data the app must decode: JPEG baseline/extended/lossless, JPEG-LS,
#: JPEG 2000 and RLE (pylibjpeg plugins, pyjpegls, pydicom's own RLE decoder).
REQUIRED_DECODERS = (
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
)


def app_dir() -> Path:
    """Folder holding the executable (the installed app folder, e.g. ``/opt/seg-workstation``)."""
    return Path(sys.executable).resolve().parent


def bundle_check() -> dict:
    """What the packaging smoke test asserts about the frozen app; ``problems`` lists failed checks."""
    import importlib
    import importlib.util

    problems: list[str] = []
    report: dict = {"frozen": bool(getattr(sys, "frozen", False)), "executable": sys.executable}

    import monai
    import numpy
    import pydicom
    import torch

    import seg_app

    report["versions"] = {
        "seg_app": seg_app.__version__, "torch": torch.__version__, "monai": monai.__version__,
        "numpy": numpy.__version__, "pydicom": pydicom.__version__, "python": sys.version.split()[0],
    }
    if not monai.__version__ or "unknown" in monai.__version__ or monai.__version__.startswith("0+"):
        problems.append(f"monai reports version {monai.__version__!r}")
    from importlib import metadata

    try:
        if metadata.version("monai") != monai.__version__:
            problems.append(f"monai metadata {metadata.version('monai')} != monai.__version__ {monai.__version__}")
    except metadata.PackageNotFoundError:
        problems.append("monai metadata missing (copy_metadata('monai'))")

    from pydicom.pixels.decoders.base import get_decoder
    from pylibjpeg.utils import get_pixel_data_decoders

    report["pylibjpeg_decoders"] = sorted(get_pixel_data_decoders())
    decoders = {}
    for uid in REQUIRED_DECODERS:
        dec = get_decoder(uid)
        decoders[uid] = sorted(dec.available_plugins)
        if not dec.is_available:
            problems.append(f"no pixel decoder for {uid} ({dec.UID.name})")
    report["pydicom_decoders"] = decoders

    from PySide6.QtCore import QLibraryInfo

    plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    found = sorted(p.name for p in plugins.glob("*")) if plugins.is_dir() else []
    report["qt_platform_plugins"] = found
    for name in ("offscreen", "xcb"):
        if not any(name in f for f in found):
            problems.append(f"Qt platform plugin '{name}' missing from {plugins}")

    from seg_app.core.spec import default_model_path

    model = default_model_path()
    report["default_model"] = {"path": str(model), "exists": model.is_file()}
    if not model.is_file():
        problems.append(f"bundled default model missing: {model}")
    samples = [app_dir() / "sample_scans", Path(getattr(sys, "_MEIPASS", app_dir())) / "sample_scans"]
    sample_dir = next((p for p in samples if p.is_dir()), None)
    report["sample_scans"] = sorted(p.name for p in sample_dir.iterdir()) if sample_dir else []
    report["sample_scans_dir"] = str(sample_dir) if sample_dir else None
    if sample_dir is None or not any(p.name.endswith(".nii.gz") for p in sample_dir.iterdir()):
        problems.append("sample scans missing")

    present = [m for m in MUST_BE_ABSENT if importlib.util.find_spec(m) is not None]
    report["unwanted_modules"] = present
    if present:
        problems.append(f"modules that should be excluded are bundled: {', '.join(present)}")
    for name in ("onnxruntime", "onnx", "highdicom", "cc3d", "skimage.measure", "seg_app.core.dicom_seg",
                 "seg_app.gui.main_window"):  # imported lazily by the app: must be importable
        try:
            module = importlib.import_module(name)
            report["versions"].setdefault(name, getattr(module, "__version__", "ok"))
        except Exception as exc:  # noqa: BLE001 - any import failure is a packaging problem
            problems.append(f"{name} not importable: {type(exc).__name__}: {exc}")
    report["problems"] = problems
    return report


def main() -> int:
    multiprocessing.freeze_support()
    if os.environ.get("SEG_APP_BUNDLE_CHECK"):
        report = bundle_check()
        print(json.dumps(report, indent=1))
        return 1 if report["problems"] else 0
    from seg_app.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
