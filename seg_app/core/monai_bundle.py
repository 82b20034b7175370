"""MONAI Model Zoo bundles as our ``Checkpoint``, read without running anything from the bundle (Qt-free).

A bundle folder (the Model Zoo's layout)::

    BUNDLE/configs/metadata.json        network_data_format: input channels, output channel names; versions
    BUNDLE/configs/inference.json       (or .yaml/.yml) network_def, preprocessing, inferer, postprocessing
    BUNDLE/models/model.pt              the network's state dict (plain, or under a key such as "model")
    BUNDLE/models/model.ts              TorchScript: only with ``trust_model=True`` (it is code)
    BUNDLE/LICENSE, docs/data_license.txt

MONAI runs a bundle by instantiating every ``_target_`` and evaluating every ``$`` expression of its
config with Python's ``eval``, so a bundle from the internet is a program. Here nothing of it runs:

1. the config is read as data (:meth:`monai.bundle.ConfigParser.load_config_file`: ``json.load`` or a
   YAML ``SafeLoader``); ``%`` macros are expanded by hand and only from config files inside the bundle;
2. :func:`check_bundle_config` walks the whole raw config and refuses ``_requires_``, any ``_mode_`` but
   ``default``, a ``_target_`` that is not a MONAI network, transform or workflow class, and every ``$``
   expression except a few harmless forms (``$@bundle_root + '/models/model.pt'``, evaluated here with
   string operations; ``$import glob`` in the top-level ``imports``; the Model Zoo's own workflow lines
   such as ``$@evaluator.run()``, which are recognised and never run: our ``Segmenter`` replaces the
   workflow);
3. the sections that define the result are *mapped*, not executed: ``network_def`` onto our fixed
   network registry (:data:`seg_app.core.spec.NETWORKS`); ``preprocessing`` (``Orientationd``,
   ``Spacingd``, ``NormalizeIntensityd``, ``ScaleIntensityRanged``, ``ScaleIntensityRangePercentilesd``)
   onto the spec's orientation, spacing and normalisation; ``inferer`` (``SlidingWindowInferer``) onto
   :class:`~seg_app.core.spec.InferenceSpec`; ``postprocessing`` (``Activationsd`` softmax/sigmoid,
   ``AsDiscreted``) onto the output activation. Anything that would change the result and is not
   understood is a ``CheckpointError`` naming it;
4. the weights are read with ``torch.load(weights_only=True)``.

``sigmoid`` outputs must be the nested BraTS regions (TC, WT, ET by the metadata's channel names); they
become our label map 1 necrotic/non-enhancing core, 2 oedema, 3 enhancing tumour
(:func:`seg_app.core.regions.nested_region_labels`). A bundle without ``Orientationd``/``Spacingd`` runs
on the scan's own voxel grid (``ModelSpec.native_grid``), as MONAI would run it.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from seg_app.core.bundle_config import (  # noqa: F401 - its public names are re-exported
    _BRATS_LAMBDA,
    _DTYPES,
    _PATH_JOIN,
    CONFIG_NAMES,
    _inside,
    _lookup,
    bundle_root,
    check_bundle_config,
    is_bundle,
    read_bundle_config,
)
from seg_app.core.errors import CheckpointError
from seg_app.core.regions import BRATS_COLORS, BRATS_LABELS
from seg_app.core.spec import (
    DEFAULT_COLORS,
    NETWORKS,
    ChannelSpec,
    Checkpoint,
    InferenceSpec,
    LabelSpec,
    ModelSpec,
    NetworkSpec,
    NormalizationSpec,
    _torch_load_safe,
    network_from_checkpoint,
)

__all__ = ["CONFIG_NAMES", "bundle_root", "bundle_spec", "check_bundle_config", "is_bundle", "load_bundle",
           "read_bundle_config"]

log = logging.getLogger(__name__)

# ---- values of the sections we use -----------------------------------------------------------
class _Resolver:
    """Plain values of config items: ``@id`` references followed, ``$@x + 'literal'`` joined as strings."""

    def __init__(self, config: dict[str, Any], root: Path) -> None:
        self.config, self.root = config, root

    def __call__(self, value: Any, where: str, _seen: tuple[str, ...] = ()) -> Any:
        if isinstance(value, str) and value.startswith("@"):
            ident = value[1:]
            if ident.startswith(("::", "#")):
                raise CheckpointError(f"MONAI bundle config: relative reference '{value}' at {where} is not supported.")
            if ident in _seen:
                raise CheckpointError(f"MONAI bundle config: reference '{value}' at {where} refers to itself.")
            if ident == "bundle_root":
                return str(self.root)
            return self(_lookup(self.config, ident, where), where, (*_seen, ident))
        if isinstance(value, str) and value.strip() in _DTYPES:
            return _DTYPES[value.strip()]
        if isinstance(value, str) and value.startswith("$"):
            m = _PATH_JOIN.match(value.strip())
            if m is None:
                raise CheckpointError(
                    f"MONAI bundle config: expression '{value}' at {where} cannot be used without running code."
                )
            base = self(f"@{m.group(1)}", where, _seen)
            if not isinstance(base, str):
                raise CheckpointError(f"MONAI bundle config: '{value}' at {where} does not join two strings.")
            return base + m.group(3)
        if isinstance(value, Mapping):
            return {k: self(v, f"{where}::{k}", _seen) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, f"{where}::{i}", _seen) for i, v in enumerate(value)]
        return value

    def component(self, value: Any, where: str) -> tuple[str, dict[str, Any]] | None:
        """``(class name, raw kwargs)`` of a ``_target_`` item (None when ``_disabled_``)."""
        while isinstance(value, str) and value.startswith("@"):
            value = _lookup(self.config, value[1:], where)
        if not isinstance(value, Mapping) or "_target_" not in value:
            raise CheckpointError(f"MONAI bundle config: {where} is not a component with a _target_.")
        if str(value.get("_disabled_", False)).lower() == "true":
            return None
        kwargs = {k: v for k, v in value.items() if not str(k).startswith("_")}
        return str(value["_target_"]).split(".")[-1], kwargs


def _unsupported(bundle: str, what: str, why: str = "it would change the result") -> CheckpointError:
    return CheckpointError(f"MONAI bundle '{bundle}': {what} is not supported ({why}).")


def _expect(bundle: str, name: str, where: str, kwargs: dict[str, Any], allowed: Mapping[str, Any], res: _Resolver) -> dict[str, Any]:
    """Resolved kwargs of a transform; refuse unknown kwargs and values other than the allowed ones.

    ``allowed``: kwarg -> None (any value, used by the caller or irrelevant) or a tuple of accepted values.
    """
    out: dict[str, Any] = {}
    for key, raw in kwargs.items():
        if key not in allowed:
            raise _unsupported(bundle, f"{name}({key}=...) at {where}")
        if allowed[key] is None and key in ("device", "sw_device"):
            continue  # where MONAI would run it: ours decides
        value = res(raw, f"{where}::{key}")
        if allowed[key] is not None and value not in allowed[key]:
            raise _unsupported(bundle, f"{name}({key}={value!r}) at {where}")
        out[key] = value
    return out


_KEYS = {"keys": None, "allow_missing_keys": (False,)}
_FLOAT = ("float32", "float", "torch.float32", "np.float32", "numpy.float32", None)


def _compose_transforms(bundle: str, config: dict[str, Any], res: _Resolver, section: str):
    """``(where, class name, raw kwargs)`` of each enabled transform of the ``Compose`` (or plain list) that
    ``section`` holds, ``@`` references followed; anything else is refused."""
    raw = config[section]
    comp = res.component(raw, section) if not isinstance(raw, list) else ("Compose", {"transforms": raw})
    if comp is None or comp[0] != "Compose":
        raise _unsupported(bundle, f"{section} '{comp[0] if comp else 'disabled'}'", "only a Compose of transforms")
    items = comp[1].get("transforms", [])
    while isinstance(items, str) and items.startswith("@"):
        items = _lookup(config, items[1:], f"{section}::transforms")
    if not isinstance(items, list):
        raise _unsupported(bundle, f"{section}::transforms that is not a list")
    for i, item in enumerate(items):
        where = f"{section}::transforms::{i}"
        c = res.component(item, where)
        if c is not None:
            yield (where, *c)


def _preprocessing(bundle: str, config: dict[str, Any], res: _Resolver) -> dict[str, Any]:
    """Orientation, spacing and normalisation from ``preprocessing`` (in our order only)."""
    if config.get("preprocessing") is None:
        return {"native_grid": True, "normalization": NormalizationSpec("none")}
    out: dict[str, Any] = {}
    stage = -1  # 0 orientation, 1 spacing, 2 intensity: our order
    for where, name, kw in _compose_transforms(bundle, config, res, "preprocessing"):
        if name in ("LoadImaged", "LoadImage"):
            _expect(bundle, name, where, kw, {**_KEYS, "image_only": None, "reader": None, "ensure_channel_first": None,
                                              "dtype": _FLOAT, "meta_keys": None, "meta_key_postfix": None,
                                              "simple_keys": None, "prune_meta_pattern": None, "prune_meta_sep": None,
                                              "expanduser": None, "overwriting": None}, res)
            continue
        if name in ("EnsureChannelFirstd", "EnsureTyped", "ToTensord", "EnsureType", "ToTensor", "CastToTyped", "Identityd"):
            _expect(bundle, name, where, kw, {**_KEYS, "channel_dim": None, "meta_keys": None, "strict_check": None,
                                              "data_type": ("tensor", "numpy"), "dtype": _FLOAT, "device": None,
                                              "track_meta": None, "wrap_sequence": None}, res)
            continue
        order = {"Orientationd": 0, "Spacingd": 1, "NormalizeIntensityd": 2, "ScaleIntensityRanged": 2,
                 "ScaleIntensityRangePercentilesd": 2}.get(name)
        if order is None:
            raise _unsupported(bundle, f"preprocessing transform '{name}' at {where}")
        if order <= stage:
            raise _unsupported(bundle, f"{name} at {where} after {('Orientationd', 'Spacingd', 'an intensity transform')[stage]}",
                               "the app runs one orientation, one spacing, then one intensity normalisation, in this order")
        if name == "Orientationd":
            v = _expect(bundle, name, where, kw, {**_KEYS, "axcodes": None, "as_closest_canonical": (False,),
                                                  "labels": None}, res)
            if v.get("labels", None) not in (None, [["L", "R"], ["P", "A"], ["I", "S"]]):
                raise _unsupported(bundle, f"Orientationd(labels=...) at {where}")
            ax = str(v.get("axcodes", ""))
            if len(ax) != 3 or sorted(set(ax.upper()) & set("RLAPIS")) != sorted(set(ax.upper())):
                raise _unsupported(bundle, f"Orientationd(axcodes={ax!r}) at {where}")
            out["orientation"] = ax.upper()
        elif name == "Spacingd":
            v = _expect(bundle, name, where, kw, {**_KEYS, "pixdim": None, "mode": ("bilinear", ["bilinear"]),
                                                  "padding_mode": ("border", ["border"]), "align_corners": (False,),
                                                  "dtype": _FLOAT + ("float64", "np.float64"), "diagonal": (False,),
                                                  "scale_extent": (False,), "recompute_affine": (False,),
                                                  "min_pixdim": (None,), "max_pixdim": (None,)}, res)
            pix = v.get("pixdim")
            pix = [pix] * 3 if isinstance(pix, (int, float)) else pix
            if not isinstance(pix, list) or len(pix) != 3 or not all(isinstance(s, (int, float)) and s > 0 for s in pix):
                raise _unsupported(bundle, f"Spacingd(pixdim={v.get('pixdim')!r}) at {where}", "three spacings in mm")
            out["target_spacing"] = tuple(float(s) for s in pix)
        elif name == "NormalizeIntensityd":
            v = _expect(bundle, name, where, kw, {**_KEYS, "nonzero": (True,), "channel_wise": (True,),
                                                  "subtrahend": (None,), "divisor": (None,), "dtype": _FLOAT}, res)
            if v.get("nonzero") is not True or v.get("channel_wise") is not True:
                raise _unsupported(bundle, f"NormalizeIntensityd without nonzero=true, channel_wise=true at {where}")
            out["normalization"] = NormalizationSpec("zscore_nonzero")
        elif name == "ScaleIntensityRanged":
            v = _expect(bundle, name, where, kw, {**_KEYS, "a_min": None, "a_max": None, "b_min": (0, 0.0),
                                                  "b_max": (1, 1.0), "clip": (True,), "dtype": _FLOAT}, res)
            if v.get("clip") is not True or "b_min" not in v or "b_max" not in v:
                raise _unsupported(bundle, f"ScaleIntensityRanged without b_min=0, b_max=1, clip=true at {where}")
            out["normalization"] = NormalizationSpec("ct_window", (float(v["a_min"]), float(v["a_max"])))
        elif name == "ScaleIntensityRangePercentilesd":
            v = _expect(bundle, name, where, kw, {**_KEYS, "lower": None, "upper": None, "b_min": (0, 0.0),
                                                  "b_max": (1, 1.0), "clip": (True,), "relative": (False,),
                                                  "channel_wise": (True,), "dtype": _FLOAT}, res)
            if v.get("clip") is not True or v.get("channel_wise") is not True or "b_min" not in v or "b_max" not in v:
                raise _unsupported(bundle, f"ScaleIntensityRangePercentilesd other than per channel to [0, 1] with "
                                   f"clip at {where}")
            out["normalization"] = NormalizationSpec("percentile", (float(v["lower"]), float(v["upper"])))
        stage = order
    if ("orientation" in out) != ("target_spacing" in out):
        raise _unsupported(bundle, "Orientationd without Spacingd (or the other way round)",
                           "the app either resamples to an orientation and spacing or keeps the scan's grid")
    out["native_grid"] = "orientation" not in out
    out.setdefault("normalization", NormalizationSpec("none"))
    return out


def _inferer(bundle: str, config: dict[str, Any], res: _Resolver) -> dict[str, Any]:
    c = res.component(config.get("inferer", {"_target_": "missing"}), "inferer")
    if c is None or c[0] != "SlidingWindowInferer":
        raise _unsupported(bundle, f"inferer '{c[0] if c else 'disabled'}'", "only SlidingWindowInferer")
    v = _expect(bundle, "SlidingWindowInferer", "inferer", c[1], {
        "roi_size": None, "sw_batch_size": None, "overlap": None, "mode": ("constant", "gaussian"),
        "sigma_scale": (0.125,), "padding_mode": ("constant",), "cval": (0, 0.0), "sw_device": None, "device": None,
        "progress": None, "cache_roi_weight_map": None, "cpu_thresh": None, "buffer_steps": None, "buffer_dim": None,
        "with_coord": (False,)}, res)
    roi = v.get("roi_size")
    roi = [roi] * 3 if isinstance(roi, int) else roi
    if not isinstance(roi, list) or len(roi) != 3 or not all(isinstance(r, int) and r > 0 for r in roi):
        raise _unsupported(bundle, f"SlidingWindowInferer(roi_size={v.get('roi_size')!r})", "three positive sizes")
    return {"roi_size": tuple(roi), "overlap": float(v.get("overlap", 0.25)),  # MONAI's defaults
            "blend_mode": str(v.get("mode", "constant")), "sw_batch_size": int(v.get("sw_batch_size", 1))}


def _postprocessing(bundle: str, config: dict[str, Any], res: _Resolver) -> str:
    """``softmax`` or ``sigmoid`` from ``postprocessing``; refuse what we would not reproduce."""
    if config.get("postprocessing") is None:
        raise _unsupported(bundle, "a config without postprocessing", "the outputs' activation is unknown")
    activation = threshold = argmax = None
    for where, name, kw in _compose_transforms(bundle, config, res, "postprocessing"):
        if name == "Activationsd":
            v = _expect(bundle, name, where, kw, {**_KEYS, "sigmoid": (True, False), "softmax": (True, False)}, res)
            if bool(v.get("sigmoid")) == bool(v.get("softmax")):
                raise _unsupported(bundle, f"Activationsd at {where} without exactly one of sigmoid, softmax")
            activation = "sigmoid" if v.get("sigmoid") else "softmax"
        elif name == "AsDiscreted":
            v = _expect(bundle, name, where, kw, {**_KEYS, "threshold": (0.5,), "argmax": (True, False),
                                                  "threshold_values": (True, False), "logit_thresh": (0.5,),
                                                  "dtype": None}, res)
            threshold = "threshold" in v or bool(v.get("threshold_values"))
            argmax = bool(v.get("argmax"))
        elif name == "Lambdad":
            func = kw.get("func")
            if not (isinstance(func, str) and re.sub(r"\s+", "", func) == _BRATS_LAMBDA):
                raise _unsupported(bundle, f"Lambdad at {where}", "only the Model Zoo's TC/WT/ET-to-labels lambda")
            _expect(bundle, name, where, {k: w for k, w in kw.items() if k != "func"}, {**_KEYS, "overwrite": None}, res)
        elif name in ("Invertd", "SaveImaged", "CopyItemsd", "EnsureTyped", "ToTensord"):
            continue  # back onto the source grid / writing files / bookkeeping: ours does this
        else:
            raise _unsupported(bundle, f"postprocessing transform '{name}' at {where}")
    if activation == "sigmoid" and not argmax:
        return "sigmoid"
    if activation == "softmax" and not threshold:
        return "softmax"
    raise _unsupported(bundle, "postprocessing without Activationsd(sigmoid) + AsDiscreted(threshold=0.5) or "
                       "Activationsd(softmax) + AsDiscreted(argmax)")


def _network(bundle: str, config: dict[str, Any], res: _Resolver) -> NetworkSpec:
    c = res.component(config.get("network_def", {"_target_": "missing"}), "network_def")
    if c is None:
        raise _unsupported(bundle, "a disabled network_def")
    name, raw_kwargs = c
    if name not in NETWORKS:
        raise _unsupported(bundle, f"network '{name}'", f"the app builds {', '.join(sorted(NETWORKS))}")
    kwargs = res(raw_kwargs, "network_def")

    def plain(v: Any, where: str) -> None:
        if isinstance(v, Mapping):
            if "_target_" in v:
                raise _unsupported(bundle, f"a component as network argument at {where}")
            for k, x in v.items():
                plain(x, f"{where}::{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                plain(x, f"{where}::{i}")
        elif not (v is None or isinstance(v, (bool, int, float, str))):
            raise _unsupported(bundle, f"network argument at {where}")

    plain(kwargs, "network_def")
    return NetworkSpec(name=name, kwargs=kwargs)


# ---- metadata -> channels and labels --------------------------------------------------------
_REGION_WORDS = (("ET", ("enhancing", "et")), ("TC", ("tumor core", "tumour core", "tc")), ("WT", ("whole", "wt")))


def _region_of(name: str) -> str | None:
    n = name.strip().lower()
    for region, words in _REGION_WORDS:
        if any(n == w or (len(w) > 2 and w in n) for w in words):
            return region
    return None


def _first(d: Any, what: str, bundle: str) -> dict[str, Any]:
    if not isinstance(d, Mapping) or not d:
        raise CheckpointError(f"MONAI bundle '{bundle}': metadata.json has no network_data_format {what}.")
    return dict(next(iter(d.values())))


def _channel_names(fmt: Mapping[str, Any], n: int) -> list[str]:
    defs = fmt.get("channel_def") or {}
    return [str(defs.get(str(i), defs.get(i, f"channel {i}"))) for i in range(n)]


def _nominal_spacing(meta: Mapping[str, Any]) -> tuple[float, float, float]:
    m = re.search(r"(\d+(?:\.\d+)?)\s*x\s*(\d+(?:\.\d+)?)\s*x\s*(\d+(?:\.\d+)?)\s*mm", str(meta.get("image_classes", "")))
    return tuple(float(g) for g in m.groups()) if m else (1.0, 1.0, 1.0)  # type: ignore[return-value]


def bundle_spec(root: str | Path) -> ModelSpec:
    """The ``ModelSpec`` of a bundle folder from its metadata and inference config (nothing is run)."""
    return _spec(Path(root), *read_bundle_config(root))


def _spec(root: Path, meta: dict[str, Any], config: dict[str, Any], cfg_path: Path) -> ModelSpec:
    bundle = str(meta.get("name") or root.name)
    res = _Resolver(config, root)
    fmt = meta.get("network_data_format") or {}
    inp, outp = _first(fmt.get("inputs"), "inputs", bundle), _first(fmt.get("outputs"), "outputs", bundle)
    try:
        n_in, n_out = int(inp.get("num_channels", 1)), int(outp["num_channels"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"MONAI bundle '{bundle}': metadata.json does not give the number of channels.") from exc
    modality = "CT" if str(inp.get("modality", "MR")).upper().startswith("CT") else "MR"
    channels = tuple(ChannelSpec(name, modality) for name in _channel_names(inp, n_in))
    out_names = _channel_names(outp, n_out)
    network = _network(bundle, config, res)
    pre = _preprocessing(bundle, config, res)
    inf = _inferer(bundle, config, res)
    activation = _postprocessing(bundle, config, res)
    if activation == "sigmoid":
        regions = tuple(_region_of(n) for n in out_names)
        if sorted(r or "" for r in regions) != ["ET", "TC", "WT"]:
            raise _unsupported(bundle, f"sigmoid outputs {out_names}", "only the nested BraTS regions: tumour core, "
                               "whole tumour, enhancing tumour")
        labels = (LabelSpec(0, "background", (0, 0, 0)),
                  *(LabelSpec(v, BRATS_LABELS[v], BRATS_COLORS[v]) for v in (1, 2, 3)))
        inference = InferenceSpec(**inf, activation="sigmoid_nested_regions", region_channels=regions)  # type: ignore[arg-type]
    else:
        labels = tuple(LabelSpec(i, name, (0, 0, 0) if i == 0 else DEFAULT_COLORS[(i - 1) % len(DEFAULT_COLORS)])
                       for i, name in enumerate(out_names))
        inference = InferenceSpec(**inf)
    for m in (re.fullmatch(r"\s*(\d+)\s*\*\s*n\s*", str(s)) for s in inp.get("spatial_shape", [])):
        if m and any(r % int(m.group(1)) for r in inference.roi_size):
            raise _unsupported(bundle, f"roi_size {list(inference.roi_size)}",
                               f"metadata.json asks for multiples of {m.group(1)}")
    versions = {k: str(meta[f"{k}_version"]) for k in ("monai", "pytorch", "numpy") if meta.get(f"{k}_version")}
    dataset = {"data_source": str(meta.get("data_source", "")), "copyright": str(meta.get("copyright", "")),
               "licence": "LICENSE" if (root / "LICENSE").is_file() else "none in the bundle",
               "data_licence": "docs/data_license.txt" if (root / "docs" / "data_license.txt").is_file() else "none in the bundle"}
    metrics = {str(k): v for k, v in dict(meta.get("eval_metrics") or {}).items() if isinstance(v, (int, float))}
    description = str(meta.get("description", ""))
    if meta.get("intended_use"):
        description += f" Intended use: {meta['intended_use']}"
    return ModelSpec(
        name=bundle, network=network, channels=channels, labels=labels,
        target_spacing=pre.get("target_spacing", _nominal_spacing(meta)), inference=inference,
        normalization=pre["normalization"], orientation=pre.get("orientation", "RAS"), native_grid=pre["native_grid"],
        version=str(meta.get("version", "0")), description=description.strip(), metrics=metrics, dataset=dataset,
        training={"source": "MONAI bundle", "config": f"configs/{cfg_path.name}", "authors": str(meta.get("authors", ""))},
        versions=versions,
    )


# ---- weights ---------------------------------------------------------------------------------
def _state_dict_of(raw: Any, name: str) -> dict[str, torch.Tensor]:
    """The network weights in a loaded ``model.pt``: the dict itself or one nested under a usual key."""
    def tensors(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    if not tensors(raw) and isinstance(raw, dict):
        raw = next((raw[k] for k in ("model", "state_dict", "network", "net", "model_state_dict") if tensors(raw.get(k))), raw)
    if not tensors(raw):
        raise CheckpointError(f"{name} holds no network state dict.")
    return {str(k).removeprefix("module."): v for k, v in raw.items()}


def _weights_path(root: Path, config: dict[str, Any], res: _Resolver) -> Path:
    """``models/model.pt``, or the ``checkpointloader``'s ``load_path`` when it names another file of the bundle."""
    loader = config.get("checkpointloader")
    if isinstance(loader, Mapping) and "load_path" in loader:
        try:
            value = res(loader["load_path"], "checkpointloader::load_path")
        except CheckpointError:
            value = None
        if isinstance(value, str) and value:
            p = Path(value) if Path(value).is_absolute() else root / value
            _inside(root, p, "checkpointloader load_path")
            if p.is_file():
                return p
    return root / "models" / "model.pt"


