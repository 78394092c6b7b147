"""Benchmark of the Django layer of the DLA model (issue 6): training throughput of ``services.run_training`` with
the cpu preset on phantom studies, and ``services.run_inference`` of a 256^3 phantom (dense inference + storing
the class map, vessel probability and DLA volumes). Runs against a throw-away SQLite database and storage in
a temporary folder; prints numbers and writes bench/results/training.json.

    .venv/bin/python bench/bench_training.py [--iterations 200] [--size 256]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TMP = tempfile.mkdtemp(prefix="bench-training-")
os.environ.update(DEBUG="1", DLA_VAR_DIR=TMP, DATABASE_URL=f"sqlite:///{TMP}/bench.sqlite3")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dla_web.settings")
os.environ.pop("CELERY_BROKER_URL", None)

import django  # noqa: E402

django.setup()

import torch  # noqa: E402
from django.core.management import call_command  # noqa: E402


def finished(run) -> dict:
    """The result of a run executed in-process; stops the benchmark with the run's error if it failed."""
    if run.state != "succeeded":
        raise SystemExit(f"{run.kind} run {run.pk} {run.state}: {run.error}")
    return run.result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    call_command("migrate", verbosity=0)
    from annotations.labels import _create_version, review
    from annotations.models import Study, Volume
    from dla.phantoms import make_subject
    from inference.tasks import infer_studies, train_model

    def study(seed, shape, cohort, spacing=None):
        s = make_subject(shape, seed=seed, spacing_mm=spacing)
        st = Study.objects.create(pseudonym=f"B{seed}", patient_pseudonym=f"PB{seed}", cohort=cohort)
        for role, arr in (("fill", s.fill_hu), ("truth", s.truth)):
            Volume.create_from_array(
                study=st, role=role, array=arr, spacing_mm=s.spacing_mm, affine_lps=s.affine_lps
            )
        return st, s

    shape = (48, 96, 96)
    for seed, cohort in ((1, "train"), (2, "train"), (3, "train"), (4, "validation")):
        st, s = study(seed, shape, cohort, spacing=(1.5, 1.5, 1.5))
        v = _create_version(
            st, labels=s.truth, parent=None, author=None, message="truth", recipe={}, ops=[], roi=None
        )
        review(v, None, "approved", "")
    run = train_model.create_run(
        params={
            "preset": "cpu",
            "train_config": {"max_iterations": args.iterations, "val_every": max(1, args.iterations // 4)},
            "checkpoint_every": max(1, args.iterations // 2),
        }
    )
    t0 = time.perf_counter()
    result = finished(train_model.run_here(run))
    train_wall = time.perf_counter() - t0
    print(
        f"training: {result['iterations']} it in {result['elapsed_s']:.1f} s (wall {train_wall:.1f} s), "
        f"{result['voxels_per_s']:,.0f} labelled voxels/s, {result['iterations'] / result['elapsed_s']:.2f} it/s"
    )

    big, _ = study(9, (args.size,) * 3, "test")
    run = infer_studies.create_run(
        params={"model_version_id": result["model_version_id"], "study_ids": [big.pk], "cine": False}
    )
    t0 = time.perf_counter()
    inf = finished(infer_studies.run_here(run))
    infer_wall = time.perf_counter() - t0
    s = inf["studies"][0]
    print(
        f"inference {args.size}^3 (cpu preset, candidates >= 100 HU): network {s['elapsed_s']:.1f} s, "
        f"total with storing 3 volumes {infer_wall:.1f} s, {s['network_voxels']:,} voxels through the network"
    )
    out = {
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__},
        "training": {
            "preset": "cpu",
            "volumes": [list(shape)] * 3,
            "iterations": result["iterations"],
            "elapsed_s": result["elapsed_s"],
            "wall_s_incl_loading_and_registration": train_wall,
            "labelled_voxels_per_s": result["voxels_per_s"],
            "iterations_per_s": result["iterations"] / result["elapsed_s"],
            "final_val_error": result["best_val_error"],
        },
        "inference": {
            "volume": [args.size] * 3,
            "preset": "cpu",
            "predict_s": s["elapsed_s"],
            "total_s_incl_load_and_store": infer_wall,
            "network_voxels": s["network_voxels"],
            "voxels_per_s": s["voxels_per_s"],
        },
    }
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "training.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
