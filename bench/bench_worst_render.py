"""Memory-bomb load test (issue 16.1): the worst rendering requests from several threads at once against a real
server, while other users scroll slices. Says whether the server stays up, how much memory it takes and how fast
the slices stay.

Server: gunicorn (``--workers`` x ``--threads``, gthread) on a free 127.0.0.1 port, with a temporary SQLite
database and volume store, running the code of a git ref (default HEAD, extracted with ``git archive`` so that
uncommitted edits in the working tree do not count; ``--ref WORKTREE`` runs the working tree) with this
checkout's virtualenv. ``--as-limit-gb`` caps every server process's address space (RLIMIT_AS), so measuring
old, unbounded code cannot take this machine down: an allocation beyond it fails inside the request instead.
Seed (``manage.py shell``): a synthetic 400x512x512 int16 head (``--shape``; rings of skull and soft tissue,
thirty tilted vessels, noise), one committed label version (a brushed ball of vessel) and an open draft with one
more ball, an annotator and a session cookie.

Phases: ``--seconds`` of slices alone (baseline), then the same slices while ``--attackers`` threads fire the
worst MIP requests back to back: the volume, label-version and draft MIP endpoints in turn, at every size in
``--sizes`` (default the cap 512 and the old maximum 1024), tilts 45/-90/30 and a fresh 0.1-degree angle each
time (never a cache hit). ``--slice-clients`` threads time GET /api/volumes/{id}/slice/ (random axis and index,
raw and PNG) throughout. A sampler reads VmRSS and RssAnon of the gunicorn master and workers from
/proc/<pid>/status every 50 ms (psutil is not installed). Prints a summary and writes
bench/results/worst_render.json (``--out``).

Usage: ``.venv/bin/python bench/bench_worst_render.py [--seconds 20] [--attackers 6] [--ref HEAD]``. The code
before the caps, guarded so that it cannot exhaust this machine, was measured with ``--ref 75a7c89
--as-limit-gb 6 --sizes 512 --attackers 2 --seconds 10 --out bench/results/worst_render_before_caps.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

SETUP = r"""
import json, numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model, BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from annotations import labels
from annotations.models import Study, Volume
from dla.classes import VESSEL

user = get_user_model().objects.create_user("bench", password="bench-password-123")
user.groups.add(Group.objects.get_or_create(name="Annotator")[0])
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()

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
    for z in range(nz):
        cy, cx = int(y0 + dy * z) % ny, int(x0 + dx * z) % nx
        vol[z, max(cy - 2, 0):cy + 3, max(cx - 2, 0):cx + 3] = 450
vol += rng.integers(-15, 16, vol.shape, dtype=np.int16)
study = Study.objects.create(pseudonym="BENCH-WORST", patient_pseudonym="PT-BENCH-WORST")
affine = np.diag([0.45, 0.45, 0.5, 1.0])
v = Volume.create_from_array(study=study, role="fill", array=vol, spacing_mm=(0.5, 0.45, 0.45),
                             affine_lps=affine)
