"""Shared fixtures: users per role, API clients, a real Celery worker process on the Redis broker against the
test PostgreSQL database, helpers to wait for task runs, phantom studies and small DICOM series."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's private var/ folder (storage, uploads) unless asked to keep it."""
    import shutil

    if settings.configured and not os.environ.get("DLA_KEEP_TEST_VAR"):
        shutil.rmtree(settings.VAR_DIR, ignore_errors=True)


def _flush_retrying_deadlocks(flush):
    """Wrap ``TransactionTestCase._fixture_teardown`` (the TRUNCATE of every table after a transactional test)
    so that a deadlock is retried: the session's one Celery worker may still be running a task the test queued
    (a commit queues a label cine) and read tables while they are truncated, and PostgreSQL may pick the
    TRUNCATE as the victim. Any other error, or a fourth deadlock, is raised as it is."""
    from django.core.management.base import CommandError

    def teardown(self):
        for attempt in range(4):
            try:
                return flush(self)
            except CommandError as exc:
                if attempt == 3 or "deadlock" not in str(exc.__cause__):
                    raise
                time.sleep(0.5 * (attempt + 1))

    return teardown


def pytest_configure(config):
    from django.test import TransactionTestCase

    TransactionTestCase._fixture_teardown = _flush_retrying_deadlocks(TransactionTestCase._fixture_teardown)


# A Celery worker consuming every queue with one process.
WORKER_ARGV = [
    sys.executable,
    "-m",
    "celery",
    "-A",
    "dla_web",
    "worker",
    "-Q",
    "default,gpu,render",
    "--concurrency",
    "1",
]

ROLE_USERS = {"annotator": "Annotator", "reader": "Reader", "admin": "Admin"}


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    def make(username: str, role: str | None = None, password: str = "correct-horse-battery"):
        user = get_user_model().objects.create_user(username=username, password=password)
        if role:
            group, _ = Group.objects.get_or_create(name=role)
            user.groups.add(group)
        return user

    return make


@pytest.fixture
def users(make_user):
    """One user per role plus one without a role: {'annotator': u, 'reader': u, 'admin': u, 'norole': u}."""
    made = {key: make_user(key, role) for key, role in ROLE_USERS.items()}
    made["norole"] = make_user("norole")
    return made


@pytest.fixture
def client_for(users):
    """``client_for('admin')`` -> DRF APIClient authenticated as that role's user (None -> anonymous)."""
    from rest_framework.test import APIClient

    def make(role: str | None):
        client = APIClient()
        if role is not None:
            client.force_authenticate(users[role])
        return client

    return make


def database_url_for_current_test_db() -> str:
    db = settings.DATABASES["default"]
    host = db.get("HOST") or ""
    if host.startswith("/") or not host:
        return f"postgres:///{db['NAME']}?host={host or '/var/run/postgresql'}"
    auth = db.get("USER") or ""
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerProcess:
    """A real ``celery worker`` subprocess consuming both queues from the test broker."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="dla_web.test_settings",
            DATABASE_URL=database_url_for_current_test_db(),
            CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
            CELERY_VISIBILITY_TIMEOUT_S="6",
            CELERY_UNACKED_RESTORE_INTERVAL_S="1",
            DLA_TASK_HEARTBEAT_S="1",  # a killed worker's run counts as lost after 8 s (reaper or redelivery)
            DLA_TASK_LOST_AFTER_S="8",
            DLA_STORAGE_ROOT=str(settings.STORAGE_ROOT),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                *WORKER_ARGV,
                "--pool",
                "prefork",
                "-n",
                f"test-{os.getpid()}-{time.time_ns()}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            cwd=REPO,
            env=self.env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a crash, not a shutdown)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """A real Celery worker on Redis for the whole session; tests using it need ``transactional_db``."""
    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]
    for key in broker.scan_iter(
        match=f"{prefix}*"
    ):  # no stale messages from an earlier run of this session id
        broker.delete(key)
    ARTIFACTS.mkdir(exist_ok=True)
    worker = WorkerProcess(ARTIFACTS / "celery-worker.log")
    worker.start()
    yield worker
    worker.stop()


# The overall deadline of the waits below. It is a hang guard only: tests wait for states and events (a run's
# state, a progress value, a file a task writes), never for a time that assumes a fast machine, so a loaded
# machine makes them slower, not red.
HANG_GUARD_S = 900


def wait_until(
    condition, what: str, *, worker=None, timeout_s: float = HANG_GUARD_S, interval_s: float = 0.1
):
    """Poll ``condition()`` until it returns something truthy and return that. Fails at once when ``worker`` (a
    WorkerProcess) has exited, or after ``timeout_s`` (a hang guard), naming ``what`` with the worker's log tail.
    ``what`` may be a callable returning the description (evaluated only on failure)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        dead = worker is not None and worker.proc is not None and worker.proc.poll() is not None
        if dead or time.monotonic() > deadline:
            why = (
                f"the worker exited with {worker.proc.returncode}"
                if dead
                else f"not within {timeout_s:.0f} s"
            )
            text = what() if callable(what) else what
            raise AssertionError(f"{text}: {why}\n{worker.tail() if worker else ''}")
        time.sleep(interval_s)


