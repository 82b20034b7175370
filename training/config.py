"""Training options: :class:`TrainConfig`, typed validation of every field, config files, the learning-rate
schedule and what ``--resume`` takes from the run folder versus the new command line.

Validation reports every bad field at once (:class:`~training.data.ProblemList`, one line per field,
naming where the value came from: the config file or the command line).

**Resume** (``seg-train train --out RUN --resume``): the run's ``config.json`` is the base. Options in
:data:`RESUME_MAY_CHANGE` given explicitly (flag or config file) replace the saved value; any other
option given explicitly with a *different* value is an error (it would change the network, the data
pipeline or the split, so the run would no longer be one run). Nothing given explicitly is ever
silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.data import DatasetError, ProblemList

__all__ = [
    "TrainConfig", "RESUME_MAY_CHANGE", "SCHEDULES", "option_problems", "load_config_file", "lr_factor",
    "resume_config", "explicit_options", "given_options",
]

SCHEDULES = ("poly", "cosine")
NETWORKS = ("UNet", "SegResNet")
NORMALIZATIONS = ("auto", "zscore_nonzero", "percentile", "ct_window", "none")


@dataclass
class TrainConfig:
    """Every training option (CLI flags and the YAML/JSON config file use these names)."""

    data: str = ""
    out: str = ""
    name: str = "brain_tumour"
    description: str = ""
    epochs: int = 50
    batch_size: int = 2
    samples_per_case: int = 2
    patch_size: list[int] | None = None
    target_spacing: list[float] | None = None
    max_patch_voxels: int = 64**3
    network: str = "UNet"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_res_units: int = 1
    lr: float = 2e-3
    weight_decay: float = 1e-5
    schedule: str = "poly"
    val_every: int = 1
    val_fraction: float = 0.2
    folds: int = 0
    fold: int = 0
    seed: int = 0
    workers: int | None = None
    cache_rate: float = 1.0
    device: str = "auto"
    amp: bool = True
    pos_fraction: float = 0.67
    augment: bool = True
    domain_augment: bool = False
    normalization: str = "auto"
    batch_dice: bool = False
    init_from: str | None = None
    overlap: float = 0.5
    sw_batch_size: int = 2
    min_lesion_ml: float = 0.0
    max_minutes: float | None = None
    check: bool = True
    progress: bool = True
    command: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> "TrainConfig":
        """A validated config; raises :class:`ProblemList` naming every bad or unknown option.

        Args:
            origins: option -> where its value came from (``"cfg.yaml"``, ``"command line"``).
        """
        problems = option_problems(values, origins)
        if problems:
            raise ProblemList("Invalid training options", problems)
        return cls(**{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})


#: Options a resumed run takes from the new command line (when given explicitly); all others come
#: from the run's config.json and may not be changed.
RESUME_MAY_CHANGE = frozenset({
    "data", "out", "fold", "epochs", "lr", "weight_decay", "schedule", "val_every", "max_minutes", "workers",
    "cache_rate", "device", "amp", "progress", "check", "name", "description", "overlap", "sw_batch_size",
    "min_lesion_ml", "command",
})


# ---- validation ---------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _type_problem(v: Any, tp: Any) -> str | None:
    """Why ``v`` is not of the annotated type ``tp`` (None when it is)."""
    args = typing.get_args(tp)
    if type(None) in args:  # X | None
        if v is None:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is int:
        return None if _is_int(v) else "must be an integer"
    if tp is float:
        return None if _is_num(v) else "must be a number"
    if tp is bool:
        return None if isinstance(v, bool) else "must be true or false"
    if tp is str:
        return None if isinstance(v, str) else "must be a string"
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        ok = _is_int if item is int else _is_num
        if not isinstance(v, (list, tuple)) or not v or not all(ok(x) for x in v):
            return f"must be a non-empty list of {'integers' if item is int else 'numbers'}"
        return None
    return None


def _range_problem(key: str, v: Any, values: Mapping[str, Any]) -> str | None:
    """Value constraints beyond the type (called only for well-typed values)."""
    positive = {"epochs", "batch_size", "samples_per_case", "max_patch_voxels", "val_every", "sw_batch_size"}
    if key in positive and v < 1:
        return "must be at least 1"
    if key in {"num_res_units", "seed", "fold", "workers", "lr", "weight_decay", "min_lesion_ml"} and v is not None and v < 0:
        return "must not be negative"
    if key == "folds" and v not in (0,) and v < 2:
        return "must be 0 (no cross-validation) or at least 2"
    if key in ("val_fraction", "overlap") and not 0 <= v < 1:
        return "must be in [0, 1)"
    if key in ("cache_rate", "pos_fraction") and not 0 <= v <= 1:
        return "must be in [0, 1]"
    if key == "max_minutes" and v is not None and v <= 0:
        return "must be positive"
    if key in ("patch_size", "target_spacing") and v is not None:
        if len(v) != 3:
            return "must have 3 values (I J K)"
        if any(x <= 0 for x in v):
            return "must be positive"
    if key in ("channels", "strides") and any(x < 1 for x in v):
        return "must be positive"
    if key == "strides" and values.get("network", "UNet") == "UNet" and _is_list(values.get("channels")) \
            and len(v) != len(values["channels"]) - 1:
        return f"must have one value fewer than channels ({len(values['channels'])} channels)"
    choices = {"schedule": SCHEDULES, "network": NETWORKS, "normalization": NORMALIZATIONS}.get(key)
    if choices and v not in choices:
        return f"must be one of {', '.join(choices)}"
    if key == "device" and not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
        return "must be auto, cpu, cuda, cuda:N or mps"
    return None


def _is_list(v: Any) -> bool:
    return isinstance(v, (list, tuple))


def option_problems(values: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> list[str]:
    """One line per unknown or invalid option: ``ORIGIN: option 'name' must be ... (got VALUE)``."""
    hints = typing.get_type_hints(TrainConfig)
    origins = origins or {}
    problems = []
    for key in values:
        where = origins.get(key, "options")
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1)
            problems.append(f"{where}: unknown option '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            continue
        v = values[key]
        why = _type_problem(v, hints[key])
        if why is None:
            why = _range_problem(key, v, values)
        if why is not None:
            problems.append(f"{where}: option '{key}' {why} (got {json.dumps(v) if _jsonable(v) else repr(v)})")
    return problems


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Options from a ``.yaml``/``.yml`` or ``.json`` file (keys as in :class:`TrainConfig`, ``-`` or ``_``)."""
    p = Path(path)
    try:
        text = p.read_text()
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - OSError, JSON and YAML errors alike
        raise DatasetError(f"Cannot read the config file {p} ({str(exc).splitlines()[0]}).") from exc
    if not isinstance(values, dict):
        raise DatasetError(f"The config file {p} must hold a mapping of option: value.")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


