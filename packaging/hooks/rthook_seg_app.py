"""PyInstaller runtime hook of the seg-app bundle (runs before the entry script).

MONAI takes ``monai.__version__`` from ``monai/_version.py`` (versioneer). Releases whose
``_version.py`` derives the version from git or from the folder name report ``0+unknown`` once
frozen, which breaks MONAI's own version checks and the versions recorded in checkpoints. The spec
ships MONAI's distribution metadata (``copy_metadata("monai")``), so this hook pre-registers a
``monai._version`` that answers from that metadata; MONAI's ``from ._version import get_versions``
then finds it in ``sys.modules``. Without the metadata nothing is changed.
"""

import sys
import types


def _pin_monai_version() -> None:
    from importlib import metadata

    try:
        version = metadata.version("monai")
    except metadata.PackageNotFoundError:
        return
    info = {"version": version, "full-revisionid": None, "dirty": False, "error": None, "date": None}
    module = types.ModuleType("monai._version", "MONAI version from the bundled distribution metadata.")
    module.get_versions = lambda: dict(info)
    sys.modules.setdefault("monai._version", module)


_pin_monai_version()
