"""Reading a MONAI bundle's config as data, and the security walk over it (Qt-free; nothing of the
bundle runs): finding the bundle folder, loading ``configs/inference.json|yaml`` with
:meth:`monai.bundle.ConfigParser.load_config_file`, expanding ``%`` macros by hand from files inside the
bundle only, and :func:`check_bundle_config`, which refuses ``_requires_``, ``_mode_`` other than
``default``, ``_target_`` outside MONAI's networks/transforms/workflows and every ``$`` expression but a
few harmless forms. :mod:`seg_app.core.monai_bundle` maps the checked config onto our ``ModelSpec``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seg_app.core.errors import CheckpointError

__all__ = ["CONFIG_NAMES", "bundle_root", "check_bundle_config", "is_bundle", "read_bundle_config"]


#: Inference configs looked for in ``configs/``, in order.
CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")

#: Workflow classes of Model Zoo inference configs: allowed in the file, never instantiated here.
_WORKFLOW_TARGETS = frozenset({
    "Compose", "Dataset", "CacheDataset", "PersistentDataset", "DataLoader", "ThreadDataLoader",
    "SupervisedEvaluator", "StatsHandler", "CheckpointLoader", "SlidingWindowInferer", "SimpleInferer",
    "SlidingWindowInfererAdapt", "MeanDice", "from_engine",
})
#: Modules ``$import`` may name in the top-level ``imports`` list (recognised, never imported).
_IMPORTABLE = frozenset({"glob", "numpy", "os", "json", "torch", "monai", "pathlib", "scripts"})
#: Workflow expressions of the Model Zoo's configs (whitespace removed): recognised, never evaluated.
_KNOWN_EXPRESSIONS = frozenset(re.sub(r"\s+", "", e) for e in (
    "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
    "$monai.data.load_decathlon_datalist(@data_list_file_path, data_list_key='testing', base_dir=@dataset_dir)",
    "$list(sorted(glob.glob(os.path.join(@dataset_dir, 'imagesTs', '*.nii.gz'))))",
    "$[{'image': i} for i in @datalist]",
    "$@network_def.to(@device)",
    "$setattr(torch.backends.cudnn, 'benchmark', True)",
    "$@checkpointloader(@evaluator) if @load_pretrain else None",
    "$@checkpointloader(@evaluator)",
    "$@evaluator.run()",
    # seg-train export --bundle (training/bundle.py): its own workflow lines
    "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii.gz')) + glob.glob(os.path.join(@dataset_dir, '*.nii')))",
    "$monai.utils.set_determinism(seed=0)",
    "$torch.set_grad_enabled(False)",
    "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
    "$@network.eval()",
    "$[@postprocessing(d) for b in @dataloader for d in monai.data.decollate_batch("
    "{'image': b['image'], 'pred': @inferer(b['image'].to(@device), @network).cpu()})]",
    # brats_mri_segmentation's postprocessing: thresholded TC/WT/ET channels -> labels (ET written as 4)
    "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))",
))
#: dtype expressions: recognised and read as the dtype's name, never evaluated.
_DTYPES = {f"${m}.{t}": t for m in ("torch", "numpy", "np") for t in ("float32", "float64", "uint8", "int16", "int32")}
_BRATS_LAMBDA = re.sub(r"\s+", "",
                       "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))")
_IMPORT = re.compile(r"\$\s*import\s+([A-Za-z_][\w.]*)\s*$")
_PATH_JOIN = re.compile(r"""\$\s*@([A-Za-z_][\w:#]*)\s*\+\s*(['"])([\w./\-]*)\2\s*$""")
_SECTIONS = ("network_def", "preprocessing", "inferer", "postprocessing")


def _refuse(what: str) -> CheckpointError:
    return CheckpointError(f"refused bundle config: {what}")


# ---- finding a bundle ----------------------------------------------------------------------
def bundle_root(path: str | Path) -> Path | None:
    """The bundle folder of ``path`` (the folder, or a file in its ``configs/``), or None."""
    p = Path(path)
    if p.is_file() and p.parent.name == "configs":
        p = p.parent.parent
    if p.is_dir() and (p / "configs" / "metadata.json").is_file():
        return p
    return None


def is_bundle(path: str | Path) -> bool:
    """True for a MONAI bundle folder (one with ``configs/metadata.json``) or a file in its ``configs/``."""
    return bundle_root(path) is not None


def _inside(root: Path, path: Path, what: str) -> Path:
    """``path`` resolved, refused when it (or a link on the way) leads outside the bundle."""
    real, base = path.resolve(), root.resolve()
    if real != base and base not in real.parents:
        raise _refuse(f"{what} '{path}' lies outside the bundle folder")
    return real


# ---- reading the config as data --------------------------------------------------------------
def _load_file(root: Path, path: Path) -> Any:
    from monai.bundle import ConfigParser

    _inside(root, path, "config file")
    try:
        return ConfigParser.load_config_file(path)  # json.load / YAML SafeLoader: data only
    except Exception as exc:  # noqa: BLE001 - any parse failure is one clear line
        raise CheckpointError(f"MONAI bundle config '{path.name}' is not valid JSON/YAML ({exc}).") from exc


def _lookup(config: Any, ident: str, where: str) -> Any:
    """The raw item at ``ident`` (``a::b::0`` or ``a#b#0``) of ``config``."""
    node = config
    for part in (k for k in re.split(r"::|#", ident) if k != ""):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise CheckpointError(f"MONAI bundle config: reference '{ident}' at {where} does not exist.")
    return node


def _expand_macros(node: Any, config: Any, root: Path, where: str, depth: int = 0) -> Any:
    """Replace ``%file#id`` / ``%#id`` macros by (copies of) what they name; files only from the bundle."""
    if depth > 8:
        raise _refuse(f"macros nested too deeply at {where}")
    if isinstance(node, Mapping):
        return {k: _expand_macros(v, config, root, f"{where}::{k}" if where else str(k), depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_macros(v, config, root, f"{where}::{i}", depth) for i, v in enumerate(node)]
    if isinstance(node, str) and node.startswith("%"):
        text = node[1:]
        m = re.match(r"(.*?\.(?:json|ya?ml))(?:(?:::|#)(.*))?$", text, re.IGNORECASE)
        if m:
            file, ident = m.group(1), m.group(2) or ""
            target = Path(file) if Path(file).is_absolute() else root / file
            _inside(root, target, f"macro '{node}' at {where}: file")
            source = _load_file(root, target)
        else:
            ident, source = text, config
        return _expand_macros(copy.deepcopy(_lookup(source, ident, where)), source, root, where, depth + 1)
    return node


def read_bundle_config(root: str | Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """``(metadata, inference config, config path)`` of a bundle, as data (macros expanded), checked by
    :func:`check_bundle_config`. Raises ``CheckpointError``."""
    root = Path(root)
    meta_path = root / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise CheckpointError(f"'{root.name}' is not a MONAI bundle (no configs/metadata.json).")
    meta = _load_file(root, meta_path)
    cfg_path = next((root / "configs" / n for n in CONFIG_NAMES if (root / "configs" / n).is_file()), None)
    if cfg_path is None:
        raise CheckpointError(f"MONAI bundle '{root.name}' has no configs/inference.json (or .yaml).")
    raw = _load_file(root, cfg_path)
    if not isinstance(meta, dict) or not isinstance(raw, dict):
        raise CheckpointError(f"MONAI bundle '{root.name}': metadata.json and {cfg_path.name} must be JSON objects.")
    config = _expand_macros(raw, raw, root, "")
    check_bundle_config(config)
    return meta, config, cfg_path


# ---- the security walk -----------------------------------------------------------------------
def _allowed_target_names() -> frozenset[str]:
    """MONAI transform and network classes (looked up by name, never instantiated) and workflow classes."""
    import monai.networks.nets as nets
    import monai.transforms as transforms
    import torch

    names = set(_WORKFLOW_TARGETS)
    for name in dir(transforms):
        obj = getattr(transforms, name)
        if isinstance(obj, type) and issubclass(obj, transforms.Transform):
            names.add(name)
    for name in dir(nets):
        obj = getattr(nets, name)
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            names.add(name)
    return frozenset(names)


def _check_target(target: Any, where: str, allowed: frozenset[str]) -> None:
    if not isinstance(target, str):
        raise _refuse(f"_target_ at {where} is not a class name")
    parts = target.split(".")
    ok = parts[-1] in allowed and (len(parts) == 1 or parts[0] == "monai") and all(p.isidentifier() for p in parts)
    if not ok:
        raise _refuse(f"_target_ '{target}' at {where} is not an allowed MONAI class")


def _check_expression(expr: str, where: str) -> None:
    m = _IMPORT.match(expr)
    if m:
        if re.fullmatch(r"imports::\d+", where) and m.group(1).split(".")[0] in _IMPORTABLE:
            return
        raise _refuse(f"expression '{expr}' at {where} (imports are allowed only in the top-level 'imports' list)")
    if _PATH_JOIN.match(expr) or re.sub(r"\s+", "", expr) in _KNOWN_EXPRESSIONS or expr in _DTYPES:
        return
    raise _refuse(f"expression '{expr}' at {where} would run Python code")


def check_bundle_config(config: Any) -> None:
    """Refuse anything in a (macro-expanded) bundle config that would run code when MONAI parsed it.

    Raises:
        CheckpointError: ``refused bundle config: <what> at <where> ...`` for the first item found.
    """
    allowed = _allowed_target_names()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                k = str(key)
                at = f"{where}::{k}" if where else k
                if k == "_requires_":
                    raise _refuse(f"_requires_ at {at} (it runs other items first)")
                if k == "_mode_" and value != "default":
                    raise _refuse(f"_mode_ {value!r} at {at} (only 'default' is allowed)")
                if k == "_target_":
                    _check_target(value, where or "the top level", allowed)
                if k == "_disabled_" and not isinstance(value, bool) and str(value).lower() not in ("true", "false"):
                    raise _refuse(f"_disabled_ {value!r} at {at} (only true or false)")
                walk(value, at)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}::{i}")
        elif isinstance(node, str):
            text = node.strip()
            if text.startswith("$"):
                _check_expression(text, where)
            elif text.startswith("%"):
                raise _refuse(f"macro '{text}' at {where}")

    walk(config, "")
