"""Lesion measurements as a DICOM Structured Report (TID 1500 Measurement Report) with highdicom.

``export_dicom_sr(lesions, reference, seg_path, path)`` writes a Comprehensive 3D SR whose content is
one TID 1500 Imaging Measurement Report. It references the DICOM SEG written for the same label map
(:func:`seg_app.core.dicom_seg.export_dicom_seg`) and, through it, the source series:

* a lesion of one label (no tumour sub-regions) is one **TID 1411 volumetric ROI group** whose ROI is
  the SEG segment of its label with the source images of the slices the lesion spans; its
  measurements are Volume (mL), Diameter with derivation Maximum (the 3D Feret diameter, mm) and the
  RECIST 1.1 Long axis / Short axis (mm);
* a whole-tumour lesion of a model with BraTS-style sub-regions (:mod:`seg_app.core.regions`) is one
  **TID 1501 group** "Lesion N (whole tumour)" with the same four measurements, plus one TID 1411
  group per sub-region present in it ("Lesion N: oedema"), each referencing that sub-region's SEG
  segment with the sub-region's volume inside the lesion.

Every group carries a tracking identifier (text ``Lesion N ...`` and a new UID), finding category
"Morphologically abnormal structure", the segment's property type as finding type and the algorithm
(model name and version). The SR copies patient and study from the source, so it lands in the
scan's study on a PACS. Validate with ``dciodvfy file_sr.dcm``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seg_app.core.errors import ExportError
from seg_app.core.files import overwrites_source, save_dataset_atomically
from seg_app.core.measure import LesionMeasurement
from seg_app.core.volume import Volume

if TYPE_CHECKING:
    from seg_app.core.spec import ModelSpec

__all__ = ["export_dicom_sr", "read_dicom_sr_measurements"]

_TRACKING_RE = re.compile(r"^label (-?\d+)$")
_RECIST = ("126080", "DCM", "RECIST 1.1")
_ML = ("ml", "UCUM", "milliliter")
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _lo(text: str, n: int = 64) -> str:
    text = re.sub(r"[\\\x00-\x1f]", " ", str(text)).strip()
    return text[:n] or "unnamed"


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))


def _segments(seg) -> dict[int, tuple[int, Any]]:
    """label value -> (segment number, segmented property type) from the SEG's TrackingIDs."""
    out = {}
    for item in seg.SegmentSequence:
        m = _TRACKING_RE.match(str(item.get("TrackingID", "")))
        value = int(m.group(1)) if m else int(item.SegmentNumber)
        out[value] = (int(item.SegmentNumber), item.SegmentedPropertyTypeCodeSequence[0])
    return out


def _frame_map(seg) -> dict[tuple[int, str, int], int]:
    """(segment number, source SOPInstanceUID, source frame) -> SEG frame number (1-based). The segment
    number is in the per-frame groups, or in the shared groups when the SEG has a single segment."""
    shared = seg.get("SharedFunctionalGroupsSequence", [None])[0]
    out = {}
    for n, fg in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        ident = fg.get("SegmentIdentificationSequence") or (shared.get("SegmentIdentificationSequence") if shared else None)
        try:
            segnum = int(ident[0].ReferencedSegmentNumber)
            src = fg.DerivationImageSequence[0].SourceImageSequence[0]
        except (AttributeError, IndexError, TypeError):
            continue
        frame = int(src.ReferencedFrameNumber) if "ReferencedFrameNumber" in src else 1
        out[(segnum, str(src.ReferencedSOPInstanceUID), frame)] = n
    return out


def _frames_for(reference: Volume, frame_map: Mapping, segnum: int, k_range: range) -> tuple[list[int], list[str]]:
    """SEG frame numbers of segment ``segnum`` on the slices ``k_range`` and the source SOPInstanceUIDs."""
    sops = list(reference.meta.get("SOPInstanceUIDs") or [])
    fns = list(reference.meta.get("FrameNumbers") or [])
    frames, sources = [], []
    for k in k_range:
        if 0 <= k < len(sops):
            key = (segnum, str(sops[k]), int(fns[k]) if k < len(fns) else 1)
            if key in frame_map:
                frames.append(frame_map[key])
                if str(sops[k]) not in sources:
                    sources.append(str(sops[k]))
    return sorted(set(frames)), sources


