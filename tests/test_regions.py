"""Tumour sub-regions: BraTS composites from label names, whole-tumour lesions with region volumes, exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from seg_app.core.export import save_measurements_csv, save_measurements_json
from seg_app.core.measure import label_totals, measure_lesions
from seg_app.core.regions import BRATS_LABELS, brats_role, composite_regions, lesion_mask, region_mask
from seg_app.core.volume import Volume

NAMES = {0: "background", **BRATS_LABELS}


def test_composites_from_brats_names() -> None:
    assert composite_regions(NAMES) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    # other numbering and spellings (MSD Task01 / BraTS 2021 style) give the same roles
    assert composite_regions({0: "background", 1: "edema", 2: "non-enhancing tumor", 4: "enhancing tumour"}) == {
        "WT": (1, 2, 4), "TC": (2, 4), "ET": (4,)}
    assert composite_regions({0: "background", 1: "NCR", 2: "ED", 3: "ET"}) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


@pytest.mark.parametrize("names", [
    {0: "background", 1: "tumour"},
    {0: "background", 1: "liver", 2: "tumour"},
    {0: "background", 1: "necrotic core", 2: "oedema"},  # no enhancing role: not BraTS
])
def test_other_label_sets_have_no_composites(names: dict[int, str]) -> None:
    assert composite_regions(names) == {}


def test_roles_and_masks() -> None:
    assert [brats_role(n) for n in ("necrotic core", "oedema", "enhancing tumour", "liver")] == [1, 2, 3, None]
    lab = np.array([0, 1, 2, 3, 3], np.uint8)
    assert region_mask(lab, (1, 3)).tolist() == [False, True, False, True, True]
    assert lesion_mask(lab, NAMES).tolist() == [False, True, True, True, True]
    assert lesion_mask(np.array([0, 2]), {0: "bg", 2: "liver"}).tolist() == [False, True]


def _two_tumours() -> Volume:
    """Two separate tumours on a 1 x 1 x 2 mm grid: A = core 8 + enhancing 19 + oedema 98 voxels, B = oedema only."""
    lab = np.zeros((30, 30, 20), np.uint8)
    lab[3:8, 3:8, 3:8] = 2  # oedema shell 125 - 27
    lab[4:7, 4:7, 4:7] = 3  # enhancing 27 - 8
    lab[5, 5, 5] = 1
    lab[4:6, 5, 5] = 1
    lab[5, 4:6, 5] = 1
    lab[5, 5, 4:6] = 1
    lab[5:7, 5:7, 4] = 3
    lab[20:24, 20:24, 10:12] = 2
    return Volume(lab[None], np.diag([1.0, 1.0, 2.0, 1.0]), modality="MR")


def test_whole_tumour_lesions_with_region_volumes(tmp_path: Path) -> None:
    vol = _two_tumours()
    lab = vol.array[0]
    lesions = measure_lesions(vol, label_names=NAMES, regions=composite_regions(NAMES))
    assert len(lesions) == 2  # one lesion per whole-tumour component, not one per sub-region
    a, b = lesions
    assert a.label == 0 and a.label_name == "whole tumour"
    vox_ml = 2.0 / 1000
    comp_a = lab[:15]
    expect = {
        "necrotic core": (comp_a == 1).sum() * vox_ml, "oedema": (comp_a == 2).sum() * vox_ml,
        "enhancing tumour": (comp_a == 3).sum() * vox_ml,
    }
    for k, v in expect.items():
        assert a.region_volumes_ml[k] == pytest.approx(v)
    assert a.region_volumes_ml["WT"] == pytest.approx(a.volume_ml) == pytest.approx(125 * vox_ml)
    assert a.region_volumes_ml["TC"] == pytest.approx(expect["necrotic core"] + expect["enhancing tumour"])
    assert a.region_volumes_ml["ET"] == pytest.approx(expect["enhancing tumour"])
    assert b.region_volumes_ml["TC"] == 0.0 and b.region_volumes_ml["WT"] == pytest.approx(32 * vox_ml)
    assert a.max_diameter_mm > b.max_diameter_mm > 0

    totals = label_totals(lesions)
    assert len(totals) == 1 and totals[0]["n_lesions"] == 2
    assert totals[0]["region_volumes_ml"]["WT"] == pytest.approx(a.volume_ml + b.volume_ml)
    assert totals[0]["region_volumes_ml"]["ET"] == pytest.approx(expect["enhancing tumour"])

    # JSON keeps the dict; CSV gets one volume_ml_<region> column per sub-region and composite
    doc = json.loads(save_measurements_json(tmp_path / "m.json", lesions, totals).read_text())
    assert doc["lesions"][0]["region_volumes_ml"]["TC"] == pytest.approx(a.region_volumes_ml["TC"])
    rows = list(csv.DictReader(open(save_measurements_csv(tmp_path / "m.csv", lesions), newline="")))
    assert float(rows[0]["volume_ml_ET"]) == pytest.approx(expect["enhancing tumour"], rel=1e-5)
    assert float(rows[1]["volume_ml_oedema"]) == pytest.approx(32 * vox_ml, rel=1e-5)
    assert "region_volumes_ml" not in rows[0]


def test_without_regions_lesions_stay_per_label() -> None:
    lesions = measure_lesions(_two_tumours(), label_names=NAMES)
    assert {les.label for les in lesions} == {1, 2, 3}
    assert all(les.region_volumes_ml is None for les in lesions)


def test_postprocessing_removes_whole_small_tumours_not_small_parts_of_large_ones() -> None:
    from seg_app.core.postprocess import postprocess_labels
    from seg_app.core.spec import InferenceSpec, LabelSpec, ModelSpec, NetworkSpec, PostprocessSpec

    spec = ModelSpec(
        name="t", network=NetworkSpec("UNet", {}), channels=(),
        labels=tuple(LabelSpec(v, n) for v, n in NAMES.items()), target_spacing=(1.0, 1.0, 1.0),
        inference=InferenceSpec((16, 16, 16)), postprocess=PostprocessSpec(min_lesion_ml=0.05),
    )
    vol = _two_tumours()  # 1 x 1 x 2 mm voxels: tumour A 0.25 mL with an 8-voxel (0.016 mL) core; B 0.064 mL
    lab = vol.array[0].copy()
    lab[28, 28, 18] = 3  # a lone 0.002 mL enhancing voxel far away
    out, removed = postprocess_labels(lab.copy(), spec, vol.voxel_volume_ml)
    assert removed == 1 and out[28, 28, 18] == 0
    assert np.array_equal(out[:26], lab[:26])  # tumour A keeps its tiny core, B (above the threshold) stays
