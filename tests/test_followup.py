"""Follow-up of one patient: registration, lesion matching, RECIST/RANO suggestions, ``seg-app followup``.

Real geometry: the baseline is the MNI152 template (2 mm, nilearn, offline) with two spherical lesions
drawn into image and mask. The follow-up is the same brain moved by a known rigid transform (5 degrees,
4 mm), stored on another grid (first axis flipped, origin shifted), with lesion A grown by a known volume
and a new lesion C; a second follow-up has both lesions shrunk and no new one. The follow-up image is
the baseline brain resampled through the transform (trilinear); lesions are drawn analytically on each
grid, so the masks carry no resampling error.
"""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from seg_app.core.followup import (
    DISCLAIMER_SUGGESTION, RegistrationError, assess_followup, identifier_warnings, identity_registration,
    landmark_registration, read_landmarks_csv, rigid_from_landmarks,
)
from seg_app.core.volume import Volume
from seg_app.followup_cli import followup_command
from transforms import rigid_matrix as _rigid

# lesion centres (RAS mm, baseline anatomy) and radii (mm)
A, B, C = np.array([28.0, -18.0, 18.0]), np.array([-30.0, 12.0, 28.0]), np.array([-22.0, -48.0, 8.0])
R_A, R_B, R_A_GROWN, R_C = 10.0, 7.0, 12.5, 6.0
R_A_SHRUNK, R_B_SHRUNK = 6.0, 4.0
LESION_VALUE = 1.4  # brighter than any brain tissue of the template (max ~1)


#: baseline anatomy -> follow-up scanner coordinates: 5 degrees about an oblique axis, 4 mm shift
TRUE = _rigid(5.0, (0.3, -0.2, 1.0), np.array([2.4, -2.0, 2.5]) / np.linalg.norm([2.4, -2.0, 2.5]) * 4.0)


@pytest.fixture(scope="module")
def brain():
    from nilearn.datasets import load_mni152_template

    t = load_mni152_template(resolution=2)
    return np.asarray(t.get_fdata(), np.float32), np.asarray(t.affine, np.float64)


def _world(shape, affine) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)


def _draw(image: np.ndarray, anatomy: np.ndarray, lesions) -> np.ndarray:
    """Lesion spheres (centre, radius in anatomy mm) into ``image``; returns the label map."""
    labels = np.zeros(image.shape, np.uint8)
    for centre, radius in lesions:
        inside = np.sum((anatomy - centre) ** 2, axis=-1) <= radius**2
        image[inside] = LESION_VALUE
        labels[inside] = 1
    return labels


def _follow_grid(shape, affine) -> np.ndarray:
    """Another grid for the follow-up: first axis flipped (LAS storage), origin moved by (3, -1, 2) mm."""
    f = affine.copy()
    f[:, 0] *= -1
    f[:3, 3] = affine[:3, 3] + affine[:3, 0] * (shape[0] - 1) + np.array([3.0, -1.0, 2.0])
    return f


def _followup(brain, lesions):
    img, aff = brain
    faff = _follow_grid(img.shape, aff)
    # follow-up voxel v: scanner point x = faff v, anatomy p = TRUE^-1 x, baseline voxel aff^-1 p
    m = np.linalg.inv(aff) @ np.linalg.inv(TRUE) @ faff
    fimg = ndimage.affine_transform(img, m[:3, :3], m[:3, 3], output_shape=img.shape, order=1).astype(np.float32)
    anatomy = _world(img.shape, np.linalg.inv(TRUE) @ faff)
    labels = _draw(fimg, anatomy, lesions)
    return fimg, faff, labels


