"""``seg-app models``: the bundled model, the recently opened ones and their cards; ``--choose PATH``.

    seg-app models [--json]          one block per model (name, version, kind, path, inputs, labels, spacing,
                                     training data, licence; "(chosen)" marks the GUI's model)
    seg-app models --choose PATH     remember PATH as the chosen model (the GUI starts with it)

``seg-app predict`` without ``--model`` always uses the bundled model, whatever is chosen here.
Errors are one line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["models_command"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seg-app models",
        description="List the bundled model and the recently opened ones with their cards; choose the model the "
                    "desktop app starts with. (seg-app predict without --model always uses the bundled model.)")
    p.add_argument("--json", action="store_true", help="machine-readable output (a JSON list, with each card)")
    p.add_argument("--choose", metavar="PATH",
                   help="remember PATH (checkpoint, MONAI bundle or nnU-Net folder) as the chosen model")
    p.add_argument("--verbose", action="store_true", help="print tracebacks")
    return p


def models_command(argv: Sequence[str]) -> int:
    """List (or choose) models; exit 2 with one line for an unreadable or unknown model."""
    from seg_app.core import SegAppError
    from seg_app.core.model_registry import describe_model, list_models, registry_path, remember_model

    args = _parser().parse_args(argv)
    try:
        if args.choose:
            entry = describe_model(args.choose)
            remember_model(entry.path, chosen=True)
            print(f"chosen: {entry.name} v{entry.version} ({entry.kind}) {entry.path}")
            return 0
        entries = list_models()
    except (SegAppError, OSError) as exc:
        if args.verbose:
            import traceback

            traceback.print_exception(exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=1))
    else:
        print("\n\n".join(e.block() for e in entries) if entries else "No models (the bundled model is missing).")
        print(f"\n(registry: {registry_path()})")
    return 0
