"""DICOM Segmentation (SEG) export and import with highdicom.

The SEG references the source series instance by instance and copies its frame of reference, so a
PACS viewer overlays it on the scan it was computed from. Frames follow the loader's convention
(:mod:`seg_app.core.dicom_io`): array axis ``i`` is the DICOM column index, ``j`` the row index and
``k`` the slice index, so SEG frame ``k`` is ``labels[:, :, k].T`` (rows x columns) and refers to
``reference.source_paths[k]`` (``meta["SOPInstanceUIDs"][k]``).

One SEG segment is written per label value (BINARY segmentation, no overlap since it comes from a
label map). Segment numbers are 1..N in label order; each segment's TrackingID is ``"label <v>"`` so
:func:`read_dicom_seg` restores the original label values even when they are not consecutive.

Validate a written file with dicom3tools: ``dciodvfy file_seg.dcm`` (lines starting with ``Error``
are failures; warnings are acceptable).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_app.core.errors import ExportError, ScanLoadError
from seg_app.core.files import overwrites_source, save_dataset_atomically
from seg_app.core.io import label_array_on_grid
from seg_app.core.regions import brats_role, composite_regions
from seg_app.core.volume import Volume

__all__ = ["export_dicom_seg", "read_dicom_seg"]

if TYPE_CHECKING:  # torch-free at import time: spec.py imports torch
    from seg_app.core.spec import ModelSpec

#: Default segment colour (RGB) when neither a spec nor a colour is known.
_DEFAULT_RGB = (230, 60, 60)
_TRACKING_RE = re.compile(r"^label (-?\d+)$")
#: Patient/study attributes the SEG copies from the source (type 2: may be empty, must be present).
_TYPE2_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
#: highdicom's/DICOM's limit on segment labels (LO: 64 characters).
_LO_MAX = 64


def _lo(text: str) -> str:
    """Clip to a DICOM LO value (64 characters, no backslash or control characters)."""
    text = re.sub(r"[\\\x00-\x1f]", " ", str(text)).strip()
    return text[:_LO_MAX] or "unnamed"


def _label_array(labels: Volume | np.ndarray, reference: Volume, path: Path) -> np.ndarray:
    """The (I, J, K) integer label array, checked against the reference grid."""
    arr = label_array_on_grid(labels, reference, f"Cannot write the DICOM SEG {path}")
    if arr.size and arr.min() < 0:
        raise ExportError(f"Cannot write the DICOM SEG {path}: the label map has negative values.")
    if arr.size and arr.max() > 65535:
        raise ExportError(f"Cannot write the DICOM SEG {path}: label values above 65535 cannot be segments.")
    return arr.astype(np.int64, copy=False)


def _check_reference(reference: Volume, path: Path) -> None:
    """Refuse references a SEG cannot point at correctly (NIfTI, resampled, incomplete metadata)."""
    if not reference.series_uid or not reference.source_paths:
        raise ExportError(
            "SEG export needs a DICOM source scan: this scan was not loaded from DICOM (e.g. a NIfTI "
            "file), so there are no source images to reference; export NIfTI instead."
        )
    if reference.meta.get("resampled_slices"):
        raise ExportError(
            f"Cannot write the DICOM SEG {path}: the source series had uneven slice spacing and was "
            "resampled on loading, so its slices no longer match the source images one to one; "
            "export NIfTI instead."
        )
    sops = reference.meta.get("SOPInstanceUIDs") or []
    if len(sops) != reference.shape[2]:
        raise ExportError(
            f"Cannot write the DICOM SEG {path}: the scan's {reference.shape[2]} slices do not map onto "
            f"its {len(sops)} source images."
        )
    if not reference.meta.get("FrameOfReferenceUID"):
        raise ExportError(
            f"Cannot write the DICOM SEG {path}: the source series has no FrameOfReferenceUID, so the "
            "segmentation could not be placed on it."
        )
    if overwrites_source(path, reference.source_paths):
        raise ExportError(f"Refusing to write the DICOM SEG to {path}: that would overwrite a source image.")


def _read_sources(reference: Volume) -> list:
    """Source datasets (headers only) in ``k`` order, checked against the reference's UIDs."""
    import pydicom

    datasets = []
    seen: dict[str, object] = {}
    for src in reference.source_paths:
        if src in seen:
            continue
        try:
            ds = pydicom.dcmread(src, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - any read failure means the same here
            raise ExportError(
                f"Cannot write the DICOM SEG: the source image {src} can no longer be read ({exc})."
            ) from exc
        for key in _TYPE2_COPIED:  # empty (type 2) values are valid; absent ones make highdicom fail
            if key not in ds:
                setattr(ds, key, "")
        seen[src] = ds
        datasets.append(ds)
    return datasets


def _property_type(name: str, brats: bool) -> Any:
    """SCT code of a segment: Necrosis 6574001 / Edema 79654002 for BraTS sub-regions, else Neoplasm 108369006."""
    from pydicom.sr.codedict import codes

    role = brats_role(name) if brats else None
    if role == 1 and "necro" in name.lower():
        return codes.SCT.Necrosis
    if role == 2:
        return codes.SCT.Edema
    return codes.SCT.Neoplasm


def _segment_table(
    values: list[int], spec: ModelSpec | None, label_names: Mapping[int, str] | None
) -> list[tuple[int, str, tuple[int, int, int]]]:
    """(label value, name, RGB) per segment."""
    out = []
    by_value = {lab.value: lab for lab in spec.labels} if spec is not None else {}
    for v in values:
        lab = by_value.get(v)
        if label_names is not None and v in label_names:
            name = label_names[v]
        elif lab is not None:
            name = lab.name
        else:
            name = f"Label {v}"
        rgb = tuple(int(c) for c in lab.color) if lab is not None else _DEFAULT_RGB
        out.append((v, _lo(name), rgb))  # type: ignore[arg-type]
    return out


def export_dicom_seg(
    labels: Volume | np.ndarray,
    reference: Volume,
    path: str | os.PathLike[str],
    *,
    spec: ModelSpec | None = None,
    label_names: Mapping[int, str] | None = None,
    series_description: str = "AI tumour segmentation",
    manually_edited: bool = False,
) -> Path:
    """Write ``labels`` (on ``reference``'s grid) as a DICOM Segmentation, atomically.

    Args:
        labels: integer label ``Volume`` (or array ``(I, J, K)``) on the grid of ``reference``.
        reference: the DICOM-loaded scan (``load_scan``) the labels were computed on.
        path: output file (conventionally ``<name>_seg.dcm``); never one of the source files.
        spec: the model's ``ModelSpec``: gives one segment per foreground label (name, colour) and
            the algorithm name/version. Without it, one segment per label value present.
        label_names: names overriding the spec's (or the default ``"Label <v>"``) per label value.
        series_description: SeriesDescription of the new SEG series.
        manually_edited: the mask was corrected by a user: algorithm type SEMIAUTOMATIC.

    Returns:
        The written path.

    Raises:
        ExportError: NIfTI-sourced or resampled reference, grid/shape/type mismatch, unreadable
            source images, overwriting a source file, or a write failure.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from seg_app import __version__

    path = Path(path)
    _check_reference(reference, path)
    arr = _label_array(labels, reference, path)
    if not path.parent.is_dir():
        raise ExportError(f"Cannot write the DICOM SEG {path}: the folder {path.parent} does not exist.")

    present = sorted(int(v) for v in np.unique(arr) if v != 0)
    if spec is not None:
        declared = [lab.value for lab in spec.foreground_labels]
        extra = [v for v in present if v not in declared]
        values = sorted(set(declared) | set(extra))
    elif label_names:
        values = sorted({int(v) for v in label_names if int(v) != 0} | set(present))
    else:
        values = present
    if not values:
        values = [1]  # an empty mask still gets one (empty) segment: "nothing found" is a result
    table = _segment_table(values, spec, label_names)

    # label value -> segment number (1..N); SEG frames are (rows, columns) = (J, I)
    lut = np.zeros(int(max(max(values), int(arr.max(initial=0)))) + 1, dtype=np.uint16)
    for n, (v, _, _) in enumerate(table, start=1):
        lut[v] = n
    seg_frames = np.ascontiguousarray(lut[arr].transpose(2, 1, 0))  # (K, rows, cols)

    sources = _read_sources(reference)
    multi = len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1) or 1) > 1
    if multi:
        n_frames = int(sources[0].NumberOfFrames)
        frame_numbers = reference.meta.get("FrameNumbers") or list(range(1, reference.shape[2] + 1))
        full = np.zeros((n_frames, *seg_frames.shape[1:]), dtype=seg_frames.dtype)
        for k, fn in enumerate(frame_numbers):
            full[int(fn) - 1] = seg_frames[k]
        seg_frames = full
    elif len(sources) != reference.shape[2]:
        raise ExportError(
            f"Cannot write the DICOM SEG {path}: the scan's {reference.shape[2]} slices come from "
            f"{len(sources)} files, which cannot be referenced one slice per image."
        )
    else:
        uids = [str(ds.SOPInstanceUID) for ds in sources]
        if uids != list(reference.meta["SOPInstanceUIDs"]):
            raise ExportError(
                f"Cannot write the DICOM SEG {path}: the source images changed on disk since the scan was loaded."
            )

    name = spec.name if spec is not None else "seg_app"
    version = str(spec.version) if spec is not None else __version__
    algorithm = hd.AlgorithmIdentificationSequence(
        name=_lo(name), version=_lo(version), family=codes.cid7162.ArtificialIntelligence
    )
    algo_type = (
        hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if manually_edited else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    )
    brats = bool(composite_regions({v: seg_name for v, seg_name, _rgb in table}))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=seg_name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,  # SCT 49755003
            segmented_property_type=_property_type(seg_name, brats),
            algorithm_type=algo_type,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"label {v}",
            display_color=hd.color.CIELabColor.from_rgb(*rgb),
        )
        for n, (v, seg_name, rgb) in enumerate(table, start=1)
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=seg_frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=int(reference.meta.get("SeriesNumber") or 0) + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="seg_app",
            manufacturer_model_name=_lo(name),
            software_versions=_lo(f"seg_app {__version__}"),
            device_serial_number="0",
            series_description=_lo(series_description),
            content_label="SEGMENTATION",
            content_description=_lo(f"{name} {version}" + (" (edited)" if manually_edited else "")),
            content_creator_name="seg_app^",
            omit_empty_frames=bool(seg_frames.any()),  # keep every frame only for an empty result
        )
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ExportError(f"Cannot write the DICOM SEG {path}: the source series cannot be referenced ({exc}).") from exc
    save_dataset_atomically(seg, path, "DICOM SEG")
    return path


def read_dicom_seg(path: str | os.PathLike[str], reference: Volume) -> Volume:
    """Read a DICOM SEG as a label ``Volume`` on ``reference``'s grid (uint8/uint16 labels).

    Segments written by :func:`export_dicom_seg` keep their label values (TrackingID
    ``"label <v>"``); other SEGs get label value = segment number. Overlapping segments resolve to
    the highest segment number.

    Raises:
        ScanLoadError: unreadable file, not a SEG, or not referencing ``reference``'s images.
    """
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure
        raise ScanLoadError(f"The file {path} is not a readable DICOM Segmentation ({exc}).") from exc
    numbers = list(seg.segment_numbers)
    values = []
    for n in numbers:
        tid = seg.get_segment_description(n).tracking_id
        m = _TRACKING_RE.match(tid or "")
        values.append(int(m.group(1)) if m else n)
    sops = list(reference.meta.get("SOPInstanceUIDs") or [])
    if len(sops) != reference.shape[2]:
        raise ScanLoadError(f"The DICOM SEG {path} cannot be placed: the reference scan is not a DICOM series.")
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    if referenced and not referenced <= {str(s) for s in sops}:
        raise ScanLoadError(f"The DICOM SEG {path} does not reference the images of this scan "
                            f"({len(referenced - {str(s) for s in sops})} referenced image(s) are not in it).")
    n_i, n_j, n_k = reference.shape
    dtype = np.uint8 if max(values, default=0) <= 255 else np.uint16
    out = np.zeros((n_i, n_j, n_k), dtype=dtype)
    try:
        if len(set(reference.source_paths)) == 1 and reference.meta.get("FrameNumbers"):
            src_uid = sops[0]
            fns = [int(f) for f in reference.meta["FrameNumbers"]]
            planes = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=src_uid, source_frame_numbers=fns, segment_numbers=numbers,
                combine_segments=False, dtype=np.float32,
            )
        else:
            planes = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=sops, segment_numbers=numbers, combine_segments=False, dtype=np.float32,
                assert_missing_frames_are_empty=True,  # sparse SEGs (empty frames omitted, as dcmqi writes them)
            )
    except (ValueError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
        raise ScanLoadError(f"The DICOM SEG {path} does not reference the images of this scan ({exc}).") from exc
    # planes: (K, rows, cols, segments) -> (I, J, K) per segment
    if planes.shape[1:3] != (n_j, n_i):
        raise ScanLoadError(f"The DICOM SEG {path} has {planes.shape[2]}x{planes.shape[1]} frames, not {n_i}x{n_j}.")
    for s, v in enumerate(values):
        mask = planes[..., s].transpose(2, 1, 0) >= 0.5  # binary 0/1; fractional thresholded at one half
        out[mask] = v
    return Volume(
        array=out[None],
        affine=reference.affine.copy(),
        modality="SEG",
        source_paths=(str(path),),
        series_uid=str(seg.SeriesInstanceUID),
        series_description=str(seg.get("SeriesDescription", "")),
        meta={"FrameOfReferenceUID": str(seg.get("FrameOfReferenceUID", ""))},
    )
