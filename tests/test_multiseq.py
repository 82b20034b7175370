"""Multi-sequence studies: channel matching, assembly onto the reference grid, registration, ``predict --channel``.

The study is a synthetic head (ellipsoids: scalp, skull, grey and white matter, two ventricles, a tumour, an
orbit; an anatomical texture) drawn analytically for each sequence (T1, T1c, T2) on each series' own grid, so
there is no resampling error in the inputs. The T2 series is in another frame of reference: the head moved
by a known rigid transform (6 degrees, 4.9 mm) and stored on a sagittal grid; registration must find it back
within 1 mm everywhere in the head.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from seg_app.core.dicom_write import write_dicom_series
from seg_app.core.errors import IncompatibleInputError
from seg_app.core.io import load_scan
from seg_app.core.multiseq import (
    Candidate, assemble_study, channels_from_volume, load_channels, match_channels, sequence_role, study_candidates,
)
from seg_app.core.volume import Volume
from transforms import rigid_matrix as _rigid


# ---- the synthetic head --------------------------------------------------------------------------------
#: reference anatomy (T1c's scanner coordinates) -> the T2 series' scanner coordinates
TRUE = _rigid(6.0, (0.3, -0.2, 1.0), (3.0, -2.5, 3.0))
# centre, semi-axes (mm), then T1, T1c, T2 values; painted in order
_STRUCTURES = [
    ((0, 0, 0), (72, 88, 68), 0.35, 0.35, 0.5),  # scalp
    ((0, 0, 0), (66, 82, 62), 0.05, 0.05, 0.1),  # skull
    ((0, 0, 0), (61, 77, 57), 0.55, 0.6, 0.75),  # grey matter
    ((0, 2, 4), (53, 68, 48), 0.85, 0.85, 0.45),  # white matter
    ((-9, 8, 10), (6, 22, 9), 0.15, 0.15, 1.0),  # ventricles
    ((10, 5, 8), (8, 18, 10), 0.15, 0.15, 1.0),
    ((28, -20, 14), (13, 13, 13), 0.45, 1.0, 0.9),  # tumour (enhancing)
    ((-30, 70, -30), (10, 10, 10), 0.2, 0.2, 0.95),  # orbit
]
_SEQ = {"t1": 2, "t1c": 3, "t2": 4}
REF_SPACING, REF_SHAPE = 2.0, (80, 96, 76)


def _head(points: np.ndarray, seq: str) -> np.ndarray:
    col = _SEQ[seq]
    val = np.zeros(len(points))
    for s in _STRUCTURES:
        c, ax = np.asarray(s[0], float), np.asarray(s[1], float)
        d = (np.linalg.norm((points - c) / ax, axis=1) - 1.0) * ax.min()
        w = 1.0 / (1.0 + np.exp(np.clip(d / 1.5, -50, 50)))  # 1.5 mm soft edges
        val = val * (1 - w) + s[col] * w
    x, y, z = points.T
    val *= 1.0 + 0.25 * np.sin(x / 5.0 + 0.3) * np.sin(y / 6.0) * np.sin(z / 4.5 + 0.5)
    return (val * 1000).astype(np.float32)


def _points(shape, affine) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _image(shape, affine, seq: str, anatomy_from_world=np.eye(4)) -> Volume:
    return Volume(_head(_points(shape, anatomy_from_world @ affine), seq).reshape(shape), affine, modality="MR")


def _ref_affine() -> np.ndarray:
    a = np.diag([REF_SPACING] * 3 + [1.0])
    a[:3, 3] = -(np.array(REF_SHAPE) - 1) / 2 * REF_SPACING
    return a


def _t1_affine() -> np.ndarray:
    """Same frame of reference, another grid: 3 mm, origin shifted."""
    a = np.diag([3.0, 3.0, 3.0, 1.0])
    a[:3, 3] = [-77.0, -93.5, -70.0]
    return a


def _sagittal_affine(shape=(92, 72, 84), sp=(2.2, 2.4, 2.0)) -> np.ndarray:
    """i along -A, j along -S, k along +R (a sagittal series)."""
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2] = [0, -sp[0], 0], [0, 0, -sp[1]], [sp[2], 0, 0]
    m[:3, 3] = [-(shape[2] - 1) / 2 * sp[2] + 2, (shape[0] - 1) / 2 * sp[0] - 3, (shape[1] - 1) / 2 * sp[1] + 1.5]
    return m


def _add_protocol(files, protocol: str) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ProtocolName = protocol
        ds.save_as(f)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One DICOM study folder: T1c (reference, frame A), T1 (frame A, other grid), T2 (frame B, moved)."""
    root = tmp_path_factory.mktemp("study")
    folder = root / "study"
    study_uid, frame_a, frame_b = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"
    t1c = _image(REF_SHAPE, _ref_affine(), "t1c")
    write_dicom_series(t1c, folder / "s1", series_description="AX T1 POST GD", series_number=5, study_uid=study_uid,
                       frame_of_reference_uid=frame_a)
    write_dicom_series(_image((52, 64, 48), _t1_affine(), "t1"), folder / "s2", series_description="Ax T1 SE",
                       series_number=2, study_uid=study_uid, frame_of_reference_uid=frame_a)
    files = write_dicom_series(_image((92, 72, 84), _sagittal_affine(), "t2", np.linalg.inv(TRUE)), folder / "s3",
                               series_description="AX T2 FSE", series_number=3, study_uid=study_uid,
                               frame_of_reference_uid=frame_b)
    _add_protocol(files, "t2_tse_tra")
    return folder


