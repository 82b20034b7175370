"""The models the user has opened, and the one they chose (Qt-free; the GUI's *Model > Models...* and
``seg-app models``).

A small JSON file, ``$SEG_APP_MODEL_REGISTRY``, else ``$XDG_CONFIG_HOME/seg_app/models.json``
(``~/.config/seg_app/models.json``)::

    {"version": 1, "chosen": "/abs/path/model.pt", "recent": ["/abs/path/model.pt", "/abs/bundle"]}

It holds model paths only, never a scan or anything about a patient. A corrupt file reads as empty and is
rewritten (atomically). Each listed model is described from its own files (:class:`ModelEntry`), with the
model card ``seg-app info MODEL`` prints (:func:`seg_app.core.spec.model_card`) and its licence.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from seg_app.core.errors import CheckpointError
from seg_app.core.files import atomic_write
from seg_app.core.spec import ModelSpec, default_model_path, model_card

__all__ = ["MAX_RECENT", "ModelEntry", "chosen_model", "describe_model", "list_models", "registry_path",
           "remember_model"]

log = logging.getLogger(__name__)

#: How many recently opened models are kept.
MAX_RECENT = 10
_FORMAT = 1


@dataclass(frozen=True)
class ModelEntry:
    """One model as the model manager lists it.

    Attributes:
        path: absolute path (checkpoint file, MONAI bundle folder or nnU-Net results folder).
        kind: ``"checkpoint"``, ``"monai_bundle"`` or ``"nnunet"`` (:func:`~seg_app.core.model_sources.model_kind`).
        name, version: from the model's own description.
        inputs: input channel names (with modality for our checkpoints).
        labels: ``"value=name"`` of every output label.
        spacing: the model grid in mm, as text.
        training_data: a one-line summary of what it was trained on.
        licence: what is known of its licence (and its training data's).
        card: the model card (the text of ``seg-app info MODEL``, with the licence line).
        bundled: the model shipped with the app.
        chosen: the model the GUI starts with.
        error: why the model could not be described (then most fields are empty).
    """

    path: str
    kind: str
    name: str
    version: str = ""
    inputs: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    spacing: str = ""
    training_data: str = ""
    licence: str = ""
    card: str = ""
    bundled: bool = False
    chosen: bool = False
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"], d["labels"] = list(self.inputs), list(self.labels)
        return d

    def block(self) -> str:
        """Several lines for ``seg-app models``."""
        marks = "".join(m for m, on in ((" (bundled)", self.bundled), (" (chosen)", self.chosen)) if on)
        lines = [f"{self.name} v{self.version}{marks}" if self.version else f"{self.name}{marks}",
                 f"  kind:          {self.kind}", f"  path:          {self.path}"]
        if self.error:
            return "\n".join([*lines, f"  error:         {self.error}"])
        lines += [f"  inputs:        {', '.join(self.inputs)}", f"  labels:        {', '.join(self.labels)}",
                  f"  spacing:       {self.spacing}", f"  training data: {self.training_data}",
                  f"  licence:       {self.licence}"]
        return "\n".join(lines)


def registry_path() -> Path:
    """``$SEG_APP_MODEL_REGISTRY``, else ``$XDG_CONFIG_HOME/seg_app/models.json`` (``~/.config``)."""
    from seg_app.core.files import config_file

    return config_file("SEG_APP_MODEL_REGISTRY", "models.json")


def _write(doc: dict[str, Any]) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _read() -> dict[str, Any]:
    """The registry as ``{"chosen": str | None, "recent": [str]}``; a missing file is empty, a corrupt one
    is empty and rewritten."""
    path = registry_path()
    empty: dict[str, Any] = {"version": _FORMAT, "chosen": None, "recent": []}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        recent = raw["recent"]
        chosen = raw.get("chosen")
        if not isinstance(recent, list) or not all(isinstance(p, str) for p in recent) or not (
                chosen is None or isinstance(chosen, str)):
            raise ValueError("unexpected content")
        return {"version": _FORMAT, "chosen": chosen, "recent": recent}
    except FileNotFoundError:
        return empty
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        log.warning("model registry %s is unreadable (%s); starting an empty one", path, type(exc).__name__)
        try:
            _write(empty)
        except OSError:
            pass
        return empty


def _key(path: str | os.PathLike) -> str:
    return str(Path(path).expanduser().resolve())


def _model_root(path: str | os.PathLike) -> str:
    """The model a path stands for: a bundle's or nnU-Net folder's root for a file in it, else the path."""
    from seg_app.core.monai_bundle import bundle_root
    from seg_app.core.nnunet_folder import nnunet_root

    nn = nnunet_root(path)
    return _key(nn[0] if nn is not None else bundle_root(path) or path)


def remember_model(path: str | os.PathLike, chosen: bool = True) -> None:
    """Put ``path`` first in the recent models (at most :data:`MAX_RECENT`), and make it the chosen one.

    Raises:
        OSError: the registry file cannot be written.
    """
    key = _model_root(path)
    doc = _read()
    doc["recent"] = [key, *(p for p in doc["recent"] if _key(p) != key)][:MAX_RECENT]
    if chosen:
        doc["chosen"] = key
    _write(doc)


def chosen_model() -> str | None:
    """The remembered chosen model if it still exists, else the bundled model (None if that is missing too)."""
    chosen = _read()["chosen"]
    if chosen and Path(chosen).exists():
        return chosen
    default = default_model_path()
    return str(default) if default.is_file() else None


def _first_line(path: Path) -> str:
    try:
        return next((s.strip() for s in path.read_text(encoding="utf-8", errors="replace").splitlines() if s.strip()), "")
    except OSError:
        return ""


def _json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        return {}


def _checkpoint_training(spec: ModelSpec) -> str:
    d = spec.dataset
    parts = [f"{d['n_cases']} cases" if d.get("n_cases") else "",
             f"{d['layout']} layout" if d.get("layout") else "", str(d.get("data_source") or d.get("name") or "")]
    return ", ".join(p for p in parts if p) or "not recorded"


def _bundle_licence(root: Path) -> tuple[str, str]:
    meta = _json(root / "configs" / "metadata.json")
    code = str(meta.get("license") or "") or _first_line(root / "LICENSE") or "none in the bundle"
    data = str(meta.get("data_license") or "") or _first_line(root / "docs" / "data_license.txt")
    training = str(meta.get("data_source") or "") or "not recorded"
    return (f"{code}; data: {data}" if data else code), training


def _spacing(spec: ModelSpec) -> str:
    grid = "x".join(f"{s:g}" for s in spec.target_spacing) + " mm"
    return f"the scan's own grid (nominal {grid})" if spec.native_grid else grid


def describe_model(path: str | os.PathLike) -> ModelEntry:
    """Describe one model from its files (our checkpoint's spec, a bundle's metadata and config, an nnU-Net
    folder's JSON files; nothing from it is run).

    Raises:
        CheckpointError: not a model this app reads (one sentence naming it).
    """
    from seg_app.core.model_sources import model_kind
    from seg_app.core.nnunet_folder import describe_nnunet, nnunet_root

    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"Model '{p}' does not exist.")
    nn_root = nnunet_root(p)
    kind = "nnunet" if nn_root is not None else model_kind(p)
    if kind == "nnunet":
        model = describe_nnunet(nn_root[0] if nn_root else p)
        spec, p = model.spec, Path(model.path)
        ds = model.dataset_json
        licence = str(ds.get("licence") or ds.get("license") or "") or "not recorded in dataset.json"
        if ds.get("reference"):
            licence += f"; reference: {ds['reference']}"
        training = ", ".join(s for s in (str(ds.get("name") or model.dataset_name),
                                         f"{ds['numTraining']} cases" if ds.get("numTraining") else "") if s)
        card = model.summary() + "\n" + model_card(spec)
        spacing = "x".join(f"{s:g}" for s in model.spacing) + " mm (z, y, x)"
    elif kind == "monai_bundle":
        from seg_app.core.monai_bundle import bundle_root, bundle_spec

        p = bundle_root(p) or p
        spec = bundle_spec(p)
        licence, training = _bundle_licence(p)
        card, spacing = model_card(spec), _spacing(spec)
    else:
        from seg_app.core.spec import load_checkpoint

        spec = load_checkpoint(p).spec
        bundled = _key(p) == _key(default_model_path())
        licence = str(spec.dataset.get("licence") or spec.training.get("licence") or "") or (
            "the app's own model (synthetic training data; research use only)" if bundled else "not recorded")
        training, card, spacing = _checkpoint_training(spec), model_card(spec), _spacing(spec)
    return ModelEntry(
        path=_key(p), kind=kind, name=spec.name, version=spec.version,
        inputs=tuple(f"{c.name} ({c.modality})" for c in spec.channels),
        labels=tuple(f"{lab.value}={lab.name}" for lab in spec.labels), spacing=spacing, training_data=training,
        licence=licence, card=f"{card}\nLicence: {licence}",
    )


def _entry(path: str, bundled: bool, chosen: str | None) -> ModelEntry:
    try:
        entry = describe_model(path)
    except CheckpointError as exc:
        entry = ModelEntry(path=_key(path), kind="unknown", name=Path(path).name, error=str(exc))
    return replace(entry, bundled=bundled, chosen=entry.path == chosen)


def list_models() -> list[ModelEntry]:
    """The bundled model first, then the recently opened ones that still exist (newest first, no duplicates,
    at most :data:`MAX_RECENT`); exactly one entry is ``chosen`` (the one :func:`chosen_model` gives)."""
    chosen_path = chosen_model()
    chosen = _key(chosen_path) if chosen_path else None
    default = default_model_path()
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    if default.is_file():
        entries.append(_entry(str(default), True, chosen))
        seen.add(_key(default))
    for p in _read()["recent"]:
        key = _key(p)
        if key in seen or not Path(key).exists():
            continue
        entry = _entry(key, False, chosen)
        if entry.path in seen:  # e.g. a bundle remembered by its folder and by its metadata.json
            continue
        seen.update((key, entry.path))
        entries.append(entry)
        if len(entries) > MAX_RECENT:
            break
    return entries
