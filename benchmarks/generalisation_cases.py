"""Independent synthetic brain-tumour cases for the generalisation benchmark (Qt-free, deterministic).

This generator was written from scratch, separately from the training data generator, so that a
model trained on that data is tested on images whose tumour shapes, intensities, anatomy and
acquisition differ from what it has seen. Only numpy, scipy, nibabel and nilearn are used.

Anatomy
    The ICBM 2009 MNI152 template shipped offline with nilearn (``load_mni152_template`` etc., 1 mm,
    197 x 233 x 189, **skull-stripped**: its T1 is zero outside ``load_mni152_brain_mask``) with its
    grey- and white-matter probability maps; CSF = brain mask minus GM minus WM.

Tumour model (:func:`_add_lesion`), in template space
    1. *Mass effect*: the anatomy is pushed away from the lesion centre by a radial displacement that
       moves the tissue previously inside a sphere of volume ``f * V`` (f = 0.3-0.8) outwards
       (``r_src^3 = r^3 - m^3``), tapered to zero at the brain surface and at the edge of the box, so
       ventricles and sulci are compressed and shifted while the brain outline stays.
    2. *Core growth*: a stochastic Eden-type growth from one to three seeds; at each step every voxel
       on the front (18-neighbourhood) joins with a probability given by a speed field = tissue
       preference (WM > GM >> CSF) x a smooth random field (lobulation) x a direction factor (a
       random ellipsoid, anisotropy up to 2.5:1), until the target core volume is reached; then
       smoothed and hole-filled. Ventricles are barriers.
    3. *Enhancement*: ``ring`` (enhancing rim of random, spatially varying thickness 1-7 mm around
       necrosis), ``patchy`` (ring with non-enhancing gaps) or ``solid`` (enhancing throughout with a
       few non-enhancing spots); small lesions are mostly solid.
    4. *Oedema*: the same growth started from the core with a speed dominated by white-matter
       probability (finger-like spread along WM, hardly into cortex or CSF), 0.1-2.5 x the core
       volume.

Contrasts
    ``t1c``: the template's own T1 x 1000 x gain; enhancing tumour 1.35-1.8 x WM, necrosis
    0.3-0.5 x WM, non-enhancing core ~0.6 x WM, oedema 0.78-0.9 x the tissue under it.
    ``t2``: a mixture of GM/WM/CSF probabilities (CSF >> GM > WM); oedema 1.5-1.9 x GM, necrosis near
    CSF, enhancing tumour ~GM. ``flair``: the same with dark CSF; oedema bright, necrosis anywhere
    from dark to bright. Tumours get a multiplicative texture; boundaries get partial volume.

Acquisition
    Random rigid pose (rotation up to ~12 degrees, shift up to 8 mm) and head size (+-7 % per axis),
    a crop with a random margin, storage orientation RAS/LAS/LPS/RPS, a smooth multiplicative bias
    field, Rician noise (brain only for skull-stripped images, everywhere when the skull is on),
    optional light resampling blur. ``thick_slices`` blurs along a random axis with a Gaussian slice
    profile (FWHM = thickness) and stores the volume on that 5-6 mm grid; its labels are the
    partial-volume majority of each region. ``skull_on`` adds a CSF rim, skull (inner/outer table,
    fatty diploe), scalp fat and skin, and background noise in the air.

Public API: :data:`DOMAINS`, :class:`BenchCase`, :func:`make_case` (and :func:`crop_case` for fast tests).
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

DOMAINS: tuple[str, ...] = (
    "t1c_1mm",
    "thick_slices",
    "skull_on",
    "small_foci",
    "t2_like",
    "flair_like",
    "low_snr",
    "healthy",
)

#: Region scored by Dice per domain: tumour core for T1c-like images, whole tumour for T2/FLAIR.
REGION_FOR_DICE: dict[str, str | None] = {
    "t1c_1mm": "TC",
    "thick_slices": "TC",
    "skull_on": "TC",
    "small_foci": "TC",
    "low_snr": "TC",
    "t2_like": "WT",
    "flair_like": "WT",
    "healthy": None,
}

#: Healthy cases cycle over these variants (index % 5).
HEALTHY_VARIANTS: tuple[str, ...] = ("t1", "t1_skull", "t2", "flair", "low_snr")

#: Location categories of single lesions (cycled by index, so 4 cases cover all of them).
LOCATIONS: tuple[str, ...] = ("cortical", "periventricular", "deep", "posterior_fossa")

# internal label codes while building (4 = non-enhancing core, written as 1 at the end)
_NEC, _OED, _ET, _NONENH = 1, 2, 3, 4


@dataclass
class BenchCase:
    """One synthetic case.

    Attributes:
        image: float32 ``(I, J, K)`` image.
        labels: uint8 ``(I, J, K)``, BraTS convention: 0 background, 1 necrotic / non-enhancing core,
            2 peritumoral oedema, 3 enhancing tumour.
        affine: float64 4x4 voxel -> RAS mm.
        domain: one of :data:`DOMAINS`.
        name: ``"<domain>_<index:03d>"``.
        region_for_dice: ``"TC"``, ``"WT"`` or None (healthy).
        lesions: one dict per lesion: ``centre_mm`` (RAS), ``centre_vox`` (continuous index),
            ``volume_ml`` (tumour core = labels 1+3), ``wt_volume_ml`` (core + oedema), ``location``,
            ``enhancement``.
        brain_mask: bool ``(I, J, K)`` brain (after mass effect), on the image grid.
        wm_mask: bool ``(I, J, K)`` normal white matter (template WM probability > 0.9, no lesion).
        meta: generation parameters (contrast, SNR, skull, slice thickness, orientation, ...).
    """

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    domain: str
    name: str
    region_for_dice: str | None
    lesions: list[dict[str, Any]] = field(default_factory=list)
    brain_mask: np.ndarray | None = None
    wm_mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0


# ---- anatomy ---------------------------------------------------------------------------------
@dataclass
class _Anatomy:
    t1: np.ndarray  # template T1, 0..1, zero outside the brain
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray  # float32 0/1
    depth: np.ndarray  # mm from the brain surface (inside), 0 outside
    affine: np.ndarray
    candidates: dict[str, np.ndarray]  # location -> flat indices of allowed lesion centres


@functools.lru_cache(maxsize=1)
def _anatomy() -> _Anatomy:
    from nilearn import datasets

    def load(fn) -> tuple[np.ndarray, np.ndarray]:
        img = fn(resolution=1)
        return np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32), np.asarray(img.affine, dtype=np.float64)

    t1, aff = load(datasets.load_mni152_template)
    gm, _ = load(datasets.load_mni152_gm_template)
    wm, _ = load(datasets.load_mni152_wm_template)
    mask_img, _ = load(datasets.load_mni152_brain_mask)
    mask = mask_img > 0.5
    gm = np.where(mask, np.clip(gm, 0, 1), 0).astype(np.float32)
    wm = np.where(mask, np.clip(wm, 0, 1), 0).astype(np.float32)
    s = gm + wm
    over = s > 1
    gm[over] /= s[over]
    wm[over] /= s[over]
    csf = np.where(mask, np.clip(1.0 - gm - wm, 0, 1), 0).astype(np.float32)
    t1 = np.where(mask, np.clip(t1, 0, None), 0).astype(np.float32)

    bb = _bbox(mask, pad=2)
    assert bb is not None
    depth = np.zeros(mask.shape, np.float32)
    depth[bb] = ndi.distance_transform_edt(mask[bb])  # mm to the brain surface
    ventricles = (csf > 0.6) & (depth > 12)
    ventricles = ndi.binary_opening(ventricles, iterations=1)
    d_vent = np.full(mask.shape, 1e3, np.float32)
    d_vent[bb] = ndi.distance_transform_edt(~ventricles[bb])
    ii, jj, kk = np.indices(mask.shape, sparse=True)
    # MNI world coordinates (the template affine is diagonal, 1 mm)
    y_mm = jj * aff[1, 1] + aff[1, 3]
    z_mm = kk * aff[2, 2] + aff[2, 3]
    solid = mask & (csf < 0.3)
    pf = (z_mm < -25) & (y_mm < -45)
    cand = {
        "cortical": solid & (depth >= 6) & (depth <= 16) & (gm > 0.35) & (z_mm > -15),
        "periventricular": solid & (d_vent >= 3) & (d_vent <= 9) & (wm > 0.5) & (z_mm > -10),
        "deep": solid & (depth >= 28) & (d_vent >= 4) & ~pf,
        "posterior_fossa": solid & pf & (depth >= 7),
        "any": solid & (depth >= 5) & (d_vent >= 3),
    }
    candidates = {k: np.flatnonzero(v).astype(np.int64) for k, v in cand.items()}
    return _Anatomy(t1=t1, gm=gm, wm=wm, csf=csf, mask=mask.astype(np.float32), depth=depth, affine=aff, candidates=candidates)


# ---- small helpers ---------------------------------------------------------------------------
def _rng(domain: str, index: int, seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(domain.encode()), int(index)]))


def _smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field of unit standard deviation and correlation length ``sigma`` voxels.

    Computed on a coarser grid (step ~sigma/2) and linearly upsampled: cheap for large sigma.
    """
    step = max(1, int(sigma // 2))
    cshape = tuple(int(math.ceil(s / step)) + 2 for s in shape)
    n = ndi.gaussian_filter(rng.standard_normal(cshape).astype(np.float32), sigma / step, mode="wrap")
    if step > 1:
        coords = np.meshgrid(*[np.arange(s, dtype=np.float32) / step for s in shape], indexing="ij", sparse=True)
        # separable linear upsampling, one axis at a time
        for ax, c in enumerate(coords):
            c = c.ravel()
            i0 = np.floor(c).astype(np.int64)
            w = (c - i0).reshape([-1 if a == ax else 1 for a in range(len(shape))])
            n = np.take(n, i0, axis=ax) * (1 - w) + np.take(n, i0 + 1, axis=ax) * w
    n = n[tuple(slice(0, s) for s in shape)].astype(np.float32)
    sd = float(n.std())
    return (n - float(n.mean())) / (sd if sd > 0 else 1.0)


def _bbox(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax))) for ax in range(mask.ndim)]
    if any(len(i) == 0 for i in idx):
        return None
    return tuple(slice(max(0, int(i[0]) - pad), min(mask.shape[ax], int(i[-1]) + pad + 1)) for ax, i in enumerate(idx))


