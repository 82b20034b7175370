"""nnU-Net v2 trained-model folders, predicted by nnU-Net's own predictor (Qt-free).

An nnU-Net v2 results folder ``nnUNet_results/DatasetXXX_Name/Trainer__Plans__Configuration/`` holds
``dataset.json`` (input channels, labels, file ending), ``plans.json`` (spacing, patch size, normalisation,
network class and its arguments) and ``fold_N/checkpoint_final.pth`` (``checkpoint_best.pth``) per fold.

:class:`NnUNetSegmenter` has the interface of :class:`~seg_app.core.inference.Segmenter` (``segment``, and
``prepare`` -> ``predict_prepared`` -> ``finish`` for pipelines, ``spec``, ``tta``) and runs
nnU-Net's ``nnUNetPredictor`` stages, the same three calls ``predict_single_npy_array`` makes: nnU-Net's
preprocessing (``PreprocessAdapterFromNpy``: crop, transpose, resample, normalise),
``predict_logits_from_preprocessed_data`` (sliding window with Gaussian blending over every chosen fold,
mirroring when ``tta``) and ``convert_predicted_logits_to_segmentation_with_correct_shape`` (back to the
input's shape, softmax or region sigmoids). So the labels are exactly nnU-Net's.

**Axes.** nnU-Net reads images with SimpleITK: the array is ``(C, z, y, x)`` -- the file's voxel axes
reversed -- and the spacing is reversed with it. Our ``Volume`` holds the file's voxel axes
``(C, I, J, K)``, so the array goes in as ``transpose(0, 3, 2, 1)`` with ``spacing[::-1]`` and the label
map comes back transposed the other way: the same voxels nnU-Net sees when it reads the file itself.

**Security.** nnU-Net 2.8.1 itself unpickles checkpoints (``torch.load`` with ``weights_only`` off: any pickled object
runs code) and builds the network from the class name in ``plans.json`` with ``pydoc.locate``. Here the
checkpoint is read with ``weights_only=True`` (tensors, plain values and numpy scalars only), the trainer
class is imported from the installed nnU-Net module that defines it (:func:`_trainer_class`), and the network class in
``plans.json`` must be a ``dynamic_network_architectures`` architecture whose importable arguments are
``torch.nn`` classes; the network is then built by the trainer's ``build_network_architecture`` (nnU-Net's
``get_network_from_plans``). A checkpoint that needs more than plain values is refused: nothing is ever
unpickled (``--trust-model`` does not change this; it concerns a MONAI bundle's TorchScript only).

nnU-Net (``nnunetv2``) is an optional extra: ``pip install seg-workstation[nnunet]``; it is imported only
when a model is run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import pickle
import re
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seg_app.core.errors import Cancelled, CheckpointError
from seg_app.core.sliding_window import CancelCheck, ProgressCallback, is_cancelled, raise_if_cancelled
from seg_app.core.spec import ModelSpec
from seg_app.core.nnunet_folder import (  # noqa: F401 - the folder's names, re-exported for the app's callers
    CHECKPOINT_NAMES,
    INSTALL_HINT,
    NnUNetModel,
    describe_nnunet,
    is_nnunet_folder,
    nnunet_root,
    parse_folds,
)
from seg_app.core.volume import Volume

__all__ = [
    "CHECKPOINT_NAMES",
    "INSTALL_HINT",
    "NnUNetModel",
    "NnUNetSegmenter",
    "describe_nnunet",
    "is_nnunet_folder",
    "load_model",
    "make_segmenter",
    "nnunet_root",
    "parse_folds",
]

log = logging.getLogger(__name__)

#: Module prefixes a ``plans.json`` may name: the network class, and the classes in its arguments.
_ALLOWED_NETWORK_MODULES = ("dynamic_network_architectures.architectures.",)
_ALLOWED_ARGUMENT_MODULES = ("torch.nn.",)


# ---- loading the model (nnU-Net imported here only) ---------------------------------------
def _import_nnunet() -> Any:
    try:
        import nnunetv2  # noqa: F401
        from nnunetv2.inference import predict_from_raw_data
    except ImportError as exc:
        raise CheckpointError(f"{INSTALL_HINT} ({exc}).") from exc
    return predict_from_raw_data


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """One fold's checkpoint as plain values: ``torch.load(weights_only=True)`` (numpy scalars, which
    nnU-Net's training log holds, allowed as data); a checkpoint with other pickled objects is refused."""
    import torch

    if not path.is_file():
        raise CheckpointError(f"The nnU-Net model has no {path.parent.name}/{path.name} ({path}).")
    safe = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64))]
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    safe.append(scalar)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(safe):
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        if not detail:
            raise CheckpointError(f"The nnU-Net checkpoint {path} cannot be read ({_first_line(exc)}).") from exc
        raise CheckpointError(
            f"The nnU-Net checkpoint {path.parent.name}/{path.name} holds pickled objects that cannot be "
            f"loaded safely ({detail}); loading them could run code from the file, so it is refused (re-save "
            "it with only tensors and plain values)."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in many ways
        raise CheckpointError(f"The nnU-Net checkpoint {path} cannot be read ({_first_line(exc)}).") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("network_weights"), Mapping):
        raise CheckpointError(f"{path} is not an nnU-Net v2 checkpoint (no network_weights).")
    return ckpt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _check_plans_classes(configuration_manager: Any) -> None:
    """Refuse a ``plans.json`` that names classes outside nnU-Net's architectures and ``torch.nn``
    (nnU-Net imports them by name and calls them)."""
    cls_name = str(configuration_manager.network_arch_class_name)
    if not cls_name.startswith(_ALLOWED_NETWORK_MODULES):
        raise CheckpointError(
            f"The nnU-Net plans name the network class '{cls_name}'; only dynamic_network_architectures "
            "architectures are loaded (refused: it would import and call that name)."
        )
    kwargs = configuration_manager.network_arch_init_kwargs
    for key in configuration_manager.network_arch_init_kwargs_req_import:
        value = kwargs.get(key)
        if value is not None and not str(value).startswith(_ALLOWED_ARGUMENT_MODULES):
            raise CheckpointError(
                f"The nnU-Net plans give the network argument {key}='{value}'; only torch.nn classes are allowed."
            )