def _uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


# ---- heuristics -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, role", [
    ("AX T1 POST GD", "t1c"), ("Ax T1 SE", "t1"), ("AX T2 FSE", "t2"), ("AX T2 FLAIR", "flair"),
    ("sag mprage +c", "t1c"), ("SAG MPRAGE", "t1"), ("COR T1 C+", "t1c"), ("AX T1 W/C", "t1c"),
    ("T1W_3D_TFE +C", "t1c"), ("t1_mprage_sag_p2_iso", "t1"), ("T1 pre", "t1"), ("t2_tse_tra", "t2"),
    ("t2_tirm_tra_dark-fluid", "flair"), ("T2 dark fluid", "flair"),
    # BraTS 2023, BraTS 2020/2021 file names; MSD / model channel names
    ("BraTS-GLI-00000-000-t1c.nii.gz", "t1c"), ("BraTS-GLI-00000-000-t1n.nii.gz", "t1"),
    ("BraTS-GLI-00000-000-t2w.nii.gz", "t2"), ("BraTS-GLI-00000-000-t2f.nii.gz", "flair"),
    ("BraTS20_Training_001_t1ce.nii.gz", "t1c"), ("BraTS20_Training_001_t1.nii.gz", "t1"),
    ("BraTS20_Training_001_t2.nii.gz", "t2"), ("BraTS20_Training_001_flair.nii.gz", "flair"),
    ("case-t1ce.nii", "t1c"), ("FLAIR", "flair"), ("T1w", "t1"), ("t1gd", "t1c"), ("T2w", "t2"), ("T1c", "t1c"),
    # not one of the four: never guessed
    ("AX T2* GRE", None), ("AX DWI B1000", None), ("ADC", None), ("localizer", None), ("T1 SUB", None),
    ("Ax T1 FLAIR", None), ("BraTS20_Training_001_seg.nii.gz", None), ("", None),
])
def test_sequence_role(text, role):
    assert sequence_role(text)[0] == role


def _c(desc: str, uid: str, protocol: str = "", image_type=()) -> Candidate:
    return Candidate("/study", uid, desc, protocol, tuple(image_type))


