"""seg-train export --bundle: a MONAI bundle that ``python -m monai.bundle run`` runs on a folder of images,
giving the masks ``seg-app predict`` gives (Dice >= 0.99 per label), on each image's own grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from checkpoints import make_tiny_checkpoint
from seg_app.core.spec import NormalizationSpec
from training.cli import main

pytestmark = pytest.mark.slow  # a MONAI bundle subprocess and the app's predict: ~30-60 s on a busy 2-core machine

#: keys the Model Zoo's metadata schema requires (meta_schema_20240725)
REQUIRED = ("schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
            "name", "task", "description", "authors", "copyright", "network_data_format")


def _images(folder: Path) -> list[Path]:
    """Three scans on different grids: RAS 1.5 mm, LPS anisotropic, oblique (noise everywhere, a bright blob)."""
    folder.mkdir()
    rng = np.random.default_rng(0)

    def vol(shape):
        g = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
        r = np.sqrt(sum(x**2 for x in g))
        return (100 + 80 * (r < 0.5) + 40 * np.sin(6 * g[0]) + rng.normal(0, 10, shape)).astype(np.float32)

    ras = np.diag([1.5, 1.5, 1.5, 1.0])
    ras[:3, 3] = [-20, -25, -18]
    lps = np.diag([-1.2, -1.1, 3.0, 1.0])
    lps[:3, 3] = [20, 25, -15]
    c, s = np.cos(0.3), np.sin(0.3)
    obl = np.eye(4)
    obl[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.7, 1.7, 2.2])
    obl[:3, 3] = [-10, -30, -20]
    out = []
    for name, shape, aff in (("ras", (26, 30, 22), ras), ("lps", (32, 36, 11), lps), ("oblique", (24, 24, 18), obl)):
        nib.save(nib.Nifti1Image(vol(shape), aff), folder / f"{name}.nii.gz")
        out.append(folder / f"{name}.nii.gz")
    return out


@pytest.mark.timeout(900)
def test_bundle_runs_with_monai_and_matches_seg_app_predict(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt", seed=3, labels=4,
                                normalization=NormalizationSpec("percentile", (0.5, 99.5)))
    bundle = tmp_path / "bundle"
    assert main(["export", "--model", str(ckpt), "--bundle", str(bundle)]) == 0
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "models/seg_app_checkpoint.pt",
                "docs/README.md", "LICENSE"):
        assert (bundle / rel).is_file(), rel

    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert all(k in meta for k in REQUIRED), [k for k in REQUIRED if k not in meta]
    assert meta["schema"].endswith("meta_schema_20240725.json") and meta["changelog"][meta["version"]]
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [16, 16, 16] and image["value_range"] == [0, 1]
    assert pred["num_channels"] == 4 and pred["channel_def"] == {"0": "background", "1": "tumour", "2": "oedema", "3": "enhancing"}

    # MONAI's own check of the network against network_data_format
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs/metadata.json"),
                      config_file=str(bundle / "configs/inference.json"), device="cpu")
    torch.load(bundle / "models/model.pt", weights_only=True)

    images = _images(tmp_path / "images")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--meta_file",
         "configs/metadata.json", "--bundle_root", str(bundle), "--dataset_dir", str(tmp_path / "images"),
         "--output_dir", str(tmp_path / "bundle_out")],
        cwd=bundle, capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    from seg_app.predict_cli import predict_command

    assert predict_command([*map(str, images), "--model", str(ckpt), "--out", str(tmp_path / "app"), "--format", "nifti",
                            "--device", "cpu", "--backend", "torch"]) == 0
    for src in images:
        name = src.name[: -len(".nii.gz")]
        ours = nib.load(tmp_path / "bundle_out" / f"{name}_seg.nii.gz")
        app = nib.load(tmp_path / "app" / f"{name}_labels.nii.gz")
        source = nib.load(src)
        assert ours.shape == source.shape and np.allclose(ours.affine, source.affine, atol=1e-4), name
        a, b = np.asarray(app.dataobj), np.asarray(ours.dataobj)
        assert set(np.unique(b)) <= {0, 1, 2, 3}
        for v in (1, 2, 3):
            inter = np.count_nonzero((a == v) & (b == v))
            total = np.count_nonzero(a == v) + np.count_nonzero(b == v)
            assert total > 0, (name, v)  # the random network predicts every label somewhere
            assert 2 * inter / total >= 0.99, (name, v, 2 * inter / total)
