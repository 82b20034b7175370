"""A corpus of broken and odd inputs, built at test time (reused by core, CLI and GUI tests).

``build_corpus(tmp_dir)`` writes every case under ``tmp_dir`` and returns one ``CorpusCase`` each.
``expect`` is the name of the ``SegAppError`` subclass the core raises, or ``"warning"`` (the input
loads, with a warning containing ``warning``), or ``"ok"``. Checkpoint cases (``kind ==
"checkpoint"``) are applied to ``scan``; ``sentinel`` is a file a malicious pickle would create.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

import checkpoints
from checkpoints import make_tiny_checkpoint
from seg_app.core.dicom_write import write_dicom_series
from seg_app.core.spec import InferenceSpec
from seg_app.core.volume import Volume

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SHAPE = (16, 16, 8)


#: Bit flips (offset, xor) of pydicom's MR_small_RLE.dcm found by the fuzzer: pylibjpeg-rle panics
#: (a Rust ``PanicException``, which derives from ``BaseException``, not ``Exception``).
RLE_PANIC_FLIPS = [
    (2416, 0x08), (2988, 0x08), (3029, 0x80), (3784, 0x20), (4092, 0x08), (5067, 0x40), (5340, 0x80),
    (5363, 0x20), (5620, 0x40), (6929, 0x01), (7640, 0x08), (7768, 0x40),
]


@dataclass(frozen=True)
class CorpusCase:
    """One bad/odd input and what the user must get.

    Attributes:
        name: short id (test ids, doc table).
        path: the input (file or folder; may not exist for ``missing_path``).
        kind: ``"scan"`` (give to ``load_scan`` / ``seg-app predict``) or ``"checkpoint"``.
        expect: ``SegAppError`` subclass name, ``"warning"`` or ``"ok"``.
        warning: substring of the expected load warning (``expect == "warning"``).
        scan: for checkpoint cases, a good scan to apply the checkpoint to.
        sentinel: a file that must never exist (code execution from a pickle).
        note: what the user gets, for docs/ROBUSTNESS.md.
        predict_ok: ``seg-app predict`` on this input succeeds (exit 0, outputs written).
    """

    name: str
    path: Path
    kind: str
    expect: str
    warning: str = ""
    scan: Path | None = None
    sentinel: Path | None = None
    note: str = ""
    predict_ok: bool = False


def corpus_volume(shape: tuple[int, int, int] = SHAPE, seed: int = 0, affine: np.ndarray | None = None) -> Volume:
    """Small MR-like volume with a bright blob (so a model has something to find)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(50, 150, size=shape).astype(np.float32)
    c = [s // 2 for s in shape]
    arr[max(c[0] - 2, 0): c[0] + 2, max(c[1] - 2, 0): c[1] + 2, max(c[2] - 1, 0): c[2] + 1] += 400
    if affine is None:
        affine = np.diag([-0.9, -0.9, 2.0, 1.0])
        affine[:3, 3] = (7.0, 7.0, -8.0)
    return Volume(arr, affine, modality="MR")


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, **hdr) -> Path:
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine, dtype=data.dtype)
    for k, v in hdr.items():
        img.header[k] = v
    nib.save(img, path)
    return path


def write_multiframe(volume: Volume, path: Path, *, per_frame_items: int | None = None) -> Path:
    """Write ``volume`` as one Enhanced MR Image Storage file (per-frame plane positions).

    ``per_frame_items`` < number of frames writes a broken file whose PerFrameFunctionalGroupsSequence
    is missing the last items.
    """
    data = np.asarray(volume.array[0])
    n_i, n_j, n_k = data.shape
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    col_step, row_step, slice_step, origin = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3]
    d_col, d_row = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.SOPInstanceUID = sop
    ds.Modality = "MR"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = "Anonymous^Test"
    ds.PatientID = "SEGAPP0001"
    ds.StudyDate = "20240101"
    ds.SeriesNumber = 5
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = n_j, n_i
    ds.NumberOfFrames = n_k
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = [f"{v:.10g}" for v in np.concatenate([col_step / d_col, row_step / d_row])]
    shared.PlaneOrientationSequence = Sequence([po])
    pm = Dataset()
    pm.PixelSpacing = [f"{d_row:.10g}", f"{d_col:.10g}"]
    pm.SliceThickness = f"{float(np.linalg.norm(slice_step)):.10g}"
    shared.PixelMeasuresSequence = Sequence([pm])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    items = []
    for k in range(n_k if per_frame_items is None else per_frame_items):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [f"{v:.10g}" for v in origin + k * slice_step]
        item.PlanePositionSequence = Sequence([pp])
        fc = Dataset()
        fc.InStackPositionNumber = k + 1
        fc.StackID = "1"
        item.FrameContentSequence = Sequence([fc])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    frames = np.round(data).astype(np.int16).transpose(2, 1, 0)  # (frames, rows, cols)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _series(folder: Path, volume: Volume | None = None, **kw) -> list[Path]:
    return write_dicom_series(volume or corpus_volume(), folder, **kw)


