"""Time-budgeted mutation fuzzing of the NIfTI and DICOM loaders.

    python benchmarks/fuzz_loaders.py --seconds 60 [--seed 0] [--out /tmp/fuzz_findings]

Seeds: small NIfTI files (.nii, .nii.gz, 4D), DICOM slices written by ``write_dicom_series`` (native,
RLE), an enhanced multi-frame MR, and pydicom's bundled real files (CT_small, MR_small in several
transfer syntaxes, JPEG variants) when pydicom-data is installed. Each iteration takes one seed and
applies 1-4 random mutations: bit flips, random bytes, truncation, chunk deletion/duplication,
NIfTI header field corruption (dim, datatype, bitpix, pixdim, vox_offset, scl_*, q/sform) and DICOM
element corruption (Rows, Columns, BitsAllocated, NumberOfFrames, geometry, rescale, photometric,
transfer syntax, ... set to odd values), then calls ``load_scan`` on the file (DICOM files alone in a
folder, or beside one good slice of their series) and ``list_series`` on DICOM folders.

A **finding** is any exception that is not a ``SegAppError`` subclass, a load slower than
``--slow`` seconds, or a returned ``Volume`` breaking the loader's promises (float32, finite voxels,
no empty axis, finite invertible affine). Findings are de-duplicated by (exception type, innermost
frame in ``seg_app``) and the mutated file of the first of each is saved under ``--out`` to reproduce
with ``seg-app info FILE``. Exit status 1 when anything was found.

Pure Python (no atheris needed): a seeded RNG, so ``--seed`` reproduces a run on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the corpus helpers (multi-frame writer)

from seg_app.core.dicom_write import write_dicom_series  # noqa: E402
from seg_app.core.errors import SegAppError  # noqa: E402
from seg_app.core.io import list_series, load_scan  # noqa: E402
from seg_app.core.volume import Volume  # noqa: E402

# NIfTI-1 header fields: (offset, numpy type, count)
NIFTI_FIELDS = {
    "sizeof_hdr": (0, "<i4", 1), "dim": (40, "<i2", 8), "intent_code": (68, "<i2", 1), "datatype": (70, "<i2", 1),
    "bitpix": (72, "<i2", 1), "pixdim": (76, "<f4", 8), "vox_offset": (108, "<f4", 1), "scl_slope": (112, "<f4", 1),
    "scl_inter": (116, "<f4", 1), "qform_code": (252, "<i2", 1), "sform_code": (254, "<i2", 1),
    "quatern": (256, "<f4", 6), "srow": (280, "<f4", 12), "magic": (344, "S4", 1),
}
INTERESTING_INT = [0, 1, -1, 2, 3, 4, 5, 7, 8, 255, 256, 32767, -32768, 65535, 2**31 - 1, -(2**31)]
INTERESTING_FLOAT = [0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, 3.4e38, np.nan, np.inf, -np.inf, 0.5, 1e6]
DICOM_TAGS = {
    "Rows": INTERESTING_INT[:12], "Columns": INTERESTING_INT[:12], "BitsAllocated": [0, 1, 7, 8, 12, 16, 24, 32, 64],
    "BitsStored": [0, 1, 8, 12, 16, 33], "HighBit": [0, 7, 15, 31, 40], "PixelRepresentation": [0, 1, 2],
    "SamplesPerPixel": [0, 1, 3, 4], "PhotometricInterpretation": ["RGB", "MONOCHROME1", "PALETTE COLOR", "", "YBR_FULL"],
    "NumberOfFrames": ["0", "1", "2", "-1", "1000000", "abc"], "PixelSpacing": [["0", "0"], ["-1", "1"], ["nan", "1"], ["1e308", "1"], ["1"]],
    "ImagePositionPatient": [["nan", "0", "0"], ["inf", "0", "0"], ["0", "0"], ["1e308", "0", "0"], ["a", "b", "c"]],
    "ImageOrientationPatient": [["0"] * 6, ["1", "0", "0", "1", "0", "0"], ["nan"] * 6, ["1", "0", "0"], ["1e308", "0", "0", "0", "1", "0"]],
    "RescaleSlope": ["0", "nan", "inf", "-1e308", "abc", ""], "RescaleIntercept": ["nan", "1e308", "x", ""],
    "SliceThickness": ["0", "-5", "nan", ""], "InstanceNumber": ["-1", "2147483648", "x", ""],
    "SeriesInstanceUID": ["", "1.2.3"], "SOPInstanceUID": ["", "1.2.3"], "SOPClassUID": ["", "1.2.840.10008.5.1.4.1.1.481.3", "1.2"],
    "PlanarConfiguration": [0, 1, 2],
}
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1.99", "9.9",
]


@dataclass
class Seed:
    name: str
    data: bytes
    kind: str  # "nifti" | "dicom"
    suffix: str
    sibling: bytes | None = None  # another slice of the same series, written beside the mutant


def _seeds(work: Path) -> list[Seed]:
    from corpus import corpus_volume, write_multiframe
    from pydicom.uid import RLELossless

    seeds: list[Seed] = []
    work.mkdir(parents=True, exist_ok=True)
    vol = corpus_volume((12, 10, 6))
    aff = vol.affine
    for name, data, suffix in [
        ("nii", vol.array[0], ".nii"), ("nii_gz", vol.array[0], ".nii.gz"),
        ("nii_int16", vol.array[0].astype(np.int16), ".nii"), ("nii_4d", np.stack([vol.array[0]] * 2, -1), ".nii"),
    ]:
        p = work / f"seed_{name}{suffix}"
        nib.save(nib.Nifti1Image(data, aff), p)
        seeds.append(Seed(name, p.read_bytes(), "nifti", suffix))
    for name, ts in [("dcm_native", "1.2.840.10008.1.2.1"), ("dcm_rle", RLELossless)]:
        paths = write_dicom_series(vol, work / name, transfer_syntax=ts)
        seeds.append(Seed(name, paths[2].read_bytes(), "dicom", ".dcm", sibling=paths[3].read_bytes()))
        seeds.append(Seed(name + "_alone", paths[0].read_bytes(), "dicom", ".dcm"))
    mf = write_multiframe(vol, work / "mf.dcm")
    seeds.append(Seed("dcm_multiframe", mf.read_bytes(), "dicom", ".dcm"))
    try:
        from pydicom.data import get_testdata_file

        for fname in ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                      "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG-LL.dcm",
                      "emri_small.dcm"]:
            f = get_testdata_file(fname)
            if f:
                seeds.append(Seed(fname, Path(f).read_bytes(), "dicom", ".dcm"))
    except Exception:  # noqa: BLE001 - pydicom-data is optional
        pass
    return seeds


# ---- mutations ---------------------------------------------------------------------------------
def _bitflip(rng, b: bytearray, kind: str) -> bytearray:
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
    return b


def _random_bytes(rng, b: bytearray, kind: str) -> bytearray:
    i = int(rng.integers(0, len(b)))
    n = int(rng.integers(1, 17))
    b[i: i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return b


def _truncate(rng, b: bytearray, kind: str) -> bytearray:
    return b[: int(rng.integers(0, len(b)))]


def _chunk(rng, b: bytearray, kind: str) -> bytearray:
    i, j = sorted(int(x) for x in rng.integers(0, len(b), 2))
    if rng.random() < 0.5:
        return b[:i] + b[j:]
    return b[:j] + b[i:j] + b[j:]


def _nifti_field(rng, b: bytearray, kind: str) -> bytearray:
    if kind != "nifti":
        return _bitflip(rng, b, kind)
    import gzip
    import zlib

    gz = b[:2] == b"\x1f\x8b"
    try:
        raw = bytearray(gzip.decompress(bytes(b))) if gz else b
    except (OSError, EOFError, zlib.error):
        return _bitflip(rng, b, kind)
    if len(raw) < 348:
        return b
    name = list(NIFTI_FIELDS)[int(rng.integers(0, len(NIFTI_FIELDS)))]
    off, dt, count = NIFTI_FIELDS[name]
    idx = int(rng.integers(0, count))
    if dt == "S4":
        raw[off: off + 4] = [b"n+1\0", b"ni1\0", b"n+2\0", b"xxxx"][int(rng.integers(0, 4))]
    else:
        size = np.dtype(dt).itemsize
        pool = INTERESTING_FLOAT if dt.endswith("f4") else INTERESTING_INT
        val = pool[int(rng.integers(0, len(pool)))]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw[off + idx * size: off + (idx + 1) * size] = np.array([val]).astype(dt).tobytes()
    return bytearray(gzip.compress(bytes(raw), compresslevel=1)) if gz else raw


def _dicom_field(rng, b: bytearray, kind: str) -> bytearray:
    if kind != "dicom":
        return _nifti_field(rng, b, kind)
    import io

    try:
        ds = pydicom.dcmread(io.BytesIO(bytes(b)), force=True)
        if rng.random() < 0.15 and hasattr(ds, "file_meta"):
            ds.file_meta.TransferSyntaxUID = TRANSFER_SYNTAXES[int(rng.integers(0, len(TRANSFER_SYNTAXES)))]
        else:
            tag = list(DICOM_TAGS)[int(rng.integers(0, len(DICOM_TAGS)))]
            vals = DICOM_TAGS[tag]
            val = vals[int(rng.integers(0, len(vals)))]
            if rng.random() < 0.1 and tag in ds:
                delattr(ds, tag)
            else:
                setattr(ds, tag, val)
        out = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(out, enforce_file_format=False)
        return bytearray(out.getvalue())
    except Exception:  # noqa: BLE001 - the mutation itself failed: fall back to raw bytes
        return _random_bytes(rng, b, kind)


MUTATORS = [_bitflip, _random_bytes, _truncate, _chunk, _nifti_field, _dicom_field, _dicom_field]


def mutate(rng: np.random.Generator, seed: Seed) -> bytes:
    b = bytearray(seed.data)
    for _ in range(int(rng.integers(1, 5))):
        if not b:
            break
        b = MUTATORS[int(rng.integers(0, len(MUTATORS)))](rng, b, seed.kind)
    return bytes(b)


# ---- running -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_fd2(enabled: bool):
    """Silence file descriptor 2 (Rust panics of native decoders print there directly)."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001
    raise _Timeout()