def _trainer_class(name: str) -> Any:
    """The installed nnU-Net trainer class ``name``.

    nnU-Net's own lookup (``recursive_find_trainer_class_by_name``) imports every trainer module until one
    has the class, including the Primus trainers that need timm and torchvision (broken where a CUDA
    torchvision sits beside a CPU torch). Here only the module that defines ``class name(`` is imported,
    found by reading the installed trainer sources; nnU-Net's lookup (which also searches
    ``nnUNet_extTrainer``) is the fallback.
    """
    import importlib

    import nnunetv2
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if name == "nnUNetTrainer":
        return nnUNetTrainer
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise CheckpointError(f"The nnU-Net checkpoint names an invalid trainer '{name}'.")
    pkg_root = Path(nnunetv2.__path__[0])
    pattern = re.compile(rf"^class\s+{re.escape(name)}\s*[(:]", re.MULTILINE)
    for source in sorted((pkg_root / "training" / "nnUNetTrainer").rglob("*.py")):
        try:
            if not pattern.search(source.read_text(encoding="utf-8", errors="replace")):
                continue
        except OSError:
            continue
        module = "nnunetv2." + ".".join(source.relative_to(pkg_root).with_suffix("").parts)
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except Exception as exc:  # noqa: BLE001 - a trainer module whose dependencies are missing or broken
            raise CheckpointError(f"The nnU-Net trainer {name} cannot be imported ({_first_line(exc)}).") from exc
        if isinstance(cls, type) and issubclass(cls, nnUNetTrainer):
            return cls
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)


def _predictor_class() -> type:
    """``nnUNetPredictor`` with a progress/cancel hook around each sliding-window step (created once
    nnU-Net is imported)."""
    global _PREDICTOR_CLASS
    if _PREDICTOR_CLASS is not None:
        return _PREDICTOR_CLASS
    base = _import_nnunet().nnUNetPredictor

    class _HookedPredictor(base):  # type: ignore[misc, valid-type]
        """nnU-Net's predictor; each window reports progress, and once cancelled the remaining windows
        are skipped (nnU-Net's loader thread still drains its queue) and ``Cancelled`` is raised."""

        step_hook: Any = None  # callable() -> bool: True when cancelled

        def _internal_maybe_mirror_and_predict(self, x: Any) -> Any:
            hook = self.step_hook
            if hook is not None and hook():
                import torch

                heads = self.label_manager.num_segmentation_heads
                return torch.zeros((x.shape[0], heads, *x.shape[2:]), dtype=x.dtype, device=x.device)
            return super()._internal_maybe_mirror_and_predict(x)

    _PREDICTOR_CLASS = _HookedPredictor
    return _HookedPredictor


