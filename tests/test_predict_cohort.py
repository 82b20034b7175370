"""``seg-app predict`` over a cohort: the load -> network -> write pipeline, resume, the summary CSV and
``torchrun`` sharding (2 gloo processes, each scan exactly once).

Deterministic: nothing waits on the clock; where a test needs two stages to overlap it waits on an
``Event`` that the other stage sets (with a generous timeout that only a broken pipeline reaches).
"""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg_app import predict_cli
from seg_app.core import cohort
from test_inference import head_with_blob, tiny_checkpoint
from torchrun_launch import run_torchrun

ROOT = Path(__file__).resolve().parents[1]
#: Every test here runs the tiny model with the torch backend (no ONNX export or speed check).
BASE = ["--device", "cpu", "--backend", "torch"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt"))


def make_scans(folder: Path, n: int) -> list[Path]:
    """``n`` small, different NIfTI heads (shape, voxel size and blob differ), ``scan0.nii.gz`` ..."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        shape = (36 + 2 * (i % 3), 40 + 2 * (i % 2), 22 + 2 * (i % 4))
        vol, _ = head_with_blob(shape=shape, affine=np.diag([2.0 + 0.1 * (i % 2), 2.0, 2.2 - 0.1 * (i % 3), 1.0]))
        path = folder / f"scan{i}.nii.gz"
        nib.save(nib.Nifti1Image(vol.array[0], vol.affine), path)
        out.append(path)
    return out


def read_summary(out: Path) -> list[dict[str, str]]:
    with (out / cohort.SUMMARY_NAME).open(newline="") as f:
        return list(csv.DictReader(f))


def labels_of(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def json_without_timing(path: Path) -> dict:
    doc = json.loads(path.read_text())
    doc["segmentation"].pop("seconds")
    return doc


# ---- the pipeline itself (no model) ----------------------------------------------------------
def test_pipeline_overlaps_loading_with_the_network_keeps_order_and_bounds_memory():
    prefetch, n = 2, 7
    lock = threading.Lock()
    started = [threading.Event() for _ in range(n)]
    state = {"waiting": 0, "max_waiting": 0, "to_write": 0, "max_to_write": 0}
    log: list[tuple[str, int]] = []

    def load(i: int) -> int:
        started[i].set()
        if i == 3:
            raise ValueError("corrupt scan 3")
        with lock:
            state["waiting"] += 1
            state["max_waiting"] = max(state["max_waiting"], state["waiting"])
        return i * 10

    def infer(x: int) -> int:
        i = x // 10
        with lock:
            state["waiting"] -= 1
            log.append(("infer", i))
        if i + 1 < n:  # the next scan is being read while this one is "in the network"
            assert started[i + 1].wait(timeout=60), f"scan {i + 1} was not loaded during scan {i}'s network pass"
        with lock:
            state["to_write"] += 1
            state["max_to_write"] = max(state["max_to_write"], state["to_write"])
        return x + 1

    def finish(i: int, outcome: cohort.Outcome) -> tuple[int, object]:
        with lock:
            if outcome.error is None:
                state["to_write"] -= 1
            log.append(("finish", i))
        return i, (outcome.value if outcome.error is None else str(outcome.error))

    results = cohort.run_pipeline(list(range(n)), load, infer, finish, prefetch=prefetch, backlog=1)
    assert results == [(i, "corrupt scan 3" if i == 3 else i * 10 + 1) for i in range(n)]
    assert [i for kind, i in log if kind == "finish"] == list(range(n))  # written in input order
    assert [i for kind, i in log if kind == "infer"] == [i for i in range(n) if i != 3]
    assert state["max_waiting"] <= prefetch + 1  # loaded ahead: at most `prefetch` besides the next one
    assert state["max_to_write"] <= 1 + 2  # waiting for the writer: backlog 1 + 2 (just submitted, just inferred)


def test_pipeline_without_prefetch_runs_one_item_after_another_on_the_calling_thread():
    me = threading.get_ident()
    seen = []

    def stage(name):
        def run(x):
            seen.append((name, x, threading.get_ident() == me))
            return x
        return run

    out = cohort.run_pipeline([1, 2], stage("load"), stage("infer"),
                              lambda i, o: seen.append(("finish", i, threading.get_ident() == me)) or o.value, prefetch=0)
    assert out == [1, 2]
    assert seen == [("load", 1, True), ("infer", 1, True), ("finish", 1, True),
                    ("load", 2, True), ("infer", 2, True), ("finish", 2, True)]


# ---- predict over a cohort -------------------------------------------------------------------
def test_pipelined_outputs_are_identical_to_one_scan_at_a_time(tmp_path, model, capsys):
    scans = make_scans(tmp_path / "scans", 4)
    one = tmp_path / "one"
    for s in scans:
        assert predict_cli.predict_command([str(s), "--model", model, "--out", str(one), *BASE]) == 0
    capsys.readouterr()
    piped = tmp_path / "piped"
    rc = predict_cli.predict_command([*map(str, scans), "--model", model, "--out", str(piped), "--prefetch", "2", *BASE])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert sorted(p.name for p in piped.iterdir()) == sorted(p.name for p in one.iterdir())
    assert len(list(piped.glob("*_labels.nii.gz"))) == 4 and not list(piped.glob(".*"))
    for s in scans:
        name = s.name.removesuffix(".nii.gz")
        a, b = labels_of(one / f"{name}_labels.nii.gz"), labels_of(piped / f"{name}_labels.nii.gz")
        assert a.shape == b.shape and np.array_equal(a, b), name  # voxel for voxel
        assert json_without_timing(one / f"{name}_measurements.json") == json_without_timing(piped / f"{name}_measurements.json")
        assert (one / f"{name}_measurements.csv").read_text() == (piped / f"{name}_measurements.csv").read_text()
    lines = [ln.split(":")[0] for ln in cap.out.splitlines() if ln.startswith("scan")]
    assert lines == [f"scan{i}" for i in range(4)]  # printed in input order
    assert "4 of 4 scan(s) done" in cap.out


def test_pipeline_lets_onnx_runtime_threads_sleep(tmp_path, model, monkeypatch, capsys):
    """Several scans with --prefetch > 0: ONNX Runtime's idle threads sleep instead of spinning (the loader
    and writer threads need the cores); one scan, or --prefetch 0: the default (spinning)."""
    from seg_app.core import inference, onnx_backend
    from seg_app.core.spec import load_checkpoint, network_from_checkpoint

    seen: list[bool] = []
    real = inference.Segmenter

    def spy(*a, **kw):
        seen.append(kw.get("cpu_spinning", True))
        return real(*a, **kw)

    monkeypatch.setattr(inference, "Segmenter", spy)
    scans = [str(p) for p in make_scans(tmp_path / "scans", 2)]
    for argv in ([scans[0]], scans, [*scans, "--prefetch", "0"]):
        assert predict_cli.predict_command([*argv, "--model", model, "--out", str(tmp_path / "out"), *BASE]) == 0
    assert seen == [True, False, True]
    ckpt = load_checkpoint(model)
    path = onnx_backend.export_onnx(network_from_checkpoint(ckpt), ckpt.spec, tmp_path / "m.onnx")
    for spinning, entry in ((True, None), (False, "0")):  # None: not set, ONNX Runtime's default (spinning)
        opts = onnx_backend.OnnxPredictor(path, threads=2, spinning=spinning).session.get_session_options()
        try:
            value = opts.get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:
            value = None
        assert value == entry


def test_cohort_resume_skips_complete_scans_and_redoes_incomplete_ones(tmp_path, model, capsys):
    scans = make_scans(tmp_path / "scans", 4)
    out = tmp_path / "out"
    argv = [*map(str, scans), "--cohort", "--model", model, "--out", str(out), *BASE]
    assert predict_cli.predict_command(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    records = sorted((out / cohort.RECORDS_DIR).glob("*.json"))
    assert len(records) == 4
    rec = json.loads(records[0].read_text())
    assert rec["format"] == cohort.RECORD_FORMAT and rec["rank"] == 0 and rec["source"] == str(scans[0])
    assert sorted(o["file"] for o in rec["outputs"]) == sorted(f"{rec['name']}{s}" for s in
                                                              ("_labels.nii.gz", "_measurements.json", "_measurements.csv"))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("scan*")}
    labels1 = labels_of(out / "scan1_labels.nii.gz")

    # second run: everything is complete
    assert predict_cli.predict_command(argv) == 0
    cap = capsys.readouterr()
    assert cap.out.count("skipped, its outputs are complete") == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("scan*")} == stamps  # nothing rewritten
    assert [r["status"] for r in read_summary(out)] == ["skipped"] * 4
    first = read_summary(out)

    # a truncated output (scan1), a missing record (scan2: the crash came before it), a changed byte (scan3)
    lab1 = out / "scan1_labels.nii.gz"
    lab1.write_bytes(lab1.read_bytes()[:-10])
    cohort.record_path(out, str(scans[2])).unlink()
    csv3 = out / "scan3_measurements.csv"
    data = bytearray(csv3.read_bytes())
    data[-2] = ord("9") if data[-2] != ord("9") else ord("8")
    csv3.write_bytes(bytes(data))
    assert predict_cli.predict_command(argv) == 0
    cap = capsys.readouterr()
    rows = read_summary(out)
    assert [r["status"] for r in rows] == ["skipped", "ok", "ok", "ok"]
    assert "scan1_labels.nii.gz has changed size" in cap.out and "scan3_measurements.csv has changed" in cap.out
    assert np.array_equal(labels_of(lab1), labels1)  # whole again
    for a, b in zip(first, rows):  # same names and volumes as the first time
        assert (a["name"], a["volume_ml"], a["tumour_ml"]) == (b["name"], b["volume_ml"], b["tumour_ml"])
    assert sorted(p.name for p in out.glob("scan*")) == sorted(stamps)  # same names, no scan1_2 ...

    # --overwrite (alias --no-resume): every scan again; other settings (formats): done again too
    assert predict_cli.predict_command([*argv, "--no-resume"]) == 0
    assert [r["status"] for r in read_summary(out)] == ["ok"] * 4
    assert predict_cli.predict_command([*argv, "--format", "nifti,json"]) == 0
    cap = capsys.readouterr()
    assert [r["status"] for r in read_summary(out)] == ["ok"] * 4
    assert cap.out.count("done with other settings (formats)") == 4


def test_failing_scan_in_the_middle_and_the_summary(tmp_path, model, capsys):
    scans = make_scans(tmp_path / "scans", 3)
    corrupt = tmp_path / "scans" / "broken.nii.gz"
    corrupt.write_bytes(b"not a nifti at all")
    lst = tmp_path / "cohort.txt"
    lst.write_text(f"# the cohort\n{scans[0]}\n\n{corrupt}\n{scans[1]}\n{scans[2]}\n{scans[1]}\n")
    out = tmp_path / "out"
    rc = predict_cli.predict_command(["--input-list", str(lst), "--model", model, "--out", str(out), *BASE])
    cap = capsys.readouterr()
    assert rc == 1
    errors = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "broken.nii.gz" in errors[0], cap.err
    assert "is listed more than once" in cap.out
    rows = read_summary(out)
    header = list(rows[0])
    assert header == [*cohort.SUMMARY_FIELDS, "tumour_ml", "warnings", "error"]
    assert [(r["scan"], r["status"]) for r in rows] == [
        (str(scans[0]), "ok"), (str(corrupt), "failed"), (str(scans[1]), "ok"), (str(scans[2]), "ok")]
    bad = rows[1]
    assert "broken.nii.gz" in bad["error"] and bad["volume_ml"] == bad["tumour_ml"] == bad["name"] == ""
    for r in (rows[0], rows[2], rows[3]):
        doc = json.loads((out / f"{r['name']}_measurements.json").read_text())
        total = sum(t["volume_ml"] for t in doc["totals"])
        assert float(r["volume_ml"]) == pytest.approx(total, abs=1e-4)
        assert float(r["tumour_ml"]) == pytest.approx(total, abs=1e-4)  # the tiny model's one label
        assert int(r["lesions"]) == len(doc["lesions"]) and int(r["warnings"]) == len(doc["warnings"])
        assert float(r["seconds"]) > 0 and r["rank"] == "0" and r["error"] == ""
    assert "3 of 4 scan(s) done (0 skipped as complete, 1 failed)" in cap.out
    # the failed scan is tried again next time, the others are skipped
    rc = predict_cli.predict_command(["--input-list", str(lst), "--model", model, "--out", str(out), *BASE])
    assert rc == 1
    assert [r["status"] for r in read_summary(out)] == ["skipped", "failed", "skipped", "skipped"]


def test_check_record_and_name_claims(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    f = out / "a_labels.nii.gz"
    f.write_bytes(b"0123456789")
    rec = cohort.record_path(out, "scans/a.nii.gz")
    settings = {"model_sha256": "x", "formats": ["nifti"], "tta": False, "series": None}
    assert cohort.check_record(rec, settings) == (None, "")  # never done
    cohort.write_record(rec, source="scans/a.nii.gz", series=None, name="a", outputs=[f], settings=settings)
    assert cohort.check_record(rec, settings)[0]["name"] == "a"
    assert cohort.check_record(rec, {**settings, "tta": True}) == (None, "it was done with other settings (tta)")
    f.write_bytes(b"012345678")
    assert "changed size" in cohort.check_record(rec, settings)[1]
    f.unlink()
    assert "missing" in cohort.check_record(rec, settings)[1]
    rec.write_text("{ half a rec")
    assert "unreadable" in cohort.check_record(rec, settings)[1]
    # names: first come, first served; a scan gets its own name back
    assert cohort.claim_name(out, "scan", "k1") == "scan"
    assert cohort.claim_name(out, "scan", "k2") == "scan_2"
    assert cohort.claim_name(out, "scan", "k1") == "scan"
    assert cohort.shard(5, 0, 2) == [0, 2, 4] and cohort.shard(5, 1, 2) == [1, 3]


def test_input_list_errors_are_one_line(tmp_path, model, capsys):
    assert predict_cli.predict_command(["--input-list", str(tmp_path / "nope.txt"), "--model", model]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot read the input list") and "nope.txt" in err[0]
    assert predict_cli.predict_command(["--model", model]) == 2
    assert capsys.readouterr().err.startswith("error: no input")


# ---- torchrun --------------------------------------------------------------------------------
@pytest.mark.slow  # torchrun + two worker processes: ~20-40 s
@pytest.mark.timeout(300)
def test_torchrun_two_gloo_processes_each_scan_exactly_once(tmp_path, model):
    scans = make_scans(tmp_path / "scans", 5)
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / "scan0.nii.gz"  # same file name as scans[0]: the two get different output names
    twin.write_bytes(scans[0].read_bytes())
    listed = [*scans, twin]
    lst = tmp_path / "cohort.txt"
    lst.write_text("".join(f"{p}\n" for p in listed))
    out, logs = tmp_path / "out", tmp_path / "logs"
    proc = run_torchrun(["-m", "seg_app.cli", "predict", "--input-list", str(lst), "--model", model, "--out", str(out), *BASE],
                        torchrun_args=["--log-dir", str(logs), "--redirects", "3"], env={"SEG_APP_CACHE": str(tmp_path / "cache")})
    err = proc.stderr
    rank_out = {int(p.parent.name): p.read_text() for p in logs.rglob("stdout.log")}
    assert proc.returncode == 0, err[-3000:] + "\n".join(rank_out.values())
    assert sorted(rank_out) == [0, 1]

    rows = read_summary(out)
    assert [r["scan"] for r in rows] == [str(p) for p in listed] and {r["status"] for r in rows} == {"ok"}
    assert [int(r["rank"]) for r in rows] == [i % 2 for i in range(len(listed))]
    names = [r["name"] for r in rows]
    assert len(set(names)) == len(listed) and names[0] != names[-1] and {names[0], names[-1]} == {"scan0", "scan0_2"}
    records = [json.loads(p.read_text()) for p in (out / cohort.RECORDS_DIR).glob("*.json")]
    assert sorted(r["source"] for r in records) == sorted(map(str, listed))  # one record per scan
    for rec in records:
        assert rec["rank"] == listed.index(Path(rec["source"])) % 2
    # exactly once: each scan's result line is printed by one rank, once
    for name, r in zip(names, rows):
        printed = {rank: sum(ln.startswith(f"{name}: ") for ln in text.splitlines()) for rank, text in rank_out.items()}
        assert printed == {int(r["rank"]): 1, 1 - int(r["rank"]): 0}, (name, printed)
    assert "6 of 6 scan(s) done" in rank_out[0] and cohort.SUMMARY_NAME in rank_out[0]
    for name in names:
        assert (out / f"{name}_labels.nii.gz").is_file()
