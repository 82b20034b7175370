"""Open an existing segmentation on a scan: NIfTI label maps and DICOM SEG from any producer.

:func:`load_segmentation` returns the label map on the open scan's grid with its label names:

* **NIfTI** label map on the scan's grid: taken as is. On another grid that overlaps the scan (other
  resolution, crop, orientation): resampled by nearest neighbour onto the scan's grid, with a warning.
  No overlap in scanner space: an error (the mask belongs to another scan).
* **DICOM SEG** (binary, fractional or labelmap; sparse frames; any segment numbering): checked against
  the scan's FrameOfReferenceUID (another one is refused unless every image the SEG references is one of
  this series' -- pydicom-seg writes a new UID --, then it is placed with a warning). When it references the open series' instances, frames are placed by
  instance (exact); otherwise by the SEG's own plane positions (highdicom ``get_volume``) and resampled
  by nearest neighbour, with a warning. Segments become labels: the TrackingID ``"label <v>"`` written
  by this app restores the value, other SEGs use the segment number; names come from SegmentLabel.
  Fractional segments are thresholded at 0.5. Overlapping segments resolve to the higher segment.

:func:`describe_dicom_seg` summarises a SEG (segments, referenced series) for ``seg-app info``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seg_app.core.errors import ScanLoadError
from seg_app.core.volume import Volume

__all__ = ["LoadedSegmentation", "describe_dicom_seg", "is_dicom_seg", "load_segmentation", "resample_labels_nearest"]

_TRACKING_RE = re.compile(r"^label (-?\d+)$")
#: Largest distance (mm) between grids' corners for "the same grid".
_GRID_ATOL_MM = 1e-3
_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class LoadedSegmentation:
    """A segmentation placed on a scan's grid.

    Attributes:
        labels: integer label map ``(I, J, K)`` on the scan's grid (0 = background).
        names: label value -> name for the values present in the source (segment labels for SEG).
        source: the file it came from.
        kind: ``"nifti"`` or ``"dicom-seg"``.
        warnings: resampling and other notes to show to the user.
    """

    labels: np.ndarray
    names: dict[int, str]
    source: str
    kind: str
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _corners(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    idx = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    return (idx @ affine.T)[:, :3]


def _same_grid(shape: tuple[int, ...], affine: np.ndarray, ref: Volume) -> bool:
    return tuple(shape) == tuple(ref.shape) and np.allclose(_corners(shape, affine), _corners(ref.shape, ref.affine), atol=_GRID_ATOL_MM)


def resample_labels_nearest(labels: np.ndarray, affine: np.ndarray, reference: Volume) -> tuple[np.ndarray, float]:
    """Nearest-neighbour resampling of a label map ``(I, J, K)`` with voxel->RAS ``affine`` onto ``reference``'s grid.

    Returns:
        the label map on the reference grid (0 outside the source) and the fraction of reference voxels
        that fall inside the source grid.
    """
    ref_shape = reference.shape
    to_src = np.linalg.inv(affine) @ reference.affine  # reference voxel -> source voxel
    out = np.zeros(ref_shape, dtype=labels.dtype)
    inside_total = 0
    ii, jj = np.meshgrid(np.arange(ref_shape[0]), np.arange(ref_shape[1]), indexing="ij")
    for k in range(ref_shape[2]):  # slice by slice: bounded memory on large scans
        pts = np.stack([ii, jj, np.full_like(ii, k), np.ones_like(ii)], 0).reshape(4, -1).astype(np.float64)
        src = (to_src @ pts)[:3]
        r = np.rint(src).astype(np.int64)
        ok = np.all((r >= 0) & (r < np.array(labels.shape)[:, None]), axis=0)
        inside_total += int(ok.sum())
        plane = np.zeros(ii.size, dtype=labels.dtype)
        plane[ok] = labels[r[0, ok], r[1, ok], r[2, ok]]
        out[:, :, k] = plane.reshape(ii.shape)
    return out, inside_total / float(np.prod(ref_shape))


def _integer_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ScanLoadError(f"The label map {path.name} has NaN or infinite values.")
        if not np.array_equal(arr, np.round(arr)):
            raise ScanLoadError(f"The file {path.name} has non-integer values: it is an image or a probability map, not a label map.")
    elif arr.dtype.kind not in "biu":
        raise ScanLoadError(f"The label map {path.name} has values of type {arr.dtype}, not integers.")
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ScanLoadError(f"The label map {path.name} has label values outside 0..65535.")
    return arr.astype(np.uint8 if arr.size == 0 or arr.max() <= 255 else np.uint16)


def _voxel_aligned(affine: np.ndarray, reference: Volume) -> bool:
    """Whether every reference voxel centre is a voxel centre of the source grid (same spacing and axes
    up to order and flips, integer offset): then nearest-neighbour placement is exact."""
    m = np.linalg.inv(affine) @ reference.affine
    rot, shift = m[:3, :3], m[:3, 3]
    return bool(np.allclose(rot, np.round(rot), atol=1e-3) and np.all(np.abs(np.round(rot)).sum(0) == 1)
                and np.allclose(shift, np.round(shift), atol=1e-3))


def _place(arr: np.ndarray, affine: np.ndarray, reference: Volume, path: Path, what: str) -> tuple[np.ndarray, list[str]]:
    if _same_grid(arr.shape, affine, reference):
        return arr, []
    out, inside = resample_labels_nearest(arr, affine, reference)
    if inside == 0.0:
        raise ScanLoadError(f"The {what} {path.name} does not overlap the open scan in scanner space: it belongs to another scan.")
    if arr.any() and not out.any():
        raise ScanLoadError(f"The {what} {path.name} has no labelled voxel inside the open scan's field of view.")
    if _voxel_aligned(affine, reference):  # same voxels, other order or extent: exact, nothing to tell
        return out, []
    src_vox = np.linalg.norm(affine[:3, :3], axis=0)
    warn = (f"The {what} {path.name} is on another grid ({'x'.join(map(str, arr.shape))} voxels of "
            f"{'x'.join(f'{v:.2g}' for v in src_vox)} mm); it was resampled onto the scan's grid by nearest neighbour.")
    return out, [warn]


def _load_nifti_labels(path: Path, reference: Volume) -> LoadedSegmentation:
    from seg_app.core.nifti_io import load_nifti

    vol = load_nifti(path)
    if vol.n_channels != 1:
        raise ScanLoadError(f"The file {path.name} has {vol.n_channels} channels; a label map has one.")
    arr = _integer_labels(np.asarray(vol.array[0]), path)
    arr, warnings = _place(arr, vol.affine, reference, path, "label map")
    names = {int(v): f"label {int(v)}" for v in np.unique(arr) if v}
    return LoadedSegmentation(arr, names, str(path), "nifti", tuple(warnings))


def is_dicom_seg(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a DICOM file of the Segmentation Storage SOP class (header read only)."""
    import pydicom

    p = Path(path)
    if not p.is_file():
        return False
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - not DICOM
        return False
    return str(ds.get("SOPClassUID", "")) == _SEG_SOP_CLASS