def _check_volume(v: Volume) -> str | None:
    """Broken promises of a successfully loaded volume, or None."""
    if v.array.dtype != np.float32:
        return f"dtype {v.array.dtype}"
    if v.array.ndim != 4 or min(v.array.shape) <= 0:
        return f"empty axis {v.array.shape}"
    if not np.isfinite(v.array).all():
        return "non-finite voxels returned"
    if not np.isfinite(v.affine).all() or abs(np.linalg.det(v.affine[:3, :3])) < 1e-12:
        return "non-finite or singular affine"
    return None


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "seg_app" in f.filename]
    f = (ours or frames or [None])[-1]
    return f"{Path(f.filename).name}:{f.lineno}" if f else "?"


def run_one(path: Path, kind: str, slow_s: float) -> tuple[str, str] | None:
    """Load ``path``; a (key, description) finding or None."""
    t0 = time.perf_counter()
    signal.alarm(max(1, int(slow_s * 4)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = load_scan(path)
            if kind == "dicom":
                list_series(path.parent)
        problem = _check_volume(v)
        if problem:
            return f"invariant:{problem}", problem
    except SegAppError:
        pass
    except _Timeout:
        return "hang", f"no answer within {slow_s * 4:.0f} s"
    except BaseException as exc:  # noqa: BLE001 - this is what we are looking for
        if isinstance(exc, KeyboardInterrupt):
            raise
        return f"{type(exc).__name__}@{_where(exc)}", f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        signal.alarm(0)
    dt = time.perf_counter() - t0
    if dt > slow_s:
        return "slow", f"took {dt:.1f} s"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "fuzz_findings"), help="where findings go")
    ap.add_argument("--slow", type=float, default=5.0, help="seconds after which a load is a finding")
    ap.add_argument("--noisy", action="store_true", help="keep library messages on stderr")
    ap.add_argument("--memory-gb", type=float, default=4.0, help="address-space limit (absurd allocations fail)")
    args = ap.parse_args(argv)

    limit = int(args.memory_gb * 2**30)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.signal(signal.SIGALRM, _alarm)
    if not args.noisy:
        logging.getLogger("nibabel").setLevel(logging.CRITICAL)
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        warnings.simplefilter("ignore")
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    findings: dict[str, tuple[str, str, Path]] = {}
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
        work = Path(tmp)
        seeds = _seeds(work / "seeds")
        t_end = time.perf_counter() + args.seconds
        n = 0
        while time.perf_counter() < t_end:
            seed = seeds[int(rng.integers(0, len(seeds)))]
            with _quiet_fd2(not args.noisy):
                data = mutate(rng, seed)
            case = work / f"case{n % 2}"
            shutil.rmtree(case, ignore_errors=True)
            case.mkdir()
            path = case / f"mutant{seed.suffix}"
            path.write_bytes(data)
            if seed.sibling is not None and rng.random() < 0.5:
                (case / "sibling.dcm").write_bytes(seed.sibling)
            with _quiet_fd2(not args.noisy):
                found = run_one(path, seed.kind, args.slow)
            n += 1
            if found:
                key, desc = found
                counts[key] += 1
                if key not in findings:
                    digest = hashlib.sha1(data).hexdigest()[:10]
                    saved = out / f"{len(findings):03d}_{seed.name}_{digest}{seed.suffix}"
                    saved.write_bytes(data)
                    findings[key] = (seed.name, desc, saved)
                    print(f"FINDING {key}: {desc} (seed {seed.name}; saved {saved})", flush=True)
    print(f"{n} inputs in {args.seconds:.0f} s from {len(seeds)} seeds; {len(findings)} distinct finding(s)")
    for key, (seed_name, desc, saved) in findings.items():
        print(f"  {counts[key]:5d}x {key}: {desc} [{seed_name}] -> {saved}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
