"""seg-train export: ONNX agrees with torch; MONAI bundle folder is complete."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from seg_app.core.spec import build_network, save_checkpoint
from training.cli import main
from training.export import export_onnx

from test_spec import tiny_spec


def test_onnx_and_bundle(tmp_path: Path) -> None:
    spec = tiny_spec()
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", spec, build_network(spec).state_dict())
    r = export_onnx(ckpt, tmp_path / "m.onnx", atol=1e-4)
    assert r["max_abs_diff"] < 1e-4 and Path(r["path"]).is_file()
    import onnx

    model = onnx.load(r["path"])
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # the app's one ONNX export, signed: the app takes the file beside the checkpoint without re-checking
    from seg_app.core import onnx_backend
    from seg_app.core.spec import load_checkpoint

    sha = onnx_backend.checkpoint_sha256(load_checkpoint(ckpt))
    assert {p.key: p.value for p in model.metadata_props}.get("checkpoint_sha256") == sha
    assert main(["export", "--model", str(ckpt), "--bundle", str(tmp_path / "bundle")]) == 0
    meta = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "tumour"}
    assert (tmp_path / "bundle" / "configs" / "inference.json").is_file()
    assert (tmp_path / "bundle" / "docs" / "README.md").is_file()
    sd = torch.load(tmp_path / "bundle" / "models" / "model.pt", weights_only=True)
    from monai.networks.nets import UNet

    UNet(**spec.network.kwargs).load_state_dict(sd)


def test_seg_app_info_prints_a_checkpoints_card_and_spec(tmp_path: Path, capsys) -> None:
    from checkpoints import make_tiny_checkpoint

    from seg_app.cli import main as seg_app_main

    ckpt = make_tiny_checkpoint(tmp_path / "m.pt", labels=3, name="info-model")
    assert seg_app_main(["info", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "info-model v0.1.0" in out and "Labels: 0=background, 1=tumour, 2=oedema" in out
    spec = json.loads(out[out.index("Spec:\n") + len("Spec:\n"):])
    assert spec["name"] == "info-model" and spec["inference"]["roi_size"] == [16, 16, 16]
    assert seg_app_main(["info", str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
