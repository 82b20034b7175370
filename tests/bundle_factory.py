"""A MONAI Model Zoo bundle in the exact layout and schema of ``brats_mri_segmentation`` (tests only).

``REAL_METADATA`` and ``REAL_INFERENCE`` are the Model Zoo's ``models/brats_mri_segmentation/configs/
metadata.json`` and ``inference.json`` (github.com/Project-MONAI/model-zoo, commit dfae206d, bundle
version 0.5.2; only the changelog is shortened). :func:`make_brats_bundle` writes them with random
SegResNet weights (the config's own network_def: 4 channels in, 3 sigmoid channels out) and, for speed,
a 16^3 sliding-window ``roi_size`` instead of 240x240x160 (still a multiple of 8, as the metadata asks):
this machine's CPU torch runs SegResNet's 3D convolutions on its slow reference path.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

REAL_METADATA: dict[str, Any] = json.loads(r'''
{
 "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
 "version": "0.5.2",
 "changelog": {
  "0.5.2": "use monai 1.4 and update large files",
  "0.5.1": "update to use monai 1.3.1",
  "0.5.0": "add load_pretrain flag for infer"
 },
 "monai_version": "1.4.0",
 "pytorch_version": "2.4.0",
 "numpy_version": "1.24.4",
 "optional_packages_version": {
  "nibabel": "5.2.1",
  "pytorch-ignite": "0.4.11",
  "scikit-learn": "1.5.1",
  "tensorboard": "2.17.0"
 },
 "name": "BraTS MRI segmentation",
 "task": "Multimodal Brain Tumor segmentation",
 "description": "A pre-trained model for volumetric (3D) segmentation of brain tumor subregions from multimodal MRIs based on BraTS 2018 data",
 "authors": "MONAI team",
 "copyright": "Copyright (c) MONAI Consortium",
 "data_source": "https://www.med.upenn.edu/sbia/brats2018/data.html",
 "data_type": "nibabel",
 "image_classes": "4 channel data, T1c, T1, T2, FLAIR at 1x1x1 mm",
 "label_classes": "3 channel data, channel 0 for Tumor core, channel 1 for Whole tumor, channel 2 for Enhancing tumor",
 "pred_classes": "3 channels data, same as label_classes",
 "eval_metrics": {
  "val_mean_dice": 0.8518,
  "val_mean_dice_tc": 0.8559,
  "val_mean_dice_wt": 0.9026,
  "val_mean_dice_et": 0.7905
 },
 "intended_use": "This is an example, not to be used for diagnostic purposes",
 "references": [
  "Myronenko, Andriy. '3D MRI brain tumor segmentation using autoencoder regularization.' International MICCAI Brainlesion Workshop. Springer, Cham, 2018. https://arxiv.org/abs/1810.11654"
 ],
 "network_data_format": {
  "inputs": {
   "image": {
    "type": "image",
    "format": "magnitude",
    "modality": "MR",
    "num_channels": 4,
    "spatial_shape": [
     "8*n",
     "8*n",
     "8*n"
    ],
    "dtype": "float32",
    "value_range": [],
    "is_patch_data": true,
    "channel_def": {
     "0": "T1c",
     "1": "T1",
     "2": "T2",
     "3": "FLAIR"
    }
   }
  },
  "outputs": {
   "pred": {
    "type": "image",
    "format": "segmentation",
    "num_channels": 3,
    "spatial_shape": [
     "8*n",
     "8*n",
     "8*n"
    ],
    "dtype": "float32",
    "value_range": [
     0,
     1
    ],
    "is_patch_data": true,
    "channel_def": {
     "0": "Tumor core",
     "1": "Whole tumor",
     "2": "Enhancing tumor"
    }
   }
  }
 }
}
''')

REAL_INFERENCE: dict[str, Any] = json.loads(r'''
{
 "imports": [
  "$import glob",
  "$import numpy",
  "$import os"
 ],
 "bundle_root": ".",
 "image_key": "image",
 "ckpt_dir": "$@bundle_root + '/models'",
 "output_dir": "$@bundle_root + '/eval'",
 "output_ext": ".nii.gz",
 "output_dtype": "uint8",
 "output_postfix": "seg",
 "separate_folder": true,
 "load_pretrain": true,
 "data_list_file_path": "$@bundle_root + '/configs/datalist.json'",
 "dataset_dir": "/workspace/data/medical/brats2018challenge",
 "test_datalist": "$monai.data.load_decathlon_datalist(@data_list_file_path, data_list_key='testing', base_dir=@dataset_dir)",
 "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
 "amp": true,
 "network_def": {
  "_target_": "SegResNet",
  "blocks_down": [
   1,
   2,
   2,
   4
  ],
  "blocks_up": [
   1,
   1,
   1
  ],
  "init_filters": 16,
  "in_channels": 4,
  "out_channels": 3,
  "dropout_prob": 0.2
 },
 "network": "$@network_def.to(@device)",
 "preprocessing": {
  "_target_": "Compose",
  "transforms": [
   {
    "_target_": "LoadImaged",
    "keys": "@image_key",
    "image_only": false
   },
   {
    "_target_": "NormalizeIntensityd",
    "keys": "@image_key",
    "nonzero": true,
    "channel_wise": true
   }
  ]
 },
 "dataset": {
  "_target_": "Dataset",
  "data": "@test_datalist",
  "transform": "@preprocessing"
 },
 "dataloader": {
  "_target_": "DataLoader",
  "dataset": "@dataset",
  "batch_size": 1,
  "shuffle": true,
  "num_workers": 4
 },
 "inferer": {
  "_target_": "SlidingWindowInferer",
  "roi_size": [
   240,
   240,
   160
  ],
  "sw_batch_size": 1,
  "overlap": 0.5
 },
 "postprocessing": {
  "_target_": "Compose",
  "transforms": [
   {
    "_target_": "Activationsd",
    "keys": "pred",
    "sigmoid": true
   },
   {
    "_target_": "Invertd",
    "keys": "pred",
    "transform": "@preprocessing",
    "orig_keys": "@image_key",
    "meta_keys": "pred_meta_dict",
    "nearest_interp": false,
    "to_tensor": true
   },
   {
    "_target_": "AsDiscreted",
    "keys": "pred",
    "threshold": 0.5
   },
   {
    "_target_": "Lambdad",
    "keys": "pred",
    "func": "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"
   },
   {
    "_target_": "SaveImaged",
    "keys": "pred",
    "meta_keys": "pred_meta_dict",
    "output_dir": "@output_dir",
    "output_ext": "@output_ext",
    "output_dtype": "@output_dtype",
    "output_postfix": "@output_postfix",
    "separate_folder": "@separate_folder",
    "resample": false,
    "squeeze_end_dims": true
   }
  ]
 },
 "handlers": [
  {
   "_target_": "StatsHandler",
   "iteration_log": false
  }
 ],
 "evaluator": {
  "_target_": "SupervisedEvaluator",
  "device": "@device",
  "val_data_loader": "@dataloader",
  "network": "@network",
  "inferer": "@inferer",
  "postprocessing": "@postprocessing",
  "val_handlers": "@handlers",
  "amp": true
 },
 "checkpointloader": {
  "_target_": "CheckpointLoader",
  "load_path": "$@bundle_root + '/models/model.pt'",
  "load_dict": {
   "model": "@network"
  }
 },
 "initialize": [
  "$setattr(torch.backends.cudnn, 'benchmark', True)",
  "$@checkpointloader(@evaluator) if @load_pretrain else None"
 ],
 "run": [
  "$@evaluator.run()"
 ]
}
''')

LARGE_FILES = """large_files:
- path: "models/model.pt"
  url: "https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/model_brats_mri_segmentation.pt"
  hash_val: "870e677b782a5184cbc48db1456b78e8"
  hash_type: "md5"
