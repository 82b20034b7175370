"""Self-describing model checkpoints: one file holds the weights and everything needed to use them.

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)`` reads::

    {"format": "seg_app.checkpoint", "format_version": 1,
     "spec": "<ModelSpec as JSON>", "state_dict": {name: tensor}, ...optional "training_state"}

Only tensors and JSON-like values are stored, never pickled classes. The network is rebuilt from a
fixed registry of allowed architectures (``NETWORKS``) by name and keyword arguments.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import pickle
import platform
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from seg_app.core.errors import CheckpointError
from seg_app.core.files import atomic_write

__all__ = [
    "BLEND_MODES", "CHECKPOINT_FORMAT", "NESTED_REGIONS", "OUTPUT_ACTIVATIONS", "ChannelSpec", "Checkpoint", "DEFAULT_COLORS", "FORMAT_VERSION",
    "InferenceSpec", "LabelSpec", "ModelSpec", "NETWORKS", "NORMALIZATION_SCHEMES", "NetworkSpec",
    "NormalizationSpec", "PostprocessSpec", "build_network", "default_model_path", "load_checkpoint",
    "load_model", "model_card", "network_from_checkpoint", "now_iso", "package_versions",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "seg_app.checkpoint"
FORMAT_VERSION = 1

NORMALIZATION_SCHEMES = ("zscore_nonzero", "ct_window", "percentile", "none")
BLEND_MODES = ("gaussian", "constant")
#: How network outputs become labels: ``softmax`` (one channel per label, argmax; every checkpoint of
#: this app) or ``sigmoid_nested_regions`` (one sigmoid channel per nested BraTS region TC/WT/ET,
#: thresholded at 0.5 and turned into labels 1-3; MONAI Model Zoo ``brats_mri_segmentation``).
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid_nested_regions")
#: The nested regions a ``sigmoid_nested_regions`` model outputs, one channel each (in any order).
NESTED_REGIONS = ("TC", "WT", "ET")


def _unet(**kw: Any) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(**kw)


def _segresnet(**kw: Any) -> torch.nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(**kw)


def _swinunetr(**kw: Any) -> torch.nn.Module:
    from monai.networks.nets import SwinUNETR

    return SwinUNETR(**kw)


#: The only architectures a checkpoint may ask for: name -> builder taking JSON-able kwargs.
NETWORKS: dict[str, Callable[..., torch.nn.Module]] = {
    "UNet": _unet,
    "SegResNet": _segresnet,
    "SwinUNETR": _swinunetr,
}

#: Default overlay colours (RGB) for label values 1, 2, 3, ...
DEFAULT_COLORS = [(230, 60, 60), (60, 200, 80), (70, 120, 240), (240, 200, 40), (200, 80, 220), (40, 210, 210)]


@dataclass(frozen=True)
class NetworkSpec:
    """Architecture name from ``NETWORKS`` and its constructor kwargs (JSON values only)."""

    name: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class ChannelSpec:
    """One input channel: a name ("T1w", "FLAIR", "CT") and its modality ("MR" or "CT")."""

    name: str
    modality: str = "MR"


@dataclass(frozen=True)
class NormalizationSpec:
    """Intensity normalisation.

    ``zscore_nonzero``: per channel, subtract mean and divide by std over non-zero voxels (MR).
    ``ct_window``: clip to ``window`` = (low, high) in HU and scale linearly to [0, 1] (CT).
    ``percentile``: per channel, clip to the ``window`` = (low, high) *percentiles* of all voxels
    (default 0.5, 99.5) and scale linearly to [0, 1] -- robust to the field of view, the background
    (zeros or noise) and the scanner's intensity scale (MR of any contrast, after SynthSeg).
    """

    scheme: str = "zscore_nonzero"
    window: tuple[float, float] | None = None


@dataclass(frozen=True)
class InferenceSpec:
    """Sliding-window settings: ROI (patch) size in voxels, overlap fraction, blending mode; and the
    output activation (one of ``OUTPUT_ACTIVATIONS``) with, for ``sigmoid_nested_regions``, the region
    (``"TC"``, ``"WT"`` or ``"ET"``) of each network output channel in order."""

    roi_size: tuple[int, int, int]
    overlap: float = 0.5
    blend_mode: str = "gaussian"
    sw_batch_size: int = 2
    activation: str = "softmax"
    region_channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSpec:
    """One output class: integer value in the label map, name, RGB display colour."""

    value: int
    name: str
    color: tuple[int, int, int] = (230, 60, 60)


@dataclass(frozen=True)
class PostprocessSpec:
    """Cleaning applied after argmax: drop lesions under ``min_lesion_ml`` and those whose mean
    foreground probability is under ``min_lesion_confidence`` (0 = off; chosen on a selection set by
    ``seg-train calibrate``); optionally keep the largest."""

    min_lesion_ml: float = 0.0
    keep_largest: bool = False
    min_lesion_confidence: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    """Everything the app needs to use a trained network, parsed from a checkpoint.

    ``labels`` lists every output channel of the network in order, background (value 0) first
    (``sigmoid_nested_regions`` models: the label map made from the region channels, 0-3).
    ``target_spacing`` is in mm along the axes of ``orientation`` (RAS by default). ``native_grid``:
    the network runs on the scan's own voxel grid (no reorientation, no resampling; MONAI bundles
    without ``Orientationd``/``Spacingd``); ``target_spacing`` is then only the nominal spacing.
    """

    name: str
    network: NetworkSpec
    channels: tuple[ChannelSpec, ...]
    labels: tuple[LabelSpec, ...]
    target_spacing: tuple[float, float, float]
    inference: InferenceSpec
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec)
    orientation: str = "RAS"
    native_grid: bool = False
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    version: str = "0.1.0"
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION

    # ---- convenience -------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return len(self.channels)

    @property
    def out_channels(self) -> int:
        """Network output channels: one per label (softmax) or one per region (sigmoid regions)."""
        if self.inference.activation == "sigmoid_nested_regions":
            return len(self.inference.region_channels)
        return len(self.labels)

    @property
    def foreground_labels(self) -> tuple[LabelSpec, ...]:
        return tuple(lab for lab in self.labels if lab.value != 0)

    def label_name(self, value: int) -> str:
        for lab in self.labels:
            if lab.value == value:
                return lab.name
        return f"label {value}"

    def with_updates(self, **changes: Any) -> "ModelSpec":
        return replace(self, **changes)

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists, only JSON types

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSpec":
        """Parse and validate; raises ``CheckpointError`` with a clear message."""
        try:
            version = int(d.get("format_version", FORMAT_VERSION))
            if version > FORMAT_VERSION:
                raise CheckpointError(
                    f"The model was made by a newer version of this software (checkpoint format {version}, "
                    f"this app reads up to {FORMAT_VERSION}); update the app."
                )
            if version < 1:
                raise CheckpointError(f"Unknown checkpoint format version {version}.")
            net = d["network"]
            spec = cls(
                name=str(d["name"]),
                network=NetworkSpec(name=str(net["name"]), kwargs=dict(net.get("kwargs", {}))),
                channels=tuple(ChannelSpec(str(c["name"]), str(c.get("modality", "MR"))) for c in d["channels"]),
                labels=tuple(
                    LabelSpec(int(lab["value"]), str(lab["name"]), tuple(int(x) for x in lab.get("color", (230, 60, 60))))
                    for lab in d["labels"]
                ),
                target_spacing=tuple(float(s) for s in d["target_spacing"]),  # type: ignore[arg-type]
                inference=InferenceSpec(
                    roi_size=tuple(int(s) for s in d["inference"]["roi_size"]),  # type: ignore[arg-type]
                    overlap=float(d["inference"].get("overlap", 0.5)),
                    blend_mode=str(d["inference"].get("blend_mode", "gaussian")),
                    sw_batch_size=int(d["inference"].get("sw_batch_size", 2)),
                    activation=str(d["inference"].get("activation", "softmax")),
                    region_channels=tuple(str(r) for r in d["inference"].get("region_channels", ())),
                ),
                normalization=NormalizationSpec(
                    scheme=str(d.get("normalization", {}).get("scheme", "zscore_nonzero")),
                    window=(
                        tuple(float(w) for w in d["normalization"]["window"])  # type: ignore[arg-type]
                        if d.get("normalization", {}).get("window") is not None
                        else None
                    ),
                ),
                orientation=str(d.get("orientation", "RAS")),
                native_grid=bool(d.get("native_grid", False)),
                postprocess=PostprocessSpec(
                    min_lesion_ml=float(d.get("postprocess", {}).get("min_lesion_ml", 0.0)),
                    keep_largest=bool(d.get("postprocess", {}).get("keep_largest", False)),
                    min_lesion_confidence=float(d.get("postprocess", {}).get("min_lesion_confidence", 0.0)),
                ),
                version=str(d.get("version", "0.1.0")),
                description=str(d.get("description", "")),
                metrics=dict(d.get("metrics", {})),
                dataset=dict(d.get("dataset", {})),
                training=dict(d.get("training", {})),
                versions={str(k): str(v) for k, v in dict(d.get("versions", {})).items()},
                created=str(d.get("created", "")),
                format_version=version,
            )
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"The model description in the checkpoint is incomplete or invalid ({exc!r}).") from exc
        spec.validate()
        return spec

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise CheckpointError("The model description in the checkpoint is not valid JSON.") from exc
        if not isinstance(d, dict):
            raise CheckpointError("The model description in the checkpoint is not a JSON object.")
        return cls.from_dict(d)

    def validate(self) -> None:
        """Check internal consistency; raises ``CheckpointError``."""
        if self.network.name not in NETWORKS:
            raise CheckpointError(
                f"Unknown network '{self.network.name}'; allowed: {', '.join(sorted(NETWORKS))}."
            )
        if not self.channels:
            raise CheckpointError("The model declares no input channels.")
        if len(self.labels) < 2 or self.labels[0].value != 0:
            raise CheckpointError("The model must declare background (value 0) first and at least one label.")
        if len({lab.value for lab in self.labels}) != len(self.labels):
            raise CheckpointError("The model declares the same label value twice.")
        if len(self.target_spacing) != 3 or any(not (0 < s < 100) for s in self.target_spacing):
            raise CheckpointError(f"Invalid target spacing {self.target_spacing} mm.")
        if len(self.inference.roi_size) != 3 or any(s < 1 for s in self.inference.roi_size):
            raise CheckpointError(f"Invalid ROI size {self.inference.roi_size}.")
        if not (0.0 <= self.inference.overlap < 1.0):
            raise CheckpointError(f"Invalid sliding-window overlap {self.inference.overlap}.")
        if self.inference.blend_mode not in BLEND_MODES:
            raise CheckpointError(f"Unknown blending mode '{self.inference.blend_mode}'.")
        if self.inference.activation not in OUTPUT_ACTIVATIONS:
            raise CheckpointError(f"Unknown output activation '{self.inference.activation}'.")
        if self.inference.activation == "sigmoid_nested_regions" and (
            sorted(self.inference.region_channels) != sorted(NESTED_REGIONS)
            or [lab.value for lab in self.labels] != [0, 1, 2, 3]
        ):
            raise CheckpointError(
                "A sigmoid nested-region model needs one output channel for each of TC, WT and ET and the labels 0-3."
            )
        if self.normalization.scheme not in NORMALIZATION_SCHEMES:
            raise CheckpointError(f"Unknown intensity normalisation '{self.normalization.scheme}'.")
        if self.normalization.scheme == "ct_window" and (
            self.normalization.window is None or self.normalization.window[0] >= self.normalization.window[1]
        ):
            raise CheckpointError("CT normalisation needs a window (low < high) in HU.")
        if self.normalization.scheme == "percentile" and self.normalization.window is not None and not (
            0.0 <= self.normalization.window[0] < self.normalization.window[1] <= 100.0
        ):
            raise CheckpointError("Percentile normalisation needs 0 <= low < high <= 100.")
        if not 0.0 <= self.postprocess.min_lesion_confidence < 1.0:
            raise CheckpointError("The minimum lesion confidence must be in [0, 1).")
        kw = self.network.kwargs
        if "in_channels" in kw and int(kw["in_channels"]) != self.in_channels:
            raise CheckpointError(
                f"The network takes {kw['in_channels']} channels but the model declares {self.in_channels}."
            )
        if "out_channels" in kw and int(kw["out_channels"]) != self.out_channels:
            raise CheckpointError(
                f"The network outputs {kw['out_channels']} classes but the model declares {self.out_channels} labels."
            )


def package_versions() -> dict[str, str]:
    """Versions of the packages that define a model's behaviour (recorded in checkpoints)."""
    import monai
    import numpy

    import seg_app

    return {
        "seg_app": seg_app.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def build_network(spec: ModelSpec) -> torch.nn.Module:
    """Instantiate the spec's network from the fixed registry (random weights)."""
    spec.validate()
    kwargs = dict(spec.network.kwargs)
    kwargs.setdefault("spatial_dims", 3)
    kwargs.setdefault("in_channels", spec.in_channels)
    kwargs.setdefault("out_channels", spec.out_channels)
    try:
        return NETWORKS[spec.network.name](**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise CheckpointError(f"Cannot build network '{spec.network.name}' from its settings ({exc}).") from exc


def _plain(value: Any) -> Any:
    """Reject anything that is not a tensor or a JSON-like value (what weights_only can load)."""
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value) if isinstance(value, list) else tuple(_plain(v) for v in value)
    raise TypeError(f"checkpoint values must be tensors or plain values, got {type(value).__name__}")


def save_checkpoint(
    path: str | os.PathLike,
    spec: ModelSpec,
    state_dict: Mapping[str, torch.Tensor],
    training_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a self-describing checkpoint atomically (temp file + rename).

    Args:
        path: destination ``.pt`` file.
        spec: the model description.
        state_dict: network weights (moved to CPU; DDP ``module.`` prefixes removed).
        training_state: optional resume information (optimizer/scheduler state, epoch, RNG) made only
            of tensors and plain values.
    """
    spec.validate()
    sd = {k.removeprefix("module."): v.detach().cpu() for k, v in state_dict.items()}
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_json(),
        "state_dict": sd,
    }
    if training_state is not None:
        payload["training_state"] = _plain(dict(training_state))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path


@dataclass
class Checkpoint:
    """A loaded checkpoint: spec, weights, and (for ``last.pt``) the training state."""

    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    training_state: dict[str, Any] | None = None
    path: str = ""


def _torch_load_safe(source: Any, name: str) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a ``CheckpointError``."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise next to our one line
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):
            raise CheckpointError(
                f"{name} contains Python objects that would need code to run; it was refused for safety."
            ) from exc
        raise CheckpointError(
            f"{name} is not a valid model checkpoint (not a torch weights file, or corrupt); nothing in it was run."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError, IndexError, TypeError) as exc:
        raise CheckpointError(f"{name} is not a valid model checkpoint (unreadable, truncated or corrupt).") from exc


def load_checkpoint(path: str | os.PathLike | bytes) -> Checkpoint:
    """Load and validate a checkpoint without ever unpickling code.

    Raises:
        CheckpointError: missing file, not a checkpoint, unsafe pickle, unknown format version or
            network, or weights that do not match the spec.
    """
    if isinstance(path, (bytes, bytearray)):
        name = "The model file"
        raw = _torch_load_safe(io.BytesIO(path), name)
        path_str = ""
    else:
        p = Path(path)
        name = f"Model file '{p.name}'"
        if not p.is_file():
            raise CheckpointError(f"{name} does not exist.")
        if p.stat().st_size == 0:
            raise CheckpointError(f"{name} is empty.")
        raw = _torch_load_safe(p, name)
        path_str = str(p)
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{name} is not a segmentation checkpoint of this app (no model description in it).")
    version = raw.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{name} has checkpoint format version {version!r}; this app reads versions 1 to {FORMAT_VERSION}."
        )
    spec = ModelSpec.from_json(raw.get("spec", ""))
    state_dict = raw.get("state_dict")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{name} holds no network weights.")
    net = build_network(spec)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{name}: the weights do not match the declared network ({first}).") from exc
    ts = raw.get("training_state")
    return Checkpoint(spec=spec, state_dict=state_dict, training_state=ts if isinstance(ts, dict) else None, path=path_str)


def network_from_checkpoint(ckpt: Checkpoint) -> torch.nn.Module:
    """The checkpoint's network with its weights, in eval mode on the CPU (the one place that does this)."""
    net = build_network(ckpt.spec)
    net.load_state_dict(ckpt.state_dict, strict=True)
    return net.eval()


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ModelSpec, torch.nn.Module]:
    """Load a checkpoint and return its spec and the network in eval mode on ``device``."""
    ckpt = load_checkpoint(path)
    return ckpt.spec, network_from_checkpoint(ckpt).to(device)


def default_model_path() -> Path:
    """The small model shipped inside the package (trained on synthetic data; see the README)."""
    return Path(__file__).resolve().parent.parent / "models" / "default_brain_tumour.pt"


def model_card(spec: ModelSpec) -> str:
    """A short human-readable description of a model (for the GUI dialog and ``seg-app info``)."""
    lines = [f"{spec.name} v{spec.version}"]
    if spec.description:
        lines.append(spec.description)
    lines.append(f"Network: {spec.network.name} {json.dumps(spec.network.kwargs, sort_keys=True)}")
    lines.append("Inputs: " + ", ".join(f"{c.name} ({c.modality})" for c in spec.channels))
    lines.append("Labels: " + ", ".join(f"{lab.value}={lab.name}" for lab in spec.labels))
    if spec.inference.activation != "softmax":
        lines.append(f"Outputs: {spec.inference.activation} ({', '.join(spec.inference.region_channels)})")
    grid = ("the scan's own grid (nominal " + "x".join(f"{s:g}" for s in spec.target_spacing) + " mm)"
            if spec.native_grid else "x".join(f"{s:g}" for s in spec.target_spacing) + f" mm ({spec.orientation})")
    lines.append(
        f"Spacing: {grid}; "
        f"ROI {'x'.join(str(s) for s in spec.inference.roi_size)}, overlap {spec.inference.overlap:g}, "
        f"{spec.inference.blend_mode} blending"
    )
    norm = spec.normalization
    lines.append(
        "Normalisation: " + (f"{norm.scheme} window={list(norm.window)}" if norm.window else norm.scheme)
    )
    if spec.metrics:
        lines.append("Metrics: " + json.dumps(spec.metrics, sort_keys=True))
    if spec.dataset:
        lines.append("Training data: " + json.dumps(spec.dataset, sort_keys=True))
    if spec.created:
        lines.append(f"Created: {spec.created}")
    return "\n".join(lines)
