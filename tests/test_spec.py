"""Checkpoint spec: round trip and refusal of unsafe, mismatched or unknown checkpoints."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from seg_app.core.errors import CheckpointError
from seg_app.core.spec import (
    ChannelSpec,
    InferenceSpec,
    LabelSpec,
    ModelSpec,
    NetworkSpec,
    build_network,
    load_checkpoint,
    save_checkpoint,
)


def tiny_spec() -> ModelSpec:
    return ModelSpec(
        name="tiny",
        network=NetworkSpec("UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]}),
        channels=(ChannelSpec("T1c", "MR"),),
        labels=(LabelSpec(0, "background", (0, 0, 0)), LabelSpec(1, "tumour")),
        target_spacing=(2.0, 2.0, 2.0),
        inference=InferenceSpec(roi_size=(16, 16, 16)),
        metrics={"val_dice": 0.9, "folds": [0.8, 0.85]},
        dataset={"n_cases": 3, "median_spacing_mm": [2.0, 2.0, 2.0]},
    )


def test_spec_json_round_trip() -> None:
    spec = tiny_spec()
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    spec = tiny_spec()
    net = build_network(spec)
    path = save_checkpoint(tmp_path / "m.pt", spec, net.state_dict(), {"epoch": 3, "rng": [1, 2, 3]})
    raw = torch.load(path, weights_only=True)  # plain file: readable without any of our classes
    assert raw["format"] == "seg_app.checkpoint"
    ck = load_checkpoint(path)
    assert ck.spec == spec
    assert ck.training_state["epoch"] == 3
    for k, v in net.state_dict().items():
        assert torch.equal(ck.state_dict[k], v)


class _Evil:
    """Unpickling this would create a file (code execution)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    payload = {"format": "seg_app.checkpoint", "format_version": 1, "spec": tiny_spec().to_json(), "evil": _Evil(str(target))}
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    assert not target.exists()
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not target.exists()
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(CheckpointError):
        load_checkpoint(buf.getvalue())
    assert not target.exists()


def test_mismatched_state_dict_is_refused(tmp_path: Path) -> None:
    spec = tiny_spec()
    other = spec.with_updates(network=NetworkSpec("UNet", {**spec.network.kwargs, "channels": [4, 16]}))
    path = save_checkpoint(tmp_path / "m.pt", spec, build_network(other).state_dict())
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)


def test_wrong_format_version_and_not_a_checkpoint(tmp_path: Path) -> None:
    spec = tiny_spec()
    sd = build_network(spec).state_dict()
    torch.save({"format": "seg_app.checkpoint", "format_version": 99, "spec": spec.to_json(), "state_dict": sd}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(tmp_path / "v.pt")
    torch.save({"weights": sd}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a segmentation checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "missing.pt")


def test_unknown_network_is_refused() -> None:
    d = tiny_spec().to_dict()
    d["network"]["name"] = "os.system"
    with pytest.raises(CheckpointError, match="Unknown network"):
        ModelSpec.from_dict(d)


def test_training_state_must_be_plain(tmp_path: Path) -> None:
    spec = tiny_spec()
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "m.pt", spec, build_network(spec).state_dict(), {"obj": object()})