@pytest.fixture(scope="module")
def case(brain, tmp_path_factory):
    """Files of the baseline and the two follow-ups, plus what they should give."""
    img, aff = brain
    d = tmp_path_factory.mktemp("followup")
    bimg = img.copy()
    blab = _draw(bimg, _world(img.shape, aff), [(A, R_A), (B, R_B)])
    nib.save(nib.Nifti1Image(bimg, aff), d / "baseline.nii.gz")
    nib.save(nib.Nifti1Image(blab, aff), d / "baseline_mask.nii.gz")
    for name, lesions in (("grown", [(A, R_A_GROWN), (B, R_B), (C, R_C)]), ("shrunk", [(A, R_A_SHRUNK), (B, R_B_SHRUNK)])):
        fimg, faff, flab = _followup(brain, lesions)
        nib.save(nib.Nifti1Image(fimg, faff), d / f"followup_{name}.nii.gz")
        nib.save(nib.Nifti1Image(flab, faff), d / f"followup_{name}_mask.nii.gz")
    return d


def _registration_error_mm(matrix: np.ndarray, brain) -> float:
    """Mean distance between the recovered and the true transform over the brain's voxels."""
    img, aff = brain
    pts = np.argwhere(img > 0.2)[::7] @ aff[:3, :3].T + aff[:3, 3]
    est = pts @ matrix[:3, :3].T + matrix[:3, 3]
    true = pts @ TRUE[:3, :3].T + TRUE[:3, 3]
    return float(np.linalg.norm(est - true, axis=1).mean())


def _sphere_ml(r_mm: float) -> float:
    return 4.0 / 3.0 * math.pi * r_mm**3 / 1000.0


@pytest.fixture(scope="module")
def grown_run(case, tmp_path_factory):
    """``seg-app followup`` on the grown case with the masks given (automatic registration)."""
    out = tmp_path_factory.mktemp("out_grown")
    rc = followup_command([str(case / "baseline.nii.gz"), str(case / "followup_grown.nii.gz"), "--out", str(out),
                           "--baseline-mask", str(case / "baseline_mask.nii.gz"),
                           "--followup-mask", str(case / "followup_grown_mask.nii.gz")])
    assert rc == 0
    return out, json.loads((out / "followup.json").read_text())


# ---- the acceptance test ---------------------------------------------------------------
def test_cli_recovers_transform_growth_new_lesion_and_categories(grown_run, brain):
    out, doc = grown_run
    reg = doc["registration"]
    assert reg["method"] == "mutual information"
    err = _registration_error_mm(np.array(reg["baseline_to_followup_ras"]), brain)
    assert err < 1.0, f"registration error {err:.2f} mm"
    assert reg["rotation_deg"] == pytest.approx(5.0, abs=0.5)
    assert reg["correlation_after"] > reg["correlation_before"]
    tracks = doc["tracks"]
    by_status = {}
    for t in tracks:
        by_status.setdefault(t["status"], []).append(t)
    assert sorted(by_status) == ["matched", "new"] and len(by_status["matched"]) == 2 and len(by_status["new"]) == 1
    # lesion A: baseline track 1 (the largest); grown by a known volume
    a = tracks[0]
    true_growth = _sphere_ml(R_A_GROWN) - _sphere_ml(R_A)
    measured = a["change"]["volume_ml"]
    assert measured == pytest.approx(true_growth, rel=0.05), (measured, true_growth)
    assert a["baseline"]["long_axis_mm"] == pytest.approx(2 * R_A, abs=2.5)
    assert a["followup"]["long_axis_mm"] == pytest.approx(2 * R_A_GROWN, abs=2.5)
    assert a["matched_by"] == "overlap" and a["target"]
    b = tracks[1]
    assert abs(b["change"]["volume_percent"]) < 5
    new = by_status["new"][0]
    assert new["baseline"]["volume_ml"] == 0 and new["followup"]["volume_ml"] == pytest.approx(_sphere_ml(R_C), rel=0.1)
    assert new["change"]["volume_percent"] is None
    assert doc["totals"]["new_lesions"] == 1 and doc["totals"]["disappeared_lesions"] == 0
    recist, rano = doc["response"]["recist_1_1"], doc["response"]["rano_2_0_volumetric"]
    # sum of long axes grows by less than 20 %: PD because of the new lesion
    assert recist["category"] == "PD" and recist["change_percent"] < 20 and "1 new lesion(s)" in recist["reasons"]
    assert rano["category"] == "PD" and rano["change_percent"] > 40
    assert recist["label"] == rano["label"] == DISCLAIMER_SUGGESTION
    assert doc["app"]["disclaimer"].startswith("Research use only")
    assert any("not DICOM" in w for w in doc["warnings"])  # NIfTI: the patient cannot be checked


