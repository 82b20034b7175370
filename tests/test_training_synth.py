"""seg-train synth: label-map domain randomisation -- determinism, BraTS labels, contrast and layout."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg_app.core.regions import composite_regions
from training.cli import main
from training.data import read_dataset
from training.synth import SynthOptions, _plan_tumours, make_case

SMALL = SynthOptions(size=24)


def test_same_seed_same_case_different_seed_different() -> None:
    a = make_case(7, 1, "train", SMALL)
    b = make_case(7, 1, "train", SMALL)
    c = make_case(8, 1, "train", SMALL)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], make_case(7, 1, "test", SMALL)[0])


def test_full_size_case_has_brats_labels_inside_the_head() -> None:
    for i in range(3, 10):  # the first case with a lesion (a quarter of the cases have none)
        image, labels, affine, meta = make_case(1, i)
        if meta["lesions"] and min(image.shape[1:]) > 40:
            break
    assert image.shape[0] == 1 and 60 < image.shape[1] < 120
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), 2.0)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3}
    assert labels.any() and meta["lesions"]
    assert image[0][labels > 0].mean() > 0  # lesions lie inside the imaged head
    # oedema surrounds the core: every core voxel is closer to the lesion centre than the outer oedema
    assert (labels == 2).sum() > 0 and ((labels == 1) | (labels == 3)).sum() > 0


def test_tumour_families_and_lesion_free_share() -> None:
    plans = [_plan_tumours(np.random.default_rng([5, 0, i]), size_mode=False) for i in range(200)]
    empty = sum(1 for p in plans if not p)
    assert 0.2 <= empty / len(plans) <= 0.32  # at least 20 % of cases without a lesion
    families = {t.family for p in plans for t in p}
    assert {"ring", "solid", "infiltrative", "cystic"} <= families
    radii = [t.radius_mm for p in plans for t in p]
    vols = [4 / 3 * np.pi * r**3 / 1000 for r in radii]
    assert min(vols) < 0.5 and max(vols) > 100  # small foci and large tumours
    assert any(t.mass_effect > 0.15 for p in plans for t in p)


def test_contrast_is_independent_of_the_label() -> None:
    """The same label is brighter than the brain in some cases and darker in others (random contrast)."""
    brighter = darker = 0
    skull_signal = []
    for i in range(24):
        image, labels, _aff, meta = make_case(11, i, "train", SMALL)
        img = image[0]
        tumour = labels > 0
        if tumour.sum() >= 5:
            ratio = img[tumour].mean() / np.median(img[img > 0.05 * img.max()])
            brighter += ratio > 1.1
            darker += ratio < 0.9
        skull_signal.append(meta["skull"])
    assert brighter >= 2 and darker >= 2
    assert any(skull_signal) and not all(skull_signal)  # with and without the non-brain layers


def test_skull_on_cases_have_signal_outside_the_brain() -> None:
    ratios: dict[bool, list[float]] = {True: [], False: []}
    for i in range(16):
        image, _labels, _aff, meta = make_case(2, i, "train", SMALL)
        img = image[0]
        bright = int((img > 0.15 * np.percentile(img, 99)).sum())
        ratios[meta["skull"]].append(bright / meta["brain_voxels"])
    assert ratios[True] and ratios[False]
    # skull-on heads show scalp, fat and muscle around the brain; stripped brains show the brain alone
    assert min(ratios[True]) > 1.2 > max(ratios[False])


def test_cli_writes_msd_layout_deterministically(tmp_path: Path) -> None:
    for name, workers in (("a", "1"), ("b", "2")):
        assert main(["synth", "--out", str(tmp_path / name), "--cases", "4", "--test-cases", "2", "--seed", "3", "--size", "16",
                     "--workers", workers, "--quiet"]) == 0
    ds = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert ds["numTraining"] == 4 and ds["numTest"] == 2
    assert composite_regions({int(k): v for k, v in ds["labels"].items()}) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        fa = sorted((tmp_path / "a" / sub).iterdir())
        assert fa
        for f in fa:  # the same with 1 or 2 worker processes
            x, y = nib.load(f), nib.load(tmp_path / "b" / sub / f.name)
            assert np.array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj))
            assert np.allclose(x.affine, y.affine)
    info = read_dataset(tmp_path / "a")
    assert len(info.training) == 4 and all("label" in c for c in info.test)
    assert info.labels == {0: "background", 1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}
    for c in info.training:
        lab = nib.load(c["label"])
        assert lab.shape == nib.load(c["image"]).shape
        assert set(np.unique(np.asarray(lab.dataobj)).tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize("channels", [2])
def test_two_channels_get_two_contrasts(channels: int) -> None:
    image, labels, _aff, meta = make_case(4, 2, "train", SynthOptions(size=20, channels=channels))
    assert image.shape[0] == channels and len(meta["contrast"]) == channels
    assert not np.allclose(image[0] / max(image[0].max(), 1), image[1] / max(image[1].max(), 1))


def test_style_3_has_more_small_lesions_and_some_thin_slabs() -> None:
    """Style 3 (v2.3 recipe) draws small foci more often than style 2 and sometimes images a thin slab."""

    def small_lesions(style: int) -> int:
        plans = [_plan_tumours(np.random.default_rng([5, 0, i]), size_mode=False, style=style) for i in range(300)]
        return sum(1 for p in plans for t in p if 4 / 3 * np.pi * t.radius_mm**3 / 1000 <= 3.0)

    assert small_lesions(3) > 1.4 * small_lesions(2)
    from training.synth import _output_grid

    extents = []
    for i in range(200):
        shape, affine = _output_grid(np.random.default_rng([3, 0, i]), SynthOptions(style=3), skull=False)
        extents.append(min(s * abs(affine[a, a]) for a, s in enumerate(shape)))
    thin = sum(1 for e in extents if e <= 42)
    assert 3 <= thin <= 30  # about 6 % of the cases are 12-40 mm slabs
    # style 2 never draws a slab: its grids keep at least 65 % of the brain box along every axis
    extents2 = [min(s * abs(a[k, k]) for k, s in enumerate(sh))
                for sh, a in (_output_grid(np.random.default_rng([3, 0, i]), SynthOptions(style=2), skull=False) for i in range(200))]
    assert min(extents2) > 90
