"""Who and what a scan is: patient and study identifiers for the viewer overlay, the window title and
the measurement exports (Qt-free).

DICOM scans carry them in ``Volume.meta`` (read by :mod:`seg_app.core.dicom_scan`: PatientName,
PatientID, PatientSex, PatientBirthDate, StudyDate, AccessionNumber) and ``series_description``;
PatientAge, which the loader does not keep, is read from the first source file's header. NIfTI files
have no patient header: their scan identifier is the file name.

**Privacy.** These values identify a patient: nothing in this module logs them, and callers must not
either (log the fact that a field is missing, never a value). :meth:`PatientInfo.anonymised` drops
every identifier for screenshots and teaching.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PatientInfo", "dicom_age", "dicom_date", "patient_info", "person_name"]

def person_name(value: str) -> str:
    """DICOM PN ``Family^Given^Middle^Prefix^Suffix`` as ``"FAMILY, Given Middle"`` ("" when empty)."""
    text = str(value or "").split("=")[0].strip()  # alphabetic group only
    if not text:
        return ""
    parts = [p.strip() for p in text.split("^")]
    family = parts[0].upper()
    given = " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else (family or given)


def dicom_date(value: str) -> _dt.date | None:
    """A DICOM DA ``YYYYMMDD`` (or ``YYYY.MM.DD``/``YYYY-MM-DD``) as a date; None when absent or invalid."""
    digits = re.sub(r"[^0-9]", "", str(value or ""))[:8]
    if len(digits) != 8:
        return None
    try:
        return _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def dicom_age(value: str) -> str:
    """A DICOM AS ``nnnY`` / ``nnnM`` / ``nnnW`` / ``nnnD`` as ``"45 y"``, ``"7 mo"``... ("" when invalid)."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*([YMWD])\s*", str(value or "").upper())
    if not m:
        return ""
    return f"{int(m.group(1))} {dict(Y='y', M='mo', W='wk', D='d')[m.group(2)]}"


def _age_between(birth: _dt.date, on: _dt.date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 2:
        return f"{years} y"
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    return f"{max(months, 0)} mo"


@dataclass(frozen=True)
class PatientInfo:
    """Identifiers of the open scan; every field is a display string ("" when unknown).

    ``scan_id`` names the scan itself: the DICOM SeriesInstanceUID, or the NIfTI file name.
    """

    patient_name: str = ""
    patient_id: str = ""
    sex: str = ""
    birth_date: str = ""  # ISO YYYY-MM-DD
    age: str = ""  # "45 y", from PatientAge or birth and study dates
    study_date: str = ""  # ISO YYYY-MM-DD
    accession: str = ""
    series_description: str = ""
    modality: str = ""
    scan_id: str = ""
    anonymous: bool = False

    # ---- derived views
    def fields(self) -> dict[str, str]:
        """Ordered ``key -> value`` of every identifier (the export header; empty values included)."""
        return {
            "patient_name": self.patient_name, "patient_id": self.patient_id, "sex": self.sex,
            "birth_date": self.birth_date, "age": self.age, "study_date": self.study_date,
            "accession": self.accession, "series_description": self.series_description,
            "modality": self.modality, "scan_id": self.scan_id,
        }

    def anonymised(self) -> PatientInfo:
        """The same scan without anything that identifies the patient or the study."""
        return PatientInfo(series_description=self.series_description, modality=self.modality, anonymous=True)

    def overlay_corners(self) -> tuple[list[str], list[str]]:
        """``(top-left lines, top-right lines)`` of the usual radiology overlay.

        Top left: name, ID, sex / age / birth date. Top right: study date, accession, series.
        """
        if self.anonymous:
            return ["ANONYMISED"], [s for s in (self.series_description, self.modality) if s]
        left = [s for s in (self.patient_name, f"ID {self.patient_id}" if self.patient_id else "") if s]
        demo = " ".join(s for s in (self.sex, self.age, f"DOB {self.birth_date}" if self.birth_date else "") if s)
        if demo:
            left.append(demo)
        right = [s for s in (
            self.study_date and f"Study {self.study_date}",
            self.accession and f"Acc {self.accession}",
            self.series_description,
        ) if s]
        if not left and self.scan_id:  # NIfTI: no patient header, the file is all we know
            left.append(self.scan_id)
        return left, right

    def title(self) -> str:
        """Window-title text: ``"DOE, Jane (ID 123) - T1 axial"``, ``"Anonymised - T1 axial"``, or ""
        without patient identifiers (callers then show the scan's name)."""
        if self.anonymous:
            return "Anonymised" + (f" - {self.series_description}" if self.series_description else "")
        who = self.patient_name or ""
        if self.patient_id:
            who = f"{who} (ID {self.patient_id})" if who else f"ID {self.patient_id}"
        if not who:
            return ""
        return " - ".join(s for s in (who, self.series_description) if s)

    def header_rows(self) -> list[tuple[str, str]]:
        """``(key, value)`` rows for a measurement file's header (non-empty values only)."""
        rows = [(k, v) for k, v in self.fields().items() if v]
        if self.anonymous:
            rows.append(("anonymised", "yes"))
        return rows


def _read_extra_tags(path: str) -> dict[str, str]:
    """Header values the loader does not keep (PatientAge); {} when the file cannot be read."""
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientAge"])
        return {"PatientAge": str(ds.get("PatientAge", "") or "")}
    except Exception:  # noqa: BLE001 - optional detail: a missing age is not an error
        return {}


def patient_info(volume: Any, read_files: bool = True) -> PatientInfo:
    """Identifiers of ``volume`` (a :class:`~seg_app.core.volume.Volume`).

    Args:
        volume: the open scan.
        read_files: for DICOM scans, read PatientAge from the first source file when ``meta`` lacks it.
    """
    meta = dict(getattr(volume, "meta", None) or {})
    paths = tuple(getattr(volume, "source_paths", ()) or ())
    is_dicom = bool(getattr(volume, "series_uid", None))
    if not is_dicom:
        return PatientInfo(modality=str(getattr(volume, "modality", "") or ""),
                           scan_id=Path(paths[0]).name if paths else "",
                           series_description=str(getattr(volume, "series_description", "") or ""))
    if read_files and "PatientAge" not in meta and paths:
        meta.update(_read_extra_tags(paths[0]))
    birth, study = dicom_date(meta.get("PatientBirthDate", "")), dicom_date(meta.get("StudyDate", ""))
    age = dicom_age(meta.get("PatientAge", ""))
    if not age and birth is not None and study is not None and study >= birth:
        age = _age_between(birth, study)
    sex = str(meta.get("PatientSex", "") or "").strip().upper()
    return PatientInfo(
        patient_name=person_name(meta.get("PatientName", "")),
        patient_id=str(meta.get("PatientID", "") or "").strip(),
        sex=sex if sex in ("M", "F", "O") else "",
        birth_date=birth.isoformat() if birth else "",
        age=age,
        study_date=study.isoformat() if study else "",
        accession=str(meta.get("AccessionNumber", "") or "").strip(),
        series_description=str(getattr(volume, "series_description", "") or ""),
        modality=str(getattr(volume, "modality", "") or ""),
        scan_id=str(volume.series_uid),
    )
