"""Make a trained run's checkpoint the bundled default model (weights unchanged).

    python scripts/bundle_default_model.py runs/stage6_cal/model.pt

Writes ``seg_app/models/default_brain_tumour.pt`` with the model's name, version and the exact commands
that reproduce it in ``spec.training["reproduce"]``; then record the independent benchmark into it with
``python benchmarks/bench_generalisation.py --record`` (see the model card).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seg_app.core.spec import default_model_path, load_checkpoint, save_checkpoint  # noqa: E402

VERSION = "2.3.1"
REPRODUCE = [
    "seg-train synth --out data/synth2 --cases 400 --test-cases 20 --seed 1 --workers 2 --style 1",
    "seg-train train --config training/configs/default_brain_tumour_stage1.yaml --data data/synth2 --out runs/stage1"
    "   # keep the last.pt written after epoch 8 (see the config's header)",
    "seg-train train --config training/configs/default_brain_tumour.yaml --data data/synth2 --out runs/stage2"
    " --init-from runs/stage1/last.pt",
    "seg-train train --config training/configs/default_brain_tumour_stage3.yaml --data data/synth2 --out runs/stage3"
    " --init-from runs/stage2/last.pt",
    "seg-train train --config training/configs/default_brain_tumour_stage4.yaml --data data/synth2 --out runs/stage4"
    " --init-from runs/stage3/best.pt",
    "seg-train synth --out data/synth3 --cases 400 --test-cases 20 --seed 11 --workers 2 --style 2",
    "seg-train train --config training/configs/default_brain_tumour_stage5.yaml --data data/synth3 --out runs/stage5"
    " --init-from runs/stage4/last.pt",
    "seg-train synth --out data/synth4 --cases 320 --seed 21 --workers 2 --style 3",
    "seg-train train --config training/configs/default_brain_tumour_stage6.yaml --data data/synth4 --out runs/stage6"
    " --init-from runs/stage5/last.pt",
    "seg-train synth --out data/synth4_sel --cases 0 --test-cases 40 --seed 779 --workers 2 --style 3"
    "   # the selection set (never trained on, never benchmarked)",
    "seg-train calibrate --model runs/stage6/last.pt --data data/synth4_sel --out runs/stage6_cal/model.pt",
    "python scripts/bundle_default_model.py runs/stage6_cal/model.pt",
    "python benchmarks/bench_generalisation.py --record",
]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    ckpt = load_checkpoint(argv[0])
    training = dict(ckpt.spec.training, reproduce=REPRODUCE)
    spec = ckpt.spec.with_updates(name="default_brain_tumour", version=VERSION, training=training)
    out = save_checkpoint(default_model_path(), spec, ckpt.state_dict, None)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
