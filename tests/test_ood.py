"""Out-of-distribution guard: CT for an MR model, 2D slices, a field of view that is not the model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from seg_app.core.io import load_scan
from seg_app.core.ood import domain_warnings
from seg_app.core.spec import ChannelSpec, InferenceSpec, LabelSpec, ModelSpec, NetworkSpec
from seg_app.core.volume import Volume


def _spec(modality: str = "MR", fov: list[float] | None = None) -> ModelSpec:
    return ModelSpec(
        name="t", network=NetworkSpec("UNet", {}), channels=(ChannelSpec("MRI", modality),),
        labels=(LabelSpec(0, "background"), LabelSpec(1, "tumour")), target_spacing=(2.0, 2.0, 2.0),
        inference=InferenceSpec((16, 16, 16)), dataset={"median_fov_mm": fov} if fov else {},
    )


def _head(modality: str = "MR", values: np.ndarray | None = None) -> Volume:
    arr = values if values is not None else np.random.default_rng(0).uniform(0, 800, (90, 110, 90)).astype(np.float32)
    return Volume(arr[None], np.diag([2.0, 2.0, 2.0, 1.0]), modality=modality)


def test_mr_head_for_an_mr_head_model_gives_no_warning() -> None:
    assert domain_warnings(_head(), _spec(fov=[180, 220, 180])) == []


def test_ct_for_an_mr_model_by_header_and_by_values() -> None:
    assert any("CT" in w for w in domain_warnings(_head("CT"), _spec()))
    hu = np.full((90, 110, 90), -1000.0, np.float32)
    hu[20:70, 20:90, 20:70] = 40.0
    hu[20:70, 20:22, 20:70] = 1500.0  # bone
    warnings = domain_warnings(_head("", hu), _spec())  # NIfTI: no modality, values say CT
    assert len(warnings) == 1 and "Hounsfield" in warnings[0]
    assert any("trained on CT" in w for w in domain_warnings(_head("MR"), _spec("CT")))


def test_single_slice_and_thin_slab() -> None:
    one = Volume(np.ones((1, 256, 256, 1), np.float32), np.diag([1.0, 1.0, 5.0, 1.0]), modality="MR")
    assert any("single slice" in w for w in domain_warnings(one, _spec()))
    slab = Volume(np.ones((1, 256, 256, 4), np.float32), np.diag([1.0, 1.0, 5.0, 1.0]), modality="MR")
    assert any("thin slab" in w for w in domain_warnings(slab, _spec()))


def test_field_of_view_much_larger_than_the_training_scans() -> None:
    body = Volume(np.ones((1, 256, 256, 300), np.float32), np.diag([1.9, 1.9, 2.0, 1.0]), modality="MR")
    warnings = domain_warnings(body, _spec(fov=[180, 220, 180]))
    assert any("field of view" in w for w in warnings)
    assert domain_warnings(body, _spec()) == []  # no training FOV recorded: no claim


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm"])
def test_real_pydicom_files(name: str) -> None:
    """pydicom's real single-slice MR and CT files: both are 2D; the CT one is also CT."""
    vol = load_scan(get_testdata_file(name))
    warnings = domain_warnings(vol, _spec())
    assert any("single slice" in w for w in warnings)
    assert any("CT" in w for w in warnings) == (pydicom.dcmread(get_testdata_file(name)).Modality == "CT")


def test_segmenter_and_predict_report_the_warnings(tmp_path: Path, tiny_checkpoint_path: Path) -> None:
    """The guard's sentences reach the segmentation result and predict's JSON ``warnings``."""
    import json

    from seg_app.core.inference import Segmenter
    from seg_app.predict_cli import predict_command

    ct = get_testdata_file("CT_small.dcm")
    result = Segmenter(tiny_checkpoint_path, backend="torch").segment(load_scan(ct))
    assert any("CT" in w for w in result.warnings)
    assert predict_command([ct, "--out", str(tmp_path), "--model", str(tiny_checkpoint_path)]) == 0
    doc = json.loads(next(tmp_path.glob("*_measurements.json")).read_text())
    assert any("single slice" in w for w in doc["warnings"]) and any("CT" in w for w in doc["warnings"])