def _random_rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    a, b, c = (np.deg2rad(rng.uniform(-m, m)) for m in max_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _random_unit_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


# ---- tumour growth ---------------------------------------------------------------------------
_STRUCT18 = ndi.generate_binary_structure(3, 2)


def _grow(seed: np.ndarray, speed: np.ndarray, allowed: np.ndarray, target: int, rng: np.random.Generator, max_iter: int = 400) -> np.ndarray:
    """Stochastic front growth: each step, front voxels join with probability ``speed``.

    Stops at ``target`` voxels (the last step takes the front voxels with the best ``u / speed``).
    """
    region = seed & allowed
    n = int(region.sum())
    for _ in range(max_iter):
        if n >= target:
            break
        bb = _bbox(region, pad=1)
        if bb is None:
            break
        sub = region[bb]
        front = ndi.binary_dilation(sub, _STRUCT18) & allowed[bb] & ~sub
        idx = np.flatnonzero(front)
        if idx.size == 0:
            break
        p = speed[bb].ravel()[idx]
        u = rng.random(idx.size).astype(np.float32)
        ok = u < p
        need = target - n
        if int(ok.sum()) > need:
            order = np.argsort(u / np.maximum(p, 1e-6), kind="stable")[:need]
            chosen = idx[order]
        else:
            chosen = idx[ok]
        if chosen.size == 0:
            continue
        loc = np.unravel_index(chosen, sub.shape)
        region[tuple(loc[a] + bb[a].start for a in range(3))] = True
        n += int(chosen.size)
    return region


def _direction_factor(shape: tuple[int, int, int], centre: np.ndarray, rng: np.random.Generator, max_ratio: float) -> np.ndarray:
    """Speed factor in [1/ratio, 1] depending only on the direction from ``centre`` (random ellipsoid)."""
    axes = np.sort(rng.uniform(1.0 / max_ratio, 1.0, size=3))[::-1]
    axes[0] = 1.0
    rot = _random_unit_rotation(rng)
    g = np.indices(shape, dtype=np.float32).reshape(3, -1) - centre.reshape(3, 1).astype(np.float32)
    local = rot.T.astype(np.float32) @ g
    r = np.sqrt((g**2).sum(axis=0)) + 1e-3
    q = np.sqrt(((local / axes.reshape(3, 1).astype(np.float32)) ** 2).sum(axis=0)) + 1e-3
    f = (r / q).reshape(shape)  # = semi-axis length along that direction
    return (f / f.max()).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _add_lesion(
    maps: dict[str, np.ndarray],
    labels: np.ndarray,
    centre: np.ndarray,
    core_ml: float,
    rng: np.random.Generator,
    *,
    mass_effect: bool,
    oedema_factor: float,
    enhancement: str,
) -> dict[str, Any]:
    """Warp the anatomy around ``centre`` and draw one lesion into ``labels`` (template space, in place)."""
    target = max(8, int(round(core_ml * 1000.0)))
    r_core = (3.0 * target / (4.0 * math.pi)) ** (1 / 3)
    r_tot = (3.0 * target * (1.0 + oedema_factor) / (4.0 * math.pi)) ** (1 / 3)
    half = int(math.ceil(max(2.0 * r_tot, 2.8 * r_core) + 8))
    c = np.round(centre).astype(int)
    box = tuple(slice(max(0, c[a] - half), min(labels.shape[a], c[a] + half + 1)) for a in range(3))
    lc = (centre - np.array([b.start for b in box])).astype(np.float32)  # centre in box coordinates
    shape = tuple(b.stop - b.start for b in box)

    # 1. mass effect: backward radial map x -> c + (x - c) * r_src / r, tapered at the brain surface
    sub = {k: v[box] for k, v in maps.items()}
    if mass_effect:
        frac = rng.uniform(0.3, 0.8)
        m = (frac * 3.0 * target / (4.0 * math.pi)) ** (1 / 3)
        g = np.indices(shape, dtype=np.float32) - lc.reshape(3, 1, 1, 1)
        r = np.sqrt((g**2).sum(axis=0)) + 1e-4
        r_src = np.cbrt(np.maximum(r**3 - m**3, 0.0))
        depth = _anatomy().depth[box]
        taper = np.clip(depth / 8.0, 0, 1) ** 2 * np.clip(1.0 - (r / half) ** 2, 0, 1) ** 2
        scale = 1.0 - (r - r_src) * taper / r
        coords = lc.reshape(3, 1, 1, 1) + g * scale
        for k in ("t1", "gm", "wm", "csf", "mask"):
            sub[k] = ndi.map_coordinates(sub[k], coords, order=1, mode="nearest").astype(np.float32)
        # earlier lesions move with the tissue
        sub_lab = ndi.map_coordinates(labels[box], coords, order=0, mode="nearest").astype(np.uint8)
        del g, r, r_src, coords, scale, taper
    else:
        sub_lab = labels[box].copy()
    brain = sub["mask"] > 0.5
    ventricle = sub["csf"] > 0.8

    # 2. core: stochastic growth with lobulating, anisotropic speed
    tissue = 0.15 * sub["csf"] + 0.75 * sub["gm"] + 1.0 * sub["wm"]
    lob = _sigmoid(rng.uniform(1.8, 3.2) * _smooth_noise(shape, rng.uniform(2.5, 6.0), rng))
    speed = 0.9 * tissue * (0.15 + 0.85 * lob) * _direction_factor(shape, lc, rng, rng.uniform(1.2, 2.5))
    allowed = brain & ~ventricle & (sub_lab == 0)
    seed = np.zeros(shape, bool)
    n_seeds = 1 if core_ml < 3 else int(rng.choice([1, 1, 2, 3]))
    for s in range(n_seeds):
        off = np.zeros(3) if s == 0 else rng.normal(0, 0.45 * r_core, 3)
        p = np.clip(np.round(lc + off).astype(int), 1, np.array(shape) - 2)
        seed[p[0] - 1 : p[0] + 2, p[1] - 1 : p[1] + 2, p[2] - 1 : p[2] + 2] = True
    seed &= allowed
    if not seed.any():  # centre fell on a barrier after the warp: start at the nearest allowed voxel
        d, inds = ndi.distance_transform_edt(~allowed, return_indices=True)
        p = inds[:, int(lc[0]), int(lc[1]), int(lc[2])]
        seed[tuple(p)] = True
    core = _grow(seed, speed, allowed, target, rng)
    core = ndi.binary_fill_holes(ndi.gaussian_filter(core.astype(np.float32), 0.9) > 0.5) & brain & (sub_lab == 0)
    if not core.any():
        core = seed
    if core.sum() < 0.95 * target:  # smoothing shrinks small lesions: top up to the target volume
        core = _grow(core, speed, allowed | core, target, rng)
    core_lab = ndi.label(core, structure=np.ones((3, 3, 3)))[0]
    if core_lab.max() > 1:  # keep the main piece (smoothing may detach crumbs)
        sizes = np.bincount(core_lab.ravel())
        sizes[0] = 0
        core = core_lab == int(np.argmax(sizes))

    # 3. enhancement pattern inside the core
    d_in = np.zeros(shape, np.float32)
    cb = _bbox(core, pad=2)
    if cb is not None:
        d_in[cb] = ndi.distance_transform_edt(core[cb])
    lab = np.zeros(shape, np.uint8)
    if enhancement in ("ring", "patchy"):
        t0 = rng.uniform(2.0, 5.0) if core_ml >= 3 else rng.uniform(1.2, 2.2)
        thick = np.maximum(1.0, t0 * (1.0 + 0.45 * _smooth_noise(shape, rng.uniform(2.0, 5.0), rng)))
        lab[core] = _ET
        lab[core & (d_in > thick)] = _NEC
        if enhancement == "patchy":
            gaps = _smooth_noise(shape, rng.uniform(2.5, 5.0), rng) > rng.uniform(0.4, 0.9)
            lab[core & (lab == _ET) & gaps] = _NONENH
    else:  # solid enhancement, a few non-enhancing spots
        lab[core] = _ET
        spots = _smooth_noise(shape, 2.0, rng) > rng.uniform(1.3, 2.2)
        lab[core & spots & (d_in > 1.5)] = _NONENH
    if not (lab == _ET).any():  # every lesion keeps some enhancement
        lab[core & (d_in <= 1.5)] = _ET

    # 4. oedema: growth from the core, guided by white matter
    if oedema_factor > 0:
        wm_speed = (0.03 + 0.97 * np.clip(sub["wm"], 0, 1) ** 1.5) * (0.3 + 0.7 * _sigmoid(2.0 * _smooth_noise(shape, rng.uniform(3.0, 6.0), rng)))
        allowed_o = brain & (sub["csf"] < 0.55) & (sub_lab == 0)
        oed_target = int(core.sum() + round(oedema_factor * core.sum()))
        wt = _grow(core.copy(), 0.95 * wm_speed / max(float(wm_speed.max()), 1e-6), allowed_o | core, oed_target, rng)
        wt = (ndi.gaussian_filter(wt.astype(np.float32), 0.8) > 0.5) & brain & (sub_lab == 0) | core
        lab[wt & (lab == 0)] = _OED

    # earlier lesions keep their core; new labels fill the rest
    keep = np.isin(sub_lab, (_NEC, _ET, _NONENH))
    out = np.where(keep, sub_lab, np.where(lab > 0, lab, sub_lab))
    for k in ("t1", "gm", "wm", "csf", "mask"):
        maps[k][box] = sub[k]
    labels[box] = out
    tc = np.isin(lab, (_NEC, _ET, _NONENH)) & ~keep
    com = np.array(ndi.center_of_mass(tc)) + np.array([b.start for b in box]) if tc.any() else centre
    return {
        "centre_template_vox": [float(v) for v in com],
        "core_vox": int(tc.sum()),
        "wt_vox": int(((lab > 0) & ~keep).sum()),
        "enhancement": enhancement,
    }


# ---- contrasts -------------------------------------------------------------------------------
def _contrast_params(contrast: str, rng: np.random.Generator) -> dict[str, float]:
    gain = rng.uniform(0.8, 1.5)
    if contrast == "t1c":
        wm = 870.0 * gain
        return {
            "gain": gain, "wm": wm, "csf": 300.0 * gain, "ref": wm,
            "oed_k": rng.uniform(0.78, 0.9), "et": wm * rng.uniform(1.35, 1.8),
            "nec": wm * rng.uniform(0.3, 0.5), "nonenh": wm * rng.uniform(0.55, 0.7),
        }
    if contrast == "t2":
        gm, wm, csf = rng.uniform(720, 820) * gain, rng.uniform(480, 560) * gain, rng.uniform(1700, 2100) * gain
        return {
            "gain": gain, "gm": gm, "wm": wm, "csf": csf, "ref": gm,
            "oed": gm * rng.uniform(1.5, 1.9), "nec": csf * rng.uniform(0.75, 1.0),
            "et": gm * rng.uniform(1.0, 1.25), "nonenh": gm * rng.uniform(1.35, 1.6),
        }
    if contrast == "flair":
        gm, wm, csf = rng.uniform(760, 860) * gain, rng.uniform(560, 640) * gain, rng.uniform(80, 180) * gain
        return {
            "gain": gain, "gm": gm, "wm": wm, "csf": csf, "ref": gm,
            "oed": gm * rng.uniform(1.45, 1.8), "nec": gm * rng.uniform(0.3, 1.5),
            "et": gm * rng.uniform(1.05, 1.3), "nonenh": gm * rng.uniform(1.3, 1.6),
        }
    raise ValueError(contrast)


def _tissue_image(maps: dict[str, np.ndarray], contrast: str, p: dict[str, float]) -> np.ndarray:
    if contrast == "t1c":
        return (maps["t1"] * (1000.0 * p["gain"])).astype(np.float32)
    img = maps["gm"] * p["gm"] + maps["wm"] * p["wm"] + maps["csf"] * p["csf"]
    return (img * np.clip(maps["mask"], 0, 1)).astype(np.float32)


def _paint_tumour(img: np.ndarray, labels: np.ndarray, contrast: str, p: dict[str, float], rng: np.random.Generator) -> None:
    """Tumour intensities with texture and partial volume, in place, within the labels' box."""
    bb = _bbox(labels > 0, pad=4)
    if bb is None:
        return
    lab = labels[bb]
    tis = img[bb]
    shape = lab.shape
    tex = lambda amp, s: 1.0 + amp * _smooth_noise(shape, s, rng)  # noqa: E731
    pv = 0.6

    def frac(m: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(m.astype(np.float32), pv)

    f_wt = frac(lab > 0)
    f_tc = frac(np.isin(lab, (_NEC, _ET, _NONENH)))
    f_nec = frac(lab == _NEC)
    f_ne = frac(lab == _NONENH)
    if contrast == "t1c":
        oed = tis * p["oed_k"] * tex(0.04, 3.0)
    else:
        oed = (0.25 * tis + 0.75 * p["oed"]) * tex(0.06, 3.0)
    out = tis * (1 - f_wt) + oed * f_wt
    out = out * (1 - f_tc) + p["et"] * tex(0.09, 1.5) * f_tc
    out = out * (1 - f_nec) + p["nec"] * tex(0.10, 2.5) * f_nec
    out = out * (1 - f_ne) + p["nonenh"] * tex(0.07, 2.0) * f_ne
    img[bb] = np.maximum(out, 0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _head_geometry() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(brain envelope, mm outside it, head hull, mm inside the hull) of the template (cached).

    The envelope is the brain with its sulci filled (the CSF rim lies between it and the brain);
    the hull is a smooth surface ~11 mm outside it that also closes the gaps between the temporal
    lobes and the posterior fossa, as the skull base and face do.
    """
    mask = _anatomy().mask > 0.5
    env = (ndi.gaussian_filter(mask.astype(np.float32), 3.5) > 0.15) | mask
    # distances on a 2 mm grid (cheap), linearly interpolated back to 1 mm (+-0.5 mm is plenty here)
    shape = mask.shape
    env2 = env[::2, ::2, ::2]
    d2 = ndi.distance_transform_edt(~env2, sampling=2.0).astype(np.float32)
    shell2 = d2 <= 11.5
    coarse = ndi.gaussian_filter(shell2.astype(np.float32), 3.0)
    hull2 = ndi.binary_fill_holes(coarse > 0.35) | shell2
    d_o2 = ndi.distance_transform_edt(hull2, sampling=2.0).astype(np.float32)

    def up(a: np.ndarray) -> np.ndarray:  # 1 mm voxel i sits at 2 mm voxel i / 2
        return ndi.affine_transform(a.astype(np.float32), [0.5, 0.5, 0.5], output_shape=shape, order=1, mode="nearest")

    d = np.where(env, 0.0, np.maximum(up(d2), 0.5)).astype(np.float32)
    hull = (up(hull2) > 0.5) | env
    d_o = up(d_o2)
    d_o[~hull] = 0.0
    return env, d, hull, d_o


def _noise_sampler(shape: tuple[int, ...], sigma: float, rng: np.random.Generator):
    """Like :func:`_smooth_noise`, but evaluated only at given flat indices (for thin shells)."""
    step = max(1, int(sigma // 2))
    cshape = tuple(int(math.ceil(s / step)) + 2 for s in shape)
    n = ndi.gaussian_filter(rng.standard_normal(cshape).astype(np.float32), sigma / step, mode="wrap")
    n = (n - float(n.mean())) / max(float(n.std()), 1e-6)

    def at(flat: np.ndarray) -> np.ndarray:
        coords = np.array(np.unravel_index(flat, shape), dtype=np.float32) / step
        return ndi.map_coordinates(n, coords, order=1, mode="nearest").astype(np.float32)

    return at


def _skull_layers(mask: np.ndarray, contrast: str, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Head outside the brain (template space): CSF rim, skull, scalp, and soft tissue at the skull base.

    Outwards from the brain envelope: CSF (sulci filled, 1-3 mm), inner table, fatty diploe, outer
    table (thicknesses vary smoothly); inwards from the outer head surface: skin, subcutaneous fat,
    muscle/galea; what lies between (temporal muscle, skull base) is textured soft tissue.
    """
    env, d, hull, d_o = _head_geometry()
    shape = mask.shape
    g = p["gain"]
    if contrast == "t1c":
        vals = {"csf": 300 * g, "bone": 40 * g, "dip": rng.uniform(600, 850) * g, "mus": 500 * g, "fat": rng.uniform(1100, 1350) * g, "skin": 650 * g}
    elif contrast == "t2":
        vals = {"csf": p["csf"], "bone": 40 * g, "dip": 520 * g, "mus": 420 * g, "fat": rng.uniform(780, 950) * g, "skin": 600 * g}
    else:
        vals = {"csf": p["csf"], "bone": 40 * g, "dip": 500 * g, "mus": 420 * g, "fat": rng.uniform(750, 950) * g, "skin": 600 * g}
    dip_mm, fat_mm, mus_mm = rng.uniform(2.0, 3.5), rng.uniform(3.0, 6.0), rng.uniform(1.0, 2.5)
    head = np.zeros(shape, np.float32)
    # deep soft tissue (temporal muscle, skull base) with a coarse texture
    soft = np.flatnonzero(hull & ~env)
    head.flat[soft] = vals["mus"] * (0.8 + 0.4 * _sigmoid(1.5 * _noise_sampler(shape, 4.0, rng)(soft)))
    # scalp, measured inwards from the skin surface
    sc = np.flatnonzero(hull & (d_o <= 12.0))
    t_fat = np.maximum(1.0, fat_mm * (1 + 0.35 * _noise_sampler(shape, 20.0, rng)(sc)))
    depth = d_o.flat[sc]
    head.flat[sc[(depth > 1.5 + t_fat) & (depth <= 1.5 + t_fat + mus_mm)]] = vals["mus"]
    head.flat[sc[(depth > 1.5) & (depth <= 1.5 + t_fat)]] = vals["fat"]
    head.flat[sc[depth <= 1.5]] = vals["skin"]
    # skull, measured outwards from the brain envelope
    sk = np.flatnonzero((d > 0) & (d <= 10.0))
    e1 = 1.2 + 0.4 * _noise_sampler(shape, 12.0, rng)(sk)
    e2 = e1 + np.maximum(0.8, dip_mm * (1 + 0.35 * _noise_sampler(shape, 15.0, rng)(sk)))
    e3 = e2 + 1.2 + 0.4 * _noise_sampler(shape, 12.0, rng)(sk)
    dd = d.flat[sk]
    head.flat[sk[dd <= e3]] = vals["bone"]
    head.flat[sk[(dd > e1) & (dd <= e2)]] = vals["dip"]
    head[env & (mask <= 0.5)] = vals["csf"]
    return ndi.gaussian_filter(head, 0.5)


# ---- acquisition -----------------------------------------------------------------------------
def _bias_field(shape: tuple[int, int, int], amp: float, rng: np.random.Generator) -> np.ndarray:
    """exp of a random quadratic polynomial with |log-field| <= amp."""
    ax = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    x, y, z = np.meshgrid(*ax, indexing="ij", sparse=True)
    terms = [x, y, z, x * x - 0.33, y * y - 0.33, z * z - 0.33, x * y, y * z, x * z]
    coef = rng.normal(0, 1, len(terms))
    b = sum(float(c) * t for c, t in zip(coef, terms))
    b = b * (amp / max(float(np.abs(b).max()), 1e-6))
    return np.exp(b).astype(np.float32)


def _rician(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    n1 += img
    np.square(n1, out=n1)
    np.square(n2, out=n2)
    n1 += n2
    return np.sqrt(n1, out=n1)


def _slice_thicken(arr: np.ndarray, axis: int, thick_vox: float, start: float, fwhm_vox: float) -> np.ndarray:
    """Gaussian slice profile along ``axis`` then sampling every ``thick_vox`` voxels from ``start``."""
    blurred = ndi.gaussian_filter1d(arr.astype(np.float32), fwhm_vox / 2.3548, axis=axis, mode="constant")
    n = arr.shape[axis]
    pos = np.arange(start, n - 1, thick_vox)
    i0 = np.floor(pos).astype(np.int64)
    w = (pos - i0).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
    return np.take(blurred, i0, axis=axis) * (1 - w) + np.take(blurred, np.minimum(i0 + 1, n - 1), axis=axis) * w


# ---- the case factory ------------------------------------------------------------------------
def _plan(domain: str, index: int, rng: np.random.Generator) -> dict[str, Any]:
    plan: dict[str, Any] = {"skull": False, "snr": rng.uniform(18, 30), "bias": rng.uniform(0.06, 0.15), "thick": None}
    contrast = {"t2_like": "t2", "flair_like": "flair"}.get(domain, "t1c")
    if domain == "skull_on":
        plan["skull"] = True
    if domain == "low_snr":
        plan["snr"] = rng.uniform(5.0, 9.0)
        plan["bias"] = rng.uniform(0.15, 0.3)
    if domain == "t2_like" or domain == "flair_like":
        plan["snr"] = rng.uniform(14, 24)
    if domain == "healthy":
        variant = HEALTHY_VARIANTS[index % len(HEALTHY_VARIANTS)]
        plan["variant"] = variant
        contrast = {"t2": "t2", "flair": "flair"}.get(variant, "t1c")
        plan["skull"] = variant == "t1_skull"
        if variant == "low_snr":
            plan["snr"] = rng.uniform(5.0, 9.0)
            plan["bias"] = rng.uniform(0.15, 0.3)
    if domain == "thick_slices":
        plan["thick"] = {"axis": int(rng.integers(0, 3)), "mm": float(rng.uniform(5.0, 6.0))}
        plan["snr"] *= 1.8  # thick slices collect more signal
    plan["contrast"] = contrast
    plan["smooth"] = float(rng.uniform(0.3, 0.6)) if rng.random() < 0.4 else 0.0  # resampled-archive look

    lesions: list[dict[str, Any]] = []
    if domain == "small_foci":
        for _ in range(int(rng.integers(2, 6))):
            ml = float(math.exp(rng.uniform(math.log(0.2), math.log(3.0))))
            lesions.append({
                "location": "any", "core_ml": ml, "mass_effect": False,
                "oedema_factor": float(rng.uniform(0.5, 3.0)) if rng.random() < 0.7 else 0.0,
                "enhancement": "solid" if (ml < 1.0 or rng.random() < 0.6) else "ring",
            })
    elif domain != "healthy":
        loc = LOCATIONS[(index + zlib.crc32(domain.encode())) % len(LOCATIONS)]
        hi = 30.0 if loc == "posterior_fossa" else 80.0
        ml = float(math.exp(rng.uniform(math.log(5.0), math.log(hi))))
        r = rng.random()
        enh = "ring" if r < 0.55 else ("patchy" if r < 0.8 else "solid")
        oed = float(rng.uniform(0.1, 0.35)) if rng.random() < 0.2 else float(rng.uniform(0.4, 2.5))
        lesions.append({"location": loc, "core_ml": ml, "mass_effect": True, "oedema_factor": oed, "enhancement": enh})
    plan["lesions"] = lesions
    return plan


def make_case(domain: str, index: int, seed: int = 2026, *, voxel_mm: float = 1.0) -> BenchCase:
    """Build case ``index`` of ``domain`` (deterministic in ``(domain, index, seed, voxel_mm)``).

    Args:
        domain: one of :data:`DOMAINS`.
        index: case number (any non-negative int).
        seed: benchmark seed.
        voxel_mm: output grid spacing (1 mm for the benchmark; 2 mm makes fast test cases with the
            same lesions and pose, 8x fewer voxels). ``thick_slices`` keeps its 5-6 mm slice axis.
    """
    if domain not in DOMAINS:
        raise ValueError(f"Unknown domain '{domain}'; choose from {', '.join(DOMAINS)}.")
    rng = _rng(domain, index, seed)
    plan = _plan(domain, index, rng)
    anat = _anatomy()
    maps = {"t1": anat.t1.copy(), "gm": anat.gm.copy(), "wm": anat.wm.copy(), "csf": anat.csf.copy(), "mask": anat.mask.copy()}
    labels = np.zeros(anat.mask.shape, np.uint8)
    contrast = plan["contrast"]
    params = _contrast_params(contrast, rng)

    # lesions, in template space
    lesion_info: list[dict[str, Any]] = []
    placed: list[np.ndarray] = []
    for les in plan["lesions"]:
        cand = anat.candidates[les["location"]]
        for _attempt in range(50):
            flat = int(cand[rng.integers(0, cand.size)])
            centre = np.array(np.unravel_index(flat, labels.shape), dtype=np.float64)
            min_sep = 18.0 if les["location"] == "any" else 0.0
            if labels.flat[flat] == 0 and maps["csf"].flat[flat] < 0.5 and all(np.linalg.norm(centre - q) >= min_sep for q in placed):
                break
        placed.append(centre)
        info = _add_lesion(
            maps, labels, centre, les["core_ml"], rng,
            mass_effect=les["mass_effect"], oedema_factor=les["oedema_factor"], enhancement=les["enhancement"],
        )
        info["location"] = les["location"]
        lesion_info.append(info)

    img = _tissue_image(maps, contrast, params)
    _paint_tumour(img, labels, contrast, params, rng)
    labels[labels == _NONENH] = _NEC
    brain = maps["mask"]
    wm = maps["wm"] * (labels == 0)
    if plan["skull"]:
        head = _skull_layers(brain, contrast, params, rng)
        w = np.clip(brain, 0, 1)
        img = img * w + head * (1 - w)
        del head
    del maps

    # pose: y_world = R S x_template + t; output grid axis-aligned (RAS) with spacing voxel_mm
    rot = _random_rotation(rng, (10.0, 8.0, 12.0))
    scale = np.diag(rng.uniform(0.93, 1.07, 3))
    shift = rng.uniform(-8, 8, 3)
    lin = rot @ scale
    t_aff = anat.affine
    # output extent: the brain (or head) after the pose, plus a random margin
    ref = img > (1e-3 * params["ref"]) if plan["skull"] else brain > 0.5
    pts_t = np.argwhere(ref[::3, ::3, ::3]) * 3.0
    pts = (pts_t @ t_aff[:3, :3].T + t_aff[:3, 3]) @ lin.T + shift
    margin = rng.uniform(3, 12, (2, 3)) if not plan["skull"] else rng.uniform(5, 15, (2, 3))
    lo = pts.min(axis=0) - margin[0]
    hi = pts.max(axis=0) + margin[1]
    if plan["skull"]:
        # the template ends at the lower medulla: the image is extended below it by repeating its
        # last slice (mode "nearest"), for at most ~10 mm under the brain's lowest point
        low = np.argwhere(brain[:, :, 0] > 0.5)
        low_w = (np.c_[low, np.zeros(len(low))] @ t_aff[:3, :3].T + t_aff[:3, 3]) @ lin.T + shift
        lo[2] = max(lo[2], float(low_w[:, 2].mean()) - rng.uniform(0.0, 10.0))
    del pts_t, pts
    vox = float(voxel_mm)
    out_shape = tuple(int(math.ceil((hi[a] - lo[a]) / vox)) + 1 for a in range(3))
    out_aff = np.eye(4)
    out_aff[:3, :3] = np.eye(3) * vox
    out_aff[:3, 3] = lo
    # output voxel -> template voxel
    world_to_tmpl = np.linalg.inv(t_aff)
    pose_inv = np.eye(4)
    pose_inv[:3, :3] = np.linalg.inv(lin)
    pose_inv[:3, 3] = -np.linalg.inv(lin) @ shift
    m = world_to_tmpl @ pose_inv @ out_aff

    def resample(a: np.ndarray, order: int, mode: str = "constant") -> np.ndarray:
        src = a
        if order > 0 and vox > 1.0:
            src = ndi.gaussian_filter(a, 0.4 * (vox - 1.0))
        return ndi.affine_transform(src, m[:3, :3], offset=m[:3, 3], output_shape=out_shape, order=order, mode=mode, cval=0.0)

    img_o = resample(img, 1, "nearest" if plan["skull"] else "constant").astype(np.float32)
    # labels, brain mask and white matter (WM probability > 0.9) in one nearest-neighbour pass
    packed = resample((labels + 8 * (brain > 0.5) + 16 * (wm > 0.9)).astype(np.uint8), 0)
    lab_o = (packed & 7).astype(np.uint8)
    brain_o = (packed & 8) > 0
    wm_o = (packed & 16) > 0
    del img, labels, brain, packed, wm
    lab_o[~brain_o] = 0

    thick = plan["thick"]
    if thick is not None:
        axis, mm = thick["axis"], thick["mm"]
        step = mm / vox
        start = float(rng.uniform(0, step))
        img_o = _slice_thicken(img_o, axis, step, start, step)
        f_wt = _slice_thicken((lab_o > 0).astype(np.float32), axis, step, start, step)
        f_tc = _slice_thicken(np.isin(lab_o, (1, 3)).astype(np.float32), axis, step, start, step)
        f_et = _slice_thicken((lab_o == 3).astype(np.float32), axis, step, start, step)
        brain_o = _slice_thicken(brain_o.astype(np.float32), axis, step, start, step) > 0.5
        wm_o = _slice_thicken(wm_o.astype(np.float32), axis, step, start, step) > 0.5
        lab_o = np.zeros(img_o.shape, np.uint8)
        lab_o[f_wt >= 0.5] = 2
        tc = f_tc >= 0.5
        lab_o[tc] = 1
        lab_o[tc & (f_et >= 0.5 * f_tc)] = 3
        lab_o[~brain_o] = 0
        out_aff[:3, axis] *= step
        out_aff[:3, 3] += out_aff[:3, :3] @ np.eye(3)[axis] * (start / step)
        del f_wt, f_tc, f_et

    # bias, noise, resampling blur
    img_o *= _bias_field(img_o.shape, plan["bias"], rng)
    sigma = params["ref"] / plan["snr"]
    if plan["skull"]:
        img_o = _rician(img_o, sigma, rng)
    else:
        noisy = _rician(img_o, sigma, rng)
        img_o = np.where(brain_o, noisy, 0.0).astype(np.float32)
        del noisy
    if plan["smooth"] > 0:
        sm = ndi.gaussian_filter(img_o, plan["smooth"])
        img_o = sm if plan["skull"] else np.where(brain_o, sm, 0.0).astype(np.float32)

    # storage orientation
    orient = ("RAS", "LAS", "LPS", "RPS")[int(rng.integers(0, 4))]
    flips = {"RAS": (), "LAS": (0,), "LPS": (0, 1), "RPS": (1,)}[orient]
    for a in flips:
        img_o = np.flip(img_o, axis=a)
        lab_o = np.flip(lab_o, axis=a)
        brain_o = np.flip(brain_o, axis=a)
        wm_o = np.flip(wm_o, axis=a)
        out_aff[:3, 3] += out_aff[:3, a] * (img_o.shape[a] - 1)
        out_aff[:3, a] *= -1

    # lesion list on the final grid
    vox_ml = abs(np.linalg.det(out_aff[:3, :3])) / 1000.0
    det_pose = abs(np.linalg.det(lin))
    lesions = []
    inv_out = np.linalg.inv(out_aff)
    for info in lesion_info:
        c_t = np.asarray(info["centre_template_vox"])
        c_world = (c_t @ t_aff[:3, :3].T + t_aff[:3, 3]) @ lin.T + shift
        lesions.append({
            "centre_mm": [round(float(v), 2) for v in c_world],
            "centre_vox": [round(float(v), 2) for v in inv_out[:3, :3] @ c_world + inv_out[:3, 3]],
            "volume_ml": round(float(info["core_vox"] * det_pose / 1000.0), 3),
            "wt_volume_ml": round(float(info["wt_vox"] * det_pose / 1000.0), 3),
            "location": info["location"],
            "enhancement": info["enhancement"],
        })

    meta = {
        "contrast": contrast, "skull": plan["skull"], "snr": round(float(plan["snr"]), 2),
        "bias_amplitude": round(float(plan["bias"]), 3), "smoothing_sigma_mm": round(plan["smooth"], 2),
        "thick_slices": thick, "orientation": orient, "voxel_ml": float(vox_ml), "seed": int(seed), "index": int(index),
        "variant": plan.get("variant"), "voxel_mm": vox,
    }
    return BenchCase(
        image=np.ascontiguousarray(img_o, dtype=np.float32),
        labels=np.ascontiguousarray(lab_o, dtype=np.uint8),
        affine=out_aff,
        domain=domain,
        name=f"{domain}_{index:03d}",
        region_for_dice=REGION_FOR_DICE[domain],
        lesions=lesions,
        brain_mask=np.ascontiguousarray(brain_o),
        wm_mask=np.ascontiguousarray(wm_o & brain_o & (lab_o == 0)),
        meta=meta,
    )


def crop_case(case: BenchCase, size: int | tuple[int, int, int], centre_vox: Any = None) -> BenchCase:
    """A sub-box of ``size`` voxels around ``centre_vox`` (default: the first lesion, else the centre).

    For fast tests; the affine is shifted so the crop stays at the same place in the patient, and the
    lesion list keeps the lesions whose centre lies inside the box (volumes are not recomputed).
    """
    shape = np.array(case.image.shape)
    sz = np.minimum(np.broadcast_to(np.asarray(size, dtype=int), (3,)), shape)
    if centre_vox is None:
        centre_vox = case.lesions[0]["centre_vox"] if case.lesions else shape / 2.0
    lo = np.clip(np.round(np.asarray(centre_vox, dtype=float) - sz / 2.0).astype(int), 0, shape - sz)
    box = tuple(slice(int(a), int(a + n)) for a, n in zip(lo, sz))
    aff = np.array(case.affine, dtype=np.float64, copy=True)
    aff[:3, 3] += aff[:3, :3] @ lo.astype(np.float64)
    lesions = []
    for les in case.lesions:
        c = np.asarray(les["centre_vox"], dtype=float) - lo
        if np.all(c >= 0) and np.all(c < sz):
            lesions.append({**les, "centre_vox": [round(float(v), 2) for v in c]})

    def cut(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[box])

    return BenchCase(
        image=cut(case.image), labels=cut(case.labels), affine=aff, domain=case.domain, name=case.name,
        region_for_dice=case.region_for_dice, lesions=lesions, brain_mask=cut(case.brain_mask),
        wm_mask=cut(case.wm_mask), meta={**case.meta, "crop": [int(v) for v in lo] + [int(v) for v in sz]},
    )