def load_bundle(path: str | Path, *, trust_model: bool = False) -> Checkpoint:
    """Load a MONAI bundle folder as a ``Checkpoint`` (spec + weights) without running its code.

    Args:
        path: the bundle folder (or a file in its ``configs/``).
        trust_model: allow ``models/model.ts`` (TorchScript is code) when there is no ``model.pt``.

    Raises:
        CheckpointError: not a bundle, a refused or unsupported config item, missing or mismatching weights.
    """
    root = bundle_root(path)
    if root is None:
        raise CheckpointError(f"'{Path(path).name}' is not a MONAI bundle (no configs/metadata.json).")
    meta, config, cfg_path = read_bundle_config(root)
    spec = _spec(root, meta, config, cfg_path)
    pt = _weights_path(root, config, _Resolver(config, root))
    ts = root / "models" / "model.ts"
    if pt.is_file():
        _inside(root, pt, "weights file")
        state_dict = _state_dict_of(_torch_load_safe(pt, f"Bundle weights '{pt.name}'"), f"Bundle weights '{pt.name}'")
        source = str(pt.relative_to(root))
    elif ts.is_file():
        if not trust_model:
            raise CheckpointError(
                f"refused bundle weights: '{spec.name}' has only models/model.ts (TorchScript can run code); "
                "pass --trust-model if you trust where it comes from."
            )
        _inside(root, ts, "weights file")
        msg = f"loading TorchScript models/model.ts of '{spec.name}' because the model is trusted (--trust-model)"
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
        try:
            state_dict = {k: v.detach().clone() for k, v in torch.jit.load(str(ts), map_location="cpu").state_dict().items()}
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"Bundle weights 'model.ts' cannot be read as TorchScript ({exc}).") from exc
        source = "models/model.ts (TorchScript, trusted)"
    else:
        hint = " (listed in large_files.yml: download them first)" if (root / "large_files.yml").is_file() else ""
        raise CheckpointError(f"MONAI bundle '{spec.name}' has no weights models/model.pt{hint}.")
    spec = spec.with_updates(training={**spec.training, "weights": source})
    ckpt = Checkpoint(spec=spec, state_dict=state_dict, path=str(root))
    try:
        network_from_checkpoint(ckpt)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"MONAI bundle '{spec.name}': the weights do not match network_def ({first}).") from exc
    return ckpt
