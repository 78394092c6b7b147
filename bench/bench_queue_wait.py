"""How long an interactive task waits behind background MIP renders (issue 15 item 5), on `make run`'s embedded
defaults (SQLite, the filesystem broker, local workers), in two layouts measured in one run:

- ``shared``: the layout before: cines go to the ``default`` queue, one worker consumes every queue;
- ``split``: cines go to their own ``render`` queue with their own worker process (as `make run`, the compose
  file and the README's scale-out section now start it).

Each round enqueues ``--cines`` cine tasks (36 MIPs each of a distinct ``--size``^3 volume), then an interactive
task (the worker self-test, one step) one second later, and records how long that task waited to start
(TaskRun.started_at - created_at) and when the renders finished. Workers are warmed up (each has served a task)
before a round starts, so the wait is queueing only. Prints a table and writes
bench/results/queue_wait.json.

    .venv/bin/python bench/bench_queue_wait.py [--cines 8] [--size 128] [--rounds 2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TMP = tempfile.mkdtemp(prefix="bench-queue-")
ENV = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
ENV.update(DEBUG="1", DLA_VAR_DIR=TMP, DJANGO_SETTINGS_MODULE="dla_web.settings", PYTHONUNBUFFERED="1")
os.environ.clear()
os.environ.update(ENV)

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

CELERY = [
    sys.executable,
    "-m",
    "celery",
    "-A",
    "dla_web",
    "worker",
    "--concurrency",
    "1",
    "--loglevel",
    "WARNING",
]
LAYOUTS = {
    "shared": {"cine_queue": "default", "workers": [["-Q", "default,gpu,render", "-n", "all@%h"]]},
    "split": {
        "cine_queue": "render",
        "workers": [["-Q", "default,gpu", "-n", "main@%h"], ["-Q", "render", "-n", "render@%h"]],
    },
}


def make_volumes(n: int, size: int):
    from annotations.models import Study, Volume
    from dla.phantoms import make_subject

    subject = make_subject((size, size, size), seed=1, motion=False)
    tag = Study.objects.count() + 1
    study = Study.objects.create(pseudonym=f"BENCH-Q{tag}", patient_pseudonym=f"PBENCH-Q{tag}")
    return [
        Volume.create_from_array(
            study=study,
            role="fill",
            array=(subject.fill_hu + i).astype(np.int16),  # distinct content: nothing shared in the cache
            spacing_mm=subject.spacing_mm,
            affine_lps=subject.affine_lps,
        )
        for i in range(n)
    ]


def wait_done(runs, timeout_s=1800):
    from dla_web.models import TaskRun

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = set(TaskRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("state", flat=True))
        if states <= {"succeeded", "failed", "cancelled"}:
            return
        time.sleep(0.2)
    raise SystemExit(f"runs {[r.pk for r in runs]} did not finish in {timeout_s} s")


def one_round(layout: str, volumes, tiny) -> dict:
    from annotations.tasks import compute_cine
    from dla_web.models import TaskRun
    from dla_web.tasks import selftest

    spec = LAYOUTS[layout]
    workers = [
        subprocess.Popen(
            [*CELERY, *args], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        for args in spec["workers"]
    ]
    try:
        compute_cine.dla_queue = spec["cine_queue"]  # where this process sends cines
        with transaction.atomic():  # warm up: every worker has started and served one task
            warm = [selftest.enqueue(params={"steps": 1, "step_s": 0.0})]
            warm.append(compute_cine.enqueue(target=tiny, params={"volume_id": tiny.pk, "angles": 2}))
        wait_done(warm)
        with transaction.atomic():
            cines = [compute_cine.enqueue(target=v, params={"volume_id": v.pk}) for v in volumes]
        time.sleep(1.0)
        with transaction.atomic():
            interactive = selftest.enqueue(params={"steps": 1, "step_s": 0.0})
        wait_done([interactive, *cines])
        done = TaskRun.objects.get(pk=interactive.pk)
        renders = list(TaskRun.objects.filter(pk__in=[c.pk for c in cines]))
        return {
            "interactive_wait_s": (done.started_at - done.created_at).total_seconds(),
            "renders_done_s": max((r.finished_at - r.created_at).total_seconds() for r in renders),
            "render_states": sorted({r.state for r in renders}),
        }
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cines", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    call_command("migrate", verbosity=0)
    load_before = os.getloadavg()
    results = {layout: [] for layout in LAYOUTS}
    for r in range(args.rounds):
        for layout in LAYOUTS:  # alternate, each round with fresh volumes (nothing cached)
            volumes = make_volumes(args.cines + 1, args.size)
            results[layout].append(one_round(layout, volumes[1:], volumes[0]))
            print(f"round {r + 1} {layout}: {results[layout][-1]}", flush=True)
    summary = {
        layout: {
            "interactive_wait_s_median": statistics.median(x["interactive_wait_s"] for x in runs),
            "renders_done_s_median": statistics.median(x["renders_done_s"] for x in runs),
        }
        for layout, runs in results.items()
    }
    ratio = summary["shared"]["interactive_wait_s_median"] / max(
        summary["split"]["interactive_wait_s_median"], 1e-3
    )
    out = {
        "command": f"bench/bench_queue_wait.py --cines {args.cines} --size {args.size} --rounds {args.rounds}",
        "load_average_before_after": [load_before, os.getloadavg()],
        "rounds": results,
        "summary": summary,
        "wait_ratio_shared_over_split": ratio,
    }
    print(json.dumps(summary, indent=2))
    print(f"interactive wait: shared/split = {ratio:.1f}x")
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "queue_wait.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
