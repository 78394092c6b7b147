"""Load test: annotators scrolling slices, brushing and committing, and readers answering, all at once, against
gunicorn + PostgreSQL + Redis on this machine (loopback only, bounded in time).

Setup (all created here, removed afterwards): a PostgreSQL database ``dla_bench_<pid>`` (``createdb`` over the
Unix socket), a temporary var/ folder with the volume store, Redis database 13 as the Celery broker (no worker:
the cines that commits queue stay queued; the keys this run created are deleted at the end), gunicorn with
``--workers`` processes x ``--threads`` threads (gthread) on a free 127.0.0.1 port. Seed (``manage.py shell``):
one phantom subject of ``--shape`` (default 400x512x512, the performance contract's volume) made by
``dla.phantoms.make_subject``, stored as one study per annotator (fill and subtracted volumes, same voxels);
``--cases`` small phantom studies (``--case-shape``, default 96^3) with a DLA volume (vessel truth voxels of the
fill, as the reader tests do), an open reader study with the default questions, every reader assigned, and the
cines precomputed as the worker would at opening.

Load (a second process: this one; the server runs in gunicorn's), one thread per user, closed loop with think
time: an annotator opens a draft of their study (POST /api/drafts/), then repeats: scroll ``--scroll`` axial slices
(GET /api/volumes/{id}/slice/?axis=z&index=k, alternating format=raw and format=png), apply a small sphere brush
(POST /api/drafts/{id}/ops/), and every ``--commit-every`` brushes commit (POST /api/drafts/{id}/commit/). A reader
repeats: list their studies (GET /api/reading-studies/), open the next case (GET /api/reading/{token}/), fetch
both images at two angles (GET /api/reading/{token}/image/{A|B}/?angle=...), save answers (PUT
/api/reading/{token}/answers/). Every non-2xx answer and every exception counts as an error.

Prints a table (requests, requests/s, p50/p95/p99/max latency per endpoint) and writes bench/results/load.json.
Usage: ``.venv/bin/python bench/bench_load.py [--seconds 60] [--annotators 4] [--readers 4] [--shape 400,512,512]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
PG_HOST = "/var/run/postgresql"
REDIS_URL = "redis://127.0.0.1:6379/13"

SEED = r"""
import json, os, time
import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from dla.classes import VESSEL
from annotations.models import Study, Volume
from dla.phantoms import make_subject
from reader_study import services
from reader_study.models import Assignment, ReaderStudy

cfg = json.loads(os.environ["BENCH_SEED"])
t0 = time.perf_counter()
User = get_user_model()
def user(name, role):
    u = User.objects.create_user(name, password="bench-password-123")
    u.groups.add(Group.objects.get_or_create(name=role)[0])
    return u, Token.objects.create(user=u).key
admin, _ = user("bench-admin", "Admin")
subject = make_subject(tuple(cfg["shape"]), seed=0)
phantom_s = time.perf_counter() - t0
annotators = []
for i in range(cfg["annotators"]):
    u, token = user(f"annotator{i}", "Annotator")
    study = Study.objects.create(pseudonym=f"LOAD-{i:02d}", patient_pseudonym=f"PT-LOAD{i:02d}", source="phantom")
    fill = Volume.create_from_array(study=study, role="fill", array=subject.fill_hu, spacing_mm=subject.spacing_mm,
                                    affine_lps=subject.affine_lps, source="phantom")
    Volume.create_from_array(study=study, role="subtracted", array=subject.subtracted_hu,
                             spacing_mm=subject.spacing_mm, affine_lps=subject.affine_lps, source="phantom")
    annotators.append({"token": token, "study": study.pk, "fill": fill.pk, "shape": fill.shape})
