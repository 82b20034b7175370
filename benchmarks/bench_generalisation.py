"""Benchmark: how well a segmentation model generalises to independently generated brain-tumour cases.

    python benchmarks/bench_generalisation.py [--model PATH] [--cases N] [--json OUT.json]
        [--save-cases DIR] [--png DIR] [--domains a,b,...] [--quick] [--seed S] [--device auto]

Cases come from :mod:`generalisation_cases` (next to this file), a generator written separately from
the training data generator: the MNI152 2009 template anatomy, its own tumour-growth and mass-effect
model, T1c / T2 / FLAIR-like contrasts, thick slices, skull-on images, small foci, low SNR and healthy
brains (see that module's docstring). Every case is segmented with the app's own pipeline
(``seg_app.core.inference.Segmenter``), exactly as ``seg-app predict`` would.

Reported per domain: Dice of the domain's region (tumour core "TC" for T1c-like images, whole tumour
"WT" for T2/FLAIR-like), lesion-wise sensitivity (ground-truth components >= 0.5 mL hit by any predicted
voxel), lesion-wise precision (predicted components >= 0.2 mL touching the ground truth), and the
false-positive volume (predicted components that touch no ground truth; for healthy brains: everything
predicted). Also: real MR files shipped with pydicom / pydicom-data (none of them a brain-tumour scan,
several not even a head) as false-positive checks.

Targets (printed with PASS/FAIL; the benchmark reports, it does not gate: exit status 0):
mean Dice over lesion domains >= 0.85, worst lesion domain >= 0.75, FP <= 0.5 mL per healthy brain,
lesion sensitivity (>= 0.5 mL) >= 0.90.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from generalisation_cases import DOMAINS, BenchCase, make_case  # noqa: E402

TARGETS = {
    "mean_dice": 0.85,
    "worst_domain_dice": 0.75,
    "max_fp_ml_healthy": 0.5,
    "lesion_sensitivity": 0.90,
}
MIN_GT_LESION_ML = 0.5
MIN_PRED_LESION_ML = 0.2
#: Real MR files shipped with pydicom (test files) and pydicom-data; none shows a brain tumour.
PACKAGE_MR_FILES = ("MR_small.dcm", "emri_small.dcm", "MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm")
_STRUCT26 = np.ones((3, 3, 3), dtype=bool)


# ---- region mapping ----------------------------------------------------------------------------
def region_label_values(label_specs: Sequence[Any]) -> dict[str, tuple[int, ...] | None]:
    """Which predicted label values make up each BraTS region, for any model's label list.

    ``label_specs``: the model's ``spec.labels`` (objects with ``value`` and ``name``; value 0 is
    background). Returns ``{"TC": values, "WT": values, "ET": values or None}``:

    * BraTS-style model -- values 1, 2, 3 all present (1 necrotic/non-enhancing core, 2 oedema,
      3 enhancing), or names saying "oedema"/"edema"/"enhancing": TC = {1, 3}, WT = {1, 2, 3}, ET = {3}
      (by name when the names say so: oedema values are excluded from TC, enhancing ones form ET).
    * Binary model (one foreground label, e.g. "tumour") or any other label set: every foreground
      value counts as tumour, so TC = WT = all foreground, and ET is None (not predicted).
    """
    fg = [(int(s.value), str(s.name).lower()) for s in label_specs if int(s.value) != 0]
    values = tuple(sorted(v for v, _ in fg))

    def is_oedema(name: str) -> bool:
        return "oedema" in name or "edema" in name

    def is_enhancing(name: str) -> bool:
        n = name.replace("-", "").replace("_", "").replace(" ", "")
        return "enhanc" in n and "nonenhanc" not in n

    named_oed = tuple(v for v, n in fg if is_oedema(n))
    named_et = tuple(v for v, n in fg if is_enhancing(n))
    if named_oed or named_et:
        tc = tuple(v for v in values if v not in named_oed)
        return {"TC": tc, "WT": values, "ET": named_et or None}
    if {1, 2, 3} <= set(values):  # BraTS values without telling names
        return {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)}
    return {"TC": values, "WT": values, "ET": None}


def region_mask(labels: np.ndarray, values: Sequence[int] | None) -> np.ndarray:
    """``seg_app.core.regions.region_mask``, with None (a region the model does not predict) = empty."""
    from seg_app.core.regions import region_mask as _mask

    return _mask(labels, tuple(values)) if values else np.zeros(labels.shape, dtype=bool)


#: Ground truth regions (BraTS labels of the generated cases).
GT_REGIONS = {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)}


# ---- metrics ---------------------------------------------------------------------------------
def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty, 0.0 when exactly one is."""
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    s = int(p.sum()) + int(g.sum())
    if s == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / s


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected components and their voxel counts (index 0 = background)."""
    lab, n = ndi.label(mask, structure=_STRUCT26)
    return lab, np.bincount(lab.ravel(), minlength=n + 1)


def lesion_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    voxel_ml: float,
    min_gt_ml: float = MIN_GT_LESION_ML,
    min_pred_ml: float = MIN_PRED_LESION_ML,
) -> dict[str, Any]:
    """Lesion-wise detection of boolean masks (26-connected components).

    * a ground-truth lesion (component >= ``min_gt_ml``) is detected when any predicted voxel lies in it;
    * a predicted lesion (component >= ``min_pred_ml``) is a true positive when it touches any
      ground-truth voxel (of any size);
    * ``fp_ml``: volume of all predicted components (any size) that touch no ground truth.

    ``sensitivity`` is None without ground-truth lesions, ``precision`` None without predicted ones.
    """
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    glab, gcount = _components(g)
    plab, pcount = _components(p)
    big_gt = np.flatnonzero(gcount * voxel_ml >= min_gt_ml)
    big_gt = big_gt[big_gt > 0]
    hit_gt = np.unique(glab[p & g])
    detected = int(np.isin(big_gt, hit_gt).sum())
    touching = np.unique(plab[p & g])
    touching = touching[touching > 0]
    pred_ids = np.arange(1, len(pcount))
    big_pred = pred_ids[pcount[1:] * voxel_ml >= min_pred_ml]
    tp_pred = int(np.isin(big_pred, touching).sum())
    fp_ids = pred_ids[~np.isin(pred_ids, touching)]
    fp_ml = float(pcount[fp_ids].sum() * voxel_ml)
    return {
        "n_gt": int(len(big_gt)),
        "n_detected": detected,
        "n_pred": int(len(big_pred)),
        "n_pred_tp": tp_pred,
        "sensitivity": detected / len(big_gt) if len(big_gt) else None,
        "precision": tp_pred / len(big_pred) if len(big_pred) else None,
        "fp_ml": fp_ml,
        "gt_lesion_ml": [round(float(gcount[i] * voxel_ml), 3) for i in big_gt],
        "missed_lesion_ml": [round(float(gcount[i] * voxel_ml), 3) for i in big_gt if i not in set(hit_gt.tolist())],
    }


def score_case(case: BenchCase, pred_labels: np.ndarray, label_specs: Sequence[Any]) -> dict[str, Any]:
    """All metrics of one case (prediction on the case's grid)."""
    vox_ml = case.voxel_volume_ml
    regions = region_label_values(label_specs)
    fg = pred_labels > 0
    out: dict[str, Any] = {"pred_ml": float(fg.sum() * vox_ml)}
    reg = case.region_for_dice
    if reg is None:
        out.update({"dice": None, "fp_ml": out["pred_ml"]})
        lm = lesion_metrics(fg, np.zeros_like(fg), vox_ml)
        out["lesion"] = lm
        return out
    gt = region_mask(case.labels, GT_REGIONS[reg])
    pr = region_mask(pred_labels, regions[reg])
    out["dice"] = dice(pr, gt)
    out["gt_ml"] = float(gt.sum() * vox_ml)
    out["pred_region_ml"] = float(pr.sum() * vox_ml)
    lm = lesion_metrics(pr, gt, vox_ml)
    out["lesion"] = lm
    # false positives: predicted tumour (any label) not touching the ground-truth tumour (any label)
    out["fp_ml"] = lesion_metrics(fg, case.labels > 0, vox_ml)["fp_ml"]
    if regions["ET"] is not None:
        out["dice_ET"] = dice(region_mask(pred_labels, regions["ET"]), region_mask(case.labels, GT_REGIONS["ET"]))
    if reg != "WT":
        out["dice_WT"] = dice(region_mask(pred_labels, regions["WT"]), case.labels > 0)
    return out


# ---- pictures --------------------------------------------------------------------------------
def save_montage(path: Path, image: np.ndarray, affine: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, title: str, gt_outer: np.ndarray | None = None) -> None:
    """Axial / coronal / sagittal planes (RAS display) through the largest GT lesion, else the largest
    predicted one, else the centre: image in grey, GT contour green (outer GT region yellow), prediction red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    canon = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(("R", "A", "S")))

    def reorient(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else nib.orientations.apply_orientation(np.asarray(a), canon)

    a = reorient(image)
    g, pr, go = reorient(gt), reorient(pred), reorient(gt_outer)
    zooms = np.zeros(3)
    zooms[ornt[:, 0].astype(int)] = np.linalg.norm(affine[:3, :3], axis=0)  # input axis i -> RAS axis ornt[i, 0]
    centre = np.array(a.shape) // 2
    for m in (g, pr):
        if m is not None and m.any():
            lab, count = _components(m)
            count[0] = 0
            centre = np.round(ndi.center_of_mass(lab == int(np.argmax(count)))).astype(int)
            break
    nz = a[a > 0]
    lo, hi = (np.percentile(nz, [0.5, 99.5]) if nz.size else (0.0, 1.0))
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    planes = [("axial", 2, (0, 1)), ("coronal", 1, (0, 2)), ("sagittal", 0, (1, 2))]
    for ax, (name, fixed, (u, v)) in zip(axes, planes):
        sl = [slice(None)] * 3
        sl[fixed] = int(np.clip(centre[fixed], 0, a.shape[fixed] - 1))
        extent = (-0.5 * zooms[u], (a.shape[u] - 0.5) * zooms[u], -0.5 * zooms[v], (a.shape[v] - 0.5) * zooms[v])
        ax.imshow(a[tuple(sl)].T, origin="lower", cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
        for m, colour, lw in ((go, "yellow", 0.8), (g, "lime", 1.2), (pr, "red", 1.2)):
            if m is not None and m[tuple(sl)].any():
                xs = (np.arange(a.shape[u])) * zooms[u]
                ys = (np.arange(a.shape[v])) * zooms[v]
                ax.contour(xs, ys, m[tuple(sl)].T.astype(np.float32), levels=[0.5], colors=colour, linewidths=lw)
        ax.set_title(f"{name} {sl[fixed]}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title + "\n(grey: image; green: ground truth region; yellow: ground-truth whole tumour; red: prediction)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---- package MR files ------------------------------------------------------------------------
def package_mr_paths() -> list[tuple[str, str | None, str]]:
    """(name, path or None, where) for the real MR files shipped by pydicom / pydicom-data."""
    out = []
    try:
        import pydicom.data as pdata
    except Exception as exc:  # noqa: BLE001
        return [(n, None, f"pydicom.data unavailable: {exc}") for n in PACKAGE_MR_FILES]
    for name in PACKAGE_MR_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                path = pdata.get_testdata_file(name, download=False)
            except TypeError:  # older pydicom without ``download``
                path = pdata.get_testdata_file(name)
            except Exception as exc:  # noqa: BLE001
                out.append((name, None, f"not available: {exc}"))
                continue
        where = "pydicom-data" if path and "data_store" in str(path) else "pydicom test files"
        out.append((name, str(path) if path else None, where if path else "not installed"))
    return out


def run_package_mr(seg: Any) -> list[dict[str, Any]]:
    from seg_app.core.errors import SegAppError
    from seg_app.core.io import load_scan

    rows = []
    for name, path, where in package_mr_paths():
        row: dict[str, Any] = {"file": name, "source": where}
        if path is None:
            row["error"] = where
            rows.append(row)
            continue
        # alone in a folder: load_scan would otherwise gather same-series files lying beside it
        with tempfile.TemporaryDirectory() as d:
            q = Path(d) / name
            shutil.copy(path, q)
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    vol = load_scan(q)
                    res = seg.segment(vol, return_probabilities=False)
                pred = res.labels.array[0]
                row.update({
                    "shape": list(vol.shape),
                    "spacing_mm": [round(s, 3) for s in vol.spacing],
                    "pred_ml": float((pred > 0).sum() * vol.voxel_volume_ml),
                    "pred_voxels": int((pred > 0).sum()),
                    "warnings": list(vol.warnings) + list(res.warnings),
                })
            except SegAppError as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            row["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    return rows


# ---- main ------------------------------------------------------------------------------------
def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def summarise(cases: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    per_domain: dict[str, Any] = {}
    for dom in DOMAINS:
        rows = [c for c in cases if c["domain"] == dom]
        if not rows:
            continue
        dices = [c["dice"] for c in rows if c["dice"] is not None]
        n_gt = sum(c["lesion"]["n_gt"] for c in rows)
        n_det = sum(c["lesion"]["n_detected"] for c in rows)
        n_pred = sum(c["lesion"]["n_pred"] for c in rows)
        n_tp = sum(c["lesion"]["n_pred_tp"] for c in rows)
        fps = [c["fp_ml"] for c in rows]
        per_domain[dom] = {
            "n": len(rows),
            "region": rows[0]["region"],
            "dice_mean": statistics.fmean(dices) if dices else None,
            "dice_sd": statistics.pstdev(dices) if len(dices) > 1 else (0.0 if dices else None),
            "dice_min": min(dices) if dices else None,
            "lesions_gt": n_gt,
            "lesions_detected": n_det,
            "sensitivity": n_det / n_gt if n_gt else None,
            "pred_lesions": n_pred,
            "pred_lesions_tp": n_tp,
            "precision": n_tp / n_pred if n_pred else None,
            "fp_ml_mean": statistics.fmean(fps),
            "fp_ml_max": max(fps),
            "seconds_segment_mean": statistics.fmean(c["seconds_segment"] for c in rows),
            "seconds_generate_mean": statistics.fmean(c["seconds_generate"] for c in rows),
        }
    lesion_doms = {d: v for d, v in per_domain.items() if v["region"] is not None and v["dice_mean"] is not None}
    n_gt = sum(v["lesions_gt"] for v in lesion_doms.values())
    n_det = sum(v["lesions_detected"] for v in lesion_doms.values())
    summary: dict[str, Any] = {
        "mean_dice": statistics.fmean(v["dice_mean"] for v in lesion_doms.values()) if lesion_doms else None,
        "worst_domain": min(lesion_doms, key=lambda d: lesion_doms[d]["dice_mean"]) if lesion_doms else None,
        "max_fp_ml_healthy": per_domain["healthy"]["fp_ml_max"] if "healthy" in per_domain else None,
        "lesion_sensitivity": n_det / n_gt if n_gt else None,
        "lesions_gt": n_gt,
        "lesions_detected": n_det,
    }
    summary["worst_domain_dice"] = lesion_doms[summary["worst_domain"]]["dice_mean"] if summary["worst_domain"] else None
    verdict = {}
    for key, target in TARGETS.items():
        val = summary.get(key)
        if val is None:
            verdict[key] = {"target": target, "value": None, "pass": None}
            continue
        ok = val <= target if key.startswith("max_fp") else val >= target
        verdict[key] = {"target": target, "value": val, "pass": bool(ok)}
    summary["targets"] = verdict
    return per_domain, summary


def record_in_checkpoint(path: Path, per_domain: dict[str, Any], summary: dict[str, Any], seed: int, n_cases: int) -> None:
    """Write the benchmark result into the checkpoint's ``metrics["generalisation"]`` (atomic, weights kept)."""
    from seg_app.core.spec import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(path)

    def r(v: Any) -> Any:
        return round(v, 4) if isinstance(v, float) else v

    metrics = dict(ckpt.spec.metrics)
    metrics["generalisation"] = {
        "benchmark": "benchmarks/bench_generalisation.py (independent generator)",
        "seed": seed,
        "cases_per_domain": n_cases,
        "per_domain": {d: {k: r(v[k]) for k in ("region", "n", "dice_mean", "dice_sd", "sensitivity", "precision", "fp_ml_max")}
                       for d, v in per_domain.items()},
        "summary": {k: r(v) for k, v in summary.items() if k != "targets"},
        "targets_met": {k: v["pass"] for k, v in summary["targets"].items()},
    }
    save_checkpoint(path, ckpt.spec.with_updates(metrics=metrics), ckpt.state_dict, ckpt.training_state)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--cases", type=int, default=4, help="cases per domain (default 4)")
    ap.add_argument("--quick", action="store_true", help="one case per domain")
    ap.add_argument("--domains", default=None, help=f"comma-separated subset of: {', '.join(DOMAINS)}")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    ap.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"), help="Segmenter backend (default auto)")
    ap.add_argument("--json", default=None, help="write all numbers to this JSON file")
    ap.add_argument("--save-cases", default=None, help="write image / labels / prediction NIfTIs here")
    ap.add_argument("--png", default=None, help="write one PNG montage per case here")
    ap.add_argument("--no-package-mr", action="store_true", help="skip the pydicom MR files")
    ap.add_argument("--record", action="store_true",
                    help="store the per-domain table and summary in the checkpoint's metrics (weights unchanged)")
    ap.add_argument("--voxel-mm", type=float, default=1.0, help=argparse.SUPPRESS)  # coarser cases, for smoke tests only
    args = ap.parse_args(argv)

    import torch

    from seg_app.core.inference import Segmenter
    from seg_app.core.volume import Volume

    domains = DOMAINS if not args.domains else tuple(d.strip() for d in args.domains.split(",") if d.strip())
    bad = [d for d in domains if d not in DOMAINS]
    if bad:
        ap.error(f"unknown domain(s) {', '.join(bad)}; choose from {', '.join(DOMAINS)}")
    n_cases = 1 if args.quick else args.cases

    seg = Segmenter(args.model, device=args.device, backend=args.backend)
    spec = seg.spec
    regions = region_label_values(spec.labels)
    model_path = str(args.model) if args.model else "bundled default"
    print(f"model: {spec.name} ({model_path}), labels {[(l.value, l.name) for l in spec.labels]}, region values {regions}")
    print(f"device {seg.device}, torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")

    save_dir = Path(args.save_cases) if args.save_cases else None
    png_dir = Path(args.png) if args.png else None
    cases: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for dom in domains:
        for i in range(n_cases):
            t0 = time.perf_counter()
            case = make_case(dom, i, args.seed, voxel_mm=args.voxel_mm)
            t_gen = time.perf_counter() - t0
            t1 = time.perf_counter()
            res = seg.segment(Volume(array=case.image[None], affine=case.affine, modality="MR"), return_probabilities=False)
            t_seg = time.perf_counter() - t1
            pred = np.asarray(res.labels.array[0])
            row = {
                "name": case.name,
                "domain": dom,
                "region": case.region_for_dice,
                "shape": list(case.image.shape),
                "spacing_mm": [round(s, 3) for s in case.spacing],
                "seconds_generate": round(t_gen, 2),
                "seconds_segment": round(t_seg, 2),
                "backend": res.device,
                "meta": case.meta,
                "lesions": case.lesions,
                "segment_warnings": list(res.warnings),
            }
            row.update(score_case(case, pred, spec.labels))
            cases.append(row)
            lm = row["lesion"]
            print(
                f"  {case.name:18s} dice {_fmt(row['dice'])}  lesions {lm['n_detected']}/{lm['n_gt']} found, "
                f"{lm['n_pred_tp']}/{lm['n_pred']} pred true  FP {row['fp_ml']:.2f} mL  "
                f"GT {row.get('gt_ml', 0.0):.1f} mL pred {row['pred_ml']:.1f} mL  ({t_gen:.1f} s gen, {t_seg:.1f} s seg)",
                flush=True,
            )
            if save_dir is not None:
                import nibabel as nib

                save_dir.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(case.image, case.affine), save_dir / f"{case.name}_image.nii.gz")
                nib.save(nib.Nifti1Image(case.labels, case.affine), save_dir / f"{case.name}_labels.nii.gz")
                nib.save(nib.Nifti1Image(pred.astype(np.uint8), case.affine), save_dir / f"{case.name}_pred.nii.gz")
            if png_dir is not None:
                reg = case.region_for_dice
                gt = region_mask(case.labels, GT_REGIONS[reg]) if reg else None
                pr = region_mask(pred, regions[reg]) if reg else pred > 0
                title = f"{case.name}  {case.meta['contrast']}  region {reg or '-'}  Dice {_fmt(row['dice'])}  FP {row['fp_ml']:.2f} mL"
                save_montage(png_dir / f"{case.name}.png", case.image, case.affine, gt, pr, title, gt_outer=(case.labels > 0) if reg == "TC" else None)

    per_domain, summary = summarise(cases)
    package_rows = [] if args.no_package_mr else run_package_mr(seg)

    # ---- report ----
    print()
    print(f"{'domain':14s} {'n':>2s} {'region':6s} {'Dice mean+-sd':>15s} {'sens':>6s} {'prec':>6s} {'FP mL':>7s} {'s/case':>7s}")
    for dom, v in per_domain.items():
        dm = "-" if v["dice_mean"] is None else f"{v['dice_mean']:.3f}+-{v['dice_sd']:.3f}"
        print(
            f"{dom:14s} {v['n']:2d} {v['region'] or '-':6s} {dm:>15s} {_fmt(v['sensitivity'], '.2f'):>6s} "
            f"{_fmt(v['precision'], '.2f'):>6s} {v['fp_ml_mean']:7.2f} {v['seconds_segment_mean']:7.1f}"
        )
    if package_rows:
        print("\nreal MR files shipped with pydicom / pydicom-data (no brain tumour in any):")
        for r in package_rows:
            if "error" in r:
                print(f"  {r['file']:36s} not segmented: {r['error']}")
            else:
                print(f"  {r['file']:36s} {'x'.join(map(str, r['shape'])):>14s}  predicted {r['pred_ml']:.3f} mL ({r['pred_voxels']} voxels)")
    print("\nsummary:")
    print(f"  mean Dice over lesion domains: {_fmt(summary['mean_dice'])}")
    print(f"  worst lesion domain: {summary['worst_domain']} ({_fmt(summary['worst_domain_dice'])})")
    print(f"  max FP per healthy brain: {_fmt(summary['max_fp_ml_healthy'], '.2f')} mL")
    print(f"  lesion sensitivity (>= {MIN_GT_LESION_ML} mL): {_fmt(summary['lesion_sensitivity'], '.2f')} ({summary['lesions_detected']}/{summary['lesions_gt']})")
    print("targets:")
    names = {
        "mean_dice": "mean Dice >= 0.85",
        "worst_domain_dice": "worst domain Dice >= 0.75",
        "max_fp_ml_healthy": "FP <= 0.5 mL per healthy brain",
        "lesion_sensitivity": "lesion sensitivity >= 0.90",
    }
    for key, v in summary["targets"].items():
        verdict = "n/a" if v["pass"] is None else ("PASS" if v["pass"] else "FAIL")
        print(f"  {names[key]:34s} {_fmt(v['value'])}  {verdict}")
    total = time.perf_counter() - t_all
    print(f"total {total:.0f} s for {len(cases)} cases")

    if args.record:
        from seg_app.core.spec import default_model_path

        target = Path(args.model) if args.model else default_model_path()
        record_in_checkpoint(target, per_domain, summary, args.seed, n_cases)
        print(f"recorded in {target}")
    if args.json:
        out = {
            "benchmark": "generalisation",
            "seed": args.seed,
            "cases_per_domain": n_cases,
            "voxel_mm": args.voxel_mm,
            "domains": list(domains),
            "model": {"path": model_path, "name": spec.name, "labels": [{"value": l.value, "name": l.name} for l in spec.labels], "regions": regions},
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "device": str(seg.device),
                "backend": cases[0]["backend"] if cases else None,
                "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            },
            "min_gt_lesion_ml": MIN_GT_LESION_ML,
            "min_pred_lesion_ml": MIN_PRED_LESION_ML,
            "per_domain": per_domain,
            "summary": summary,
            "package_mr": package_rows,
            "cases": cases,
            "seconds_total": round(total, 1),
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
