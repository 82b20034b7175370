"""Dataset folders (MSD or paired layout), fingerprint, k-fold splits and training transforms."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from seg_app.core.errors import SegAppError
from seg_app.core.spec import ModelSpec

IMAGE_SUFFIXES = (".nii.gz", ".nii")


class DatasetError(SegAppError):
    """A dataset folder cannot be used for training or evaluation (layout, labels, files)."""


class ProblemList(DatasetError):
    """Several problems found at once (dataset check, option validation), one line each.

    ``str()`` is the problem itself when there is one, else the summary and the count; ``problems``
    holds every line (``seg-train`` prints them all before its ``error:`` line).
    """

    def __init__(self, summary: str, problems: list[str]) -> None:
        self.summary, self.problems = summary, list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{summary}: {len(self.problems)} problems (listed above)."
        super().__init__(text)


@dataclass
class DatasetInfo:
    """The cases of a dataset folder and what its channels and labels are.

    Args:
        root: the dataset folder.
        layout: ``"msd"`` (``dataset.json``) or ``"paired"`` (``images/`` + ``labels/``).
        training: ``[{"name", "image", "label"}]`` labelled training cases (absolute paths).
        test: ``[{"name", "image", "label"?}]`` test cases (``label`` when ``labelsTs/`` has it).
        channel_names: one name per input channel; ``modality``: ``"MR"`` or ``"CT"``.
        labels: label value -> name, background (0) included.
    """

    root: Path
    layout: str
    training: list[dict[str, str]]
    test: list[dict[str, str]] = field(default_factory=list)
    channel_names: tuple[str, ...] = ("image",)
    modality: str = "MR"
    labels: dict[int, str] = field(default_factory=lambda: {0: "background", 1: "tumour"})


def case_name(path: str | os.PathLike) -> str:
    """File name without ``.nii``/``.nii.gz``."""
    n = Path(path).name
    for ext in IMAGE_SUFFIXES:
        if n.lower().endswith(ext):
            return n[: -len(ext)]
    return Path(n).stem


def _ct_or_mr(names: list[str]) -> str:
    return "CT" if any(n.strip().upper() == "CT" for n in names) else "MR"


def _resolve(root: Path, rel: str) -> Path:
    p = (root / rel).resolve()
    if not p.exists():
        raise DatasetError(f"The dataset lists {rel} but {p} does not exist.")
    return p


def read_dataset(folder: str | os.PathLike) -> DatasetInfo:
    """Read an MSD folder (``dataset.json``) or a paired ``images/`` + ``labels/`` folder."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"The dataset folder {root} does not exist.")
    if (root / "dataset.json").is_file():
        return _read_msd(root)
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return _read_paired(root)
    raise DatasetError(
        f"{root} is neither an MSD dataset (dataset.json) nor a paired layout (images/ and labels/ folders)."
    )


def _read_msd(root: Path) -> DatasetInfo:
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{root / 'dataset.json'} is not valid JSON ({exc}).") from exc
    try:
        mods = meta.get("modality") or meta.get("channel_names") or {"0": "image"}
        channel_names = tuple(str(mods[k]) for k in sorted(mods, key=int))
        raw_labels = meta["labels"]
        # MSD: {"0": "background"}; nnU-Net v2: {"background": 0}
        if all(str(k).isdigit() for k in raw_labels):
            labels = {int(k): str(v) for k, v in raw_labels.items()}
        else:
            labels = {int(v): str(k) for k, v in raw_labels.items()}
        training = []
        for item in meta["training"]:
            img = _resolve(root, item["image"])
            lab = _resolve(root, item["label"])
            training.append({"name": case_name(img), "image": str(img), "label": str(lab)})
        test = []
        for item in meta.get("test", []):
            rel = item["image"] if isinstance(item, dict) else item
            img = _resolve(root, rel)
            case = {"name": case_name(img), "image": str(img)}
            lab = root / "labelsTs" / img.name
            if isinstance(item, dict) and "label" in item:
                lab = root / item["label"]
            if lab.exists():
                case["label"] = str(lab.resolve())
            test.append(case)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{root / 'dataset.json'} lacks the MSD fields modality/labels/training ({exc!r}).") from exc
    _check_labels(labels, root)
    return DatasetInfo(root, "msd", training, test, channel_names, _ct_or_mr(list(channel_names)), labels)