cases = []
for i in range(cfg["cases"]):
    small = make_subject(tuple(cfg["case_shape"]), seed=100 + i)
    study = Study.objects.create(pseudonym=f"CASE-{i:02d}", patient_pseudonym=f"PT-CASE{i:02d}", source="phantom")
    for role, array in (("fill", small.fill_hu), ("subtracted", small.subtracted_hu)):
        Volume.create_from_array(study=study, role=role, array=array, spacing_mm=small.spacing_mm,
                                 affine_lps=small.affine_lps, source="phantom")
    dla = np.where(small.truth == VESSEL, small.fill_hu, -1000).astype(np.int16)
    Volume.create_from_array(study=study, role="dla", array=dla, spacing_mm=small.spacing_mm,
                             affine_lps=small.affine_lps, source="bench")
    cases.append(study.pk)
rs = ReaderStudy.objects.create(title="load test", created_by=admin, seed=1)
services.add_default_questions(rs)
services.add_cases(rs, cases)
readers = []
reader_users = [user(f"reader{i}", "Reader") for i in range(cfg["readers"])]
services.add_readers(rs, [u.pk for u, _ in reader_users])
services.open_study(rs)
for case in rs.cases.all():  # what the cine task does when a study opens
    services.ensure_cine(case.dsa_volume)
    services.ensure_cine(case.dla_volume)
questions = {q.key: q.pk for q in rs.questions.all()}
for u, token in reader_users:
    tokens = list(Assignment.objects.filter(reader__user=u, reader__reader_study=rs).order_by("position")
                  .values_list("token", flat=True))
    readers.append({"token": token, "assignments": tokens})