def test_cli_writes_csv_png_and_follow_up_map(grown_run, case):
    out, doc = grown_run
    rows = list(csv.DictReader((out / "followup.csv").open()))
    assert [r["track"] for r in rows] == ["1", "2", "3", "total"]
    assert rows[2]["status"] == "new" and rows[2]["volume_change_percent"] == ""
    assert float(rows[-1]["followup_volume_ml"]) == pytest.approx(doc["totals"]["followup"]["volume_ml"], rel=1e-5)
    png = (out / "followup.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    m = nib.load(out / "followup_labels_on_baseline.nii.gz")
    np.testing.assert_allclose(m.affine, nib.load(case / "baseline.nii.gz").affine, atol=1e-5)
    on_base = np.asarray(m.dataobj)
    assert set(np.unique(on_base)) == {0, 1, 2, 3}
    # follow-up lesion 1 (A, grown) lands on baseline lesion A after registration
    base = np.asarray(nib.load(case / "baseline_mask.nii.gz").dataobj)
    a_mask = ndimage.label(base)[0]
    a_id = a_mask[tuple(np.round(np.linalg.inv(m.affine) @ np.r_[A, 1])[:3].astype(int))]
    assert np.all(on_base[a_mask == a_id] == 1)
    assert not list(out.glob(".*"))  # no temporary files left


def test_partial_response_with_landmarks(case, brain, tmp_path, capsys):
    """Both lesions shrink, no new lesion: PR by both criteria; landmarks give the transform exactly."""
    pts = np.array([[0, 0, 0], [40, 0, 0], [0, 50, 0], [0, 0, 30], [-30, -40, 20]], float)
    moved = pts @ TRUE[:3, :3].T + TRUE[:3, 3]
    lm = tmp_path / "landmarks.csv"
    lm.write_text("name,baseline_x,baseline_y,baseline_z,followup_x,followup_y,followup_z\n"
                  + "".join(f"p{i},{p[0]},{p[1]},{p[2]},{q[0]:.4f},{q[1]:.4f},{q[2]:.4f}\n" for i, (p, q) in enumerate(zip(pts, moved))))
    out = tmp_path / "out"
    rc = followup_command([str(case / "baseline.nii.gz"), str(case / "followup_shrunk.nii.gz"), "--out", str(out),
                           "--baseline-mask", str(case / "baseline_mask.nii.gz"),
                           "--followup-mask", str(case / "followup_shrunk_mask.nii.gz"), "--landmarks", str(lm)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "RECIST 1.1: PR (partial response) [computed suggestion, not a diagnosis]" in printed
    doc = json.loads((out / "followup.json").read_text())
    reg = doc["registration"]
    assert reg["method"] == "landmarks" and reg["landmark_rms_mm"] < 1e-3 and reg["n_landmarks"] == 5
    assert _registration_error_mm(np.array(reg["baseline_to_followup_ras"]), brain) < 1e-3
    assert [t["status"] for t in doc["tracks"]] == ["matched", "matched"]
    recist, rano = doc["response"]["recist_1_1"], doc["response"]["rano_2_0_volumetric"]
    assert recist["category"] == "PR" and recist["change_percent"] <= -30
    assert rano["category"] == "PR" and rano["change_percent"] <= -65
    expected = (_sphere_ml(R_A_SHRUNK) + _sphere_ml(R_B_SHRUNK)) / (_sphere_ml(R_A) + _sphere_ml(R_B)) * 100 - 100
    assert rano["change_percent"] == pytest.approx(expected, abs=5)


def test_registration_is_repeatable(grown_run, case):
    """The core call gives bit for bit the matrix the CLI wrote (fixed sampling seed, one thread)."""
    from seg_app.core.followup import register_rigid
    from seg_app.core.io import load_scan

    _, doc = grown_run
    reg = register_rigid(load_scan(case / "baseline.nii.gz"), load_scan(case / "followup_grown.nii.gz"))
    np.testing.assert_array_equal(reg.matrix, np.array(doc["registration"]["baseline_to_followup_ras"]))


def test_without_simpleitk_and_matplotlib_landmarks_still_work(case, tmp_path, monkeypatch, capsys):
    """What the standalone bundle (no SimpleITK, no matplotlib) does: a clear error, or landmarks and no PNG."""
    import sys

    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    argv = [str(case / "baseline.nii.gz"), str(case / "followup_shrunk.nii.gz"),
            "--baseline-mask", str(case / "baseline_mask.nii.gz"), "--followup-mask", str(case / "followup_shrunk_mask.nii.gz")]
    rc = followup_command([*argv, "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs the SimpleITK package" in err[0] and "--landmarks" in err[0]
    lm = tmp_path / "lm.csv"
    lm.write_text("0,0,0,0,0,0\n40,0,0,40,0,0\n0,50,0,0,50,0\n")  # identity: fine for this check
    rc = followup_command([*argv, "--out", str(tmp_path / "b"), "--landmarks", str(lm)])
    captured = capsys.readouterr()
    assert rc == 0 and "no followup.png written: the report needs matplotlib" in captured.err
    assert (tmp_path / "b" / "followup.json").exists() and not (tmp_path / "b" / "followup.png").exists()


# ---- core pieces -----------------------------------------------------------------------------
def test_rigid_from_landmarks_is_exact_and_refuses_bad_points():
    rng = np.random.default_rng(3)
    p = rng.uniform(-60, 60, (6, 3))
    m, rms = rigid_from_landmarks(p, p @ TRUE[:3, :3].T + TRUE[:3, 3])
    np.testing.assert_allclose(m, TRUE, atol=1e-9)
    assert rms < 1e-9 and np.linalg.det(m[:3, :3]) == pytest.approx(1.0)
    with pytest.raises(RegistrationError, match="at least 3"):
        rigid_from_landmarks(p[:2], p[:2])
    line = np.outer(np.arange(4.0), [1.0, 2.0, 3.0])
    with pytest.raises(RegistrationError, match="one line"):
        rigid_from_landmarks(line, line)


def test_read_landmarks_csv_forms(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("# comment\n1,2,3,4,5,6\n7,8,9,10,11,12\n0,1,0,1,1,1\n")
    b, f = read_landmarks_csv(plain)
    assert b.shape == f.shape == (3, 3) and f[1].tolist() == [10, 11, 12]
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,z\n1,2,3\n")
    with pytest.raises(RegistrationError, match="columns"):
        read_landmarks_csv(bad)


def _small(shape=(40, 40, 30), affine=None, **kw) -> Volume:
    aff = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    return Volume(np.zeros((1, *shape), np.float32), aff, **kw)


def test_split_merge_disappear_and_complete_response():
    scan = _small()
    base = np.zeros(scan.shape, np.uint8)
    base[2:10, 2:10, 2:10] = 1  # 16 mm: target, splits in two
    base[20:26, 20:26, 2:8] = 1  # 12 mm: target, disappears
    base[30:35, 2:7, 15:20] = 1  # 10 mm (+ merges with the next one)
    base[30:35, 9:14, 15:20] = 1
    follow = np.zeros_like(base)
    follow[2:10, 2:5, 2:10] = 1
    follow[2:10, 7:10, 2:10] = 1
    follow[30:35, 2:14, 15:20] = 1
    res = assess_followup(scan, base, scan, follow, identity_registration(scan, scan))
    status = sorted(t.status for t in res.tracks)
    assert status == ["disappeared", "merged", "split"]
    split = next(t for t in res.tracks if t.status == "split")
    assert len(split.followup_ids) == 2
    fragments = [les.long_axis_mm for les in res.followup.lesions if les.lesion_id in split.followup_ids]
    assert split.followup.long_axis_mm == pytest.approx(sum(fragments)) and min(fragments) > 16.0  # RECIST: added
    assert res.recist.category in ("SD", "PD", "PR")
    # everything gone -> CR by both criteria
    gone = assess_followup(scan, base, scan, np.zeros_like(base), identity_registration(scan, scan))
    assert gone.recist.category == "CR" and gone.rano.category == "CR"
    assert all(t.status == "disappeared" for t in gone.tracks)


def test_matching_by_centroid_distance_and_equivocal_new_lesion():
    scan = _small()
    base = np.zeros(scan.shape, np.uint8)
    base[10:16, 10:16, 10:16] = 1
    follow = np.zeros_like(base)
    follow[17:22, 10:16, 10:16] = 1  # moved by 7 voxels (14 mm centroid shift... too far) -> new + disappeared
    res = assess_followup(scan, base, scan, follow, identity_registration(scan, scan), max_distance_mm=10.0)
    assert sorted(t.status for t in res.tracks) == ["disappeared", "new"]
    res = assess_followup(scan, base, scan, follow, identity_registration(scan, scan), max_distance_mm=20.0)
    assert [t.status for t in res.tracks] == ["matched"] and res.tracks[0].matched_by == "distance"
    tiny = follow.copy()
    tiny[30:32, 30:32, 20:21] = 1  # 4 mm: listed as new but equivocal, no PD from it
    res = assess_followup(scan, base, scan, tiny, identity_registration(scan, scan), max_distance_mm=20.0)
    assert "new (equivocal)" in [t.status for t in res.tracks]
    assert res.recist.category != "PD" or "new lesion" not in " ".join(res.recist.reasons)


def test_rano_measurable_needs_two_axial_slices():
    """RANO measurable disease: both perpendicular diameters >= 10 mm *and* seen on >= 2 axial slices; a flat
    disc on one 5 mm slice shrinking by 75 % is SD, the same disc over two slices is PR."""
    scan = Volume(np.zeros((1, 40, 40, 6), np.float32), np.diag([1.0, 1.0, 5.0, 1.0]))
    ii, jj = np.indices((40, 40))
    disc = lambda r: (ii - 20) ** 2 + (jj - 20) ** 2 <= r * r  # noqa: E731
    for n_slices, expected in ((1, "SD"), (2, "PR")):
        base = np.zeros(scan.shape, np.uint8)
        follow = np.zeros_like(base)
        base[:, :, 2:2 + n_slices] = disc(8.0)[..., None]  # 17 x 17 mm
        follow[:, :, 2:2 + n_slices] = disc(4.0)[..., None]
        res = assess_followup(scan, base, scan, follow, identity_registration(scan, scan))
        assert res.rano.change_percent <= -65
        assert res.rano.category == expected, res.rano.reasons
        assert res.rano.thresholds["measurable_axial_slices"] == 2
        if expected == "SD":
            assert "no measurable lesion" in " ".join(res.rano.reasons)

def test_identifier_mismatch_warns_without_naming_the_patient():
    a = _small(series_uid="1.2.3", meta={"PatientID": "P001", "PatientName": "DOE^JANE", "StudyDate": "20240101"})
    b = _small(series_uid="1.2.4", meta={"PatientID": "P002", "PatientName": "DOE^JANE", "StudyDate": "20230101"})
    w = identifier_warnings(a, b)
    assert any("different patient ID" in x for x in w)
    assert any("before the baseline" in x for x in w)
    assert not any("P001" in x or "P002" in x or "DOE" in x for x in w)
    same = _small(series_uid="1.2.5", meta={"PatientID": "P001", "StudyDate": "20240301"})
    assert identifier_warnings(a, same) == []
    res = assess_followup(a, np.zeros(a.shape, np.uint8), b, np.zeros(b.shape, np.uint8), identity_registration(a, b))
    assert any("different patient ID" in x for x in res.warnings)
    assert res.recist.category == "NE" and res.rano.category == "NE"  # no lesion at either time point


def test_landmark_registration_quality_numbers(brain):
    img, aff = brain
    vol = Volume(img[None], aff)
    pts = np.array([[0, 0, 0], [40, 0, 0], [0, 50, 0], [0, 0, 30]], float)
    reg = landmark_registration(vol, vol, pts, pts)
    assert reg.rotation_deg == pytest.approx(0, abs=1e-6) and reg.mean_displacement_mm == pytest.approx(0, abs=1e-6)
    assert reg.correlation_after == pytest.approx(1.0)


# ---- bad input --------------------------------------------------------------------------------
def test_cli_bad_inputs_are_one_clear_line(case, tmp_path, capsys):
    base = str(case / "baseline.nii.gz")
    follow = str(case / "followup_grown.nii.gz")
    for argv, needle in (
        ([base, str(tmp_path / "nope.nii.gz")], "nope.nii.gz"),
        ([base, follow, "--baseline-mask", str(tmp_path / "missing_mask.nii.gz"), "--followup-mask", base], "missing_mask"),
        ([base, follow, "--baseline-mask", base, "--followup-mask", base], "not a label map"),
        ([base, follow, "--landmarks", str(tmp_path / "lm.csv")], "lm.csv"),
    ):
        out = tmp_path / "o"
        rc = followup_command([*argv, "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
        assert not (out / "followup.json").exists()


def test_cli_segments_with_the_model_when_no_mask(case, tmp_path, monkeypatch, capsys):
    """Without masks the predict pipeline's Segmenter runs (a stand-in here: bright voxels are tumour)."""
    import seg_app.core.inference as inference
    from seg_app.core.spec import LabelSpec

    class FakeSegmenter:
        calls = 0

        def __init__(self, model=None, device="auto", tta=False, **_):
            FakeSegmenter.calls += 1

        def segment(self, volume, **_):
            from types import SimpleNamespace

            lab = (volume.array[0] > 1.2).astype(np.uint8)
            spec = SimpleNamespace(name="fake", version="0", network=SimpleNamespace(name="none"),
                                   labels=[LabelSpec(0, "background"), LabelSpec(1, "tumour")])
            return SimpleNamespace(labels=volume.with_array(lab[None]), spec=spec, warnings=("a model warning",),
                                   probabilities=None, device="cpu", seconds=0.1, agreement=None)

    monkeypatch.setattr(inference, "Segmenter", FakeSegmenter)
    pts = np.array([[0, 0, 0], [40, 0, 0], [0, 50, 0], [0, 0, 30]], float)
    lm = tmp_path / "lm.csv"
    lm.write_text("".join(",".join(f"{v:.5f}" for v in [*p, *(TRUE[:3, :3] @ p + TRUE[:3, 3])]) + "\n" for p in pts))
    out = tmp_path / "out"
    rc = followup_command([str(case / "baseline.nii.gz"), str(case / "followup_grown.nii.gz"), "--out", str(out),
                           "--landmarks", str(lm)])
    assert rc == 0, capsys.readouterr().err
    assert FakeSegmenter.calls == 1  # one model for both time points
    assert (out / "baseline_labels.nii.gz").exists() and (out / "followup_labels.nii.gz").exists()
    doc = json.loads((out / "followup.json").read_text())
    assert doc["baseline"]["mask"] == "segmented by the model"
    assert any("a model warning" in w for w in doc["warnings"])
    assert doc["totals"]["new_lesions"] == 1
