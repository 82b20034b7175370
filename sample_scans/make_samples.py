"""Regenerate the bundled sample scans (deterministic pixel data and geometry).

    python sample_scans/make_samples.py

Writes, next to this file:
  brain_tumour_mri.nii.gz         synthetic post-contrast T1-like brain MRI with a tumour
  brain_tumour_mri_label.nii.gz   its ground truth (BraTS labels: 1 necrotic core, 2 oedema, 3 enhancing)
  brain_tumour_mri_dicom/         the same scan as a classic one-file-per-slice MR DICOM series

The case comes from the **independent** benchmark generator (``benchmarks/generalisation_cases.py``,
written separately from ``seg-train synth``, never used for training) with the real MNI152 T1 contrast,
seed 20240917 (not a benchmark seed), on a 1.5 mm grid so the files stay small and the app's
resampling is exercised. DICOM UIDs are derived from fixed strings; only the instance-creation time
stamps and per-slice SOP Instance UIDs differ between runs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "benchmarks"))

from generalisation_cases import make_case  # noqa: E402

from seg_app.core.dicom_write import write_dicom_series  # noqa: E402
from seg_app.core.io import save_labels  # noqa: E402
from seg_app.core.volume import Volume  # noqa: E402
from training.synth import _save_nifti  # noqa: E402  (the one NIfTI writer of synthetic cases)

SEED = 20240917
NAME = "brain_tumour_mri"


def _pick_case():
    """First T1c-like case of the sample seed with one ring-enhancing tumour of 10-60 mL (whole tumour)."""
    for index in range(40):
        case = make_case("t1c_1mm", index, seed=SEED, voxel_mm=1.5)
        vox_ml = float(abs(np.linalg.det(case.affine[:3, :3]))) / 1000
        wt = float((case.labels > 0).sum()) * vox_ml
        if len(case.lesions) == 1 and 10 <= wt <= 60 and (case.labels == 1).any() and (case.labels == 3).any():
            case.meta["index"] = index
            return case
    raise RuntimeError("no suitable sample case found")


def main() -> None:
    case = _pick_case()
    image, labels, affine = case.image, case.labels, case.affine
    nii = HERE / f"{NAME}.nii.gz"
    _save_nifti(image[None], affine, nii, is_label=False)
    volume = Volume(np.round(image).astype(np.int16)[None], affine, modality="MR", source_paths=(str(nii),))
    save_labels(labels[None].astype(np.uint8), volume, HERE / f"{NAME}_label.nii.gz")
    dicom = HERE / f"{NAME}_dicom"
    if dicom.exists():
        shutil.rmtree(dicom)
    entropy = ["seg_app", "sample", NAME, str(SEED)]
    write_dicom_series(
        volume, dicom, modality="MR", series_description="Synthetic T1 post-contrast (brain tumour sample)",
        study_uid=generate_uid(entropy_srcs=entropy + ["study"]), series_uid=generate_uid(entropy_srcs=entropy + ["series"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=entropy + ["for"]), patient_name="Synthetic^Sample",
        patient_id="SYNTH0001",
    )
    vox_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    regions = ", ".join(f"{n} {(labels == v).sum() * vox_ml:.1f} mL" for v, n in ((1, "core"), (2, "oedema"), (3, "enhancing")))
    print(f"case {case.meta['index']}: shape {image.shape}, spacing {np.round(spacing, 3).tolist()} mm, "
          f"{regions}; wrote {nii.name}, {NAME}_label.nii.gz, {dicom.name}/")


if __name__ == "__main__":
    main()