print("SEED" + json.dumps({"annotators": annotators, "readers": readers, "questions": questions,
                           "phantom_s": phantom_s, "seed_s": time.perf_counter() - t0}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, env=None, timeout=600) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


class Recorder:
    """Latencies and errors per endpoint name, shared by the user threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.warmup_errors: list[str] = []
        self.recording = False

    def call(self, session: requests.Session, name: str, method: str, url: str, **kwargs):
        t0 = time.perf_counter()
        try:
            response = session.request(method, url, timeout=60, **kwargs)
            elapsed = time.perf_counter() - t0
            ok = 200 <= response.status_code < 300
            error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
        except requests.RequestException as exc:
            elapsed, response, error = time.perf_counter() - t0, None, f"{type(exc).__name__}: {exc}"
        with self.lock:
            if self.recording:
                self.latencies[name].append(elapsed)
                if error:
                    self.errors[name].append(error)
            elif error:
                self.warmup_errors.append(f"{name}: {error}")
        return response


def annotator_loop(base, user, rec: Recorder, stop: threading.Event, args, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {user['token']}"
    draft = rec.call(
        session, "POST /api/drafts/", "POST", f"{base}/api/drafts/", json={"study": user["study"]}
    )
    if draft is None or draft.status_code != 201:
        return
    draft_id = draft.json()["id"]
    nz, ny, nx = user["shape"]
    z = rng.randrange(nz)
    brushes = 0
    while not stop.is_set():
        for k in range(args.scroll):
            z = min(nz - 1, max(0, z + rng.choice((-1, 1))))
            fmt = "raw" if k % 2 == 0 else "png"
            rec.call(
                session,
                f"GET /api/volumes/{{id}}/slice/ ({fmt})",
                "GET",
                f"{base}/api/volumes/{user['fill']}/slice/?axis=z&index={z}&format={fmt}",
            )
            time.sleep(args.scroll_think)
            if stop.is_set():
                return
        center = [z, rng.randrange(ny // 4, 3 * ny // 4), rng.randrange(nx // 4, 3 * nx // 4)]
        op = {
            "op": "brush",
            "center_zyx": center,
            "radius_mm": 3,
            "label": rng.choice((1, 2, 3)),
            "shape": "sphere",
        }
        rec.call(
            session,
            "POST /api/drafts/{id}/ops/",
            "POST",
            f"{base}/api/drafts/{draft_id}/ops/",
            json={"op": op},
        )
        brushes += 1
        time.sleep(args.edit_think)
        if brushes % args.commit_every == 0 and not stop.is_set():
            rec.call(
                session,
                "POST /api/drafts/{id}/commit/",
                "POST",
                f"{base}/api/drafts/{draft_id}/commit/",
                json={"message": f"load test edit {brushes}"},
            )
            time.sleep(args.edit_think)


def reader_loop(base, user, questions, rec: Recorder, stop: threading.Event, args, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {user['token']}"
    position = 0
    while not stop.is_set():
        rec.call(session, "GET /api/reading-studies/", "GET", f"{base}/api/reading-studies/")
        token = user["assignments"][position % len(user["assignments"])]
        position += 1
        case = rec.call(session, "GET /api/reading/{token}/", "GET", f"{base}/api/reading/{token}/")
        images = case.json().get("images", ["A", "B"]) if case is not None and case.ok else ["A", "B"]
        for image in images:
            for angle in rng.sample(range(0, 360, 10), 2):
                rec.call(
                    session,
                    "GET /api/reading/{token}/image/{image}/",
                    "GET",
                    f"{base}/api/reading/{token}/image/{image}/?angle={angle}",
                )
                time.sleep(args.read_think / 4)
        answers = [
            {"question": questions[key], "image": image, "value": value}
            for image in images
            for key, value in (
                ("residual_bone", rng.random() < 0.3),
                ("artifact_severity", rng.randrange(4)),
                ("small_vessel_conspicuity", rng.randrange(1, 6)),
                ("diagnostic_confidence", rng.randrange(1, 6)),
            )
        ]
        rec.call(
            session,
            "PUT /api/reading/{token}/answers/",
            "PUT",
            f"{base}/api/reading/{token}/answers/",
            json={"answers": answers, "elapsed_s": args.read_think},
        )
        time.sleep(args.read_think)


def pct(values, q) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000.0, q)), 1) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured duration")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of the same load before measuring")
    ap.add_argument("--annotators", type=int, default=4)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--shape", default="400,512,512", help="annotators' volume z,y,x")
    ap.add_argument("--cases", type=int, default=4, help="reader-study cases")
    ap.add_argument("--case-shape", default="96,96,96", help="reader-study case volumes z,y,x")
    ap.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    ap.add_argument("--scroll", type=int, default=10, help="slices scrolled between two brush strokes")
    ap.add_argument("--scroll-think", type=float, default=0.05, help="seconds between two slices (20/s)")
    ap.add_argument("--edit-think", type=float, default=0.5, help="seconds after a brush stroke or a commit")
    ap.add_argument("--commit-every", type=int, default=5, help="brush strokes per commit")
    ap.add_argument("--read-think", type=float, default=1.0, help="seconds a reader looks at a case")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "load.json"))
    args = ap.parse_args()
    shape = [int(n) for n in args.shape.split(",")]
    case_shape = [int(n) for n in args.case_shape.split(",")]

    import redis

    broker = redis.Redis.from_url(REDIS_URL)
    keys_before = set(broker.scan_iter())
    db_name = f"dla_bench_{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="bench-load-")
    server = None
    started = time.monotonic()
    run(["createdb", "-h", PG_HOST, db_name])
    try:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="dla_web.settings",
            SECRET_KEY="bench-only-secret-key-0123456789abcdef",
            DEBUG="0",
            DLA_VAR_DIR=tmp,
            DLA_STORAGE_ROOT=str(Path(tmp) / "storage"),
            DATABASE_URL=f"postgres:///{db_name}?host={PG_HOST}",
            CELERY_BROKER_URL=REDIS_URL,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",
        )
        (Path(tmp) / "static").mkdir()
        run([PY, "manage.py", "migrate", "-v", "0"], env=env)
        env["BENCH_SEED"] = json.dumps(
            {
                "shape": shape,
                "annotators": args.annotators,
                "readers": args.readers,
                "cases": args.cases,
                "case_shape": case_shape,
            }
        )
        out = run([PY, "manage.py", "shell", "-c", SEED], env=env, timeout=900)
        seed = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("SEED"))[4:])
        print(
            f"seeded in {seed['seed_s']:.0f} s (phantom {shape} made in {seed['phantom_s']:.0f} s): "
            f"{args.annotators} annotator studies, {args.cases} reader cases {case_shape}, {args.readers} readers"
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gunicorn = [str(Path(PY).with_name("gunicorn")), "dla_web.wsgi", "-b", f"127.0.0.1:{port}"]
        gunicorn += ["-w", str(args.workers), "-k", "gthread", "--threads", str(args.threads)]
        server = subprocess.Popen(
            [*gunicorn, "--log-level", "warning"], cwd=REPO, env=env, start_new_session=True
        )
        rec = Recorder()
        probe = requests.Session()
        probe.headers["Authorization"] = f"Token {seed['annotators'][0]['token']}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if probe.get(f"{base}/api/me/", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("gunicorn did not start")
            time.sleep(0.3)
        stop = threading.Event()
        threads = [
            threading.Thread(target=annotator_loop, args=(base, user, rec, stop, args, i))
            for i, user in enumerate(seed["annotators"])
        ] + [
            threading.Thread(
                target=reader_loop, args=(base, user, seed["questions"], rec, stop, args, 100 + i)
            )
            for i, user in enumerate(seed["readers"])
        ]
        for thread in threads:  # warm-up (not measured): drafts opened, every worker has imported its modules
            thread.start()
        stop.wait(args.warmup)
        rec.recording = True
        t0 = time.monotonic()
        stop.wait(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(120)
        duration = time.monotonic() - t0
        rec.recording = False
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        subprocess.run(["dropdb", "-h", PG_HOST, "--if-exists", db_name], check=False)
        for key in set(broker.scan_iter()) - keys_before:  # only what this run queued
            broker.delete(key)
        shutil.rmtree(tmp, ignore_errors=True)

    endpoints = {}
    for name in sorted(rec.latencies):
        values = rec.latencies[name]
        endpoints[name] = {
            "requests": len(values),
            "errors": len(rec.errors.get(name, [])),
            "rps": round(len(values) / duration, 2),
            "p50_ms": pct(values, 50),
            "p95_ms": pct(values, 95),
            "p99_ms": pct(values, 99),
            "max_ms": pct(values, 100),
        }
    total = sum(e["requests"] for e in endpoints.values())
    errors = sum(e["errors"] for e in endpoints.values())
    results = {
        "benchmark": "mixed load: annotators scroll slices, brush and commit; readers answer",
        "duration_s": round(duration, 1),
        "concurrency": {"annotators": args.annotators, "readers": args.readers, "users": len(threads)},
        "think_time_s": {
            "between_slices": args.scroll_think,
            "after_edit_or_commit": args.edit_think,
            "reader_per_case": args.read_think,
        },
        "pattern": {"slices_per_brush": args.scroll, "brushes_per_commit": args.commit_every},
        "server": f"gunicorn {args.workers} workers x {args.threads} threads (gthread), PostgreSQL, Redis broker",
        "annotator_volume_zyx": shape,
        "reader_cases": {"count": args.cases, "shape_zyx": case_shape},
        "total_requests": total,
        "throughput_rps": round(total / duration, 1),
        "errors": errors,
        "warmup_seconds": args.warmup,
        "warmup_errors": rec.warmup_errors[:5],
        "first_errors": {k: v[:3] for k, v in rec.errors.items() if v},
        "endpoints": endpoints,
        "seed_s": round(seed["seed_s"], 1),
        "wall_s": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    header = f"{'endpoint':44} {'req':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'err':>4}"
    print(header)
    print("-" * len(header))
    for name, e in endpoints.items():
        print(
            f"{name:44} {e['requests']:6d} {e['rps']:7.2f} {e['p50_ms']:8.1f} {e['p95_ms']:8.1f} "
            f"{e['p99_ms']:8.1f} {e['max_ms']:8.1f} {e['errors']:4d}"
        )
    print(
        f"\n{total} requests in {duration:.1f} s = {results['throughput_rps']} req/s from {len(threads)} users "
        f"({args.annotators} annotators, {args.readers} readers); errors: {errors}; wall time {results['wall_s']} s"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if errors or rec.warmup_errors:
        print("warm-up errors:", rec.warmup_errors[:5])
    if errors:
        raise SystemExit(f"{errors} errors under load: {json.dumps(results['first_errors'])[:2000]}")


if __name__ == "__main__":
    main()
