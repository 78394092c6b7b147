"""Benchmark (issue 18.2, first cut): the DLA voxel classifier vs the 3D U-Net (dla/model/unet3d.py) on the same
phantom cohort, trained on the same labels for the same wall-clock budget on this CPU. Pure: dla + numpy + torch +
monai, no Django.

Training labels are the recipe labels with the simulated manual artifact removal of ``bench_shifted_cohort``
(``recipe_labels``) of the first train phantoms of ``cohort_plan``. Each architecture first runs
calibration iterations for a tenth of the budget (timed, discarded: seconds per iteration and per validation) to set ``max_iterations`` so its run with about 9
validations fits ``--budget-s`` (learning rate / 10 after 0.75 of it, validation every eighth of it); the run may
go on to 3x that many iterations and is stopped at ``--budget-s``, keeping its best validation weights (the
machine is shared: the estimate is rough); then ``train``
(class-balanced masked loss, best validation weights kept) on the same data. Both predict the first test phantoms
over the same intensity candidates (``predict_volume``, as the inference task does; the U-Net by gaussian
sliding-window), as trained and with the training labels' prior correction (``class_priors_from_labels``, the
inference task's default), and are scored against the exact truth (``dla.stats.truth.TruthReference``: Dice,
sensitivity, PPV, resolved-radius Dice, centreline sensitivity). Prints a table, writes
bench/results/unet_vs_voxel.json with training time, iterations, inference time per study and the load average.

    .venv/bin/python bench/bench_unet_vs_voxel.py                       # 64^3, 4 train / 1 val / 3 test, 150 s each
    .venv/bin/python bench/bench_unet_vs_voxel.py --shape 96 --budget-s 600 --out bench/results/X.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_shifted_cohort import FOV_MM, METRICS, mean_of, recipe_labels  # noqa: E402

from dla.classes import VESSEL  # noqa: E402
from dla.model.dense import class_priors_from_labels, intensity_candidates, predict_volume  # noqa: E402
from dla.model.network import build_model, config_fingerprint, count_parameters  # noqa: E402
from dla.model.train import (  # noqa: E402
    TrainConfig,
    TrainingCancelled,
    TrainingData,
    evaluate,
    evaluate_unet3d,
    load_checkpoint,
    train,
)
from dla.model.unet3d import plan_unet3d  # noqa: E402
from dla.phantoms import cohort_plan, subject_from_plan, vessel_radii_from_params  # noqa: E402
from dla.stats.metrics import MetricsError, paired_difference  # noqa: E402
from dla.stats.truth import TruthReference  # noqa: E402


def make_config(arch: str, args, spacing: float, shape: int):
    if arch == "voxel":
        net = build_model(args.preset).config
        lr = (3e-3, 3e-4)
        slabs = args.slabs
    else:
        patch = min(args.unet_patch, shape)
        net = plan_unet3d((spacing,) * 3, (patch,) * 3, base_filters=args.unet_filters)
        lr = (args.unet_lr, args.unet_lr / 10)
        slabs = args.unet_batch
    return net, lr, slabs


def train_arch(arch, train_data, val_data, args, spacing, shape) -> tuple[torch.nn.Module, dict]:
    net_cfg, lr, slabs = make_config(arch, args, spacing, shape)

    def cfg(iterations, voxels_per_iteration):
        return TrainConfig(
            preset=args.preset if arch == "voxel" else "unet3d",
            mode="dense",
            dense_slabs_per_batch=slabs,
            dense_output_px=args.slab_px,
            lr_values=lr,
            lr_boundaries_epochs=(0.75,),
            epoch_voxels=max(1, voxels_per_iteration * iterations),
            max_iterations=iterations,
            val_every=max(1, iterations // 8),
            val_samples_per_class=args.val_per_class,
            early_stopping_patience=100,
            seed=args.seed,
        )

    voxels_per_iteration = slabs * (
        args.slab_px**2 if arch == "voxel" else int(np.prod(net_cfg.unet_patch_zyx))
    )
    torch.manual_seed(args.seed)
    probe = build_model(net_cfg)
    stamps = []  # one per training iteration, for a tenth of the budget (at least --calibration iterations)
    calibration = cfg(10**6, voxels_per_iteration)
    calibration.val_every = 10**6
    t_cal = time.perf_counter()
    try:
        train(
            probe,
            train_data,
            val_data,
            calibration,
            on_progress=lambda it, m: stamps.append(time.perf_counter()),
            should_cancel=lambda: (
                len(stamps) >= args.calibration and time.perf_counter() - t_cal > 0.1 * args.budget_s
            ),
        )
    except TrainingCancelled:
        pass
    warm = min(4, len(stamps) - 2)  # the first iterations are slow (kernel set-up): not timed
    per_iteration = (stamps[-1] - stamps[warm]) / max(1, len(stamps) - 1 - warm)
    validate = evaluate_unet3d if arch == "unet3d" else evaluate
    vox, cls = val_data.fixed_validation_sample(args.val_per_class, args.seed + 7919)
    t_val = time.perf_counter()
    validate(probe, val_data, vox, cls, device="cpu")
    validation_s = time.perf_counter() - t_val
    # about 9 validations per run (every iterations // 8, and the last): they are part of the budget
    iterations = max(args.calibration, int((args.budget_s - 9 * validation_s) / per_iteration))
    print(
        f"  {arch}: calibrated {per_iteration * 1000:.0f} ms/iteration, {validation_s:.1f} s/validation -> "
        f"{iterations} iterations",
        flush=True,
    )
    torch.manual_seed(args.seed)
    model = build_model(net_cfg)
    # the estimate is rough on a shared machine: the run may go 3x longer and is stopped at the budget
    run_config = cfg(iterations, voxels_per_iteration)
    run_config.max_iterations = 3 * iterations
    t0 = time.perf_counter()
    stopped = "max_iterations"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{arch}.pt"
        try:  # the budget is enforced: at budget_s the run is cancelled and its best validation weights kept
            result = train(
                model,
                train_data,
                val_data,
                run_config,
                should_cancel=lambda: time.perf_counter() - t0 > args.budget_s,
                checkpoint_path=ckpt,
                checkpoint_every=10**9,
            )
        except TrainingCancelled:
            stopped = "budget"
            blob = load_checkpoint(ckpt)
            state = blob["state"]
            model.load_state_dict(blob["best_model_state"] or blob["model_state"])
            history = state["history"]
            result = types.SimpleNamespace(
                iterations=state["iteration"],
                kept_iteration=state["best_iteration"],
                best_iteration=state["best_iteration"],
                best_val_error=state["best_val_error"],
                last_val_error=history[-1]["val_error"] if history else float("nan"),
                voxels_per_s=state["voxels_seen"] / (time.perf_counter() - t0),
            )
    wall = time.perf_counter() - t0
    info = {
        "architecture": arch,
        "fingerprint": config_fingerprint(net_cfg),
        "network_config": net_cfg.to_dict(),
        "parameters": count_parameters(model),
        "calibration_s_per_iteration": per_iteration,
        "calibration_s_per_validation": validation_s,
        "planned_iterations": iterations,
        "stopped": stopped,
        "iterations": result.iterations,
        "labelled_voxels_per_iteration_max": voxels_per_iteration,
        "training_voxels_per_s": result.voxels_per_s,
        "kept_iteration": result.kept_iteration,
        "best_val_error": result.best_val_error,
        "last_val_error": result.last_val_error,
        "train_wall_s": wall,
    }
    print(
        f"  {arch}: {count_parameters(model):,} parameters, {result.iterations} iterations in {wall:.0f} s "
        f"({per_iteration * 1000:.0f} ms/it calibrated), best validation error {result.best_val_error:.4f} "
        f"(iteration {result.best_iteration})",
        flush=True,
    )
    model.eval()
    return model, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, default=64, help="grid size per axis of the phantoms")
    ap.add_argument("--train", type=int, default=4)
    ap.add_argument("--val", type=int, default=1)
    ap.add_argument("--test", type=int, default=3)
    ap.add_argument(
        "--budget-s", type=float, default=150.0, help="training wall-clock budget per architecture"
    )
    ap.add_argument("--calibration", type=int, default=12, help="timed iterations that set the run length")
    ap.add_argument("--preset", default="cpu", help="voxel classifier preset")
    ap.add_argument("--slabs", type=int, default=8)
    ap.add_argument("--slab-px", type=int, default=24)
    ap.add_argument("--unet-patch", type=int, default=32, help="cubic U-Net patch (voxels)")
    ap.add_argument("--unet-filters", type=int, default=16)
    ap.add_argument("--unet-batch", type=int, default=2)
    ap.add_argument("--unet-lr", type=float, default=0.02)
    ap.add_argument("--val-per-class", type=int, default=300, help="fixed validation voxels per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "unet_vs_voxel.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    spacing = FOV_MM / args.shape
    shape = (args.shape,) * 3
    plan = cohort_plan(105, seed=args.seed)
    split = {s: [e for e in plan if e["split"] == s] for s in ("train", "validation", "test")}
    print(
        f"voxel vs 3D U-Net: {args.shape}^3 at {spacing:.3f} mm, {args.train}/{args.val}/{args.test} phantoms, "
        f"{args.budget_s:.0f} s training each, {args.threads} threads, load {load_start[0]:.1f}",
        flush=True,
    )

    def pairs(entries):
        return [
            (s.fill_hu, recipe_labels(s))
            for s in (subject_from_plan(e, shape, (spacing,) * 3) for e in entries)
        ]

    t0 = time.perf_counter()
    train_pairs = pairs(split["train"][: args.train])
    val_pairs = pairs(split["validation"][: args.val])
    priors = class_priors_from_labels(train_pairs)
    train_data, val_data = TrainingData(train_pairs), TrainingData(val_pairs, name="validation")
    print(f"  labels in {time.perf_counter() - t0:.0f} s; priors {np.round(priors, 4).tolist()}", flush=True)
    models, training = {}, {}
    for arch in ("voxel", "unet3d"):
        models[arch], training[arch] = train_arch(arch, train_data, val_data, args, spacing, args.shape)
    del train_pairs, val_pairs, train_data, val_data

    per_subject = {f"{a}{p}": [] for a in models for p in ("", "+prior")}
    inference_s = {a: [] for a in models}
    for e in split["test"][: args.test]:
        s = subject_from_plan(e, shape, (spacing,) * 3)
        radii = vessel_radii_from_params(s.params)
        ref = TruthReference(s.truth == VESSEL, radii.radius_mm, s.spacing_mm)
        cand = intensity_candidates(s.fill_hu)
        for arch, model in models.items():
            for suffix, pri in (("", None), ("+prior", priors)):
                pred = predict_volume(
                    model, s.fill_hu, candidate_mask=cand, class_priors=pri, spacing_mm=s.spacing_mm
                )
                if suffix == "":
                    inference_s[arch].append(pred.elapsed_s)
                row = {"subject_id": e["subject_id"], **ref.score(pred.class_map == VESSEL).headline()}
                per_subject[f"{arch}{suffix}"].append(row)
    means = {k: mean_of(v) for k, v in per_subject.items()}
    head = f"{'method':<20} " + " ".join(f"{m[:12]:>12}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for k, mean in means.items():
        lines.append(
            f"{k:<20} "
            + " ".join(("  -  " if mean[m] is None else f"{mean[m]:.3f}").rjust(12) for m in METRICS)
        )
    paired = {}
    for suffix in ("", "+prior"):
        a, b = per_subject[f"unet3d{suffix}"], per_subject[f"voxel{suffix}"]
        row = {}
        for m in METRICS:
            try:
                d = paired_difference([r[m] for r in a], [r[m] for r in b])
            except MetricsError as exc:
                row[m] = {"error": str(exc)}
                continue
            row[m] = {"mean": d.mean, "ci_low": d.ci_low, "ci_high": d.ci_high, "n": d.n}
        paired[f"unet3d{suffix} - voxel{suffix}"] = row
        lines.append(
            f"{'U-Net - voxel' + suffix:<20} "
            + " ".join(
                (
                    "n/a"
                    if "error" in row[m] or row[m]["ci_low"] is None
                    else f"{100 * row[m]['mean']:+.1f}pp"
                ).rjust(12)
                for m in METRICS
            )
        )
        lines.append(
            f"{'  95% CI':<20} "
            + " ".join(
                (
                    ""
                    if "error" in row[m] or row[m]["ci_low"] is None
                    else f"[{100 * row[m]['ci_low']:+.0f},{100 * row[m]['ci_high']:+.0f}]"
                ).rjust(12)
                for m in METRICS
            )
        )
    for arch in models:
        lines.append(
            f"{arch}: training {training[arch]['train_wall_s']:.0f} s ({training[arch]['iterations']} iterations), "
            f"inference {np.mean(inference_s[arch]):.2f} s per {args.shape}^3 study"
        )
    table = "\n".join(lines)
    print(table, flush=True)
    out = {
        "what": "DLA voxel classifier vs 3D U-Net (MONAI DynUNet, nnU-Net-style plan) on the same phantom cohort, "
        "same labels, same training wall-clock budget; truth metrics averaged over the test phantoms",
        "command": " ".join(sys.argv),
        "grid": {"shape": args.shape, "spacing_mm": spacing, "fov_mm": FOV_MM},
        "subjects": {"train": args.train, "validation": args.val, "test": args.test},
        "budget_s": args.budget_s,
        "training": training,
        "inference_s_per_study": {a: float(np.mean(v)) for a, v in inference_s.items()},
        "class_priors": list(priors),
        "mean": means,
        "paired_differences": paired,
        "per_subject": per_subject,
        "table": table,
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
    print(f"\nwrote {args.out} ({time.perf_counter() - t_start:.0f} s, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
