"""The image type of the app: a channel-first array that knows where it is in the patient."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

__all__ = ["MAX_VOXELS", "SeriesInfo", "Volume"]

#: Loaders refuse images whose float32 array would exceed this many voxels (8 GiB): a corrupt header
#: or an image far too large for this app.
MAX_VOXELS = 2**31


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image (or label map) with its voxel-to-world geometry.

    Args:
        array: channel-first array ``(C, I, J, K)``; ``C == 1`` for ordinary scans and label maps.
        affine: float64 4x4 mapping voxel indices ``(i, j, k, 1)`` to RAS+ world millimetres
            (nibabel's convention; DICOM's LPS is converted once, at I/O).
        modality: DICOM modality ("CT", "MR", ...) or "" when unknown.
        source_paths: files the volume was read from; for DICOM series, one file per slice in
            array ``k`` order (multi-frame: the single file).
        series_uid: DICOM SeriesInstanceUID, when DICOM.
        series_description: DICOM SeriesDescription (or "" ).
        channel_names: one name per channel, when known (e.g. MSD "FLAIR", "T1w", ...).
        warnings: human-readable problems noticed while loading (missing slice, NaNs replaced...).
        meta: extra plain values (patient/study identifiers for export, etc.).

    A label map is a ``Volume`` with an integer array on the same grid as its image.
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = ""
    source_paths: tuple[str, ...] = ()
    series_uid: str | None = None
    series_description: str = ""
    channel_names: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise ValueError(f"Volume array must be (C, I, J, K), got shape {arr.shape}")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got {aff.shape}")
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "affine", aff)
        object.__setattr__(self, "source_paths", tuple(str(p) for p in self.source_paths))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "channel_names", tuple(self.channel_names))

    # ---- derived geometry (never stored twice) -------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(I, J, K)``."""
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes ``(i, j, k)``."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Closest anatomical axis code of the array axes, e.g. ``"RAS"`` or ``"LPS"``."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def voxel_volume_ml(self) -> float:
        return self.voxel_volume_mm3 / 1000.0

    @property
    def is_labels(self) -> bool:
        return np.issubdtype(self.array.dtype, np.integer) or self.array.dtype == bool

    @property
    def name(self) -> str:
        """A short name for outputs: series description, else the file/folder stem."""
        from pathlib import Path

        if self.series_description:
            return self.series_description
        if self.source_paths:
            p = Path(self.source_paths[0])
            if self.series_uid:  # DICOM: name after the folder holding the slices
                return p.parent.name or p.stem
            n = p.name
            for ext in (".nii.gz", ".nii", ".dcm"):
                if n.lower().endswith(ext):
                    return n[: -len(ext)]
            return p.stem
        return "volume"

    # ---- helpers ------------------------------------------------------------------------
    def voxel_to_world(self, ijk) -> np.ndarray:
        """RAS mm of voxel index/indices ``ijk`` (shape ``(3,)`` or ``(N, 3)``)."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, ras) -> np.ndarray:
        """Continuous voxel index of RAS mm point(s)."""
        inv = np.linalg.inv(self.affine)
        ras = np.asarray(ras, dtype=np.float64)
        return ras @ inv[:3, :3].T + inv[:3, 3]

    def replace(self, **changes: Any) -> "Volume":
        return dataclasses.replace(self, **changes)

    def with_array(self, array: np.ndarray, **changes: Any) -> "Volume":
        """Same grid and metadata, new array (e.g. a label map for this image)."""
        return dataclasses.replace(self, array=array, **changes)

    def __repr__(self) -> str:
        sp = "x".join(f"{s:.3g}" for s in self.spacing)
        desc = f" '{self.series_description}'" if self.series_description else ""
        return (
            f"Volume({self.modality or '?'}{desc}, channels={self.n_channels}, shape={self.shape}, "
            f"spacing={sp} mm, orientation={self.orientation}+, dtype={self.array.dtype}"
            + (f", {len(self.warnings)} warning(s)" if self.warnings else "")
            + ")"
        )


@dataclass(frozen=True)
class SeriesInfo:
    """Header-only summary of one DICOM image series (for pickers and ``list_series``)."""

    series_uid: str
    description: str
    modality: str
    n_slices: int  # slices, or frames of a multi-frame object
    rows: int
    columns: int
    spacing: tuple[float, float, float]  # (row spacing, column spacing, slice spacing) mm
    files: tuple[str, ...] = ()
    series_number: int | None = None
    study_uid: str = ""
    patient_id: str = ""

    def summary(self) -> str:
        # columns x rows x slices, with the spacing in the same order (column spacing is spacing[1])
        sp = "x".join(f"{s:.3g}" for s in (self.spacing[1], self.spacing[0], self.spacing[2]))
        return (
            f"{self.series_number if self.series_number is not None else '-'}: {self.description or '(no description)'}"
            f" [{self.modality}] {self.columns}x{self.rows}x{self.n_slices}, {sp} mm, UID {self.series_uid}"
        )
