"""The model manager's registry (``seg_app.core.model_registry``), ``seg-app models`` and *Model > Models...*.

Every test has its own registry file (``conftest._private_model_registry``); nothing touches ``~/.config``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from checkpoints import make_tiny_checkpoint
from seg_app.cli import main
from seg_app.core import model_registry as mr
from seg_app.core.spec import default_model_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("reg_models") / "tiny.pt", name="tiny_reg")


def _nnunet_folder(root: Path) -> Path:
    """A trained-model folder's JSON files and an (empty) fold: enough to describe it, nothing to run."""
    folder = root / "Dataset042_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1c", "1": "FLAIR"}, "labels": {"background": 0, "tumour": 1},
        "numTraining": 12, "file_ending": ".nii.gz", "licence": "CC-BY-SA 4.0", "reference": "test fixture"}))
    (folder / "plans.json").write_text(json.dumps({"dataset_name": "Dataset042_Tiny", "configurations": {
        "3d_fullres": {"spacing": [2.0, 1.0, 1.0], "patch_size": [16, 16, 16], "normalization_schemes": ["ZScore"]}}}))
    return folder


def test_bundled_model_first_and_chosen_by_default():
    entries = mr.list_models()
    assert [e.bundled for e in entries] == [True]
    assert entries[0].chosen and entries[0].kind == "checkpoint" and entries[0].name == "default_brain_tumour"
    assert entries[0].path == str(default_model_path().resolve())
    assert "research use only" in entries[0].licence and "cases" in entries[0].training_data
    assert mr.chosen_model() == str(default_model_path())
    assert not mr.registry_path().exists()  # listing writes nothing


def test_recent_models_newest_first_deduplicated_limited_and_vanished_dropped(tiny, tmp_path):
    copies = []
    for i in range(mr.MAX_RECENT + 2):
        copies.append(shutil.copy(tiny, tmp_path / f"m{i}.pt"))
        mr.remember_model(copies[-1], chosen=False)
    mr.remember_model(tmp_path / "." / "m3.pt", chosen=False)  # the same file again, another spelling
    mr.remember_model(default_model_path(), chosen=False)  # the bundled model is listed once, first
    doc = json.loads(mr.registry_path().read_text())
    assert len(doc["recent"]) == mr.MAX_RECENT and doc["chosen"] is None
    paths = [Path(e.path).name for e in mr.list_models()]
    assert paths[0] == "default_brain_tumour.pt"
    assert paths[1:] == ["m3.pt", "m11.pt", "m10.pt", "m9.pt", "m8.pt", "m7.pt", "m6.pt", "m5.pt", "m4.pt"]
    Path(tmp_path / "m11.pt").unlink()
    assert "m11.pt" not in [Path(e.path).name for e in mr.list_models()]


def test_chosen_model_remembered_and_falls_back_when_gone(tiny, tmp_path):
    path = Path(shutil.copy(tiny, tmp_path / "chosen.pt"))
    mr.remember_model(path)
    assert mr.chosen_model() == str(path.resolve())
    assert [e.chosen for e in mr.list_models()] == [False, True]
    path.unlink()
    assert mr.chosen_model() == str(default_model_path())
    assert [e.chosen for e in mr.list_models()] == [True]


def test_corrupt_registry_reads_empty_and_is_rewritten(tiny):
    reg = mr.registry_path()
    reg.parent.mkdir(parents=True, exist_ok=True)
    for bad in (b"{not json", b'{"recent": "x"}', b"\xff\xfe", b"[1, 2]"):
        reg.write_bytes(bad)
        assert [e.bundled for e in mr.list_models()] == [True]
        assert json.loads(reg.read_text()) == {"version": 1, "chosen": None, "recent": []}
    mr.remember_model(tiny)
    assert json.loads(reg.read_text())["chosen"] == str(tiny.resolve())


def test_cards_of_a_checkpoint_a_bundle_and_an_nnunet_folder(tiny, tmp_path):
    from bundle_factory import make_brats_bundle

    e = mr.describe_model(tiny)
    assert (e.kind, e.name, e.inputs, e.licence) == ("checkpoint", "tiny_reg", ("T1w (MR)",), "not recorded")
    assert e.labels == ("0=background", "1=tumour") and e.spacing == "2x2x2 mm"
    assert e.card.startswith("tiny_reg v") and "Inputs: T1w (MR)" in e.card and e.card.endswith("Licence: not recorded")

    bundle = make_brats_bundle(tmp_path / "brats_mri_segmentation")
    b = mr.describe_model(bundle / "configs" / "metadata.json")  # a file in configs/ is the bundle
    assert b.kind == "monai_bundle" and b.path == str(bundle.resolve()) and len(b.inputs) == 4
    assert b.licence.startswith("Apache License, Version 2.0") and "BraTS 2018 data usage agreement" in b.licence
    assert "Labels: 0=background" in b.card and "Licence: Apache" in b.card

    mr.remember_model(bundle)
    mr.remember_model(bundle / "configs" / "metadata.json")  # the same model
    assert [(e.kind, e.chosen) for e in mr.list_models()] == [("checkpoint", False), ("monai_bundle", True)]

    nn = mr.describe_model(_nnunet_folder(tmp_path))
    assert (nn.kind, nn.name, nn.inputs) == ("nnunet", "Dataset042_Tiny", ("T1c (MR)", "FLAIR (MR)"))
    assert nn.licence == "CC-BY-SA 4.0; reference: test fixture" and nn.training_data == "Dataset042_Tiny, 12 cases"
    assert nn.card.startswith("nnU-Net v2 model Dataset042_Tiny") and nn.spacing == "2x1x1 mm (z, y, x)"


def test_cli_models_text_json_and_choose(tiny, tmp_path, capsys):
    assert main(["models", "--choose", str(tiny)]) == 0
    assert f"chosen: tiny_reg v0.1.0 (checkpoint) {tiny.resolve()}" in capsys.readouterr().out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "default_brain_tumour v2.3.1 (bundled)\n" in out and "tiny_reg v0.1.0 (chosen)\n" in out
    for field in ("kind:", "path:", "inputs:", "labels:", "spacing:", "training data:", "licence:"):
        assert out.count(field) == 2, field
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(d["name"], d["chosen"], d["bundled"]) for d in doc] == [("default_brain_tumour", False, True),
                                                                    ("tiny_reg", True, False)]
    assert doc[1]["card"].startswith("tiny_reg") and doc[1]["labels"] == ["0=background", "1=tumour"]

    bad = tmp_path / "notes.txt"
    bad.write_text("not a model")
    for path in (tmp_path / "missing.pt", bad, tmp_path):
        assert main(["models", "--choose", str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert mr.chosen_model() == str(tiny.resolve())  # unchanged


def test_predict_help_keeps_the_bundled_default(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "desktop app's only" in " ".join(capsys.readouterr().out.split())