def test_match_realistic_study():
    cands = [_c("3 PLANE LOC", "1", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")), _c("Ax T1 SE", "2"),
             _c("AX T2 FSE", "3"), _c("AX T2 FLAIR", "4"), _c("AX DWI", "5"), _c("AX T1 POST GD", "6"),
             _c("AX T1 POST GD MPR", "7", image_type=("DERIVED", "SECONDARY", "MPR"))]
    m = match_channels(["T1c", "T1w", "T2w", "FLAIR"], cands)
    assert m.complete and {ch: c.series_uid for ch, c in m.mapping.items()} == {"T1c": "6", "T1w": "2", "T2w": "3",
                                                                                "FLAIR": "4"}
    assert m.confidence["T1w"] == 1.0 and m.confidence["T1c"] < 1.0  # the reformat also looked like T1c
    assert 0 < m.overall_confidence < 1 and len(m.lines()) == 4


def test_match_ambiguous_and_missing_are_reported_not_guessed():
    m = match_channels(["t1c", "t1", "flair"], [_c("AX T1 POST GD", "1"), _c("COR T1 POST GD", "2"), _c("Ax T1 SE", "3")])
    assert set(m.unmatched) == {"t1c", "flair"} and m.mapping["t1"].series_uid == "3"
    assert "ambiguous" in m.unmatched["t1c"] and "AX T1 POST GD" in m.unmatched["t1c"]
    assert "no series looks like FLAIR" in m.unmatched["flair"] and m.overall_confidence == 0.0
    # description and protocol disagree: not guessed either
    assert not match_channels(["T2w"], [_c("AX T2 FSE", "1", protocol="t1_se_tra")]).mapping
    # the protocol names the sequence when the description does not
    assert match_channels(["T2w"], [_c("SERIES 3", "1", protocol="t2_tse_tra")]).mapping["T2w"].series_uid == "1"


def test_match_brats_files_and_msd_names(tmp_path):
    case = tmp_path / "BraTS-GLI-00000-000"
    case.mkdir()
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    for suffix in ("t1c", "t1n", "t2w", "t2f", "seg"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), aff), case / f"BraTS-GLI-00000-000-{suffix}.nii.gz")
    cands = study_candidates(case)
    assert len(cands) == 4  # the label map is not a candidate
    m = match_channels(["FLAIR", "T1w", "t1gd", "T2w"], cands)  # MSD Task01 channel names
    assert m.complete and {ch: Path(c.path).name[-10:-7] for ch, c in m.mapping.items()} == {
        "FLAIR": "t2f", "T1w": "t1n", "t1gd": "t1c", "T2w": "t2w"}
    assert match_channels(["t1c", "t1"], [str(p) for p in sorted(case.glob("*.nii.gz"))]).complete  # plain paths


def test_study_candidates_of_a_dicom_folder(study):
    cands = study_candidates(study)
    assert sorted(c.description for c in cands) == ["AX T1 POST GD", "AX T2 FSE", "Ax T1 SE"]
    t2 = next(c for c in cands if c.description == "AX T2 FSE")
    assert t2.protocol == "t2_tse_tra" and t2.frame_of_reference_uid.endswith(".3") and t2.key.startswith(str(study))
    m = match_channels(["T1w", "T1c"], cands)
    assert m.complete and m.mapping["T1c"].description == "AX T1 POST GD"
    # a series given on the command line (its folder, or FOLDER::UID) is recognised, so it is not matched twice
    post = m.mapping["T1c"]
    assert post.same_source(study / "s1") and not post.same_source(study / "s2")
    assert post.same_source(study, post.series_uid) and not post.same_source(study, "1.2.3")


