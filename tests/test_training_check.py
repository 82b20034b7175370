"""seg-train check: every problem of a dataset folder at once, one line each naming the file; train and
evaluate refuse to start on a dataset that fails it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from training.check import check_dataset
from training.cli import main
from training.data import ProblemList

AFF = np.diag([2.0, 2.0, 2.0, 1.0])


def _save(path: Path, arr: np.ndarray, affine: np.ndarray = AFF) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), path)


def _case(rng: np.random.Generator, shape=(12, 12, 10)) -> tuple[np.ndarray, np.ndarray]:
    img = rng.normal(100, 10, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[3:7, 3:7, 3:6] = 1
    lab[4:6, 4:6, 4:5] = 2
    return img, lab


def _msd(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img, lab = _case(rng)
        _save(root / "imagesTr" / f"c{i}.nii.gz", img)
        _save(root / "labelsTr" / f"c{i}.nii.gz", lab)
        items.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    img, lab = _case(rng)
    _save(root / "imagesTs" / "t0.nii.gz", img)
    _save(root / "labelsTs" / "t0.nii.gz", lab)
    meta = {"modality": {"0": "FLAIR"}, "labels": {"0": "background", "1": "core", "2": "oedema"},
            "training": items, "test": ["./imagesTs/t0.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_clean_dataset_passes(tmp_path: Path, capsys) -> None:
    root = _msd(tmp_path / "ds", n=3)
    report = check_dataset(root)
    assert report.ok, report.problems
    assert report.n_cases == 4 and report.n_files == 8
    assert main(["check", str(root)]) == 0
    assert "no problems" in capsys.readouterr().out


def test_every_problem_is_reported_once_with_its_file(tmp_path: Path, capsys) -> None:
    root = _msd(tmp_path / "ds")
    rng = np.random.default_rng(1)
    img, lab = _case(rng)
    shifted = AFF.copy()
    shifted[:3, 3] = [5.0, 0.0, 0.0]
    _save(root / "labelsTr" / "c0.nii.gz", lab, shifted)                       # off the image's grid
    bad = lab.copy()
    bad[0, 0, 0] = 7
    _save(root / "labelsTr" / "c1.nii.gz", bad)                                # undeclared label value
    _save(root / "labelsTr" / "c2.nii.gz", lab.astype(np.float32) * 0.5)       # non-integer labels
    nan = img.copy()
    nan[1, 2, 3] = np.nan
    _save(root / "imagesTr" / "c3.nii.gz", nan)                                # NaN voxel
    (root / "labelsTr" / "c4.nii.gz").unlink()                                 # missing file
    raw = (root / "imagesTr" / "c5.nii.gz").read_bytes()
    (root / "imagesTr" / "c5.nii.gz").write_bytes(gzip.compress(gzip.decompress(raw)[:600]))  # truncated data
    _save(root / "imagesTr" / "c6.nii.gz", np.stack([img, img], axis=-1))      # 2 channels, 1 declared
    _save(root / "labelsTr" / "c7.nii.gz", lab[:, :, :8])                      # other shape
    report = check_dataset(root)
    text = "\n".join(report.problems)
    expected = {
        "labelsTr/c0.nii.gz": "not on the same grid", "labelsTr/c1.nii.gz": "[7] are not declared",
        "labelsTr/c2.nii.gz": "must be integers", "imagesTr/c3.nii.gz": "NaN", "labelsTr/c4.nii.gz": "does not exist",
        "imagesTr/c5.nii.gz": "truncated or corrupt", "imagesTr/c6.nii.gz": "2 channel(s); 1 expected",
        "labelsTr/c7.nii.gz": "differs from its image",
    }
    assert len(report.problems) == len(expected), text
    for file, what in expected.items():
        lines = [p for p in report.problems if file in p]
        assert len(lines) == 1 and what in lines[0], (file, text)
    assert all(str(root) in p for p in report.problems)

    assert main(["check", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(expected) + 1 and "8 problem(s)" in out[-1]

    # train and evaluate stop before doing anything, listing every problem
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--out", str(run), "--epochs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(expected) + 1 and err[-1].startswith("error: ") and "nothing was run" in err[-1]
    assert not run.exists()
    with pytest.raises(ProblemList) as info:
        from training.config import TrainConfig
        from training.train import train

        train(TrainConfig(data=str(root), out=str(run), epochs=1, progress=False))
    assert len(info.value.problems) == len(expected)


def test_evaluate_checks_its_split_with_the_models_channels(tmp_path: Path, capsys) -> None:
    from checkpoints import make_tiny_checkpoint

    root = _msd(tmp_path / "ds", n=2)
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt", in_channels=2, labels=3)
    assert main(["evaluate", "--model", str(ckpt), "--data", str(root), "--split", "test", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "imagesTs/t0.nii.gz" in err[0] and "2 expected" in err[0]


def test_paired_layout_problems(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "paired"
    for i in range(3):
        img, lab = _case(rng)
        _save(root / "images" / f"p{i}.nii.gz", img if i != 2 else np.stack([img, img], -1))
        _save(root / "labels" / f"p{i}.nii.gz", lab)
    _save(root / "images" / "orphan.nii.gz", img)
    (root / "labels.json").write_text(json.dumps({"1": "core"}))  # 2 is not declared
    problems = check_dataset(root).problems
    assert any("orphan.nii.gz" in p and "no label file" in p for p in problems)
    assert any("p2.nii.gz" in p and "first image has 1" in p for p in problems)
    assert sum("not declared" in p for p in problems) == 3
    assert check_dataset(tmp_path / "missing").problems == [f"{tmp_path / 'missing'}: the dataset folder does not exist."]