- path: "models/model.ts"
  url: "https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/model_brats_mri_segmentation.ts"
  hash_val: "c82f693c8f671e9899d21c2f241892f0"
  hash_type: "md5"
"""

#: Channel order of the bundle's input (metadata channel_def).
CHANNELS = ("T1c", "T1", "T2", "FLAIR")


def brats_network(seed: int = 0) -> torch.nn.Module:
    """The bundle's network_def (SegResNet, 4 -> 3) with random weights, built the plain MONAI way."""
    from monai.networks.nets import SegResNet

    kwargs = {k: v for k, v in REAL_INFERENCE["network_def"].items() if not k.startswith("_")}
    torch.manual_seed(seed)
    return SegResNet(**kwargs).eval()


def make_brats_bundle(
    root: Path,
    *,
    roi: tuple[int, int, int] | None = (16, 16, 16),
    seed: int = 0,
    weights: str = "pt",
    state_dict: dict[str, torch.Tensor] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Write the bundle folder ``root`` (Model Zoo layout) and return it.

    Args:
        roi: the inferer's roi_size (None: the real 240x240x160).
        weights: ``"pt"`` (models/model.pt, a plain state dict), ``"pt_nested"`` (under "model"),
            ``"ts"`` (only models/model.ts, TorchScript) or ``"none"``.
        state_dict: weights to write (default: :func:`brats_network`'s).
        edit: called with the inference config before it is written (malicious variants).
    """
    root = Path(root)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "docs").mkdir(exist_ok=True)
    config = copy.deepcopy(REAL_INFERENCE)
    if roi is not None:
        config["inferer"]["roi_size"] = list(roi)
    if edit is not None:
        edit(config)
    (root / "configs" / "metadata.json").write_text(json.dumps(REAL_METADATA, indent=4))
    (root / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    (root / "large_files.yml").write_text(LARGE_FILES)
    (root / "LICENSE").write_text("Apache License, Version 2.0 (test fixture; the real bundle carries the full text)\n")
    (root / "docs" / "data_license.txt").write_text("Third Party Licenses: BraTS 2018 data usage agreement (test fixture)\n")
    (root / "docs" / "README.md").write_text("# BraTS MRI segmentation (test fixture with random weights)\n")
    net = brats_network(seed)
    sd = state_dict if state_dict is not None else net.state_dict()
    if weights == "pt":
        torch.save(sd, root / "models" / "model.pt")
    elif weights == "pt_nested":
        torch.save({"model": sd}, root / "models" / "model.pt")
    elif weights == "ts":
        net.load_state_dict(sd)
        torch.jit.trace(net, torch.zeros(1, 4, 16, 16, 16)).save(str(root / "models" / "model.ts"))
    return root


def brats_like_volume(shape: tuple[int, int, int] = (24, 24, 24), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(array (I, J, K, 4) float32, affine)``: a head (zeros outside) with a bright blob, 4 sequences.

    The affine is BraTS-like (LPS-ish array axes, 1 mm), so a bundle without Orientationd runs on the
    array as stored.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    r = np.sqrt((grid ** 2).sum(0))
    head = r < min(shape) * 0.42
    blob = np.sqrt(((grid - np.array([3, -2, 1])[:, None, None, None]) ** 2).sum(0)) < 4
    arr = np.zeros((*shape, 4), np.float32)
    for c in range(4):
        base = 200.0 + 60 * c + rng.normal(0, 15, shape)
        base[blob] += 250.0 * (1 + c % 2)
        arr[..., c] = np.where(head, base, 0.0)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [60.0, 70.0, -30.0]
    return arr, affine


def write_brats_niftis(folder: Path, shape: tuple[int, int, int] = (24, 24, 24)) -> tuple[Path, list[Path]]:
    """The same case as one 4D NIfTI (channels last, our reader's multi-sequence form) and as four 3D
    NIfTIs (what the Model Zoo's datalist gives LoadImaged); returns ``(4d path, [t1c, t1, t2, flair])``."""
    folder.mkdir(parents=True, exist_ok=True)
    arr, affine = brats_like_volume(shape)
    four = folder / "case_4d.nii.gz"
    nib.save(nib.Nifti1Image(arr, affine), four)
    singles = []
    for c, name in enumerate(CHANNELS):
        p = folder / f"case_{name.lower()}.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(arr[..., c]), affine), p)
        singles.append(p)
    return four, singles