# ---- assembly --------------------------------------------------------------------------------------------
def test_same_frame_assembly_is_exact():
    rng = np.random.default_rng(0)
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    aff[:3, 3] = [-30, -40, -20]
    ref = Volume(rng.normal(size=(48, 48, 48)).astype(np.float32), aff, modality="MR", meta={"PatientID": "P1"},
                 source_paths=("/data/t1c.nii.gz",))
    same = Volume(rng.normal(size=(48, 48, 48)).astype(np.float32), aff, modality="MR")
    shifted_aff = aff.copy()
    shifted_aff[:3, 3] += aff[:3, :3] @ np.array([3, -2, 5])  # the same grid moved by whole voxels
    shifted = Volume(rng.normal(size=(48, 48, 48)).astype(np.float32), shifted_aff, modality="MR")
    vol, records = assemble_study(ref, {"t1": same, "t2": shifted}, ["t1c", "t1", "t2"])
    assert vol.channel_names == ("t1c", "t1", "t2") and vol.array.shape == (3, 48, 48, 48)
    np.testing.assert_array_equal(vol.array[0], ref.array[0])
    np.testing.assert_array_equal(vol.array[1], same.array[0])
    # reference voxel v is voxel v - (3, -2, 5) of the shifted series
    np.testing.assert_allclose(vol.array[2, 3:, :46, 5:], shifted.array[0, :45, 2:, :43], atol=1e-5)
    assert np.all(vol.array[2, :3] == 0)  # outside the shifted series' field of view
    assert [r.method for r in records] == ["identity", "same-frame", "same-frame"]
    assert all(np.array_equal(r.transform, np.eye(4)) for r in records)
    np.testing.assert_array_equal(vol.affine, ref.affine)
    assert vol.meta["PatientID"] == "P1" and vol.source_paths == ref.source_paths and not vol.warnings
    assert [c["channel"] for c in vol.meta["channels"]] == ["t1c", "t1", "t2"]
    json.dumps(vol.meta["channels"])  # JSON-able as is


def test_assembly_refuses_what_does_not_fit():
    ref = Volume(np.zeros((8, 8, 8), np.float32), np.eye(4))
    with pytest.raises(IncompatibleInputError, match="missing t2"):
        assemble_study(ref, {"t1": ref}, ["t1c", "t1", "t2"], "t1c")
    with pytest.raises(IncompatibleInputError, match="2 channels"):
        assemble_study(ref, {"t1": ref.replace(array=np.zeros((2, 8, 8, 8), np.float32))}, ["t1c", "t1"])


def test_4d_file_gives_the_channels_in_file_order():
    vol = Volume(np.arange(2 * 27, dtype=np.float32).reshape(2, 3, 3, 3), np.eye(4), channel_names=("T1w", "T1c"))
    out, records = channels_from_volume(vol, ["T1w", "T1c"])
    assert out.channel_names == ("T1w", "T1c") and [r.method for r in records] == ["identity", "identity"]
    assert [c["file_channel"] for c in out.meta["channels"]] == [0, 1]
    _, _ = channels_from_volume(vol.replace(channel_names=("FLAIR", "T2w")), ["T1w", "T1c"])
    with pytest.raises(IncompatibleInputError, match="2 channels but the model takes 3"):
        channels_from_volume(vol, ["a", "b", "c"])


def test_checkerboard_alternates_blocks_of_the_two_images():
    from seg_app.core.multiseq import checkerboard

    a = np.zeros((16, 16, 16), np.float32)
    a[:, 8:] = 100  # 0 / 100
    b = 5000 - 40 * a  # 5000 / 1000: inverted contrast, another range
    cb = checkerboard(a, b, block_vox=4)  # each scaled from its own 1st-99th percentile to 0..1000
    assert cb[1, 1, 1] == 0 and cb[5, 1, 1] == 1000 and cb[5, 5, 1] == 0 and cb[5, 5, 5] == 1000
    assert cb[1, 9, 1] == 1000 and cb[1, 9, 5] == 0  # j >= 8: a is bright, b dark
    with pytest.raises(ValueError):
        checkerboard(a, b[:8])


