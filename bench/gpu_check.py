"""GPU check (issue 18): both architectures trained, a whole head inferred and DDP launched, on one CUDA machine.

Run through ``bash bench/gpu_check.sh`` (or ``.venv/bin/python bench/gpu_check.py``); docs/GPU.md says what to send
back. Steps, each timed (seconds, voxels/s) with the peak GPU memory (``torch.cuda.max_memory_allocated``, GB, reset
before the step):

1. ``train_voxel``: the DLA voxel classifier (``paper`` preset) trained for ``--iterations`` iterations with AMP
   (bf16 autocast where the card has it) on phantom heads (``dla.phantoms.make_subject``, exact truth as labels).
2. ``train_unet3d``: the 3D U-Net (``plan_unet3d`` for the phantoms' spacing) trained the same way.
3. ``infer_voxel_head`` / ``infer_unet3d_head``: ``predict_volume`` on one whole-head phantom of 400 x 512 x 512
   voxels at 0.46 mm (as bench/bench_full_head.py builds it): the trained voxel net over the intensity
   candidates, and a U-Net of step 2's plan declared for 0.46 mm (random weights: speed does not depend on them;
   step 2's weights were planned for the training phantoms' spacing, which inference would refuse).
4. ``ddp_voxel`` / ``ddp_unet3d``: ``dla.model.ddp.train_distributed``, the training task's own DDP launcher
   (torchrun subprocess, NCCL, one rank per GPU; 1 rank on 1 GPU), a short run of each architecture (the dry run:
   the U-Net only, one launch).

Writes bench/results/gpu_check.json (``--out``) and prints the card's name and a table. A failing step is recorded
with its error and the others still run; the exit status is 1 when any step failed.

``--dry``: the same code path on the CPU (``CUDA_VISIBLE_DEVICES`` emptied, gloo, no AMP) with tiny sizes and a few
iterations, well under a minute; tests/integration/test_gpu_check.py runs it. Without CUDA and without ``--dry`` the
check stops at once. Pure dla + torch (+ monai through dla.model.unet3d), no Django.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NO_CUDA_MESSAGE = "no CUDA device: run with --dry for the CPU check"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="CPU, tiny sizes, a few iterations (the test's mode)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu_check.json"), help="JSON output")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per architecture")
    p.add_argument("--ranks", type=int, default=None, help="DDP ranks (default: every visible GPU; dry: 1)")
    return p.parse_args(argv)


def sizes(dry: bool) -> dict:
    """Grid and batch sizes of the full check and of the dry run."""
    if dry:
        return {
            "train_shape_zyx": (16, 32, 32),
            "n_train": 2,
            "iterations": 3,
            "ddp_iterations": 2,
            "ddp_architectures": ("unet3d",),  # one torchrun launch (~10 s of start-up on 2 cores)
            "voxel_preset": "tiny",
            "dense_output_px": 16,
            "slabs": 2,
            "unet_patch_zyx": (8, 16, 16),
            "unet_batch": 2,
            "unet_filters": 4,
            "head_shape_zyx": (12, 32, 32),
            "head_spacing_mm": (0.46, 0.46, 0.46),
            "tile_yx": None,
            "slab_batch": None,
            "val_samples_per_class": 50,
        }
    return {
        "train_shape_zyx": (128, 128, 128),
        "n_train": 2,
        "iterations": 300,
        "ddp_iterations": 50,
        "ddp_architectures": ("voxel", "unet3d"),
        "voxel_preset": "paper",
        "dense_output_px": 96,
        "slabs": 16,
        "unet_patch_zyx": (96, 96, 96),
        "unet_batch": 2,
        "unet_filters": 32,
        "head_shape_zyx": (400, 512, 512),
        "head_spacing_mm": (0.46, 0.46, 0.46),
        "tile_yx": (512, 512),
        "slab_batch": 8,
        "val_samples_per_class": 2000,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch initialises CUDA; the DDP ranks inherit it
    import torch

    if not args.dry and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    from dla.classes import LABELED_CLASSES
    from dla.model.ddp import backend_and_devices, train_distributed
    from dla.model.dense import intensity_candidates, predict_volume
    from dla.model.network import build_model, config_fingerprint, count_parameters, preset_config
    from dla.model.train import TrainConfig, TrainingData, train
    from dla.model.unet3d import plan_unet3d
    from dla.phantoms import make_subject

    t_start = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")
    card = torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()
    print(f"device: {device} ({card})", flush=True)
    if cuda:
        gb = torch.cuda.get_device_properties(0).total_memory / 1e9
        print(f"card: {card}, {gb:.0f} GB, {torch.cuda.device_count()} visible, torch {torch.__version__}")
    sz = sizes(args.dry)
    iterations = args.iterations or sz["iterations"]
    ranks = args.ranks or (torch.cuda.device_count() if cuda else 1)
    steps: list[dict] = []

    def run_step(name: str, fn) -> dict | None:
        """Run ``fn() -> dict`` (its own numbers, with ``voxels`` processed), timed, with peak GPU memory."""
        print(f"== {name}", flush=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            out = fn()
            if cuda:
                torch.cuda.synchronize()
        except Exception as exc:  # recorded: the other steps still run and report
            traceback.print_exc()
            step = {"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            steps.append(step)
            return None
        seconds = time.perf_counter() - t0
        step = {"name": name, "ok": True, "seconds": seconds}
        voxels = out.pop("voxels", None)
        if voxels is not None and "voxels_per_s" not in out:
            out["voxels_per_s"] = voxels / max(seconds, 1e-9)
        step.update(out)
        if "peak_gpu_mem_gb" not in step:
            step["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
        steps.append(step)
        mem = step["peak_gpu_mem_gb"]
        print(
            f"   {seconds:.1f} s, {step.get('voxels_per_s', 0):,.0f} voxels/s"
            + (f", peak GPU memory {mem:.2f} GB" if mem is not None else ""),
            flush=True,
        )
        return step

    # phantom heads with exact truth (0 = outside the head, unlabelled)
    t0 = time.perf_counter()
    subjects, seed = [], 0
    while (
        len(subjects) < sz["n_train"] + 1
    ):  # phantoms with voxels of every class (tiny grids may lack vessels)
        s = make_subject(sz["train_shape_zyx"], seed=seed)
        seed += 1
        if all((s.truth == c).any() for c in LABELED_CLASSES):
            subjects.append(s)
        elif seed > 50:
            raise RuntimeError(f"no phantom of {sz['train_shape_zyx']} voxels has every class")
    spacing = tuple(float(v) for v in subjects[0].spacing_mm)
    train_pairs = [(s.fill_hu, s.truth) for s in subjects[: sz["n_train"]]]
    val_pairs = [(s.fill_hu, s.truth) for s in subjects[sz["n_train"] :]]
    del subjects
    train_data, val_data = TrainingData(train_pairs), TrainingData(val_pairs, name="validation")
    phantom_s = time.perf_counter() - t0
    print(
        f"training phantoms {sz['train_shape_zyx']} at {spacing[0]:.3g} mm in {phantom_s:.1f} s", flush=True
    )

    def train_config(preset: str, n_iter: int, slabs: int) -> TrainConfig:
        return TrainConfig(
            preset=preset,
            lr_values=(0.01,),
            lr_boundaries_epochs=(),
            max_iterations=n_iter,
            val_every=n_iter,
            dense_output_px=sz["dense_output_px"],
            dense_slabs_per_batch=slabs,
            val_samples_per_class=sz["val_samples_per_class"],
            early_stopping_patience=100,
            amp=not args.dry,
            seed=0,
        )

    voxel_cfg = preset_config(sz["voxel_preset"])
    unet_cfg = plan_unet3d(spacing, sz["unet_patch_zyx"], base_filters=sz["unet_filters"])
    arch = {
        "voxel": (voxel_cfg, train_config(sz["voxel_preset"], iterations, sz["slabs"])),
        "unet3d": (unet_cfg, train_config("unet3d", iterations, sz["unet_batch"])),
    }
    trained: dict = {}

    def train_step(name: str):
        net_cfg, cfg = arch[name]
        torch.manual_seed(cfg.seed)
        model = build_model(net_cfg)
        losses = []
        result = train(
            model,
            train_data,
            val_data,
            cfg,
            device=device,
            on_progress=lambda it, m: losses.append(m["loss"]),
        )
        trained[name] = model
        return {
            "architecture": name,
            "fingerprint": config_fingerprint(net_cfg),
            "parameters": count_parameters(model),
            "iterations": result.iterations,
            "amp": bool(cfg.amp and cuda),
            "train_s": result.elapsed_s,
            "voxels_per_s": result.voxels_per_s,  # labelled voxels trained per second (the trainer's count)
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "val_error": result.last_val_error,
        }

    run_step("train_voxel", lambda: train_step("voxel"))
    run_step("train_unet3d", lambda: train_step("unet3d"))

    # one whole head at 0.46 mm, as bench/bench_full_head.py builds it
    t0 = time.perf_counter()
    head = make_subject(sz["head_shape_zyx"], spacing_mm=sz["head_spacing_mm"], seed=0).fill_hu
    head_phantom_s = time.perf_counter() - t0
    print(f"head phantom {sz['head_shape_zyx']} in {head_phantom_s:.1f} s", flush=True)

    def infer_voxel():
        model = trained.get("voxel") or build_model(voxel_cfg)
        candidates = intensity_candidates(head)
        tile = {"tile_yx": sz["tile_yx"], "slab_batch": sz["slab_batch"]} if cuda else {}
        pred = predict_volume(model.to(device), head, candidate_mask=candidates, **tile)
        return {
            "shape_zyx": list(head.shape),
            "spacing_mm": list(sz["head_spacing_mm"]),
            "weights": "trained in train_voxel" if "voxel" in trained else "random",
            "candidates_fraction": float(candidates.mean()),
            "network_voxels": int(pred.network_voxels),
            "network_voxels_per_s": pred.network_voxels / max(pred.elapsed_s, 1e-9),
            "tile_yx": list(pred.tile_yx),
            "slab_batch": pred.slab_batch,
            "voxels": head.size,
        }

    def infer_unet():
        head_cfg = plan_unet3d(sz["head_spacing_mm"], sz["unet_patch_zyx"], base_filters=sz["unet_filters"])
        torch.manual_seed(0)
        model = build_model(head_cfg).to(device)
        pred = predict_volume(model, head, spacing_mm=sz["head_spacing_mm"])
        return {
            "shape_zyx": list(head.shape),
            "spacing_mm": list(sz["head_spacing_mm"]),
            "weights": "random (speed does not depend on them)",
            "patch_zyx": list(head_cfg.unet_patch_zyx),
            "network_voxels": int(pred.network_voxels),
            "voxels": head.size,
        }

    run_step("infer_voxel_head", infer_voxel)
    run_step("infer_unet3d_head", infer_unet)
    head = None  # free the head before the DDP ranks start
    trained.clear()
    if cuda:
        torch.cuda.empty_cache()

    def ddp_step(name: str):
        net_cfg, _ = arch[name]
        slabs = sz["unet_batch"] if name == "unet3d" else sz["slabs"]
        cfg = train_config(arch[name][1].preset, sz["ddp_iterations"], slabs * ranks)
        peaks = []

        def progress(it, m):
            if "gpu_mem_peak_gb" in m:
                peaks.append(m["gpu_mem_peak_gb"])

        backend = backend_and_devices(ranks)[0]  # too many ranks for the GPUs: this step fails, in words
        t0 = time.perf_counter()
        result, model = train_distributed(
            ranks,
            model_config=net_cfg.to_dict(),
            train_config=cfg.to_dict(),
            train_pairs=train_pairs,
            val_pairs=val_pairs,
            on_progress=progress,
        )
        wall = time.perf_counter() - t0
        return {
            "architecture": name,
            "backend": backend,
            "ranks": ranks,
            "iterations": result.iterations,
            "train_s": result.elapsed_s,
            "launch_overhead_s": wall - result.elapsed_s,
            "voxels_per_s": result.voxels_per_s,
            "val_error": result.last_val_error,
            "returned": type(model).__name__,
            # rank 0's own peak (the caller's CUDA memory is not the ranks')
            "peak_gpu_mem_gb": max(peaks) if peaks else None,
        }

    for name in sz["ddp_architectures"]:
        run_step(f"ddp_{name}", lambda name=name: ddp_step(name))

    total_s = time.perf_counter() - t_start
    results = {
        "what": "bench/gpu_check.py: both architectures trained with AMP, a whole head inferred, DDP through the "
        "training task's launcher; seconds, voxels/s and peak GPU memory per step",
        "dry": bool(args.dry),
        "device": device.type,
        "device_name": card,
        "gpus": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - total_s)),
        "training_phantoms": {
            "shape_zyx": list(sz["train_shape_zyx"]),
            "spacing_mm": list(spacing),
            "train": len(train_pairs),
            "validation": len(val_pairs),
            "seconds": phantom_s,
        },
        "head_phantom_s": head_phantom_s,
        "steps": steps,
        "all_ok": all(s["ok"] for s in steps),
        "total_s": total_s,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    width = max(len(s["name"]) for s in steps)
    print(f"\n{card} ({device.type}{', dry run' if args.dry else ''}), {total_s:.0f} s in all")
    for s in steps:
        if not s["ok"]:
            print(f"{s['name']:<{width}}  FAILED: {s['error']}")
            continue
        mem = s["peak_gpu_mem_gb"]
        print(
            f"{s['name']:<{width}}  {s['seconds']:7.1f} s  {s.get('voxels_per_s', 0):>14,.0f} voxels/s"
            + (f"  peak GPU memory {mem:6.2f} GB" if mem is not None else "")
        )
    print(f"saved {out}")
    return 0 if results["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
