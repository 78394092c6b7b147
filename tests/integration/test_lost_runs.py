"""Task runs never lie about being alive: a heartbeat while a body runs, duplicate messages of a live run
skipped, runs whose worker is gone (no heartbeat) requeued once by the reaper and failed with the reason after a
second loss, and cancel of a lost run ending at once. The end-to-end case kills a whole worker (main process and
pool child) mid-training with redelivery by the broker switched off, so only the reaper can bring the run back."""

import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from dla_web.models import TaskRun
from dla_web.tasks import _start, reap_lost_runs, request_cancel, selftest
from tests.conftest import ARTIFACTS, WorkerProcess, wait_for_run


def running(minutes_ago: float, *, kind="selftest", attempts=1) -> TaskRun:
    """A run that a worker started and has not stamped for ``minutes_ago`` minutes."""
    return TaskRun.objects.create(
        kind=kind,
        state="running",
        attempts=attempts,
        params={"steps": 1, "step_s": 0.0},
        started_at=timezone.now() - timedelta(minutes=minutes_ago),
        heartbeat_at=timezone.now() - timedelta(minutes=minutes_ago),
        worker="gone-host:123",
        celery_id="old-message",
    )


@pytest.mark.django_db
def test_reaper_requeues_a_lost_run_once_then_fails_it_with_the_reason(settings):
    settings.TASK_LOST_AFTER_S = 60
    fresh, lost, twice = running(0.1), running(5), running(5, attempts=2)
    assert sorted(reap_lost_runs()) == sorted([lost.pk, twice.pk])
    fresh.refresh_from_db(), lost.refresh_from_db(), twice.refresh_from_db()
    assert fresh.state == "running", "a run with a recent heartbeat is alive"
    assert lost.state == "queued" and lost.celery_id != "old-message"
    assert "worker lost" in lost.message and "requeued" in lost.message
    assert twice.state == "failed" and "no heartbeat since" in twice.error and twice.finished_at
    assert reap_lost_runs() == [], "reaping twice changes nothing"


@pytest.mark.django_db
def test_a_duplicate_message_of_a_live_run_is_skipped_and_a_stale_one_restarts(settings):
    settings.TASK_LOST_AFTER_S = 60
    live, stale = running(0.1), running(5)
    assert _start(live.pk, "another-message") is None
    live.refresh_from_db()
    assert live.attempts == 1 and live.celery_id == "old-message"
    restarted = _start(stale.pk, "old-message")
    assert (
        restarted is not None and restarted.attempts == 2 and "previous worker stopped" in restarted.log_tail
    )


@pytest.mark.django_db
def test_cancel_of_a_lost_run_ends_at_once_with_the_true_reason(settings):
    settings.TASK_LOST_AFTER_S = 60
    lost, live = running(5), running(0.1)
    done = request_cancel(lost)
    assert done.state == "cancelled" and "worker is gone" in done.message and done.finished_at
    waiting = request_cancel(live)
    assert waiting.state == "running" and waiting.message == "cancelling..."


@pytest.mark.django_db(
    transaction=True
)  # the heartbeat thread has its own connection: the run must be committed
def test_in_process_runs_keep_their_heartbeat_while_the_body_is_silent(settings, monkeypatch):
    settings.TASK_HEARTBEAT_S = 1
    settings.TASK_LOST_AFTER_S = 3
    run = selftest.create_run(params={"steps": 1, "step_s": 2.5})  # one silent 2.5 s step
    stamps = []
    real_sleep = time.sleep

    def watch(seconds):  # sample the heartbeat the other thread writes while the body sleeps
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            real_sleep(0.25)
            stamps.append(TaskRun.objects.get(pk=run.pk).heartbeat_at)

    monkeypatch.setattr(time, "sleep", watch)
    run = selftest.run_here(run)
    monkeypatch.undo()
    assert run.state == "succeeded", run.error
    assert len({s for s in stamps if s}) >= 2, "the heartbeat advanced during the silent step"


class ReaperOnlyWorker(WorkerProcess):
    """A worker whose broker never redelivers within the test (visibility timeout of an hour): a run lost with
    its worker can only come back through the reaper."""

    def env(self) -> dict:
        env = super().env()
        env.update(
            CELERY_VISIBILITY_TIMEOUT_S="3600",
            DLA_TASK_HEARTBEAT_S="1",
            DLA_TASK_LOST_AFTER_S="8",
        )
        return env


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_whole_worker_killed_mid_training_is_resumed_by_the_reaper(
    celery_worker, client_for, users, phantom_study
):
    from inference.models import ModelVersion, TrainingRun
    from tests.integration.test_training_api import SPACING, TINY, approve

    celery_worker.stop()  # this test brings its own workers
    for seed, cohort in ((71, "train"), (72, "train"), (73, "validation")):
        approve(
            phantom_study(seed=seed, shape=(24, 48, 48), spacing_mm=SPACING, cohort=cohort), users["admin"]
        )
    first = ReaperOnlyWorker(ARTIFACTS / "reaper-worker-1.log")
    second = ReaperOnlyWorker(ARTIFACTS / "reaper-worker-2.log")
    try:
        first.start()
        body = {**TINY, "max_iterations": 300, "checkpoint_every": 20, "early_stopping_patience": 10_000}
        started = client_for("admin").post("/api/training-runs/", {**body, "name": "reaped"}, format="json")
        assert started.status_code == 202, started.content
        run_id = started.json()["id"]
        deadline = time.monotonic() + 300
        while not TrainingRun.objects.filter(pk=run_id, iteration__gte=40).exists():  # a checkpoint exists
            assert time.monotonic() < deadline, first.tail()
            time.sleep(0.2)
        first.kill()  # main process and pool child, at once
        assert TaskRun.objects.get(pk=run_id).state == "running", "the run looks alive right after the crash"
        second.start()
        run = wait_for_run(run_id, timeout_s=300, worker=second)
    finally:
        first.kill()
        second.stop()
        celery_worker.start()
    assert run.state == "succeeded", (run.error, second.tail())
    assert run.attempts == 2 and "lost; requeued" in run.log_tail
    assert ModelVersion.objects.filter(training_run_id=run_id).count() == 1
    iterations = [p[0] for p in TrainingRun.objects.get(pk=run_id).train_curve]
    assert iterations == sorted(set(iterations)), "the resumed run duplicated or reordered curve points"
    assert os.path.exists(second.log_path)
