"""Segmenter and sliding window: geometry, TTA, cancel, progress, out-of-memory fallback, errors."""

from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pytest
import torch

from seg_app.core.errors import Cancelled, IncompatibleInputError
from seg_app.core.grid import foreground_box, to_source_grid
from seg_app.core.inference import Segmenter
from seg_app.core.postprocess import postprocess_labels
from seg_app.core.runtime import run_with_oom_fallback
from seg_app.core.sliding_window import count_windows, sliding_window_probabilities
from seg_app.core.spec import (
    ChannelSpec,
    InferenceSpec,
    LabelSpec,
    ModelSpec,
    NetworkSpec,
    PostprocessSpec,
    load_checkpoint,
)
from seg_app.core.volume import Volume


from checkpoints import make_tiny_checkpoint  # noqa: E402


def tiny_spec(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16), labels=2, **changes) -> ModelSpec:
    labs = (LabelSpec(0, "background"), LabelSpec(1, "tumour"), LabelSpec(2, "oedema"))[:labels]
    spec = ModelSpec(
        name="tiny-test",
        network=NetworkSpec("UNet", {"channels": [4, 8], "strides": [2], "num_res_units": 0}),
        channels=(ChannelSpec("T1w"),),
        labels=labs,
        target_spacing=spacing,
        inference=InferenceSpec(roi_size=roi, overlap=0.5, blend_mode="gaussian", sw_batch_size=2),
    )
    return spec.with_updates(**changes) if changes else spec


def tiny_checkpoint(path, seed: int = 0, **spec_changes):
    """A random-weight tiny UNet checkpoint (the shared factory, with this file's name and labels)."""
    spec_changes.setdefault("name", "tiny-test")  # test_predict_cli asserts this name
    spec_changes.setdefault("description", "")
    return make_tiny_checkpoint(path, seed=seed, **spec_changes)


class Pointwise(torch.nn.Module):
    """Logits ``[0, 4 * (x - t)]`` per voxel: foreground where the normalised image exceeds ``t``."""

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), 4.0 * (x[:, :1] - self.threshold)], dim=1)


def midpoint_threshold(vol: Volume) -> float:
    """Normalised (z-score over non-zero voxels) value halfway between head and blob intensities."""
    nz = vol.array[vol.array != 0].astype(np.float64)
    return float(((nz.min() + nz.max()) / 2 - nz.mean()) / nz.std())


def head_with_blob(shape=(40, 44, 24), affine=None):
    """A 'head' (value 1 box) with a bright blob (value 5); returns the volume and the blob mask."""
    aff = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    arr = np.zeros(shape, np.float32)
    arr[4:-4, 5:-5, 3:-3] = 1.0
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    c = np.array(shape)[:, None, None, None] / 2
    blob = (((ijk - c) / np.array([6, 5, 4])[:, None, None, None]) ** 2).sum(0) <= 1
    arr[blob] = 5.0
    return Volume(arr, aff), blob


@pytest.fixture(autouse=True)
def _onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_APP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def pointwise_segmenter(ckpt_path, vol: Volume | None = None, **kw) -> Segmenter:
    seg = Segmenter(ckpt_path, device="cpu", backend="torch", **kw)
    seg.network = Pointwise(midpoint_threshold(vol) if vol is not None else 1.0)
    return seg


# ---- sliding window --------------------------------------------------------------------------
def test_sliding_window_with_identity_like_predictor_reproduces_input():
    spec = tiny_spec()
    img = torch.randn(1, 37, 29, 21)
    calls = []
    probs = sliding_window_probabilities(
        lambda b: torch.cat([torch.zeros_like(b), b], 1), img, spec, progress=lambda d, t: calls.append((d, t))
    )
    assert probs.shape == (2, 37, 29, 21) and probs.dtype == torch.float32
    torch.testing.assert_close(probs[1], torch.sigmoid(img[0]), atol=1e-5, rtol=1e-5)
    total = count_windows((37, 29, 21), spec.inference.roi_size, 0.5)
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)


@pytest.mark.parametrize("shape", [(16, 16, 16), (10, 40, 17), (33, 16, 50)])
def test_window_count_matches_monai(shape):
    spec = tiny_spec()
    seen = []

    def net(b):
        seen.append(b.shape[0])
        return torch.cat([b, b], 1)

    sliding_window_probabilities(net, torch.zeros(1, *shape), spec, sw_batch_size=3)
    assert sum(seen) == count_windows(shape, spec.inference.roi_size, 0.5)