def test_two_frames_of_reference_registered_within_1mm(study):
    """The acceptance test of the issue: DICOM T2 in another frame of reference, known rigid transform."""
    t0 = time.perf_counter()
    sources = {c.description: c for c in study_candidates(study)}
    vol, records = load_channels({"T1c": sources["AX T1 POST GD"], "T2w": sources["AX T2 FSE"],
                                  "T1w": sources["Ax T1 SE"]}, ["T1w", "T1c", "T2w"], reference_name="T1c")
    seconds = time.perf_counter() - t0
    ref = load_scan(study / "s1")
    rec = {r.channel: r for r in records}
    assert [r.method for r in records] == ["same-frame", "identity", "registered"]
    assert rec["T2w"].registration["method"] == "mutual information"
    # error: largest distance between the recovered and the true transform over the brain (grey matter ellipsoid)
    head = ref.array[0] > 100
    world = _points(ref.shape, ref.affine)
    pts = world[np.linalg.norm(world / np.array(_STRUCTURES[2][1]), axis=1) <= 1.0]
    err = np.linalg.norm((pts @ rec["T2w"].transform[:3, :3].T + rec["T2w"].transform[:3, 3])
                         - (pts @ TRUE[:3, :3].T + TRUE[:3, 3]), axis=1)
    print(f"registration error over the brain: max {err.max():.2f} mm, mean {err.mean():.2f} mm "
          f"({len(pts)} voxels, load + register + resample {seconds:.1f} s)")
    assert err.max() < 1.0
    # the registered T2 now looks like the T2 drawn directly on the reference grid (every 5th head voxel)
    idx = np.flatnonzero(head)[::5]
    expected_t2 = _head(world[idx], "t2")
    assert np.corrcoef(vol.array[2].reshape(-1)[idx], expected_t2)[0, 1] > 0.95
    # the result keeps the reference series' identity, and says what was done
    assert vol.series_uid == ref.series_uid and vol.meta["SOPInstanceUIDs"] == ref.meta["SOPInstanceUIDs"]
    np.testing.assert_array_equal(vol.affine, ref.affine)
    assert vol.channel_names == ("T1w", "T1c", "T2w")
    assert sum("registered rigidly" in w and "'T2w'" in w for w in vol.warnings) == 1
    assert not any("'T1w'" in w and "registered" in w for w in vol.warnings)
    doc = vol.meta["channels"][2]
    assert doc["series_description"] == "AX T2 FSE" and doc["frame_of_reference_uid"].endswith(".3")
    np.testing.assert_allclose(np.array(doc["reference_to_channel_ras"]), rec["T2w"].transform)
    # the T1 in the same frame of reference was resampled, not registered: equal to T1 drawn on the reference grid
    inner = idx[vol.array[0].reshape(-1)[idx] > 0]
    error = np.abs(vol.array[0].reshape(-1)[inner] - _head(world[inner], "t1"))
    assert error.mean() < 25  # trilinear from 3 mm; values 0..1000


# ---- seg-app predict --channel / study folders ---------------------------------------------------------
@pytest.fixture(scope="module")
def model2(tmp_path_factory):
    """A tiny random 2-channel model (T1w, T1c) on a 4 mm grid."""
    from checkpoints import make_tiny_checkpoint
    from seg_app.core.spec import InferenceSpec

    path = tmp_path_factory.mktemp("model2") / "two_channels.pt"
    return str(make_tiny_checkpoint(path, in_channels=2, spacing=(4.0, 4.0, 4.0),
                                    inference=InferenceSpec(roi_size=(32, 32, 32), overlap=0.25, sw_batch_size=2)))


def _predict(argv):
    from seg_app.predict_cli import predict_command

    return predict_command([*argv, "--device", "cpu", "--backend", "torch"])


