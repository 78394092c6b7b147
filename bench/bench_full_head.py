"""Benchmark: DLA inference of one whole 400x512x512 head, measured end to end (not extrapolated).

A phantom head at the paper's grid (400 x 512 x 512 voxels, the head filling the field of view), the ``cpu``
preset DLANet (random weights: speed does not depend on the weights), and the inference task's numeric path
as it runs on a study: intensity candidates (fill >= DEFAULT_CANDIDATE_MIN_HU, dilated), dense tiled
prediction of the candidates, the 3D-DLA volume. Also the whole volume without candidates on the first 40
slices, for the per-voxel rate. Prints a table and writes bench/results/full_head_inference.json with the
wall time of each step, voxels/s and the process's peak RSS. About 2 minutes on 2 cores.
Run: .venv/bin/python bench/bench_full_head.py
     .venv/bin/python bench/bench_full_head.py --preset paper --no-slab --out bench/results/full_head_paper.json
     .venv/bin/python bench/bench_full_head.py --mirror --no-slab --out bench/results/full_head_mirror.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_inference import timed  # noqa: E402  (bench/ is the script's folder, first on sys.path)

from dla.model.dense import (  # noqa: E402
    DEFAULT_CANDIDATE_MIN_HU,
    dla_volume,
    intensity_candidates,
    predict_volume,
)
from dla.model.network import build_model  # noqa: E402
from dla.phantoms import default_spacing_mm, make_subject  # noqa: E402

SHAPE_ZYX = (400, 512, 512)
PAPER_VOXELS_PER_S_PER_GPU = 2500.0
BUDGET_S = 300.0  # DESIGN.md performance contract: whole-head DLA inference, CPU preset, < 5 min


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help="network preset (cpu: 10 layers; paper: 30 layers)")
    parser.add_argument("--no-slab", action="store_true", help="skip the 40 slices without candidates")
    parser.add_argument(
        "--mirror", action="store_true", help="mirrored test-time augmentation (predict_volume(mirror=True))"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "full_head_inference.json"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(args.preset)
    spacing = default_spacing_mm(SHAPE_ZYX)
    subject, t_phantom = timed(lambda: make_subject(SHAPE_ZYX, seed=0))
    fill = subject.fill_hu
    del subject
    n = fill.size
    last = {"t": 0.0}

    def progress(fraction, message):
        now = time.perf_counter()
        if now - last["t"] > 15:
            last["t"] = now
            print(f"  {100 * fraction:5.1f}% {message}", flush=True)

    candidates, t_cand = timed(lambda: intensity_candidates(fill, DEFAULT_CANDIDATE_MIN_HU))
    prediction, t_pred = timed(
        lambda: predict_volume(model, fill, candidate_mask=candidates, progress=progress, mirror=args.mirror)
    )
    dla, t_dla = timed(lambda: dla_volume(fill, prediction.class_map))
    slab = np.ascontiguousarray(fill[:40])
    if args.no_slab:
        slab_prediction, t_slab = None, float("nan")
    else:
        slab_prediction, t_slab = timed(lambda: predict_volume(model, slab))
    total = t_cand + t_pred + t_dla
    results = {
        "shape_zyx": list(SHAPE_ZYX),
        "spacing_mm": list(spacing),
        "preset": args.preset,
        "mirror": args.mirror,
        "torch_threads": torch.get_num_threads(),
        "phantom_s": t_phantom,
        "candidate_min_hu": DEFAULT_CANDIDATE_MIN_HU,
        "candidates_fraction": float(candidates.mean()),
        "candidates_s": t_cand,
        "predict_s": t_pred,
        "dla_volume_s": t_dla,
        "inference_total_s": total,
        "network_voxels": int(prediction.network_voxels),
        "network_voxels_per_s": prediction.network_voxels / t_pred,
        "head_voxels_per_s": n / total,
        "whole_volume_40_slices_voxels_per_s": slab.size / t_slab,
        "whole_volume_extrapolated_s": n / (slab.size / t_slab),
        "dla_nonzero_fraction": float(np.count_nonzero(dla) / n),
        "paper_voxels_per_s_per_gpu": PAPER_VOXELS_PER_S_PER_GPU,
        "paper_rate_whole_head_h": n / PAPER_VOXELS_PER_S_PER_GPU / 3600,
        "budget_s": BUDGET_S,
        "load_average_end": list(os.getloadavg()),
        "within_budget": total < BUDGET_S,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": torch.get_num_threads(),
        },
    }
    del slab_prediction
    rows = [
        ("phantom 400x512x512", f"{t_phantom:.1f} s"),
        (
            "candidates (fill >= 100 HU, dilated)",
            f"{t_cand:.1f} s, {100 * results['candidates_fraction']:.1f}% of voxels",
        ),
        (
            "dense prediction of the candidates",
            f"{t_pred:.1f} s, {results['network_voxels_per_s']:,.0f} network voxels/s",
        ),
        ("3D-DLA volume", f"{t_dla:.2f} s"),
        (
            "whole head, end to end",
            f"{total:.1f} s ({results['head_voxels_per_s']:,.0f} voxels/s; budget {BUDGET_S:.0f} s)",
        ),
        (
            "no candidates (40 slices measured)",
            f"{results['whole_volume_extrapolated_s']:.0f} s for the head",
        ),
        ("paper's 2,500 voxels/s/GPU, whole head", f"{results['paper_rate_whole_head_h']:.1f} h"),
        ("peak RSS", f"{results['peak_rss_gb']:.1f} GB"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    out = args.out
    out.write_text(json.dumps(results, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
