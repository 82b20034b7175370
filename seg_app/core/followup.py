"""Follow-up of one patient: a baseline and a follow-up scan compared lesion by lesion (Qt-free, no torch).

Stages, each callable on its own (``seg-app followup`` and the app run them in this order):

1. :func:`identifier_warnings`: the two scans should be of the same patient (DICOM identifiers compared;
   NIfTI files have none, which is said too) and the follow-up should not predate the baseline.
2. :func:`register_rigid`: rigid registration of the follow-up image (moving) onto the baseline image
   (fixed) with SimpleITK (Mattes mutual information; :mod:`seg_app.core.registration`, whose names are
   re-exported here). When the automatic result is off, :func:`landmark_registration` replaces it with
   the rigid transform that best maps three or more baseline points onto the same anatomical points of
   the follow-up (:func:`rigid_from_landmarks`, Kabsch). Either way the result is a
   :class:`Registration`: a 4x4 matrix taking **baseline RAS mm to follow-up RAS mm** (fixed -> moving,
   the direction used to resample the follow-up onto the baseline grid) and its quality numbers.
3. :func:`assess_followup`: lesions of each time point are measured on their own grid by
   :func:`seg_app.core.measure.measure_lesions` (a lesion is a connected component of the whole tumour
   for BraTS-like labels, else of any label), matched across time -- first by overlap after resampling
   the follow-up lesions onto the baseline grid (nearest neighbour), then the remaining ones by centroid
   distance -- and summed per *track* (one baseline lesion and what it became: also splits and merges),
   per time point and in total. Two response categories are computed from the result:
   :func:`recist_response` (RECIST 1.1 on the sum of long axes of target lesions) and
   :func:`rano_volumetric_response` (the volumetric thresholds of RANO 2.0). Both are **computed
   suggestions, not a diagnosis**: the criteria also need clinical information, confirmation scans and
   a reader's judgement that no program has.

Sources of the thresholds (see also ``docs/FOLLOWUP.md``, which says what was checked against what):

* RECIST 1.1: Eisenhauer EA et al., "New response evaluation criteria in solid tumours: revised RECIST
  guideline (version 1.1)", Eur J Cancer 2009;45(2):228-247, doi:10.1016/j.ejca.2008.10.026. PR: sum of
  diameters down >= 30 % from the baseline sum; PD: up >= 20 % *and* >= 5 mm from the smallest sum on
  study (the nadir, which may be the baseline); measurable: >= 10 mm (>= 2 slice thicknesses on thicker
  slices); at most 5 targets, 2 per organ.
* RANO 2.0: Wen PY et al., "RANO 2.0: Update to the Response Assessment in Neuro-Oncology Criteria for
  High- and Low-Grade Gliomas in Adults", J Clin Oncol 2023;41(33):5187-5199, doi:10.1200/JCO.23.01059.
  Volumetric (optional in RANO 2.0) PR >= 65 % decrease, PD >= 40 % increase of the volume: the volume
  equivalents, for a sphere, of -50 % / +25 % of the bidimensional product ((1 - 0.5)^1.5 = 0.35,
  1.25^1.5 = 1.40), from Ellingson BM et al., "Modified Criteria for Radiographic Response Assessment in
  Glioblastoma Clinical Trials", Neurotherapeutics 2017;14(2):307-320, doi:10.1007/s13311-016-0507-6.
  Measurable: both perpendicular diameters >= 10 mm, seen on >= 2 axial slices (the RANO definition of
  Wen PY et al., J Clin Oncol 2010;28(11):1963-1972).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from seg_app.core.measure import LesionMeasurement, lesion_components, measure_lesions
from seg_app.core.regions import composite_regions
# the registration lives in its own module; its names stay importable from here
from seg_app.core.registration import (
    Registration, RegistrationError, identity_registration, landmark_registration, read_landmarks_csv,
    register_rigid, resample_onto, rigid_from_landmarks, transform_points,
)
from seg_app.core.shape import axial_axis
from seg_app.core.volume import Volume

__all__ = [
    "DISCLAIMER_SUGGESTION", "FollowUpResult", "LesionTrack", "RANO_PD_PERCENT", "RANO_PR_PERCENT",
    "RECIST_PD_ABSOLUTE_MM", "RECIST_PD_PERCENT", "RECIST_PR_PERCENT", "Registration", "RegistrationError",
    "Response", "Size", "TimePoint", "assess_followup", "identifier_warnings", "identity_registration",
    "landmark_registration", "match_lesions", "measure_time_point", "rano_volumetric_response",
    "read_landmarks_csv", "recist_response", "register_rigid", "resample_onto_baseline", "rigid_from_landmarks",
    "select_targets",
]

#: The label every response category carries.
DISCLAIMER_SUGGESTION = "computed suggestion, not a diagnosis"

# RECIST 1.1 (Eisenhauer et al., Eur J Cancer 2009;45(2):228-247), sum of the long axes of the target lesions:
# response vs the baseline sum, progression vs the smallest sum on study (the nadir; with two time points
# the baseline is both)
RECIST_PR_PERCENT = -30.0  #: partial response: at least a 30 % decrease from baseline
RECIST_PD_PERCENT = 20.0  #: progression: at least a 20 % increase from the nadir ...
RECIST_PD_ABSOLUTE_MM = 5.0  #: ... and at least 5 mm in absolute terms
RECIST_MEASURABLE_MM = 10.0  #: measurable lesion: long axis >= 10 mm (and >= 2 slice thicknesses)
RECIST_MAX_TARGETS = 5  #: at most five target lesions (RECIST's "two per organ" is not applied: no organ labels)
# RANO 2.0 volumetric (Wen et al., J Clin Oncol 2023;41(33):5187-5199; thresholds from Ellingson et al.,
# Neurotherapeutics 2017;14(2):307-320: the sphere-volume equivalents of -50 % / +25 % of the bidimensional
# product), total lesion volume; response vs baseline, progression vs the nadir (= baseline with two time points)
RANO_PR_PERCENT = -65.0  #: partial response: at least a 65 % decrease in volume
RANO_PD_PERCENT = 40.0  #: progression: at least a 40 % increase in volume
RANO_MEASURABLE_MM = 10.0  #: measurable: both perpendicular diameters >= 10 mm ...
RANO_MEASURABLE_SLICES = 2  #: ... and seen on at least two axial slices (RANO, Wen et al. 2010)
#: A lesion of the follow-up without a baseline counterpart counts as an (unequivocal) new lesion from
#: this long axis on; smaller ones are listed as new but equivocal and do not make the category PD.
NEW_LESION_MIN_MM = 5.0
#: Largest centroid distance (mm, after registration) at which two lesions that do not overlap are matched.
MATCH_DISTANCE_MM = 10.0
#: Overlap counts as a match when it is at least this fraction of the smaller of the two lesions.
MATCH_MIN_OVERLAP_FRACTION = 0.1

# ---- patient identifiers ----------------------------------------------------------------------
def identifier_warnings(baseline: Volume, followup: Volume) -> list[str]:
    """Warnings when the two scans may not be of the same patient, or are in the wrong order.

    Compares patient ID, name, birth date and sex (DICOM, :func:`seg_app.core.patient.patient_info`);
    the values themselves are never put in a message (they identify the patient).
    """
    from seg_app.core.patient import patient_info

    a, b = patient_info(baseline, read_files=False), patient_info(followup, read_files=False)
    out: list[str] = []
    if not baseline.series_uid or not followup.series_uid:
        which = [n for n, v in (("baseline", baseline), ("follow-up", followup)) if not v.series_uid]
        out.append(f"The {' and '.join(which)} scan{'s have' if len(which) > 1 else ' has'} no patient identifiers "
                   "(not DICOM): check yourself that both scans are of the same patient.")
    else:
        differ = [label for label, x, y in (("patient ID", a.patient_id, b.patient_id),
                                            ("patient name", a.patient_name, b.patient_name),
                                            ("birth date", a.birth_date, b.birth_date), ("sex", a.sex, b.sex))
                  if x and y and x.strip().upper() != y.strip().upper()]
        if differ:
            out.append(f"The two scans have different {', '.join(differ)}: they may not be of the same patient.")
        elif not (a.patient_id and b.patient_id):
            out.append("A scan has no patient ID: check yourself that both scans are of the same patient.")
    if a.study_date and b.study_date and b.study_date < a.study_date:
        out.append("The follow-up study date is before the baseline's: are the two scans swapped?")
    return out


# ---- the follow-up on the baseline grid ---------------------------------------------------------------
def resample_onto_baseline(array: np.ndarray, affine: np.ndarray, baseline: Volume, transform: np.ndarray,
                           order: int = 0, cval: float = 0.0) -> np.ndarray:
    """An ``(I, J, K)`` follow-up array (voxel->RAS ``affine``) on the baseline grid.

    The follow-up's name for :func:`seg_app.core.registration.resample_onto` (baseline = fixed scan).

    Args:
        transform: 4x4 baseline RAS mm -> follow-up RAS mm (:attr:`Registration.matrix`).
        order: 0 nearest neighbour (label maps), 1 trilinear (images).
        cval: value outside the follow-up's field of view.
    """
    return resample_onto(baseline, array, affine, transform, order=order, cval=cval)


# ---- lesions at one time point -----------------------------------------------------------------
@dataclass
class TimePoint:
    """The lesions of one scan: measurements and the map of lesion numbers on the scan's grid.

    ``lesion_map`` holds ``n`` at the voxels of ``lesions[n - 1]`` (0 elsewhere). ``regions`` is the
    BraTS composite mapping (WT/TC/ET) when the labels allow it.
    """

    lesions: list[LesionMeasurement]
    lesion_map: np.ndarray
    regions: dict[str, tuple[int, ...]]
    voxel_ml: float


def measure_time_point(labels: np.ndarray, scan: Volume, label_names: Mapping[int, str] | None = None) -> TimePoint:
    """Measure the lesions of a label map ``(I, J, K)`` on ``scan``'s grid (the app's lesion definition)."""
    lab = np.asarray(labels)
    if lab.shape != scan.shape:
        raise ValueError(f"The label map has shape {lab.shape} but the scan has shape {scan.shape}.")
    names = {int(v): str(n) for v, n in (label_names or {}).items()}
    for v in np.unique(lab):
        if v:
            names.setdefault(int(v), f"label {int(v)}")
    regions = composite_regions(names)
    if regions:
        mask = np.isin(lab, regions["WT"])
        lesions = measure_lesions(scan.with_array(lab[None]), image=scan, label_names=names, regions=regions)
    else:
        mask = lab > 0
        lesions = measure_lesions(scan.with_array(mask.astype(np.uint8)[None]), image=scan, label_names={1: "lesion"})
    cc, n = lesion_components(mask.astype(np.uint8))
    lut = np.zeros(n + 1, np.int32)
    if n:
        objects = ndimage.find_objects(cc)
        counts = np.bincount(cc.ravel(), minlength=n + 1)
        key = {(les.bbox_min_voxel, les.bbox_max_voxel, les.voxel_count): i + 1 for i, les in enumerate(lesions)}
        for cid, sl in enumerate(objects, start=1):
            if sl is None:
                continue
            k = (tuple(s.start for s in sl), tuple(s.stop - 1 for s in sl), int(counts[cid]))
            lut[cid] = key.get(k, 0)
    return TimePoint(lesions, lut[cc], regions, scan.voxel_volume_ml)


# ---- matching -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Size:
    """Sizes of the lesions of a track at one time point (sums over its lesions; 0 when none)."""

    volume_ml: float = 0.0
    long_axis_mm: float = 0.0  # sum of RECIST long axes (a split lesion: its fragments' long axes added)
    short_axis_mm: float = 0.0
    product_mm2: float = 0.0  # sum of long x perpendicular short axis (RANO bidimensional product)
    region_volumes_ml: dict[str, float] | None = None

    @classmethod
    def of(cls, lesions: Sequence[LesionMeasurement]) -> Size:
        regions = [les.region_volumes_ml for les in lesions if les.region_volumes_ml]
        return cls(
            volume_ml=float(sum(les.volume_ml for les in lesions)),
            long_axis_mm=float(sum(les.long_axis_mm for les in lesions)),
            short_axis_mm=float(sum(les.short_axis_mm for les in lesions)),
            product_mm2=float(sum(les.long_axis_mm * les.short_axis_mm for les in lesions)),
            region_volumes_ml={k: float(sum(r.get(k, 0.0) for r in regions)) for k in regions[0]} if regions else None,
        )

    def as_dict(self) -> dict[str, Any]:
        d = {"volume_ml": self.volume_ml, "long_axis_mm": self.long_axis_mm, "short_axis_mm": self.short_axis_mm,
             "bidimensional_product_mm2": self.product_mm2}
        if self.region_volumes_ml is not None:
            d["region_volumes_ml"] = dict(self.region_volumes_ml)
        return d


def _percent(before: float, after: float) -> float | None:
    return None if before <= 0 else 100.0 * (after - before) / before


def _change(a: Size, b: Size) -> dict[str, Any]:
    return {"volume_ml": b.volume_ml - a.volume_ml, "volume_percent": _percent(a.volume_ml, b.volume_ml),
            "long_axis_mm": b.long_axis_mm - a.long_axis_mm, "long_axis_percent": _percent(a.long_axis_mm, b.long_axis_mm),
            "bidimensional_product_mm2": b.product_mm2 - a.product_mm2,
            "bidimensional_product_percent": _percent(a.product_mm2, b.product_mm2)}


@dataclass
class LesionTrack:
    """One lesion followed over time: baseline lesion(s) and what became of them.

    ``status``: ``matched`` (one to one), ``split`` (one baseline lesion, several follow-up lesions),
    ``merged`` (several into one), ``split/merged``, ``disappeared``, ``new`` (unequivocal: long axis
    >= :data:`NEW_LESION_MIN_MM`) or ``new (equivocal)``. ``baseline_ids`` / ``followup_ids`` are the
    ``lesion_id`` values of the measurements of each time point.
    """

    track_id: int
    status: str
    baseline_ids: tuple[int, ...]
    followup_ids: tuple[int, ...]
    matched_by: str | None
    overlap_ml: float
    centroid_distance_mm: float | None
    baseline: Size
    followup: Size
    target: bool = False

    @property
    def is_new(self) -> bool:
        return self.status.startswith("new")

    def as_dict(self) -> dict[str, Any]:
        return {"track": self.track_id, "status": self.status, "target": self.target,
                "baseline_lesions": list(self.baseline_ids), "followup_lesions": list(self.followup_ids),
                "matched_by": self.matched_by, "overlap_ml": self.overlap_ml,
                "centroid_distance_mm": self.centroid_distance_mm, "baseline": self.baseline.as_dict(),
                "followup": self.followup.as_dict(), "change": _change(self.baseline, self.followup)}


def _weighted_centroid(lesions: Sequence[LesionMeasurement]) -> np.ndarray:
    w = np.array([les.volume_ml for les in lesions])
    c = np.array([les.centroid_ras_mm for les in lesions])
    return (c * w[:, None]).sum(0) / max(w.sum(), 1e-12)


def match_lesions(base: TimePoint, follow: TimePoint, followup_map_on_baseline: np.ndarray, registration: Registration,
                  max_distance_mm: float = MATCH_DISTANCE_MM, min_overlap_fraction: float = MATCH_MIN_OVERLAP_FRACTION,
                  new_lesion_min_mm: float = NEW_LESION_MIN_MM) -> list[LesionTrack]:
    """Tracks of lesions across time: overlap after registration, then centroid distance.

    Args:
        followup_map_on_baseline: ``follow.lesion_map`` resampled onto the baseline grid (nearest neighbour).
        registration: gives the follow-up centroids in baseline coordinates.
        max_distance_mm: largest centroid distance for lesions that do not overlap.
        min_overlap_fraction: overlap needed, as a fraction of the smaller lesion (on the baseline grid).
        new_lesion_min_mm: a new lesion with a shorter long axis is ``new (equivocal)``.
    """
    nb, nf = len(base.lesions), len(follow.lesions)
    bmap, fmap = base.lesion_map, np.asarray(followup_map_on_baseline)
    size_b = np.bincount(bmap.ravel(), minlength=nb + 1)
    size_f = np.bincount(fmap.ravel(), minlength=nf + 1)[: nf + 1]
    both = (bmap > 0) & (fmap > 0)
    overlap: dict[tuple[int, int], int] = {}
    if both.any():
        keys, counts = np.unique(np.stack([bmap[both], fmap[both]], 1), axis=0, return_counts=True)
        overlap = {(int(k[0]), int(k[1])): int(c) for k, c in zip(keys, counts)}
    # union-find over baseline nodes 1..nb and follow-up nodes nb+1..nb+nf
    parent = list(range(nb + nf + 1))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    linked_by: dict[int, str] = {}
    for (b, f), c in overlap.items():
        if c >= min_overlap_fraction * max(1, min(size_b[b], size_f[f])):
            parent[find(nb + f)] = find(b)
            linked_by[b] = linked_by[nb + f] = "overlap"
    free_b = [b for b in range(1, nb + 1) if b not in linked_by]
    free_f = [f for f in range(1, nf + 1) if nb + f not in linked_by]
    if free_b and free_f:  # centroid distance in baseline coordinates, greedy by distance
        cb = np.array([base.lesions[b - 1].centroid_ras_mm for b in free_b])
        cf = transform_points(registration.inverse, np.array([follow.lesions[f - 1].centroid_ras_mm for f in free_f]))
        dist = np.linalg.norm(cb[:, None, :] - cf[None, :, :], axis=2)
        for i, j in sorted(np.ndindex(dist.shape), key=lambda ij: dist[ij]):
            b, f = free_b[i], free_f[j]
            if dist[i, j] > max_distance_mm:
                break
            if b in linked_by or nb + f in linked_by:
                continue
            parent[find(nb + f)] = find(b)
            linked_by[b] = linked_by[nb + f] = "distance"
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for b in range(1, nb + 1):
        groups.setdefault(find(b), ([], []))[0].append(b)
    for f in range(1, nf + 1):
        groups.setdefault(find(nb + f), ([], []))[1].append(f)
    ordered = sorted(groups.values(), key=lambda g: (0, min(g[0])) if g[0] else (1, min(g[1])))
    tracks: list[LesionTrack] = []
    for tid, (bs, fs) in enumerate(ordered, start=1):
        bl = [base.lesions[b - 1] for b in bs]
        fl = [follow.lesions[f - 1] for f in fs]
        sb, sf = Size.of(bl), Size.of(fl)
        if bs and fs:
            status = "matched" if len(bs) == len(fs) == 1 else "split" if len(bs) == 1 else "merged" if len(fs) == 1 else "split/merged"
            dist = float(np.linalg.norm(_weighted_centroid(bl) - transform_points(registration.inverse, _weighted_centroid(fl)[None])[0]))
            ov = sum(c for (b, f), c in overlap.items() if b in bs and f in fs) * base.voxel_ml
            by = linked_by.get(bs[0])
        elif bs:
            status, dist, ov, by = "disappeared", None, 0.0, None
        else:
            status = "new" if sf.long_axis_mm >= new_lesion_min_mm else "new (equivocal)"
            dist, ov, by = None, 0.0, None
        tracks.append(LesionTrack(tid, status, tuple(les.lesion_id for les in bl), tuple(les.lesion_id for les in fl),
                                  by, float(ov), dist, sb, sf))
    return tracks


# ---- response categories ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Response:
    """A response category with the numbers behind it; always a computed suggestion, not a diagnosis."""

    criteria: str
    category: str  # CR, PR, SD, PD, non-CR/non-PD, NE
    name: str
    baseline_value: float | None
    followup_value: float | None
    unit: str
    change: float | None
    change_percent: float | None
    reasons: tuple[str, ...]
    thresholds: dict[str, float]
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"criteria": self.criteria, "category": self.category, "name": self.name,
                "label": DISCLAIMER_SUGGESTION, "baseline": self.baseline_value, "followup": self.followup_value,
                "unit": self.unit, "change": self.change, "change_percent": self.change_percent,
                "reasons": list(self.reasons), "thresholds": dict(self.thresholds), "notes": list(self.notes)}


_NAMES = {"CR": "complete response", "PR": "partial response", "SD": "stable disease", "PD": "progressive disease",
          "non-CR/non-PD": "non-CR/non-PD (no measurable target lesion)", "NE": "not evaluable"}


def select_targets(base: TimePoint, min_long_axis_mm: float = RECIST_MEASURABLE_MM,
                   max_targets: int = RECIST_MAX_TARGETS) -> set[int]:
    """Baseline ``lesion_id``s of the RECIST target lesions: the largest (long axis) measurable ones."""
    measurable = [les for les in base.lesions if les.long_axis_mm >= min_long_axis_mm]
    measurable.sort(key=lambda les: (-les.long_axis_mm, les.lesion_id))
    return {les.lesion_id for les in measurable[:max_targets]}


def recist_response(tracks: Sequence[LesionTrack], base: TimePoint, targets: set[int],
                    min_long_axis_mm: float = RECIST_MEASURABLE_MM) -> Response:
    """RECIST 1.1 from the sum of the long axes of the target lesions, baseline as nadir.

    Args:
        targets: baseline ``lesion_id``s of the target lesions (:func:`select_targets`); the follow-up sum
            is over the tracks holding them (fragments of a split lesion added, a merged lesion once).

    CR: every target lesion gone (and every other lesion: else PR); PR: sum down by >= 30 %; PD: sum up by
    >= 20 % and >= 5 mm, or any unequivocal new lesion; else SD. Without a measurable target lesion:
    PD (new lesion), CR (everything gone), non-CR/non-PD, or NE (no lesion at all at baseline).
    """
    thresholds = {"PR_percent": RECIST_PR_PERCENT, "PD_percent": RECIST_PD_PERCENT, "PD_absolute_mm": RECIST_PD_ABSOLUTE_MM,
                  "measurable_long_axis_mm": min_long_axis_mm}
    notes = ("Baseline is used as the reference for response and as the nadir for progression (two time points): "
             "to judge progression after a response, give the scan with the smallest sum as the baseline.",
             "Non-target progression, lymph nodes, "
             "confirmation scans and clinical status are not assessed.", "RECIST's limit of two target lesions "
             "per organ is not applied.")
    new = [t for t in tracks if t.status == "new"]
    target_tracks = [t for t in tracks if targets & set(t.baseline_ids)]
    base_sum = float(sum(les.long_axis_mm for les in base.lesions if les.lesion_id in targets))
    follow_sum = float(sum(t.followup.long_axis_mm for t in target_tracks))
    reasons: list[str] = [f"{len(new)} new lesion(s)"] if new else []
    if not target_tracks:
        if new:
            cat = "PD"
        elif not base.lesions:
            cat = "NE"
            reasons.append("no lesion at baseline")
        elif sum(t.followup.volume_ml for t in tracks) == 0:
            cat = "CR"
            reasons.append("every lesion disappeared")
        else:
            cat = "non-CR/non-PD"
            reasons.append(f"no measurable lesion (long axis >= {min_long_axis_mm:g} mm) at baseline")
        return Response("RECIST 1.1", cat, _NAMES[cat], None, None, "mm", None, None, tuple(reasons), thresholds, notes)
    change = follow_sum - base_sum
    pct = _percent(base_sum, follow_sum)
    desc = f"sum of long axes {base_sum:.1f} -> {follow_sum:.1f} mm ({pct:+.1f} %, {change:+.1f} mm)"
    grows = pct is not None and pct >= RECIST_PD_PERCENT and change >= RECIST_PD_ABSOLUTE_MM
    if new or grows:
        cat = "PD"
        reasons.append(desc + (f": at least +{RECIST_PD_PERCENT:g} % and +{RECIST_PD_ABSOLUTE_MM:g} mm" if grows else ""))
    elif follow_sum == 0:
        others = sum(t.followup.volume_ml for t in tracks if t not in target_tracks)
        cat = "CR" if others == 0 else "PR"
        reasons.append("every target lesion disappeared" + ("" if others == 0 else ", other lesions remain"))
    elif pct is not None and pct <= RECIST_PR_PERCENT:
        cat = "PR"
        reasons.append(f"{desc}: at most {RECIST_PR_PERCENT:g} %")
    else:
        cat = "SD"
        reasons.append(f"{desc}: neither {RECIST_PR_PERCENT:g} % nor +{RECIST_PD_PERCENT:g} %")
    return Response("RECIST 1.1", cat, _NAMES[cat], base_sum, follow_sum, "mm", change, pct, tuple(reasons), thresholds, notes)


def _region_volume(size: Size, region: str) -> float:
    if region == "lesion":
        return size.volume_ml
    return float((size.region_volumes_ml or {}).get(region, 0.0))


def rano_volumetric_response(tracks: Sequence[LesionTrack], base: TimePoint, region: str = "lesion",
                             axial: int | None = None) -> Response:
    """Volumetric RANO 2.0 from the total volume of all lesions (or of one BraTS region of them).

    CR: no lesion left (baseline had some); PR: volume down by >= 65 % (only with a measurable lesion at
    baseline: both perpendicular diameters >= 10 mm, seen on >= 2 axial slices); PD: volume up by >= 40 %,
    or any unequivocal new lesion; else SD. NE without any lesion at baseline and no new one. The baseline
    is the reference for response and, with two time points, the nadir for progression.

    Args:
        region: ``"lesion"`` (every segmented lesion voxel), or ``"WT"``, ``"TC"``, ``"ET"`` for BraTS labels
            (RANO 2.0 measures enhancing disease of enhancing gliomas: ``"ET"``).
        axial: array axis of the baseline scan closest to the axial plane
            (:func:`seg_app.core.shape.axial_axis`); ``None`` skips the two-slice rule.
    """
    thresholds = {"PR_percent": RANO_PR_PERCENT, "PD_percent": RANO_PD_PERCENT, "measurable_diameters_mm": RANO_MEASURABLE_MM,
                  "measurable_axial_slices": RANO_MEASURABLE_SLICES}
    notes = ("Baseline is used as the reference for response and as the nadir for progression (two time points): "
             "to judge progression after a response, give the scan with the smallest volume as the baseline.",
             "Non-enhancing (T2/FLAIR) disease, corticosteroids, clinical status and confirmation scans are not assessed.",
             f"Volume: {'all segmented lesion voxels' if region == 'lesion' else 'region ' + region} of every lesion "
             "(no target selection).")
    if region != "lesion" and region not in base.regions:
        raise ValueError(f"The region {region} needs BraTS-like labels (necrotic core, oedema, enhancing); "
                         "these masks have none.")
    new = [t for t in tracks if t.status == "new"]
    vb = float(sum(_region_volume(t.baseline, region) for t in tracks))
    vf = float(sum(_region_volume(t.followup, region) for t in tracks))
    change, pct = vf - vb, _percent(vb, vf)
    reasons: list[str] = [f"{len(new)} new lesion(s)"] if new else []
    measurable = any(les.long_axis_mm >= RANO_MEASURABLE_MM and les.short_axis_mm >= RANO_MEASURABLE_MM
                     and (axial is None or les.bbox_max_voxel[axial] - les.bbox_min_voxel[axial] + 1 >= RANO_MEASURABLE_SLICES)
                     for les in base.lesions)
    if vb == 0:
        cat = "PD" if new else "NE"
        if not new:
            reasons.append("no lesion volume at baseline")
        return Response("RANO 2.0 (volumetric)", cat, _NAMES[cat], vb, vf, "mL", change, None, tuple(reasons), thresholds, notes)
    desc = f"volume {vb:.2f} -> {vf:.2f} mL ({pct:+.1f} %)"
    if new or pct >= RANO_PD_PERCENT:
        cat = "PD"
        reasons.append(desc + (f": at least +{RANO_PD_PERCENT:g} %" if pct >= RANO_PD_PERCENT else ""))
    elif vf == 0:
        cat = "CR"
        reasons.append("no lesion volume left")
    elif pct <= RANO_PR_PERCENT and measurable:
        cat = "PR"
        reasons.append(f"{desc}: at most {RANO_PR_PERCENT:g} %")
    else:
        cat = "SD"
        if pct <= RANO_PR_PERCENT:
            reasons.append(f"{desc}, but no measurable lesion (>= {RANO_MEASURABLE_MM:g} x {RANO_MEASURABLE_MM:g} mm on "
                           f">= {RANO_MEASURABLE_SLICES} axial slices) at baseline")
        else:
            reasons.append(f"{desc}: neither {RANO_PR_PERCENT:g} % nor +{RANO_PD_PERCENT:g} %")
    return Response("RANO 2.0 (volumetric)", cat, _NAMES[cat], vb, vf, "mL", change, pct, tuple(reasons), thresholds, notes)


# ---- the whole assessment ------------------------------------------------------------------------------
@dataclass
class FollowUpResult:
    """Everything :func:`assess_followup` computed; :meth:`as_dict` is the JSON document's core."""

    registration: Registration
    baseline: TimePoint
    followup: TimePoint
    followup_map_on_baseline: np.ndarray  # follow-up lesion numbers on the baseline grid
    tracks: list[LesionTrack]
    recist: Response
    rano: Response
    warnings: list[str] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, Any]:
        a = Size.of(self.baseline.lesions)
        b = Size.of(self.followup.lesions)
        return {"baseline": {"lesions": len(self.baseline.lesions), **a.as_dict()},
                "followup": {"lesions": len(self.followup.lesions), **b.as_dict()}, "change": _change(a, b),
                "new_lesions": sum(1 for t in self.tracks if t.status == "new"),
                "new_lesions_equivocal": sum(1 for t in self.tracks if t.status == "new (equivocal)"),
                "disappeared_lesions": sum(1 for t in self.tracks if t.status == "disappeared")}

    def as_dict(self) -> dict[str, Any]:
        return _clean({"registration": self.registration.as_dict(matrix_key="baseline_to_followup_ras"), "tracks": [t.as_dict() for t in self.tracks],
                       "totals": self.totals, "response": {"label": DISCLAIMER_SUGGESTION,
                                                           "recist_1_1": self.recist.as_dict(),
                                                           "rano_2_0_volumetric": self.rano.as_dict()},
                       "baseline_lesions": [les.to_dict() for les in self.baseline.lesions],
                       "followup_lesions": [les.to_dict() for les in self.followup.lesions],
                       "warnings": list(self.warnings)})


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def assess_followup(baseline: Volume, baseline_labels: np.ndarray, followup: Volume, followup_labels: np.ndarray,
                    registration: Registration, *, baseline_names: Mapping[int, str] | None = None,
                    followup_names: Mapping[int, str] | None = None, rano_region: str = "lesion",
                    max_distance_mm: float = MATCH_DISTANCE_MM, new_lesion_min_mm: float = NEW_LESION_MIN_MM) -> FollowUpResult:
    """Measure, match and categorise the lesions of two time points (see the module docstring).

    Args:
        baseline, followup: the scans (any grids; each label map on its own scan's grid).
        baseline_labels, followup_labels: integer label maps ``(I, J, K)``.
        registration: from :func:`register_rigid` / :func:`landmark_registration` / :func:`identity_registration`.
        baseline_names, followup_names: label value -> name (BraTS names make lesions whole tumours with
            WT/TC/ET volumes).
        rano_region: volume used by RANO: ``"lesion"`` or a BraTS region ``"WT"``/``"TC"``/``"ET"``.
    """
    base = measure_time_point(baseline_labels, baseline, baseline_names)
    follow = measure_time_point(followup_labels, followup, followup_names)
    warnings = identifier_warnings(baseline, followup) + list(registration.warnings)
    if bool(base.regions) != bool(follow.regions):
        warnings.append("Only one of the two masks has tumour sub-regions (necrotic core, oedema, enhancing): "
                        "lesions are compared as whole lesions.")
    fmap = resample_onto_baseline(follow.lesion_map, followup.affine, baseline, registration.matrix, order=0)
    lost = set(range(1, len(follow.lesions) + 1)) - set(np.unique(fmap).tolist())
    if lost:
        warnings.append(f"{len(lost)} follow-up lesion(s) lie outside the baseline scan's field of view after "
                        "registration; they are matched by centroid distance only.")
    tracks = match_lesions(base, follow, fmap, registration, max_distance_mm=max_distance_mm, new_lesion_min_mm=new_lesion_min_mm)
    axial = axial_axis(baseline.affine)
    min_long = max(RECIST_MEASURABLE_MM, 2.0 * baseline.spacing[axial])
    targets = select_targets(base, min_long_axis_mm=min_long)
    for t in tracks:
        t.target = bool(targets & set(t.baseline_ids))
    recist = recist_response(tracks, base, targets, min_long_axis_mm=min_long)
    rano = rano_volumetric_response(tracks, base, region=rano_region, axial=axial)
    return FollowUpResult(registration, base, follow, fmap, tracks, recist, rano, list(dict.fromkeys(warnings)))
