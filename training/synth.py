"""Synthetic brain-tumour MRI in Medical Segmentation Decathlon layout (``seg-train synth``).

Each case starts from real anatomy, the skull-stripped MNI152 (ICBM 2009) T1 template shipped with
nilearn, and is made different by a random affine + elastic deformation, a random voxel grid (spacing,
thick slices, axis flips), partial-volume blur, a smooth multiplicative bias field, a gamma contrast
change, Rician noise and a random scanner intensity scale. Lesions are inserted on the output grid:
an irregular blob with an enhancing rim around a dark necrotic core (or solid enhancement), inside
a hypo-intense oedema halo; 0 to 3 lesions per case.

Labels: 0 = background, 1 = tumour (enhancing rim + necrotic core). The oedema is visible in the
image but not labelled. Everything is a function of ``(seed, split, case index)`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.special import expit

TEMPLATE_LABELS = {"0": "background", "1": "tumour"}
_SPLITS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SynthOptions:
    """Generation settings.

    Args:
        spacing_mm: base voxel size in mm (jittered per case); ignored when ``size`` is given.
        size: if set, every case is ``size`` voxels along each axis (tiny volumes for tests).
        channels: 1 (post-contrast T1-like) or 2 (+ a FLAIR-like channel, written as 4D NIfTI).
    """

    spacing_mm: float = 2.0
    size: int | None = None
    channels: int = 1


@lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray]:
    """The 2 mm MNI152 T1 template (values 0..1) and its affine."""
    from nilearn.datasets import load_mni152_template

    img = load_mni152_template(resolution=2)
    return np.asarray(img.get_fdata(), dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5) -> np.ndarray:
    """A smooth random field in about [-1, 1] (cubic upsampling of a coarse random grid)."""
    g = rng.uniform(-1.0, 1.0, size=(coarse,) * len(shape)).astype(np.float32)
    zoom = [s / coarse for s in shape]
    f = ndimage.zoom(g, zoom, order=3, mode="nearest")
    return f[tuple(slice(0, s) for s in shape)]


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _output_grid(rng: np.random.Generator, opts: SynthOptions, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """Random RAS grid (shape, affine) covering the brain with a margin."""
    fov = (hi_mm - lo_mm) + 16.0
    centre = (hi_mm + lo_mm) / 2 + rng.uniform(-4, 4, 3)
    if opts.size:
        shape = np.array([opts.size] * 3)
        spacing = fov / opts.size * rng.uniform(0.97, 1.03, 3)
    else:
        spacing = opts.spacing_mm * rng.uniform(0.9, 1.2, 3)
        if rng.random() < 0.3:  # thick slices along one axis
            spacing[int(rng.integers(3))] *= rng.uniform(1.3, 1.6)
        shape = np.ceil(fov / spacing).astype(int)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = centre - spacing * (shape - 1) / 2
    return tuple(int(s) for s in shape), affine  # type: ignore[return-value]


def _warp_template(rng: np.random.Generator, shape: tuple[int, int, int], affine: np.ndarray, size_mode: bool) -> np.ndarray:
    """Sample the template on the output grid through a random affine + elastic deformation."""
    tpl, tpl_aff = _template()
    ijk = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)
    centre = world.reshape(-1, 3).mean(0)
    rot = _rotation(rng, 8.0) * rng.uniform(0.9, 1.1)
    src = (world - centre) @ rot.T.astype(np.float32) + centre + rng.uniform(-3, 3, 3).astype(np.float32)
    amp = 0.0 if size_mode else rng.uniform(2.0, 5.0)  # elastic displacement, mm
    if amp > 0:
        for ax in range(3):
            src[..., ax] += amp * _smooth_field(rng, shape, coarse=6)
    inv = np.linalg.inv(tpl_aff)
    vox = src @ inv[:3, :3].T.astype(np.float32) + inv[:3, 3].astype(np.float32)
    coords = np.moveaxis(vox, -1, 0)
    return ndimage.map_coordinates(tpl, coords, order=1, mode="constant", cval=0.0).astype(np.float32)


def _insert_lesions(
    rng: np.random.Generator, t1: np.ndarray, brain: np.ndarray, affine: np.ndarray, size_mode: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Add lesions; returns (T1c-like image, oedema+tumour weight for FLAIR, tumour labels, lesion info)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    n = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.5, 0.25, 0.1]))
    labels = np.zeros(t1.shape, np.uint8)
    flair_w = np.zeros(t1.shape, np.float32)
    img = t1.copy()
    wm_level = float(np.percentile(t1[brain], 75)) if brain.any() else 0.8
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    info: list[dict[str, Any]] = []
    ijk = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in t1.shape], indexing="ij"), -1) * spacing.astype(np.float32)
    for k in range(n):
        r = rng.uniform(9.0, 22.0) if k == 0 else rng.uniform(5.0, 12.0)
        r = max(r, 2.2 * float(spacing.max()))
        ok = np.argwhere(depth > 0.6 * r)
        if len(ok) == 0:
            break
        c = ok[int(rng.integers(len(ok)))] * spacing
        rel = (ijk - c.astype(np.float32)) / np.asarray(rng.uniform(0.75, 1.25, 3) * r, dtype=np.float32)
        d = np.sqrt((rel**2).sum(-1))
        d *= 1.0 + 0.22 * _smooth_field(rng, t1.shape, coarse=7)  # irregular outline
        edge = 0.08 if size_mode else 0.05
        tumour_w = expit((1.0 - d) / edge)
        ring = rng.random() < 0.7
        core_frac = rng.uniform(0.35, 0.7) if ring else 0.0
        core_w = expit((core_frac - d) / edge) if ring else np.zeros_like(d)
        oed_extent = rng.uniform(1.3, 2.2)
        oed_w = expit((oed_extent - d) / 0.15)
        oed_w *= brain
        tumour_w *= brain
        core_w *= brain
        texture = 1.0 + 0.08 * _smooth_field(rng, t1.shape, coarse=12)
        img = img * (1.0 - rng.uniform(0.12, 0.3) * oed_w * (1.0 - tumour_w))
        rim_val = wm_level * rng.uniform(1.3, 1.75) * texture
        img = img * (1.0 - tumour_w) + rim_val * tumour_w
        core_val = wm_level * rng.uniform(0.2, 0.45)
        img = img * (1.0 - core_w) + core_val * core_w
        flair_w = np.maximum(flair_w, oed_w)
        lab = (d < 1.0) & brain
        labels[lab] = 1
        info.append(
            {"radius_mm": round(float(r), 2), "ring": bool(ring), "centre_mm": [round(float(v), 1) for v in c],
             "voxels": int(lab.sum())}
        )
    return img.astype(np.float32), flair_w, labels, info


def make_case(seed: int, index: int, split: str = "train", opts: SynthOptions = SynthOptions()) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Generate one case deterministically.

    Returns:
        image ``(C, I, J, K)`` float32 in scanner-like units, labels ``(I, J, K)`` uint8, the 4x4 RAS
        affine, and a dict describing the case (lesions, spacing).
    """
    rng = np.random.default_rng([int(seed), _SPLITS[split], int(index)])
    tpl, tpl_aff = _template()
    idx = np.argwhere(tpl > 0.05)
    lo = tpl_aff[:3, :3] @ idx.min(0) + tpl_aff[:3, 3]
    hi = tpl_aff[:3, :3] @ idx.max(0) + tpl_aff[:3, 3]
    shape, affine = _output_grid(rng, opts, lo, hi)
    size_mode = opts.size is not None
    t1 = _warp_template(rng, shape, affine, size_mode)
    brain = t1 > 0.08
    img, flair_w, labels, lesions = _insert_lesions(rng, t1, brain, affine, size_mode)

    chans = [img]
    if opts.channels >= 2:  # FLAIR-like: inverted grey/white contrast, dark CSF, bright oedema + tumour
        flair = np.where(t1 > 0.3, 1.15 - 0.6 * t1, 0.25 * t1)
        flair = flair * (1 - flair_w) + rng.uniform(1.0, 1.3) * flair_w
        chans.append(np.where(brain, flair, 0).astype(np.float32))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    out = []
    for ch in chans:
        # resolution: partial-volume blur; bias field; gamma contrast; Rician noise; scanner scale
        ch = ndimage.gaussian_filter(ch, sigma=rng.uniform(0.3, 0.8) * 2.0 / spacing)
        bias = np.exp(rng.uniform(0.1, 0.3) * _smooth_field(rng, shape, coarse=4))
        ch = np.clip(ch * bias, 0, None) ** rng.uniform(0.75, 1.35)
        sigma = rng.uniform(0.015, 0.05) * float(np.percentile(ch[brain], 75) if brain.any() else 1.0)
        ch = np.sqrt((ch + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
        ch = np.where(brain, ch, 0.0) * rng.uniform(400.0, 1500.0)
        out.append(ch.astype(np.float32))
    image = np.stack(out)
    if rng.random() < 0.3:  # store some cases left-right flipped (LAS), like many converters do
        image, labels = image[:, ::-1].copy(), labels[::-1].copy()
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1, shape[0] - 1
        affine = affine @ flip
    meta = {"lesions": lesions, "spacing_mm": [round(float(s), 3) for s in spacing], "shape": list(shape)}
    return image, labels, affine, meta


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path, is_label: bool) -> None:
    if is_label:
        data = array.astype(np.uint8)
    else:
        data = np.moveaxis(array, 0, -1) if array.shape[0] > 1 else array[0]
        data = np.round(data).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    tmp = path.with_name(f".tmp-{path.name}")
    nib.save(img, tmp)
    tmp.replace(path)


def write_dataset(out: str | Path, cases: int, seed: int, test_cases: int = 0, opts: SynthOptions = SynthOptions(), progress: bool = True) -> Path:
    """Write an MSD-layout dataset: ``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/``.

    ``labelsTs/`` is not part of MSD; it holds the test labels for held-out evaluation.
    """
    from tqdm import tqdm

    out = Path(out)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    training, test, details = [], [], {}
    jobs = [("train", i) for i in range(cases)] + [("test", i) for i in range(test_cases)]
    for split, i in tqdm(jobs, desc="synth", disable=not progress, unit="case"):
        name = f"synth_{'tr' if split == 'train' else 'ts'}_{i:03d}.nii.gz"
        image, labels, affine, meta = make_case(seed, i, split, opts)
        img_dir, lab_dir = ("imagesTr", "labelsTr") if split == "train" else ("imagesTs", "labelsTs")
        _save_nifti(image, affine, out / img_dir / name, False)
        _save_nifti(labels, affine, out / lab_dir / name, True)
        if split == "train":
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
        details[name] = meta
    modality = {"0": "T1c"} if opts.channels == 1 else {"0": "T1c", "1": "FLAIR"}
    dataset = {
        "name": "SyntheticBrainTumour",
        "description": "Synthetic brain MRI with tumour-like lesions (MNI152 anatomy); not real patients.",
        "reference": "seg-train synth",
        "licence": "synthetic; anatomy from the MNI152 ICBM 2009 template (see sample_scans/README.md)",
        "tensorImageSize": "4D" if opts.channels > 1 else "3D",
        "modality": modality,
        "labels": TEMPLATE_LABELS,
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "synth": {"seed": seed, "spacing_mm": opts.spacing_mm, "size": opts.size, "channels": opts.channels},
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=1))
    (out / "synth_cases.json").write_text(json.dumps(details, indent=1))
    return out
