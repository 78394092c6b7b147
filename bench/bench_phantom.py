"""Benchmark of dla.phantoms.make_subject: wall time at 64^3, 128^3 and 256^3 (prints a table and
writes bench/results/phantom.json).  ``--preview PATH`` also saves a PNG (axial slice and MIPs of the fill and
the motion-corrupted subtraction) for visual checking; ``--skip-256`` skips the large grid.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dla.classes import BONE, VESSEL  # noqa: E402
from dla.phantoms import make_subject  # noqa: E402


def _window(img, lo, hi):
    return (np.clip((img.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def save_preview(path: Path, shape=(256, 256, 256), seed=3) -> dict:
    """PNG grid: rows fill / subtracted (with motion), columns axial slice, axial MIP, coronal MIP."""
    from PIL import Image, ImageDraw

    subj = make_subject(
        shape,
        spacing_mm=180.0 / min(shape),
        seed=seed,
        motion={"rotation_deg": (1.0, -0.8, 0.6), "translation_mm": (0.8, -1.0, 1.2)},
        injection="ica_left",
        aneurysm={"site": "mca_left", "radius_mm": 3.5},
    )
    still = make_subject(
        shape,
        spacing_mm=180.0 / min(shape),
        seed=seed,
        motion=False,
        injection="ica_left",
        aneurysm={"site": "mca_left", "radius_mm": 3.5},
    )
    # axial slice through the otic capsules (where the ICA crosses the skull base)
    zc = int(np.argmax((subj.regions["otic_capsule"]).sum(axis=(1, 2))))
    panels = []
    for vol, lo, hi, title in (
        (subj.fill_hu, -200, 1800, "fill"),
        (subj.subtracted_hu, -300, 1200, "subtracted"),
        (still.subtracted_hu, -300, 1200, "subtracted no motion"),
    ):
        row = [
            _window(vol[zc], lo, hi),
            _window(vol.max(axis=0), lo, hi),
            _window(vol.max(axis=1)[::-1], lo, hi),  # coronal MIP, superior up
        ]
        panels.append((title, row))
    h, w = panels[0][1][0].shape
    canvas = Image.new("L", (3 * w, 3 * h), 0)
    draw = ImageDraw.Draw(canvas)
    for r, (title, row) in enumerate(panels):
        for c, img in enumerate(row):
            im = Image.fromarray(img)
            if im.size != (w, h):
                im = im.resize((w, h))
            canvas.paste(im, (c * w, r * h))
            draw.text(
                (c * w + 4, r * h + 4),
                f"{title} {('axial z=' + str(zc), 'axial MIP', 'coronal MIP')[c]}",
                fill=255,
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return {"path": str(path), "shape_zyx": list(shape), "seed": seed, "axial_slice": zc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-256", action="store_true")
    ap.add_argument("--preview", type=Path, default=None)
    args = ap.parse_args()
    sizes = [(64, 5), (128, 3)] + ([] if args.skip_256 else [(256, 2)])
    rows = []
    print(
        f"{'shape':>10} {'spacing_mm':>10} {'runs':>4} {'median_s':>9} {'min_s':>7} {'vessel_vox':>10} "
        f"{'bone_vox':>9} {'segments':>8}"
    )
    for n, runs in sizes:
        times = []
        for r in range(runs):
            t0 = time.perf_counter()
            subj = make_subject((n, n, n), seed=r, motion=True)  # motion on: the slowest path
            times.append(time.perf_counter() - t0)
        row = {
            "shape_zyx": [n, n, n],
            "spacing_mm": subj.spacing_mm[0],
            "runs": runs,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "times_s": times,
            "vessel_voxels": int((subj.truth == VESSEL).sum()),
            "bone_voxels": int((subj.truth == BONE).sum()),
            "segments": subj.params["n_vessel_segments_rasterized"],
        }
        rows.append(row)
        print(
            f"{n:>4}^3     {row['spacing_mm']:>10.3f} {runs:>4} {row['median_s']:>9.3f} {row['min_s']:>7.3f} "
            f"{row['vessel_voxels']:>10} {row['bone_voxels']:>9} {row['segments']:>8}"
        )
    out = {
        "benchmark": "phantom.make_subject (motion=True)",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "results": rows,
    }
    if args.preview is not None:
        out["preview"] = save_preview(args.preview)
        print("preview:", out["preview"])
    res = ROOT / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "phantom.json").write_text(json.dumps(out, indent=2))
    print("wrote", res / "phantom.json")


if __name__ == "__main__":
    main()
