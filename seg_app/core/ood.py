"""Out-of-distribution guard: does this scan look like what the model was trained on? (Qt-free)

The checks are cheap and conservative; each returns a sentence for the JSON ``warnings`` and the GUI
banner, never an error (the clinician may still want to see what the model does):

* **modality**: a CT scan (DICOM Modality, or values that look like Hounsfield units: a large share
  of voxels near -1000 and some above +1000) given to an MR model, or the other way round;
* **2D / thin slab**: one slice, or a field of view under ``MIN_EXTENT_MM`` along some axis, for a
  model trained on 3D volumes;
* **field of view**: a scan much larger than the training scans (e.g. a whole-body or abdominal
  scan for a head model), from the ``median_fov_mm`` the training fingerprint stored in the spec.
"""

from __future__ import annotations

import numpy as np

from seg_app.core.spec import ModelSpec
from seg_app.core.volume import Volume

__all__ = ["MIN_EXTENT_MM", "FOV_FACTOR", "domain_warnings"]

#: A scan thinner than this along some axis is a slab, not a volume.
MIN_EXTENT_MM = 30.0
#: A scan larger than this factor times the training field of view (largest axis) is flagged.
FOV_FACTOR = 1.6


def _looks_like_ct(array: np.ndarray) -> bool:
    """Hounsfield-like values: >= 5 % of voxels at or below -900 (air) and some above +1000 (bone)."""
    a = array[0]
    step = max(1, a.size // 2_000_000)  # a strided sample is plenty for shares of 5 %
    s = a.reshape(-1)[::step]
    return bool(np.mean(s <= -900) >= 0.05 and np.mean(s >= 1000) > 0.0005)


def domain_warnings(volume: Volume, spec: ModelSpec) -> list[str]:
    """Sentences describing how ``volume`` differs from the model's training data (empty when it fits)."""
    out: list[str] = []
    model_modality = spec.channels[0].modality.upper() if spec.channels else ""
    scan_ct = volume.modality.upper() == "CT" or (volume.modality.upper() != "MR" and _looks_like_ct(volume.array))
    if model_modality == "MR" and scan_ct:
        out.append(
            "This looks like a CT scan (Hounsfield units) but the model was trained on MRI: its result is not meaningful."
        )
    elif model_modality == "CT" and volume.modality.upper() == "MR":
        out.append("This is an MR scan but the model was trained on CT: its result is not meaningful.")
    extent = np.asarray(volume.shape, dtype=float) * np.asarray(volume.spacing, dtype=float)
    if min(volume.shape) == 1 or extent.min() < MIN_EXTENT_MM:
        out.append(
            f"The scan is a single slice or a thin slab ({' x '.join(f'{e:.0f}' for e in extent)} mm); the model was "
            "trained on 3D volumes and may miss or invent lesions."
        )
    fov = spec.dataset.get("median_fov_mm") if isinstance(spec.dataset, dict) else None
    if fov:
        largest = float(max(fov))
        if extent.max() > FOV_FACTOR * largest:
            out.append(
                f"The field of view ({extent.max():.0f} mm) is much larger than the model's training scans (about "
                f"{largest:.0f} mm): this may not be the body part the model was made for."
            )
    return out
