"""``seg-train check DATA``: dataset integrity check (after nnU-Net's ``--verify_dataset_integrity``).

Runs by itself before ``seg-train train`` and ``evaluate`` (``--no-check`` skips it) and reports every
problem at once, one line per problem naming the file, before any training starts:

* the layout: ``dataset.json`` readable with ``labels`` 0..N-1 (background 0), ``modality`` and
  ``training``; or ``images/`` + ``labels/`` with the same file names; every listed file present;
* every file readable as NIfTI, its header sane (3D, or 4D with channels; no empty axis; a finite,
  invertible affine), and its data readable to the end (truncated or corrupt files);
* images: the channel count of ``dataset.json`` (``modality``), the same in every case of a paired
  folder, or the model's for ``evaluate``; no NaN or infinite voxel;
* labels: one channel, on the image's grid (same shape; affines equal within ``AFFINE_ATOL_MM`` mm +
  ``AFFINE_RTOL``), integer values (no NaN), only the declared labels.

Headers are read first (cheap, nibabel proxies); the voxel data of every file is read once, in a few
threads (decompression releases the GIL).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from training.data import IMAGE_SUFFIXES, ProblemList, case_name

__all__ = ["AFFINE_ATOL_MM", "AFFINE_RTOL", "CheckReport", "check_dataset"]

#: Image/label affines may differ by this much (mm, and relatively) and still count as one grid.
AFFINE_ATOL_MM = 1e-3
AFFINE_RTOL = 1e-4


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: ``problems`` (one line each, ``FILE: problem``), and counts."""

    root: Path
    n_cases: int = 0
    n_files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.root}: {self.n_cases} case(s), {self.n_files} file(s) checked, no problems."
        return f"{self.root}: {len(self.problems)} problem(s) in {self.n_cases} case(s), {self.n_files} file(s) checked."


@dataclass
class _Case:
    name: str
    image: Path
    label: Path | None
    split: str


# ---- layout ------------------------------------------------------------------------------------------
def _msd_cases(root: Path, splits: Sequence[str], problems: list[str]) -> tuple[list[_Case], int | None, set[int] | None]:
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: cannot be read as JSON ({exc}).")
        return [], None, None
    channels: int | None = None
    mods = meta.get("modality", meta.get("channel_names"))
    if isinstance(mods, dict) and mods:
        channels = len(mods)
    elif mods is not None:
        problems.append(f"{path}: 'modality' must map channel numbers to names, e.g. {{\"0\": \"FLAIR\"}}.")
    else:
        channels = 1
    declared = _declared_labels(meta.get("labels"), path, problems)
    cases: list[_Case] = []
    for split in splits:
        items = meta.get(split, [])
        if split == "training" and "training" not in meta:
            problems.append(f"{path}: has no 'training' list.")
        if not isinstance(items, list):
            problems.append(f"{path}: '{split}' must be a list.")
            continue
        for n, item in enumerate(items):
            img_rel = item.get("image") if isinstance(item, dict) else item
            lab_rel = item.get("label") if isinstance(item, dict) else None
            if not isinstance(img_rel, str) or (split == "training" and not isinstance(lab_rel, str)):
                problems.append(f"{path}: {split}[{n}] needs 'image'" + (" and 'label' paths." if split == "training" else " path."))
                continue
            img = (root / img_rel).resolve()
            lab = (root / lab_rel).resolve() if isinstance(lab_rel, str) else None
            if split == "test" and lab is None and (root / "labelsTs" / img.name).exists():
                lab = (root / "labelsTs" / img.name).resolve()
            cases.append(_Case(case_name(img), img, lab, split))
    return cases, channels, declared


