"""The one factory for tiny random-weight test checkpoints (imported by conftest, corpus, GUI fixtures, tests).

A 3D UNet with channels [4, 8] and one down-sampling: a few thousand weights, fast on the CPU. Its
weights depend only on ``seed`` and the channel/label counts, so the same call always writes the same
weights. Tests that rely on a particular grid or sliding-window setting pass it explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["BRATS_LABELS", "tiny_spec", "make_tiny_checkpoint"]

_CHANNEL_NAMES = ("T1w", "T1c", "T2w", "FLAIR")
_LABELS = (("background", (0, 0, 0)), ("tumour", (230, 60, 60)), ("oedema", (60, 200, 60)), ("enhancing", (240, 220, 60)))

#: BraTS-style label names (value, name): the composite regions WT/TC/ET are defined for these.
BRATS_LABELS = ((0, "background"), (1, "necrotic core"), (2, "oedema"), (3, "enhancing tumour"))


def tiny_spec(*, in_channels: int = 1, labels: int | Sequence[tuple[int, str]] = 2,
              spacing: tuple[float, float, float] = (2.0, 2.0, 2.0), roi: tuple[int, int, int] = (16, 16, 16), **changes):
    """The ``ModelSpec`` of the tiny test network.

    Args:
        in_channels: input channels (MR; named T1w, T1c, T2w, FLAIR, then ch4, ...).
        labels: the number of output labels (background, tumour, oedema, enhancing, in that order) or
            ``(value, name)`` pairs such as :data:`BRATS_LABELS`.
        spacing: target spacing in mm.
        roi: sliding-window ROI in voxels (overlap 0.5, gaussian blending, 2 windows per batch).
        **changes: any other ``ModelSpec`` field (``name``, ``inference``, ``postprocess``, ...).
    """
    from seg_app.core.spec import ChannelSpec, InferenceSpec, LabelSpec, ModelSpec, NetworkSpec

    if isinstance(labels, int):
        label_specs = tuple(LabelSpec(v, *_LABELS[v]) for v in range(labels))
    else:
        label_specs = tuple(LabelSpec(v, name, _LABELS[min(v, len(_LABELS) - 1)][1] if v else (0, 0, 0)) for v, name in labels)
    spec = ModelSpec(
        name="tiny-test-model",
        network=NetworkSpec("UNet", {"spatial_dims": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0}),
        channels=tuple(ChannelSpec(_CHANNEL_NAMES[c] if c < len(_CHANNEL_NAMES) else f"ch{c}", "MR") for c in range(in_channels)),
        labels=label_specs,
        target_spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        inference=InferenceSpec(roi_size=tuple(int(r) for r in roi), overlap=0.5, blend_mode="gaussian", sw_batch_size=2),  # type: ignore[arg-type]
        description="Random weights, for tests only.",
    )
    return spec.with_updates(**changes) if changes else spec


def make_tiny_checkpoint(path: str | Path, *, seed: int = 0, in_channels: int = 1, **spec_changes) -> Path:
    """Write a tiny random-weight checkpoint with ``save_checkpoint``; returns its path.

    Args:
        path: the ``.pt`` file to write (its folder must exist).
        seed: ``torch.manual_seed`` before the network is built (same seed, same weights).
        in_channels: input channels of the network.
        **spec_changes: passed to :func:`tiny_spec` (``labels``, ``spacing``, ``roi``, ``name``, ...).
    """
    import torch

    from seg_app.core.spec import build_network, save_checkpoint

    spec = tiny_spec(in_channels=in_channels, **spec_changes)
    torch.manual_seed(seed)
    return save_checkpoint(path, spec, build_network(spec).state_dict())
