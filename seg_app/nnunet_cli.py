"""Command-line options for nnU-Net v2 model folders, shared by ``seg-app predict`` and ``followup``.

``--model`` may name an nnU-Net v2 trained-model folder (``.../Trainer__Plans__Configuration``);
``--folds 0,1`` and ``--checkpoint checkpoint_best.pth`` choose what of it is used (default: every fold
with ``checkpoint_final.pth``, as ``nnUNetv2_predict`` does). See docs/MODELS.md.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_nnunet_arguments", "segmenter_from_args"]


def add_nnunet_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--folds``/``--checkpoint`` (and ``--trust-model`` unless the parser has it already)."""
    g = parser.add_argument_group("nnU-Net v2 model folders (docs/MODELS.md)")
    g.add_argument("--folds", metavar="LIST",
                   help="folds to ensemble, e.g. 0,1 or all (default: every fold with the checkpoint)")
    g.add_argument("--checkpoint", metavar="NAME",
                   help="checkpoint file in each fold folder (default: checkpoint_final.pth; or checkpoint_best.pth)")
    if not any("--trust-model" in a.option_strings for a in parser._actions):
        g.add_argument("--trust-model", action="store_true",
                       help="load a MONAI bundle's TorchScript model.ts (it is code); only for models you trust")


def segmenter_from_args(args: argparse.Namespace, model: Any, device: str, **kwargs: Any) -> Any:
    """The segmenter for ``model`` (our checkpoint, the bundled model when None, or an nnU-Net folder) with
    the command line's ``--tta``/``--folds``/``--checkpoint``/``--trust-model``; ``kwargs`` go to our
    ``Segmenter`` only."""
    from seg_app.core.nnunet_model import make_segmenter, parse_folds

    return make_segmenter(
        model, device=device, tta=bool(getattr(args, "tta", False)),
        folds=parse_folds(getattr(args, "folds", None)), checkpoint=getattr(args, "checkpoint", None),
        trust_model=bool(getattr(args, "trust_model", False)), **kwargs,
    )
