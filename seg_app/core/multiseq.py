"""Multi-sequence studies: a model's input channels matched to series, and put onto one grid (Qt-free).

Most tumour models take several MR sequences (T1c, T1, T2, FLAIR). A study gives them as several DICOM
series of one folder, several NIfTI files (BraTS: ``<case>-t1c.nii.gz``...), or one 4D NIfTI. Stages,
each callable on its own (``seg-app predict --channel`` and the GUI's channel dialog run them in order):

1. :func:`study_candidates`: every series (DICOM, with SeriesDescription, ProtocolName, ImageType and
   FrameOfReferenceUID) and NIfTI image file of a folder, as :class:`Candidate` s.
2. :func:`match_channels`: each model channel (``"T1c"``, ``"t1ce"``, ``"FLAIR"``...) gets the one
   candidate of the same *sequence role* (:func:`sequence_role`: ``t1c``, ``t1``, ``t2``, ``flair``) read
   from its texts. A channel with no candidate, or with several equally good ones, stays **unmatched and
   is reported** -- never guessed -- and the user names the series (``--channel NAME=PATH``, the dialog).
3. :func:`assemble_study`: every channel onto the **reference** series' grid (the first channel unless
   chosen). Same FrameOfReferenceUID (DICOM) or both NIfTI (scanner space): affine resampling only
   (trilinear; bit-exact copy when the grids are equal). Different frames of reference (or DICOM mixed
   with NIfTI): rigid registration by mutual information (:func:`seg_app.core.registration.register_rigid`),
   with a warning. The result keeps the reference's geometry and metadata (exports, DICOM SEG references
   and patient identifiers stay those of the reference series), ``channel_names`` in model order, and
   one :class:`ChannelRecord` per channel in ``meta["channels"]`` (written to the measurements JSON).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg_app.core.errors import IncompatibleInputError, ScanLoadError
from seg_app.core.volume import SeriesInfo, Volume

__all__ = [
    "ROLES", "Candidate", "ChannelMatch", "ChannelRecord", "assemble_study", "channels_from_volume", "checkerboard",
    "load_channels", "match_channels", "sequence_role", "study_candidates",
]

#: The sequence roles the heuristics know, with what they are called in messages.
ROLES: dict[str, str] = {
    "t1c": "T1 post-contrast", "t1": "T1 (native)", "t2": "T2", "flair": "FLAIR",
}

# ---- sequence roles from texts -------------------------------------------------------------------
_NIFTI_EXT = (".nii.gz", ".nii")
# tokens (after splitting on anything that is not a letter, digit or '+') that say "post contrast"
_POST = {"post", "postcontrast", "gd", "gad", "gado", "gadolinium", "dotarem", "magnevist", "gadavist",
         "contrast", "ce", "c", "enh", "enhanced", "t1c", "t1ce", "t1gd", "t1post", "t1wce", "t1wc", "cet1",
         "ct1", "t1cw"}
_PRE = {"pre", "precontrast", "native", "nat", "t1n", "noncontrast", "plain"}
_T1 = {"t1", "t1w", "t1n", "t1wi", "mprage", "mp2rage", "spgr", "fspgr", "bravo", "tfe", "t1tfe", "vibe", "flash",
       "t1se", "t1fse", "t1tse", "t1ffe", "t1weighted", "t1c", "t1ce", "t1gd", "t1post", "t1wce", "cet1", "ct1"}
_T2 = {"t2", "t2w", "t2wi", "t2tse", "t2fse", "t2weighted", "t2space", "t2frfse"}
_FLAIR = {"flair", "t2f", "tirm", "darkfluid", "t2flair", "flairt2", "fluid"}
# sequences that are none of the four (a T2* or diffusion series must not become "t2")
_OTHER = {"t2star", "t2s", "swi", "swan", "gre", "dwi", "adc", "dti", "trace", "tracew", "perf", "perfusion", "dsc",
          "dce", "asl", "mra", "tof", "localizer", "localiser", "scout", "survey", "loc", "cbf", "cbv", "fa", "b0",
          "b1000", "sub", "subtraction", "mip", "pd", "pdw", "stir", "seg", "label", "labels", "mask"}
_DERIVED = {"DERIVED", "SECONDARY", "LOCALIZER", "MPR", "MIP", "SUBTRACTION", "ADC", "TRACEW", "FA"}


def _tokens(text: str) -> list[str]:
    t = text.lower()
    for ext in _NIFTI_EXT + (".dcm",):
        if t.endswith(ext):
            t = t[: -len(ext)]
    t = t.replace("t2*", " t2star ").replace("t2 *", " t2star ").replace("dark fluid", " darkfluid ")
    t = re.sub(r"(\+\s*c\b|\bc\s*\+|\bw/\s*c\b|\bwith\s+contrast\b|\+\s*gd\b|\+\s*gad\b)", " post ", t)
    t = re.sub(r"\bt([12])\s*[-_]?\s*w(?:eighted)?\b", r" t\1w ", t)  # "T1-weighted", "t2_w"
    t = re.sub(r"\bt2\s*[-_ ]\s*flair\b", " t2flair ", t)
    t = re.sub(r"\bt1\s*[-_ ]?\s*(gd|ce|post)\b", r" t1\1 ", t)
    return [w for w in re.split(r"[^a-z0-9]+", t) if w]


def sequence_role(text: str) -> tuple[str | None, float]:
    """The sequence role (``"t1c"``, ``"t1"``, ``"t2"``, ``"flair"`` or None) a text names, and how sure.

    Works on model channel names ("T1c", "t1gd", "T2w", "FLAIR"), SeriesDescription/ProtocolName values
    ("AX T1 POST GD", "sag mprage +c", "AX T2 FLAIR") and file names (BraTS ``..._t1ce.nii.gz``,
    ``...-t2f.nii.gz``), case-insensitively. Confidence 1.0 when a sequence word is explicit, 0.6 when
    inferred (a post-contrast word without "T1"); (None, 0.0) for other or unknown sequences (T2*, DWI,
    localizers, masks...).
    """
    words = _tokens(text)
    s = set(words)
    if not s:
        return None, 0.0
    flair = bool(s & _FLAIR) or ("t2" in s and "flair" in s)
    t2 = bool(s & _T2)
    t1 = bool(s & _T1)
    post = bool(s & _POST) and not (s & _PRE)
    other = bool(s & _OTHER)
    if flair:
        return ("flair", 1.0) if not (t1 and not {"t2", "t2flair", "t2f"} & s) else (None, 0.0)
    if other and not (t1 or t2):
        return None, 0.0
    if other and ({"t2star", "t2s", "swi", "swan", "dwi", "adc", "sub", "subtraction", "mip", "seg", "label",
                   "labels", "mask", "localizer", "localiser", "scout"} & s):
        return None, 0.0
    if t1 and t2:
        return None, 0.0  # "T1 and T2"? not one sequence
    if t1:
        return ("t1c", 1.0) if post else ("t1", 1.0)
    if t2:
        return ("t2", 1.0) if not post else (None, 0.0)
    if post:
        return "t1c", 0.6
    return None, 0.0


# ---- candidates ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One series or file a channel can come from.

    Attributes:
        path: NIfTI file, DICOM file or folder.
        series_uid: the DICOM series in ``path`` (None for NIfTI).
        description: SeriesDescription, or the file name.
        protocol: DICOM ProtocolName ("" when absent).
        image_type: DICOM ImageType values.
        frame_of_reference_uid: DICOM FrameOfReferenceUID ("" when absent or NIfTI).
        summary: one line for listings.
    """

    path: str
    series_uid: str | None = None
    description: str = ""
    protocol: str = ""
    image_type: tuple[str, ...] = ()
    frame_of_reference_uid: str = ""
    summary: str = ""
    folder: str = ""  # the folder holding the series' files (DICOM), for "is this the series given there?"

    @property
    def key(self) -> str:
        """``PATH`` or ``PATH::SERIES_UID`` (the ``--channel`` syntax)."""
        return f"{self.path}::{self.series_uid}" if self.series_uid else self.path

    @property
    def label(self) -> str:
        """Short name for messages: the description (and protocol when it differs), else the file name."""
        text = self.description or Path(self.path).name
        if self.protocol and self.protocol.lower() != text.lower():
            text += f" / {self.protocol}"
        return text

    def role(self) -> tuple[str | None, float]:
        """The sequence role of this candidate, from its description, then protocol, then file name."""
        role, conf = None, 0.0
        texts = [self.description, self.protocol] if self.series_uid else [Path(self.path).name, self.description]
        for text in texts:
            if text:
                r, c = sequence_role(text)
                if r is None:
                    continue
                if role is not None and r != role:  # description and protocol disagree
                    return None, 0.0
                role, conf = r, max(conf, c)
        if role is not None and {v.upper() for v in self.image_type} & _DERIVED:
            conf -= 0.3  # a reformat/subtraction of the sequence: the original wins if both are there
        return role, conf

    def load(self) -> Volume:
        """The candidate as a ``Volume`` (:func:`seg_app.core.io.load_scan`)."""
        from seg_app.core.io import load_scan

        return load_scan(self.path, series_uid=self.series_uid)

    def same_source(self, path: str | os.PathLike[str], series_uid: str | None = None) -> bool:
        """Whether ``path`` (and ``series_uid``) names this candidate: the same file, the same series UID, or
        (no UID given) a folder holding this series' files."""
        if series_uid and self.series_uid:
            return series_uid == self.series_uid
        p = Path(path).resolve()
        if p == Path(self.path).resolve() and not self.series_uid:
            return True
        return bool(self.folder) and (p == Path(self.folder).resolve() or p in Path(self.folder).resolve().parents)


