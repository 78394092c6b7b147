"""Benchmark (issue 18.4): dense prediction of a whole head, each tile's candidate bounding box vs the whole tile.

``predict_volume`` with a candidate mask used to send every tile that held a candidate through the network
whole; it now sends only the bounding box of the tile's candidates (over the slice batch), since every other
voxel is soft tissue with probability 0 anyway. This script measures both on the same 400x512x512 phantom head
at 0.46 mm in one process, alternating (``--repeats`` pairs): the current ``dla.model.dense.predict_volume``
and the whole-tile implementation as it was at commit ``BEFORE`` (loaded from git history, so the comparison
needs the repository's history). Outputs are compared voxel for voxel (class map equal, largest probability
difference). The ``cpu`` preset runs on the whole head; the ``paper`` preset (30 layers) on a slab of
``--paper-slices`` slices from the head's middle, extrapolated to the head by the slab's share of candidate
slices (stated as an extrapolation). Prints a table and writes bench/results/candidate_crop.json with the load
average before and after and the torch thread count.

    .venv/bin/python bench/bench_candidate_crop.py                  # about 6 minutes on 2 idle cores
    .venv/bin/python bench/bench_candidate_crop.py --repeats 1 --paper-slices 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_inference import timed  # noqa: E402  (bench/ is the script's folder, first on sys.path)

from dla.model import dense  # noqa: E402
from dla.model.network import build_model  # noqa: E402
from dla.phantoms import default_spacing_mm, make_subject  # noqa: E402

SHAPE_ZYX = (400, 512, 512)
BEFORE = "0ad987d"  # the last commit whose predict_volume ran whole tiles


def previous_predict_volume(commit: str):
    """``predict_volume`` of dla/model/dense.py at ``commit`` (a module loaded from ``git show``)."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:dla/model/dense.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "dense_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("dense_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.predict_volume


def pair(model, fill, cand, before, repeats: int) -> dict:
    """Alternate before/after ``repeats`` times; min times, outputs compared on the last pair."""
    t_before, t_after = [], []
    for _ in range(repeats):
        old, t = timed(lambda: before(model, fill, candidate_mask=cand))
        t_before.append(t)
        new, t = timed(lambda: dense.predict_volume(model, fill, candidate_mask=cand))
        t_after.append(t)
    diff = np.abs(old.vessel_prob.astype(np.float32) - new.vessel_prob.astype(np.float32))
    return {
        "before_s": t_before,
        "after_s": t_after,
        "speedup_min": min(t_before) / min(t_after),
        "class_map_equal": bool(np.array_equal(old.class_map, new.class_map)),
        "class_map_voxels_differing": int(np.count_nonzero(old.class_map != new.class_map)),
        "vessel_prob_max_abs_diff": float(diff.max()),
        "network_voxels": int(new.network_voxels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="before/after pairs of the cpu preset")
    parser.add_argument("--paper-slices", type=int, default=24, help="slab for the paper preset (0: skip)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "candidate_crop.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = previous_predict_volume(BEFORE)
    load_start = os.getloadavg()
    subject, t_phantom = timed(lambda: make_subject(SHAPE_ZYX, seed=0))
    fill = subject.fill_hu
    del subject
    cand = dense.intensity_candidates(fill, dense.DEFAULT_CANDIDATE_MIN_HU)
    torch.manual_seed(0)
    results: dict = {
        "shape_zyx": list(SHAPE_ZYX),
        "spacing_mm": list(default_spacing_mm(SHAPE_ZYX)),
        "before_commit": BEFORE,
        "torch_threads": torch.get_num_threads(),
        "phantom_s": t_phantom,
        "candidates_fraction": float(cand.mean()),
        "cpu_whole_head": pair(build_model("cpu"), fill, cand, before, args.repeats),
    }
    rows = [("cpu preset, whole head", results["cpu_whole_head"], "")]
    if args.paper_slices:
        z0 = (SHAPE_ZYX[0] - args.paper_slices) // 2
        slab = np.ascontiguousarray(fill[z0 : z0 + args.paper_slices])
        slab_cand = np.ascontiguousarray(cand[z0 : z0 + args.paper_slices])
        paper = pair(build_model("paper"), slab, slab_cand, before, 1)
        head_slices = int(cand.reshape(SHAPE_ZYX[0], -1).any(axis=1).sum())
        scale = head_slices / args.paper_slices
        paper.update(
            slab_slices=args.paper_slices,
            head_candidate_slices=head_slices,
            before_head_extrapolated_s=paper["before_s"][0] * scale,
            after_head_extrapolated_s=paper["after_s"][0] * scale,
        )
        results["paper_middle_slab"] = paper
        rows.append(
            (
                f"paper preset, {args.paper_slices} middle slices",
                paper,
                f"; head extrapolated x{scale:.1f}: {paper['before_head_extrapolated_s']:.0f} s -> "
                f"{paper['after_head_extrapolated_s']:.0f} s",
            )
        )
    results["load_average_start_end"] = [list(load_start), list(os.getloadavg())]
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"candidates {100 * results['candidates_fraction']:.1f}% of {SHAPE_ZYX}; threads {args.threads}")
    for name, r, extra in rows:
        times = " / ".join(f"{b:.1f} -> {a:.1f} s" for b, a in zip(r["before_s"], r["after_s"], strict=True))
        print(
            f"{name}: whole tiles -> candidate boxes {times} (x{r['speedup_min']:.2f}); class maps equal "
            f"{r['class_map_equal']}, vessel prob max diff {r['vessel_prob_max_abs_diff']:.1e}{extra}"
        )
    print(
        f"load average start {load_start[0]:.1f}, end {os.getloadavg()[0]:.1f}; peak RSS {results['peak_rss_gb']:.1f} GB"
    )
    args.out.write_text(json.dumps(results, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
