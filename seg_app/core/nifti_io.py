"""NIfTI reading: nibabel's best affine, scl_slope/inter applied, 4D as channels, sizes checked first."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from seg_app.core.errors import CorruptScanError, ScanTooLargeError, UnsupportedScanError
from seg_app.core.volume import MAX_VOXELS, Volume

__all__ = ["MAX_CHANNELS", "NIFTI_SUFFIXES", "is_nifti_path", "load_nifti"]

#: A 4th dimension up to this long is read as channels (MSD style); longer ones are time series.
MAX_CHANNELS = 8
#: deflate cannot compress better than about 1032:1, so a .nii.gz claiming more is truncated/lying.
_MAX_DEFLATE_RATIO = 1100

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz`` (any case)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[tuple[int, int, int], int]:
    """((I, J, K), channels) for a NIfTI shape, or a clear error for shapes the app cannot use."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise UnsupportedScanError(
            f"The NIfTI file {path} has {len(shape)} dimensions {shape}; only 3D images and 4D "
            "multi-channel images can be loaded."
        )
    if len(shape) < 3:
        shape = shape + (1,) * (3 - len(shape))
    if any(s <= 0 for s in shape):
        raise UnsupportedScanError(
            f"The NIfTI file {path} holds an empty image (dimensions {shape}); there is nothing to load."
        )
    n_c = shape[3] if len(shape) == 4 else 1
    if n_c > MAX_CHANNELS:
        raise UnsupportedScanError(
            f"The NIfTI file {path} is a time series of {n_c} volumes, not a multi-channel scan "
            f"(at most {MAX_CHANNELS} channels); extract the volume you need first."
        )
    return (shape[0], shape[1], shape[2]), n_c


def _check_size(path: Path, img: nib.Nifti1Image, n_vox: int) -> None:
    """Refuse absurd or truncated sizes from the header alone, before any allocation."""
    if n_vox > MAX_VOXELS:
        raise ScanTooLargeError(
            f"The NIfTI file {path} claims {n_vox:,} voxels, more than this app can load "
            f"({MAX_VOXELS:,}); the header is corrupt or the image is far too large."
        )
    hdr = img.header
    nbytes = n_vox * hdr.get_data_dtype().itemsize
    file_size = path.stat().st_size
    if str(path).lower().endswith(".gz"):
        if nbytes > file_size * _MAX_DEFLATE_RATIO:
            raise CorruptScanError(
                f"The NIfTI file {path} claims {nbytes:,} bytes of image data, far more than its "
                f"{file_size:,} compressed bytes can hold; it is truncated or its header is corrupt."
            )
    else:
        needed = int(hdr.get_data_offset()) + nbytes
        if file_size < needed:
            raise CorruptScanError(
                f"The NIfTI file {path} is truncated: its header needs {needed:,} bytes but the file "
                f"has {file_size:,}."
            )


def load_nifti(path: str | os.PathLike[str]) -> Volume:
    """Read a ``.nii`` / ``.nii.gz`` file as a float32 ``Volume``.

    Uses nibabel's best affine (sform, else qform, else the pixdim fallback) and applies
    scl_slope/scl_inter. A 4th dimension of at most ``MAX_CHANNELS`` is read as channels
    (e.g. MSD brain tumour FLAIR/T1w/T1gd/T2w); longer 4th dimensions are rejected as time series.
    2D images load as one slice.
    """
    path = Path(path)
    try:
        img = nib.load(path)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad headers
        raise CorruptScanError(
            f"The file {path} is not a valid NIfTI image: its header cannot be read (the file is "
            "truncated, corrupt or of another type)."
        ) from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CorruptScanError(f"The file {path} is not a valid NIfTI image.")
    dtype = img.header.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        kind = "a colour (RGB) image" if dtype.fields is not None else f"of type {dtype}"
        raise UnsupportedScanError(
            f"The NIfTI file {path} is {kind}, not a greyscale scan; convert it to a single-channel image first."
        )
    spatial, n_c = _spatial_shape(path, img.shape)
    _check_size(path, img, int(np.prod(spatial, dtype=np.int64)) * n_c)
    try:
        data = img.get_fdata(dtype=np.float32, caching="unchanged")
    except Exception as exc:  # noqa: BLE001 - EOFError, zlib.error, OSError, ValueError...
        raise CorruptScanError(
            f"The NIfTI file {path} is truncated or corrupt: its image data cannot be read ({exc})."
        ) from exc
    data = data.reshape(spatial + (n_c,), order="A")
    array = np.moveaxis(data, 3, 0)  # (C, I, J, K), a view

    warnings: list[str] = []
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        zooms = [float(z) if np.isfinite(z) and z > 0 else 1.0 for z in img.header.get_zooms()[:3]]
        zooms += [1.0] * (3 - len(zooms))
        affine = np.diag(zooms + [1.0])
        warnings.append(
            "The NIfTI orientation (sform/qform) is invalid; using the voxel sizes with an assumed "
            "orientation (do not trust left/right)."
        )
    hdr = img.header
    sform_code = int(hdr["sform_code"]) if "sform_code" in hdr else 0
    qform_code = int(hdr["qform_code"]) if "qform_code" in hdr else 0
    meta = {
        "sform_code": sform_code,
        "qform_code": qform_code,
        "descrip": hdr["descrip"].item().decode("latin-1", "replace").strip("\x00 ") if "descrip" in hdr else "",
        "stored_dtype": str(hdr.get_data_dtype()),
    }
    return Volume(array=array, affine=affine, source_paths=(str(path),), warnings=tuple(warnings), meta=meta)
