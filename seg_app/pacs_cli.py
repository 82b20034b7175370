"""``seg-app pacs``: talk to a configured PACS node.

    seg-app pacs echo NODE [--protocol dimse|dicomweb]
    seg-app pacs find NODE [--patient-id ID] [--name PAT*] [--date 20260101-20261231] [--modality MR]
                           [--accession A] [--no-series] [--json] [--protocol dimse|dicomweb]
    seg-app pacs retrieve pacs://NODE/studies/<StudyUID>[/series/<SeriesUID>] [--protocol ...]
    seg-app pacs nodes

Nodes are read from the PACS settings file (``$SEG_APP_PACS_SETTINGS`` or
``~/.config/seg_app/pacs.json``; see docs/PACS.md). Errors are printed as one line (exit status 2).
To segment a study straight from the PACS: ``seg-app predict pacs://NODE/studies/<UID> --out DIR [--send]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["pacs_command"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seg-app pacs", description="Query and retrieve from a configured PACS node.")
    p.add_argument("--settings", help="PACS settings file (default: $SEG_APP_PACS_SETTINGS or ~/.config/seg_app/pacs.json)")
    p.add_argument("--verbose", action="store_true", help="print tracebacks")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--protocol", choices=["dimse", "dicomweb"], help="default: the node's protocol setting")
        sp.add_argument("--settings", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sp.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    sp = sub.add_parser("echo", help="check that a node answers (C-ECHO / QIDO-RS)")
    sp.add_argument("node")
    common(sp)
    sp = sub.add_parser("find", help="search studies (and list their series)")
    sp.add_argument("node")
    sp.add_argument("--patient-id", default="")
    sp.add_argument("--name", default="", help="patient name, wildcards * and ? (e.g. 'DOE*')")
    sp.add_argument("--date", default="", help="study date YYYYMMDD or range YYYYMMDD-YYYYMMDD")
    sp.add_argument("--modality", default="", help="e.g. MR or CT")
    sp.add_argument("--accession", default="")
    sp.add_argument("--study-uid", default="")
    sp.add_argument("--limit", type=int, default=200)
    sp.add_argument("--no-series", action="store_true", help="studies only (one query fewer per study)")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common(sp)
    sp = sub.add_parser("retrieve", help="download a study or series into the local cache")
    sp.add_argument("url", metavar="pacs://NODE/studies/UID[/series/UID]")
    sp.add_argument("--refresh", action="store_true", help="download again even when cached")
    common(sp)
    sp = sub.add_parser("nodes", help="list the configured nodes")
    sp.add_argument("--settings", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*map(str, r)).rstrip() for r in [header, *rows])


def _fmt_date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def _find(args, settings) -> int:
    from seg_app.core import pacs

    node = settings.node(args.node)
    query = pacs.StudyQuery(patient_id=args.patient_id, patient_name=args.name, date=args.date,
                            modality=args.modality, accession=args.accession, study_uid=args.study_uid, limit=args.limit)
    studies = pacs.find_studies(node, query, args.protocol, settings.local_ae_title)
    series = {} if args.no_series else {
        s.study_uid: pacs.find_series(node, s.study_uid, args.protocol, settings.local_ae_title) for s in studies
    }
    if args.json:
        doc = [{**s.to_dict(), **({"series": [x.to_dict() for x in series[s.study_uid]]} if s.study_uid in series else {}),
                "url": f"pacs://{node.name}/studies/{s.study_uid}"} for s in studies]
        print(json.dumps(doc, indent=2))
        return 0
    if not studies:
        print(f"No studies on '{node.name}' match.")
        return 0
    header = ["patient", "ID", "birth date", "study date", "accession", "modality", "description", "series", "StudyInstanceUID"]
    rows = [[s.patient_name.replace("^", " ").strip(), s.patient_id, _fmt_date(s.birth_date), _fmt_date(s.study_date),
             s.accession, s.modalities, s.description, "" if s.n_series is None else s.n_series, s.study_uid] for s in studies]
    if args.no_series:
        print(_table(rows, header))
    else:
        for s, row in zip(studies, rows):
            print(_table([row], header))
            srows = [[x.number if x.number is not None else "", x.modality, x.description,
                      "" if x.n_instances is None else x.n_instances, x.series_uid] for x in series[s.study_uid]]
            if srows:
                print("\n".join("    " + line for line in _table(srows, ["#", "modality", "series description", "images", "SeriesInstanceUID"]).splitlines()))
            print()
    print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}; segment one with: "
          f"seg-app predict pacs://{node.name}/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>] --out DIR")
    return 0


def _retrieve(args, settings) -> int:
    from seg_app.core import pacs

    loc = pacs.parse_pacs_url(args.url)
    node = settings.node(loc.node)
    folders = pacs.retrieve(settings, node, loc.study_uid, loc.series_uid, protocol=args.protocol, refresh=args.refresh)
    for f in folders:
        print(f)
    return 0


def pacs_command(argv: Sequence[str]) -> int:
    """Run ``seg-app pacs``; returns the exit status (0 ok, 2 error)."""
    args = build_parser().parse_args(list(argv))
    from seg_app.core import pacs

    try:
        settings = pacs.load_settings(args.settings)
        if args.action == "nodes":
            for name, node in sorted(settings.nodes.items()):
                print(f"{name}: " + ", ".join(f"{p} {node.endpoint(p)}" for p in node.protocols())
                      + f" (default {node.default_protocol})")
            return 0
        if args.action == "echo":
            node = settings.node(args.node)
            protocols = [args.protocol] if args.protocol else node.protocols()
            for proto in protocols:
                seconds = pacs.echo(node, proto, settings.local_ae_title)
                print(f"{node.name}: {proto} {node.endpoint(proto)} answered in {seconds * 1000:.0f} ms")
            return 0
        if args.action == "find":
            return _find(args, settings)
        return _retrieve(args, settings)
    except pacs.PacsError as exc:
        if getattr(args, "verbose", False):
            import traceback

            traceback.print_exception(exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
