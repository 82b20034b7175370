"""``seg-app predict`` for multi-channel models: ``--channel NAME=PATH`` and study folders matched automatically.

    seg-app predict --model M --channel t1c=PATH --channel t1=PATH ... [--reference NAME] --out DIR
    seg-app predict STUDY_FOLDER --model M [--channel flair=STUDY_FOLDER::SERIES_UID] --out DIR

PATH is a NIfTI file, a DICOM file or folder, or ``FOLDER::SERIES_UID`` (one series of a folder that holds
several). The reference grid (the one the label map, the measurements and the DICOM SEG refer to) is the
``--reference`` channel, else the first ``--channel``, else the model's first channel. Channels not given
are matched to the series (and NIfTI files) of the study folder by :func:`seg_app.core.multiseq.match_channels`;
the mapping is printed, and an unmatched or ambiguous channel stops the scan with one line naming it.
A multi-channel file (4D NIfTI) with the model's channel count is used as is, in file order.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CHANNEL_SYNTAX", "add_channel_arguments", "check_channel_arguments", "load_study", "study_sources",
           "uses_study"]

CHANNEL_SYNTAX = "--channel NAME=PATH (a NIfTI file, a DICOM folder, or FOLDER::SERIES_UID)"


def add_channel_arguments(parser: argparse.ArgumentParser) -> None:
    """``--channel NAME=PATH`` (repeatable) and ``--reference NAME``."""
    g = parser.add_argument_group("multi-sequence studies (docs/MODELS.md)")
    g.add_argument("--channel", action="append", default=[], metavar="NAME=PATH",
                   help="the series for one model input channel (e.g. t1c=scans/t1c.nii.gz, flair=DICOM_DIR, "
                        "t2=DICOM_DIR::SERIES_UID); repeat per channel; channels not given are matched in the study "
                        "folder INPUT")
    g.add_argument("--reference", metavar="NAME",
                   help="the channel whose grid the outputs refer to (default: the first --channel, else the "
                        "model's first channel)")


def _split(value: str) -> tuple[str, str, str | None]:
    """``NAME=PATH[::UID]`` -> (name, path, uid); ValueError with the syntax."""
    name, sep, rest = value.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(f"--channel {value!r}: expected {CHANNEL_SYNTAX}")
    path, sep2, uid = rest.strip().partition("::")
    return name.strip(), path, (uid.strip() or None) if sep2 else None


def _model_name(name: str, order: Sequence[str]) -> str | None:
    """The model channel a user's name means: same name (any case), else the one channel of the same sequence."""
    from seg_app.core.multiseq import sequence_role

    for ch in order:
        if ch.lower() == name.lower():
            return ch
    role = sequence_role(name)[0]
    same = [ch for ch in order if role is not None and sequence_role(ch)[0] == role]
    return same[0] if len(same) == 1 else None


def _given(args: argparse.Namespace, order: Sequence[str]) -> dict[str, Any]:
    """``--channel`` values as model channel name -> Candidate; ValueError (one line) when one is wrong."""
    from seg_app.core.multiseq import Candidate

    out: dict[str, Any] = {}
    for value in args.channel or []:
        name, path, uid = _split(value)
        ch = _model_name(name, order)
        if ch is None:
            raise ValueError(f"--channel {name}: the model has no such input channel; its channels are "
                             f"{', '.join(order)}")
        if ch in out:
            raise ValueError(f"--channel {ch} is given twice")
        if not Path(path).exists():
            raise ValueError(f"--channel {name}: {path} does not exist")
        out[ch] = Candidate(path, uid, description=Path(path).name, summary=path)
    return out


def study_sources(args: argparse.Namespace) -> list[str] | None:
    """The one input of a ``--channel``-only run (the first channel's path), None otherwise."""
    if args.channel and not args.inputs and not args.input_list:
        try:
            _name, path, uid = _split(args.channel[0])
        except ValueError:
            return ["(--channel)"]  # reported by check_channel_arguments
        return [f"{path}::{uid}" if uid else path]
    return None


def check_channel_arguments(args: argparse.Namespace, spec: Any) -> str | None:
    """The one-line problem of ``--channel``/``--reference`` for this model (None when fine)."""
    order = [c.name for c in spec.channels]
    if not args.channel and not args.reference:
        return None
    if args.channel and (len(args.inputs) > 1 or args.input_list):
        return "--channel describes one study: give at most one INPUT (the study folder) with it"
    try:
        given = _given(args, order)
    except ValueError as exc:
        return str(exc)
    if args.reference and _model_name(args.reference, order) is None:
        return f"--reference {args.reference}: the model has no such input channel; its channels are {', '.join(order)}"
    missing = [ch for ch in order if ch not in given]
    if missing and not args.inputs:
        return (f"the model '{spec.name}' also needs the channel(s) {', '.join(missing)}: add "
                + " ".join(f"--channel {ch}=PATH" for ch in missing) + ", or give the study folder as INPUT")
    return None


