"""Label options against the phantom truth: the paper's one threshold vs hysteresis growing, the local edge and
vesselness (issue 14, "labels beyond one threshold").

For phantom subjects of the paper's cohort plan (``cohort_plan(105, 0)``, 128^3 at 1.41 mm, the
``reproduce_paper`` grid) it runs the recipe with each option set, no click and no clean-up (what an annotator
gets from Apply), and scores the vessel label against the truth with ``dla.stats.truth.TruthReference``: whole-head
Dice / sensitivity / PPV, sensitivity of the vessels of radius >= one voxel, and centreline sensitivity. The recipe
defaults are chosen on the train and validation subjects only (``--split train,validation``, the default); the test
cohort can be scored afterwards with ``--split test`` to check the choice. Motion-free and motion subjects are
reported apart (motion leaves residual bone that no vessel rule removes; a reviewer does). Prints a table and writes
bench/results/label_options.json.
Run: .venv/bin/python bench/bench_label_options.py [--subjects N] [--split train,validation] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dla.classes import VESSEL  # noqa: E402
from dla.labeling.recipe import RecipeParams, run_recipe  # noqa: E402
from dla.phantoms import cohort_plan, subject_from_plan, vessel_radii_from_params  # noqa: E402
from dla.stats.truth import TruthReference  # noqa: E402

THRESHOLD_ONLY = {"vessel_low_threshold_hu": None, "vessel_edge_fraction": None}
OPTIONS = {
    "threshold 600 HU (paper)": THRESHOLD_ONLY,
    "hysteresis 100 HU": {"vessel_edge_fraction": None},
    "hysteresis 100 HU + edge 0.50 (default)": {},
    "hysteresis 100 HU + edge 0.55": {"vessel_edge_fraction": 0.55},
    "hysteresis 100 HU + edge 0.60": {"vessel_edge_fraction": 0.6},
    "hysteresis 150 HU + edge 0.50": {"vessel_low_threshold_hu": 150.0},
    "default + vesselness 1.0-2.1 mm": {"vesselness_sigmas_mm": [1.0, 1.4, 2.1]},
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=12, help="subjects of the chosen splits to score")
    ap.add_argument("--split", default="train,validation")
    ap.add_argument("--quick", action="store_true", help="4 subjects, no vesselness")
    args = ap.parse_args(argv)
    splits = set(args.split.split(","))
    n = 4 if args.quick else args.subjects
    options = {k: v for k, v in OPTIONS.items() if not (args.quick and "vesselness" in k)}
    plan = [e for e in cohort_plan(105, 0) if e["split"] in splits][:n]
    rows: dict[str, dict[str, list]] = {}
    times: dict[str, list[float]] = {}
    for e in plan:
        s = subject_from_plan(e, (128, 128, 128))
        radii = vessel_radii_from_params(s.params)
        reference = TruthReference(s.truth == VESSEL, radii.radius_mm, s.spacing_mm)
        group = "motion" if e["motion"] else "motion-free"
        for name, kw in options.items():
            t0 = time.perf_counter()
            res = run_recipe(s.fill_hu, s.subtracted_hu, s.spacing_mm, RecipeParams.from_dict(dict(kw)))
            times.setdefault(name, []).append(time.perf_counter() - t0)
            rows.setdefault(f"{group} | {name}", {}).setdefault(
                e["subject_id"], reference.score(res.labels == VESSEL).headline()
            )
        print(f"{e['subject_id']} ({e['split']}, {group}) scored", flush=True)
    summary = {}
    print(
        f"\nrecipe labels vs phantom truth, splits {sorted(splits)}, 128^3 at {s.spacing_mm[0]:.2f} mm, no click"
    )
    print(
        f"{'group | option':58s} {'n':>3s} {'Dice':>6s} {'sens':>6s} {'PPV':>6s} {'r>=1vx':>6s} {'cl-sens':>7s} {'s':>5s}"
    )
    for key, per in rows.items():
        vals = {
            m: float(np.mean([v[m] for v in per.values() if v[m] is not None]))
            for m in next(iter(per.values()))
        }
        name = key.split(" | ", 1)[1]
        vals["recipe_s"] = float(np.mean(times[name]))
        vals["n"] = len(per)
        summary[key] = {"mean": vals, "per_subject": per}
        print(
            f"{key:58s} {len(per):3d} {vals['dice']:6.3f} {vals['sensitivity']:6.3f} {vals['ppv']:6.3f} "
            f"{vals['resolved_sensitivity']:6.3f} {vals['centreline_sensitivity']:7.3f} {vals['recipe_s']:5.2f}"
        )
    out = {
        "splits": sorted(splits),
        "subjects": [e["subject_id"] for e in plan],
        "grid": [128, 128, 128],
        "spacing_mm": list(s.spacing_mm),
        "options": options,
        "loadavg": os.getloadavg(),
        "results": summary,
    }
    path = (
        ROOT
        / "bench"
        / "results"
        / ("label_options.json" if splits != {"test"} else "label_options_test.json")
    )
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path.relative_to(ROOT)} (load average {os.getloadavg()[0]:.1f})")
    return out


if __name__ == "__main__":
    main()
