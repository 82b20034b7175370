"""``seg-train export --bundle``: a MONAI bundle (Model Zoo layout) that runs with MONAI alone.

    BUNDLE/configs/metadata.json       Model Zoo metadata (schema meta_schema_20240725), network_data_format
    BUNDLE/configs/inference.json      load -> RAS -> spacing -> normalisation -> sliding window -> softmax ->
                                       inverse of the preprocessing (back to the source grid) -> argmax -> NIfTI
    BUNDLE/models/model.pt             plain state dict of ``network_def`` (loaded with weights_only=True)
    BUNDLE/models/seg_app_checkpoint.pt  the self-describing checkpoint the desktop app loads
    BUNDLE/docs/README.md, LICENSE, docs/data_license.txt

Run it with ``python -m monai.bundle run --config_file configs/inference.json --meta_file
configs/metadata.json --bundle_root BUNDLE --dataset_dir IMAGES --output_dir OUT`` (needs ``fire``).

The preprocessing is that of :mod:`seg_app.core.preprocess` written as MONAI transforms with the same
arguments (``Orientationd`` to the spec's axis codes, ``Spacingd`` bilinear with border padding in
float32, the spec's normalisation). The loop is plain MONAI config expressions (no ignite
``SupervisedEvaluator``), so the bundle needs only monai, torch and nibabel. What differs from the
app: the app skips sliding windows that see only background (air) and applies the spec's lesion
postprocessing (``min_lesion_ml``, ``keep_largest``); the bundle runs every window and writes the
argmax as it is (``KeepLargestConnectedComponentd`` when the spec asks to keep the largest lesion).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from seg_app.core.io import atomic_write
from seg_app.core.regions import composite_regions
from seg_app.core.spec import ModelSpec, load_checkpoint, model_card

__all__ = ["METADATA_SCHEMA", "bundle_metadata", "bundle_inference_config", "export_bundle"]

#: The Model Zoo's current metadata schema (the one new bundles there name).
METADATA_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"


def _downsampling(spec: ModelSpec) -> int:
    """The factor every input side must be a multiple of (UNet: product of the strides)."""
    kw = spec.network.kwargs
    if spec.network.name == "UNet":
        f = 1
        for s in kw.get("strides", []):
            f *= int(s) if not isinstance(s, (list, tuple)) else int(max(s))
        return f
    if spec.network.name == "SegResNet":
        return 2 ** (len(kw.get("blocks_down", (1, 2, 2, 4))) - 1)
    return 32


def bundle_metadata(spec: ModelSpec) -> dict[str, Any]:
    """``configs/metadata.json`` in the Model Zoo's form (schema :data:`METADATA_SCHEMA`)."""
    v = spec.versions
    # the sliding-window patch; the network is fully convolutional: any multiple of _downsampling(spec) fits
    shape = list(spec.inference.roi_size)
    labels = ", ".join(f"{lab.value}={lab.name}" for lab in spec.labels)
    norm = spec.normalization
    value_range = [0, 1] if norm.scheme in ("percentile", "ct_window") else []
    metrics = {k: val for k, val in spec.metrics.items() if isinstance(val, (int, float)) and not isinstance(val, bool)}
    return {
        "schema": METADATA_SCHEMA,
        "version": spec.version,
        "changelog": {spec.version: "exported by seg-train export --bundle"},
        "monai_version": v.get("monai", ""),
        "pytorch_version": v.get("torch", ""),
        "numpy_version": v.get("numpy", ""),
        "required_packages_version": {"nibabel": v.get("nibabel", "")} if v.get("nibabel") else {"nibabel": ""},
        "optional_packages_version": {"fire": ""},
        "supported_apps": {},
        "name": spec.name,
        "task": "Tumour segmentation (" + ", ".join(lab.name for lab in spec.foreground_labels) + ")",
        "description": spec.description or spec.name,
        "authors": "seg-workstation seg-train",
        "copyright": "See LICENSE",
        "data_source": json.dumps(spec.dataset, sort_keys=True) if spec.dataset else "not recorded",
        "data_type": "nibabel",
        "image_classes": (f"{spec.in_channels} channel(s): " + ", ".join(f"{c.name} ({c.modality})" for c in spec.channels)
                          + f"; resampled to {'x'.join(f'{s:g}' for s in spec.target_spacing)} mm {spec.orientation}, "
                          + f"normalised with {norm.scheme}"),
        "label_classes": f"single channel label map: {labels}",
        "pred_classes": f"{spec.out_channels} channels (softmax), argmax gives the label map {labels}",
        "eval_metrics": metrics,
        "intended_use": "Research demonstration only; not for clinical use.",
        "references": [],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image", "format": "hounsfield" if spec.channels[0].modality == "CT" else "magnitude",
                    "modality": spec.channels[0].modality, "num_channels": spec.in_channels, "spatial_shape": shape,
                    "dtype": "float32", "value_range": value_range, "is_patch_data": True,
                    "channel_def": {str(i): c.name for i, c in enumerate(spec.channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image", "format": "segmentation", "num_channels": spec.out_channels,
                    "spatial_shape": shape, "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                    "channel_def": {str(i): lab.name for i, lab in enumerate(spec.labels)},
                }
            },
        },
    }


