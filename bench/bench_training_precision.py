"""Training and inference speed of the voxel net in float32 vs bfloat16 autocast on this CPU, in one run.

``TrainConfig.amp`` (default on) autocasts the training forward pass to bfloat16 where oneDNN has native bf16
(``dla.model.train.autocast_dtype``); this measures what that buys per iteration of the ``reproduce_paper``
defaults (cpu preset, 8 dense slabs of 24x24 outputs) with real sampling from synthetic head volumes, paired
and interleaved (float32, bf16, float32, bf16, ...) so load changes hit both. Also the cost of mirrored
inference (``predict_volume(mirror=True)``) on a 128^3 head. Prints a table and writes
bench/results/training_precision.json. About 2 minutes on 2 cores.
Run: .venv/bin/python bench/bench_training_precision.py [--iterations 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_inference import head_phantom  # noqa: E402

from dla.model.dense import intensity_candidates, predict_volume  # noqa: E402
from dla.model.network import build_model  # noqa: E402
from dla.model.train import TrainConfig, TrainingData, autocast_dtype, train  # noqa: E402


def ms_per_iteration(data, val, amp: bool, iterations: int) -> tuple[float, str]:
    torch.manual_seed(0)
    model = build_model("cpu")
    cfg = TrainConfig(
        max_iterations=iterations,
        val_every=iterations,
        val_samples_per_class=50,
        lr_values=(3e-3,),
        lr_boundaries_epochs=(),
        amp=amp,
    )
    result = train(model, data, val, cfg)
    return 1000.0 * result.elapsed_s / iterations, result.precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pairs = [head_phantom((64, 128, 128), seed=s)[:2] for s in (1, 2)]
    data, val = TrainingData(pairs), TrainingData(pairs[:1], name="validation")
    times = {True: [], False: []}
    precision = {}
    for _ in range(args.rounds):
        for amp in (False, True):
            ms, precision[amp] = ms_per_iteration(data, val, amp, args.iterations)
            times[amp].append(ms)
    fp32, bf16 = float(np.median(times[False])), float(np.median(times[True]))
    fill = head_phantom((128, 128, 128), seed=3)[0]
    cand = intensity_candidates(fill)
    model = build_model("cpu").eval()
    infer = {}
    for mirror in (False, True, False, True):
        t0 = time.perf_counter()
        predict_volume(model, fill, candidate_mask=cand, mirror=mirror)
        infer.setdefault(mirror, []).append(time.perf_counter() - t0)
    one, two = float(np.median(infer[False])), float(np.median(infer[True]))
    out = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "bf16_autocast_dtype": str(autocast_dtype("cpu")),
            "load_average": os.getloadavg(),
        },
        "iterations_per_run": args.iterations,
        "training_ms_per_iteration": {
            "float32": times[False],
            "amp": times[True],
            "amp_precision": precision[True],
        },
        "training_speedup_amp": fp32 / bf16,
        "inference_s_128cubed": {"one_pass": infer[False], "mirror": infer[True]},
        "inference_mirror_cost_ratio": two / one,
    }
    print(
        f"training, cpu preset, 8 slabs of 24x24 ({args.rounds} paired rounds of {args.iterations} iterations)"
    )
    print(f"  float32                 {fp32:7.1f} ms/iteration  {times[False]}")
    print(f"  amp ({precision[True]:<8})        {bf16:7.1f} ms/iteration  {times[True]}")
    print(f"  speed-up                {fp32 / bf16:7.2f}x")
    print(
        f"inference, 128^3 head, candidates >= 100 HU: one pass {one:.2f} s, mirrored {two:.2f} s ({two / one:.2f}x)"
    )
    print(f"load average {os.getloadavg()}")
    path = Path(__file__).resolve().parent / "results" / "training_precision.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
