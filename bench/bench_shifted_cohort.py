"""Benchmark of a shifted cohort (issue 14.4): how the DLA model and the 3D-DSA baseline degrade on phantoms
with settings the model never trained on, and whether training-batch augmentation (noise, blur, HU scale;
``TrainConfig.augment_*``) makes the model robust to them. Pure: dla + numpy + torch, no Django.

Two models of the same preset are trained for the same fixed number of iterations (same seed, data, schedule)
on the recipe labels of the first train phantoms of ``cohort_plan`` (recipe defaults with the fill-scan bone
threshold 550 HU of ``reproduce_paper`` and its simulated manual artifact removal, ``dla.phantoms.review``):
one without augmentation, one with. Then for the unshifted test phantoms and for each shift, one at a time
(``dla.phantoms.shift``; the voxel-size shift keeps the 180 mm field of view), the first N test subjects of
the plan are generated, and the DLA vessel class (dense inference over intensity candidates) and the DSA
baseline (subtracted >= 600 HU, 20 mm^3 components) are scored against the exact truth
(``dla.stats.truth.TruthReference``): whole-head Dice, sensitivity and PPV, resolved-radius Dice (radius >= one
voxel) and centreline sensitivity. Prints a table and writes bench/results/shifted_cohort.json (with the load
average: the machine is shared).

    .venv/bin/python bench/bench_shifted_cohort.py   # = --iterations 8000 --train 10 --test 4 (measured, 16 min)
    .venv/bin/python bench/bench_shifted_cohort.py --iterations 2500 --train-seed 1 --only unshifted ... --out X.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dla.classes import CLASS_NAMES, LABELED_CLASSES, UNLABELED, VESSEL  # noqa: E402
from dla.labeling.recipe import RecipeParams, run_recipe  # noqa: E402
from dla.model.dense import intensity_candidates, predict_volume  # noqa: E402
from dla.model.network import build_model  # noqa: E402
from dla.model.train import TrainConfig, TrainingData, train  # noqa: E402
from dla.phantoms import cohort_plan, subject_from_plan, vessel_radii_from_params  # noqa: E402
from dla.phantoms.review import artifact_mask  # noqa: E402
from dla.stats.truth import TruthReference, dsa_baseline_vessels  # noqa: E402

FOV_MM = 180.0
AUGMENTATION = {
    "augment_noise_hu": 40.0,
    "augment_blur_sigma_voxels": 0.8,
    "augment_hu_scale": (0.75, 1.3),
    "augment_probability": 0.7,
}
"""The augmented model's settings: extra noise SD up to 40 HU (the drawn 10-30 HU doubled is 20-60 HU, i.e. up
to 52 HU added in quadrature), extra blur up to 0.8 voxels (0.8 * 1.5 = 1.2 voxels is 0.9 added in
quadrature), HU x 0.75-1.3 (contrast -30 %, bone +30 %), on 70 % of the slabs (the rest stay clean)."""

METRICS = ("dice", "sensitivity", "ppv", "resolved_dice", "centreline_sensitivity")


def conditions(base_shape: int, base_spacing: float, voxel_mm: float):
    """(name, shape, spacing_mm, shift) of the unshifted test cohort and each shift, one at a time."""
    n_vox = int(round(FOV_MM / voxel_mm))
    base = ((base_shape,) * 3, (base_spacing,) * 3)
    return [
        ("unshifted", *base, None),
        ("noise x2", *base, {"noise_scale": 2.0}),
        ("blur +50%", *base, {"blur_scale": 1.5}),
        (f"voxel {voxel_mm:g} mm", (n_vox,) * 3, (FOV_MM / n_vox,) * 3, None),
        ("contrast -30%", *base, {"contrast_scale": 0.7}),
        ("skull +30%", *base, {"skull_thickness_scale": 1.3}),
        ("skull -30%", *base, {"skull_thickness_scale": 0.7}),
        ("tortuosity x2", *base, {"tortuosity_scale": 2.0}),
        ("bone density +30%", *base, {"bone_density_scale": 1.3}),
    ]


def recipe_labels(subject) -> np.ndarray:
    """The training labels of a phantom: the recipe (bone threshold 550 HU as reproduce_paper) and the simulated
    manual artifact removal (recipe vessel voxels more than one voxel from any truth vessel erased)."""
    labels = run_recipe(
        subject.fill_hu, subject.subtracted_hu, subject.spacing_mm, RecipeParams(bone_threshold_hu=550.0)
    ).labels.copy()
    labels[artifact_mask(labels, subject.truth)] = UNLABELED
    return labels


def mean_of(rows: list[dict]) -> dict:
    out = {}
    for k in METRICS:
        vals = [r[k] for r in rows if r[k] is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def train_one(name, train_pairs, val_pairs, args, augmentation) -> tuple[torch.nn.Module, dict]:
    voxels_per_iteration = args.slabs * args.slab_px**2
    cfg = TrainConfig(
        preset=args.preset,
        mode="dense",
        dense_slabs_per_batch=args.slabs,
        dense_output_px=args.slab_px,
        lr_values=(3e-3, 3e-4),
        lr_boundaries_epochs=(0.75,),
        epoch_voxels=voxels_per_iteration * args.iterations,  # one "epoch" = the run (as reproduce_paper)
        max_iterations=args.iterations,
        val_every=max(1, args.iterations // 10),
        val_samples_per_class=1000,
        early_stopping_patience=100,
        seed=args.train_seed,
        **augmentation,
    )
    torch.manual_seed(args.train_seed)
    model = build_model(args.preset)
    t0 = time.perf_counter()
    result = train(model, TrainingData(train_pairs), TrainingData(val_pairs, name="validation"), cfg)
    info = {
        "name": name,
        "train_config": cfg.to_dict(),
        "iterations": result.iterations,
        "kept_iteration": result.kept_iteration,
        "best_val_error": result.best_val_error,
        "last_val_error": result.last_val_error,
        "wall_s": time.perf_counter() - t0,
    }
    print(
        f"  {name}: {result.iterations} iterations in {info['wall_s']:.0f} s, best validation error "
        f"{result.best_val_error:.4f} (iteration {result.best_iteration})",
        flush=True,
    )
    model.eval()
    return model, info


def fmt(v) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def print_table(results: dict) -> str:
    lines = []
    head = f"{'condition':<20} {'method':<10} " + " ".join(f"{m[:12]:>12}" for m in METRICS)
    lines.append(head)
    lines.append("-" * len(head))
    base = results.get("unshifted", {}).get("mean", {})
    for cond, block in results.items():
        for method, mean in block["mean"].items():
            cells = []
            for m in METRICS:
                v = mean[m]
                b = base.get(method, {}).get(m)
                delta = "" if cond == "unshifted" or v is None or b is None else f"{v - b:+.2f}"
                cells.append(f"{fmt(v)}{delta:>6}".rjust(12))
            lines.append(f"{cond:<20} {method:<10} " + " ".join(cells))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, default=128, help="grid size per axis of the training/test phantoms")
    ap.add_argument("--voxel-mm", type=float, default=1.8, help="voxel size (mm) of the voxel-size shift")
    ap.add_argument("--train", type=int, default=10, help="train phantoms (first of the plan's train split)")
    ap.add_argument("--val", type=int, default=2, help="validation phantoms")
    ap.add_argument("--test", type=int, default=4, help="test phantoms per condition")
    ap.add_argument("--iterations", type=int, default=8000, help="training iterations of each model")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--slabs", type=int, default=8)
    ap.add_argument("--slab-px", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0, help="cohort plan seed")
    ap.add_argument("--train-seed", type=int, default=None, help="weights/batch seed (default: --seed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="condition names to run (default: all)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "shifted_cohort.json")
    args = ap.parse_args()
    if args.train_seed is None:
        args.train_seed = args.seed
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    spacing = FOV_MM / args.shape
    plan = cohort_plan(105, seed=args.seed)
    split = {s: [e for e in plan if e["split"] == s] for s in ("train", "validation", "test")}
    shape = (args.shape,) * 3
    print(
        f"shifted cohort: {args.shape}^3 at {spacing:.3f} mm, {args.train} train / {args.val} validation / "
        f"{args.test} test phantoms, preset {args.preset}, {args.iterations} iterations, load "
        f"{load_start[0]:.1f}",
        flush=True,
    )

    def pairs(entries):
        out = []
        for e in entries:
            s = subject_from_plan(e, shape, (spacing,) * 3)
            out.append((s.fill_hu, recipe_labels(s)))
        return out

    t0 = time.perf_counter()
    train_pairs = pairs(split["train"][: args.train])
    val_pairs = pairs(split["validation"][: args.val])
    counts = {
        CLASS_NAMES[c]: int(sum(int(np.count_nonzero(lab == c)) for _, lab in train_pairs))
        for c in LABELED_CLASSES
    }
    print(f"  labels in {time.perf_counter() - t0:.0f} s; training voxels {counts}", flush=True)
    models, training = {}, {}
    for name, aug in (("DLA", {}), ("DLA+aug", AUGMENTATION)):
        models[name], training[name] = train_one(name, train_pairs, val_pairs, args, aug)
    del train_pairs, val_pairs

    results: dict = {}
    out: dict = {}
    for cond, cshape, cspacing, shift in conditions(args.shape, spacing, args.voxel_mm):
        if args.only and cond not in args.only:
            continue
        t0 = time.perf_counter()
        per_subject = {"DSA": [], "DLA": [], "DLA+aug": []}
        for e in split["test"][: args.test]:
            s = subject_from_plan(e, cshape, cspacing, shift=shift)
            radii = vessel_radii_from_params(s.params)
            ref = TruthReference(s.truth == VESSEL, radii.radius_mm, s.spacing_mm)
            row = {"subject_id": e["subject_id"]}
            per_subject["DSA"].append(
                {**row, **ref.score(dsa_baseline_vessels(s.subtracted_hu, s.spacing_mm)).headline()}
            )
            cand = intensity_candidates(s.fill_hu)
            for name, model in models.items():
                pred = predict_volume(model, s.fill_hu, candidate_mask=cand).class_map == VESSEL
                per_subject[name].append({**row, **ref.score(pred).headline()})
        results[cond] = {
            "shape_zyx": list(cshape),
            "spacing_mm": list(cspacing),
            "shift": shift,
            "mean": {k: mean_of(v) for k, v in per_subject.items()},
            "per_subject": per_subject,
            "wall_s": time.perf_counter() - t0,
        }
        print(f"  {cond}: {results[cond]['wall_s']:.0f} s", flush=True)
        out = {
            "what": "DLA (with and without training augmentation) and the 3D-DSA baseline vs the exact truth on "
            "shifted phantom cohorts (issue 14.4); means over the test subjects",
            "grid": {"shape": args.shape, "spacing_mm": spacing, "fov_mm": FOV_MM},
            "subjects": {"train": args.train, "validation": args.val, "test": args.test},
            "command": " ".join(sys.argv),
            "seeds": {"cohort": args.seed, "training": args.train_seed},
            "augmentation": {k: list(v) if isinstance(v, tuple) else v for k, v in AUGMENTATION.items()},
            "training": training,
            "results": results,
            "machine": {
                "cpu_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "load_average_start": list(load_start),
                "load_average_end": list(os.getloadavg()),
            },
            "wall_s": time.perf_counter() - t_start,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    print()
    out["table"] = print_table(results)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out} ({time.perf_counter() - t_start:.0f} s, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
