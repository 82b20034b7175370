"""Comparing two segmentations: hand-computed Dice/volumes, lesion pairing, agreement map, the CLI."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from seg_app.compare_cli import compare_command
from seg_app.core.compare import agreement_map, compare_label_maps
from seg_app.core.metrics import dice, hd95


def _maps():
    a = np.zeros((30, 30, 20), np.uint8)
    b = np.zeros_like(a)
    a[2:8, 2:8, 2:8] = 1  # lesion 1: 216 voxels
    b[2:8, 2:8, 2:6] = 1  # 144 voxels, all inside A's
    a[15:20, 15:20, 10:15] = 3  # lesion 2 only in A: 125 voxels
    b[22:25, 22:25, 2:5] = 3  # a lesion only in B: 27 voxels
    return a, b


def test_dice_and_volumes_by_hand():
    a, b = _maps()
    res = compare_label_maps(a, b, (1.0, 1.0, 1.0), 0.001, {1: "necrotic core", 2: "oedema", 3: "enhancing tumour"})
    rows = {r["label"]: r for r in res.rows}
    assert rows[1]["dice"] == pytest.approx(2 * 144 / (216 + 144))
    assert rows[1]["a_ml"] == pytest.approx(0.216) and rows[1]["b_ml"] == pytest.approx(0.144)
    assert rows[1]["difference_ml"] == pytest.approx(-0.072)
    assert rows[3]["dice"] == 0.0
    assert rows[3]["a_lesions_missed_in_b"] == 1 and rows[3]["b_lesions_not_in_a"] == 1
    # BraTS names give the composite regions too; TC = labels 1 and 3
    assert rows["TC"]["a_ml"] == pytest.approx(0.216 + 0.125)
    # HD95 of label 1: B's top face at z=5 vs A's at z=7 -> 2 mm in one direction
    assert rows[1]["hd95_directed_max_mm"] == pytest.approx(hd95(b == 1, a == 1, (1, 1, 1))["hd95_directed_max_mm"])
    assert rows[1]["hd95_directed_max_mm"] >= rows[1]["hd95_pooled_mm"] > 0


def test_lesions_are_paired_by_overlap():
    a, b = _maps()
    res = compare_label_maps(a, b, (1.0, 1.0, 1.0), 0.001)
    status = sorted(r["status"] for r in res.lesions)
    assert status == ["only A", "only B", "paired"]
    pair = next(r for r in res.lesions if r["status"] == "paired")
    assert pair["a_ml"] == pytest.approx(0.216) and pair["b_ml"] == pytest.approx(0.144)
    assert pair["dice"] == pytest.approx(dice(a == 1, b == 1))
    assert pair["overlap_ml"] == pytest.approx(0.144)


def test_agreement_map_values():
    a, b = _maps()
    ag = agreement_map(a, b)
    assert int((ag == 1).sum()) == 144
    assert int((ag == 2).sum()) == 216 - 144 + 125
    assert int((ag == 3).sum()) == 27
    assert set(np.unique(ag)) == {0, 1, 2, 3}


def test_identical_maps_agree_perfectly():
    a, _ = _maps()
    res = compare_label_maps(a, a.copy(), (0.5, 0.5, 2.0), 0.0005)
    assert all(r["dice"] == 1.0 and r["hd95_pooled_mm"] == 0.0 for r in res.rows)
    assert all(r["status"] == "paired" and r["dice"] == 1.0 for r in res.lesions)


def test_cli_writes_tables_and_aligned_agreement_map(tmp_path, capsys):
    a, b = _maps()
    affine = np.diag([-0.8, 0.8, 1.5, 1.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    scan = np.random.default_rng(0).normal(100, 10, a.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(scan, affine), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(a, affine), tmp_path / "a.nii.gz")
    # B stored with the first axis flipped: same voxels in scanner space (exact resampling, no warning)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = a.shape[0] - 1
    nib.save(nib.Nifti1Image(b[::-1].copy(), affine @ flip), tmp_path / "b.nii.gz")
    out = tmp_path / "out"
    rc = compare_command([str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz"), "--scan", str(tmp_path / "scan.nii.gz"), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "1 paired, 1 only in A, 1 only in B" in printed
    doc = json.loads((out / "compare.json").read_text())
    assert doc["warnings"] == []
    lab1 = next(r for r in doc["labels"] if r["label"] == 1)
    assert lab1["dice"] == pytest.approx(2 * 144 / 360)
    rows = list(csv.DictReader((out / "compare_lesions.csv").open()))
    assert len(rows) == 3
    ag = nib.load(out / "agreement.nii.gz")
    np.testing.assert_allclose(ag.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ag.dataobj), agreement_map(a, b))


def test_cli_bad_mask_is_one_clear_line(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), np.eye(4)), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(np.full((5, 5, 5), 0.5, np.float32), np.eye(4)), tmp_path / "prob.nii.gz")
    rc = compare_command([str(tmp_path / "prob.nii.gz"), str(tmp_path / "prob.nii.gz"), "--scan", str(tmp_path / "scan.nii.gz"),
                          "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and "not a label map" in err[0]
    assert not (tmp_path / "o" / "compare.json").exists()
