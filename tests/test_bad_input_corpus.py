"""The bad-input corpus (tests/corpus.py) through the core API and through ``seg-app predict``.

For every case: a typed ``SegAppError`` or a documented warning, never an unhandled exception, never
a modified input, never a partial output file, and no code from a checkpoint executed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corpus import CorpusCase, build_corpus, good_scan
from seg_app.core import errors as core_errors
from seg_app.core import io as core_io
from seg_app.core.errors import SegAppError
from seg_app.core.io import load_scan

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SEG_APP = Path(sys.executable).with_name("seg-app")


def _error_class(name: str) -> type[BaseException]:
    cls = getattr(core_errors, name, None) or getattr(core_io, name)
    assert issubclass(cls, SegAppError)
    return cls


def _hashes(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under the given paths (files or folders)."""
    out: dict[str, str] = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[CorpusCase]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def segmenter_cls():
    from seg_app.core.inference import Segmenter

    return Segmenter


def test_corpus_is_large_enough(corpus):
    assert len(corpus) >= 20
    assert len({c.name for c in corpus}) == len(corpus)
    for c in corpus:
        assert c.kind in ("scan", "checkpoint")
        assert c.expect in ("ok", "warning") or issubclass(_error_class(c.expect), SegAppError)


def _cases(kind: str) -> list[str]:
    """Case names of one kind (static, so pytest ids exist before the corpus is built)."""
    return [n for n, k in CASE_NAMES if k == kind]


CASE_NAMES = [
    ("missing_path", "scan"), ("empty_file", "scan"), ("truncated_nii_gz", "scan"), ("text_named_nii", "scan"),
    ("random_bytes_dcm", "scan"), ("absurd_nifti_size", "scan"), ("folder_without_series", "scan"),
    ("series_truncated_slice", "scan"), ("nan_inf_voxels", "scan"), ("foreign_slice_mixed_in", "scan"),
    ("mixed_orientations", "scan"), ("duplicate_slice_positions", "scan"),
    ("multiframe_missing_per_frame_groups", "scan"), ("compressed_slice_corrupt_codec", "scan"),
    ("slice_without_pixel_data", "scan"), ("dicom_zero_columns", "scan"), ("dicom_absurd_number_of_frames", "scan"),
    ("dicom_nan_slice_thickness", "scan"), ("dicom_negative_number_of_frames", "scan"),
    ("dicom_rle_absurd_number_of_frames", "scan"), ("dicom_unknown_syntax_absurd_frames", "scan"),
    ("dicom_overflowing_orientation", "scan"),
    ("dicom_degenerate_orientation", "scan"), ("rle_decoder_panic", "scan"),
    ("nifti_singular_affine", "scan"), ("nifti_int64", "scan"),
    ("nifti_float64", "scan"), ("nifti_rgb", "scan"), ("zero_sized_dimension", "scan"),
    ("one_voxel_image", "scan"), ("nifti_time_series", "scan"), ("nifti_nan_affine", "scan"), ("nifti_infinite_voxel_size", "scan"),
    ("checkpoint_4ch_on_1ch_scan", "checkpoint"), ("checkpoint_wrong_format_version", "checkpoint"),
    ("checkpoint_truncated", "checkpoint"), ("checkpoint_pickle_runs_code", "checkpoint"),
    ("checkpoint_zip_pickle_runs_code", "checkpoint"), ("checkpoint_not_a_checkpoint", "checkpoint"),
]


def test_case_list_matches_builder(corpus):
    assert [(c.name, c.kind) for c in corpus] == CASE_NAMES


def _get(corpus: list[CorpusCase], name: str) -> CorpusCase:
    return next(c for c in corpus if c.name == name)


@pytest.mark.parametrize("name", _cases("scan"))
def test_scan_case_core_api(corpus, name):
    case = _get(corpus, name)
    before = _hashes([case.path])
    if case.expect in ("ok", "warning"):
        vol = load_scan(case.path)
        assert vol.array.dtype == np.float32 and np.all(np.isfinite(vol.array))
        assert all(s > 0 for s in vol.shape)
        if case.expect == "warning":
            assert any(case.warning in w for w in vol.warnings), vol.warnings
        assert np.all(np.isfinite(vol.affine)) and abs(np.linalg.det(vol.affine[:3, :3])) > 1e-12
    else:
        with pytest.raises(SegAppError) as err:
            load_scan(case.path)
        assert isinstance(err.value, _error_class(case.expect)), repr(err.value)
        msg = str(err.value)
        assert "\n" not in msg and len(msg) < 600 and msg.rstrip().endswith((".", ")")), msg
    assert _hashes([case.path]) == before, "the input was modified"