_PREDICTOR_CLASS: type | None = None


def load_model(path: str | os.PathLike, *, trust_model: bool = False) -> Any:
    """A model path for the app: an :class:`NnUNetModel` for an nnU-Net folder (or a file in one; a fold's
    checkpoint selects that fold and file), otherwise a ``Checkpoint``
    (:func:`seg_app.core.model_sources.load_model_checkpoint`: our checkpoint or a MONAI bundle)."""
    root = nnunet_root(path)
    if root is not None:
        folder, fold, ckpt_name = root
        model = describe_nnunet(folder)
        return dataclasses.replace(model, use_folds=(fold,), use_checkpoint=ckpt_name) if fold else model
    from seg_app.core.model_sources import load_model_checkpoint

    return load_model_checkpoint(path, trust_model=trust_model)


def make_segmenter(model: Any = None, *, device: str = "auto", tta: bool = False, folds: Sequence[str] | str | None = None,
                   checkpoint: str | None = None, trust_model: bool = False, **kwargs: Any) -> Any:
    """The one factory: :class:`NnUNetSegmenter` for an nnU-Net folder (a path into one, or an
    :class:`NnUNetModel`), else :class:`~seg_app.core.inference.Segmenter` (``kwargs`` go to it).

    ``folds``/``checkpoint`` apply to nnU-Net models only; a path to one fold's checkpoint selects that
    fold and file unless they are given.
    """
    if isinstance(model, (str, os.PathLike)) and nnunet_root(model) is not None:
        model = load_model(model)
    if isinstance(model, NnUNetModel):
        return NnUNetSegmenter(
            model, folds=folds if folds is not None else model.use_folds,
            checkpoint=checkpoint or model.use_checkpoint, device=device, tta=tta,
        )
    if folds is not None or checkpoint is not None:
        raise CheckpointError("--folds and --checkpoint apply to nnU-Net model folders only.")
    from seg_app.core.inference import Segmenter

    return Segmenter(model, device=device, tta=tta, trust_model=trust_model, **kwargs)  # trust: a bundle's TorchScript


# ---- the segmenter ---------------------------------------------------------------------------
@dataclass
class NnUNetPrepared:
    """A scan preprocessed by nnU-Net (output of :meth:`NnUNetSegmenter.prepare`)."""

    volume: Volume
    data: Any  # torch.Tensor (C, z, y, x) on nnU-Net's grid; None once predicted
    properties: dict[str, Any]
    warnings: list[str]
    seconds: float


@dataclass
class NnUNetPrediction:
    """nnU-Net's logits on its own grid (output of :meth:`NnUNetSegmenter.predict_prepared`)."""

    logits: Any  # torch.Tensor (heads, z, y, x), CPU
    device: str


