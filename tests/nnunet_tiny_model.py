"""Train a tiny nnU-Net v2 model with nnU-Net's own pipeline (run by tests/test_nnunet_model.py).

    nnUNet_raw=R/raw nnUNet_preprocessed=R/pre nnUNet_results=R/res python tests/nnunet_tiny_model.py R

writes 5 synthetic training cases (32^3, 2 channels T1/FLAIR, labels 0/1/2) in nnU-Net's raw format,
runs nnU-Net's fingerprint extraction, planner and preprocessing (3d_fullres only), trains fold 0 with
nnU-Net's ``nnUNetTrainer`` for one epoch on the CPU with 2 training and 1 validation iterations, then predicts
a sixth case with nnU-Net's own ``nnUNetPredictor`` from the files (mirroring off and on): the references
our app must reproduce. ``R/case.nii.gz`` is that case as one 4D NIfTI, ``R/test/case_000{0,1}.nii.gz``
as nnU-Net's per-channel files; ``R/timings.json`` the time of each step.

nnU-Net starts its fingerprint and preprocessing workers with the ``spawn`` start method; each would
import nnU-Net again (~10 s of CPU each), so here they are forked instead (the work is the same).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

DATASET_ID = 42
DATASET = "Dataset042_Tiny"
SHAPE = (32, 32, 32)
AFFINE = np.array([[-1.2, 0, 0, 20.0], [0, 1.0, 0, -10.0], [0, 0, 1.0, 5.0], [0, 0, 0, 1]])
CHANNELS = {"0": "T1", "1": "FLAIR"}
LABELS = {"background": 0, "oedema": 1, "core": 2}


def make_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two channels and a label map: a sphere of oedema (1) around a core (2), noisy intensities."""
    grid = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    c = rng.uniform(11, 21, 3)
    r = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grid, c)))
    lab = np.zeros(SHAPE, np.uint8)
    lab[r < rng.uniform(7, 9)] = 1
    lab[r < rng.uniform(3, 4.5)] = 2
    t1 = (100 + 50 * (lab == 1) + 120 * (lab == 2) + rng.normal(0, 10, SHAPE)).astype(np.float32)
    flair = (80 + 90 * (lab > 0) + rng.normal(0, 10, SHAPE)).astype(np.float32)
    return t1, flair, lab


def main(root: str) -> None:
    import multiprocessing

    get_context = multiprocessing.get_context
    multiprocessing.get_context = lambda method=None: get_context("fork" if method == "spawn" else method)
    import nibabel as nib

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    raw = os.path.join(os.environ["nnUNet_raw"], DATASET)
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(raw, sub), exist_ok=True)
    os.makedirs(os.path.join(root, "test"), exist_ok=True)
    rng = np.random.default_rng(0)
    n = 5
    for i in range(n + 1):
        t1, flair, lab = make_case(rng)
        if i < n:
            nib.save(nib.Nifti1Image(t1, AFFINE), os.path.join(raw, "imagesTr", f"tiny_{i:03d}_0000.nii.gz"))
            nib.save(nib.Nifti1Image(flair, AFFINE), os.path.join(raw, "imagesTr", f"tiny_{i:03d}_0001.nii.gz"))
            nib.save(nib.Nifti1Image(lab, AFFINE), os.path.join(raw, "labelsTr", f"tiny_{i:03d}.nii.gz"))
        else:
            nib.save(nib.Nifti1Image(t1, AFFINE), os.path.join(root, "test", "case_0000.nii.gz"))
            nib.save(nib.Nifti1Image(flair, AFFINE), os.path.join(root, "test", "case_0001.nii.gz"))
            nib.save(nib.Nifti1Image(np.stack([t1, flair], -1), AFFINE), os.path.join(root, "case.nii.gz"))
            nib.save(nib.Nifti1Image(lab, AFFINE), os.path.join(root, "case_truth.nii.gz"))
    with open(os.path.join(raw, "dataset.json"), "w") as f:
        json.dump({"channel_names": CHANNELS, "labels": LABELS, "numTraining": n, "file_ending": ".nii.gz",
                   "name": "Tiny"}, f)

    import torch

    torch.set_num_threads(1)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

    times["import"] = time.perf_counter() - t0
    os.environ["nnUNet_n_proc_DA"] = "1"  # the planner sets torch's threads from it
    pre = os.path.join(os.environ["nnUNet_preprocessed"], DATASET)
    if not os.path.isfile(os.path.join(pre, "nnUNetPlans_3d_fullres", f"tiny_{n - 1:03d}.pkl")):  # reruns by hand
        extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True, verbose=False,
                             show_progress_bar=False)
        plan_experiments([DATASET_ID])
        preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(1,), show_progress_bar=False)
    times["plan_and_preprocess"] = time.perf_counter() - t0 - sum(times.values())

    from nnunetv2.run.run_training import get_trainer_from_args

    os.environ["nnUNet_n_proc_DA"] = "0"  # augmentation in this process (no workers)
    # nnU-Net's default trainer, cut to one epoch of 2 + 1 iterations (its nnUNetTrainer_1epoch variant would do
    # 250 + 50; and nnU-Net finds variants by importing every trainer module, the Primus ones need torchvision)
    folder = os.path.join(os.environ["nnUNet_results"], DATASET, "nnUNetTrainer__nnUNetPlans__3d_fullres")
    if not os.path.isfile(os.path.join(folder, "fold_0", "checkpoint_final.pth")):
        trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", 0, "nnUNetTrainer", device=torch.device("cpu"))
        trainer.num_epochs = 1
        trainer.num_iterations_per_epoch = 2
        trainer.num_val_iterations_per_epoch = 1
        trainer.run_training()
    times["train"] = time.perf_counter() - t0 - sum(times.values())

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    case = [[os.path.join(root, "test", "case_0000.nii.gz"), os.path.join(root, "test", "case_0001.nii.gz")]]
    for name, mirroring in (("ref", False), ("ref_mirror", True)):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        predictor = nnUNetPredictor(use_mirroring=mirroring, device=torch.device("cpu"), allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(folder, use_folds=(0,), checkpoint_name="checkpoint_final.pth")
        predictor.predict_from_files_sequential(case, [os.path.join(root, name, "case")], save_probabilities=False,
                                                overwrite=True)
    times["reference_predictions"] = time.perf_counter() - t0 - sum(times.values())
    times["total"] = time.perf_counter() - t0
    times["cpu"] = time.process_time() - cpu0
    with open(os.path.join(root, "timings.json"), "w") as f:
        json.dump({"model": folder, **times}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
