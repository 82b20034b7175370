"""ONNX Runtime backend: matches torch within the tested tolerance; cache and beside-checkpoint files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxruntime  # noqa: F401 - a hard dependency of the app (pyproject)

from seg_app.core import onnx_backend  # noqa: E402
from seg_app.core.inference import Segmenter  # noqa: E402
from seg_app.core.spec import build_network, load_checkpoint  # noqa: E402
from test_inference import head_with_blob, tiny_checkpoint  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_APP_CACHE", str(tmp_path / "cache"))


def _net(ckpt):
    net = build_network(ckpt.spec)
    net.load_state_dict(ckpt.state_dict)
    return net.eval()


def test_exported_model_matches_torch_within_tolerance(tmp_path):
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "m.pt"))
    net = _net(ckpt)
    path = onnx_backend.export_onnx(net, ckpt.spec, tmp_path / "m.onnx", onnx_backend.checkpoint_sha256(ckpt))
    pred = onnx_backend.OnnxPredictor(path, threads=1)
    assert pred.metadata.get("checkpoint_sha256") == onnx_backend.checkpoint_sha256(ckpt)
    x = torch.randn(3, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))  # dynamic batch
    with torch.inference_mode():
        ref = torch.softmax(net(x), 1)
    got = torch.softmax(pred(x), 1)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= onnx_backend.ORT_TOLERANCE


def test_onnx_backend_segmentation_matches_torch(tmp_path):
    path = tiny_checkpoint(tmp_path / "m.pt")
    vol, _ = head_with_blob()
    a = Segmenter(path, device="cpu", backend="torch").segment(vol)
    b = Segmenter(path, device="cpu", backend="onnxruntime").segment(vol)
    assert b.device == "onnxruntime-cpu" and a.device == "cpu"
    assert np.abs(a.probabilities.array - b.probabilities.array).max() <= onnx_backend.ORT_TOLERANCE
    differ = np.mean(a.labels.array != b.labels.array)
    assert differ < 1e-3  # only voxels within the tolerance of 0.5 may flip


def test_auto_backend_records_its_verdict(tmp_path):
    path = tiny_checkpoint(tmp_path / "m.pt")
    seg = Segmenter(path, device="cpu", backend="auto")
    res = seg.segment(head_with_blob()[0])
    verdicts = list((tmp_path / "cache" / "onnx").glob("*.json"))
    assert len(verdicts) == 1
    import json

    v = json.loads(verdicts[0].read_text())
    assert v["match"] and v["max_abs_prob_diff"] <= onnx_backend.ORT_TOLERANCE
    assert res.device == ("onnxruntime-cpu" if v["ort_s"] <= onnx_backend.SPEED_MARGIN * v["torch_s"] else "cpu")


def test_beside_checkpoint_file_used_only_when_it_matches(tmp_path):
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "m.pt"))
    other = load_checkpoint(tiny_checkpoint(tmp_path / "other.pt", seed=7))
    sha = onnx_backend.checkpoint_sha256(ckpt)
    # signed and matching: used as is
    onnx_backend.export_onnx(_net(ckpt), ckpt.spec, tmp_path / "m.onnx", sha)
    pred = onnx_backend.predictor_for(_net(ckpt), ckpt.spec, ckpt, check=False)
    assert pred is not None and pred.path == tmp_path / "m.onnx"
    # unsigned file from other weights: the accuracy check refuses it
    onnx_backend.export_onnx(_net(other), other.spec, tmp_path / "m.onnx", "")
    assert onnx_backend._beside_checkpoint(ckpt, sha, allow_unsigned=False) is None
    assert onnx_backend.predictor_for(_net(ckpt), ckpt.spec, ckpt, check=True) is None
