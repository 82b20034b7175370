"""Test helpers: small synthetic volumes in known orientations, non-image DICOM objects, dcm2niix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from seg_app.core.volume import Volume

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SHAPE = (16, 20, 12)

# DICOM ImageOrientationPatient (row direction, column direction) in LPS per named orientation
_IOP = {
    "axial": ([1, 0, 0], [0, 1, 0]),
    "sagittal": ([0, 1, 0], [0, 0, -1]),
    "coronal": ([1, 0, 0], [0, 0, -1]),
}


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(
    orientation: str = "axial",
    spacing: tuple[float, float, float] = (0.8, 0.9, 2.5),
    origin_lps: tuple[float, float, float] = (-6.5, -9.25, 30.0),
    slice_sign: float = 1.0,
    tilt_deg: float = 0.0,
) -> np.ndarray:
    """Voxel -> RAS affine of a DICOM-like grid (i = column, j = row, k = slice)."""
    if orientation == "oblique":
        rot = _rotation(17.0, -11.0, 28.0)
        row, col = rot[:, 0], rot[:, 1]
    else:
        row, col = (np.asarray(v, dtype=float) for v in _IOP[orientation])
    normal = np.cross(row, col)
    step = normal * spacing[2] * slice_sign
    if tilt_deg:
        step = step + col * np.tan(np.radians(tilt_deg)) * spacing[2]
    lps = np.eye(4)
    lps[:3, 0] = row * spacing[0]
    lps[:3, 1] = col * spacing[1]
    lps[:3, 2] = step
    lps[:3, 3] = origin_lps
    return RAS_FROM_LPS @ lps


def make_volume(orientation: str = "axial", shape=SHAPE, seed: int = 0, low: int = -1000,
                high: int = 3000, **affine_kw) -> Volume:
    """Random integer-valued float32 volume: every misplaced voxel shows."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(low, high, size=shape).astype(np.float32)
    return Volume(arr, make_affine(orientation, **affine_kw), modality="MR")


def dcm2niix_bin() -> str:
    exe = Path(sys.executable).with_name("dcm2niix")
    return str(exe) if exe.exists() else (shutil.which("dcm2niix") or "dcm2niix")


def run_dcm2niix(in_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Convert with dcm2niix; returns {output stem: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [dcm2niix_bin(), "-z", "n", "-b", "n", "-f", "%s", "-o", str(out_dir), str(in_dir)],
        check=True, capture_output=True,
    )
    return {p.name[: -len(".nii")]: p for p in sorted(out_dir.glob("*.nii"))}


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    return np.asarray(img.dataobj), img.affine


def assert_same_as_nifti(volume: Volume, nifti_path: Path, atol_mm: float = 1e-3) -> None:
    """Same voxel values and affine (within ``atol_mm``) after closest-canonical reorientation."""
    ref = nib.as_closest_canonical(nib.load(nifti_path))
    data, aff = canonical(volume.array[0], volume.affine)
    ref_data = ref.get_fdata()
    assert ref_data.shape == data.shape, (ref_data.shape, data.shape)
    np.testing.assert_allclose(aff, ref.affine, atol=atol_mm, rtol=0)
    np.testing.assert_array_equal(data, ref_data)


def _base_dataset(sop_class: str, modality: str, study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "Anonymous^Test"
    ds.PatientID = "SEGAPP0001"
    ds.StudyDate = "20240101"
    ds.SeriesNumber = 99
    return ds


def write_rtstruct(path: Path, image_paths: list[Path]) -> Path:
    """A minimal RT Structure Set referencing the images (enough to be recognised and skipped)."""
    ref = pydicom.dcmread(image_paths[0], stop_before_pixels=True)
    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", ref.StudyInstanceUID, generate_uid())
    ds.StructureSetLabel = "test"
    ds.StructureSetDate = "20240101"
    ds.StructureSetTime = "120000"
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = ref.FrameOfReferenceUID
    roi.ROIName = "lesion"
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 3
    contour.ContourData = [0, 0, 30, 5, 0, 30, 0, 5, 30]
    rc = Dataset()
    rc.ReferencedROINumber = 1
    rc.ContourSequence = Sequence([contour])
    ds.ROIContourSequence = Sequence([rc])
    ds.save_as(path, enforce_file_format=True)
    return path


def write_sr(path: Path, study_uid: str) -> Path:
    """A minimal Basic Text SR (a non-image object)."""
    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.88.11", "SR", study_uid, generate_uid())
    ds.ValueType = "CONTAINER"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_presentation_state(path: Path, study_uid: str) -> Path:
    """A minimal Grayscale Softcopy Presentation State (a non-image object)."""
    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.11.1", "PR", study_uid, generate_uid())
    ds.ContentLabel = "PS"
    ds.save_as(path, enforce_file_format=True)
    return path