def uses_study(args: argparse.Namespace, spec: Any) -> bool:
    """Whether inputs are read as studies (``--channel`` given, or the model takes several channels)."""
    return bool(args.channel) or spec.in_channels > 1


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_study(source: str, args: argparse.Namespace, spec: Any, formats: Sequence[str]) -> Any:
    """Read one study for ``spec``'s channels: a ``LoadedScan`` whose volume has the model's channels on the
    reference grid (``meta["channels"]``: the mapping and transforms, written to the measurements JSON).

    Raises:
        IncompatibleInputError: a channel has no series, or several fit (one line naming them and the
            ``--channel`` syntax); ScanLoadError: a series cannot be read; RegistrationError.
    """
    from seg_app.core.errors import IncompatibleInputError, MultipleSeriesError
    from seg_app.core.io import load_scan
    from seg_app.core.multiseq import (
        Candidate, channels_from_volume, load_channels, match_channels, study_candidates,
    )
    from seg_app.predict_io import load_input

    order = [c.name for c in spec.channels]
    given = _given(args, order)
    channel_only = bool(given) and not args.inputs
    src = source.split("::")[0]
    if not given and Path(src).is_file() and src.lower().endswith((".nii", ".nii.gz")):
        volume = load_scan(src)
        if volume.n_channels > 1 or len(order) == 1:
            volume, _records = channels_from_volume(volume, order)
            return _loaded(source, volume, formats, Path(src).name)
    if len(order) == 1 and not given:
        return load_input(src, args.series, formats, source=source)
    mapping: dict[str, Candidate] = dict(given)
    match = None
    if not channel_only:
        missing = [ch for ch in order if ch not in given]
        if missing:
            candidates = [c for c in study_candidates(src)  # a series given for one channel is not matched again
                          if not any(c.same_source(g.path, g.series_uid) for g in given.values())]
            match = match_channels(missing, candidates)
            if not match.complete:
                why = "; ".join(f"{ch}: {reason}" for ch, reason in match.unmatched.items())
                raise IncompatibleInputError(
                    f"cannot match the model's channel(s) {', '.join(match.unmatched)} to a series of {src} ({why}); "
                    f"name them with {CHANNEL_SYNTAX}")
            mapping.update(match.mapping)
    if args.reference:
        reference = _model_name(args.reference, order)
    else:
        reference = next(iter(given)) if given else order[0]
    try:
        volume, records = load_channels(mapping, order, reference)
    except MultipleSeriesError as exc:
        listing = "; ".join(s.summary() for s in exc.series)
        raise IncompatibleInputError(f"{_one_line(exc.args[0]).split(';')[0]}: name the series with "
                                     f"--channel NAME=FOLDER::SERIES_UID ({listing})") from exc
    for rec in records:  # the mapping, said before the model runs
        ch = rec.channel
        print(f"{Path(src).name}: channel {ch} = {rec.series_description or Path(rec.source).name} "
              f"[{mapping[ch].key}] {rec.method}"
              + (f" (matched, confidence {match.confidence[ch]:.1f})" if match and ch in match.mapping else "")
              + (" (reference grid)" if ch == reference else ""), flush=True)
    if match is not None:
        for rec in volume.meta["channels"]:
            if rec["channel"] in match.confidence:
                rec["match_confidence"] = match.confidence[rec["channel"]]
    return _loaded(source, volume, formats, f"the reference channel '{reference}' ({Path(mapping[reference].path).name})")


def _loaded(source: str, volume: Any, formats: Sequence[str], what: str) -> Any:
    """The ``LoadedScan``, without the DICOM outputs when the reference is not DICOM (said before the model runs)."""
    from seg_app.predict_io import LoadedScan

    output_warnings: list[str] = []
    formats = list(formats)
    if not volume.meta.get("SOPInstanceUIDs"):
        for fmt in ("seg", "sr"):
            if fmt in formats:
                output_warnings.append(f"no DICOM {fmt.upper()} written: it needs a DICOM reference series, and "
                                       f"{what} is not DICOM")
        formats = [f for f in formats if f not in ("seg", "sr")]
    return LoadedScan(source, volume, formats, output_warnings)
