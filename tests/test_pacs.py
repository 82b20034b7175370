"""PACS interface (seg_app.core.pacs) against a real Orthanc: echo, find, retrieve and store over DIMSE
and DICOMweb; typed errors for a server that is down, killed mid-retrieve, a rejected association,
wrong credentials and a refused store; the cache never holds a partial or duplicate series; settings
never hold or print a secret."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from orthanc_fixture import (  # noqa: F401 - orthanc and pacs_settings are fixtures
    AET,
    CALLING_AET,
    PASSWORD,
    free_port,
    make_study,
    orthanc,
    pacs_settings,
    start_orthanc,
    write_settings,
)
from seg_app.core import pacs
from seg_app.core.errors import Cancelled, SegAppError
from seg_app.core.io import load_scan
from seg_app.core.pacs_types import with_retries
from seg_app.pacs_cli import pacs_command

PROTOCOLS = ["dimse", "dicomweb"]


def cache_series(settings) -> list[Path]:
    """Every complete series folder in the cache (node/study/series)."""
    root = settings.cache_root()
    return sorted(p for p in root.glob("*/*/*") if p.is_dir() and not p.parts[-3].startswith("."))


def partial_leftovers(settings) -> list[Path]:
    root = settings.cache_root()
    return [p for p in root.rglob("*") if ".partial" in p.parts and p.name != ".partial"]


# ---- settings, URLs, retries (no server) -----------------------------------------------------
def test_settings_refuse_secrets_and_never_write_them(tmp_path, monkeypatch):
    bad = write_settings(tmp_path / "bad.json", {"x": {"dicomweb_url": "http://h/dw", "password": "hunter2"}}, tmp_path)
    with pytest.raises(pacs.PacsConfigError, match="secret"):
        pacs.load_settings(bad)
    monkeypatch.setenv("MY_PACS_PW", "hunter2")
    monkeypatch.setenv("MY_PACS_TOKEN", "tok-123")
    good = write_settings(tmp_path / "good.json", {
        "x": {"dicomweb_url": "http://h/dw", "username": "u", "password_env": "MY_PACS_PW"},
        "y": {"ae_title": "PACS", "host": "h", "port": 11112, "token_env": "MY_PACS_TOKEN", "dicomweb_url": "https://h/dw",
              "tls": {"ca_file": "/etc/ca.pem"}},
    }, tmp_path / "cache")
    settings = pacs.load_settings(good)
    x, y = settings.node("x"), settings.node("y")
    assert x.secret("password") == "hunter2" and y.secret("token") == "tok-123"
    assert y.tls is not None and y.tls.ca_file == "/etc/ca.pem" and y.protocols() == ["dicomweb", "dimse"]
    out = pacs.save_settings(settings, tmp_path / "saved.json")
    text = out.read_text() + repr(x) + repr(y) + json.dumps(x.to_dict()) + json.dumps(y.to_dict())
    assert "hunter2" not in text and "tok-123" not in text
    assert pacs.load_settings(out).node("x") == x  # the saved file reads back the same node


def test_unknown_node_and_missing_settings_are_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_APP_PACS_SETTINGS", str(tmp_path / "none.json"))
    with pytest.raises(pacs.PacsConfigError, match="No PACS settings file"):
        pacs.load_settings()
    path = write_settings(tmp_path / "s.json", {"a": {"dicomweb_url": "http://h"}, "b": {"dicomweb_url": "http://i"}}, tmp_path)
    with pytest.raises(pacs.PacsConfigError, match=r"configured nodes: a, b"):
        pacs.load_settings(path).node("c")


def test_pacs_url_and_query_validation():
    loc = pacs.parse_pacs_url("pacs://hospital/studies/1.2.3/series/1.2.3.4")
    assert (loc.node, loc.study_uid, loc.series_uid) == ("hospital", "1.2.3", "1.2.3.4")
    assert pacs.parse_pacs_url(loc.url()) == loc
    assert pacs.parse_pacs_url("pacs://n/studies/9.8").series_uid is None
    for bad in ("pacs://n/1.2.3", "pacs://n/studies/abc", "http://n/studies/1.2"):
        with pytest.raises(pacs.PacsConfigError):
            pacs.parse_pacs_url(bad)
    assert pacs.StudyQuery(date="20260101-").filters() == {"StudyDate": "20260101-"}
    with pytest.raises(pacs.PacsConfigError, match="date"):
        pacs.StudyQuery(date="2026-01-01")


def test_retries_back_off_exponentially_and_only_for_transient_errors():
    node = pacs.PacsNode(name="n", dicomweb_url="http://h", retries=3, backoff_s=0.5)
    sleeps, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise pacs.PacsConnectionError("down")
        return "ok"

    assert with_retries(flaky, node, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and sum(sleeps) == pytest.approx(0.5 + 1.0)
    calls.clear()

    def refused():
        calls.append(1)
        raise pacs.PacsAuthError("no", 401)

    with pytest.raises(pacs.PacsAuthError):
        with_retries(refused, node, sleep=sleeps.append)
    assert len(calls) == 1


# ---- against Orthanc -------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_echo(pacs_settings, protocol):
    assert pacs.echo(pacs_settings.node("orthanc"), protocol, CALLING_AET) >= 0


def test_cli_echo_both_protocols(pacs_settings, capsys):
    assert pacs_command(["echo", "orthanc"]) == 0
    out = capsys.readouterr().out
    assert "dimse ORTHANCTEST@127.0.0.1" in out and "dicomweb http://127.0.0.1" in out and PASSWORD not in out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_find_by_patient_name_date_and_modality(orthanc, pacs_settings, protocol):
    node, mr, ct = pacs_settings.node("orthanc"), orthanc.extra["studies"]["mr"], orthanc.extra["studies"]["ct"]

    def find(**kw):
        return pacs.find_studies(node, pacs.StudyQuery(**kw), protocol, CALLING_AET)

    (study,) = find(patient_id="P001")
    assert (study.study_uid, study.patient_name, study.birth_date, study.study_date, study.accession,
            study.description, study.modalities) == (mr.study_uid, "DOE^JANE", "19700102", "20260315", "ACC001", "MRI head", "MR")
    assert study.n_instances == mr.n_instances
    assert [s.study_uid for s in find(date="20260101-20261231")] == [mr.study_uid]
    assert [s.study_uid for s in find(date="20250101-20251231")] == [ct.study_uid]
    assert [s.study_uid for s in find(patient_name="ROE*")] == [ct.study_uid]
    assert [s.study_uid for s in find(modality="MR")] == [mr.study_uid]
    assert [s.study_uid for s in find()] == [mr.study_uid, ct.study_uid]  # newest first
    assert find(date="20240101-20241231") == []
    (series,) = pacs.find_series(node, ct.study_uid, protocol, CALLING_AET)
    assert (series.series_uid, series.modality, series.n_instances) == (ct.series_uid, "CT", ct.n_instances)


def test_cli_find_json_and_table(orthanc, pacs_settings, capsys):
    mr = orthanc.extra["studies"]["mr"]
    assert pacs_command(["find", "orthanc", "--patient-id", "P001", "--modality", "MR", "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["study_uid"] == mr.study_uid and doc["series"][0]["series_uid"] == mr.series_uid
    assert doc["url"] == f"pacs://orthanc/studies/{mr.study_uid}"
    assert pacs_command(["find", "orthanc", "--name", "DOE*", "--date", "20260101-20261231", "--protocol", "dimse"]) == 0
    table = capsys.readouterr().out
    assert "DOE JANE" in table and "1970-01-02" in table and mr.series_uid in table and "ROE" not in table


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retrieve_series_into_cache_once(orthanc, pacs_settings, protocol):
    node, mr = pacs_settings.node("orthanc"), orthanc.extra["studies"]["mr"]
    seen = []
    (folder,) = pacs.retrieve(pacs_settings, node, mr.study_uid, mr.series_uid, protocol=protocol,
                              progress=lambda d, t: seen.append((d, t)))
    assert folder == pacs.cached_series_folder(pacs_settings, node, mr.study_uid, mr.series_uid)
    assert len(list(folder.glob("*.dcm"))) == mr.n_instances and seen[-1] == (mr.n_instances, mr.n_instances)
    vol = load_scan(folder)
    assert vol.series_uid == mr.series_uid and vol.shape == (24, 24, 6)
    ds = pydicom.dcmread(next(folder.glob("*.dcm")))
    assert ds.PatientID == "P001" and ds.StudyInstanceUID == mr.study_uid
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    # pulled again (by either protocol): the cached series is reused, nothing is stored twice
    for proto in PROTOCOLS:
        again = pacs.retrieve(pacs_settings, node, mr.study_uid, protocol=proto)
        assert again == [folder]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert cache_series(pacs_settings) == [folder] and partial_leftovers(pacs_settings) == []
    assert np.array_equal(load_scan(folder).array, vol.array)


def test_cli_retrieve_prints_the_cached_folder(orthanc, pacs_settings, capsys):
    ct = orthanc.extra["studies"]["ct"]
    assert pacs_command(["retrieve", f"pacs://orthanc/studies/{ct.study_uid}", "--protocol", "dicomweb"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder.name == ct.series_uid and len(list(folder.glob("*.dcm"))) == ct.n_instances


def test_unknown_study_is_not_found(pacs_settings):
    with pytest.raises(pacs.PacsNotFoundError):
        pacs.retrieve(pacs_settings, pacs_settings.node("orthanc"), "1.2.3.999", protocol="dimse")
    assert cache_series(pacs_settings) == []


def test_wrong_credentials(orthanc, pacs_settings, monkeypatch, capsys):
    monkeypatch.setenv("SEG_APP_TEST_PACS_PASSWORD", "not-the-password")
    with pytest.raises(pacs.PacsAuthError, match="HTTP 401") as info:
        pacs.echo(pacs_settings.node("orthanc"), "dicomweb")
    assert "not-the-password" not in str(info.value)
    assert pacs_command(["find", "orthanc", "--protocol", "dicomweb"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: PACS node 'orthanc'") and err.count("\n") == 1 and "not-the-password" not in err


def test_association_rejected_for_a_wrong_called_ae_title(orthanc, tmp_path):
    node = pacs.PacsNode(name="bad-aet", ae_title="NOTORTHANC", host="127.0.0.1", port=orthanc.dicom_port, timeout_s=10)
    with pytest.raises(pacs.PacsAssociationRejected, match="NOTORTHANC"):
        pacs.echo(node, "dimse", CALLING_AET)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_down_is_one_clear_error_after_retries(tmp_path, monkeypatch, protocol):
    port = free_port()  # nothing listens there
    node = pacs.PacsNode(name="down", ae_title=AET, host="127.0.0.1", port=port, dicomweb_url=f"http://127.0.0.1:{port}/dicom-web",
                         timeout_s=5, retries=2, backoff_s=0.01)
    settings = pacs.PacsSettings(nodes={"down": node}, local_ae_title=CALLING_AET, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(pacs.PacsConnectionError, match="'down'.*(cannot be reached|refused)"):
        pacs.retrieve(settings, node, "1.2.3", protocol=protocol)
    with pytest.raises(pacs.PacsConnectionError):
        pacs.echo(node, protocol, CALLING_AET)
    assert not settings.cache_root().exists() or cache_series(settings) == []


@pytest.fixture
def private_orthanc(tmp_path):
    server = start_orthanc(tmp_path / "orthanc")
    yield server
    server.stop()


@pytest.mark.parametrize("protocol,shape", [
    ("dimse", (24, 24, 8)),  # C-GET sends instance by instance: the kill always interrupts it
    # WADO-RS: big enough (16 MB) that the answer cannot sit complete in the socket buffers when the server dies
    pytest.param("dicomweb", (512, 512, 32), marks=pytest.mark.slow),
])
def test_server_killed_mid_retrieve_leaves_no_partial_series(private_orthanc, tmp_path, monkeypatch, protocol, shape):
    info, files = make_study(tmp_path / "big", patient_id="BIG", patient_name="BIG^ONE", birth_date="", study_date="20260101",
                             modality="MR", accession="", description="big", shape=shape)
    private_orthanc.upload(files)
    monkeypatch.setenv("SEG_APP_TEST_PACS_PASSWORD", PASSWORD)
    node = pacs.PacsNode(**{"name": "dying", **{k: v for k, v in private_orthanc.node_settings(retries=1, backoff_s=0.01).items()}})
    settings = pacs.PacsSettings(nodes={"dying": node}, local_ae_title=CALLING_AET, cache_dir=str(tmp_path / "cache"))

    def kill_on_first(done, total):
        if done == 1:
            private_orthanc.kill()

    with pytest.raises(pacs.PacsConnectionError) as err:
        pacs.retrieve(settings, node, info.study_uid, info.series_uid, protocol=protocol, progress=kill_on_first)
    assert not private_orthanc.alive() and "'dying'" in str(err.value)
    assert cache_series(settings) == [] and partial_leftovers(settings) == []


def test_cancelled_retrieve_leaves_nothing(orthanc, pacs_settings):
    import threading

    mr, node = orthanc.extra["studies"]["mr"], pacs_settings.node("orthanc")
    cancel = threading.Event()

    def cancel_on_second(done, total):
        if done == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        pacs.retrieve(pacs_settings, node, mr.study_uid, mr.series_uid, protocol="dimse", progress=cancel_on_second, cancel=cancel)
    assert cache_series(pacs_settings) == [] and partial_leftovers(pacs_settings) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_store_checks_every_status(orthanc, pacs_settings, tmp_path, protocol):
    node = pacs_settings.node("orthanc")
    ok, ok_files = make_study(tmp_path / "ok", patient_id=f"STORE-{protocol}", patient_name="STORE^OK", birth_date="",
                              study_date="20260201", modality="MR", accession="", description="stored", shape=(8, 8, 2))
    assert sorted(pacs.send(node, ok_files, protocol, CALLING_AET)) == sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in ok_files)
    (found,) = pacs.find_studies(node, pacs.StudyQuery(patient_id=f"STORE-{protocol}"), protocol, CALLING_AET)
    assert found.study_uid == ok.study_uid and found.n_instances == 2
    # the server's filter refuses series described "REFUSE ...": the store status must be checked
    _bad, bad_files = make_study(tmp_path / "bad", patient_id=f"REFUSED-{protocol}", patient_name="STORE^BAD", birth_date="",
                                 study_date="20260201", modality="MR", accession="", description="refused", shape=(8, 8, 2),
                                 series_description="REFUSE me")
    with pytest.raises(pacs.PacsStoreError, match="refused to store 2 of 2") as err:
        pacs.send(node, bad_files, protocol, CALLING_AET)
    assert len(err.value.failures) == 2 and isinstance(err.value, SegAppError)
    assert pacs.find_studies(node, pacs.StudyQuery(patient_id=f"REFUSED-{protocol}"), protocol, CALLING_AET) == []


def test_cache_root_follows_the_app_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SEG_APP_CACHE", str(tmp_path / "c"))
    assert pacs.PacsSettings().cache_root() == tmp_path / "c" / "pacs"
    monkeypatch.setenv("SEG_APP_PACS_SETTINGS", str(tmp_path / "p.json"))
    assert pacs.settings_path() == tmp_path / "p.json"


def test_seg_app_pacs_command_lists_nodes(tmp_path, monkeypatch, capsys):
    from seg_app.cli import main

    path = write_settings(tmp_path / "s.json", {"web": {"dicomweb_url": "https://u:p@h/dw"},
                                                "dicom": {"ae_title": "PACS", "host": "h", "port": 104}}, tmp_path)
    monkeypatch.setenv("SEG_APP_PACS_SETTINGS", str(path))
    assert main(["pacs", "nodes"]) == 0
    out = capsys.readouterr().out
    assert "dicom: dimse PACS@h:104 (default dimse)" in out and "web: dicomweb https://h/dw" in out and "u:p" not in out
