"""One writer, many readers, nothing lost: brush edits on a draft while other threads and another OS process
read its slices, MIPs and counts, through real HTTP servers on the test PostgreSQL database (pytest-django's
threaded ``live_server`` plus a gunicorn process on the same database and storage). Afterwards the committed
version must equal the replay of its own recorded ops, and the per-class counts the draft API showed must equal
the counts of the map. The same for two "tabs" (two clients of one user) editing one draft, one through each
server process."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
from django.conf import settings

from annotations.labels import version_labels, volume_context
from annotations.models import LabelVersion
from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.labeling.codec import class_counts
from dla.labeling.edit_ops import replay
from dla_web.auth import issue_token
from tests.conftest import ARTIFACTS, REPO, database_url_for_current_test_db

pytestmark = pytest.mark.django_db(transaction=True)

SHAPE = (64, 96, 96)
SPACING_MM = (1.4, 1.4, 1.4)
N_EDITS = 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def other_server(django_db_setup):
    """A gunicorn process (threaded worker) serving the same test database and storage: the "second OS
    process" that reads (and, for the tabs test, writes) the draft's cache files beside the live server."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="dla_web.test_settings",
        DATABASE_URL=database_url_for_current_test_db(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        DLA_STORAGE_ROOT=str(settings.STORAGE_ROOT),
        PYTHONUNBUFFERED="1",
    )
    log = open(ARTIFACTS / "draft-concurrency-gunicorn.log", "ab")
    argv = [sys.executable, "-m", "gunicorn", "dla_web.wsgi", "--bind", f"127.0.0.1:{port}"]
    argv += ["--workers", "1", "--worker-class", "gthread", "--threads", "6", "--timeout", "120"]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{url}/api/drafts/", timeout=30)
            break
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.close()
                tail = (ARTIFACTS / "draft-concurrency-gunicorn.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"gunicorn did not start:\n{tail}")
            time.sleep(0.2)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    log.close()


def _session(user) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {issue_token(user)[0]}"
    return session


def _brush_ops(seed: int, n: int) -> list[dict]:
    """Overlapping paint and erase dabs of every class, some painting only over one class (the order matters)."""
    rng = np.random.default_rng(seed)
    ops = []
    for _ in range(n):
        op = {
            "op": "brush",
            "center_zyx": [int(rng.integers(4, n_ - 4)) for n_ in SHAPE],
            "radius_mm": float(rng.choice([3.0, 4.5, 6.0])),
            "label": int(rng.choice([UNLABELED, VESSEL, BONE, SOFT_TISSUE])),
            "shape": str(rng.choice(["sphere", "circle"])),
        }
        if rng.random() < 0.25:
            op["only_class"] = int(rng.choice([UNLABELED, VESSEL, BONE]))
        if rng.random() < 0.3:  # a short drag: one op, several centres
            op["stroke_zyx"] = [
                [
                    int(np.clip(c + rng.integers(-3, 4), 0, n_ - 1))
                    for c, n_ in zip(op["center_zyx"], SHAPE, strict=True)
                ]
                for _ in range(3)
            ]
        ops.append(op)
    return ops


BUSY_DETAIL = "The server is busy rendering other images; try again in a few seconds."


class Readers:
    """Threads that read the draft's slices, class MIPs and JSON (with ETags, as the workspace does) from the
    given servers until stopped; every status other than 200/304 is kept, except the documented load shedding
    of MIP renders (a 503 "busy" with Retry-After once more renders wait than ``DLA_RENDER_QUEUE`` allows: the
    viewer shows it and retries the frame), which is counted in ``shed``; slices and JSON are never shed."""

    def __init__(self, sessions_and_urls, draft_id: int):
        self.draft_id = draft_id
        self.stop = threading.Event()
        self.bad: list[str] = []
        self.reads = 0
        self.mips_rendered = 0
        self.shed = 0
        self.slices: list[tuple[int, str, int, bytes]] = []  # (revision in the ETag, axis, index, raw uint8)
        self.threads = [
            threading.Thread(target=self._loop, args=(session, url, i), daemon=True)
            for i, (session, url) in enumerate(sessions_and_urls)
        ]

    def _loop(self, session, url, offset):
        etags = {}
        k = offset
        while not self.stop.is_set():
            k += 1
            slices = {"z": k % SHAPE[0], "y": (3 * k) % SHAPE[1]}
            paths = [f"/api/drafts/{self.draft_id}/slice/?axis={a}&index={i}" for a, i in slices.items()]
            if k % 6 == 0:
                paths.append(
                    f"/api/drafts/{self.draft_id}/mip/?angle={(k * 10) % 360}&size=64&label={1 + k % 3}"
                )
            if k % 3 == 0:
                paths.append(f"/api/drafts/{self.draft_id}/")
            for path in paths:
                headers = {"If-None-Match": etags[path]} if path in etags else {}
                try:
                    response = session.get(url + path, headers=headers, timeout=60)
                except requests.RequestException as exc:
                    self.bad.append(f"{path}: {exc}")
                    continue
                self.reads += 1
                if "/mip/" in path and response.status_code == 503 and _is_busy(response):
                    self.shed += 1
                    continue
                if "/mip/" in path and response.status_code == 200:
                    self.mips_rendered += 1
                if response.status_code not in (200, 304):
                    self.bad.append(f"{path}: {response.status_code} {response.text[:300]}")
                    continue
                if "ETag" in response.headers:
                    etags[path] = response.headers["ETag"]
                if response.status_code == 200 and "/slice/" in path:
                    axis = path.split("axis=")[1][0]
                    revision = int(response.headers["ETag"].split("-r")[1].split("-")[0])
                    self.slices.append((revision, axis, slices[axis], response.content))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(120)


def _is_busy(response) -> bool:
    """The render gate's 503: its message and a Retry-After, nothing else counts as shedding."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        return False
    return detail == BUSY_DETAIL and response.headers.get("Retry-After") is not None


def _edit(session, url, draft_id, actions, history, errors):
    """POST each action (an op dict, "undo" or "redo") and keep, per draft revision the server answered with,
    the ops the draft held at that revision."""
    for action in actions:
        path, body = ("ops", {"op": action}) if isinstance(action, dict) else (action, {})
        response = session.post(f"{url}/api/drafts/{draft_id}/{path}/", json=body, timeout=120)
        if response.status_code != 200:
            errors.append(f"{action}: {response.status_code} {response.text[:300]}")
            continue
        draft = response.json()["draft"] if path == "ops" else response.json()
        history[draft["revision"]] = [entry["op"] for entry in draft["ops"]]


def _maps_by_revision(history: dict, ctx) -> dict:
    """{revision: the map replayed from the ops the draft held at that revision}, replaying shared prefixes once."""
    maps, prefix_ops, prefix_maps = {}, [], [np.zeros(SHAPE, np.uint8)]
    for revision in sorted(history):
        ops = history[revision]
        keep = 0
        while keep < min(len(ops), len(prefix_ops)) and ops[keep] == prefix_ops[keep]:
            keep += 1
        prefix_ops, prefix_maps = prefix_ops[:keep], prefix_maps[: keep + 1]
        for op in ops[keep:]:
            prefix_maps.append(replay(prefix_maps[-1], [op], ctx))
            prefix_ops.append(op)
        maps[revision] = prefix_maps[-1]
    return maps


def _check_nothing_lost(session, url, study, draft_id, history, n_ops, served):
    """Commit the draft and compare: stored ops = the edits made, committed map = replay of its ops, counts shown
    by the draft API (kept from the ops' deltas) = the sum of the recorded deltas = counts of the map = the
    version's counts; and every slice a reader was served is the slice of a real revision: the one its ETag
    names or a later one (a reader whose request crossed a commit serves the newer committed revision), never
    a mixture or a map missing an edit."""
    shown = session.get(f"{url}/api/drafts/{draft_id}/", timeout=60).json()
    assert len(shown["ops"]) == n_ops, f"{n_ops} edits made, the draft recorded {len(shown['ops'])}"
    assert shown["revision"] == max(history), "the last answer names the draft's revision"
    response = session.post(
        f"{url}/api/drafts/{draft_id}/commit/", json={"message": "concurrency"}, timeout=60
    )
    assert response.status_code == 201, response.text
    version = LabelVersion.objects.get(pk=response.json()["id"])
    committed = version_labels(version)
    ctx = volume_context(study)
    replayed = replay(np.zeros(SHAPE, np.uint8), [entry["op"] for entry in version.ops], ctx)
    differ = int(np.count_nonzero(committed != replayed))
    assert differ == 0, f"the committed map differs from the replay of its own ops in {differ} voxels"
    in_map = {str(c): n for c, n in class_counts(committed).items()}
    from_deltas = {
        str(c): int(np.prod(SHAPE)) if c == UNLABELED else 0 for c in (UNLABELED, VESSEL, BONE, SOFT_TISSUE)
    }
    for entry in shown["ops"]:
        for c, d in entry["result"]["delta_counts"].items():
            from_deltas[c] += d
    assert shown["counts"] == in_map, f"draft API counts {shown['counts']} != counts in the map {in_map}"
    assert from_deltas == in_map, f"counts from the edit deltas {from_deltas} != counts in the map {in_map}"
    assert version.counts == in_map
    assert in_map[str(VESSEL)] > 0 and in_map[str(BONE)] > 0
    maps = _maps_by_revision({0: [], **history}, ctx)
    assert np.array_equal(maps[max(maps)], committed)
    wrong = []
    for revision, axis, index, data in served:
        plane = np.frombuffer(data, np.uint8)
        later = [m for r, m in maps.items() if r >= revision]
        if not any(np.array_equal(np.take(m, index, axis="zyx".index(axis)).ravel(), plane) for m in later):
            wrong.append(f"r{revision} {axis}={index}")
    assert served, "the readers got no slices"
    assert not wrong, (
        f"{len(wrong)} of {len(served)} served slices match no revision at or after their ETag's: {wrong[:5]}"
    )


def test_one_editor_with_reader_threads_and_a_reader_process(live_server, other_server, users, phantom_study):
    study = phantom_study(seed=31, shape=SHAPE, spacing_mm=SPACING_MM)
    editor = _session(users["annotator"])
    draft_id = editor.post(f"{live_server.url}/api/drafts/", json={"study": study.pk}, timeout=60).json()[
        "id"
    ]
    readers = [(_session(users["annotator"]), live_server.url) for _ in range(2)]
    readers += [(_session(users["admin"]), other_server) for _ in range(4)]
    actions = []
    for i, op in enumerate(_brush_ops(1, N_EDITS)):
        actions.append(op)
        if i % 8 == 7:
            actions += ["undo", "redo"]  # a whole stroke undone and redone: two more writes
    actions.append("undo")  # the last edit taken back
    history, errors = {}, []
    with Readers(readers, draft_id) as reading:
        _edit(editor, live_server.url, draft_id, actions, history, errors)
    assert not errors, errors[:3]
    _check_nothing_lost(editor, live_server.url, study, draft_id, history, N_EDITS - 1, reading.slices)
    assert not reading.bad, reading.bad[:3]
    assert reading.reads > N_EDITS
    assert reading.mips_rendered > 0, f"no MIP rendered ({reading.shed} shed)"


def test_two_tabs_of_one_user_edit_one_draft_through_two_processes(
    live_server, other_server, users, phantom_study
):
    study = phantom_study(seed=32, shape=SHAPE, spacing_mm=SPACING_MM)
    tab_a, tab_b = _session(users["annotator"]), _session(users["annotator"])
    draft_a = tab_a.post(f"{live_server.url}/api/drafts/", json={"study": study.pk}, timeout=60).json()["id"]
    draft_b = tab_b.post(f"{other_server}/api/drafts/", json={"study": study.pk}, timeout=60).json()["id"]
    assert draft_a == draft_b, "one draft per study and user"
    history, errors = {}, []
    editors = [
        threading.Thread(
            target=_edit, args=(tab, url, draft_a, _brush_ops(seed, N_EDITS // 2), history, errors)
        )
        for tab, url, seed in ((tab_a, live_server.url, 2), (tab_b, other_server, 3))
    ]
    readers = [(_session(users["annotator"]), live_server.url), (_session(users["admin"]), other_server)]
    with Readers(readers, draft_a) as reading:
        for thread in editors:
            thread.start()
        for thread in editors:
            thread.join(300)
    assert not errors, errors[:3]
    assert sorted(history) == list(range(1, N_EDITS + 1)), "each edit of either tab is one new revision"
    _check_nothing_lost(tab_a, live_server.url, study, draft_a, history, N_EDITS, reading.slices)
    assert not reading.bad, reading.bad[:3]