@pytest.mark.parametrize("name", _cases("checkpoint"))
def test_checkpoint_case_core_api(corpus, name, segmenter_cls):
    case = _get(corpus, name)
    before = _hashes([case.path, case.scan])
    with pytest.raises(SegAppError) as err:
        seg = segmenter_cls(case.path, device="cpu", backend="torch")
        seg.segment(load_scan(case.scan))
    assert isinstance(err.value, _error_class(case.expect)), repr(err.value)
    assert "\n" not in str(err.value)
    if case.sentinel is not None:
        assert not case.sentinel.exists(), "code from the checkpoint ran"
    assert _hashes([case.path, case.scan]) == before


def test_pickle_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    """Guard the guard: the same kind of payload does run code under plain ``pickle``."""
    import pickle

    from corpus import _RunsCode

    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps({"x": _RunsCode(str(proof))})).get("x").close()
    assert proof.exists()


# --------------------------------------------------------------------------------------------
# seg-app predict
# --------------------------------------------------------------------------------------------
def _run_predict(inputs: list[Path], out: Path, model: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(
        [str(SEG_APP), "predict", *map(str, inputs), "--out", str(out), "--model", str(model), "--device", "cpu"],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def _no_partial_files(out: Path) -> None:
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") or "partial" in p.name or ".tmp" in p.name]
    assert not leftovers, leftovers


def pytestmark_predict(fn):
    """The console script must exist (``pip install -e .``); no silent skip."""
    assert SEG_APP.exists(), f"{SEG_APP} not installed"
    return fn


@pytestmark_predict
def test_predict_all_scan_cases_in_one_run(corpus, tiny_checkpoint_path, tmp_path):
    """Bad inputs fail one line each; the good ones among them are still processed."""
    scans = [c for c in corpus if c.kind == "scan"]
    good = good_scan(tmp_path)
    inputs = [good] + [c.path for c in scans]
    before = _hashes(inputs)
    out = tmp_path / "out"
    proc = _run_predict(inputs, out, tiny_checkpoint_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "unexpected" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    errors = _error_lines(proc.stderr)
    for c in scans:
        mine = [ln for ln in errors if ln.startswith(f"error: {c.path}:")]
        if c.predict_ok:
            assert not mine, (c.name, mine)
        else:
            assert len(mine) == 1, (c.name, proc.stderr)
    n_bad = sum(not c.predict_ok for c in scans)
    assert len(errors) == n_bad, proc.stderr
    produced = {p.name for p in out.iterdir()}
    assert {"good_scan_labels.nii.gz", "good_scan_measurements.json", "good_scan_measurements.csv"} <= produced
    n_ok = 1 + sum(c.predict_ok for c in scans)
    assert len([n for n in produced if n.endswith("_labels.nii.gz")]) == n_ok, sorted(produced)
    assert len(produced) == 3 * n_ok, sorted(produced)
    _no_partial_files(out)
    assert _hashes(inputs) == before
    assert f"{n_ok} of {len(inputs)} scan(s) done" in proc.stdout


def _check_bad_checkpoint_run(c: CorpusCase, out: Path, rc: int, stdout: str, stderr: str) -> None:
    assert rc != 0, (c.name, stdout, stderr)
    assert "Traceback" not in stderr and "unexpected" not in stderr, (c.name, stderr)
    assert len(_error_lines(stderr)) == 1, (c.name, stderr)
    assert not out.exists() or not any(out.iterdir()), (c.name, list(out.iterdir()))
    if c.sentinel is not None:
        assert not c.sentinel.exists(), "code from the checkpoint ran"


@pytestmark_predict
def test_predict_code_running_pickle_subprocess(corpus, tmp_path):
    """The malicious checkpoint through the real console script: refused, nothing runs or is written."""
    c = _get(corpus, "checkpoint_zip_pickle_runs_code")
    before = _hashes([c.path, c.scan])
    out = tmp_path / "out"
    proc = _run_predict([c.scan], out, c.path)
    _check_bad_checkpoint_run(c, out, proc.returncode, proc.stdout, proc.stderr)
    assert proc.returncode == 2
    assert _hashes([c.path, c.scan]) == before


@pytest.mark.parametrize("name", _cases("checkpoint"))
def test_predict_bad_checkpoint_in_process(corpus, name, tmp_path, capsys):
    """Every bad checkpoint through ``seg-app predict``'s entry point (in-process: no 5 s start-up each)."""
    from seg_app.cli import main

    c = _get(corpus, name)
    before = _hashes([c.path, c.scan])
    out = tmp_path / "out"
    rc = main(["predict", str(c.scan), "--out", str(out), "--model", str(c.path), "--device", "cpu"])
    cap = capsys.readouterr()
    _check_bad_checkpoint_run(c, out, rc, cap.out, cap.err)
    assert _hashes([c.path, c.scan]) == before
