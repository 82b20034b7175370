"""Safe file writing shared by every exporter (Qt-free, lowest layer): atomic replacement and the
"never overwrite the source scan" check."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from seg_app.core.errors import ExportError

__all__ = ["atomic_write", "overwrites_source", "save_dataset_atomically"]


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Read once at import (os.umask can only be read by setting it, which is not thread-safe later).
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` atomically.

    The temporary name keeps ``path``'s suffixes (e.g. ``.nii.gz``) so writers that pick the format
    from the name work. On any error the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save_dataset_atomically(dataset: Any, path: str | os.PathLike[str], what: str) -> None:
    """Save a pydicom ``Dataset`` (SEG, SR, ...) to ``path`` atomically, in the DICOM file format.

    Raises:
        ExportError: the file cannot be written; the message names ``what`` (e.g. "DICOM SEG").
    """
    try:
        with atomic_write(path) as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
    except OSError as exc:
        raise ExportError(f"Cannot write the {what} {path}: {exc.strerror or exc}.") from exc


def overwrites_source(path: str | os.PathLike[str], sources: Iterable[str | os.PathLike[str]]) -> bool:
    """True when writing ``path`` would replace one of ``sources`` (same resolved path, or the same
    file through another name such as a hard link)."""
    target = Path(path)
    for src in sources:
        s = Path(src)
        try:
            if s.resolve() == target.resolve() or (s.exists() and target.exists() and os.path.samefile(s, target)):
                return True
        except OSError:
            continue
    return False


def config_file(env_var: str, name: str) -> Path:
    """A user settings file: ``$<env_var>`` when set, else ``$XDG_CONFIG_HOME/seg_app/<name>`` (``~/.config``)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "seg_app" / name
