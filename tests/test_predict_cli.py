"""``seg-app predict``: outputs, one-line errors, nothing partial, several series, sample scans."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg_app import predict_cli
from seg_app.core.errors import ExportError
from test_inference import head_with_blob, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_APP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt"))


def write_nifti(path: Path, affine=None) -> Path:
    vol, _ = head_with_blob(affine=affine)
    nib.save(nib.Nifti1Image(vol.array[0], vol.affine), path)
    return path


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_predict_writes_aligned_mask_json_and_csv(tmp_path, model, capsys):
    src = write_nifti(tmp_path / "patient01.nii.gz", np.diag([-1.5, 1.2, 2.5, 1.0]))
    out = tmp_path / "out"
    rc = predict_cli.predict_command([str(src), "--model", model, "--out", str(out), "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert outputs(out) == ["patient01_labels.nii.gz", "patient01_measurements.csv", "patient01_measurements.json"]
    img, lab = nib.load(src), nib.load(out / "patient01_labels.nii.gz")
    assert lab.shape == img.shape and np.allclose(lab.affine, img.affine, atol=1e-5)
    assert np.issubdtype(lab.get_data_dtype(), np.integer)
    doc = json.loads((out / "patient01_measurements.json").read_text())
    assert doc["model"]["name"] == "tiny-test" and doc["model"]["version"]
    assert doc["source"]["path"] == str(src) and isinstance(doc["warnings"], list)
    n = len(doc["lesions"])
    for les in doc["lesions"]:
        for key in ("label", "volume_ml", "max_diameter_mm", "long_axis_mm", "short_axis_mm", "mean", "confidence", "centroid_ras_mm"):
            assert key in les
    assert sum(t["n_lesions"] for t in doc["totals"]) == n
    labels = np.asarray(lab.dataobj)
    assert sum(les["voxel_count"] for les in doc["lesions"]) == int((labels > 0).sum())
    rows = list(csv.DictReader((out / "patient01_measurements.csv").open()))
    assert len(rows) == n
    line = [ln for ln in cap.out.splitlines() if ln.startswith("patient01:")]
    assert len(line) == 1 and "lesion(s)" in line[0] and "mL" in line[0] and " s on " in line[0]


def test_bad_inputs_one_line_each_others_still_run(tmp_path, model, capsys):
    good = write_nifti(tmp_path / "good.nii.gz")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti at all")
    missing = tmp_path / "missing.nii.gz"
    two_channel = tmp_path / "twochannel.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20, 2), np.float32), np.eye(4)), two_channel)
    out = tmp_path / "out"
    rc = predict_cli.predict_command(
        [str(corrupt), str(missing), str(good), str(two_channel), "--model", model, "--out", str(out), "--device", "cpu"]
    )
    cap = capsys.readouterr()
    assert rc == 1
    errors = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(errors) == 3 and all(ln.startswith("error: ") for ln in errors), cap.err
    assert "corrupt.nii.gz" in errors[0] and "missing.nii.gz" in errors[1] and "twochannel" in errors[2]
    assert "channel" in errors[2] and "Traceback" not in cap.err
    assert outputs(out) == ["good_labels.nii.gz", "good_measurements.csv", "good_measurements.json"]
    assert "2 of 4" not in cap.out and "1 of 4 scan(s) done" in cap.out


def test_failing_writer_is_a_warning_for_that_output_only(tmp_path, model, capsys, monkeypatch):
    def broken(o, path):
        Path(path).write_text("half")  # a partial file that must not survive
        raise ExportError(f"Cannot write {path.name}: disk full.")

    monkeypatch.setitem(predict_cli.FORMATS, "csv", ("_measurements.csv", broken))
    src = write_nifti(tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    rc = predict_cli.predict_command([str(src), "--model", model, "--out", str(out), "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert any(l.startswith("warning: scan: no measurements CSV written") and "disk full" in l for l in cap.err.splitlines())
    assert outputs(out) == ["scan_labels.nii.gz", "scan_measurements.json"]  # the others are still written
    assert not list(out.glob(".*"))


def test_scan_whose_every_output_fails_leaves_nothing(tmp_path, model, capsys, monkeypatch):
    def broken(o, path):
        Path(path).write_text("half")
        raise ExportError(f"Cannot write {path.name}: disk full.")

    for fmt, (suffix, _w) in list(predict_cli.FORMATS.items()):
        monkeypatch.setitem(predict_cli.FORMATS, fmt, (suffix, broken))
    src = write_nifti(tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    rc = predict_cli.predict_command([str(src), "--model", model, "--out", str(out), "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 1 and "disk full" in cap.err
    assert [l for l in cap.err.splitlines() if l.startswith("error:")]
    assert list(out.iterdir()) == []


def test_format_selection_and_duplicate_names(tmp_path, model, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    s1, s2 = write_nifti(tmp_path / "a" / "scan.nii.gz"), write_nifti(tmp_path / "b" / "scan.nii.gz")
    out = tmp_path / "out"
    rc = predict_cli.predict_command([str(s1), str(s2), "--model", model, "--out", str(out), "--format", "json"])
    assert rc == 0, capsys.readouterr().err
    assert outputs(out) == ["scan_2_measurements.json", "scan_measurements.json"]
    with pytest.raises(SystemExit) as exc:
        predict_cli.predict_command([str(s1), "--model", model, "--format", "nifti,png"])
    assert exc.value.code == 2


def test_bad_model_is_one_line(tmp_path, capsys):
    src = write_nifti(tmp_path / "scan.nii.gz")
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"nope")
    rc = predict_cli.predict_command([str(src), "--model", str(bogus), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "bogus.pt" in err[0]


def test_dicom_folder_with_several_series_lists_them(tmp_path, model, capsys):
    from seg_app.core import dicom_write
    vol, _ = head_with_blob()
    vol = vol.with_array(vol.array * 100)
    folder = tmp_path / "study"
    dicom_write.write_dicom_series(vol, folder / "s1", series_description="T1 axial", series_number=1, series_uid="1.2.826.0.1.3680043.8.498.1")
    dicom_write.write_dicom_series(vol, folder / "s2", series_description="T1 post", series_number=2, series_uid="1.2.826.0.1.3680043.8.498.2")
    out = tmp_path / "out"
    rc = predict_cli.predict_command([str(folder), "--model", model, "--out", str(out), "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 1 and "1.2.826.0.1.3680043.8.498.1" in cap.err and "1.2.826.0.1.3680043.8.498.2" in cap.err
    assert cap.err.startswith("error: ") and "--series" in cap.err and "Traceback" not in cap.err
    assert not out.exists() or outputs(out) == []
    rc = predict_cli.predict_command(
        [str(folder), "--series", "1.2.826.0.1.3680043.8.498.2", "--model", model, "--out", str(out), "--device", "cpu"]
    )
    assert rc == 0, capsys.readouterr().err
    assert outputs(out) == ["T1_post_labels.nii.gz", "T1_post_measurements.csv", "T1_post_measurements.json"]
    from seg_app.core.io import load_scan

    src = load_scan(folder, series_uid="1.2.826.0.1.3680043.8.498.2")
    lab = nib.load(out / "T1_post_labels.nii.gz")
    assert lab.shape == src.shape and np.allclose(lab.affine, src.affine, atol=1e-4)


def test_console_script_end_to_end(tmp_path, model):
    """The real ``seg-app predict`` entry point, as a user runs it (one subprocess)."""
    src = write_nifti(tmp_path / "scan.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"x")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("seg-app")), "predict", str(src), str(bad), "--model", model, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env={**__import__("os").environ, "SEG_APP_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 1
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert "scan:" in proc.stdout and outputs(tmp_path / "o") == ["scan_labels.nii.gz", "scan_measurements.csv", "scan_measurements.json"]


SAMPLE_NIFTI = ROOT / "sample_scans" / "brain_tumour_mri.nii.gz"
SAMPLE_DICOM = ROOT / "sample_scans" / "brain_tumour_mri_dicom"
BUNDLED = ROOT / "seg_app" / "models" / "default_brain_tumour.pt"


@pytest.mark.slow
def test_sample_scans_with_bundled_model(tmp_path, capsys):
    out = tmp_path / "out"
    rc = predict_cli.predict_command([str(SAMPLE_NIFTI), str(SAMPLE_DICOM), "--out", str(out), "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    jsons = sorted(out.glob("*_measurements.json"))
    assert len(jsons) == 2 and len(list(out.glob("*_labels.nii.gz"))) == 2
    for j in jsons:
        doc = json.loads(j.read_text())
        total = sum(t["volume_ml"] for t in doc["totals"])
        assert 0.5 < total < 300, f"{j.name}: implausible tumour volume {total} mL"


def test_format_seg_writes_dicom_seg_for_dicom_and_warns_for_nifti(tmp_path, capsys):
    """``--format seg``: a SEG beside the other outputs for a DICOM series; for a NIfTI source a warning for
    the SEG only (checked before the model runs), and its other outputs are still written."""
    from seg_app.core.dicom_seg import read_dicom_seg
    from seg_app.core.io import load_scan

    out = tmp_path / "out"
    rc = predict_cli.predict_command([str(SAMPLE_DICOM), str(SAMPLE_NIFTI), "--out", str(out), "--device", "cpu",
                                      "--format", "nifti,json,seg"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    segs = list(out.glob("*_seg.dcm"))
    assert len(segs) == 1
    assert not [l for l in cap.err.splitlines() if l.startswith("error:")]
    warn = [l for l in cap.err.splitlines() if l.startswith("warning: brain_tumour_mri:") and "DICOM SEG" in l]
    assert len(warn) == 1 and "NIfTI" in warn[0]
    assert (out / "brain_tumour_mri_labels.nii.gz").is_file()
    doc = json.loads((out / "brain_tumour_mri_measurements.json").read_text())
    assert any("DICOM SEG" in w for w in doc["warnings"])
    ref = load_scan(SAMPLE_DICOM)
    nifti = [p for p in out.glob("*_labels.nii.gz") if p.name != "brain_tumour_mri_labels.nii.gz"]
    assert len(nifti) == 1
    seg = read_dicom_seg(segs[0], ref)
    assert np.array_equal(seg.array[0] > 0, np.asarray(nib.load(str(nifti[0])).dataobj) > 0)


def test_seg_refused_for_header_values_is_a_warning_for_that_output_only(tmp_path, capsys):
    """A PatientName holding a backslash (two values) makes highdicom refuse the SEG; the label map and
    the measurements are still written, and the JSON says why the SEG is missing."""
    from seg_app.core.dicom_write import write_dicom_series
    from seg_app.core.volume import Volume

    vol, _blob = head_with_blob()
    write_dicom_series(Volume(vol.array * 100, vol.affine, modality="MR"), tmp_path / "series",
                       patient_name="DOE^JANE\\SMITH^J", series_description="odd header")
    out = tmp_path / "out"
    rc = predict_cli.predict_command([str(tmp_path / "series"), "--model", str(tiny_checkpoint(tmp_path / "m.pt")),
                                      "--out", str(out), "--device", "cpu", "--format", "nifti,json,csv,seg"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert not list(out.glob("*_seg.dcm"))
    assert not list(out.glob(".*"))  # no temporary file left behind
    assert len(list(out.glob("*_labels.nii.gz"))) == 1 and len(list(out.glob("*_measurements.csv"))) == 1
    doc = json.loads(next(out.glob("*_measurements.json")).read_text())
    assert any(w.startswith("no DICOM SEG written") for w in doc["warnings"]), doc["warnings"]
    assert any(l.startswith("warning:") and "no DICOM SEG written" in l for l in cap.err.splitlines())


def test_output_names_from_header_text_never_start_with_a_dot():
    from seg_app.core.export import safe_file_name

    for text in ("../../x", ".hidden", "..", "./a/b", " .. / .. "):
        name = safe_file_name(text)
        assert name and not name.startswith(".") and "/" not in name, (text, name)