def _intensity(spec: ModelSpec) -> dict[str, Any]:
    """The spec's normalisation as the MONAI transform :func:`seg_app.core.preprocess.intensity_transform` uses."""
    norm = spec.normalization
    if norm.scheme == "zscore_nonzero":
        return {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True}
    if norm.scheme == "percentile":
        lo, hi = norm.window or (0.5, 99.5)
        return {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": lo, "upper": hi,
                "b_min": 0.0, "b_max": 1.0, "clip": True, "channel_wise": True}
    if norm.scheme == "ct_window":
        assert norm.window is not None
        return {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": norm.window[0], "a_max": norm.window[1],
                "b_min": 0.0, "b_max": 1.0, "clip": True}
    return {"_target_": "Identityd", "keys": "image"}


def _postprocessing(spec: ModelSpec) -> list[dict[str, Any]]:
    values = [lab.value for lab in spec.labels]
    steps: list[dict[str, Any]] = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        # back onto the source grid: inverse spacing (bilinear, border) and orientation, as the app's
        # seg_app.core.grid.to_source_grid maps the probabilities before the argmax
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]
    if values != list(range(len(values))):
        steps.append({"_target_": "MapLabelValued", "keys": "pred", "orig_labels": list(range(len(values))),
                      "target_labels": values})
    if spec.postprocess.keep_largest:
        whole = composite_regions({lab.value: lab.name for lab in spec.labels}).get("WT")
        steps.append({"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "is_onehot": False,
                      "applied_labels": [lab.value for lab in spec.foreground_labels], "independent": not whole,
                      "connectivity": 3})
    steps.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "@output_postfix",
                  "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False,
                  "print_log": False})
    return steps


def bundle_inference_config(spec: ModelSpec) -> dict[str, Any]:
    """``configs/inference.json``: the app's preprocessing, sliding window and mapping back, in MONAI config syntax."""
    kwargs = dict(spec.network.kwargs)
    kwargs.setdefault("spatial_dims", 3)
    kwargs.setdefault("in_channels", spec.in_channels)
    kwargs.setdefault("out_channels", spec.out_channels)
    inf = spec.inference
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch", "$import monai"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/data'",
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii.gz')) + glob.glob(os.path.join(@dataset_dir, '*.nii')))",
        "output_dir": "$@bundle_root + '/eval'",
        "output_postfix": "seg",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": spec.network.name, **kwargs},
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": spec.orientation, "labels": None},
                {"_target_": "Spacingd", "keys": "image", "pixdim": list(spec.target_spacing), "mode": "bilinear",
                 "padding_mode": "border", "dtype": "$numpy.float32"},
                _intensity(spec),
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(inf.roi_size), "sw_batch_size": inf.sw_batch_size,
                    "overlap": inf.overlap, "mode": inf.blend_mode, "padding_mode": "constant"},
        "postprocessing": {"_target_": "Compose", "transforms": _postprocessing(spec)},
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "initialize": [
            "$monai.utils.set_determinism(seed=0)",
            "$torch.set_grad_enabled(False)",
            "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
            "$@network.eval()",
        ],
        # one case at a time: network on the preprocessed image, then postprocessing of the decollated item
        "run": [
            "$[@postprocessing(d) for b in @dataloader for d in monai.data.decollate_batch("
            "{'image': b['image'], 'pred': @inferer(b['image'].to(@device), @network).cpu()})]"
        ],
    }


_LICENSE = """Model weights exported by seg-train (seg-workstation, Apache-2.0).
Research demonstration only; not for clinical use. See docs/data_license.txt for the training data.
"""


def export_bundle(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the MONAI bundle folder of a checkpoint (see the module docstring); returns the folder."""
    src = Path(checkpoint_path)
    ckpt = load_checkpoint(src)
    spec = ckpt.spec
    root = Path(out_dir)
    for sub in ("configs", "models", "docs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    texts = {
        root / "configs" / "metadata.json": json.dumps(bundle_metadata(spec), indent=1),
        root / "configs" / "inference.json": json.dumps(bundle_inference_config(spec), indent=1),
        root / "LICENSE": _LICENSE,
        root / "docs" / "data_license.txt": "Training data: " + (json.dumps(spec.dataset, sort_keys=True) if spec.dataset else "not recorded")
        + "\nSee the dataset's own licence.\n",
        root / "docs" / "README.md": (
            f"# {spec.name}\n\nMONAI bundle exported by `seg-train export --bundle`. Research use only; not for "
            f"clinical use.\n\n## Model card\n\n```\n{model_card(spec)}\n```\n\n## Inference\n\n```bash\n"
            "pip install monai nibabel fire\npython -m monai.bundle run --config_file configs/inference.json "
            "--meta_file configs/metadata.json \\\n    --bundle_root . --dataset_dir IMAGES_FOLDER --output_dir OUT\n```\n\n"
            "Writes `OUT/<case>_seg.nii.gz` (uint8 label map on each input's own grid). The preprocessing is the "
            "seg_app desktop app's (RAS, target spacing, normalisation); the app additionally skips windows that only "
            "see background and applies its lesion postprocessing (`min_lesion_ml`).\n\n"
            "`models/model.pt` is a plain state dict for `network_def`; `models/seg_app_checkpoint.pt` is the "
            "self-describing checkpoint the seg_app desktop app loads.\n"
        ),
    }
    for path, text in texts.items():
        with atomic_write(path) as tmp:
            tmp.write_text(text)
    with atomic_write(root / "models" / "model.pt") as tmp:
        torch.save({k: v.detach().clone().contiguous() for k, v in ckpt.state_dict.items()}, tmp)
    with atomic_write(root / "models" / "seg_app_checkpoint.pt") as tmp:
        shutil.copyfile(src, tmp)
    return root
