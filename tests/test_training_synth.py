"""seg-train synth: MSD layout, determinism by seed, lesions and labels."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from training.cli import main
from training.data import read_dataset
from training.synth import SynthOptions, make_case


def test_same_seed_same_case_different_seed_different() -> None:
    opts = SynthOptions(size=20)
    a = make_case(7, 1, "train", opts)
    b = make_case(7, 1, "train", opts)
    c = make_case(8, 1, "train", opts)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], make_case(7, 1, "test", opts)[0])


def test_full_size_case_is_brain_sized() -> None:
    image, labels, affine, meta = make_case(1, 0)
    assert image.shape[0] == 1 and 50 < image.shape[1] < 110
    assert set(np.unique(labels)) <= {0, 1}
    assert image[0][labels > 0].mean() > 0  # lesions lie inside the brain
    assert len(meta["lesions"]) == 0 or labels.sum() > 0


def test_cli_writes_msd_layout_deterministically(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["synth", "--out", str(tmp_path / name), "--cases", "4", "--test-cases", "2", "--seed", "3", "--size", "16", "--quiet"]) == 0
    ds = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert ds["numTraining"] == 4 and ds["numTest"] == 2 and ds["labels"] == {"0": "background", "1": "tumour"}
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        fa = sorted((tmp_path / "a" / sub).iterdir())
        assert fa
        for f in fa:
            x, y = nib.load(f), nib.load(tmp_path / "b" / sub / f.name)
            assert np.array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj))
            assert np.allclose(x.affine, y.affine)
    info = read_dataset(tmp_path / "a")
    assert len(info.training) == 4 and all("label" in c for c in info.test)
    # some cases have lesions, all labels are 0/1 on the image grid
    total = 0
    for c in info.training:
        lab = nib.load(c["label"])
        assert lab.shape == nib.load(c["image"]).shape
        total += int(np.asarray(lab.dataobj).sum())
    assert total > 0