# ---- learning-rate schedule -------------------------------------------------------------------------
def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of 0-based ``epoch`` as a fraction of ``--lr``, in a run of ``epochs`` epochs.

    ``poly``: ``(1 - epoch / epochs) ** 0.9``; ``cosine``: from 1 down to 0.01 along half a cosine. A
    pure function of (epoch, epochs), so a resumed run with a longer ``--epochs`` uses, from the
    resumed epoch on, exactly the rate a run of that length would use.
    """
    epochs = max(1, int(epochs))
    if schedule == "poly":
        return max(0.0, 1.0 - epoch / epochs) ** 0.9
    if schedule == "cosine":
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
    raise DatasetError(f"Unknown learning-rate schedule '{schedule}' ({' or '.join(SCHEDULES)}).")


# ---- resume ---------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    norm = (lambda x: [float(y) for y in x] if _is_list(x) else x)
    return norm(a) == norm(b)


def resume_config(saved: Mapping[str, Any], given: Mapping[str, Any], saved_path: str | os.PathLike) -> TrainConfig:
    """The config of a resumed run: ``saved`` (the run's config.json) updated by the options ``given``
    explicitly on the new command line (see :data:`RESUME_MAY_CHANGE`).

    Raises:
        ProblemList: a given option would change what the run is (one line per option), or the saved
            config itself is invalid.
    """
    base = {k: v for k, v in saved.items() if k != "command" or "command" not in given}
    problems = option_problems(base, dict.fromkeys(base, str(saved_path)))
    if problems:
        raise ProblemList(f"{saved_path} is not a valid training config", problems)
    merged = dict(base)
    conflicts = []
    order = {f.name: i for i, f in enumerate(dataclasses.fields(TrainConfig))}
    for key, value in sorted(given.items(), key=lambda kv: order.get(kv[0], len(order))):  # field order
        if key in RESUME_MAY_CHANGE:
            if key == "command":
                merged[key] = base.get("command") or value
            else:
                merged[key] = value
        elif key in base and not _same(base[key], value):
            conflicts.append(f"option '{key}': the run was started with {json.dumps(base[key])}; --resume cannot change it "
                             f"to {json.dumps(value)} (start a new run folder, or fine-tune with --init-from RUN/last.pt)")
    if conflicts:
        raise ProblemList("Cannot resume with these options", conflicts)
    return TrainConfig.from_mapping(merged)


def explicit_options(cfg: TrainConfig) -> dict[str, Any]:
    """The options of ``cfg`` that differ from the defaults (what an API caller set explicitly)."""
    default = TrainConfig()
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if not _same(getattr(cfg, f.name), getattr(default, f.name))}


def given_options(cfg: TrainConfig, given: Iterable[str] | None) -> dict[str, Any]:
    """``cfg``'s values of the options named in ``given`` (None: those that differ from the defaults)."""
    if given is None:
        return explicit_options(cfg)
    return {k: getattr(cfg, k) for k in given}
