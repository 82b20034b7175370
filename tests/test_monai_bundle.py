"""MONAI Model Zoo bundles: the real ``brats_mri_segmentation`` layout loaded, run and refused safely.

The bundle is built by :mod:`bundle_factory` from the Model Zoo's own metadata.json and inference.json
(random weights, a 16^3 sliding window instead of 240x240x160 for speed); a 24^3 four-sequence case
(8 windows per pass, overlapping by half).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_factory import CHANNELS, make_brats_bundle, write_brats_niftis
from seg_app import predict_cli
from seg_app.core.errors import CheckpointError
from seg_app.core.model_sources import is_model_folder, load_model_checkpoint, model_kind, model_sha256
from seg_app.core.regions import composite_regions, nested_region_labels
from seg_app.core.spec import Checkpoint, ModelSpec, model_card


@pytest.fixture(autouse=True)
def _onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_APP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_brats_bundle(tmp_path_factory.mktemp("zoo") / "brats_mri_segmentation")


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, list[Path]]:
    return write_brats_niftis(tmp_path_factory.mktemp("case"))


@pytest.fixture(scope="module")
def checkpoint(bundle) -> Checkpoint:
    return load_model_checkpoint(bundle)


# ---- detection and the spec -------------------------------------------------------------------
def test_model_kind_tells_checkpoints_bundles_and_nnunet_folders_apart(tmp_path, bundle):
    assert model_kind(bundle) == "monai_bundle"
    assert model_kind(bundle / "configs" / "metadata.json") == "monai_bundle"
    assert model_kind(tmp_path / "model.pt") == "checkpoint"  # missing: load_checkpoint says so
    nn = tmp_path / "Dataset001_BrainTumour" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (nn / "fold_0").mkdir(parents=True)
    (nn / "dataset.json").write_text("{}")
    (nn / "plans.json").write_text("{}")
    assert model_kind(nn) == "nnunet" and is_model_folder(nn) and is_model_folder(bundle)
    with pytest.raises(CheckpointError, match="neither a MONAI bundle"):
        model_kind(tmp_path)
    assert not is_model_folder(tmp_path)
    with pytest.raises(CheckpointError, match="nnU-Net"):
        load_model_checkpoint(nn)
    assert len(model_sha256(bundle)) == 64 and model_sha256(bundle) != model_sha256(bundle / "models" / "model.pt")


def test_real_brats_bundle_maps_onto_our_spec(checkpoint):
    spec = checkpoint.spec
    assert spec.name == "BraTS MRI segmentation" and spec.version == "0.5.2"
    assert [c.name for c in spec.channels] == list(CHANNELS) and {c.modality for c in spec.channels} == {"MR"}
    assert spec.network.name == "SegResNet" and spec.network.kwargs["init_filters"] == 16
    assert spec.inference.activation == "sigmoid_nested_regions"
    assert spec.inference.region_channels == ("TC", "WT", "ET") and spec.out_channels == 3
    assert [(lab.value, lab.name) for lab in spec.labels] == [
        (0, "background"), (1, "necrotic core"), (2, "oedema"), (3, "enhancing tumour")]
    assert composite_regions({lab.value: lab.name for lab in spec.labels}) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    # no Orientationd/Spacingd in the real config: MONAI runs on the array as stored, and so do we
    assert spec.native_grid and spec.normalization.scheme == "zscore_nonzero"
    assert spec.inference.roi_size == (16, 16, 16) and spec.inference.overlap == 0.5
    assert spec.inference.blend_mode == "constant" and spec.inference.sw_batch_size == 1  # SlidingWindowInferer defaults
    assert spec.dataset["licence"] == "LICENSE" and spec.dataset["data_licence"] == "docs/data_license.txt"
    assert "sigmoid_nested_regions" in model_card(spec) and "own grid" in model_card(spec)
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    old = json.loads(spec.to_json())
    for key in ("activation", "region_channels"):
        old["inference"].pop(key)
    old.pop("native_grid")
    old["labels"] = old["labels"][:2]
    old["network"]["kwargs"]["out_channels"] = 2
    legacy = ModelSpec.from_dict(old)  # a checkpoint written before these fields: softmax, resampled
    assert legacy.inference.activation == "softmax" and not legacy.native_grid and legacy.out_channels == 2


def test_weights_nested_under_a_key_load_too(tmp_path):
    ckpt = load_model_checkpoint(make_brats_bundle(tmp_path / "b", weights="pt_nested"))
    assert "conv_final.2.conv.bias" in ckpt.state_dict


def test_orientation_spacing_and_ct_window_are_mapped(tmp_path):
    def edit(cfg):
        cfg["preprocessing"]["transforms"][1:] = [
            {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
            {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": -57, "a_max": 164, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
        ]
        cfg["inferer"]["mode"] = "gaussian"

    spec = load_model_checkpoint(make_brats_bundle(tmp_path / "b", weights="pt", edit=edit)).spec
    assert not spec.native_grid and spec.orientation == "RAS" and spec.target_spacing == (1.5, 1.5, 2.0)
    assert spec.normalization.scheme == "ct_window" and spec.normalization.window == (-57.0, 164.0)
    assert spec.inference.blend_mode == "gaussian"


def _append(section: str, item: dict):
    return lambda c: c[section]["transforms"].append(item)


def _spacing_before_orientation(c):
    c["preprocessing"]["transforms"][1:] = [{"_target_": "Spacingd", "keys": "image", "pixdim": [1, 1, 1]},
                                            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"}]


@pytest.mark.parametrize("edit, message", [
    (_append("preprocessing", {"_target_": "CropForegroundd", "keys": "image", "source_key": "image"}),
     "preprocessing transform 'CropForegroundd' at preprocessing::transforms::2 is not supported"),
    (lambda c: c["preprocessing"]["transforms"][1].update(channel_wise=False),
     "NormalizeIntensityd(channel_wise=False) at preprocessing::transforms::1 is not supported"),
    (_spacing_before_orientation, "Orientationd at preprocessing::transforms::2 after Spacingd is not supported"),
    (lambda c: c["network_def"].update({"_target_": "DynUNet"}), "network 'DynUNet' is not supported"),
    (lambda c: c["postprocessing"]["transforms"][3].update(func="$lambda x: x"),
     "refused bundle config: expression '$lambda x: x' at postprocessing::transforms::3::func would run Python code"),
    (lambda c: c["inferer"].update(sigma_scale=0.5), "SlidingWindowInferer(sigma_scale=0.5) at inferer is not supported"),
    (_append("postprocessing", {"_target_": "KeepLargestConnectedComponentd", "keys": "pred"}),
     "postprocessing transform 'KeepLargestConnectedComponentd'"),
])
def test_what_would_change_the_result_is_named_not_ignored(tmp_path, edit, message):
    root = make_brats_bundle(tmp_path / "b", weights="none", edit=edit)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_model_checkpoint(root)


# ---- nested regions -> BraTS labels ----------------------------------------------------------
def test_nested_region_probabilities_become_brats_labels():
    #            TC    WT    ET    -> label
    cases = [((0.1, 0.2, 0.1), 0), ((0.1, 0.9, 0.1), 2), ((0.8, 0.9, 0.1), 1), ((0.8, 0.9, 0.7), 3),
             ((0.1, 0.9, 0.6), 3), ((0.6, 0.3, 0.2), 1), ((0.5, 0.5, 0.5), 0)]
    p = np.array([c[0] for c in cases], np.float32).T.reshape(3, len(cases), 1, 1)
    expected = np.array([c[1] for c in cases]).reshape(len(cases), 1, 1)
    assert np.array_equal(nested_region_labels(p, ("TC", "WT", "ET")), expected)
    order = ("ET", "TC", "WT")  # channels in another order: the mapping follows the names
    assert np.array_equal(nested_region_labels(p[[2, 0, 1]], order), expected)


def _with_bias(ckpt: Checkpoint, bias: list[float]) -> Checkpoint:
    sd = {k: v.clone() for k, v in ckpt.state_dict.items()}
    sd["conv_final.2.conv.weight"].zero_()
    sd["conv_final.2.conv.bias"].copy_(torch.tensor(bias))
    return Checkpoint(spec=ckpt.spec, state_dict=sd, path="")


def test_segmenter_runs_the_bundle_and_maps_known_outputs_to_brats_labels(checkpoint, case):
    from seg_app.core.inference import Segmenter
    from seg_app.core.io import load_scan

    vol = load_scan(case[0])
    assert vol.n_channels == 4
    res = Segmenter(checkpoint, device="cpu", backend="torch").segment(vol)
    labels = res.labels.array[0]
    assert labels.shape == vol.shape and np.allclose(res.labels.affine, vol.affine)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    head = vol.array[0] != 0
    fg = res.probabilities.array[0]
    assert np.array_equal(fg > 0.5, labels > 0)  # foreground = largest region probability
    #            TC   WT   ET: constant outputs (final conv weights zero) -> the same label in the whole head
    small = vol.with_array(vol.array[:, 4:20, 4:20, 4:20])  # one 16^3 window per pass
    head = small.array[0] != 0
    for bias, value in (([-6, 6, -6], 2), ([6, 6, -6], 1), ([6, 6, 6], 3)):
        out = Segmenter(_with_bias(checkpoint, bias), device="cpu", backend="torch", tta=(value == 3)).segment(small)
        lab = out.labels.array[0]
        assert np.all(lab[head] == value), (bias, np.unique(lab[head]))
        if value == 3:  # the TTA flips agree (region labels per pass)
            assert out.agreement is not None and float(out.agreement.array[0][head].min()) == 1.0


def test_probabilities_and_labels_match_monai_running_the_same_bundle(bundle, checkpoint, case, capsys):
    """MONAI's own parse of the (trusted, test-made) config: network, preprocessing, inferer, postprocessing."""
    from monai.bundle import ConfigParser

    from seg_app.core.inference import Segmenter
    from seg_app.core.io import load_scan

    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    net.eval()
    pre = parser.get_parsed_content("preprocessing")({"image": [str(p) for p in case[1]]})
    with torch.no_grad():
        logits = parser.get_parsed_content("inferer")(pre["image"][None], net)[0]
    post = [parser.get_parsed_content(f"postprocessing::transforms::{i}") for i in (0, 2, 3)]  # no Invertd/SaveImaged
    d = {"pred": logits.clone()}
    for t in post:
        d = t(d)
    monai_prob = torch.sigmoid(logits).numpy()
    monai_labels = np.asarray(d["pred"])[0].astype(np.int16)

    seg = Segmenter(checkpoint, device="cpu", backend="torch", crop_foreground=False)
    vol = load_scan(case[0])
    grid = seg.preprocess(vol)
    assert np.allclose(grid.image.numpy(), np.asarray(pre["image"]), atol=1e-5)
    ours = seg.predict_on_model_grid(grid).probabilities.numpy()
    diff = float(np.abs(ours - monai_prob).max())
    # native grid, nothing cropped: the model grid is the scan's grid (Segmenter.back_to_source is an index copy)
    labels = nested_region_labels(ours, checkpoint.spec.inference.region_channels)
    theirs = np.where(monai_labels == 4, 3, monai_labels)  # the bundle writes ET as 4, BraTS-2018 style
    agree = float(np.mean(labels == theirs))
    with capsys.disabled():
        print(f"\nMONAI vs seg_app on the bundle: max |p diff| {diff:.2e}, label agreement {agree:.6f}, "
              f"label counts {np.bincount(labels.ravel(), minlength=4).tolist()}")
    assert diff < 1e-4
    assert agree >= 0.9999


