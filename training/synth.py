"""Domain-randomised synthetic brain-tumour MRI in MSD layout (``seg-train synth``).

Images are generated from **label maps**, not from one template image (after SynthSeg, Billot et al.,
Medical Image Analysis 2023), so that what the network must ignore is random and what it must find is
not:

1. *Anatomy*: the MNI152 2009 GM / WM probability maps and brain mask shipped with nilearn (CSF = mask
   - GM - WM), plus non-brain layers grown outward from the brain surface with random thickness:
   extra-axial CSF, skull bone, scalp fat, skin/muscle, air. Half the cases keep them (a scan that is
   *not* skull-stripped), half are stripped (some imperfectly).
2. *Geometry*: random affine (rotation, scaling) + smooth elastic deformation of all maps together;
   large tumours push the surrounding anatomy away (mass effect, a radial compression of the sampling
   coordinates).
3. *Tumours* (BraTS labels 1 necrotic/non-enhancing core, 2 peritumoral oedema, 3 enhancing tumour):
   families ring-enhancing with necrosis, solid enhancing, non-enhancing infiltrative, cystic, multifocal
   small foci (0.2-3 mL) and large (to ~150 mL); oedema halos of random extent that prefer white matter;
   any location inside the brain (cortex, periventricular, midline, posterior fossa). 25 % of cases
   have no lesion.
4. *Contrast*: a random mean (and texture) per label -- fully random (any contrast, inverted ones
   included), or jittered T1 / T1c / T2 / FLAIR / PD presets, or the real template's own T1 contrast;
   partial volume from the probability maps.
5. *Artefacts*: bias field, Gaussian or Rician noise, gamma, partial-volume blur, random resolution
   (1-7 mm slices along a random axis with the slice-profile blur, then back to the training grid),
   random field-of-view cuts.

Every case is a function of ``(seed, split, case index)`` only. Images are written on an RAS grid at
``spacing_mm`` (the network's grid), so the low resolution is simulated, not stored.
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

from seg_app.core.regions import BRATS_LABELS

__all__ = ["TEMPLATE_LABELS", "SynthOptions", "make_case", "write_dataset"]

TEMPLATE_LABELS = {"0": "background", **{str(k): v for k, v in BRATS_LABELS.items()}}
_SPLITS = {"train": 0, "test": 1}

# intensity classes (rows of the per-case mean table)
AIR, CSF, GM, WM, BONE, FAT, MUSCLE, NCR, ED, ET = range(10)
_N_CLASSES = 10

# Relative means (WM = 1) of the realistic presets: air, csf, gm, wm, bone, fat, muscle, ncr, ed, et.
_PRESETS: dict[str, tuple[float, ...]] = {
    "T1": (0.0, 0.3, 0.65, 1.0, 0.12, 1.35, 0.55, 0.4, 0.72, 0.75),
    "T1c": (0.0, 0.3, 0.65, 1.0, 0.12, 1.35, 0.55, 0.35, 0.7, 1.55),
    "T2": (0.0, 2.3, 1.35, 1.0, 0.12, 1.2, 0.6, 2.1, 1.8, 1.45),
    "FLAIR": (0.0, 0.25, 1.2, 1.0, 0.12, 1.3, 0.6, 1.3, 1.9, 1.55),
    "PD": (0.0, 1.35, 1.15, 1.0, 0.15, 1.2, 0.7, 1.35, 1.3, 1.2),
}


@dataclass(frozen=True)
class SynthOptions:
    """Generation settings.

    Args:
        spacing_mm: voxel size in mm of the written images (isotropic; the model's grid).
        size: if set, every case is ``size`` voxels along each axis (tiny volumes for tests).
        channels: number of image channels; each channel gets its own random contrast (written as
            4D NIfTI when > 1).
        style: appearance model. 3 (default): style 2 plus more small lesions (multifocal cases
            more often, small satellite foci next to other tumours, small single lesions), tumour
            sub-region intensities that vary more within a contrast preset (T2/FLAIR oedema from
            barely above grey matter to CSF-bright) and thin slabs (partial coverage of 12-40 mm) as
            hard negatives/positives. 2: heterogeneous tumours -- multi-scale irregular margins,
            thin to thick rings, fine internal texture up to 35 % of the mean, tumour intensities that
            may sit close to grey matter. 1: the smoother, homogeneous tumours of the v2.0/v2.1 recipe
            (kept so that recipe's data can be regenerated exactly).
    """

    spacing_mm: float = 2.0
    size: int | None = None
    channels: int = 1
    style: int = 3


@lru_cache(maxsize=1)
def _anatomy() -> tuple[np.ndarray, np.ndarray]:
    """Maps on the 2 mm MNI grid, padded for the head: (csf, gm, wm, T1, signed distance outside
    the brain in mm) as ``(5, I, J, K)`` float32, and the affine."""
    from nilearn import datasets

    pad = 14
    t1 = datasets.load_mni152_template(resolution=2)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).get_fdata(), np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).get_fdata(), np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=2).get_fdata(), np.float32) > 0.5
    tpl = np.asarray(t1.get_fdata(), np.float32)
    gm, wm = gm * mask, wm * mask
    tot = gm + wm
    scale = np.where(tot > 1, 1 / np.maximum(tot, 1e-6), 1.0).astype(np.float32)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(mask.astype(np.float32) - gm - wm, 0, 1)
    maps = np.stack([csf, gm, wm, tpl * mask])
    maps = np.pad(maps, ((0, 0), (pad, pad), (pad, pad), (pad, pad)))
    brain = np.pad(mask, pad)
    dist_out = ndimage.distance_transform_edt(~brain, sampling=2.0) - ndimage.distance_transform_edt(brain, sampling=2.0)
    maps = np.concatenate([maps, dist_out[None].astype(np.float32)])
    affine = np.array(t1.affine, dtype=np.float64)
    affine[:3, 3] -= 2.0 * pad
    return maps.astype(np.float32), affine


@lru_cache(maxsize=1)
def _brain_depth() -> tuple[np.ndarray, np.ndarray]:
    """Depth inside the brain (mm) on the padded template grid, and its affine."""
    maps, aff = _anatomy()
    brain = (maps[0] + maps[1] + maps[2]) > 0.5
    return ndimage.distance_transform_edt(brain, sampling=2.0).astype(np.float32), aff


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5) -> np.ndarray:
    """A smooth random field in about [-1, 1] (cubic upsampling of a coarse random grid)."""
    g = rng.uniform(-1.0, 1.0, size=(coarse,) * len(shape)).astype(np.float32)
    mid = tuple(max(coarse, s // 4) for s in shape)
    f = ndimage.zoom(g, [m / coarse for m in mid], order=3, mode="nearest")
    f = ndimage.zoom(f, [s / m for s, m in zip(shape, mid)], order=1, mode="nearest")
    out = np.zeros(shape, np.float32)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(shape, f.shape))
    out[sl] = f[sl]
    return out


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _output_grid(rng: np.random.Generator, opts: SynthOptions, skull: bool) -> tuple[tuple[int, int, int], np.ndarray]:
    """RAS grid (shape, affine) around the head (or the brain when stripped), with a random FOV cut."""
    lo = np.array([-78.0, -114.0, -62.0]) - (14.0 if skull else 6.0)  # MNI brain box, mm
    hi = np.array([78.0, 80.0, 86.0]) + (14.0 if skull else 6.0)
    if opts.style >= 3 and rng.random() < 0.06:  # a thin slab (a few slices of a localiser or a 2D acquisition)
        ax = int(rng.integers(3))
        mid = rng.uniform(lo[ax] + 20, hi[ax] - 20)
        half = rng.uniform(6.0, 20.0)
        lo[ax], hi[ax] = mid - half, mid + half
    elif rng.random() < 0.2:  # partial coverage: cut one side along one axis
        ax, side = int(rng.integers(3)), int(rng.integers(2))
        cut = rng.uniform(0.1, 0.35) * (hi[ax] - lo[ax])
        if side:
            hi[ax] -= cut
        else:
            lo[ax] += cut
    centre = (hi + lo) / 2 + rng.uniform(-5, 5, 3)
    fov = hi - lo
    if opts.size:
        shape = np.array([opts.size] * 3)
        spacing = fov / opts.size
    else:
        spacing = np.full(3, float(opts.spacing_mm))
        shape = np.ceil(fov / spacing).astype(int)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = centre - spacing * (shape - 1) / 2
    return tuple(int(s) for s in shape), affine  # type: ignore[return-value]


def _grid_mm(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    return ijk @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)


@dataclass
class _Tumour:
    centre_mm: np.ndarray  # MNI (template) space
    radius_mm: float
    family: str
    mass_effect: float


_FAMILIES = ("ring", "solid", "infiltrative", "cystic", "multifocal", "large")


def _plan_tumours(rng: np.random.Generator, size_mode: bool, style: int = 2) -> list[_Tumour]:
    """Families, sizes and template-space centres (inside the brain) of this case's tumours."""
    if rng.random() < 0.25:
        return []
    depth, aff = _brain_depth()
    probs = [0.26, 0.18, 0.14, 0.1, 0.16, 0.16] if style < 3 else [0.22, 0.2, 0.12, 0.08, 0.26, 0.12]
    family = str(rng.choice(_FAMILIES, p=probs))
    out: list[_Tumour] = []
    if family == "multifocal":
        n = int(rng.integers(2, 6))
        radii = [float(np.cbrt(rng.uniform(0.2, 3.0) * 3000 / (4 * np.pi))) for _ in range(n)]  # 0.2-3 mL
        families = [str(rng.choice(["solid", "ring"], p=[0.6, 0.4])) for _ in range(n)]
    else:
        n = 1 if rng.random() < 0.8 else 2
        if family == "large":
            radii = [float(np.cbrt(rng.uniform(40, 150) * 3000 / (4 * np.pi)))]
        elif style >= 3 and family == "solid" and rng.random() < 0.35:  # a small single lesion
            radii = [float(np.cbrt(rng.uniform(0.2, 2.0) * 3000 / (4 * np.pi)))]
        else:
            radii = [float(np.cbrt(rng.uniform(2.0, 60.0) * 3000 / (4 * np.pi)))]
        radii += [float(np.cbrt(rng.uniform(0.5, 15) * 3000 / (4 * np.pi))) for _ in range(n - 1)]
        families = [family if family != "large" else str(rng.choice(["ring", "solid", "infiltrative"]))] * n
        if style >= 3 and rng.random() < 0.25:  # small satellite foci elsewhere in the brain
            k = int(rng.integers(1, 4))
            radii += [float(np.cbrt(rng.uniform(0.2, 2.0) * 3000 / (4 * np.pi))) for _ in range(k)]
            families += [str(rng.choice(["solid", "ring"], p=[0.7, 0.3])) for _ in range(k)]
    for r, fam in zip(radii, families):
        if size_mode:
            r = max(r, 14.0)
        ok = np.argwhere(depth > min(0.5 * r, 12.0))
        if len(ok) == 0:
            continue
        c = aff[:3, :3] @ ok[int(rng.integers(len(ok)))] + aff[:3, 3]
        me = rng.uniform(0.15, 0.45) if (family == "large" or r > 18) else rng.uniform(0.0, 0.2)
        out.append(_Tumour(c.astype(np.float64), r, fam, float(me)))
    return out


def _sample_anatomy(rng: np.random.Generator, shape: tuple[int, int, int], affine: np.ndarray, tumours: list[_Tumour], size_mode: bool) -> np.ndarray:
    """The anatomy maps sampled on the output grid through affine + elastic deformation + mass effect.

    Also returns, in the last rows, each tumour's centre expressed in output-grid mm (by deformation of
    the template centre: the output voxel that samples it).
    """
    maps, tpl_aff = _anatomy()
    world = _grid_mm(shape, affine)
    centre = np.array([0.0, -18.0, 12.0], np.float32)
    rot = (_rotation(rng, 12.0) * rng.uniform(0.88, 1.12, 3)).astype(np.float32)
    src = (world - centre) @ rot.T + centre + rng.uniform(-6, 6, 3).astype(np.float32)
    amp = 0.0 if size_mode else rng.uniform(1.0, 6.0)  # elastic displacement, mm
    if amp > 0:
        for ax in range(3):
            src[..., ax] += amp * _smooth_field(rng, shape, coarse=int(rng.integers(4, 8)))
    for t in tumours:  # mass effect: compress the sampling coordinates towards the tumour centre
        if t.mass_effect <= 0:
            continue
        rel = src - t.centre_mm.astype(np.float32)
        r = np.sqrt((rel**2).sum(-1, keepdims=True))
        src = t.centre_mm.astype(np.float32) + rel * (1.0 - t.mass_effect * np.exp(-((r / (1.6 * t.radius_mm)) ** 2)))
    inv = np.linalg.inv(tpl_aff).astype(np.float32)
    vox = src @ inv[:3, :3].T + inv[:3, 3]
    coords = np.moveaxis(vox, -1, 0)
    out = np.empty((maps.shape[0], *shape), np.float32)
    for k in range(maps.shape[0]):
        cval = 200.0 if k == 4 else 0.0  # distance map: far outside
        out[k] = ndimage.map_coordinates(maps[k], coords, order=1, mode="constant", cval=cval)
    # tumour centres on the output grid: the voxel whose source point is closest to the template centre
    for t in tumours:
        d2 = ((src - t.centre_mm.astype(np.float32)) ** 2).sum(-1)
        t.centre_mm = world[np.unravel_index(int(np.argmin(d2)), shape)].astype(np.float64)
    return out


def _draw_tumours(rng: np.random.Generator, tumours: list[_Tumour], world: np.ndarray, brain: np.ndarray, wm: np.ndarray, spacing: float,
                  shape: tuple[int, int, int], style: int = 2) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Soft sub-region weights ``(3, ...)`` (ncr, ed, et) and hard labels of all tumours."""
    w = np.zeros((3, *shape), np.float32)
    labels = np.zeros(shape, np.uint8)
    info: list[dict[str, Any]] = []
    edge = max(0.35 * spacing, 0.6)  # mm, soft edge of the intensity weights
    for t in tumours:
        r = t.radius_mm
        axes = rng.uniform(0.7, 1.3, 3) * r
        rot = _rotation(rng, 90.0).astype(np.float32)
        rel = (world - t.centre_mm.astype(np.float32)) @ rot.T / axes.astype(np.float32)
        d = np.sqrt((rel**2).sum(-1))
        if not (d < 2.6).any():
            continue
        box = np.argwhere(d < 2.6)
        sl = tuple(slice(int(a), int(b) + 1) for a, b in zip(box.min(0), box.max(0)))
        d = d[sl]
        sub_shape = d.shape
        irregular = rng.uniform(0.1, 0.35)
        d = d * (1.0 + irregular * _smooth_field(rng, sub_shape, coarse=int(rng.integers(4, 9))))
        if style >= 2:  # finer lobulation: a second, higher-frequency perturbation of the margin
            d = d * (1.0 + rng.uniform(0.0, 0.25) * _smooth_field(rng, sub_shape, coarse=int(rng.integers(9, 17))))
        b = brain[sl]
        body = expit((1.0 - d) * r / edge) * b
        fam = t.family
        if fam == "ring":
            core_frac = rng.uniform(0.35, 0.8) if style < 2 else rng.uniform(0.35, 0.93)  # thick to thin rings
            wobble = 1.0 + (0.25 if style < 2 else rng.uniform(0.05, 0.3)) * _smooth_field(rng, sub_shape, coarse=6 if style < 2 else int(rng.integers(5, 12)))
            core = expit((core_frac * wobble - d) * r / edge) * b
            ncr, et = core, np.clip(body - core, 0, 1)
        elif fam == "cystic":
            core = expit((rng.uniform(0.75, 0.92) - d) * r / edge) * b
            ncr, et = core, np.clip(body - core, 0, 1)
        elif fam == "solid":
            spots = expit((rng.uniform(-0.2, 0.25) + 0.5 * _smooth_field(rng, sub_shape, coarse=6) - d) * r / edge) * b
            ncr = spots * (rng.random() < 0.4)
            et = np.clip(body - ncr, 0, 1)
        else:  # infiltrative, non-enhancing
            ncr, et = body, np.zeros_like(body)
        oed_extent = 1.0 + (rng.uniform(0.1, 1.0) if rng.random() < 0.85 else 0.0)
        reach = 1.0 + (oed_extent - 1.0) * (0.4 + 0.8 * wm[sl])  # oedema follows white matter
        oed = expit((reach - d) * r / (3 * edge)) * b * (d >= 0.9)  # outside the body
        oed = np.clip(oed - body, 0, 1)
        cur = w[(slice(None), *sl)]
        cur[0] = np.maximum(cur[0], ncr)
        cur[2] = np.maximum(cur[2], et)
        cur[1] = np.maximum(cur[1], oed) * (1 - cur[0] - cur[2]).clip(0, 1)
        lab = labels[sl]
        hard_body = (d < 1.0) & (b > 0.5)
        lab[(oed > 0.5) & (lab == 0)] = 2
        lab[hard_body & (et >= ncr)] = 3
        lab[hard_body & (ncr > et)] = 1
        info.append({"family": fam, "radius_mm": round(float(r), 2), "centre_mm": [round(float(v), 1) for v in t.centre_mm],
                     "mass_effect": round(t.mass_effect, 3), "voxels": int(hard_body.sum())})
    # hard labels agree with the weights where the weights decide
    return w, labels, info


def _class_means(rng: np.random.Generator, template_mode: bool, style: int = 2) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean and texture strength for each intensity class, and the contrast's name."""
    u = rng.random()
    if template_mode:
        mu = np.array(_PRESETS["T1c"], np.float64) * rng.uniform(0.85, 1.15, _N_CLASSES)
        name = "template-T1c"
    elif u < 0.5:
        name = str(rng.choice(list(_PRESETS), p=[0.15, 0.3, 0.25, 0.2, 0.1]))
        mu = np.array(_PRESETS[name], np.float64) * rng.uniform(0.8, 1.2, _N_CLASSES)
        if style >= 3:  # wider still: e.g. T2/FLAIR oedema from barely above grey matter to CSF-bright
            mu[[NCR, ED, ET]] *= rng.uniform(0.7, 1.15, 3)
        elif style >= 2:  # tumour sub-regions vary more between scanners and tumours than healthy tissue
            mu[[NCR, ED, ET]] *= rng.uniform(0.85, 1.15, 3)
    else:
        name = "random"
        mu = rng.uniform(0.0, 1.0, _N_CLASSES)
        # the tumour must differ from white matter; style 2 lets it sit near grey matter in 30 % of
        # cases (then texture, margin, oedema and mass effect tell it apart, as on many real scans)
        near_gm = style >= 2 and rng.random() < 0.3
        for k in (NCR, ED, ET):
            for _ in range(50):
                if abs(mu[k] - mu[WM]) > 0.1 and (near_gm or abs(mu[k] - mu[GM]) > 0.06):
                    break
                mu[k] = rng.uniform(0.0, 1.0)
    mu[AIR] = 0.0 if rng.random() < 0.85 else rng.uniform(0.0, 0.1)
    tex = rng.uniform(0.0, 0.06, _N_CLASSES)
    return mu, tex, name


def _fine_texture(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-SD fine texture: white noise smoothed over 0.6-2 voxels (tumour heterogeneity)."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), rng.uniform(0.6, 2.0))
    return (n - n.mean()) / max(float(n.std()), 1e-6)


def _one_channel(rng: np.random.Generator, probs: np.ndarray, tumour_w: np.ndarray, template_t1: np.ndarray | None,
                 spacing: float, size_mode: bool, skull: bool, brain: np.ndarray, style: int = 2) -> tuple[np.ndarray, str]:
    """One image channel from class probabilities ``(7, ...)`` (air..muscle) and tumour weights ``(3, ...)``."""
    shape = probs.shape[1:]
    template_mode = template_t1 is not None
    mu, tex, name = _class_means(rng, template_mode, style)
    free = np.clip(1.0 - tumour_w.sum(0), 0, 1)
    img = np.zeros(shape, np.float32)
    for k in range(7):
        if k in (CSF, GM, WM) and template_mode:
            continue
        p = probs[k] * (free if k in (CSF, GM, WM) else 1.0)
        if mu[k] == 0 and tex[k] == 0:
            continue
        img += p * np.float32(mu[k]) * (1 + tex[k] * _smooth_field(rng, shape, coarse=9))
    if template_mode:  # the real template's own contrast inside the brain (WM ~ 1)
        wm_level = 0.86
        img += free * template_t1 / wm_level * np.float32(rng.uniform(0.9, 1.1))
    if style >= 2 and rng.random() < 0.5:  # some fine texture in healthy tissue too, so texture alone is no tumour sign
        img *= 1 + np.float32(rng.uniform(0.0, 0.08)) * _fine_texture(rng, shape) * (probs[CSF] + probs[GM] + probs[WM])
    for j, k in enumerate((NCR, ED, ET)):
        img += tumour_w[j] * np.float32(mu[k]) * (1 + tex[k] * _smooth_field(rng, shape, coarse=11))
    if style >= 2 and tumour_w.any():  # heterogeneous tumours: fine texture inside every sub-region
        tw = tumour_w.sum(0)
        amp = rng.uniform(0.0, 0.35)
        level = sum(tumour_w[j] * np.float32(mu[k]) for j, k in enumerate((NCR, ED, ET))) / np.maximum(tw, 1e-3)
        img += (tw * level * np.float32(amp) * _fine_texture(rng, shape)).astype(np.float32)
        img = np.clip(img, 0, None)
    # artefacts: bias field, resolution, gamma, noise
    img *= np.exp(rng.uniform(0.0, 0.45) * _smooth_field(rng, shape, coarse=4))
    if not size_mode:
        sig = rng.uniform(0.0, 0.7, 3)
        if rng.random() < 0.5:  # thick slices along a random axis: slice profile, sample, back
            ax = int(rng.integers(3))
            thick = rng.uniform(2.5, 7.0)
            sig[ax] = thick / 2.355 / spacing
            img = ndimage.gaussian_filter(img, sig)
            f = spacing / thick
            small = ndimage.zoom(img, [f if a == ax else 1 for a in range(3)], order=1)
            img = ndimage.zoom(small, [s / m for s, m in zip(shape, small.shape)], order=1)
            img = _fit(img, shape)
        else:
            img = ndimage.gaussian_filter(img, sig)
    top = float(np.percentile(img[brain], 98)) if brain.any() else float(img.max() or 1)
    img = np.clip(img / max(top, 1e-6), 0, None) ** rng.uniform(0.7, 1.4)
    sigma = rng.uniform(0.0, 0.07)
    if rng.random() < 0.6:  # Rician (magnitude) noise, also in the background
        img = np.sqrt((img + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
    else:
        img = np.clip(img + rng.normal(0, sigma, shape), 0, None)
    if not skull and rng.random() < 0.7:  # skull-stripped scans: exact zeros outside the mask
        img = img * (probs[AIR] < 0.5)
    return (img * rng.uniform(300.0, 2500.0)).astype(np.float32), name


def _fit(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, a.dtype)
    sl = tuple(slice(0, min(x, y)) for x, y in zip(shape, a.shape))
    out[sl] = a[sl]
    return out


def make_case(seed: int, index: int, split: str = "train", opts: SynthOptions = SynthOptions()) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Generate one case deterministically.

    Returns:
        image ``(C, I, J, K)`` float32 in scanner-like units, labels ``(I, J, K)`` uint8 (BraTS values
        0-3), the 4x4 RAS affine, and a dict describing the case (lesions, contrast, artefacts).
    """
    rng = np.random.default_rng([int(seed), _SPLITS[split], int(index)])
    size_mode = opts.size is not None
    skull = bool(rng.random() < 0.5)
    shape, affine = _output_grid(rng, opts, skull)
    spacing = float(np.linalg.norm(affine[:3, :3], axis=0).mean())
    tumours = _plan_tumours(rng, size_mode, opts.style)
    maps = _sample_anatomy(rng, shape, affine, tumours, size_mode)
    csf, gm, wm, t1, dist = maps
    brain_p = np.clip(csf + gm + wm, 0, 1)
    brain = brain_p > 0.5
    # non-brain layers from the distance outside the brain surface, with random, smoothly varying thickness
    probs = np.zeros((7, *shape), np.float32)
    probs[CSF], probs[GM], probs[WM] = csf, gm, wm
    outside = 1.0 - brain_p
    if skull:
        vary = 1.0 + 0.25 * _smooth_field(rng, shape, coarse=5)
        edges = np.cumsum([rng.uniform(0.5, 3.0), rng.uniform(3.0, 8.0), rng.uniform(1.5, 6.0), rng.uniform(1.5, 5.0)])
        bounds = [0.0, *edges]
        soft = 0.8
        for k, (a, b) in zip((CSF, BONE, FAT, MUSCLE), zip(bounds[:-1], bounds[1:])):
            layer = expit((dist - a * vary) / soft) * expit((b * vary - dist) / soft)
            probs[k] += layer * outside
        probs[AIR] = np.clip(outside - probs[[BONE, FAT, MUSCLE]].sum(0) - (probs[CSF] - csf), 0, 1)
    else:
        probs[AIR] = outside
        if rng.random() < 0.3:  # imperfect stripping: a rim of extra-axial tissue left over
            rim = expit((rng.uniform(1.0, 4.0) - dist) / 0.8) * outside
            probs[int(rng.choice([CSF, BONE, MUSCLE]))] += rim
            probs[AIR] -= rim
    world = _grid_mm(shape, affine)
    tumour_w, labels, lesions = _draw_tumours(rng, tumours, world, brain_p, wm, spacing, shape, opts.style)
    del world
    chans, contrasts = [], []
    for _c in range(max(1, opts.channels)):
        use_template = bool(rng.random() < 0.15)
        ch, name = _one_channel(rng, probs, tumour_w, t1 if use_template else None, spacing, size_mode, skull, brain, opts.style)
        chans.append(ch)
        contrasts.append(name)
    image = np.stack(chans)
    meta = {"lesions": lesions, "contrast": contrasts, "skull": skull, "brain_voxels": int(brain.sum()), "spacing_mm": [round(spacing, 3)] * 3,
            "shape": list(shape), "labels_ml": {str(v): round(float((labels == v).sum()) * spacing**3 / 1000, 3) for v in (1, 2, 3)}}
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


def _write_one(job: tuple[Path, str, int, int, SynthOptions]) -> tuple[str, str, dict[str, Any]]:
    out, split, i, seed, opts = job
    name = f"synth_{'tr' if split == 'train' else 'ts'}_{i:03d}.nii.gz"
    image, labels, affine, meta = make_case(seed, i, split, opts)
    img_dir, lab_dir = ("imagesTr", "labelsTr") if split == "train" else ("imagesTs", "labelsTs")
    _save_nifti(image, affine, out / img_dir / name, False)
    _save_nifti(labels, affine, out / lab_dir / name, True)
    return split, name, meta


def write_dataset(out: str | Path, cases: int, seed: int, test_cases: int = 0, opts: SynthOptions = SynthOptions(), progress: bool = True,
                  workers: int = 1) -> Path:
    """Write an MSD-layout dataset: ``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/``.

    ``labelsTs/`` is not part of MSD; it holds the test labels for held-out evaluation. ``workers`` > 1
    generates cases in parallel processes (the result does not depend on it).
    """
    from tqdm import tqdm

    out = Path(out)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(out, "train", i, seed, opts) for i in range(cases)] + [(out, "test", i, seed, opts) for i in range(test_cases)]
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            results = list(tqdm(pool.imap(_write_one, jobs), total=len(jobs), desc="synth", disable=not progress, unit="case"))
    else:
        results = [_write_one(j) for j in tqdm(jobs, desc="synth", disable=not progress, unit="case")]
    training = [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for s, n, _ in results if s == "train"]
    test = [f"./imagesTs/{n}" for s, n, _ in results if s == "test"]
    details = {n: m for _, n, m in results}
    modality = {str(c): ("MRI (any contrast)" if opts.channels == 1 else f"MRI contrast {c + 1}") for c in range(max(1, opts.channels))}
    dataset = {
        "name": "SyntheticBrainTumour",
        "description": "Domain-randomised synthetic brain MRI with BraTS-style tumour sub-regions (MNI152 tissue maps); "
                       "not real patients.",
        "reference": "seg-train synth",
        "licence": "synthetic; anatomy from the MNI152 ICBM 2009 template (see sample_scans/README.md)",
        "tensorImageSize": "4D" if opts.channels > 1 else "3D",
        "modality": modality,
        "labels": TEMPLATE_LABELS,
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "synth": {"seed": seed, "spacing_mm": opts.spacing_mm, "size": opts.size, "channels": opts.channels,
                  "style": opts.style, "generator": f"label-map domain randomisation v2, appearance style {opts.style}"},
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=1))
    (out / "synth_cases.json").write_text(json.dumps(details, indent=1))
    return out