def _declared_labels(raw: Any, path: Path, problems: list[str]) -> set[int] | None:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{path}: 'labels' must map label values to names, e.g. {{\"0\": \"background\", \"1\": \"tumour\"}}.")
        return None
    try:
        values = {int(k) for k in raw} if all(str(k).lstrip("-").isdigit() for k in raw) else {int(v) for v in raw.values()}
    except (TypeError, ValueError):
        problems.append(f"{path}: 'labels' values must be integers.")
        return None
    if sorted(values) != list(range(len(values))) or len(values) < 2:
        problems.append(f"{path}: label values must be 0..N-1 with background 0 and at least one more (got {sorted(values)}).")
    return values


def _paired_cases(root: Path, problems: list[str]) -> tuple[list[_Case], int | None, set[int] | None]:
    def listing(sub: str) -> dict[str, Path]:
        return {case_name(p): p for p in sorted((root / sub).iterdir()) if p.name.lower().endswith(IMAGE_SUFFIXES)}

    images, labels = listing("images"), listing("labels")
    for n in sorted(set(images) - set(labels)):
        problems.append(f"{images[n]}: has no label file in {root / 'labels'} (same file name).")
    for n in sorted(set(labels) - set(images)):
        problems.append(f"{labels[n]}: has no image file in {root / 'images'} (same file name).")
    if not images:
        problems.append(f"{root / 'images'}: holds no .nii/.nii.gz images.")
    declared = None
    if (root / "labels.json").is_file():
        try:
            raw = json.loads((root / "labels.json").read_text())
            declared = _declared_labels({"0": "background", **raw} if isinstance(raw, dict) else raw, root / "labels.json", problems)
        except (OSError, ValueError) as exc:
            problems.append(f"{root / 'labels.json'}: cannot be read as JSON ({exc}).")
    cases = [_Case(n, images[n].resolve(), labels[n].resolve(), "training") for n in sorted(set(images) & set(labels))]
    return cases, None, declared


# ---- files ------------------------------------------------------------------------------------------
def _header(path: Path, problems: list[str]) -> nib.Nifti1Image | None:
    """The NIfTI proxy (header only) or None after recording why it cannot be used."""
    if not path.exists():
        problems.append(f"{path}: does not exist.")
        return None
    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        problems.append(f"{path}: cannot be read as NIfTI ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).")
        return None
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (3, 4):
        problems.append(f"{path}: has {len(shape)} dimensions {shape}; 3D images or 4D multi-channel images only.")
        return None
    if any(s <= 0 for s in shape):
        problems.append(f"{path}: has an empty axis (shape {shape}).")
        return None
    aff = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        problems.append(f"{path}: its affine (voxel to world) is not finite and invertible.")
        return None
    return img


def _n_channels(img: nib.Nifti1Image) -> int:
    shape = [int(s) for s in img.shape]
    while len(shape) > 4 and shape[-1] == 1:
        shape.pop()
    return shape[3] if len(shape) == 4 else 1


def _data(img: nib.Nifti1Image, path: Path, problems: list[str]) -> np.ndarray | None:
    """All voxels (scaled as the app reads them), or None after recording why they cannot be read."""
    try:
        return np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - truncated gzip (EOFError), zlib errors, short files (ValueError)
        msg = str(exc).splitlines()[0] if str(exc) else ""
        problems.append(f"{path}: its voxel data cannot be read; the file is truncated or corrupt ({type(exc).__name__}: {msg}).")
        return None


def _check_case(case: _Case, channels: int | None, declared: set[int] | None) -> tuple[list[str], int | None]:
    """Problems of one case, and its image's channel count (None when unreadable)."""
    problems: list[str] = []
    img = _header(case.image, problems)
    lab = _header(case.label, problems) if case.label is not None else None
    n_ch = None
    if img is not None:
        n_ch = _n_channels(img)
        if channels is not None and n_ch != channels:
            problems.append(f"{case.image}: has {n_ch} channel(s); {channels} expected.")
        arr = _data(img, case.image, problems)
        if arr is not None and arr.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                problems.append(f"{case.image}: {bad} voxel(s) are NaN or infinite.")
        del arr
    if lab is not None:
        if _n_channels(lab) != 1:
            problems.append(f"{case.label}: a label map must have one channel (it has {_n_channels(lab)}).")
        if img is not None:
            if tuple(img.shape[:3]) != tuple(lab.shape[:3]):
                problems.append(f"{case.label}: shape {tuple(lab.shape[:3])} differs from its image's {tuple(img.shape[:3])} ({case.image.name}).")
            elif not np.allclose(lab.affine, img.affine, rtol=AFFINE_RTOL, atol=AFFINE_ATOL_MM):
                diff = float(np.max(np.abs(np.asarray(lab.affine) - np.asarray(img.affine))))
                problems.append(f"{case.label}: its affine differs from its image's ({case.image.name}) by up to {diff:.3g} mm; not on the same grid.")
        arr = _data(lab, case.label, problems) if _n_channels(lab) == 1 else None
        if arr is not None:
            problems.extend(_label_problems(arr, case.label, declared))
    return problems, n_ch


def _label_problems(arr: np.ndarray, path: Path, declared: set[int] | None) -> list[str]:
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            return [f"{path}: {int(np.count_nonzero(~finite))} label voxel(s) are NaN or infinite."]
        if np.any(arr != np.round(arr)):
            return [f"{path}: label values must be integers (found e.g. {float(arr[arr != np.round(arr)].flat[0]):g})."]
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    allowed = declared if declared is not None else None
    if lo < 0:
        return [f"{path}: negative label value {lo}."]
    if allowed is not None and (lo not in allowed or hi not in allowed or not set(range(lo, hi + 1)) <= allowed):
        found = sorted(int(v) for v in np.unique(arr))
        extra = [v for v in found if v not in allowed]
        if extra:
            return [f"{path}: label value(s) {extra} are not declared (declared: {sorted(allowed)})."]
    return []


# ---- the check ----------------------------------------------------------------------------------------
def check_dataset(folder: str | os.PathLike, splits: Sequence[str] = ("training", "test"), channels: int | None = None,
                  raise_on_problems: bool = False, threads: int | None = None) -> CheckReport:
    """Check every case of ``splits`` (``"training"``, ``"test"``) of a dataset folder.

    Args:
        channels: the image channel count required (e.g. the model's for ``evaluate``); default: the
            dataset's own (``dataset.json`` modality, or the first image of a paired folder).
        raise_on_problems: raise :class:`ProblemList` (every problem) instead of returning them.
        threads: files read in parallel (default: up to 4).
    """
    root = Path(folder)
    report = CheckReport(root)
    problems = report.problems
    cases: list[_Case] | None = None
    ds_channels: int | None = None
    declared: set[int] | None = None
    if not root.is_dir():
        problems.append(f"{root}: the dataset folder does not exist.")
    elif (root / "dataset.json").is_file():
        cases, ds_channels, declared = _msd_cases(root, splits, problems)
    elif (root / "images").is_dir() and (root / "labels").is_dir():
        cases, ds_channels, declared = _paired_cases(root, problems) if "training" in splits else ([], None, None)
    else:
        problems.append(f"{root}: neither an MSD dataset (dataset.json) nor a paired layout (images/ and labels/ folders).")
    if cases is None:
        return _finish(report, raise_on_problems)
    seen: dict[tuple[str, str], Path] = {}
    for c in cases:
        if (c.split, c.name) in seen:
            problems.append(f"{c.image}: case name '{c.name}' is used twice in '{c.split}' (also {seen[(c.split, c.name)]}).")
        seen[(c.split, c.name)] = c.image
    want = channels if channels is not None else ds_channels
    n_threads = threads or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(n_threads) as pool:
        results = list(pool.map(lambda c: _check_case(c, want, declared), cases))
    first = next((n for _, n in results if n is not None), None)
    for c, (case_problems, n) in zip(cases, results):
        problems.extend(case_problems)
        if want is None and n is not None and n != first:  # paired folder: every image like the first
            problems.append(f"{c.image}: has {n} channel(s) but the first image has {first}; all must match.")
    report.n_cases = len(cases)
    report.n_files = len(cases) + sum(c.label is not None for c in cases)
    return _finish(report, raise_on_problems)


def _finish(report: CheckReport, raise_on_problems: bool) -> CheckReport:
    if raise_on_problems and report.problems:
        raise ProblemList(f"The dataset check of {report.root} failed; nothing was run", report.problems)
    return report