def _read_seg(path: Path):
    import highdicom as hd

    try:
        return hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure
        raise ScanLoadError(f"The file {path.name} is not a readable DICOM Segmentation ({exc}).") from exc


def _segment_values(seg) -> tuple[list[int], list[int], dict[int, str]]:
    numbers = [int(n) for n in seg.segment_numbers]
    values, names = [], {}
    for n in numbers:
        desc = seg.get_segment_description(n)
        m = _TRACKING_RE.match(str(desc.tracking_id or ""))
        v = int(m.group(1)) if m else n
        values.append(v)
        names[v] = str(desc.segment_label)
    return numbers, values, names


def _load_dicom_seg(path: Path, reference: Volume) -> LoadedSegmentation:
    seg = _read_seg(path)
    ref_for = str(reference.meta.get("FrameOfReferenceUID") or "")
    seg_for = str(seg.get("FrameOfReferenceUID", "") or "")
    numbers, values, names = _segment_values(seg)
    sops = set(str(s) for s in reference.meta.get("SOPInstanceUIDs") or [])
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    by_instance = bool(sops and referenced and referenced <= sops)
    other_frame = bool(ref_for and seg_for and ref_for != seg_for)
    refused = ScanLoadError(f"The DICOM SEG {path.name} belongs to another frame of reference than the open scan "
                            "(another study or position of the patient); it cannot be placed on this scan.")
    if other_frame and not by_instance:
        raise refused
    warnings: list[str] = []
    arr = None
    if by_instance:
        from seg_app.core.dicom_seg import read_dicom_seg

        try:  # frames placed by the instances they reference: exact
            arr = np.asarray(read_dicom_seg(path, reference).array[0])
        except ScanLoadError:  # e.g. no "spatial locations preserved" flag (dcmqi): place by position
            arr = None
        if other_frame:  # its frames' positions are those of the images it references: this series'
            warnings.append(f"The DICOM SEG {path.name} declares another frame of reference than the scan, but it "
                            "references this series' images by UID (some writers, e.g. pydicom-seg, write a new "
                            "FrameOfReferenceUID); it was placed on those images.")
    if arr is None:
        try:
            vol = seg.get_volume(segment_numbers=numbers, combine_segments=False, dtype=np.float32, rescale_fractional=True, allow_missing_positions=True)
        except (ValueError, RuntimeError, KeyError, AttributeError) as exc:
            raise ScanLoadError(f"The DICOM SEG {path.name} is not a regular 3D volume that can be placed on the scan ({exc}).") from exc
        planes = np.asarray(vol.array)  # (slices, rows, cols, segments), highdicom's LPS affine
        if planes.ndim == 3:
            planes = planes[..., None]
        dtype = np.uint8 if max(values, default=0) <= 255 else np.uint16
        lab = np.zeros(planes.shape[:3], dtype)
        for s, v in enumerate(values[: planes.shape[3]]):
            lab[planes[..., s] >= 0.5] = v
        affine = _LPS_TO_RAS @ np.asarray(vol.affine, np.float64)
        arr, placed = _place(lab, affine, reference, path, "DICOM SEG")
        warnings += placed
        if not ref_for or not seg_for:
            warnings.append(f"The DICOM SEG {path.name} or the scan has no FrameOfReferenceUID; it was placed by position only.")
    return LoadedSegmentation(arr, names, str(path), "dicom-seg", tuple(warnings))


