"""What the follow-up and compare windows compute, without Qt (napari style: the windows only show it).

:func:`run_followup` is the job of *Tools > Follow-up...*: it loads what was chosen (a scan file or DICOM
folder, a NIfTI/DICOM SEG mask, or segments the scan with the loaded model), registers the follow-up onto
the baseline (mutual information, or landmark pairs), runs :func:`seg_app.core.followup.assess_followup`
and resamples the follow-up image and mask onto the baseline grid, so that both time points can be shown
slice by slice on one grid. :func:`write_followup_report` writes the same ``followup.json`` /
``followup.csv`` / ``followup.png`` / ``followup_labels_on_baseline.nii.gz`` as ``seg-app followup``
(its document and CSV builders). :func:`change_rows` is the window's change table.

:func:`compare_masks` is the job of *Tools > Compare with mask...*: the open mask (A) against a mask
file (B) on the open scan, with the agreement map of :mod:`seg_app.core.compare`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg_app.core.errors import Cancelled
from seg_app.core.volume import Volume

__all__ = [
    "AGREEMENT_COLORS", "ChangeRow", "CompareOutcome", "FollowUpRequest", "FollowUpStudy", "MaskSource",
    "change_rows", "compare_masks", "percent_text", "run_followup", "write_followup_report",
]

#: Agreement overlay colours (value of :func:`seg_app.core.compare.agreement_map` -> RGB): both green,
#: only A (the open mask) magenta, only B (the other mask) cyan; chosen unlike the tumour colours.
AGREEMENT_COLORS: dict[int, tuple[int, int, int]] = {1: (40, 200, 60), 2: (230, 40, 230), 3: (0, 200, 255)}

Progress = Callable[[int, int], None]


@dataclass
class MaskSource:
    """Where one time point's scan and mask come from.

    Attributes:
        scan: a loaded scan (the one open in the app), or None to load ``scan_path``.
        scan_path: NIfTI file, DICOM file or folder (when ``scan`` is None).
        labels: a label map on the scan's grid (the app's open mask), or None.
        names: label value -> name of ``labels``.
        mask_path: NIfTI label map or DICOM SEG (when ``labels`` is None); None with ``segment`` True.
        segment: segment the scan with the model (``FollowUpRequest.checkpoint``).
        description: what the report says the mask is when ``labels`` is given.
    """

    scan: Volume | None = None
    scan_path: str = ""
    labels: np.ndarray | None = None
    names: dict[int, str] = field(default_factory=dict)
    mask_path: str | None = None
    segment: bool = False
    description: str = "mask open in the app"


@dataclass
class FollowUpRequest:
    """Inputs of :func:`run_followup`: both time points, the model (for segmenting) and optional landmarks.

    ``landmarks`` is ``(baseline points, follow-up points)`` in RAS mm (>= 3 pairs) or None for the
    automatic registration; ``landmarks_path`` a CSV read in the job instead (``seg-app followup --landmarks``).
    ``segmenter_factory(checkpoint, device)`` builds what segments a scan without a mask (default:
    :class:`seg_app.core.inference.Segmenter`, as the main window's *Segment*; tests pass a stand-in).
    """

    baseline: MaskSource
    followup: MaskSource
    checkpoint: Any = None
    model_path: str = ""
    device: str = "auto"
    landmarks: tuple[np.ndarray, np.ndarray] | None = None
    landmarks_path: str | None = None
    rano_region: str = "lesion"
    segmenter_factory: Callable[[Any, str], Any] | None = None


@dataclass
class FollowUpStudy:
    """Result of :func:`run_followup`: the scans, masks, the assessment and the display arrays.

    ``followup_image_on_baseline`` / ``followup_labels_on_baseline`` are the follow-up scan (first channel,
    trilinear) and mask (nearest neighbour) resampled onto the baseline grid through the registration.
    """

    request: FollowUpRequest
    baseline: Volume
    followup: Volume
    baseline_info: dict[str, Any]
    followup_info: dict[str, Any]
    result: Any  # FollowUpResult
    followup_image_on_baseline: np.ndarray
    followup_labels_on_baseline: np.ndarray
    warnings: list[str]

    @property
    def identifier_warnings(self) -> list[str]:
        from seg_app.core.followup import identifier_warnings

        return identifier_warnings(self.baseline, self.followup)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("The follow-up was cancelled.")


def _time_point(src: MaskSource, request: FollowUpRequest, segmenter_box: dict[str, Any], progress: Progress | None,
                cancel: threading.Event | None, what: str) -> tuple[Volume, dict[str, Any]]:
    """Scan and mask of one time point: ``info`` as ``seg-app followup`` builds it."""
    from seg_app.core.io import load_scan
    from seg_app.core.segmentation_io import load_segmentation

    scan = src.scan if src.scan is not None else load_scan(src.scan_path)
    _check(cancel)
    if src.labels is not None:
        lab = np.asarray(src.labels)
        if lab.shape != scan.shape:
            raise ValueError(f"The {what} mask has shape {lab.shape} but its scan has shape {scan.shape}.")
        return scan, {"labels": lab, "names": dict(src.names), "warnings": [], "mask": src.description, "result": None}
    if src.mask_path:
        seg = load_segmentation(src.mask_path, scan)
        return scan, {"labels": seg.labels, "names": seg.names, "warnings": list(seg.warnings), "mask": str(src.mask_path),
                      "result": None}
    if not src.segment:
        raise ValueError(f"Choose a mask for the {what} scan, or let the model segment it.")
    if request.checkpoint is None:
        raise ValueError(f"No model is loaded to segment the {what} scan: load a mask file or a model first.")
    if "segmenter" not in segmenter_box:  # one model for both time points
        factory = request.segmenter_factory
        if factory is None:
            from seg_app.core.nnunet_model import make_segmenter

            def factory(checkpoint: Any, device: str) -> Any:
                return make_segmenter(checkpoint, device=device)  # Segmenter, or NnUNetSegmenter for nnU-Net
        segmenter_box["segmenter"] = factory(request.checkpoint, request.device)
    result = segmenter_box["segmenter"].segment(scan, progress=progress, cancel=cancel, return_probabilities=False)
    names = {lab.value: lab.name for lab in result.spec.labels if lab.value}
    return scan, {"labels": result.labels.array[0], "names": names, "warnings": list(result.warnings), "mask": None,
                  "result": result}


def run_followup(request: FollowUpRequest, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> FollowUpStudy:
    """Load, segment (when asked), register and assess both time points (see the module docstring).

    Raises ``Cancelled`` between stages once ``cancel`` is set; loading, mask and registration errors
    propagate (``SegAppError``, ``ValueError``, ``OSError``) for the window to show.
    """
    from seg_app.core.followup import (
        assess_followup, landmark_registration, read_landmarks_csv, register_rigid, resample_onto_baseline,
    )

    landmarks = request.landmarks
    if landmarks is None and request.landmarks_path:
        landmarks = read_landmarks_csv(request.landmarks_path)  # a bad file fails before the work
    box: dict[str, Any] = {}
    baseline, b_info = _time_point(request.baseline, request, box, progress, cancel, "baseline")
    _check(cancel)
    followup, f_info = _time_point(request.followup, request, box, progress, cancel, "follow-up")
    _check(cancel)
    if landmarks is not None:
        registration = landmark_registration(baseline, followup, *landmarks)
    else:
        registration = register_rigid(baseline, followup)
    _check(cancel)
    result = assess_followup(baseline, b_info["labels"], followup, f_info["labels"], registration,
                             baseline_names=b_info["names"], followup_names=f_info["names"],
                             rano_region=request.rano_region)
    _check(cancel)
    image = resample_onto_baseline(np.asarray(followup.array[0], np.float32), followup.affine, baseline,
                                   registration.matrix, order=1)
    labels = resample_onto_baseline(np.asarray(f_info["labels"]).astype(np.uint8), followup.affine, baseline,
                                    registration.matrix, order=0)
    warnings = list(dict.fromkeys([*(f"baseline: {w}" for w in baseline.warnings),
                                   *(f"follow-up: {w}" for w in followup.warnings),
                                   *(f"baseline mask: {w}" for w in b_info["warnings"]),
                                   *(f"follow-up mask: {w}" for w in f_info["warnings"]), *result.warnings]))
    return FollowUpStudy(request, baseline, followup, b_info, f_info, result, image.astype(np.float32),
                         labels.astype(np.uint8), warnings)


# ---- the change table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ChangeRow:
    """One row of the change table (a lesion track, or the total)."""

    track: str
    status: str
    target: bool
    baseline_ml: float
    followup_ml: float
    volume_change_percent: float | None
    baseline_long_mm: float
    followup_long_mm: float
    long_change_percent: float | None
    baseline_product_mm2: float
    followup_product_mm2: float
    product_change_percent: float | None
    track_id: int | None = None


def change_rows(result: Any) -> list[ChangeRow]:
    """Per track, then a ``total`` row: volumes, RECIST long axes, bidimensional products and % changes."""
    rows = []
    for t in result.tracks:
        ch = t.as_dict()["change"]
        rows.append(ChangeRow(str(t.track_id), t.status, t.target, t.baseline.volume_ml, t.followup.volume_ml,
                              ch["volume_percent"], t.baseline.long_axis_mm, t.followup.long_axis_mm,
                              ch["long_axis_percent"], t.baseline.product_mm2, t.followup.product_mm2,
                              ch["bidimensional_product_percent"], t.track_id))
    tot = result.totals
    b, f, ch = tot["baseline"], tot["followup"], tot["change"]
    rows.append(ChangeRow("total", f"{tot['new_lesions']} new, {tot['disappeared_lesions']} disappeared", False,
                          b["volume_ml"], f["volume_ml"], ch["volume_percent"], b["long_axis_mm"], f["long_axis_mm"],
                          ch["long_axis_percent"], b["bidimensional_product_mm2"], f["bidimensional_product_mm2"],
                          ch["bidimensional_product_percent"]))
    return rows


# ---- the report (the same files as ``seg-app followup``) ---------------------------------------------
def write_followup_report(study: FollowUpStudy, out: str | Path, anonymise: bool = False) -> list[str]:
    """Write ``followup.json``, ``.csv``, ``.png`` (when matplotlib is there), the follow-up map and the
    model's masks (time points it segmented) into ``out``.

    The files are those of ``seg-app followup`` (:mod:`seg_app.core.followup_export`); every file is written
    atomically and no input file is ever overwritten. ``anonymise`` (*View > Anonymise*) leaves the
    source paths, names and UIDs out, as the main window's exports do. Returns the names written.
    """
    from seg_app import DISCLAIMER
    from seg_app.core.followup_export import followup_document, write_followup_files
    from seg_app.core.patient import patient_info

    req, result = study.request, study.result
    baseline, followup = study.baseline, study.followup
    b_src = req.baseline.scan_path or (baseline.source_paths[0] if baseline.source_paths else "")
    f_src = req.followup.scan_path or (followup.source_paths[0] if followup.source_paths else "")
    doc = followup_document(result, baseline, followup, study.baseline_info, study.followup_info, b_src, f_src,
                            req.model_path, study.warnings)
    titles = (baseline.name, followup.name)
    if anonymise:  # paths, names and UIDs can identify the patient too
        for key in ("baseline", "followup"):
            doc[key]["source"].update(path="", name="anonymised", series_uid="")
            doc[key]["study_date"] = ""
            doc[key]["mask"] = "anonymised" if doc[key]["mask"] != "segmented by the model" else doc[key]["mask"]
        titles = ("baseline", "follow-up")
    png = None
    try:
        from seg_app.core.followup_report import render_followup_report

        dates = ("", "") if anonymise else (patient_info(baseline, read_files=False).study_date,
                                            patient_info(followup, read_files=False).study_date)
        png = render_followup_report(result, baseline, followup, titles=titles, dates=dates,
                                     disclaimer=DISCLAIMER)
    except ImportError:  # the standalone bundle leaves matplotlib out (size)
        png = None
    masks = [(name, info["labels"], scan) for name, info, scan in (("baseline_labels", study.baseline_info, baseline),
                                                                   ("followup_labels", study.followup_info, followup))
             if info["result"] is not None]  # the model's masks, as seg-app followup writes them
    sources = [*baseline.source_paths, *followup.source_paths,
               *(p for p in (req.baseline.mask_path, req.followup.mask_path, req.landmarks_path) if p)]
    return write_followup_files(out, doc, result, baseline, png, masks, sources)


# ---- compare two masks of the open scan -----------------------------------------------------------
@dataclass
class CompareOutcome:
    """The open mask (A) against a mask file (B): metrics rows, lesion rows, agreement map, warnings."""

    source: str
    comparison: Any  # seg_app.core.compare.Comparison
    agreement: np.ndarray  # (I, J, K) uint8 on the scan's grid: 1 both, 2 only A, 3 only B
    labels_b: np.ndarray
    warnings: tuple[str, ...]


def compare_masks(scan: Volume, labels_a: np.ndarray, names_a: Mapping[int, str], path_b: str) -> CompareOutcome:
    """Load ``path_b`` (NIfTI label map or DICOM SEG) onto ``scan`` and compare it with ``labels_a``.

    Names as ``seg-app compare``: B's names, overridden by A's real (not ``"label <v>"``) names.
    """
    from seg_app.core.compare import agreement_map, compare_label_maps
    from seg_app.core.segmentation_io import load_segmentation

    seg_b = load_segmentation(path_b, scan)
    a = np.asarray(labels_a)
    names = {**dict(seg_b.names), **{int(v): n for v, n in names_a.items() if not str(n).startswith("label ")}}
    comparison = compare_label_maps(a, seg_b.labels, scan.spacing, scan.voxel_volume_ml, names)
    return CompareOutcome(str(path_b), comparison, agreement_map(a, seg_b.labels), np.asarray(seg_b.labels),
                          tuple(seg_b.warnings))


def percent_text(v: float | None) -> str:
    """``"+12.3 %"``, or ``"n/a"`` without a baseline value."""
    return "n/a" if v is None else f"{v:+.1f} %"