def wait_for_run(
    run_id: int, states=("succeeded", "failed", "cancelled"), timeout_s: float = HANG_GUARD_S, worker=None
):
    """Poll the TaskRun until it reaches one of ``states`` and return it; fail with the run's last state and the
    worker's log tail when the worker exits first or after ``timeout_s`` (a hang guard)."""
    from dla_web.models import TaskRun

    last = {}

    def reached():
        last["run"] = run = TaskRun.objects.get(pk=run_id)
        return run if run.state in states else None

    def what():
        run = last.get("run")
        if run is None:
            return f"task run {run_id} never read"
        return (
            f"task run {run_id} stayed {run.state} (progress {run.progress:.3f}, attempts {run.attempts}, "
            f"message {run.message!r}, heartbeat {run.heartbeat_at}) instead of reaching {'/'.join(states)}"
        )

    return wait_until(reached, what, worker=worker, timeout_s=timeout_s)


@pytest.fixture
def dicom_series(tmp_path):
    """``dicom_series(name="s", volume=None, **fields)`` -> ``WrittenSeries(volume, affine_lps, paths)``: one CT
    series written into ``tmp_path / name`` by ``tests.dicom_support.write_series`` (random volume, fresh UIDs
    and a made-up patient unless given; ``spacing_mm``, ``affine_lps``/``origin_lps`` and any
    ``write_dicom_series`` keyword)."""
    from tests.dicom_support import write_series

    def write(name: str = "s", volume=None, **fields):
        return write_series(tmp_path / name, volume, **fields)

    return write


@pytest.fixture
def phantom_study(db):
    """``phantom_study(seed=0, shape=(40, 48, 48), motion=None)`` -> a Study with fill, mask, subtracted and truth
    volumes made by the project's phantom generator (stored through the real volume store)."""
    from annotations.models import Study, Volume
    from dla.phantoms import make_subject

    def make(
        seed: int = 0, shape=(40, 48, 48), motion=None, cohort="unassigned", pseudonym=None, spacing_mm=None
    ):
        subject = make_subject(shape, seed=seed, motion=motion, spacing_mm=spacing_mm)
        study = Study.objects.create(
            pseudonym=pseudonym or f"PH-{seed:03d}",
            patient_pseudonym=f"PT-PH{seed:03d}",
            cohort=cohort,
            injection_site=subject.injection,
            source="phantom",
        )
        for role, array in (
            ("fill", subject.fill_hu),
            ("mask", subject.mask_hu),
            ("subtracted", subject.subtracted_hu),
            ("truth", subject.truth),
        ):
            Volume.create_from_array(
                study=study,
                role=role,
                array=array,
                spacing_mm=subject.spacing_mm,
                affine_lps=subject.affine_lps,
                source="phantom",
            )
        study.subject = subject
        return study

    return make