#: The tiny test model's grid and sliding window for corpus scans (``make_tiny_checkpoint(path, **CORPUS_MODEL)``):
#: 1 x 1 x 2 mm like the corpus volumes, a 16 x 16 x 8 window, no blending.
CORPUS_MODEL = {"spacing": (1.0, 1.0, 2.0), "version": "0.0.1",
                "inference": InferenceSpec(roi_size=(16, 16, 8), overlap=0.25, blend_mode="constant", sw_batch_size=1)}


def tiny_spec(in_channels: int = 1, name: str = "tiny-test-model"):
    """The spec of the corpus's tiny model (``checkpoints.tiny_spec`` on the corpus grid)."""
    return checkpoints.tiny_spec(in_channels=in_channels, name=name, **CORPUS_MODEL)


class _RunsCode:
    """Unpickling this creates ``path`` (proof that code ran)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def build_corpus(tmp_dir: str | os.PathLike[str]) -> list[CorpusCase]:
    """Write the bad-input corpus under ``tmp_dir`` and return its cases (about 1-2 s)."""
    root = Path(tmp_dir)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[CorpusCase] = []
    add = cases.append
    good = corpus_volume()
    good_nii = _nifti(root / "good.nii.gz", good.array[0], good.affine)

    # ---- the foundation issue's list -------------------------------------------------------
    add(CorpusCase("missing_path", root / "does_not_exist.nii.gz", "scan", "ScanNotFoundError",
                   note="'... does not exist.'"))
    (root / "empty.nii.gz").write_bytes(b"")
    add(CorpusCase("empty_file", root / "empty.nii.gz", "scan", "EmptyScanError", note="'The file ... is empty (0 bytes).'"))
    data = (good_nii).read_bytes()
    (root / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    add(CorpusCase("truncated_nii_gz", root / "truncated.nii.gz", "scan", "CorruptScanError",
                   note="truncated or corrupt, image data cannot be read"))
    (root / "text.nii").write_text("This is a radiology report, not an image.\n" * 20)
    add(CorpusCase("text_named_nii", root / "text.nii", "scan", "CorruptScanError", note="not a valid NIfTI image"))
    (root / "random.dcm").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    add(CorpusCase("random_bytes_dcm", root / "random.dcm", "scan", "CorruptScanError", note="not a DICOM file"))
    absurd = _nifti(root / "absurd.nii", np.zeros((4, 4, 4), np.float32))
    raw = bytearray(absurd.read_bytes())
    raw[40:56] = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], dtype="<i2").tobytes()
    absurd.write_bytes(bytes(raw))
    add(CorpusCase("absurd_nifti_size", absurd, "scan", "ScanTooLargeError",
                   note="claims 2.7e13 voxels; refused before allocating"))
    no_series = root / "no_series"
    no_series.mkdir()
    (no_series / "notes.txt").write_text("hello")
    (no_series / "report.pdf").write_bytes(b"%PDF-1.4 not really")
    add(CorpusCase("folder_without_series", no_series, "scan", "NoImageSeriesError", note="holds no DICOM image series"))
    trunc = root / "truncated_slice"
    paths = _series(trunc)
    blob = paths[3].read_bytes()
    paths[3].write_bytes(blob[: len(blob) - 100])
    add(CorpusCase("series_truncated_slice", trunc, "scan", "CorruptScanError",
                   note="names the slice whose pixel data cannot be decoded"))
    nan = good.array[0].copy()
    nan[0, 0, 0] = np.nan
    nan[1, 0, 0] = np.inf
    nan[2, 0, 0] = -np.inf
    _nifti(root / "nan_inf.nii.gz", nan, good.affine)
    add(CorpusCase("nan_inf_voxels", root / "nan_inf.nii.gz", "scan", "warning", warning="NaN or infinite",
                   note="loads; NaN/Inf set to 0 with a warning", predict_ok=True))

    # ---- DICOM oddities --------------------------------------------------------------------
    mixed = root / "foreign_slice"
    _series(mixed)
    other = _series(root / "_other_series", corpus_volume(seed=5), series_description="other")
    shutil.copy(other[2], mixed / "ZZ_foreign.dcm")
    shutil.rmtree(root / "_other_series")
    add(CorpusCase("foreign_slice_mixed_in", mixed, "scan", "MultipleSeriesError",
                   note="lists both series (the GUI shows a picker; predict needs --series)"))
    mixed_ori = root / "mixed_orientation"
    paths = _series(mixed_ori)
    for p in paths[:2]:
        ds = pydicom.dcmread(p)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.save_as(p)
    add(CorpusCase("mixed_orientations", mixed_ori, "scan", "warning", warning="another size or orientation",
                   note="largest consistent group loaded; others left out, with a warning", predict_ok=True))
    dup = root / "duplicate_positions"
    paths = _series(dup)
    ds = pydicom.dcmread(paths[4])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(dup / "dup.dcm")
    add(CorpusCase("duplicate_slice_positions", dup, "scan", "warning", warning="share a slice position",
                   note="first image at each position kept, with a warning", predict_ok=True))
    write_multiframe(good, root / "multiframe_missing_groups.dcm", per_frame_items=3)
    add(CorpusCase("multiframe_missing_per_frame_groups", root / "multiframe_missing_groups.dcm", "scan",
                   "CorruptScanError", note="multi-frame file lacks per-frame positions: refused"))
    rle = root / "corrupt_rle"
    paths = _series(rle, transfer_syntax=RLELossless)
    ds = pydicom.dcmread(paths[2])
    # a valid RLE header claiming one segment that starts past the end of the data
    header = np.zeros(16, "<u4")
    header[0], header[1] = 1, 10_000
    ds.PixelData = encapsulate([header.tobytes() + b"\x07garbage"])
    ds.save_as(paths[2])
    add(CorpusCase("compressed_slice_corrupt_codec", rle, "scan", "CorruptScanError",
                   note="names the slice whose pixel data cannot be decoded"))
    hdr_only = root / "no_pixel_data"
    paths = _series(hdr_only)
    ds = pydicom.dcmread(paths[1])
    del ds.PixelData
    ds.save_as(paths[1])
    add(CorpusCase("slice_without_pixel_data", hdr_only, "scan", "CorruptScanError",
                   note="names the slice whose pixel data is missing"))

    # ---- regressions found by benchmarks/fuzz_loaders.py ------------------------------------
    def alone(name: str, edit) -> Path:
        folder = root / name
        (p,) = _series(folder, corpus_volume((12, 10, 1)))
        ds = pydicom.dcmread(p)
        edit(ds)
        ds.save_as(p)
        return p

    add(CorpusCase("dicom_zero_columns", alone("zero_columns", lambda ds: setattr(ds, "Columns", 0)), "scan",
                   "CorruptScanError", note="'its header says the image is 0x10 pixels'"))
    add(CorpusCase("dicom_absurd_number_of_frames",
                   alone("absurd_frames", lambda ds: setattr(ds, "NumberOfFrames", "1000000")), "scan",
                   "CorruptScanError", note="claims 1,000,000 frames the file cannot hold; refused at once"))
    add(CorpusCase("dicom_nan_slice_thickness",
                   alone("nan_thickness", lambda ds: setattr(ds, "SliceThickness", "nan")), "scan", "warning",
                   warning="Single-slice", note="NaN header numbers count as missing (1 mm assumed)",
                   predict_ok=True))
    add(CorpusCase("dicom_negative_number_of_frames",
                   alone("negative_frames", lambda ds: setattr(ds, "NumberOfFrames", "-1")), "scan",
                   "CorruptScanError", note="'its header says it holds -1 frames'"))
    rle_frames = root / "rle_absurd_frames"
    (p,) = _series(rle_frames, corpus_volume((12, 10, 1)), transfer_syntax=RLELossless)
    ds = pydicom.dcmread(p)
    ds.NumberOfFrames = "1000000"
    ds.save_as(p)
    add(CorpusCase("dicom_rle_absurd_number_of_frames", p, "scan", "CorruptScanError",
                   note="compressed file claiming 1,000,000 frames: refused at once (was 50 s of decoding)"))
    unknown = alone("unknown_syntax", lambda ds: setattr(ds, "NumberOfFrames", "1000000"))
    blob = unknown.read_bytes()  # pydicom will not write an unknown transfer syntax: patch the bytes
    unknown.write_bytes(blob.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.1@", 1))
    add(CorpusCase("dicom_unknown_syntax_absurd_frames", unknown, "scan",
                   "CorruptScanError", note="unknown transfer syntax claiming 1,000,000 frames (fuzz; was a hang)"))
    add(CorpusCase("dicom_overflowing_orientation",
                   alone("huge_orientation", lambda ds: setattr(ds, "ImageOrientationPatient", [1e308, 0, 0, 0, 1, 0])),
                   "scan", "warning", warning="no patient position",
                   note="orientation treated as missing (was a singular affine)", predict_ok=True))
    degenerate = root / "degenerate_orientation"
    for p in _series(degenerate):
        ds = pydicom.dcmread(p)
        ds.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]  # parallel row/column directions
        ds.save_as(p)
    add(CorpusCase("dicom_degenerate_orientation", degenerate, "scan", "warning", warning="no patient position",
                   note="orientation treated as missing: instance-number order, guessed axes, warning",
                   predict_ok=True))
    try:
        from pydicom.data import get_testdata_file

        rle_src = get_testdata_file("MR_small_RLE.dcm")
    except Exception:  # noqa: BLE001 - pydicom's test files are optional
        rle_src = None
    if rle_src:
        blob = bytearray(Path(rle_src).read_bytes())
        for off, xor in RLE_PANIC_FLIPS:
            blob[off] ^= xor
        (root / "rle_panic").mkdir()
        (root / "rle_panic" / "slice.dcm").write_bytes(bytes(blob))
        add(CorpusCase("rle_decoder_panic", root / "rle_panic" / "slice.dcm", "scan", "CorruptScanError",
                       note="RLE data that makes the Rust decoder panic: cannot be decoded"))

    # ---- NIfTI oddities --------------------------------------------------------------------
    sing = np.eye(4)
    sing[2, 2] = 0.0
    img = nib.Nifti1Image(good.array[0], None)
    img.header.set_sform(sing, code=1)
    img.header.set_qform(None, code=0)
    nib.save(img, root / "singular_affine.nii.gz")
    add(CorpusCase("nifti_singular_affine", root / "singular_affine.nii.gz", "scan", "warning",
                   warning="orientation", note="loads with voxel sizes and a warning not to trust left/right",
                   predict_ok=True))
    _nifti(root / "int64.nii.gz", np.round(good.array[0]).astype(np.int64), good.affine)
    add(CorpusCase("nifti_int64", root / "int64.nii.gz", "scan", "ok", note="loads (as float32)", predict_ok=True))
    _nifti(root / "float64.nii.gz", good.array[0].astype(np.float64), good.affine)
    add(CorpusCase("nifti_float64", root / "float64.nii.gz", "scan", "ok", note="loads (as float32)", predict_ok=True))
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    _nifti(root / "rgb.nii.gz", rgb, good.affine)
    add(CorpusCase("nifti_rgb", root / "rgb.nii.gz", "scan", "UnsupportedScanError",
                   note="colour (RGB) image refused: not a scan"))
    zero = _nifti(root / "zero_dim.nii", np.zeros((16, 0, 8), np.float32))
    add(CorpusCase("zero_sized_dimension", zero, "scan", "UnsupportedScanError", note="empty image refused"))
    _nifti(root / "one_voxel.nii.gz", np.full((1, 1, 1), 100.0, np.float32))
    add(CorpusCase("one_voxel_image", root / "one_voxel.nii.gz", "scan", "ok",
                   note="loads; predict writes an empty mask", predict_ok=True))
    _nifti(root / "time_series.nii.gz", np.zeros((8, 8, 4, 20), np.float32))
    add(CorpusCase("nifti_time_series", root / "time_series.nii.gz", "scan", "UnsupportedScanError",
                   note="4D with 20 volumes refused as a time series"))
    nan_aff = good.affine.copy()
    nan_aff[0, 0] = np.nan
    img = nib.Nifti1Image(good.array[0], None)
    img.header.set_sform(nan_aff, code=1)
    img.header.set_qform(None, code=0)
    nib.save(img, root / "nan_affine.nii.gz")
    add(CorpusCase("nifti_nan_affine", root / "nan_affine.nii.gz", "scan", "warning", warning="orientation",
                   note="loads with voxel sizes and a warning not to trust left/right", predict_ok=True))

    img = nib.Nifti1Image(good.array[0], None)
    img.header.set_sform(None, code=0)
    img.header.set_qform(None, code=0)
    pixdim = img.header["pixdim"].copy()
    pixdim[2] = np.inf
    img.header["pixdim"] = pixdim
    nib.save(img, root / "inf_pixdim.nii.gz")
    add(CorpusCase("nifti_infinite_voxel_size", root / "inf_pixdim.nii.gz", "scan", "warning", warning="orientation",
                   note="infinite voxel size replaced by 1 mm, with the orientation warning (was an infinite affine)",
                   predict_ok=True))

    # ---- checkpoints -----------------------------------------------------------------------
    ck = root / "checkpoints"
    ck.mkdir()
    four = make_tiny_checkpoint(ck / "four_channels.pt", in_channels=4, **CORPUS_MODEL)
    add(CorpusCase("checkpoint_4ch_on_1ch_scan", four, "checkpoint", "IncompatibleInputError", scan=good_nii,
                   note="the model needs 4 channels, the scan has 1"))
    tiny = make_tiny_checkpoint(ck / "_valid.pt", **CORPUS_MODEL)
    payload = torch.load(tiny, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, ck / "wrong_version.pt")
    add(CorpusCase("checkpoint_wrong_format_version", ck / "wrong_version.pt", "checkpoint", "CheckpointError",
                   scan=good_nii, note="format version 99; this app reads 1"))
    blob = tiny.read_bytes()
    (ck / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    add(CorpusCase("checkpoint_truncated", ck / "truncated.pt", "checkpoint", "CheckpointError", scan=good_nii,
                   note="unreadable, truncated or corrupt"))
    tiny.unlink()
    sentinel = root / "PWNED_by_pickle"
    with open(ck / "runs_code.pt", "wb") as fh:
        pickle.dump({"format": "seg_app.checkpoint", "x": _RunsCode(str(sentinel))}, fh)
    add(CorpusCase("checkpoint_pickle_runs_code", ck / "runs_code.pt", "checkpoint", "CheckpointError",
                   scan=good_nii, sentinel=sentinel, note="refused for safety; no code runs"))
    torch.save({"format": "seg_app.checkpoint", "x": _RunsCode(str(sentinel))}, ck / "runs_code_zip.pt")
    add(CorpusCase("checkpoint_zip_pickle_runs_code", ck / "runs_code_zip.pt", "checkpoint", "CheckpointError",
                   scan=good_nii, sentinel=sentinel, note="refused for safety; no code runs"))
    gz = ck / "gzipped.pt"
    gz.write_bytes(gzip.compress(blob))
    add(CorpusCase("checkpoint_not_a_checkpoint", gz, "checkpoint", "CheckpointError", scan=good_nii,
                   note="not a valid model checkpoint"))
    return cases


def good_scan(tmp_dir: str | os.PathLike[str]) -> Path:
    """A small valid NIfTI scan (for 'other inputs still processed' checks)."""
    v = corpus_volume(seed=3)
    return _nifti(Path(tmp_dir) / "good_scan.nii.gz", v.array[0], v.affine)
