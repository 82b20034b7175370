"""``seg-app predict pacs://...``: retrieve from a real Orthanc, segment, write the usual outputs, and with
``--send`` store the DICOM SEG and SR back; both are read back from Orthanc and checked. Also
``--format sr`` on a local DICOM folder and the one-line errors of a bad PACS input."""

from __future__ import annotations

import json

import pydicom
import pytest

from orthanc_fixture import CALLING_AET, orthanc, pacs_settings  # noqa: F401 - fixtures
from seg_app import predict_cli
from seg_app.core import pacs
from seg_app.core.dicom_sr import read_dicom_sr_measurements


def _predict(argv, model):
    return predict_cli.predict_command([*argv, "--model", str(model), "--device", "cpu", "--backend", "torch"])


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_predict_from_pacs_and_send_seg_and_sr_back(orthanc, pacs_settings, tiny_checkpoint_path, tmp_path, capsys, protocol):
    mr, node = orthanc.extra["studies"]["mr"], pacs_settings.node("orthanc")
    out = tmp_path / "out"
    url = f"pacs://orthanc/studies/{mr.study_uid}/series/{mr.series_uid}"
    rc = _predict([url, "--out", str(out), "--send", "--protocol", protocol], tiny_checkpoint_path)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    names = sorted(p.name for p in out.iterdir())
    stem = names[0].rsplit("_", 1)[0]
    assert names == sorted(f"{stem}{s}" for s in ("_labels.nii.gz", "_measurements.csv", "_measurements.json", "_seg.dcm", "_sr.dcm"))
    assert "sent" in cap.out and "2 instance(s) stored" in cap.out
    local_seg, local_sr = pydicom.dcmread(out / f"{stem}_seg.dcm"), pydicom.dcmread(out / f"{stem}_sr.dcm")

    # read the results back from the PACS: a SEG and an SR series in the scan's study
    series = {s.modality: s for s in pacs.find_series(node, mr.study_uid, protocol, CALLING_AET)
              if s.series_uid in (local_seg.SeriesInstanceUID, local_sr.SeriesInstanceUID)}
    assert set(series) == {"SEG", "SR"}
    (seg_dir,) = pacs.retrieve(pacs_settings, node, mr.study_uid, series["SEG"].series_uid, protocol=protocol)
    (sr_dir,) = pacs.retrieve(pacs_settings, node, mr.study_uid, series["SR"].series_uid, protocol=protocol)
    (seg_file,), (sr_file,) = list(seg_dir.glob("*.dcm")), list(sr_dir.glob("*.dcm"))
    seg, sr = pydicom.dcmread(seg_file), pydicom.dcmread(sr_file)
    assert seg.SOPInstanceUID == local_seg.SOPInstanceUID and seg.StudyInstanceUID == mr.study_uid
    assert {r.SeriesInstanceUID for r in seg.ReferencedSeriesSequence} == {mr.series_uid}
    assert sr.SOPInstanceUID == local_sr.SOPInstanceUID and sr.PatientID == "P001"
    groups = read_dicom_sr_measurements(sr_file)
    lesions = json.loads((out / f"{stem}_measurements.json").read_text())["lesions"]
    if lesions:
        assert len(groups) == len(lesions)
        assert all(g["segment"][0] == seg.SOPInstanceUID for g in groups)
        assert [g["measurements"]["Volume"][0] for g in groups] == pytest.approx([les["volume_ml"] for les in lesions])
    else:
        assert [g["tracking_id"] for g in groups] == ["No lesion"]


def test_predict_whole_study_uses_the_cache_and_format_sr_implies_seg(orthanc, pacs_settings, tiny_checkpoint_path, tmp_path, capsys):
    ct = orthanc.extra["studies"]["ct"]
    url = f"pacs://orthanc/studies/{ct.study_uid}"
    out = tmp_path / "out"
    assert _predict([url, "--out", str(out), "--format", "json,sr"], tiny_checkpoint_path) == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert [n.rsplit("_", 1)[1] for n in names] == ["measurements.json", "seg.dcm", "sr.dcm"]
    folder = pacs.cached_series_folder(pacs_settings, pacs_settings.node("orthanc"), ct.study_uid, ct.series_uid)
    assert len(list(folder.glob("*.dcm"))) == ct.n_instances
    stamp = folder.stat().st_mtime_ns
    assert _predict([url, "--out", str(tmp_path / "again")], tiny_checkpoint_path) == 0
    assert folder.stat().st_mtime_ns == stamp  # the second run did not fetch the study again


def test_bad_pacs_inputs_are_one_line_errors(pacs_settings, tiny_checkpoint_path, tmp_path, capsys):
    assert _predict(["pacs://nowhere/studies/1.2.3", "--out", str(tmp_path)], tiny_checkpoint_path) == 2
    err = capsys.readouterr().err
    assert "No PACS node named 'nowhere'" in err and err.count("\n") == 1
    assert _predict(["pacs://orthanc/studies/1.2.3.999", "--out", str(tmp_path)], tiny_checkpoint_path) == 1
    err = capsys.readouterr().err
    assert "error: pacs://orthanc/studies/1.2.3.999:" in err and "no " in err.lower()
    assert _predict([str(tmp_path), "--send", "--out", str(tmp_path)], tiny_checkpoint_path) == 2
    assert "pacs://" in capsys.readouterr().err
