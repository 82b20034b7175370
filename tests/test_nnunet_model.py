"""nnU-Net v2 trained-model folders through the app (seg_app.core.nnunet_model, seg-app predict --model).

A tiny nnU-Net v2 model is really trained once per session (tests/nnunet_tiny_model.py: nnU-Net's own
fingerprint, planner, preprocessing and ``nnUNetTrainer`` for one epoch of 2 iterations, on the CPU, in a
subprocess whose nnUNet_raw/nnUNet_preprocessed/nnUNet_results point under the session's tmp folder), and
nnU-Net's own ``nnUNetPredictor.predict_from_files_sequential`` predicts a held-out case: our app must give
the same labels voxel for voxel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg_app.core.errors import Cancelled, CheckpointError
from gui_fixtures import gui_data, make_window, open_and_wait, segment_and_wait  # noqa: F401 - fixtures (Qt imported inside)
from seg_app.core.nnunet_model import (
    INSTALL_HINT,
    NnUNetSegmenter,
    describe_nnunet,
    is_nnunet_folder,
    load_model,
    make_segmenter,
    nnunet_root,
    parse_folds,
)

HELPER = Path(__file__).with_name("nnunet_tiny_model.py")
TRAINER_FOLDER = "nnUNetTrainer__nnUNetPlans__3d_fullres"
needs_nnunet = pytest.mark.skipif(
    __import__("importlib").util.find_spec("nnunetv2") is None, reason="nnunetv2 not installed (the test extra has it)"
)


def _slow(test):
    """``slow``, with a timeout that leaves room for training the model (the first such test's setup does it:
    minutes on a loaded 2-core machine)."""
    return pytest.mark.slow(pytest.mark.timeout(1500)(test))


@pytest.fixture(scope="session")
def tiny_nnunet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train the tiny model and nnU-Net's reference predictions (once per session); returns paths and
    the time each step took (also printed)."""
    if __import__("importlib").util.find_spec("nnunetv2") is None:
        pytest.skip("nnunetv2 not installed (the test extra has it)")
    # SEG_APP_NNUNET_TINY=DIR keeps the model there between runs (the helper skips the steps already done)
    kept = os.environ.get("SEG_APP_NNUNET_TINY")
    root = Path(kept) if kept else tmp_path_factory.mktemp("nnunet")
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "res"), "nnUNet_compile": "f", "nnUNet_n_proc_DA": "0",
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HELPER), str(root)], env=env, capture_output=True, text=True,
                          timeout=1400)
    if proc.returncode != 0:
        pytest.fail(f"training the tiny nnU-Net model failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    timings = json.loads((root / "timings.json").read_text())
    timings["fixture_wall_s"] = time.perf_counter() - t0
    print("\nnnU-Net tiny model fixture: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "model"))
    return {"root": root, "model": Path(timings["model"]), "case": root / "case.nii.gz",
            "ref": root / "ref" / "case.nii.gz", "ref_mirror": root / "ref_mirror" / "case.nii.gz",
            "timings": timings}


def _ref_labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj).astype(np.uint8)


# ---- the folder, without nnU-Net ------------------------------------------------------------
def _fake_folder(tmp_path: Path, labels: dict, regions_order: list | None = None) -> Path:
    folder = tmp_path / "Dataset007_Brats" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not read by these tests")
    dataset = {"channel_names": {"0": "T1", "1": "T1c", "2": "T2", "3": "FLAIR"}, "labels": labels,
               "file_ending": ".nii.gz", "numTraining": 3}
    if regions_order is not None:
        dataset["regions_class_order"] = regions_order
    (folder / "dataset.json").write_text(json.dumps(dataset))
    (folder / "plans.json").write_text(json.dumps({"dataset_name": "Dataset007_Brats", "configurations": {
        "3d_fullres": {"spacing": [1.0, 1.0, 1.0], "patch_size": [128, 128, 128],
                       "normalization_schemes": ["ZScoreNormalization"] * 4}}}))
    return folder


def test_region_based_brats_labels_get_sub_region_names(tmp_path: Path) -> None:
    from seg_app.core.regions import composite_regions

    folder = _fake_folder(tmp_path, {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                                     "enhancing tumor": [3]}, regions_order=[1, 2, 3])
    assert is_nnunet_folder(folder) and nnunet_root(folder / "fold_0" / "checkpoint_final.pth") == (
        folder, "0", "checkpoint_final.pth")
    info = describe_nnunet(folder)
    assert info.channels == ("T1", "T1c", "T2", "FLAIR")
    assert info.regions == {"whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}
    assert info.label_names == {0: "background", 1: "oedema", 2: "necrotic / non-enhancing core", 3: "enhancing tumour"}
    assert composite_regions(info.label_names) == {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    assert (info.trainer, info.plans, info.configuration) == ("nnUNetTrainer", "nnUNetPlans", "3d_fullres")
    assert info.checkpoints == {"0": ("checkpoint_final.pth",)} and info.file_ending == ".nii.gz"
    spec = info.spec
    assert [c.name for c in spec.channels] == ["T1", "T1c", "T2", "FLAIR"] and spec.labels[0].value == 0


def test_without_nnunet_installed_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_folder(tmp_path, {"background": 0, "tumour": 1})
    monkeypatch.setitem(sys.modules, "nnunetv2", None)  # import nnunetv2 -> ImportError
    with pytest.raises(CheckpointError, match=r"install seg-workstation\[nnunet\]"):
        NnUNetSegmenter(folder, device="cpu")
    assert "install seg-workstation[nnunet]" in INSTALL_HINT


def test_bad_folders_and_options(tmp_path: Path) -> None:
    folder = _fake_folder(tmp_path, {"background": 0, "tumour": 1})
    with pytest.raises(CheckpointError, match="fold_3/checkpoint_final.pth"):
        NnUNetSegmenter(folder, folds="0,3", device="cpu")
    with pytest.raises(CheckpointError, match="no fold with checkpoint_best.pth"):
        NnUNetSegmenter(folder, checkpoint="checkpoint_best.pth", device="cpu")
    with pytest.raises(CheckpointError, match="Invalid nnU-Net fold"):
        parse_folds("0,x")
    assert parse_folds("0, 1") == ("0", "1") and parse_folds(None) is None and parse_folds("all") == ("all",)
    (folder / "plans.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="plans.json cannot be read"):
        describe_nnunet(folder)
    renamed = folder.parent / "not_trainer_plans_config"
    folder.rename(renamed)
    (renamed / "plans.json").write_text("{}")
    with pytest.raises(CheckpointError, match="Trainer__Plans__Configuration"):
        describe_nnunet(renamed)
    with pytest.raises(CheckpointError, match="--folds and --checkpoint apply to nnU-Net"):
        make_segmenter(str(tmp_path / "model.pt"), folds=("0",))


class _Evil:
    """Pickled by reference: unpickling it would import this module and call its constructor."""

    def __reduce__(self):  # noqa: D105
        return (os.system, ("echo pwned > /dev/null",))


@needs_nnunet
def test_pickled_objects_in_a_checkpoint_are_refused(tmp_path: Path) -> None:
    import torch

    from seg_app.core.nnunet_model import _load_checkpoint

    path = tmp_path / "fold_0" / "checkpoint_final.pth"
    path.parent.mkdir()
    torch.save({"network_weights": {"w": torch.zeros(2)}, "trainer_name": "nnUNetTrainer", "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely.*so it is refused"):
        _load_checkpoint(path)


@needs_nnunet
def test_plans_naming_other_classes_are_refused() -> None:
    from types import SimpleNamespace

    from seg_app.core.nnunet_model import _check_plans_classes

    ok = {"conv_op": "torch.nn.modules.conv.Conv3d", "nonlin": "torch.nn.LeakyReLU", "dropout_op": None}
    req = ("conv_op", "nonlin", "dropout_op")
    _check_plans_classes(SimpleNamespace(network_arch_class_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                         network_arch_init_kwargs=ok, network_arch_init_kwargs_req_import=req))
    with pytest.raises(CheckpointError, match="network class 'os.system'"):
        _check_plans_classes(SimpleNamespace(network_arch_class_name="os.system", network_arch_init_kwargs=ok,
                                             network_arch_init_kwargs_req_import=req))
    with pytest.raises(CheckpointError, match="subprocess.Popen"):
        _check_plans_classes(SimpleNamespace(
            network_arch_class_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
            network_arch_init_kwargs={**ok, "nonlin": "subprocess.Popen"}, network_arch_init_kwargs_req_import=req))


# ---- the real model -------------------------------------------------------------------------
@_slow
def test_describe_trained_model(tiny_nnunet: dict) -> None:
    info = describe_nnunet(tiny_nnunet["model"])
    assert info.channels == ("T1", "FLAIR")
    assert info.label_names == {0: "background", 1: "oedema", 2: "core"}
    assert info.trainer == "nnUNetTrainer" and info.configuration == "3d_fullres"
    assert info.dataset_name == "Dataset042_Tiny" and info.file_ending == ".nii.gz"
    assert set(info.checkpoints["0"]) >= {"checkpoint_final.pth", "checkpoint_best.pth"}
    assert "nnU-Net v2 model Dataset042_Tiny" in info.summary()


@_slow
def test_segmenter_equals_nnunet_predictor(tiny_nnunet: dict) -> None:
    """Our NnUNetSegmenter on the 4D NIfTI == nnU-Net's predict_from_files on the per-channel files."""
    from seg_app.core.io import load_scan

    volume = load_scan(str(tiny_nnunet["case"]))
    seg = NnUNetSegmenter(tiny_nnunet["model"], device="cpu")
    assert seg.folds == ("0",) and seg.trainer_name == "nnUNetTrainer"
    ticks: list[tuple[int, int]] = []
    result = seg.segment(volume, progress=lambda d, t: ticks.append((d, t)))
    ref = _ref_labels(tiny_nnunet["ref"])
    labels = result.labels.array[0]
    assert labels.shape == ref.shape == volume.shape
    assert int((labels != ref).sum()) == 0
    assert np.allclose(result.labels.affine, volume.affine)
    assert ticks and ticks[-1][0] == ticks[-1][1]
    assert result.probabilities is not None and result.probabilities.array.shape == (1, *volume.shape)
    assert {lab.name for lab in result.spec.foreground_labels} == {"oedema", "core"}

    # the pipeline stages give the same
    prepared = seg.prepare(volume)
    staged = seg.finish(prepared, seg.predict_prepared(prepared), return_probabilities=False)
    assert int((staged.labels.array[0] != ref).sum()) == 0 and staged.probabilities is None

    # cancel after the first window: Cancelled, and the segmenter still works afterwards
    stop = threading.Event()
    with pytest.raises(Cancelled):
        seg.segment(volume, progress=lambda d, t: stop.set(), cancel=stop)

    # TTA = nnU-Net's mirroring
    mirrored = NnUNetSegmenter(tiny_nnunet["model"], folds="0", device="cpu", tta=True).segment(volume)
    assert int((mirrored.labels.array[0] != _ref_labels(tiny_nnunet["ref_mirror"])).sum()) == 0


@_slow
def test_predict_cli_with_an_nnunet_folder(tiny_nnunet: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from seg_app.predict_cli import predict_command

    out = tmp_path / "out"
    rc = predict_command(["--model", str(tiny_nnunet["model"]), str(tiny_nnunet["case"]), "--out", str(out),
                          "--device", "cpu", "--format", "nifti,json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    labels_path = out / "case_labels.nii.gz"
    img = nib.load(str(labels_path))
    src = nib.load(str(tiny_nnunet["case"]))
    assert np.allclose(img.affine, src.affine)
    assert int((np.asarray(img.dataobj).astype(np.uint8) != _ref_labels(tiny_nnunet["ref"])).sum()) == 0
    doc = json.loads((out / "case_measurements.json").read_text())
    assert doc["model"]["labels"] == {"0": "background", "1": "oedema", "2": "core"}
    assert doc["model"]["name"] == "Dataset042_Tiny"
    assert "case:" in captured.out

    # one fold's best checkpoint, by options; pointing at the file selects the same
    rc = predict_command(["--model", str(tiny_nnunet["model"]), "--folds", "0", "--checkpoint", "checkpoint_best.pth",
                          str(tiny_nnunet["case"]), "--out", str(tmp_path / "best"), "--device", "cpu", "--format", "json"])
    assert rc == 0, capsys.readouterr().err
    picked = load_model(tiny_nnunet["model"] / "fold_0" / "checkpoint_best.pth")
    assert (picked.use_folds, picked.use_checkpoint) == (("0",), "checkpoint_best.pth")


@_slow
def test_predict_cli_missing_fold_and_broken_folder(tiny_nnunet: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    from seg_app.predict_cli import predict_command

    rc = predict_command(["--model", str(tiny_nnunet["model"]), "--folds", "0,1", str(tiny_nnunet["case"]),
                          "--out", str(tmp_path / "o1"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("error:") and "fold_1/checkpoint_final.pth" in err[0]
    assert not (tmp_path / "o1" / "case_labels.nii.gz").exists()

    broken = tmp_path / "Dataset042_Tiny" / TRAINER_FOLDER
    shutil.copytree(tiny_nnunet["model"], broken)
    (broken / "fold_0" / "checkpoint_final.pth").write_bytes(b"truncated")
    rc = predict_command(["--model", str(broken), str(tiny_nnunet["case"]), "--out", str(tmp_path / "o2"),
                          "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("error:") and "cannot be read" in err[0]


@_slow
def test_predict_cli_channels_as_separate_files(tiny_nnunet: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--channel NAME=PATH`` per dataset.json channel (nnU-Net's own per-channel files) gives the same labels."""
    from seg_app.predict_cli import predict_command

    test, out = tiny_nnunet["root"] / "test", tmp_path / "out"
    rc = predict_command(["--model", str(tiny_nnunet["model"]), "--channel", f"FLAIR={test / 'case_0001.nii.gz'}",
                          "--channel", f"T1={test / 'case_0000.nii.gz'}", "--reference", "T1", "--out", str(out),
                          "--device", "cpu", "--format", "nifti,json"])
    assert rc == 0, capsys.readouterr().err
    (labels_path,) = out.glob("*_labels.nii.gz")
    img = nib.load(str(labels_path))
    assert np.allclose(img.affine, nib.load(str(test / "case_0000.nii.gz")).affine)
    assert int((np.asarray(img.dataobj).astype(np.uint8) != _ref_labels(tiny_nnunet["ref"])).sum()) == 0


@_slow
@pytest.mark.gui
def test_gui_loads_an_nnunet_model_and_segments(tiny_nnunet: dict, make_window, qtbot) -> None:
    """Model > Load model... with the folder's dataset.json, then Segment: nnU-Net's labels in the viewer."""
    from seg_app.gui.workers import wait_for

    win = make_window(model="")
    job = win.load_model(str(tiny_nnunet["model"] / "dataset.json"), show_card=False)
    assert job is not None and wait_for(job, timeout_s=300)
    assert [c.name for c in win.checkpoint.spec.channels] == ["T1", "FLAIR"]
    open_and_wait(win, tiny_nnunet["case"])
    segment_and_wait(win)
    assert int((win.labels.array[0] != _ref_labels(tiny_nnunet["ref"])).sum()) == 0
    assert {lab.name for lab in win.checkpoint.spec.foreground_labels} == {"oedema", "core"}