def _measurements(les: LesionMeasurement, algorithm) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    out = [hd.sr.Measurement(name=codes.SCT.Volume, value=float(les.volume_ml), unit=hd.sr.CodedConcept(*_ML),
                             algorithm_id=algorithm)]
    if _finite(les.max_diameter_mm):
        out.append(hd.sr.Measurement(name=codes.SCT.Diameter, value=float(les.max_diameter_mm), unit=codes.UCUM.Millimeter,
                                     derivation=codes.SCT.Maximum, algorithm_id=algorithm))
    recist = hd.sr.CodedConcept(*_RECIST)
    if _finite(les.long_axis_mm):
        out.append(hd.sr.Measurement(name=codes.SCT.LongAxis, value=float(les.long_axis_mm), unit=codes.UCUM.Millimeter,
                                     method=recist, algorithm_id=algorithm))
    if _finite(les.short_axis_mm):
        out.append(hd.sr.Measurement(name=codes.SCT.ShortAxis, value=float(les.short_axis_mm), unit=codes.UCUM.Millimeter,
                                     method=recist, algorithm_id=algorithm))
    return out


def export_dicom_sr(
    lesions: Sequence[LesionMeasurement],
    reference: Volume,
    seg_path: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    spec: ModelSpec | None = None,
    label_names: Mapping[int, str] | None = None,
    series_description: str = "AI tumour measurements",
) -> Path:
    """Write the lesions' measurements as a TID 1500 Comprehensive 3D SR, atomically.

    Args:
        lesions: from :func:`~seg_app.core.measure.measure_lesions` on the label map of the SEG.
        reference: the DICOM-loaded scan (source series) the labels were computed on.
        seg_path: the DICOM SEG written by ``export_dicom_seg`` for the same label map.
        path: output file (conventionally ``<name>_sr.dcm``).
        spec: the model's spec (algorithm name and version; label names).
        label_names: overrides for the names of label values (sub-region group names).

    Raises:
        ExportError: NIfTI-sourced reference, unreadable SEG or sources, a SEG that does not
            reference this scan, or a write failure.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from seg_app import __version__

    path = Path(path)
    if not reference.series_uid or not reference.source_paths or not reference.meta.get("SOPInstanceUIDs"):
        raise ExportError(
            "SR export needs a DICOM source scan: this scan was not loaded from DICOM, so there are no source "
            "images to reference; export JSON/CSV measurements instead."
        )
    if overwrites_source(path, reference.source_paths):
        raise ExportError(f"Refusing to write the DICOM SR to {path}: that would overwrite a source image.")
    try:
        seg = pydicom.dcmread(seg_path)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"Cannot write the DICOM SR {path}: the SEG {seg_path} cannot be read ({exc}).") from exc
    if str(seg.get("Modality", "")) != "SEG":
        raise ExportError(f"Cannot write the DICOM SR {path}: {seg_path} is not a DICOM SEG.")
    sources, seen = [], set()
    for src in reference.source_paths:
        if src in seen:
            continue
        seen.add(src)
        try:
            ds = pydicom.dcmread(src, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"Cannot write the DICOM SR: the source image {src} can no longer be read ({exc}).") from exc
        for key in _TYPE2:
            if key not in ds:
                setattr(ds, key, "")
        sources.append(ds)
    if str(seg.StudyInstanceUID) != str(sources[0].StudyInstanceUID):
        raise ExportError(f"Cannot write the DICOM SR {path}: the SEG {seg_path} belongs to another study.")

    sop_class = {str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in sources}
    segments = _segments(seg)
    frame_map = _frame_map(seg)
    names = {lab.value: lab.name for lab in spec.labels} if spec is not None else {}
    names.update(label_names or {})
    model = spec.name if spec is not None else "seg_app"
    version = str(spec.version) if spec is not None else __version__
    algorithm = hd.sr.AlgorithmIdentification(name=_lo(model), version=_lo(version))
    category = codes.SCT.MorphologicallyAbnormalStructure

    def volumetric(identifier: str, label: int, k_range: range, measurements: list):
        segnum, prop = segments[label]
        frames, frame_sources = _frames_for(reference, frame_map, segnum, k_range)
        # the segment (not frame numbers too: DICOM allows one or the other) and the source images of
        # the lesion's slices; without any, the source series
        if frames:
            ref = hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=segnum,
                source_images=[
                    hd.sr.SourceImageForSegmentation(sop_class[u], u) for u in frame_sources
                ],
            )
        else:
            ref = hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=segnum,
                source_series=hd.sr.SourceSeriesForSegmentation(reference.series_uid),
            )
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=_lo(identifier)),
            referenced_segment=ref, finding_type=hd.sr.CodedConcept.from_dataset(prop),
            finding_category=category, algorithm_id=algorithm, measurements=measurements,
        )

    groups = []
    for n, les in enumerate(lesions, start=1):
        k_range = range(int(les.bbox_min_voxel[2]), int(les.bbox_max_voxel[2]) + 1)
        if les.region_volumes_ml is None:
            if les.label not in segments:
                raise ExportError(f"Cannot write the DICOM SR {path}: the SEG has no segment for label {les.label}.")
            groups.append(volumetric(f"Lesion {n} ({les.label_name})", les.label, k_range, _measurements(les, algorithm)))
            continue
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=_lo(f"Lesion {n} (whole tumour)")),
            finding_type=codes.SCT.Neoplasm, finding_category=category, algorithm_id=algorithm,
            measurements=_measurements(les, algorithm),
        ))
        by_name = {v: k for k, v in names.items()}
        for region, ml in les.region_volumes_ml.items():
            label = by_name.get(region)
            if label is None or label not in segments or not ml:
                continue  # composites (WT/TC/ET) and absent sub-regions
            vol_ml = hd.sr.Measurement(name=codes.SCT.Volume, value=float(ml), unit=hd.sr.CodedConcept(*_ML),
                                       algorithm_id=algorithm)
            groups.append(volumetric(f"Lesion {n}: {region}", label, k_range, [vol_ml]))
    if not groups:  # "nothing found" is a result too: one group stating a zero volume of the first segment
        first = min(segments)
        groups.append(volumetric("No lesion", first, range(0), [
            hd.sr.Measurement(name=codes.SCT.Volume, value=0.0, unit=hd.sr.CodedConcept(*_ML), algorithm_id=algorithm)
        ]))

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="seg_app", manufacturer_name="seg_app", model_name=_lo(f"{model} {version}"),
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
    )
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*sources, seg],
            content=report[0],
            series_instance_uid=hd.UID(),
            series_number=int(reference.meta.get("SeriesNumber") or 0) + 2000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="seg_app",
            series_description=_lo(series_description),
            is_complete=True,
            is_final=False,
            is_verified=False,
        )
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ExportError(f"Cannot write the DICOM SR {path}: {exc}.") from exc
    save_dataset_atomically(sr, path, "DICOM SR")
    return path


def read_dicom_sr_measurements(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The measurement groups of a TID 1500 SR (for tests and for reading results back from a PACS).

    Returns one dict per group: ``tracking_id`` (text), ``segment`` (SEG SOPInstanceUID, segment
    number) or None for a group without ROI, and ``measurements``
    ``{name: (value, unit)}`` where the name is prefixed by the derivation ("Maximum Diameter").
    """
    import highdicom as hd

    try:
        sr = hd.sr.srread(path)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"The file {path} is not a readable DICOM SR ({exc}).") from exc
    report = sr.content
    groups = list(report.get_volumetric_roi_measurement_groups()) + list(report.get_image_measurement_groups())
    out = []
    for group in groups:
        seg_ref = group.referenced_segment if hasattr(group, "referenced_segment") else None
        measurements = {}
        for m in group.get_measurements():
            key = m.name.meaning
            if m.derivation is not None:
                key = f"{m.derivation.meaning} {key}"
            measurements[key] = (float(m.value), str(m.unit.value))
        out.append({
            "tracking_id": group.tracking_identifier,
            "segment": None if seg_ref is None else (
                str(seg_ref.referenced_sop_instance_uid), int(seg_ref.referenced_segment_numbers[0]),
            ),
            "measurements": measurements,
        })
    return out