def _dicom_extra(path: str) -> tuple[str, tuple[str, ...], str]:
    """(ProtocolName, ImageType, FrameOfReferenceUID) of one DICOM file, header only; blanks on failure."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["ProtocolName", "ImageType", "FrameOfReferenceUID"])
    except Exception:  # noqa: BLE001 - a summary only; loading reports the real problem
        return "", (), ""
    it = ds.get("ImageType", ())
    it = (str(it),) if isinstance(it, str) else tuple(str(v) for v in it)
    return str(ds.get("ProtocolName", "") or ""), it, str(ds.get("FrameOfReferenceUID", "") or "")


def _from_series(info: SeriesInfo, path: str) -> Candidate:
    protocol, image_type, frame = _dicom_extra(info.files[0]) if info.files else ("", (), "")
    return Candidate(path, info.series_uid, info.description, protocol, image_type, frame, info.summary(),
                     str(Path(info.files[0]).parent) if info.files else "")


def _is_mask_name(name: str) -> bool:
    return bool({"seg", "label", "labels", "mask", "pred", "prediction"} & set(_tokens(name)))


def study_candidates(path: str | os.PathLike[str]) -> list[Candidate]:
    """Every image series of a study: the DICOM series under ``path`` (recursive) and its NIfTI image
    files (label maps and masks -- ``seg``, ``label``, ``mask`` in the name -- skipped); a NIfTI file
    alone is one candidate.

    Raises:
        ScanLoadError: ``path`` does not exist.
    """
    from seg_app.core.errors import ScanNotFoundError
    from seg_app.core.io import list_series

    p = Path(path)
    if not p.exists():
        raise ScanNotFoundError(f"{p} does not exist.")
    if p.is_file() and p.name.lower().endswith(_NIFTI_EXT):
        return [Candidate(str(p), description=p.name, summary=p.name)]
    folder = p if p.is_dir() else p.parent
    out = [Candidate(str(f), description=f.name, summary=f.name)
           for f in sorted(folder.rglob("*")) if f.is_file() and f.name.lower().endswith(_NIFTI_EXT)
           and not _is_mask_name(f.name)]
    if any(f.is_file() and not f.name.lower().endswith(_NIFTI_EXT) for f in folder.rglob("*")):
        out += [_from_series(s, str(folder)) for s in list_series(folder)]
    return out


def _as_candidate(c: Candidate | SeriesInfo | str | os.PathLike[str]) -> Candidate:
    if isinstance(c, Candidate):
        return c
    if isinstance(c, SeriesInfo):
        folder = str(Path(c.files[0]).parent) if c.files else ""
        return _from_series(c, folder)
    return Candidate(str(c), description=Path(c).name, summary=Path(c).name)


# ---- matching ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelMatch:
    """Model channels -> candidates, with how sure each match is.

    Attributes:
        channels: the model's channel names, in model order.
        mapping: channel -> the candidate chosen for it (matched channels only).
        confidence: channel -> 0..1 (1: the sequence is named explicitly and no other candidate fits).
        unmatched: channel -> why it has no candidate ("no series looks like FLAIR", "3 series look
            like T1 post-contrast: ...").
    """

    channels: tuple[str, ...]
    mapping: dict[str, Candidate] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)
    unmatched: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.unmatched

    @property
    def overall_confidence(self) -> float:
        """The lowest confidence of the matched channels (0 when any channel is unmatched)."""
        if self.unmatched or not self.channels:
            return 0.0
        return min(self.confidence.values()) if self.confidence else 0.0

    def lines(self) -> list[str]:
        """One line per channel, for printing."""
        out = []
        for ch in self.channels:
            if ch in self.mapping:
                c = self.mapping[ch]
                out.append(f"{ch} = {c.label} [{c.key}] (confidence {self.confidence[ch]:.1f})")
            else:
                out.append(f"{ch} = ? ({self.unmatched[ch]})")
        return out


def match_channels(model_channel_names: Sequence[str],
                   candidates: Iterable[Candidate | SeriesInfo | str | os.PathLike[str]]) -> ChannelMatch:
    """Match each model channel to one candidate series/file by its sequence role.

    A candidate goes to at most one channel. When several candidates have the channel's role, the one
    with the clearly highest confidence (by 0.2 or more, e.g. an original series against its reformat)
    is taken; otherwise the channel stays unmatched ("ambiguous"), as does a channel whose name is no
    known sequence and matches no candidate's name exactly.

    Args:
        model_channel_names: ``ModelSpec.channels`` names, e.g. ("T1c", "T1w", "T2w", "FLAIR").
        candidates: :class:`Candidate` s (:func:`study_candidates`), ``SeriesInfo`` s
            (:func:`seg_app.core.io.list_series`) or file names/paths.
    """
    cands = [_as_candidate(c) for c in candidates]
    roles = [c.role() for c in cands]
    channels = tuple(str(n) for n in model_channel_names)
    mapping: dict[str, Candidate] = {}
    confidence: dict[str, float] = {}
    unmatched: dict[str, str] = {}
    used: set[int] = set()
    want = {ch: sequence_role(ch)[0] for ch in channels}
    dup = {r for r in want.values() if r is not None and list(want.values()).count(r) > 1}
    for ch in channels:
        role = want[ch]
        if role is None:  # not a known sequence: exact name only (e.g. "ADC" = a series "ADC")
            hits = [i for i, c in enumerate(cands) if i not in used and
                    any(ch.lower() == t for t in _tokens(c.label) + _tokens(Path(c.path).name))]
            what = f"'{ch}'"
            scored = [(1.0, i) for i in hits]
        elif role in dup:
            unmatched[ch] = f"the model has several {ROLES[role]} channels; name the series yourself"
            continue
        else:
            what = ROLES[role]
            scored = sorted(((roles[i][1], i) for i in range(len(cands)) if roles[i][0] == role and i not in used),
                            key=lambda t: (-t[0], t[1]))
        if not scored:
            unmatched[ch] = f"no series looks like {what}"
            continue
        if len(scored) > 1 and scored[0][0] - scored[1][0] < 0.2:
            names = ", ".join(f"'{cands[i].label}'" for _s, i in scored if _s >= scored[0][0] - 0.2)
            unmatched[ch] = f"ambiguous: {names} all look like {what}"
            continue
        conf, i = scored[0]
        if len(scored) > 1:
            conf = min(conf, 0.8)  # another candidate fits less well
        used.add(i)
        mapping[ch] = cands[i]
        confidence[ch] = round(max(0.1, min(1.0, conf)), 2)
    return ChannelMatch(channels, mapping, confidence, unmatched)


# ---- assembly --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelRecord:
    """Where one channel of an assembled study came from and how it was put onto the reference grid.

    Attributes:
        channel: the model channel name.
        source: the file or folder it was read from.
        series_uid, series_description: the DICOM series (None/"" for NIfTI).
        method: ``"identity"`` (the reference itself, or a channel of the same file), ``"same-frame"``
            (affine resampling in the shared scanner space) or ``"registered"`` (rigid, mutual information).
        transform: 4x4 reference RAS mm -> this channel's RAS mm (identity unless registered).
        registration: the registration's quality numbers (:meth:`Registration.as_dict`), when registered.
    """

    channel: str
    source: str
    series_uid: str | None
    series_description: str
    method: str
    transform: np.ndarray
    registration: dict[str, Any] | None = None
    frame_of_reference_uid: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "source": self.source, "series_uid": self.series_uid,
                "series_description": self.series_description, "frame_of_reference_uid": self.frame_of_reference_uid,
                "method": self.method, "reference_to_channel_ras": [[float(v) for v in row] for row in self.transform],
                "registration": self.registration}


_METHODS = ("identity", "same-frame", "registered")


def _frame(volume: Volume) -> str:
    return str(volume.meta.get("FrameOfReferenceUID", "") or "")


def _is_dicom(volume: Volume) -> bool:
    return bool(volume.series_uid)


def _same_space(reference: Volume, other: Volume) -> bool:
    """Same FrameOfReferenceUID (DICOM), or both NIfTI (scanner space); else a registration is needed."""
    if _is_dicom(reference) and _is_dicom(other):
        return bool(_frame(reference)) and _frame(reference) == _frame(other)
    return not _is_dicom(reference) and not _is_dicom(other)


def _source(volume: Volume) -> str:
    if not volume.source_paths:
        return ""
    p = Path(volume.source_paths[0])
    return str(p.parent) if volume.series_uid else str(p)


def _record(name: str, volume: Volume, method: str, transform: np.ndarray | None = None,
            registration: dict[str, Any] | None = None) -> ChannelRecord:
    return ChannelRecord(name, _source(volume), volume.series_uid, volume.series_description, method,
                         np.eye(4) if transform is None else np.asarray(transform, np.float64), registration,
                         _frame(volume))


def _overlap_fraction(reference: Volume, other: Volume) -> float:
    """Fraction of the reference grid (the centres of 6x6x6 blocks of it) inside ``other``'s field of view."""
    axes = [(np.arange(6) + 0.5) / 6 * n - 0.5 for n in reference.shape]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    ijk = other.world_to_voxel(reference.voxel_to_world(pts))
    inside = np.all((ijk >= -0.5) & (ijk <= np.array(other.shape) - 0.5), axis=1)
    return float(inside.mean())


def assemble_study(reference: Volume, others: Mapping[str, Volume], order: Sequence[str],
                   reference_name: str | None = None, *, register: bool | None = None,
                   ) -> tuple[Volume, list[ChannelRecord]]:
    """Put the channels of a study onto the reference series' grid, in model order.

    Args:
        reference: the series whose grid, geometry and metadata the result keeps (one channel).
        others: channel name -> its series (one channel each), any grid.
        order: the model's channel names; each is ``reference_name`` or a key of ``others``.
        reference_name: the channel ``reference`` is (default: the one name of ``order`` not in ``others``).
        register: None (default): register exactly the channels in another frame of reference (or DICOM
            mixed with NIfTI); False: never (scanner coordinates as acquired, with a warning when the frames
            differ); True: register every other channel.

    Returns:
        The assembled ``Volume`` (``(len(order), I, J, K)`` float32 on the reference grid, the reference's
        affine, series, source paths and meta, ``channel_names = order``, ``meta["channels"]`` = the
        records as dicts, warnings of all channels plus one per registered channel) and the
        :class:`ChannelRecord` s in ``order``.

    Raises:
        IncompatibleInputError: names that do not fit ``order``, or a multi-channel input.
        RegistrationError: a registration failed.
    """
    order = [str(n) for n in order]
    if reference_name is None:
        missing = [n for n in order if n not in others]
        if len(missing) != 1:
            raise IncompatibleInputError(
                f"Cannot tell which channel the reference series is: channels without a series: {missing or 'none'}.")
        reference_name = missing[0]
    extra = sorted(set(others) - set(order))
    absent = [n for n in order if n != reference_name and n not in others]
    if reference_name not in order or extra or absent or len(set(order)) != len(order):
        raise IncompatibleInputError(
            f"The model's channels are {', '.join(order)}; got the reference '{reference_name}'"
            + (f", unknown {', '.join(extra)}" if extra else "") + (f", missing {', '.join(absent)}" if absent else "")
            + ".")
    for name, vol in [(reference_name, reference), *others.items()]:
        if vol.n_channels != 1:
            raise IncompatibleInputError(
                f"The series for channel '{name}' has {vol.n_channels} channels; give one single-channel series per "
                "channel (or one multi-channel file for all of them).")
    from seg_app.core.registration import register_rigid, resample_onto

    arrays: list[np.ndarray] = []
    records: list[ChannelRecord] = []
    warnings: list[str] = list(reference.warnings)
    for name in order:
        if name == reference_name:
            arrays.append(np.asarray(reference.array[0], np.float32))
            records.append(_record(name, reference, "identity"))
            continue
        vol = others[name]
        warnings += [f"{name}: {w}" for w in vol.warnings]
        same = _same_space(reference, vol)
        if register is False or (register is None and same):
            if not same:
                warnings.append(f"Channel '{name}' ({vol.name}) is in another frame of reference than the reference "
                                f"'{reference_name}' ({reference.name}) and was NOT registered: check the alignment.")
            if vol.shape == reference.shape and np.allclose(vol.affine, reference.affine, atol=1e-5):
                arr = np.asarray(vol.array[0], np.float32).copy()
            else:
                if _overlap_fraction(reference, vol) < 0.5:
                    warnings.append(f"Channel '{name}' ({vol.name}) covers little of the reference series' field of "
                                    "view: check that it belongs to this study.")
                arr = resample_onto(reference, np.asarray(vol.array[0], np.float32), vol.affine, None, order=1)
            arrays.append(arr.astype(np.float32, copy=False))
            records.append(_record(name, vol, "same-frame"))
            continue
        reg = register_rigid(reference, vol, hint="name another series with --channel or check the images")
        arrays.append(resample_onto(reference, np.asarray(vol.array[0], np.float32), vol.affine, reg.matrix,
                                    order=1).astype(np.float32, copy=False))
        why = "another frame of reference" if _is_dicom(reference) and _is_dicom(vol) else "a different source type"
        warnings.append(
            f"Channel '{name}' ({vol.name}) has {why} than the reference '{reference_name}' ({reference.name}): "
            f"registered rigidly by mutual information (rotation {reg.rotation_deg:.1f} deg, shift "
            f"{reg.translation_mm:.1f} mm, metric {reg.metric_initial:.3f} -> {reg.metric_final:.3f}); check the alignment.")
        warnings += [f"{name}: {w}" for w in reg.warnings]
        records.append(_record(name, vol, "registered", reg.matrix, reg.as_dict("reference_to_channel_ras")))
    meta = dict(reference.meta)
    meta["channels"] = [r.as_dict() for r in records]
    meta["reference_channel"] = reference_name
    volume = reference.replace(array=np.stack(arrays), channel_names=tuple(order),
                               warnings=tuple(dict.fromkeys(warnings)), meta=meta)
    return volume, records


def channels_from_volume(volume: Volume, order: Sequence[str]) -> tuple[Volume, list[ChannelRecord]]:
    """A multi-channel file (4D NIfTI) as the model's channels, in file order (names from the model).

    Raises:
        IncompatibleInputError: the channel counts differ.
    """
    order = [str(n) for n in order]
    if volume.n_channels != len(order):
        raise IncompatibleInputError(
            f"{volume.name} has {volume.n_channels} channels but the model takes {len(order)} ({', '.join(order)}).")
    records = [_record(n, volume, "identity") for n in order]
    if volume.channel_names and [c.lower() for c in volume.channel_names] != [c.lower() for c in order]:
        mismatch = [(f, m) for f, m in zip(volume.channel_names, order) if sequence_role(f)[0] != sequence_role(m)[0]]
        warn = ([f"The file's channels are named {', '.join(volume.channel_names)}; used in file order as "
                 f"{', '.join(order)}."] if mismatch else [])
    else:
        warn = []
    meta = dict(volume.meta)
    meta["channels"] = [dict(r.as_dict(), file_channel=i) for i, r in enumerate(records)]
    meta["reference_channel"] = order[0]
    return volume.replace(channel_names=tuple(order), meta=meta, warnings=(*volume.warnings, *warn)), records


def load_channels(sources: Mapping[str, Candidate], order: Sequence[str], reference_name: str | None = None,
                  ) -> tuple[Volume, list[ChannelRecord]]:
    """Load the candidate of each channel and :func:`assemble_study` them (reference: ``reference_name``,
    default the first channel of ``order``).

    Raises:
        ScanLoadError: a series cannot be read (the message names the channel).
    """
    order = [str(n) for n in order]
    ref = reference_name or order[0]
    vols: dict[str, Volume] = {}
    for name in order:
        try:
            vols[name] = sources[name].load()
        except ScanLoadError as exc:
            exc.args = (f"Channel '{name}': {exc}", *exc.args[1:])
            raise
    reference = vols.pop(ref)
    return assemble_study(reference, vols, order, ref)


def _unit_range(a: np.ndarray) -> np.ndarray:
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros(a.shape, np.float32)
    lo, hi = np.percentile(finite[:: max(1, finite.size // 200_000)], [1, 99])
    return np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1).astype(np.float32)


def checkerboard(a: np.ndarray, b: np.ndarray, block_vox: int = 8) -> np.ndarray:
    """Two ``(I, J, K)`` images of one grid as a 3D checkerboard (blocks of ``block_vox`` voxels), each scaled
    from its own 1st-99th percentile to 0..1000, to check a registration at the block edges."""
    if a.shape != b.shape:
        raise ValueError(f"checkerboard needs two images of one grid, got {a.shape} and {b.shape}")
    idx = np.indices(a.shape, sparse=True)
    parity = (sum(i // max(1, int(block_vox)) for i in idx) % 2).astype(bool)
    return np.where(parity, _unit_range(b), _unit_range(a)) * 1000.0
