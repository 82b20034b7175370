"""Regenerate the bundled sample scans (deterministic pixel data and geometry).

    python sample_scans/make_samples.py

Writes, next to this file:
  brain_tumour_mri.nii.gz         synthetic post-contrast T1-like brain MRI with a tumour-like lesion
  brain_tumour_mri_label.nii.gz   its ground-truth label map (1 = tumour)
  brain_tumour_mri_dicom/         the same scan as a classic one-file-per-slice MR DICOM series

The case is made by ``training.synth.make_case`` with seed 20240917 (never used for training the
bundled model, which used seed 1), with a 1.5 mm base voxel size (jittered per axis; finer than the
~2.2 mm training data, so the app's resampling is exercised). DICOM UIDs are derived from fixed strings; only the instance-creation time
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

from seg_app.core.dicom_write import write_dicom_series  # noqa: E402
from seg_app.core.io import save_labels  # noqa: E402
from seg_app.core.volume import Volume  # noqa: E402
from training.synth import SynthOptions, _save_nifti, make_case  # noqa: E402

SEED = 20240917
NAME = "brain_tumour_mri"


def _pick_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """First test case of the sample seed with one clearly visible ring-enhancing lesion."""
    opts = SynthOptions(spacing_mm=1.5)
    for index in range(50):
        image, labels, affine, meta = make_case(SEED, index, "test", opts)
        les = meta["lesions"]
        if len(les) == 1 and les[0]["ring"] and les[0]["radius_mm"] >= 14:
            meta["index"] = index
            return image, labels, affine, meta
    raise RuntimeError("no suitable sample case found")


def main() -> None:
    image, labels, affine, meta = _pick_case()
    nii = HERE / f"{NAME}.nii.gz"
    _save_nifti(image, affine, nii, is_label=False)
    volume = Volume(np.round(image).astype(np.int16), affine, modality="MR", source_paths=(str(nii),))
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
    print(f"case {meta['index']}: shape {image.shape[1:]}, spacing {meta['spacing_mm']} mm, "
          f"lesion {labels.sum() * vox_ml:.1f} ml; wrote {nii.name}, {NAME}_label.nii.gz, {dicom.name}/")


if __name__ == "__main__":
    main()