del vol
ball = {"op": "brush", "center_zyx": [nz // 2, ny // 2, nx // 2], "radius_mm": 12.0, "label": VESSEL,
        "shape": "sphere"}
draft = labels.get_or_create_draft(study, user)
labels.apply_draft_op(draft.pk, ball)
version = labels.commit(draft.pk, user, "bench: one ball")
labels.apply_draft_op(draft.pk, {**ball, "center_zyx": [nz // 3, ny // 3, nx // 3]})
import dla
print("SETUP" + json.dumps({
    "cookie": f"{settings.SESSION_COOKIE_NAME}={session.session_key}", "dla": dla.__file__,
    "volume": v.pk, "version": version.pk, "draft": draft.pk,
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def code_dir(ref: str, tmp: Path) -> Path:
    """The source tree the server runs: the working tree, or ``ref`` extracted into ``tmp``."""
    if ref == "WORKTREE":
        return REPO
    target = tmp / "code"
    target.mkdir()
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def run_manage(code: Path, env, script: str, marker: str) -> dict:
    out = subprocess.run(
        [PY, "manage.py", "shell", "-c", script],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise SystemExit(f"setup failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith(marker))
    return json.loads(line[len(marker) :])


def get(url: str, cookie: str, timeout: float = 180.0) -> tuple[float, int, int]:
    """(seconds, status, body bytes) of one GET; HTTP errors are answers too."""
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return time.perf_counter() - t0, status, len(body)


def pct(values, q) -> float | None:
    return round(float(np.percentile(np.asarray(values) * 1000.0, q)), 1) if values else None


def status_kb(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                fields[key] = int(rest.split()[0])
    return fields


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


class RssSampler(threading.Thread):
    """Samples the server's processes (master + workers) every ``interval_s``: totals and per worker, per phase."""

    def __init__(self, master: int, interval_s: float = 0.05):
        super().__init__(daemon=True)
        self.master, self.interval_s = master, interval_s
        self.stop = threading.Event()
        self.phase = "warmup"
        self.samples: dict[str, list[tuple[int, int]]] = defaultdict(
            list
        )  # phase -> (total rss, total anon) kB
        self.per_worker: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
        self.workers_seen: set[int] = set()

    def run(self):
        while not self.stop.is_set():
            rss = anon = 0
            phase = self.phase
            for pid in [self.master, *children(self.master)]:
                try:
                    fields = status_kb(pid)
                except OSError:
                    continue
                rss += fields.get("VmRSS", 0)
                anon += fields.get("RssAnon", 0)
                if pid != self.master:
                    self.workers_seen.add(pid)
                    self.per_worker[(phase, pid)].append((fields.get("VmRSS", 0), fields.get("RssAnon", 0)))
            self.samples[phase].append((rss, anon))
            self.stop.wait(self.interval_s)

    def summary(self, phase: str) -> dict:
        values = np.asarray(self.samples.get(phase) or [(0, 0)], dtype=np.float64) / 1024.0
        return {
            "samples": len(self.samples.get(phase, [])),
            "rss_mean_mb": round(float(values[:, 0].mean()), 1),
            "rss_peak_mb": round(float(values[:, 0].max()), 1),
            "anon_mean_mb": round(float(values[:, 1].mean()), 1),
            "anon_peak_mb": round(float(values[:, 1].max()), 1),
        }

    def workers(self) -> dict:
        """Per worker: mean RSS while only slices ran, peak under attack, mean in the 2 s after it (what stayed:
        per-process caches filled by the attack, freed memory the allocator kept) and the extra at the peak."""
        out = {}
        for pid in sorted(self.workers_seen):
            base = np.asarray(self.per_worker.get(("baseline", pid)) or [(0, 0)], dtype=np.float64) / 1024.0
            hit = np.asarray(self.per_worker.get(("attack", pid)) or [(0, 0)], dtype=np.float64) / 1024.0
            after = np.asarray(self.per_worker.get(("after", pid)) or [(0, 0)], dtype=np.float64) / 1024.0
            out[str(pid)] = {
                "baseline_rss_mb": round(float(base[:, 0].mean()), 1),
                "attack_peak_rss_mb": round(float(hit[:, 0].max()), 1),
                "after_attack_rss_mb": round(float(after[:, 0].mean()), 1),
                "extra_rss_mb": round(float(hit[:, 0].max() - base[:, 0].mean()), 1),
                "extra_anon_mb": round(float(hit[:, 1].max() - base[:, 1].mean()), 1),
            }
        return out


def slice_clients(base, cookie, volume, shape, n: int, stop: threading.Event, phase_of) -> tuple[list, list]:
    """``n`` threads scrolling slices until ``stop``: (the list they fill with (phase, seconds, status), the
    threads)."""
    out: list = []
    lock = threading.Lock()

    def client(seed: int):
        rng = random.Random(seed)
        while not stop.is_set():
            axis = rng.choice("zzyx")
            n_ = shape["zyx".index(axis)]
            fmt = rng.choice(("raw", "png"))
            url = f"{base}/api/volumes/{volume}/slice/?axis={axis}&index={rng.randrange(n_)}&format={fmt}"
            phase = phase_of()
            try:
                dt, status, _ = get(url, cookie, timeout=60)
            except Exception as exc:  # noqa: BLE001 - a refused or timed-out slice is a result, not a crash
                dt, status = 60.0, f"error: {type(exc).__name__}"
            with lock:
                out.append((phase, dt, status))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return out, threads


def attack(base, cookie, ids, sizes, n: int, seconds: float) -> list:
    """``n`` threads firing the worst MIP requests back to back for ``seconds``: (endpoint, size, status, s)."""
    endpoints = {
        "volume": f"{base}/api/volumes/{ids['volume']}/mip/",
        "label_version": f"{base}/api/label-versions/{ids['version']}/mip/",
        "draft": f"{base}/api/drafts/{ids['draft']}/mip/",
    }
    results: list = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def attacker(seed: int):
        rng = random.Random(1000 + seed)
        k = seed
        while time.monotonic() < deadline:
            name = list(endpoints)[k % 3]
            size = sizes[(k // 3) % len(sizes)]
            tilt = (45, -90, 30)[(k // 3 // len(sizes)) % 3]
            angle = round(rng.uniform(0, 360), 1)
            k += 1
            url = f"{endpoints[name]}?angle={angle}&tilt={tilt}&size={size}"
            try:
                dt, status, _ = get(url, cookie)
            except Exception as exc:  # noqa: BLE001 - a dropped connection (worker killed) is a result
                dt, status = float("nan"), f"error: {type(exc).__name__}"
            with lock:
                results.append((name, size, status, dt))

    threads = [threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the baseline and of the attack")
    ap.add_argument("--attackers", type=int, default=6)
    ap.add_argument("--slice-clients", type=int, default=2)
    ap.add_argument("--sizes", default="512,1024", help="MIP sizes the attackers ask for")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--shape", default="400,512,512", help="z,y,x")
    ap.add_argument("--ref", default="HEAD", help="git ref whose code the server runs, or WORKTREE")
    ap.add_argument("--as-limit-gb", type=float, default=0.0, help="RLIMIT_AS per server process (0: none)")
    ap.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for the server (repeatable)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "worst_render.json"))
    args = ap.parse_args()
    shape = [int(n) for n in args.shape.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.ref if args.ref != "WORKTREE" else "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="bench-worst-") as tmp_name:
        tmp = Path(tmp_name)
        code = code_dir(args.ref, tmp)
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="dla_web.settings",
            SECRET_KEY="bench-only-secret-key-0123456789abcdef",
            DEBUG="0",
            DLA_VAR_DIR=str(tmp / "var"),
            DLA_STORAGE_ROOT=str(tmp / "storage"),
            DATABASE_URL=f"sqlite:///{tmp}/bench.sqlite3",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            PYTHONPATH=str(code),
        )
        env.update(dict(item.split("=", 1) for item in args.server_env))
        subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=code, env=env, check=True, timeout=900)
        t0 = time.perf_counter()
        ids = run_manage(code, env, SETUP.replace("SHAPE", repr(tuple(shape))), "SETUP")
        print(
            f"code {args.ref} ({commit}, dla from {ids['dla']}); volume {shape} and labels made in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        cookie = ids["cookie"]
        port = free_port()
        base = f"http://127.0.0.1:{port}"

        def limit_memory():
            if args.as_limit_gb > 0:
                limit = int(args.as_limit_gb * 2**30)
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        server = subprocess.Popen(
            [
                str(Path(PY).with_name("gunicorn")),
                "dla_web.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(args.workers),
                "-k",
                "gthread",
                "--threads",
                str(args.threads),
                "--timeout",
                "120",
                "--log-level",
                "warning",
            ],
            cwd=code,
            env=env,
            preexec_fn=limit_memory,
        )
        sampler = RssSampler(server.pid)
        results: dict = {
            "code": {"ref": args.ref, "commit": commit},
            "shape_zyx": shape,
            "server": f"gunicorn {args.workers} workers x {args.threads} threads (gthread), SQLite",
            "as_limit_gb": args.as_limit_gb or None,
            "attackers": args.attackers,
            "slice_clients": args.slice_clients,
            "sizes": sizes,
            "seconds_per_phase": args.seconds,
            "server_env": args.server_env,
        }
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if get(f"{base}/api/volumes/{ids['volume']}/", cookie, timeout=5)[1] == 200:
                        break
                except Exception:  # noqa: BLE001 - server still starting
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.3)
            sampler.start()
            # warm both workers: page cache, prepared volumes and label maps (small upright MIPs)
            for axis in "zyx":
                for i in range(0, shape["zyx".index(axis)], 16):
                    get(f"{base}/api/volumes/{ids['volume']}/slice/?axis={axis}&index={i}", cookie)
            for _ in range(12):  # both workers (connections go to either)
                for path in (
                    f"volumes/{ids['volume']}",
                    f"label-versions/{ids['version']}",
                    f"drafts/{ids['draft']}",
                ):
                    get(f"{base}/api/{path}/mip/?angle={random.uniform(0, 360):.1f}&size=64", cookie)
            load_before = os.getloadavg()
            phase = {"name": "baseline"}
            sampler.phase = "baseline"
            stop = threading.Event()
            slices, slice_threads = slice_clients(
                base, cookie, ids["volume"], shape, args.slice_clients, stop, lambda: phase["name"]
            )
            time.sleep(args.seconds)
            phase["name"] = sampler.phase = "attack"
            t_attack = time.perf_counter()
            fired = attack(base, cookie, ids, sizes, args.attackers, args.seconds)
            attack_s = time.perf_counter() - t_attack
            load_attack = os.getloadavg()
            phase["name"] = sampler.phase = "after"
            time.sleep(2.0)
            stop.set()
            for t in slice_threads:
                t.join(90)
            alive = server.poll() is None
            try:
                final = get(f"{base}/api/volumes/{ids['volume']}/slice/?axis=z&index=0", cookie, timeout=30)[
                    1
                ]
            except Exception as exc:  # noqa: BLE001
                final = f"error: {type(exc).__name__}"
        finally:
            sampler.stop.set()
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()

    def slice_stats(name):
        ok = [dt for p, dt, st in slices if p == name and st == 200]
        bad = Counter(str(st) for p, _, st in slices if p == name and st != 200)
        return {
            "requests": len(ok) + sum(bad.values()),
            "non_200": dict(bad),
            "p50_ms": pct(ok, 50),
            "p95_ms": pct(ok, 95),
            "max_ms": pct(ok, 100),
        }

    by_endpoint: dict = {}
    for (name, size), group in sorted(
        {(n, s): [r for r in fired if r[0] == n and r[1] == s] for n, s, _, _ in fired}.items()
    ):
        ok = [dt for _, _, st, dt in group if st == 200]
        by_endpoint[f"{name} size={size}"] = {
            "requests": len(group),
            "status": dict(Counter(str(st) for _, _, st, _ in group)),
            "p50_ms_200": pct(ok, 50),
            "max_ms_200": pct(ok, 100),
        }
    baseline, attacked = sampler.summary("baseline"), sampler.summary("attack")
    results.update(
        attack_seconds=round(attack_s, 1),
        attack_requests=by_endpoint,
        slices_baseline=slice_stats("baseline"),
        slices_under_attack=slice_stats("attack"),
        memory_baseline=baseline,
        memory_attack=attacked,
        peak_extra_rss_mb=round(attacked["rss_peak_mb"] - baseline["rss_mean_mb"], 1),
        peak_extra_anon_mb=round(attacked["anon_peak_mb"] - baseline["anon_mean_mb"], 1),
        per_worker=sampler.workers(),
        workers_seen=len(sampler.workers_seen),
        server_alive=alive,
        final_slice_status=final,
        load_average={
            "before": [round(x, 2) for x in load_before],
            "end_of_attack": [round(x, 2) for x in load_attack],
        },
        machine={"cpus": os.cpu_count(), "python": platform.python_version(), "memory_gb": _memory_gb()},
    )
    print(json.dumps(results, indent=2))
    sa, sb = results["slices_under_attack"], results["slices_baseline"]
    print(
        f"\n{args.ref} ({commit}): server alive {alive}, {results['workers_seen']} worker pids seen; RSS "
        f"(all processes) baseline {baseline['rss_mean_mb']} MB, peak under attack {attacked['rss_peak_mb']} MB "
        f"(+{results['peak_extra_rss_mb']} MB; anonymous +{results['peak_extra_anon_mb']} MB; per worker at most "
        f"+{max(w['extra_rss_mb'] for w in results['per_worker'].values())} MB); slices p50/p95 "
        f"{sb['p50_ms']}/{sb['p95_ms']} ms alone, {sa['p50_ms']}/{sa['p95_ms']} ms (max {sa['max_ms']}) under "
        f"attack; load average at the end of the attack {results['load_average']['end_of_attack']}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def _memory_gb() -> float:
    with open("/proc/meminfo") as handle:
        total_kb = int(next(line for line in handle if line.startswith("MemTotal")).split()[1])
    return round(total_kb / 2**20, 1)


if __name__ == "__main__":
    main()
