"""nnU-Net v2 trained-model folders read as data (Qt-free; nnU-Net itself is not imported): which folder
is one, its channels, labels (BraTS-style regions included), folds and checkpoints, and the app's
``ModelSpec`` for it. :mod:`seg_app.core.nnunet_model` runs such a model with nnU-Net's predictor.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg_app.core.errors import CheckpointError
from seg_app.core.spec import (
    DEFAULT_COLORS,
    ChannelSpec,
    InferenceSpec,
    LabelSpec,
    ModelSpec,
    NetworkSpec,
    NormalizationSpec,
)

__all__ = ["CHECKPOINT_NAMES", "INSTALL_HINT", "NnUNetModel", "describe_nnunet", "is_nnunet_folder", "nnunet_root",
           "parse_folds"]

#: What to install when nnU-Net is missing (said in every error about it).
INSTALL_HINT = "this is an nnU-Net model; install seg-workstation[nnunet] (pip install nnunetv2)"
#: The checkpoints nnU-Net writes per fold.
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")


# ---- the folder ----------------------------------------------------------------------------
def is_nnunet_folder(path: str | os.PathLike) -> bool:
    """True for an nnU-Net v2 trained-model folder (``dataset.json`` and ``plans.json`` in it)."""
    p = Path(path)
    return p.is_dir() and (p / "dataset.json").is_file() and (p / "plans.json").is_file()


def nnunet_root(path: str | os.PathLike) -> tuple[Path, str | None, str | None] | None:
    """The trained-model folder a path points into: ``(folder, fold, checkpoint)`` or None.

    The folder itself gives ``(folder, None, None)``; its ``dataset.json``/``plans.json`` the same; a fold's
    checkpoint ``fold_0/checkpoint_best.pth`` gives ``(folder, "0", "checkpoint_best.pth")`` (what a file
    dialog returns when the user picks one checkpoint).
    """
    p = Path(path)
    if is_nnunet_folder(p):
        return p, None, None
    if p.name in ("dataset.json", "plans.json") and is_nnunet_folder(p.parent):
        return p.parent, None, None
    if p.suffix == ".pth" and p.parent.name.startswith("fold_") and is_nnunet_folder(p.parent.parent):
        return p.parent.parent, p.parent.name[len("fold_"):], p.name
    return None


def parse_folds(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"0,1"`` -> ``("0", "1")``; ``"all"`` -> ``("all",)``; None or empty -> None (every fold)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    folds = tuple(t.strip() for t in items if t.strip())
    for f in folds:
        if f != "all" and not f.isdigit():
            raise CheckpointError(f"Invalid nnU-Net fold '{f}': give fold numbers such as 0,1 (or 'all').")
    return folds or None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"The nnU-Net model folder has no {path.name} ({path}).") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"The nnU-Net model's {path.name} cannot be read ({exc}).") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"The nnU-Net model's {path.name} is not a JSON object.")
    return data


@dataclass(frozen=True)
class NnUNetModel:
    """An nnU-Net v2 trained-model folder, described from its JSON files alone (nothing imported, no
    weights read).

    Attributes:
        path: the folder (``.../Trainer__Plans__Configuration``).
        dataset_name: ``DatasetXXX_Name`` (the parent folder), or the plans' ``dataset_name``.
        trainer, plans, configuration: from the folder name ``Trainer__Plans__Configuration``.
        channels: input channel names in order (``dataset.json`` ``channel_names``).
        label_names: output label value -> name (regions: the ``regions_class_order`` values).
        regions: region-based training: region name -> the dataset label values it covers, else empty.
        file_ending: the dataset's image file ending (``.nii.gz``).
        checkpoints: fold (``"0"``, ``"all"``) -> the checkpoint file names present in ``fold_N/``.
        spacing: the configuration's target spacing in mm, nnU-Net axis order ``(z, y, x)``.
        patch_size: the configuration's patch size, nnU-Net axis order.
        dataset_json: ``dataset.json`` as read (nnU-Net's predictor takes it as it is).
        plans_json: ``plans.json`` as read.
        use_folds, use_checkpoint: the folds and checkpoint to run when nothing else is asked (a path to
            one fold's checkpoint selects those; None: every fold with ``use_checkpoint``).
    """

    path: Path
    dataset_name: str
    trainer: str
    plans: str
    configuration: str
    channels: tuple[str, ...]
    label_names: dict[int, str]
    regions: dict[str, tuple[int, ...]]
    file_ending: str
    checkpoints: dict[str, tuple[str, ...]]
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    dataset_json: dict[str, Any] = field(repr=False)
    plans_json: dict[str, Any] = field(repr=False)
    use_folds: tuple[str, ...] | None = None
    use_checkpoint: str = "checkpoint_final.pth"

    def folds_with(self, checkpoint: str = "checkpoint_final.pth") -> tuple[str, ...]:
        """The numbered folds that have ``checkpoint`` (``all`` is not included, as in nnU-Net's
        auto-detection; ask for it explicitly)."""
        return tuple(f for f, names in self.checkpoints.items() if f != "all" and checkpoint in names)

    @property
    def spec(self) -> ModelSpec:
        """A :class:`ModelSpec` with the dataset's channels and label names, so measurements, exports, the
        GUI and DICOM SEG work unchanged (the network, spacing and normalisation are nnU-Net's own)."""
        return _spec_of(self)

    def summary(self) -> str:
        """Several lines for ``seg-app info`` and the GUI's model card."""
        folds = ", ".join(f"fold {f}: {'/'.join(n.replace('checkpoint_', '').replace('.pth', '') for n in names)}"
                          for f, names in sorted(self.checkpoints.items())) or "none"
        labels = ", ".join(f"{v}={n}" for v, n in self.label_names.items())
        return "\n".join([
            f"nnU-Net v2 model {self.dataset_name} ({self.trainer}, {self.plans}, {self.configuration})",
            f"Inputs: {', '.join(self.channels)}",
            f"Labels: {labels}" + (" (region-based: " + ", ".join(self.regions) + ")" if self.regions else ""),
            f"Spacing (z, y, x): {'x'.join(f'{s:g}' for s in self.spacing)} mm; patch {'x'.join(map(str, self.patch_size))}",
            f"Folds: {folds}",
            f"Folder: {self.path}",
        ])


def describe_nnunet(path: str | os.PathLike) -> NnUNetModel:
    """Read an nnU-Net v2 trained-model folder's ``dataset.json``, ``plans.json`` and fold folders.

    Raises:
        CheckpointError: not an nnU-Net folder, or its JSON files are missing or invalid.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"The nnU-Net model folder {root} does not exist.")
    dataset = _read_json(root / "dataset.json")
    plans = _read_json(root / "plans.json")
    parts = root.name.split("__")
    trainer, plans_name, config = (parts + ["", "", ""])[:3] if len(parts) == 3 else ("", "", "")
    if not config:
        raise CheckpointError(
            f"The nnU-Net model folder name '{root.name}' is not Trainer__Plans__Configuration "
            "(e.g. nnUNetTrainer__nnUNetPlans__3d_fullres); pass the folder nnU-Net wrote."
        )
    configs = plans.get("configurations")
    if not isinstance(configs, dict) or config not in configs:
        raise CheckpointError(f"The nnU-Net model's plans.json has no configuration '{config}'.")
    try:
        conf = _configuration(configs, config)
        spacing = tuple(float(s) for s in conf["spacing"])
        patch = tuple(int(s) for s in conf["patch_size"])
        channel_map = dataset.get("channel_names", dataset.get("modality"))
        channels = tuple(str(channel_map[k]) for k in sorted(channel_map, key=lambda k: int(k)))
        label_names, regions = _labels(dataset)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"The nnU-Net model's dataset.json or plans.json is incomplete ({exc!r}).") from exc
    if not channels:
        raise CheckpointError("The nnU-Net model's dataset.json declares no input channel (channel_names).")
    checkpoints: dict[str, tuple[str, ...]] = {}
    for fold_dir in sorted(root.glob("fold_*")):
        fold = fold_dir.name[len("fold_"):]
        if fold_dir.is_dir() and (fold == "all" or fold.isdigit()):
            checkpoints[fold] = tuple(n for n in CHECKPOINT_NAMES if (fold_dir / n).is_file())
    dataset_name = root.parent.name if re.match(r"Dataset\d+_", root.parent.name) else str(plans.get("dataset_name", ""))
    return NnUNetModel(
        path=root, dataset_name=dataset_name or root.name, trainer=trainer, plans=plans_name, configuration=config,
        channels=channels, label_names=label_names, regions=regions, file_ending=str(dataset.get("file_ending", "")),
        checkpoints=checkpoints, spacing=spacing, patch_size=patch, dataset_json=dataset, plans_json=plans,
    )


def _configuration(configs: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A plans configuration with ``inherits_from`` resolved (as nnU-Net's ``PlansManager`` does)."""
    conf = dict(configs[name])
    seen = {name}
    while "inherits_from" in conf:
        parent = conf.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise CheckpointError(f"The nnU-Net plans' configuration '{name}' inherits from an unknown '{parent}'.")
        seen.add(parent)
        conf = {**configs[parent], **conf}
    return conf


def _labels(dataset: Mapping[str, Any]) -> tuple[dict[int, str], dict[str, tuple[int, ...]]]:
    """Output label value -> name, and the regions (region-based training) or ``{}``.

    Label-based: the ``labels`` values (``ignore`` left out: it is never predicted). Region-based
    (BraTS-style ``"whole tumor": [1, 2, 3]`` with ``regions_class_order``): nnU-Net writes value
    ``regions_class_order[i]`` where region ``i`` is on, later regions painted over earlier ones, so value
    ``i`` means "region i and not the next one"; BraTS's nested WT/TC/ET get the sub-region names
    (oedema, necrotic / non-enhancing core, enhancing tumour) so WT/TC/ET composites are found again.
    """
    raw = dataset["labels"]
    regions = {str(k): tuple(int(x) for x in v) for k, v in raw.items() if isinstance(v, (list, tuple))}
    if not regions:
        names = {int(v): str(k) for k, v in raw.items() if str(k).lower() != "ignore"}
        if 0 not in names:
            raise CheckpointError("The nnU-Net model's dataset.json labels have no background (value 0).")
        return dict(sorted(names.items())), {}
    order = [int(v) for v in dataset.get("regions_class_order", [])]
    fg_regions = [(k, v) for k, v in raw.items() if isinstance(v, (list, tuple)) and str(k).lower() != "ignore"]
    if len(order) != len(fg_regions):
        raise CheckpointError("The nnU-Net model's dataset.json has regions but no matching regions_class_order.")
    names = {0: "background"}
    brats = _brats_names([k for k, _v in fg_regions])
    for i, (value, (name, _labels_in)) in enumerate(zip(order, fg_regions)):
        if brats is not None:
            names[value] = brats[i]
        elif i + 1 < len(fg_regions):
            names[value] = f"{name} without {fg_regions[i + 1][0]}"
        else:
            names[value] = str(name)
    return names, {str(k): tuple(int(x) for x in v) for k, v in fg_regions}


def _brats_names(region_names: Sequence[str]) -> list[str] | None:
    """Sub-region names for BraTS's nested regions (whole tumour, tumour core, enhancing) in this order."""
    low = [n.lower().replace("_", " ") for n in region_names]
    if len(low) == 3 and "whole" in low[0] and "core" in low[1] and "enhanc" in low[2]:
        return ["oedema", "necrotic / non-enhancing core", "enhancing tumour"]
    return None


def _spec_of(model: NnUNetModel) -> ModelSpec:
    labels = tuple(
        LabelSpec(v, n, (0, 0, 0) if v == 0 else DEFAULT_COLORS[(i - 1) % len(DEFAULT_COLORS)])
        for i, (v, n) in enumerate(model.label_names.items())
    )
    conf = _configuration(model.plans_json["configurations"], model.configuration)
    channels = tuple(ChannelSpec(c, "CT" if c.strip().upper() == "CT" else "MR") for c in model.channels)
    spacing = tuple(reversed(model.spacing)) if len(model.spacing) == 3 else (1.0, *reversed(model.spacing))
    patch = tuple(reversed(model.patch_size)) if len(model.patch_size) == 3 else (1, *reversed(model.patch_size))
    return ModelSpec(
        name=model.dataset_name,
        network=NetworkSpec(name=f"nnU-Net {model.trainer}", kwargs={
            "plans": model.plans, "configuration": model.configuration,
            "architecture": str(conf.get("architecture", {}).get("network_class_name", "")),
        }),
        channels=channels,
        labels=labels,
        target_spacing=spacing,  # type: ignore[arg-type]
        inference=InferenceSpec(roi_size=patch, overlap=0.5, blend_mode="gaussian", sw_batch_size=1),  # type: ignore[arg-type]
        normalization=NormalizationSpec(scheme="none"),  # nnU-Net normalises itself (plans' schemes)
        orientation="file voxel axes",
        description=(f"nnU-Net v2 trained model ({model.trainer}, {model.plans}, {model.configuration}); "
                     f"normalisation {', '.join(map(str, conf.get('normalization_schemes', [])))}"),
        dataset={"name": model.dataset_name, "source": "nnU-Net v2 dataset.json",
                 **({"regions": {k: list(v) for k, v in model.regions.items()}} if model.regions else {})},
        training={"framework": "nnU-Net v2", "trainer": model.trainer, "plans": model.plans,
                  "configuration": model.configuration, "folds": sorted(model.checkpoints)},
    )