def _read_paired(root: Path) -> DatasetInfo:
    images = {case_name(p): p for p in sorted((root / "images").iterdir()) if p.name.lower().endswith(IMAGE_SUFFIXES)}
    labels = {case_name(p): p for p in sorted((root / "labels").iterdir()) if p.name.lower().endswith(IMAGE_SUFFIXES)}
    missing = sorted(set(images) ^ set(labels))
    if missing:
        raise DatasetError(f"{root}: images and labels do not match by file name (unpaired: {', '.join(missing[:5])}).")
    if not images:
        raise DatasetError(f"{root / 'images'} holds no .nii/.nii.gz images.")
    training = [{"name": n, "image": str(images[n].resolve()), "label": str(labels[n].resolve())} for n in sorted(images)]
    meta: dict[str, Any] = {}
    if (root / "labels.json").is_file():  # optional {"1": "tumour", ...}
        meta = json.loads((root / "labels.json").read_text())
    if meta:
        label_map = {0: "background", **{int(k): str(v) for k, v in meta.items()}}
    else:
        values: set[int] = set()
        for case in training[:20]:
            values |= set(np.unique(np.asarray(nib.load(case["label"]).dataobj)).astype(int).tolist())
        label_map = {0: "background", **{v: f"label {v}" for v in sorted(values) if v != 0}}
        if label_map == {0: "background", 1: "label 1"}:
            label_map = {0: "background", 1: "tumour"}
    shape = nib.load(training[0]["image"]).shape
    n_ch = int(shape[3]) if len(shape) == 4 else 1
    names = tuple(f"channel {i}" for i in range(n_ch)) if n_ch > 1 else ("image",)
    _check_labels(label_map, root)
    return DatasetInfo(root, "paired", training, [], names, "MR", label_map)


def _check_labels(labels: dict[int, str], root: Path) -> None:
    if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
        raise DatasetError(f"{root}: label values must be 0..N-1 with background 0 (got {sorted(labels)}).")


