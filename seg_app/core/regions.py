"""Tumour sub-regions and their composites (BraTS convention), Qt-free.

A BraTS-style model labels three sub-regions::

    1 = necrotic / non-enhancing tumour core (NCR)
    2 = peritumoral oedema (ED)
    3 = enhancing tumour (ET)

and clinicians and challenges report three nested composites of them::

    WT (whole tumour)  = 1 + 2 + 3
    TC (tumour core)   = 1 + 3
    ET (enhancing)     = 3

:func:`composite_regions` finds them from a model's label names, so a model with other labels (a binary
``tumour`` model, a liver model) simply has no composites and everything else works as before.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "BRATS_LABELS",
    "BRATS_COLORS",
    "COMPOSITE_NAMES",
    "brats_role",
    "composite_regions",
    "lesion_mask",
    "nested_region_labels",
    "region_mask",
]

#: Label value -> name of the BraTS sub-regions (the bundled model's labels).
BRATS_LABELS: dict[int, str] = {1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}
#: Display colours (RGB) close to the usual BraTS figures: core red, oedema green, enhancing yellow.
BRATS_COLORS: dict[int, tuple[int, int, int]] = {1: (230, 60, 60), 2: (60, 200, 80), 3: (250, 210, 40)}
#: Composite name -> what it is called in full.
COMPOSITE_NAMES: dict[str, str] = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}


def brats_role(name: str) -> int | None:
    """BraTS role of a label name: 1 necrotic/non-enhancing core, 2 oedema, 3 enhancing; else None."""
    n = name.strip().lower().replace("_", " ")
    if "non-enhancing" in n or "non enhancing" in n or "necro" in n or n in ("ncr", "net", "ncr/net", "core"):
        return 1
    if "edema" in n or "oedema" in n or n == "ed":
        return 2
    if "enhancing" in n or n == "et":
        return 3
    return None


def composite_regions(label_names: Mapping[int, str]) -> dict[str, tuple[int, ...]]:
    """``{"WT": values, "TC": values, "ET": values}`` when the labels are BraTS-like, else ``{}``.

    Args:
        label_names: label value -> name (background may be included; it is ignored).

    The roles are read from the names (necrotic/non-enhancing core, oedema, enhancing), so a model that
    numbers them differently still gets the right composites. All three roles must be present.
    """
    roles: dict[int, list[int]] = {}
    for value, name in label_names.items():
        if int(value) == 0:
            continue
        role = brats_role(str(name))
        if role is None:
            return {}
        roles.setdefault(role, []).append(int(value))
    if sorted(roles) != [1, 2, 3]:
        return {}
    core, oedema, enh = (tuple(sorted(roles[r])) for r in (1, 2, 3))
    return {
        "WT": tuple(sorted(core + oedema + enh)),
        "TC": tuple(sorted(core + enh)),
        "ET": enh,
    }


def region_mask(labels: np.ndarray, values: tuple[int, ...] | list[int]) -> np.ndarray:
    """Boolean mask of the voxels whose label is one of ``values``."""
    return np.isin(labels, np.asarray(list(values), dtype=labels.dtype if labels.dtype.kind in "iu" else np.int64))


def lesion_mask(labels: np.ndarray, label_names: Mapping[int, str]) -> np.ndarray:
    """The voxels that make up lesions: the whole tumour (WT) for BraTS-like labels, else any label."""
    regions = composite_regions(label_names)
    if regions:
        return region_mask(labels, regions["WT"])
    return labels != 0


def nested_region_labels(
    probabilities: np.ndarray, region_channels: tuple[str, ...] | list[str], threshold: float = 0.5
) -> np.ndarray:
    """BraTS label map (uint8) from per-region probabilities of the nested regions TC, WT and ET.

    Args:
        probabilities: ``(R, I, J, K)``, one channel per region (sigmoid outputs).
        region_channels: the region of each channel, a permutation of ``("TC", "WT", "ET")``.
        threshold: a region is present where its probability is above this.

    ET -> 3 (enhancing), else TC -> 1 (necrotic/non-enhancing core), else WT -> 2 (oedema), else 0:
    the order of the MONAI Model Zoo ``brats_mri_segmentation`` bundle (which writes ET as 4).
    """
    index = {name: list(region_channels).index(name) for name in ("TC", "WT", "ET")}
    out = np.zeros(probabilities.shape[1:], dtype=np.uint8)
    out[probabilities[index["WT"]] > threshold] = 2
    out[probabilities[index["TC"]] > threshold] = 1
    out[probabilities[index["ET"]] > threshold] = 3
    return out
