"""Per-lesion measurements in world millimetres (Qt-free, fast enough to rerun after each brush stroke).

A *lesion* is one connected component (26-connectivity) of one label value. Every definition is
documented in ``docs/MEASUREMENTS.md``; in short:

* the lesion boundary is the set of **face centres between lesion and non-lesion voxels** — exactly
  the vertices of the marching-cubes surface of the mask at level 0.5 (the pyradiomics convention);
  diameters are distances between boundary points, mapped through the affine (anisotropic and oblique
  grids are exact, not approximated);
* ``max_diameter_mm``: 3D Feret diameter (convex hull of the boundary points, then the largest
  pairwise distance between hull vertices);
* RECIST axes in the array plane whose normal is closest to the patient S axis ("axial"): the long
  axis is the largest in-plane Feret diameter over all slices; the short axis is the longest extent
  perpendicular to it in that same slice;
* surface area: marching cubes (level 0.5) on the cropped, padded binary mask, vertices mapped through
  the affine (IBSI / pyradiomics); lesions at least three voxels thick somewhere are meshed after a
  0.5-voxel Gaussian smoothing instead, which halves the staircase over-estimate on them. Sphericity
  ``pi^(1/3) (6V)^(2/3) / A`` with ``V`` the volume enclosed by that same mesh (as pyradiomics), so it
  never exceeds 1.

Each component is cropped to its bounding box before anything expensive happens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cc3d
import numpy as np
from scipy import ndimage

from seg_app.core.shape import axial_axis, feret_diameter, recist_axes, sphericity, surface_mesh
from seg_app.core.volume import Volume

__all__ = ["LesionMeasurement", "label_totals", "lesion_components", "measure_lesions"]

@dataclass(frozen=True)
class LesionMeasurement:
    """Measurements of one lesion (one connected component of one label). Lengths in mm, volumes in mL.

    Intensity statistics (``mean`` ... ``median``) are of the source image's first channel inside the
    lesion (HU for CT) and NaN without an image. ``confidence`` is the mean foreground probability
    inside the lesion (None without probabilities); ``tta_agreement`` the mean fraction of
    test-time-augmented predictions that agree with the final label (None without TTA).

    With tumour sub-regions (BraTS-style labels, :mod:`seg_app.core.regions`) a lesion is one connected
    component of the **whole tumour** (``label`` 0, ``label_name`` "whole tumour"); its geometry is the
    whole tumour's and ``region_volumes_ml`` gives each sub-region's volume inside it and the
    composites ``WT``, ``TC``, ``ET``. Without sub-regions ``region_volumes_ml`` is None.
    """

    label: int
    label_name: str
    lesion_id: int
    voxel_count: int
    volume_ml: float
    max_diameter_mm: float
    long_axis_mm: float
    short_axis_mm: float
    surface_area_mm2: float
    sphericity: float
    mean: float
    std: float
    min: float
    max: float
    median: float
    centroid_ras_mm: tuple[float, float, float]
    centroid_voxel: tuple[float, float, float]
    bbox_min_voxel: tuple[int, int, int]
    bbox_max_voxel: tuple[int, int, int]
    confidence: float | None
    tta_agreement: float | None
    long_axis_slice: int | None = None  # source array index, along the axial axis, of the RECIST slice
    region_volumes_ml: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists, NaN becomes None)."""
        return {k: _jsonable(v) for k, v in asdict(self).items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if not math.isfinite(f) else f
    if isinstance(v, np.integer):
        return int(v)
    return v


# ---- public API ------------------------------------------------------------------------------
def _grid_check(name: str, vol: Volume | None, shape: tuple[int, int, int]) -> np.ndarray | None:
    if vol is None:
        return None
    if vol.shape != shape:
        raise ValueError(f"{name} has shape {vol.shape} but the label map has shape {shape}; they must share a grid.")
    return vol.array[0]


def lesion_components(labels: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected components of an integer label map (components never cross label values)."""
    cc, n = cc3d.connected_components(np.ascontiguousarray(labels), connectivity=connectivity, return_N=True)
    return cc, int(n)


def _nonzero_bbox(arr: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the non-zero voxels (three cheap projections)."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.flatnonzero(np.any(arr, axis=other))
        if nz.size == 0:
            return None
        out.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def measure_lesions(
    labels: Volume,
    image: Volume | None = None,
    probabilities: Volume | None = None,
    agreement: Volume | None = None,
    label_names: Mapping[int, str] | None = None,
    connectivity: int = 26,
    regions: Mapping[str, Sequence[int]] | None = None,
) -> list[LesionMeasurement]:
    """Measure every lesion of a label map.

    Args:
        labels: integer label map ``(1, I, J, K)``; its affine defines every length.
        image: source scan on the same grid (first channel is used for intensity statistics).
        probabilities: foreground probability ``(1, I, J, K)`` on the same grid (lesion confidence).
        agreement: TTA agreement map on the same grid.
        label_names: value -> name (default ``"label N"``).
        connectivity: 6, 18 or 26 (default 26: touching corners join lesions).
        regions: composite name -> label values (``composite_regions``'s ``WT``/``TC``/``ET``); when
            given, lesions are connected components of ``WT`` with per-region volumes.

    Returns:
        lesions sorted by label value, then by volume (largest first); ``lesion_id`` counts from 1
        within each label in that order.
    """
    lab = np.asarray(labels.array[0])
    shape = labels.shape
    img = _grid_check("The image", image, shape)
    prob = _grid_check("The probability map", probabilities, shape)
    agr = _grid_check("The agreement map", agreement, shape)
    names = dict(label_names or {})
    box = _nonzero_bbox(lab)
    if box is None:
        return []
    origin = np.array([s.start for s in box])
    crop = lab[box]
    if not np.issubdtype(crop.dtype, np.integer):
        crop = crop.astype(np.int32)
    whole = tuple(int(v) for v in regions["WT"]) if regions else ()
    if whole:
        names[0] = "whole tumour"
    cc, n = lesion_components(np.isin(crop, whole).astype(np.uint8) if whole else crop, connectivity)
    objects = ndimage.find_objects(cc)
    counts = np.bincount(cc.ravel(), minlength=n + 1)
    lin = labels.affine[:3, :3]
    axial = axial_axis(labels.affine)
    vox_ml = labels.voxel_volume_ml
    per_label: dict[int, list[tuple[int, tuple[slice, ...]]]] = {}
    for cid, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        sub = cc[sl] == cid
        value = 0 if whole else int(crop[sl][np.unravel_index(int(np.argmax(sub)), sub.shape)])
        per_label.setdefault(value, []).append((cid, sl))
    results: list[LesionMeasurement] = []
    for value in sorted(per_label):
        comps = sorted(per_label[value], key=lambda t: (-int(counts[t[0]]), t[0]))
        for lesion_id, (cid, sl) in enumerate(comps, start=1):
            mask = cc[sl] == cid
            lo = origin + np.array([s.start for s in sl])
            gsl = tuple(slice(int(a), int(a) + m) for a, m in zip(lo, mask.shape))
            voxels = int(counts[cid])
            centroid_vox = np.array(
                [float(np.dot(mask.sum(axis=tuple(x for x in range(3) if x != a)), np.arange(mask.shape[a]))) for a in range(3)]
            ) / voxels + lo  # from projections: no (N, 3) index array
            centroid_ras = labels.voxel_to_world(centroid_vox)
            max_d = feret_diameter(mask, lin)
            long_ax, short_ax, rk = recist_axes(mask, lin, axial, with_slice=True)
            area, mesh_mm3, _ = surface_mesh(mask, lin)
            spher = sphericity(area, mesh_mm3)
            if img is not None:
                vals = img[gsl][mask]
                stats = (
                    float(vals.mean(dtype=np.float64)),
                    float(vals.std(dtype=np.float64)),
                    float(vals.min()),
                    float(vals.max()),
                    float(np.median(vals, overwrite_input=True)),
                )
            else:
                stats = (float("nan"),) * 5
            conf = float(np.mean(prob[gsl][mask], dtype=np.float64)) if prob is not None else None
            agree = float(np.mean(agr[gsl][mask], dtype=np.float64)) if agr is not None else None
            region_ml = _region_volumes(crop[sl][mask], names, regions, vox_ml) if whole else None
            results.append(
                LesionMeasurement(
                    label=value,
                    label_name=names.get(value, f"label {value}"),
                    lesion_id=lesion_id,
                    voxel_count=voxels,
                    volume_ml=voxels * vox_ml,
                    max_diameter_mm=float(max_d),
                    long_axis_mm=long_ax,
                    short_axis_mm=short_ax,
                    surface_area_mm2=area,
                    sphericity=float(spher),
                    mean=stats[0],
                    std=stats[1],
                    min=stats[2],
                    max=stats[3],
                    median=stats[4],
                    centroid_ras_mm=tuple(float(x) for x in centroid_ras),  # type: ignore[arg-type]
                    centroid_voxel=tuple(float(x) for x in centroid_vox),  # type: ignore[arg-type]
                    bbox_min_voxel=tuple(int(x) for x in lo),  # type: ignore[arg-type]
                    bbox_max_voxel=tuple(int(x) + m - 1 for x, m in zip(lo, mask.shape)),  # type: ignore[arg-type]
                    confidence=conf,
                    tta_agreement=agree,
                    long_axis_slice=None if rk is None else int(lo[axial]) + int(rk),
                    region_volumes_ml=region_ml,
                )
            )
    return results


def _region_volumes(values: np.ndarray, names: Mapping[int, str], regions: Mapping[str, Sequence[int]] | None, vox_ml: float) -> dict[str, float]:
    """mL of each sub-region (by name) and of each composite among the label ``values`` of one lesion."""
    counts = np.bincount(values.astype(np.int64).ravel())
    def ml(vs: Sequence[int]) -> float:
        return float(sum(int(counts[v]) for v in vs if v < len(counts))) * vox_ml
    out = {names.get(v, f"label {v}"): ml([v]) for v in sorted({int(v) for vs in (regions or {}).values() for v in vs})}
    out.update({key: ml(vs) for key, vs in (regions or {}).items()})
    return out


def label_totals(lesions: Sequence[LesionMeasurement]) -> list[dict[str, Any]]:
    """Per label value: lesion count, total voxels and mL, largest diameter, volume-weighted means."""
    out: list[dict[str, Any]] = []
    for value in sorted({les.label for les in lesions}):
        group = [les for les in lesions if les.label == value]
        vox = sum(les.voxel_count for les in group)

        def weighted(attr: str) -> float | None:
            vals = [(getattr(les, attr), les.voxel_count) for les in group if getattr(les, attr) is not None]
            if not vals or any(not math.isfinite(v) for v, _ in vals):
                return None
            return float(sum(v * w for v, w in vals) / max(1, sum(w for _, w in vals)))

        out.append(
            {
                "label": value,
                "label_name": group[0].label_name,
                "n_lesions": len(group),
                "voxel_count": vox,
                "volume_ml": float(sum(les.volume_ml for les in group)),
                "largest_lesion_ml": float(max(les.volume_ml for les in group)),
                "max_diameter_mm": float(max(les.max_diameter_mm for les in group)),
                "mean": weighted("mean"),
                "confidence": weighted("confidence"),
                "tta_agreement": weighted("tta_agreement"),
            }
        )
        regions = [les.region_volumes_ml for les in group if les.region_volumes_ml]
        if regions:  # whole-tumour lesions: total mL of every sub-region and composite
            out[-1]["region_volumes_ml"] = {k: float(sum(r.get(k, 0.0) for r in regions)) for k in regions[0]}
    return out