# ---- fingerprint ------------------------------------------------------------------------------------
def _ras_spacing_shape(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Voxel size (mm) and shape along RAS axes, from the NIfTI header only."""
    img = nib.load(path)
    ornt = nib.io_orientation(img.affine)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    shape = np.asarray(img.shape[:3], dtype=float)
    order = ornt[:, 0].astype(int)  # array axis i -> RAS axis order[i]
    sp, sh = np.empty(3), np.empty(3)
    sp[order], sh[order] = zooms, shape
    return sp, sh


def fingerprint(info: DatasetInfo, max_patch_voxels: int = 64**3, divisor: int = 16) -> dict[str, Any]:
    """nnU-Net-style dataset fingerprint: median spacing -> target spacing, median shape -> patch size.

    The patch is the median shape at the target spacing, shrunk (largest axis first) until it holds at
    most ``max_patch_voxels`` voxels, and rounded to a multiple of ``divisor`` (the network's
    down-sampling factor).
    """
    sp, sh = zip(*(_ras_spacing_shape(c["image"]) for c in info.training))
    spacing = np.median(np.stack(sp), axis=0)
    shape_mm = np.median(np.stack(sh) * np.stack(sp), axis=0)
    shape = shape_mm / spacing
    patch = np.maximum(np.floor(shape / divisor) * divisor, divisor)
    while np.prod(patch) > max_patch_voxels and patch.max() > divisor:
        patch[int(np.argmax(patch))] -= divisor
    fp: dict[str, Any] = {
        "n_cases": len(info.training),
        "median_spacing_mm": [round(float(s), 3) for s in spacing],
        "median_shape": [int(round(s)) for s in shape],
        "patch_size": [int(p) for p in patch],
        "channels": list(info.channel_names),
        "labels": {str(k): v for k, v in info.labels.items()},
        "layout": info.layout,
    }
    if info.modality == "CT":  # clip window from foreground intensity percentiles (nnU-Net's CT scheme)
        vals = []
        for c in info.training[:10]:
            img = np.asarray(nib.load(c["image"]).dataobj, dtype=np.float32)
            lab = np.asarray(nib.load(c["label"]).dataobj) > 0
            vals.append(img[lab][:: max(1, int(lab.sum() // 10000))])
        v = np.concatenate(vals) if vals else np.array([-1000.0, 1000.0])
        fp["ct_window"] = [float(np.percentile(v, 0.5)), float(np.percentile(v, 99.5))]
    return fp


# ---- splits -------------------------------------------------------------------------------------------
def kfold_split(names: list[str], folds: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """Deterministic k-fold split: every case is in exactly one validation fold."""
    if folds < 2 or folds > len(names):
        raise DatasetError(f"Cannot make {folds} folds from {len(names)} cases.")
    order = sorted(names)
    perm = np.random.default_rng(seed).permutation(len(order))
    chunks = np.array_split(perm, folds)
    out = []
    for k in range(folds):
        val = sorted(order[i] for i in chunks[k])
        out.append({"train": [n for n in order if n not in set(val)], "val": val})
    return out


def holdout_split(names: list[str], val_fraction: float, seed: int = 0) -> dict[str, list[str]]:
    """Deterministic train/validation split (at least one validation case when possible)."""
    order = sorted(names)
    n_val = max(1, int(round(len(order) * val_fraction))) if len(order) > 1 and val_fraction > 0 else 0
    perm = np.random.default_rng(seed).permutation(len(order))
    val = sorted(order[i] for i in perm[:n_val])
    return {"train": [n for n in order if n not in set(val)], "val": val}


# ---- transforms ---------------------------------------------------------------------------------------
def deterministic_transforms(spec: ModelSpec) -> list:
    """Shared preprocessing (load, RAS, spacing, normalisation) + label cast, pad to the patch, crop indices.

    Everything here is cached once by ``CacheDataset``; the output is plain tensors (no metadata
    tracking) so the random part runs faster.
    """
    from monai.transforms import CastToTyped, EnsureTyped, FgBgToIndicesd, SpatialPadd

    from seg_app.core.preprocess import preprocess_transforms

    return [
        *preprocess_transforms(spec, ("image",), ("label",), load=True).transforms,
        CastToTyped(keys=["label"], dtype=np.uint8),
        SpatialPadd(keys=["image", "label"], spatial_size=list(spec.inference.roi_size), mode="constant"),
        FgBgToIndicesd(keys="label", fg_postfix="_fg", bg_postfix="_bg", image_key="image"),
        EnsureTyped(keys=["image", "label", "label_fg", "label_bg"], track_meta=False, allow_missing_keys=True),
    ]


def random_transforms(spec: ModelSpec, samples_per_case: int = 2, pos_fraction: float = 0.67, augment: bool = True,
                      domain_augment: bool = False) -> list:
    """Crop first (pos/neg-balanced around lesions), then augment the small patch.

    ``domain_augment`` adds stronger appearance randomisation on every patch (on top of the synthetic
    data's own): a random non-linear intensity curve (``RandHistogramShiftd``), a bias field,
    simulated low resolution, Rician noise and stronger gamma -- so one case is seen in many contrasts.
    """
    from monai.transforms import (
        CastToTyped,
        RandAdjustContrastd,
        RandAffined,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    roi = list(spec.inference.roi_size)
    t: list = [
        RandCropByPosNegLabeld(
            keys=["image", "label"], label_key="label", spatial_size=roi, pos=pos_fraction, neg=1.0 - pos_fraction,
            num_samples=samples_per_case, fg_indices_key="label_fg", bg_indices_key="label_bg", allow_smaller=True,
        ),
    ]
    if augment:
        t += [
            RandAffined(
                keys=["image", "label"], prob=0.3, rotate_range=[0.26] * 3, scale_range=[0.12] * 3,
                mode=["bilinear", "nearest"], padding_mode="zeros", spatial_size=roi, cache_grid=True,
            ),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
            RandFlipd(keys=["image", "label"], prob=0.2, spatial_axis=1),
            RandFlipd(keys=["image", "label"], prob=0.2, spatial_axis=2),
            RandScaleIntensityd(keys="image", factors=0.15, prob=0.3),
            RandShiftIntensityd(keys="image", offsets=0.15, prob=0.3),
            RandGaussianNoised(keys="image", std=0.05, prob=0.15),
            RandAdjustContrastd(keys="image", gamma=(0.75, 1.4), prob=0.15),
            RandGaussianSmoothd(keys="image", sigma_x=(0.4, 1.0), sigma_y=(0.4, 1.0), sigma_z=(0.4, 1.0), prob=0.1),
        ]
    if augment and domain_augment:
        from monai.transforms import RandBiasFieldd, RandHistogramShiftd, RandRicianNoised, RandSimulateLowResolutiond

        t += [
            RandHistogramShiftd(keys="image", num_control_points=(4, 10), prob=0.4),
            RandBiasFieldd(keys="image", coeff_range=(0.0, 0.3), prob=0.3),
            RandSimulateLowResolutiond(keys="image", zoom_range=(0.4, 0.9), prob=0.2),
            RandAdjustContrastd(keys="image", gamma=(0.6, 1.6), prob=0.3),
            RandRicianNoised(keys="image", std=0.04, prob=0.2, relative=False),
        ]
    t.append(CastToTyped(keys=["image", "label"], dtype=[np.float32, np.int64]))
    return t