# ---- the command line ---------------------------------------------------------------------
def test_predict_cli_with_a_bundle_writes_labels_and_brats_regions(tmp_path, bundle, case, capsys):
    out = tmp_path / "out"
    rc = predict_cli.predict_command([str(case[0]), "--model", str(bundle), "--out", str(out), "--device", "cpu",
                                      "--backend", "torch"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lab = nib.load(out / "case_4d_labels.nii.gz")
    assert lab.shape == (24, 24, 24) and set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2, 3}
    doc = json.loads((out / "case_4d_measurements.json").read_text())
    assert doc["model"]["name"] == "BraTS MRI segmentation"
    assert doc["model"]["labels"] == {"0": "background", "1": "necrotic core", "2": "oedema", "3": "enhancing tumour"}
    assert doc["model"]["regions"] == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}


def test_info_prints_a_bundles_model_card(bundle, capsys):
    from seg_app.cli import info_command

    assert info_command([str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "BraTS MRI segmentation v0.5.2" in out and "T1c (MR), T1 (MR), T2 (MR), FLAIR (MR)" in out


# ---- malicious bundles ----------------------------------------------------------------------
def _set(path: str, value):
    def edit(cfg):
        node = cfg
        keys = path.split("::")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


MARKER = "MARKER_created_by_bundle"


@pytest.mark.parametrize("name, edit, refused", [
    ("import-expression", lambda m: _set("device", f"$__import__('os').system('touch {m}')"),
     "expression .*__import__.* at device would run Python code"),
    ("os-system-network", lambda m: _set("network_def::_target_", "os.system"),
     "_target_ 'os.system' at network_def is not an allowed MONAI class"),
    ("import-in-transform", lambda m: _set("preprocessing::transforms::1::nonzero", "$import os"),
     "'\\$import os' at preprocessing::transforms::1::nonzero"),
    ("subprocess-handler", lambda m: _set("handlers::0", {"_target_": "subprocess.run", "args": ["touch", str(m)]}),
     "_target_ 'subprocess.run' at handlers::0"),
    ("optional-import", lambda m: _set("inferer::_target_", "monai.utils.optional_import"),
     "'monai.utils.optional_import' at inferer"),
    ("builtins-eval", lambda m: _set("postprocessing::transforms::0::_target_", "builtins.eval"),
     "'builtins.eval' at postprocessing::transforms::0"),
    ("requires", lambda m: _set("network_def::_requires_", "@initialize"), "_requires_ at network_def::_requires_"),
    ("callable-mode", lambda m: _set("network_def::_mode_", "callable"), "_mode_ 'callable'"),
    ("macro-outside", lambda m: _set("network_def", "%/etc/passwd.json#net"), "lies outside the bundle folder"),
    ("path-join-outside", lambda m: _set("checkpointloader::load_path", "$@bundle_root + '/../../elsewhere.pt'"),
     "load_path .* lies outside the bundle folder"),
])
def test_malicious_bundles_are_refused_with_one_line_and_nothing_runs(tmp_path, case, capsys, name, edit, refused):
    marker = tmp_path / MARKER
    root = make_brats_bundle(tmp_path / "evil", weights="none", edit=edit(marker))
    (root / "models" / "model.pt").write_bytes(b"not needed: refused before")
    rc = predict_cli.predict_command([str(case[0]), "--model", str(root), "--out", str(tmp_path / "out"),
                                      "--device", "cpu", "--backend", "torch"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("error:") and "refused" in err[0], err
    assert re.search(refused, err[0]), err[0]
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_torchscript_weights_need_trust_model(tmp_path, case, capsys):
    root = make_brats_bundle(tmp_path / "ts", weights="ts")
    rc = predict_cli.predict_command([str(case[0]), "--model", str(root), "--out", str(tmp_path / "out"),
                                      "--device", "cpu", "--backend", "torch"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "refused bundle weights" in err[0] and "--trust-model" in err[0], err
    with pytest.warns(UserWarning, match="TorchScript"):
        ckpt = load_model_checkpoint(root, trust_model=True)
    assert ckpt.spec.training["weights"].startswith("models/model.ts")
    ref = load_model_checkpoint(make_brats_bundle(tmp_path / "pt"))
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in ref.state_dict.items())


def test_a_bundle_exported_by_seg_train_loads_back_as_the_same_model(tmp_path, tiny_checkpoint_path):
    """Our own ``seg-train export --bundle`` output (Orientationd + Spacingd, softmax/argmax) round-trips."""
    from seg_app.core.spec import load_checkpoint
    from training.bundle import export_bundle

    orig = load_checkpoint(tiny_checkpoint_path)
    root = export_bundle(tiny_checkpoint_path, tmp_path / "exported")
    back = load_model_checkpoint(root)
    a, b = orig.spec, back.spec
    assert b.inference.activation == "softmax" and not b.native_grid
    assert (b.network.name, b.orientation, b.target_spacing, b.normalization) == (
        a.network.name, a.orientation, a.target_spacing, a.normalization)
    assert (b.inference.roi_size, b.inference.overlap, b.inference.blend_mode) == (
        a.inference.roi_size, a.inference.overlap, a.inference.blend_mode)
    assert [lab.name for lab in b.labels] == [lab.name for lab in a.labels]
    assert all(torch.equal(back.state_dict[k], v) for k, v in orig.state_dict.items())
