"""Benchmark of DLA inference and training on CPU: dense tiled vs the paper's voxel-wise patch mode.

Prints a table and writes bench/results/inference.json. Uses a random-weight "cpu" preset DLANet on
synthetic head-like volumes (soft-tissue sphere, bone shell, contrast-filled tubes). Budget ~3-5 minutes.
Run: .venv/bin/python bench/bench_inference.py
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dla.classes import BONE, SOFT_TISSUE, VESSEL  # noqa: E402
from dla.model.dense import intensity_candidates, predict_patches, predict_volume  # noqa: E402
from dla.model.network import build_model, count_parameters  # noqa: E402
from dla.model.train import TrainConfig, TrainingData, train  # noqa: E402

PAPER_VOXELS_PER_S_PER_GPU = 2500.0  # paper: voxel-wise inference on a GTX 1080 Ti (stated throughput)


def head_phantom(shape, seed=0):
    """int16 HU [Z,Y,X] and labels: air outside, soft-tissue ellipsoid, ~6 mm bone shell, bright tubes."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    zz, yy, xx = np.meshgrid(
        np.linspace(-1, 1, z, dtype=np.float32),
        np.linspace(-1, 1, y, dtype=np.float32),
        np.linspace(-1, 1, x, dtype=np.float32),
        indexing="ij",
    )
    r = np.sqrt((zz / 1.1) ** 2 + yy**2 + xx**2)
    lab = np.zeros(shape, np.uint8)
    lab[r < 0.9] = SOFT_TISSUE
    lab[(r >= 0.82) & (r < 0.9)] = BONE
    for _ in range(12):
        cy, cx = rng.uniform(-0.6, 0.6, 2)
        rad = rng.uniform(0.01, 0.03)
        lab[(np.hypot(yy - cy, xx - cx) < rad) & (r < 0.8)] = VESSEL
    hu = np.full(shape, -1000.0, np.float32)
    hu[lab == SOFT_TISSUE] = 40
    hu[lab == BONE] = 1200
    hu[lab == VESSEL] = 450
    hu += rng.normal(0, 25, shape).astype(np.float32)
    return hu.astype(np.int16), lab


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    torch.manual_seed(0)
    results: dict = {
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "paper_voxels_per_s_per_gpu": PAPER_VOXELS_PER_S_PER_GPU,
    }
    model = build_model("cpu")
    results["presets"] = {n: count_parameters(build_model(n)) for n in ("tiny", "cpu", "paper")}

    # 1. dense vs patch on a 64x256x256 volume
    vol, _ = head_phantom((64, 256, 256), seed=1)
    predict_volume(model, vol[:4])  # warm-up
    dense, t_dense = timed(lambda: predict_volume(model, vol, prob_dtype=np.float32, return_probs=True))
    rng = np.random.default_rng(0)
    coords = np.stack([rng.integers(0, s, 2000) for s in vol.shape], 1)
    ref, t_patch = timed(lambda: predict_patches(model, vol, coords, batch=512))
    dense_at = dense.probs[:, coords[:, 0], coords[:, 1], coords[:, 2]].T
    results["dense_vs_patch"] = {
        "volume": list(vol.shape),
        "dense_voxels_per_s": vol.size / t_dense,
        "patch_voxels_per_s": len(coords) / t_patch,
        "ratio": (vol.size / t_dense) / (len(coords) / t_patch),
        "max_abs_prob_diff": float(np.abs(dense_at - ref).max()),
        "patch_voxels": len(coords),
        "tile_yx": list(dense.tile_yx),
        "slab_batch": dense.slab_batch,
    }

    # channels_last on/off (decides the default)
    sub = vol[:16]
    _, t_cl = timed(lambda: predict_volume(model, sub, channels_last=True))
    _, t_nc = timed(lambda: predict_volume(build_model("cpu"), sub, channels_last=False))
    results["channels_last"] = {"on_voxels_per_s": sub.size / t_cl, "off_voxels_per_s": sub.size / t_nc}

    # 2. 256^3 full and with intensity candidates; 512x512x400 extrapolated
    vol256, _ = head_phantom((256, 256, 256), seed=2)
    full, t_full = timed(lambda: predict_volume(model, vol256))
    cand, t_c = timed(lambda: intensity_candidates(vol256))
    masked, t_m = timed(lambda: predict_volume(model, vol256, candidate_mask=cand))
    big = 512 * 512 * 400
    results["volume_256"] = {
        "full_s": t_full,
        "full_voxels_per_s": vol256.size / t_full,
        "candidates_fraction": float(cand.mean()),
        "candidates_mask_s": t_c,
        "with_candidates_s": t_m + t_c,
        "network_voxels_per_s": masked.network_voxels / t_m,
        "agree_on_candidates": float((masked.class_map[cand] == full.class_map[cand]).mean()),
        "extrapolated_512x512x400_full_s": big / (vol256.size / t_full),
        "extrapolated_512x512x400_with_candidates_s": big / (vol256.size / (t_m + t_c)),
    }

    # 3. training throughput and loss after equal wall time: dense slabs vs balanced patches
    train_pairs = [head_phantom((24, 128, 128), seed=s) for s in (10, 11)]
    val_pairs = [head_phantom((24, 128, 128), seed=12)]
    tdata, vdata = TrainingData(train_pairs), TrainingData(val_pairs, name="validation")
    budget_s = 25.0
    results["training"] = {"budget_s": budget_s}
    for mode in ("dense", "patch"):
        torch.manual_seed(0)
        m = build_model("cpu")
        t0 = time.perf_counter()
        losses = []

        class _Stop(Exception):
            pass

        def cancel(t0=t0):
            return time.perf_counter() - t0 > budget_s

        cfg = TrainConfig(
            preset="cpu", mode=mode, lr_values=(0.01,), lr_boundaries_epochs=(), max_iterations=10**6,
            val_every=10**6, val_samples_per_class=500, batch_size=512, dense_output_px=24, dense_slabs_per_batch=8,
        )  # fmt: skip
        try:
            train(
                m,
                tdata,
                vdata,
                cfg,
                on_progress=lambda i, mt, losses=losses: losses.append(mt),
                should_cancel=cancel,
            )
        except Exception as exc:  # TrainingCancelled ends the timed run
            if type(exc).__name__ != "TrainingCancelled":
                raise
        from dla.model.train import evaluate

        vv, vc = vdata.fixed_validation_sample(500, 1)
        metrics = evaluate(m, vdata, vv, vc, device="cpu")
        tail = [x["loss"] for x in losses[-10:]]
        results["training"][mode] = {
            "iterations": len(losses),
            "voxels_per_s": losses[-1]["voxels_per_s"],
            "labelled_voxels_seen": int(losses[-1]["voxels_per_s"] * budget_s),
            "loss_last10_mean": float(np.mean(tail)),
            **{k: v for k, v in metrics.items() if k.startswith("val_acc") or k == "val_error"},
        }
    tr = results["training"]
    tr["dense_over_patch_voxels_per_s"] = tr["dense"]["voxels_per_s"] / tr["patch"]["voxels_per_s"]

    out = Path(__file__).resolve().parent / "results" / "inference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    d, v = results["dense_vs_patch"], results["volume_256"]
    rows = [
        ("params tiny/cpu/paper", "/".join(str(results["presets"][k]) for k in ("tiny", "cpu", "paper"))),
        ("dense voxels/s (64x256x256)", f"{d['dense_voxels_per_s']:,.0f}"),
        ("patch voxels/s (2000 voxels)", f"{d['patch_voxels_per_s']:,.0f}"),
        ("dense / patch ratio (target >= 100)", f"{d['ratio']:.0f}x"),
        ("max |prob diff| dense vs patch", f"{d['max_abs_prob_diff']:.2e}"),
        ("channels_last on / off voxels/s", f"{results['channels_last']['on_voxels_per_s']:,.0f} / "
         f"{results['channels_last']['off_voxels_per_s']:,.0f}"),
        ("256^3 full dense (target < 60 s)", f"{v['full_s']:.1f} s"),
        ("256^3 with candidates", f"{v['with_candidates_s']:.1f} s ({v['candidates_fraction']:.1%} candidates)"),
        ("512x512x400 extrapolated full / cand", f"{v['extrapolated_512x512x400_full_s']:.0f} s / "
         f"{v['extrapolated_512x512x400_with_candidates_s']:.0f} s"),
        ("paper voxel-wise (per GPU)", f"{PAPER_VOXELS_PER_S_PER_GPU:,.0f} voxels/s"),
        ("train dense voxels/s, loss, val_err", f"{tr['dense']['voxels_per_s']:,.0f}, {tr['dense']['loss_last10_mean']:.3f}, "
         f"{tr['dense']['val_error']:.3f}"),
        ("train patch voxels/s, loss, val_err", f"{tr['patch']['voxels_per_s']:,.0f}, {tr['patch']['loss_last10_mean']:.3f}, "
         f"{tr['patch']['val_error']:.3f}"),
        ("train dense / patch voxels/s", f"{tr['dense_over_patch_voxels_per_s']:.0f}x"),
    ]  # fmt: skip
    w = max(len(r[0]) for r in rows)
    for k, val in rows:
        print(f"{k:<{w}}  {val}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
