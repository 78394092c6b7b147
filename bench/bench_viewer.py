"""Benchmark the viewer's rendering API against a real server: slice latency (raw int16 and PNG) with 8
concurrent clients on a 512x512x400 volume, MIP latency at a cached angle, first render of a new angle, and the
time of a 36-angle cine.

Starts gunicorn (2 workers x 4 threads) on a loopback port with a temporary database (SQLite by default, or
``--database-url`` for PostgreSQL) and a temporary volume store holding a generated head-like volume, then
drives it with threads using urllib and token auth. Prints a table and saves bench/results/viewer.json.
Usage: ``.venv/bin/python bench/bench_viewer.py [--seconds 10] [--clients 8] [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

SETUP = r"""
import json, numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from annotations.models import Study, Volume
user = get_user_model().objects.create_user("bench", password="bench-password-123")
user.groups.add(Group.objects.get_or_create(name="Annotator")[0])
token = Token.objects.create(user=user)
rng = np.random.default_rng(0)
nz, ny, nx = SHAPE
yy, xx = np.mgrid[:ny, :nx]
r = np.hypot((yy - ny / 2) / (ny / 2), (xx - nx / 2) / (nx / 2))
plane = np.full((ny, nx), -1000, np.int16)
plane[r < 0.9] = 1200
plane[r < 0.82] = 40
vol = np.repeat(plane[None], nz, axis=0)
for _ in range(30):  # tilted bright tubes as vessels
    y0, x0 = rng.integers(ny // 4, 3 * ny // 4), rng.integers(nx // 4, 3 * nx // 4)
    dy, dx = rng.uniform(-0.4, 0.4, 2)
    for z in range(0, nz, 1):
        cy, cx = int(y0 + dy * z) % ny, int(x0 + dx * z) % nx
        vol[z, max(cy - 2, 0):cy + 3, max(cx - 2, 0):cx + 3] = 450
vol += rng.integers(-15, 16, vol.shape).astype(np.int16)
study = Study.objects.create(pseudonym="BENCH", patient_pseudonym="PT-BENCH")
affine = np.diag([0.45, 0.45, 0.5, 1.0])
v = Volume.create_from_array(study=study, role="fill", array=vol, spacing_mm=(0.5, 0.45, 0.45), affine_lps=affine)
print("SETUP" + json.dumps({"token": token.key, "volume": v.pk}))
"""

CINE = r"""
import json, time
from annotations import mip_cache
from annotations.models import Volume
v = Volume.objects.get(pk=VOLUME_ID)
t0 = time.perf_counter()
computed = mip_cache.fill_cine(mip_cache.volume_source(v))  # the cine task's work: 36 upright frames
print("CINE" + json.dumps({"seconds": time.perf_counter() - t0, "computed": computed}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_manage(env, code: str, marker: str) -> dict:
    out = subprocess.run(
        [PY, "manage.py", "shell", "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise SystemExit(f"setup failed:\n{out.stdout}\n{out.stderr}")
    line = next(x for x in out.stdout.splitlines() if x.startswith(marker))
    return json.loads(line[len(marker) :])


def get(url: str, token: str) -> tuple[float, int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
        headers = dict(response.headers)
    return time.perf_counter() - t0, len(body), headers


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def load(base, token, volume, shape, *, clients: int, seconds: float, fmt: str) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        mine = []
        while time.monotonic() < stop:
            axis = rng.choice("zzyx")  # axial scrolling dominates
            n = shape["zyx".index(axis)]
            url = f"{base}/api/volumes/{volume}/slice/?axis={axis}&index={rng.randrange(n)}&format={fmt}"
            if fmt == "png":
                url += "&preset=vessel"
            try:
                dt, _, _ = get(url, token)
                mine.append(dt)
            except Exception as exc:  # noqa: BLE001 - reported, not hidden
                with lock:
                    errors.append(str(exc))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "throughput_rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(pct(latencies, 50), 1),
        "p95_ms": round(pct(latencies, 95), 1),
        "max_ms": round(pct(latencies, 100), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--shape", default="400,512,512", help="z,y,x")
    ap.add_argument("--database-url", default="", help="default: a temporary SQLite file")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "viewer.json"))
    args = ap.parse_args()
    shape = [int(n) for n in args.shape.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="dla_web.settings",
            SECRET_KEY="bench-only-secret-key-0123456789abcdef",
            DEBUG="0",
            DLA_VAR_DIR=tmp,
            DLA_STORAGE_ROOT=str(Path(tmp) / "storage"),
            DATABASE_URL=args.database_url or f"sqlite:///{tmp}/bench.sqlite3",
            ALLOWED_HOSTS="127.0.0.1,localhost",
        )
        subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True, timeout=600)
        t0 = time.perf_counter()
        ids = run_manage(env, SETUP.replace("SHAPE", repr(tuple(shape))), "SETUP")
        print(f"volume {shape} generated and stored in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                str(Path(PY).with_name("gunicorn")),
                "dla_web.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "2",
                "-k",
                "gthread",
                "--threads",
                "4",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    get(f"{base}/api/volumes/{ids['volume']}/", ids["token"])
                    break
                except Exception:  # noqa: BLE001 - server still starting
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not start")
                    time.sleep(0.3)
            token, volume = ids["token"], ids["volume"]
            for axis in "zyx":  # warm the page cache and both workers
                for i in range(0, shape["zyx".index(axis)], 16):
                    get(f"{base}/api/volumes/{volume}/slice/?axis={axis}&index={i}", token)
            results: dict = {
                "shape_zyx": shape,
                "clients": args.clients,
                "seconds_per_phase": args.seconds,
                "server": "gunicorn 2 workers x 4 threads (gthread)",
                "database": "postgresql" if args.database_url.startswith("postgres") else "sqlite",
            }
            results["slice_raw"] = load(
                base, token, volume, shape, clients=args.clients, seconds=args.seconds, fmt="raw"
            )
            results["slice_png"] = load(
                base, token, volume, shape, clients=args.clients, seconds=args.seconds, fmt="png"
            )
            # MIPs: first render of new angles (per worker process the first one also subsamples the volume)
            first = []
            for angle in (13.0, 47.0, 101.0, 163.0, 229.0, 317.0):
                dt, _, headers = get(f"{base}/api/volumes/{volume}/mip/?angle={angle}", token)
                assert headers.get("X-Cache") == "miss", headers
                first.append(dt)
            cached = []
            for _ in range(30):
                dt, _, headers = get(f"{base}/api/volumes/{volume}/mip/?angle=47", token)
                assert headers.get("X-Cache") == "hit"
                cached.append(dt)
            results["mip_new_angle"] = {
                "angles": 6,
                "first_request_ms": round(first[0] * 1000, 1),
                "p50_ms": round(pct(first, 50), 1),
                "max_ms": round(pct(first, 100), 1),
            }
            results["mip_cached_angle"] = {
                "requests": 30,
                "p50_ms": round(pct(cached, 50), 1),
                "p95_ms": round(pct(cached, 95), 1),
            }
        finally:
            server.terminate()
            server.wait(20)
        results["cine_36_angles"] = run_manage(env, CINE.replace("VOLUME_ID", str(ids["volume"])), "CINE")
        results["cine_36_angles"]["seconds"] = round(results["cine_36_angles"]["seconds"], 2)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps(results, indent=2))
    print(
        f"\nslice raw p95 {results['slice_raw']['p95_ms']} ms, png p95 {results['slice_png']['p95_ms']} ms "
        f"({args.clients} clients); MIP cached p95 {results['mip_cached_angle']['p95_ms']} ms, new angle max "
        f"{results['mip_new_angle']['max_ms']} ms; cine 36 angles {results['cine_36_angles']['seconds']} s"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