# ---- end to end on the source grid -----------------------------------------------------------
def rotated_affine(spacing, degrees=(15.0, -10.0, 25.0), origin=(-30.0, 12.0, 40.0)) -> np.ndarray:
    from test_measure import rotation

    aff = np.eye(4)
    aff[:3, :3] = rotation(*degrees) @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([1.5, 1.2, 3.0, 1.0]),
        np.diag([-1.0, -1.0, 2.0, 1.0]),  # LPS-like
        rotated_affine((1.3, 1.1, 2.5)),  # oblique
    ],
    ids=["anisotropic", "lps", "oblique"],
)
def test_tiny_network_end_to_end_from_nifti(tmp_path, ckpt_path, affine):
    from seg_app.core.io import load_scan

    rng = np.random.default_rng(0)
    arr = np.zeros((30, 34, 14), np.float32)
    arr[3:27, 4:30, 2:12] = rng.random((24, 26, 10)) + 1
    nib.save(nib.Nifti1Image(arr, affine), tmp_path / "scan.nii.gz")
    vol = load_scan(tmp_path / "scan.nii.gz")
    res = Segmenter(ckpt_path, device="cpu", backend="torch").segment(vol)
    assert res.labels.shape == vol.shape and res.labels.array.dtype == np.uint8
    np.testing.assert_allclose(res.labels.affine, vol.affine, atol=1e-6)
    assert set(np.unique(res.labels.array)) <= {0, 1}
    p = res.probabilities
    assert p is not None and p.array.shape == (1, *vol.shape) and p.array.dtype == np.float32
    assert 0.0 <= p.array.min() and p.array.max() <= 1.0
    np.testing.assert_array_equal(res.labels.array[0] == 1, p.array[0] > 0.5)
    assert res.device == "cpu" and res.seconds > 0 and res.agreement is None


def test_end_to_end_from_dicom_including_oblique(tmp_path, ckpt_path):
    from seg_app.core import dicom_write
    from seg_app.core.io import load_scan

    vol_in, blob = head_with_blob(affine=rotated_affine((2.0, 2.0, 2.0), (0.0, 12.0, 20.0)))
    dicom_write.write_dicom_series(vol_in.with_array(vol_in.array * 100), tmp_path / "dcm")
    vol = load_scan(tmp_path / "dcm")
    assert vol.series_uid and vol.shape == vol_in.shape
    res = pointwise_segmenter(ckpt_path, vol).segment(vol)
    assert res.labels.shape == vol.shape
    np.testing.assert_allclose(res.labels.affine, vol.affine, atol=1e-4)
    dice = 2 * np.sum((res.labels.array[0] == 1) & blob) / (np.sum(res.labels.array[0] == 1) + blob.sum())
    assert dice > 0.9  # oblique DICOM: resampled to the model grid and back
    real = Segmenter(ckpt_path, device="cpu", backend="torch").segment(vol)
    assert real.labels.shape == vol.shape and np.allclose(real.labels.affine, vol.affine, atol=1e-4)


def test_pointwise_model_recovers_blob_exactly_on_model_grid(ckpt_path):
    vol, blob = head_with_blob()
    res = pointwise_segmenter(ckpt_path).segment(vol)
    np.testing.assert_array_equal(res.labels.array[0] == 1, blob)
    assert res.warnings == ()


def test_resampled_grid_still_recovers_blob(ckpt_path):
    vol, blob = head_with_blob(affine=np.diag([1.4, 1.7, 2.6, 1.0]))
    res = pointwise_segmenter(ckpt_path, vol).segment(vol)
    fg = res.labels.array[0] == 1
    assert 2 * np.sum(fg & blob) / (fg.sum() + blob.sum()) > 0.9


@pytest.mark.parametrize("affine", [np.diag([2.0, 2.0, 2.0, 1.0]), np.diag([-2.0, 2.0, -2.0, 1.0]), np.diag([2.0, 1.0, 2.0, 1.0])], ids=["ras", "flipped", "resampled"])
def test_crop_matches_uncropped_inside_the_head(ckpt_path, affine, monkeypatch):
    """The crop keeps MONAI's window grid; only windows touching the head with their faint edge are skipped."""
    from seg_app.core import preprocess

    small, _ = head_with_blob(shape=(48, 44, 32), affine=affine)
    arr = np.zeros((1, 96, 80, 56), np.float32)
    arr[:, 30:78, 20:64, 12:44] = small.array  # lots of air around the head
    vol = small.with_array(arr)
    seen = []
    real = preprocess.preprocess_volume
    monkeypatch.setattr(preprocess, "preprocess_volume", lambda v, s: seen.append(v.shape) or real(v, s))
    a = Segmenter(ckpt_path, device="cpu", backend="torch").segment(vol).probabilities.array[0]
    resampled = affine[1, 1] != 2.0
    assert (seen[0] == vol.shape) == resampled  # on the model grid already: only the crop is preprocessed
    assert np.all(a[vol.array[0] == 0] < 1) and np.all(a[:16] == 0)  # far from the head: background
    b = Segmenter(ckpt_path, device="cpu", backend="torch", crop_foreground=False).segment(vol).probabilities.array[0]
    head = vol.array[0] > 0
    diff = np.abs(a[head] - b[head])
    assert diff.max() < 0.05 and diff.mean() < 0.005
    assert np.mean((a[head] > 0.5) == (b[head] > 0.5)) > 0.98


