"""Patient and study identifiers (``seg_app.core.patient``): parsing, overlay/title/export views,
anonymisation, the CSV header, and that no identifier ever reaches the logs."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest

from seg_app.core.patient import PatientInfo, dicom_age, dicom_date, patient_info, person_name
from seg_app.core.volume import Volume

NAME = "Testperson^Jane^Q"
PID = "PID-778899"
ACCESSION = "ACC-31337"


def _dicom_scan(folder: Path, age: str | None = "045Y", birth: str = "19790315") -> Path:
    """A small MR series with identifiers, PatientAge optional (the loader does not keep it)."""
    from seg_app.core.dicom_write import write_dicom_series

    arr = np.random.default_rng(0).random((10, 8, 4)).astype(np.float32) * 100
    files = write_dicom_series(Volume(arr, np.diag([1.0, 1.0, 2.0, 1.0]), modality="MR"), folder,
                               series_description="T1 post", patient_name=NAME, patient_id=PID, study_date="20240610")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientBirthDate = birth
        ds.PatientSex = "F"
        ds.AccessionNumber = ACCESSION
        if age is not None:
            ds.PatientAge = age
        ds.save_as(f)
    return folder


def test_dicom_value_parsing():
    assert person_name("Doe^John^Paul") == "DOE, John Paul"
    assert person_name("Doe") == "DOE" and person_name("") == ""
    assert person_name("Yamada^Tarou=山田^太郎") == "YAMADA, Tarou"
    assert dicom_date("20240610").isoformat() == "2024-06-10" and dicom_date("2024.06.10") is not None
    assert dicom_date("") is None and dicom_date("20241340") is None
    assert dicom_age("045Y") == "45 y" and dicom_age("006M") == "6 mo" and dicom_age("x") == ""


def test_dicom_identifiers_overlay_title_and_header(tmp_path):
    from seg_app.core.io import load_scan

    vol = load_scan(_dicom_scan(tmp_path / "s"))
    info = patient_info(vol)
    assert info.patient_name == "TESTPERSON, Jane Q" and info.patient_id == PID and info.sex == "F"
    assert info.birth_date == "1979-03-15" and info.age == "45 y" and info.study_date == "2024-06-10"
    assert info.accession == ACCESSION and info.series_description == "T1 post" and info.scan_id == vol.series_uid
    left, right = info.overlay_corners()
    assert left[0] == "TESTPERSON, Jane Q" and f"ID {PID}" in left and "F 45 y DOB 1979-03-15" in left
    assert right == ["Study 2024-06-10", f"Acc {ACCESSION}", "T1 post"]
    assert info.title() == f"TESTPERSON, Jane Q (ID {PID}) - T1 post"
    rows = dict(info.header_rows())
    assert rows["patient_id"] == PID and rows["accession"] == ACCESSION and rows["scan_id"] == vol.series_uid


def test_age_from_birth_and_study_dates_when_the_tag_is_missing(tmp_path):
    from seg_app.core.io import load_scan

    vol = load_scan(_dicom_scan(tmp_path / "s", age=None, birth="19800611"))
    assert patient_info(vol).age == "43 y"  # one day before the 44th birthday
    assert patient_info(vol, read_files=False).age == "43 y"


def test_nifti_scan_is_identified_by_its_file_name(tmp_path):
    vol = Volume(np.zeros((1, 4, 4, 4), np.float32), np.eye(4), source_paths=(str(tmp_path / "case 12.nii.gz"),))
    info = patient_info(vol)
    assert info.scan_id == "case 12.nii.gz" and info.patient_name == "" and info.title() == ""
    assert info.overlay_corners() == (["case 12.nii.gz"], [])
    assert info.header_rows() == [("scan_id", "case 12.nii.gz")]


def test_anonymised_hides_every_identifier():
    info = PatientInfo(patient_name="DOE, Jane", patient_id=PID, sex="F", birth_date="1979-03-15", age="45 y",
                       study_date="2024-06-10", accession=ACCESSION, series_description="T1 post", modality="MR",
                       scan_id="1.2.3")
    anon = info.anonymised()
    shown = " ".join([anon.title(), *sum(anon.overlay_corners(), []), *(v for _k, v in anon.header_rows())])
    for secret in ("DOE", PID, "1979", "2024-06-10", ACCESSION, "1.2.3"):
        assert secret not in shown
    assert anon.title() == "Anonymised - T1 post" and ("anonymised", "yes") in anon.header_rows()


def test_csv_header_rows_before_the_table(tmp_path):
    from seg_app.core.export import CSV_COLUMNS, save_measurements_csv
    from seg_app.core.measure import measure_lesions

    labels = np.zeros((1, 10, 10, 10), np.uint8)
    labels[0, 2:5, 2:5, 2:5] = 1
    lesions = measure_lesions(Volume(labels, np.eye(4)))
    out = save_measurements_csv(tmp_path / "m.csv", lesions, header=[("patient_id", PID), ("scan_id", "a.nii")])
    lines = out.read_text().splitlines()
    assert lines[0] == f"# patient_id,{PID}" and lines[1] == "# scan_id,a.nii"
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 1
    assert rows[0]["long_axis_slice"] != ""  # the slice of the RECIST measurement
    plain = save_measurements_csv(tmp_path / "p.csv", lesions)
    assert plain.read_text().splitlines()[0].startswith("label,")


def test_identifiers_never_reach_the_logs(tmp_path, caplog):
    from seg_app.core.io import load_scan

    caplog.set_level(logging.DEBUG)
    folder = _dicom_scan(tmp_path / "s")
    vol = load_scan(folder)
    info = patient_info(vol)
    (tmp_path / "m.json").write_text(json.dumps(info.fields()))
    assert info.patient_id == PID  # the values were read...
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for secret in ("Testperson", "TESTPERSON", PID, ACCESSION, "19790315"):  # ...and never logged
        assert secret not in logged


@pytest.mark.parametrize("value", ["", "   ", "^", "===", "20241301"])
def test_odd_header_values_are_empty_not_errors(value):
    vol = Volume(np.zeros((1, 2, 2, 2), np.float32), np.eye(4), series_uid="1.2", source_paths=(),
                 meta={"PatientName": value, "PatientBirthDate": value, "StudyDate": value, "PatientSex": value})
    info = patient_info(vol)
    assert info.birth_date == "" and info.study_date == "" and info.sex == "" and info.age == ""