class NnUNetSegmenter:
    """Segments ``Volume``s with an nnU-Net v2 trained-model folder through nnU-Net's own predictor.

    Args:
        model: the trained-model folder, or an :class:`NnUNetModel`.
        folds: folds to ensemble (``("0", "1")``, ``"0,1"`` or ``("all",)``); None: every fold with
            ``checkpoint`` (nnU-Net's default).
        checkpoint: ``checkpoint_final.pth`` (default) or ``checkpoint_best.pth``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (our device policy).
        tta: nnU-Net's mirroring (test-time flips along the axes the trainer allowed); off unless asked,
            like our own models (``nnUNetv2_predict`` has it on: 8 network calls per window in 3D).

    Raises:
        CheckpointError: nnU-Net not installed, a missing fold or checkpoint, a broken or unsafe folder.
    """

    def __init__(
        self,
        model: str | os.PathLike | NnUNetModel,
        folds: Sequence[str] | str | None = None,
        checkpoint: str = "checkpoint_final.pth",
        device: str = "auto",
        tta: bool = False,
    ) -> None:
        from seg_app.core.runtime import configure_torch_threads, select_device

        self.model = model if isinstance(model, NnUNetModel) else describe_nnunet(model)
        self.path = str(self.model.path)
        self.spec: ModelSpec = self.model.spec
        self.tta = bool(tta)
        self.device = select_device(device)
        self.checkpoint_name = checkpoint
        chosen = parse_folds(folds)
        if chosen is None:
            chosen = self.model.folds_with(checkpoint)
            if not chosen:
                have = ", ".join(f"fold_{f}" for f in self.model.checkpoints) or "no fold_* folder"
                raise CheckpointError(f"The nnU-Net model {self.model.path} has no fold with {checkpoint} ({have}).")
        for f in chosen:
            if checkpoint not in self.model.checkpoints.get(f, ()):
                have = ", ".join(f"fold_{k}" for k, v in self.model.checkpoints.items() if checkpoint in v) or "none"
                raise CheckpointError(
                    f"The nnU-Net model {self.model.path} has no fold_{f}/{checkpoint} (folds with it: {have})."
                )
        self.folds: tuple[str, ...] = tuple(chosen)
        self.threads = configure_torch_threads()
        self._lock = threading.RLock()
        self._predictor = self._build_predictor()

    # -- setup --
    def _build_predictor(self) -> Any:
        import torch

        _import_nnunet()
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        params, trainer_name, configuration, mirror_axes = [], "", "", None
        for i, fold in enumerate(self.folds):
            ckpt = _load_checkpoint(self.model.path / f"fold_{fold}" / self.checkpoint_name)
            if i == 0:
                trainer_name = str(ckpt.get("trainer_name") or self.model.trainer)
                init_args = ckpt.get("init_args") if isinstance(ckpt.get("init_args"), Mapping) else {}
                configuration = str(init_args.get("configuration") or self.model.configuration)
                mirror_axes = ckpt.get("inference_allowed_mirroring_axes")
            params.append(dict(ckpt["network_weights"]))
            del ckpt
        try:
            plans_manager = PlansManager(self.model.plans_json)
            conf = plans_manager.get_configuration(configuration)
            if conf.previous_stage_name is not None:
                raise CheckpointError(f"The nnU-Net model {self.model.path} is the second stage of a cascade "
                                      f"({configuration}, after {conf.previous_stage_name}); cascades are not supported.")
            _check_plans_classes(conf)
            dataset_json = self.model.dataset_json
            n_in = determine_num_input_channels(plans_manager, conf, dataset_json)
            n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
            with contextlib.redirect_stdout(io.StringIO()):
                trainer_class = _trainer_class(trainer_name)
                network = trainer_class.build_network_architecture(plans_manager, conf, n_in, n_out,
                                                                   enable_deep_supervision=False)
            network.load_state_dict(params[0])
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - nnU-Net raises many kinds; one clear line
            raise CheckpointError(f"The nnU-Net model {self.model.path} cannot be set up ({_first_line(exc)}).") from exc
        predictor_cls = _predictor_class()
        with contextlib.redirect_stdout(io.StringIO()):  # its CPU notice would land on our stdout
            predictor = predictor_cls(tile_step_size=0.5, use_gaussian=True, use_mirroring=self.tta,
                                      perform_everything_on_device=self.device.type == "cuda",
                                      device=torch.device(self.device), verbose=False, verbose_preprocessing=False,
                                      allow_tqdm=False)
            predictor.manual_initialization(network, plans_manager, conf, params, dataset_json, trainer_name,
                                            tuple(mirror_axes) if mirror_axes is not None else None)
        self.trainer_name, self.configuration = trainer_name, configuration
        return predictor

    # -- main entry --
    def segment(self, volume: Volume, *, progress: ProgressCallback | None = None, cancel: CancelCheck = None,
                return_probabilities: bool = True) -> Any:
        """Segment ``volume`` (every map on its grid): :meth:`prepare` -> :meth:`predict_prepared` ->
        :meth:`finish`. Raises ``IncompatibleInputError`` (channels, NaN), ``Cancelled``."""
        with self._lock:
            raise_if_cancelled(cancel)
            prepared = self.prepare(volume)
            raise_if_cancelled(cancel)
            pred = self.predict_prepared(prepared, progress=progress, cancel=cancel)
            return self.finish(prepared, pred, return_probabilities=return_probabilities)

    def prepare(self, volume: Volume) -> NnUNetPrepared:
        """Check the input, then nnU-Net's preprocessing (crop, transpose, resample, normalise)."""
        from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy

        from seg_app.core.ood import domain_warnings
        from seg_app.core.preprocess import check_compatible

        t0 = time.perf_counter()
        check_compatible(volume, self.spec)
        warnings_ = list(domain_warnings(volume, self.spec))
        image, props = self._to_nnunet(volume)
        p = self._predictor
        with contextlib.redirect_stdout(io.StringIO()):
            adapter = PreprocessAdapterFromNpy([image], None, [props], None, p.plans_manager, p.dataset_json,
                                               p.configuration_manager, num_threads_in_multithreaded=1, verbose=False)
            dct = next(adapter)
        return NnUNetPrepared(volume, dct["data"], dct["data_properties"], warnings_, time.perf_counter() - t0)

    def predict_prepared(self, prepared: NnUNetPrepared, *, progress: ProgressCallback | None = None,
                         cancel: CancelCheck = None) -> NnUNetPrediction:
        """nnU-Net's ``predict_logits_from_preprocessed_data`` (every fold, sliding window, mirroring when
        ``tta``); ``progress(done, total)`` per window over all folds, ``cancel`` checked per window."""
        import torch

        with self._lock:
            t0 = time.perf_counter()
            data, prepared.data = prepared.data, None
            if data is None:
                raise ValueError("This prepared scan was already predicted.")
            p = self._predictor
            padded = [max(s, ps) for s, ps in zip(data.shape[1:], p.configuration_manager.patch_size)]
            total = len(p._internal_get_sliding_window_slicers(tuple(padded))) * len(p.list_of_parameters)
            done = [0]
            flag = threading.Event()

            def hook() -> bool:
                if flag.is_set() or is_cancelled(cancel):
                    flag.set()
                    return True
                done[0] += 1
                if progress is not None:
                    progress(min(done[0], total), total)
                return False

            threads = torch.get_num_threads()
            p.step_hook = hook
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    logits = p.predict_logits_from_preprocessed_data(data)
            finally:
                p.step_hook = None
                torch.set_num_threads(threads)
            if flag.is_set() or is_cancelled(cancel):  # also when set during the last window
                raise Cancelled("Segmentation was cancelled.")
            prepared.seconds += time.perf_counter() - t0
            return NnUNetPrediction(logits.cpu(), self.device.type)

    def finish(self, prepared: NnUNetPrepared, pred: NnUNetPrediction, *, return_probabilities: bool = True) -> Any:
        """nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape`` back onto the scan's
        grid, as a :class:`~seg_app.core.inference.SegmentationResult` with our label map."""
        import torch
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        from seg_app.core.inference import SegmentationResult

        t0 = time.perf_counter()
        p = self._predictor
        out = convert_predicted_logits_to_segmentation_with_correct_shape(
            pred.logits, p.plans_manager, p.configuration_manager, p.label_manager, prepared.properties,
            return_probabilities=return_probabilities, num_threads_torch=torch.get_num_threads(),
        )
        seg, probs = out if return_probabilities else (out, None)
        volume = prepared.volume
        labels = np.ascontiguousarray(np.asarray(seg).transpose(2, 1, 0)).astype(np.uint8)
        fg = None
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float32)
            fg_zyx = probs.max(axis=0) if p.label_manager.has_regions else 1.0 - probs[0]
            fg = np.clip(np.ascontiguousarray(fg_zyx.transpose(2, 1, 0))[None], 0.0, 1.0).astype(np.float32)
            del probs
        warnings_ = tuple(prepared.warnings)
        return SegmentationResult(
            labels=volume.with_array(labels[None], channel_names=(), warnings=warnings_, modality=volume.modality),
            probabilities=(volume.with_array(fg, channel_names=("foreground probability",), warnings=())
                           if fg is not None else None),
            spec=self.spec,
            device=pred.device,
            seconds=prepared.seconds + time.perf_counter() - t0,
            warnings=warnings_,
            agreement=None,
        )

    # -- axes --
    @staticmethod
    def _to_nnunet(volume: Volume) -> tuple[np.ndarray, dict[str, Any]]:
        """``(C, I, J, K)`` -> nnU-Net's ``(C, z, y, x)`` (SimpleITK's order: the file's axes reversed)
        as float32, and ``{"spacing": (sz, sy, sx)}``."""
        image = np.ascontiguousarray(np.asarray(volume.array, dtype=np.float32).transpose(0, 3, 2, 1))
        return image, {"spacing": [float(s) for s in volume.spacing[::-1]]}