def test_foreground_box_follows_the_window_grid():
    spec = tiny_spec()  # ROI 16, overlap 0.5 -> windows every 8 voxels
    img = torch.zeros(1, 60, 50, 40)
    img[0, 30:33, 20:22, 5:6] = 1
    box = foreground_box(img, spec, margin=2)
    # axis 0: fg+margin 28..35 -> windows starting 16, 24, 32 -> 16..48; axis 1: 18..24 -> 8..32 (starts 8, 16)
    # axis 2: 3..8 -> window 0 -> 0..16
    assert box == (slice(16, 48), slice(8, 32), slice(0, 16))
    assert foreground_box(img, tiny_spec(normalization=spec.normalization.__class__(scheme="none"))) is None


def test_to_source_grid_exact_and_resampled_paths_agree():
    src = Volume(np.zeros((12, 10, 8), np.float32), np.diag([-2.0, 2.0, 2.0, 1.0]))
    data = torch.rand(1, 12, 10, 8)
    flipped_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    flipped_aff[0, 3] = -22.0  # voxel 0 of the flipped grid is voxel 11 of the source
    flipped = torch.flip(data, (1,))
    exact = to_source_grid(flipped, flipped_aff, src, fill=[0.0])
    np.testing.assert_allclose(exact[0], data[0].numpy())
    nudged = flipped_aff.copy()
    nudged[0, 3] += 1e-2  # forces the resampling path
    approx = to_source_grid(flipped, nudged, src, fill=[0.0])
    assert np.abs(approx[0] - data[0].numpy())[1:-1].mean() < 0.02