def test_predict_with_channels_writes_outputs_on_the_reference_grid(study, model2, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _predict(["--model", model2, "--channel", f"T1c={study / 's1'}", "--channel", f"t1={study / 's2'}",
                   "--format", "nifti,json,seg", "--out", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    ref = load_scan(study / "s1")
    labels = nib.load(out / "AX_T1_POST_GD_labels.nii.gz")
    assert labels.shape == ref.shape and np.allclose(labels.affine, ref.affine, atol=1e-4)
    doc = json.loads((out / "AX_T1_POST_GD_measurements.json").read_text())
    src = doc["source"]
    assert src["series_uid"] == ref.series_uid and src["reference_channel"] == "T1c"
    assert [(c["channel"], c["series_description"], c["method"]) for c in src["channels"]] == [
        ("T1w", "Ax T1 SE", "same-frame"), ("T1c", "AX T1 POST GD", "identity")]
    assert np.allclose(src["channels"][0]["reference_to_channel_ras"], np.eye(4))
    seg = pydicom.dcmread(out / "AX_T1_POST_GD_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ref.series_uid
    assert seg.FrameOfReferenceUID == ref.meta["FrameOfReferenceUID"]
    assert "channel T1c = AX T1 POST GD" in printed.out and "(reference grid)" in printed.out


def test_predict_study_folder_matches_the_series_and_prints_the_mapping(study, model2, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _predict([str(study), "--model", model2, "--out", str(out), "--format", "json"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "channel T1w = Ax T1 SE" in printed.out and "channel T1c = AX T1 POST GD" in printed.out
    assert "matched, confidence 1.0" in printed.out
    doc = json.loads(next(out.glob("*_measurements.json")).read_text())
    assert doc["source"]["reference_channel"] == "T1w"  # no --channel: the model's first channel
    assert [c["match_confidence"] for c in doc["source"]["channels"]] == [1.0, 1.0]


@pytest.fixture(scope="module")
def ambiguous_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ambiguous")
    vol = Volume(np.arange(16 * 16 * 8, dtype=np.float32).reshape(16, 16, 8), np.diag([2.0, 2.0, 4.0, 1.0]))
    for i, desc in enumerate(["Ax T1 SE", "AX T1 POST GD", "COR T1 POST GD"]):
        write_dicom_series(vol, folder / f"s{i}", series_description=desc, series_number=i + 1,
                           frame_of_reference_uid="1.2.3")
    return folder


def test_predict_refuses_ambiguous_or_missing_channels_with_one_line(ambiguous_study, model2, tmp_path, capsys):
    rc = _predict([str(ambiguous_study), "--model", model2, "--out", str(tmp_path / "o1")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("error: ") and "T1c" in err[0] and "ambiguous" in err[0] and "--channel NAME=PATH" in err[0]
    assert "T1w" not in err[0].split("cannot match")[1].split("(")[0]  # only the unmatched channel is named
    # --channel only, one channel missing: a command-line error before anything is read
    rc = _predict(["--model", model2, "--channel", f"T1c={ambiguous_study / 's1'}", "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "T1w" in err[0] and "--channel T1w=PATH" in err[0]
    rc = _predict(["--model", model2, "--channel", f"ADC={ambiguous_study / 's1'}", "--out", str(tmp_path / "o3")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no such input channel" in err[0] and "T1w, T1c" in err[0]
    # naming one of the two post-contrast series fixes it
    rc = _predict([str(ambiguous_study), "--model", model2, "--channel", f"T1c={ambiguous_study / 's2'}",
                   "--out", str(tmp_path / "o4"), "--format", "json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(next((tmp_path / "o4").glob("*_measurements.json")).read_text())
    assert [c["series_description"] for c in doc["source"]["channels"]] == ["Ax T1 SE", "COR T1 POST GD"]


def test_predict_4d_nifti_gives_the_channels_directly(model2, tmp_path, capsys):
    data = np.stack([_head(_points((40, 48, 38), np.diag([4.0, 4.0, 4.0, 1.0]) @ _shift()), s).reshape(40, 48, 38)
                     for s in ("t1", "t1c")], axis=-1)
    nib.save(nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0]) @ _shift()), tmp_path / "case.nii.gz")
    rc = _predict([str(tmp_path / "case.nii.gz"), "--model", model2, "--out", str(tmp_path / "out"), "--format", "json"])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / "case_measurements.json").read_text())
    assert [(c["channel"], c["file_channel"], c["method"]) for c in doc["source"]["channels"]] == [
        ("T1w", 0, "identity"), ("T1c", 1, "identity")]


def _shift() -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = [-19.5, -23.5, -18.5]  # voxels: centre the 40x48x38 grid on the head
    return m
