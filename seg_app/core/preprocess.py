"""The one preprocessing definition, built from a ``ModelSpec``.

Training, evaluation and the app all call :func:`spatial_transforms` / :func:`intensity_transform`
(or :func:`preprocess_volume`, which chains them) so they cannot drift apart:

1. load with the app's own reader (:class:`LoadVolumed`, so DICOM and NIfTI work the same everywhere);
2. reorient to ``spec.orientation`` (RAS) — axis permutation/flip only, oblique directions are kept;
3. resample to ``spec.target_spacing`` (bilinear for images, nearest for labels);
4. normalise intensities (``zscore_nonzero`` or ``percentile`` for MR, ``ct_window`` for CT).

:func:`resample_to_reference` maps network outputs back onto the source grid.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    SpatialResample,
)

from seg_app.core.errors import IncompatibleInputError
from seg_app.core.spec import ModelSpec
from seg_app.core.volume import Volume

__all__ = [
    "LoadVolumed", "check_compatible", "intensity_transform", "preprocess_transforms", "preprocess_volume",
    "resample_to_reference", "spatial_transforms", "volume_to_metatensor",
]


def volume_to_metatensor(volume: Volume, dtype: torch.dtype = torch.float32) -> MetaTensor:
    """A channel-first ``MetaTensor`` carrying the volume's RAS affine."""
    arr = np.ascontiguousarray(volume.array)
    t = torch.as_tensor(arr).to(dtype)
    mt = MetaTensor(t, affine=torch.as_tensor(volume.affine, dtype=torch.float64))
    mt.meta["space"] = "RAS"
    mt.meta["original_affine"] = torch.as_tensor(volume.affine, dtype=torch.float64)
    mt.meta["spatial_shape"] = np.asarray(volume.shape)
    return mt


class LoadVolumed(MapTransform):
    """Load scans with the app's reader (``seg_app.core.io.load_scan``) into ``MetaTensor``s.

    Label keys are loaded the same way and rounded to integers (kept as float for resampling).
    """

    def __init__(self, keys: Sequence[str], label_keys: Sequence[str] = (), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = set(label_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from seg_app.core.io import load_scan

        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            vol = value if isinstance(value, Volume) else load_scan(value)
            mt = volume_to_metatensor(vol)
            if key in self.label_keys:
                mt = MetaTensor(torch.round(mt.as_tensor()), meta=mt.meta)
            mt.meta["filename_or_obj"] = vol.source_paths[0] if vol.source_paths else ""
            d[key] = mt
        return d


def spatial_transforms(spec: ModelSpec, image_keys: Sequence[str] = ("image",), label_keys: Sequence[str] = ()) -> list:
    """Orientation and spacing transforms (image: bilinear, labels: nearest); none for ``spec.native_grid``."""
    if spec.native_grid:
        return []
    keys = list(image_keys) + list(label_keys)
    modes = ["bilinear"] * len(image_keys) + ["nearest"] * len(label_keys)
    return [
        Orientationd(keys=keys, axcodes=spec.orientation, labels=None),
        Spacingd(keys=keys, pixdim=spec.target_spacing, mode=modes, padding_mode="border", dtype=np.float32),
    ]


def intensity_transform(spec: ModelSpec, image_keys: Sequence[str] = ("image",)):
    """The spec's intensity normalisation as a dictionary transform."""
    norm = spec.normalization
    if norm.scheme == "zscore_nonzero":
        return NormalizeIntensityd(keys=list(image_keys), nonzero=True, channel_wise=True)
    if norm.scheme == "percentile":
        lo, hi = norm.window or (0.5, 99.5)
        return ScaleIntensityRangePercentilesd(
            keys=list(image_keys), lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
        )
    if norm.scheme == "ct_window":
        assert norm.window is not None
        lo, hi = norm.window
        return ScaleIntensityRanged(keys=list(image_keys), a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    return Compose([])  # "none"


def preprocess_transforms(spec: ModelSpec, image_keys: Sequence[str] = ("image",), label_keys: Sequence[str] = (), load: bool = True) -> Compose:
    """Load (optional) + spatial + intensity transforms: the shared deterministic pipeline."""
    parts: list = []
    if load:
        parts.append(LoadVolumed(keys=list(image_keys) + list(label_keys), label_keys=label_keys))
    parts += spatial_transforms(spec, image_keys, label_keys)
    parts.append(intensity_transform(spec, image_keys))
    return Compose(parts)


def check_compatible(volume: Volume, spec: ModelSpec) -> None:
    """Raise ``IncompatibleInputError`` when the model cannot take this scan."""
    if volume.n_channels != spec.in_channels:
        names = ", ".join(c.name for c in spec.channels)
        raise IncompatibleInputError(
            f"The model '{spec.name}' needs {spec.in_channels} input channel(s) ({names}) but the scan has "
            f"{volume.n_channels}."
        )
    if not np.all(np.isfinite(volume.array)):
        raise IncompatibleInputError("The scan contains NaN or infinite values; the model cannot segment it.")
    if min(volume.shape) < 1:
        raise IncompatibleInputError(f"The scan has an empty dimension (shape {volume.shape}).")


def preprocess_volume(volume: Volume, spec: ModelSpec) -> MetaTensor:
    """Apply the spec's preprocessing to an in-memory volume (the app's inference path)."""
    check_compatible(volume, spec)
    out = preprocess_transforms(spec, load=False)({"image": volume_to_metatensor(volume)})
    return out["image"]


def resample_to_reference(data: torch.Tensor, reference: Volume, mode: str = "bilinear") -> torch.Tensor:
    """Resample a channel-first ``MetaTensor`` (any grid, with its affine) onto ``reference``'s grid.

    Used to bring probabilities computed on the model grid back to the source scan's exact voxels.
    Returns a plain tensor ``(C, I, J, K)``.
    """
    if not isinstance(data, MetaTensor):
        raise TypeError("resample_to_reference needs a MetaTensor that carries its affine")
    resampler = SpatialResample(mode=mode, padding_mode="border", align_corners=False, dtype=torch.float32)
    out = resampler(
        data, dst_affine=torch.as_tensor(reference.affine, dtype=torch.float64), spatial_size=reference.shape
    )
    return out.as_tensor() if isinstance(out, MetaTensor) else out