# ---- TTA, cancel, progress -------------------------------------------------------------------
def test_tta_off_and_on(ckpt_path):
    vol, blob = head_with_blob()
    seg = pointwise_segmenter(ckpt_path, tta=True)
    calls = []
    res = seg.segment(vol, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(res.labels.array[0] == 1, blob)  # flips commute with a pointwise model
    assert res.agreement is not None and res.agreement.shape == vol.shape
    assert np.allclose(res.agreement.array, 1.0)
    done, total = calls[-1]
    assert done == total and total % 4 == 0
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    real = Segmenter(ckpt_path, device="cpu", backend="torch", tta=True).segment(vol)
    ag = real.agreement.array
    assert ag.min() >= 0.0 and ag.max() <= 1.0 and set(np.unique(np.round(ag * 4))) <= {0, 1, 2, 3, 4}


def test_cancel_stops_early_and_keeps_nothing(ckpt_path):
    vol, _ = head_with_blob()
    seg = Segmenter(ckpt_path, device="cpu", backend="torch", sw_batch_size=1)
    ev = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        if done >= 2:
            ev.set()

    with pytest.raises(Cancelled):
        seg.segment(vol, progress=progress, cancel=ev)
    assert calls[-1] == 2 and calls[-1] < count_windows((40, 44, 24), (16, 16, 16), 0.5)
    with pytest.raises(Cancelled):
        seg.segment(vol, cancel=lambda: True)
    assert seg.segment(vol).labels.shape == vol.shape  # usable again afterwards


# ---- out of memory ---------------------------------------------------------------------------
def _oom() -> BaseException:
    cls = getattr(torch.cuda, "OutOfMemoryError", None)
    return cls("CUDA out of memory. Tried to allocate 2.00 GiB") if cls else RuntimeError("CUDA out of memory")


def test_oom_fallback_halves_batch_then_uses_cpu():
    attempts = []

    def run(dev, bs):
        attempts.append((dev.type, bs))
        if dev.type == "cuda":
            raise _oom()
        return "ok"

    warnings: list[str] = []
    out, dev = run_with_oom_fallback(run, torch.device("cuda"), 4, warnings)
    assert out == "ok" and dev.type == "cpu"
    assert attempts == [("cuda", 4), ("cuda", 2), ("cuda", 1), ("cpu", 4)]
    assert len(warnings) == 3 and "CPU" in warnings[-1]
    with pytest.raises(ValueError):
        run_with_oom_fallback(lambda d, b: (_ for _ in ()).throw(ValueError("x")), torch.device("cpu"), 2, [])


def test_segmenter_recovers_from_oom_with_smaller_window_batch(ckpt_path):
    class OOMWhenBatched(Pointwise):
        def forward(self, x):
            if x.shape[0] > 1:
                raise _oom()
            return super().forward(x)

    vol, blob = head_with_blob()
    seg = Segmenter(ckpt_path, device="cpu", backend="torch", sw_batch_size=4)
    seg.network = OOMWhenBatched()
    res = seg.segment(vol)
    np.testing.assert_array_equal(res.labels.array[0] == 1, blob)
    assert any("Out of memory" in w for w in res.warnings)
    assert seg.sw_batch_size == 4  # no state kept


def test_configure_torch_threads_is_the_one_thread_policy(monkeypatch):
    from seg_app.core.runtime import configure_torch_threads

    before = torch.get_num_threads()
    try:
        assert configure_torch_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_torch_threads(0) == 1  # never below one thread
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert configure_torch_threads() == 2 and torch.get_num_threads() == 2  # None: every allowed core
    finally:
        torch.set_num_threads(before)


# ---- the stages of segment() alone -----------------------------------------------------------
def test_stages_called_alone_give_what_segment_gives(ckpt_path):
    vol, blob = head_with_blob(affine=np.diag([1.4, 1.7, 2.6, 1.0]))
    seg = pointwise_segmenter(ckpt_path, vol)
    grid = seg.preprocess(vol)
    assert tuple(grid.image.shape[1:]) != vol.shape and len(grid.full_shape) == 3  # on the model grid
    pred = seg.predict_on_model_grid(grid)
    assert pred.device == "cpu" and pred.agreement is None and pred.probabilities.shape == (1, *grid.image.shape[1:])
    src = seg.back_to_source(pred, vol)
    labels = seg.postprocess(src.labels, vol)
    res = seg.segment(vol)
    np.testing.assert_array_equal(labels, res.labels.array[0])
    np.testing.assert_array_equal(src.foreground, res.probabilities.array)


# ---- inputs the model cannot take ------------------------------------------------------------
def test_wrong_channels_nan_and_small_images(ckpt_path):
    seg = Segmenter(ckpt_path, device="cpu", backend="torch")
    with pytest.raises(IncompatibleInputError, match="channel"):
        seg.segment(Volume(np.ones((2, 20, 20, 20), np.float32), np.eye(4)))
    bad = np.ones((20, 20, 20), np.float32)
    bad[3, 3, 3] = np.nan
    with pytest.raises(IncompatibleInputError, match="NaN"):
        seg.segment(Volume(bad, np.eye(4)))
    small = Volume(np.ones((8, 40, 20), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))  # 8 < ROI 16
    res = seg.segment(small)
    assert res.labels.shape == small.shape and any("padded" in w for w in res.warnings)
    with pytest.raises(IncompatibleInputError, match="CUDA"):
        if torch.cuda.is_available():
            raise IncompatibleInputError("CUDA present: nothing to test")
        Segmenter(ckpt_path, device="cuda")


# ---- postprocessing --------------------------------------------------------------------------
def test_postprocess_min_volume_and_keep_largest():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[2:8, 2:8, 2:8] = 1  # 216 voxels
    lab[20:22, 20:22, 20:22] = 1  # 8 voxels
    lab[12:16, 12:16, 12:16] = 2  # 64 voxels
    lab[25:28, 2:5, 2:5] = 2  # 27 voxels
    spec = tiny_spec(labels=3, postprocess=PostprocessSpec(min_lesion_ml=0.01))  # 10 voxels at 1 mm
    out, removed = postprocess_labels(lab.copy(), spec, 0.001)
    assert removed == 1 and out[20, 20, 20] == 0 and out[25, 2, 2] == 2
    spec = tiny_spec(labels=3, postprocess=PostprocessSpec(keep_largest=True))
    out, removed = postprocess_labels(lab.copy(), spec, 0.001)
    assert removed == 2 and out[2, 2, 2] == 1 and out[12, 12, 12] == 2 and out[20, 20, 20] == 0 and out[25, 2, 2] == 0


def test_multilabel_checkpoint_and_loaded_checkpoint_object(tmp_path):
    path = tiny_checkpoint(tmp_path / "three.pt", labels=3)
    vol, _ = head_with_blob()
    res = Segmenter(load_checkpoint(path), device="cpu", backend="torch").segment(vol, return_probabilities=False)
    assert set(np.unique(res.labels.array)) <= {0, 1, 2} and res.probabilities is None