def load_segmentation(path: str | os.PathLike[str], reference: Volume) -> LoadedSegmentation:
    """Load a NIfTI label map or a DICOM SEG onto ``reference``'s grid (see the module docstring).

    Raises:
        ScanLoadError: unreadable file, not a label map, another frame of reference, no overlap.
    """
    from seg_app.core.nifti_io import is_nifti_path

    p = Path(path)
    if not p.exists():
        raise ScanLoadError(f"The segmentation file {p} does not exist.")
    if is_nifti_path(p):
        return _load_nifti_labels(p, reference)
    if is_dicom_seg(p):
        return _load_dicom_seg(p, reference)
    raise ScanLoadError(f"The file {p.name} is neither a NIfTI label map nor a DICOM Segmentation (SEG).")


def describe_dicom_seg(path: str | os.PathLike[str]) -> dict:
    """Segments, type and referenced series of a DICOM SEG (no pixel data decoded beyond the header)."""
    p = Path(path)
    seg = _read_seg(p)
    numbers, values, names = _segment_values(seg)
    series = sorted({str(s) for _, s, _ in seg.get_source_image_uids()})
    return {
        "file": p.name,
        "segmentation_type": str(seg.get("SegmentationType", "")),
        "frames": int(seg.get("NumberOfFrames", 0) or 0),
        "frame_of_reference": str(seg.get("FrameOfReferenceUID", "")),
        "referenced_series": series,
        "segments": [{"number": n, "label_value": v, "label": names[v]} for n, v in zip(numbers, values)],
    }
