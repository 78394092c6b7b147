"""Task runs end to end through a real Celery worker on Redis and PostgreSQL: success, failure, cancel (queued,
cooperative and forced), a worker killed mid-task (re-queued by acks_late and finished by a new worker), and
idempotent re-delivery. The tests wait for states and events (a run's state or progress, a worker child gone, a
line the worker logs), never for a time that assumes a fast machine; deadlines are hang guards only."""

import pytest
from rest_framework.test import APIClient

from dla_web.models import TaskRun
from dla_web.tasks import selftest
from tests.conftest import wait_for_run, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def start_selftest(client: APIClient, **params) -> dict:
    response = client.post("/api/task-runs/selftest/", params, format="json")
    assert response.status_code == 202, response.content
    return response.json()


@pytest.fixture
def admin_client(make_user):
    client = APIClient()
    client.force_authenticate(make_user("boss", "Admin"))
    return client


def test_selftest_runs_to_success_with_progress(celery_worker, admin_client):
    run = start_selftest(admin_client, steps=5, step_s=0.05)
    assert run["state"] == "queued"
    done = wait_for_run(run["id"], worker=celery_worker)
    assert done.state == "succeeded", done.error
    assert done.progress == 1.0
    assert done.result == {"steps": 5}
    assert done.started_at and done.finished_at and done.finished_at >= done.started_at
    body = admin_client.get(f"/api/task-runs/{run['id']}/").json()
    assert body["state"] == "succeeded" and body["created_by"] == "boss"


def test_failing_task_marks_run_failed_with_error_text(celery_worker, admin_client):
    run = start_selftest(admin_client, steps=5, step_s=0.01, fail_at=2)
    done = wait_for_run(run["id"], worker=celery_worker)
    assert done.state == "failed"
    assert "self-test failure requested at step 2" in done.error
    assert done.progress < 1.0


def progressed(run_id: int):
    """The run once its first step has been reported, else None."""
    run = TaskRun.objects.get(pk=run_id)
    return run if run.progress > 0 else None


def test_cancel_running_task_stops_it_cooperatively(celery_worker, admin_client):
    steps = 1000  # 100 s of work: it cannot finish before the cancel, however slow the machine
    run = start_selftest(admin_client, steps=steps, step_s=0.1)
    wait_until(lambda: progressed(run["id"]), "a first step", worker=celery_worker)
    response = admin_client.post(f"/api/task-runs/{run['id']}/cancel/", {}, format="json")
    assert response.status_code == 202
    progress_at_cancel = TaskRun.objects.get(pk=run["id"]).progress
    done = wait_for_run(run["id"], worker=celery_worker)
    assert done.state == "cancelled" and done.message == "cancelled on request"
    # the body checks the flag right after each step's progress write: at most the step under way follows
    assert done.progress <= progress_at_cancel + 1 / steps + 1e-9, "the work went on after cancel"
    again = admin_client.post(f"/api/task-runs/{run['id']}/cancel/", {}, format="json")
    assert again.status_code == 409 and "already ended" in again.json()["detail"]


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie waiting for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_force_cancel_terminates_the_worker_child(celery_worker, admin_client):
    # one step is 10 s: the cancel and the kill land inside the first, however slow the machine
    run = start_selftest(admin_client, steps=100, step_s=10.0)
    child_pid = int(
        wait_for_run(run["id"], states=("running",), worker=celery_worker).worker.rsplit(":", 1)[1]
    )
    assert not process_gone(child_pid)
    response = admin_client.post(f"/api/task-runs/{run['id']}/cancel/", {"force": True}, format="json")
    assert response.status_code == 202 and response.json()["state"] == "cancelled"
    progress_at_cancel = TaskRun.objects.get(pk=run["id"]).progress

    def child_stopped_or_reported() -> bool:
        return process_gone(child_pid) or TaskRun.objects.get(pk=run["id"]).progress != progress_at_cancel

    wait_until(child_stopped_or_reported, f"worker child {child_pid} terminated", worker=celery_worker)
    assert process_gone(child_pid), "the child finished its step and reported instead of being terminated"
    # The worker replaces its child and keeps serving; the cancelled run stays as the kill left it.
    replacement = start_selftest(admin_client, steps=2, step_s=0.01)
    assert wait_for_run(replacement["id"], worker=celery_worker).state == "succeeded"
    after = TaskRun.objects.get(pk=run["id"])
    assert after.state == "cancelled"
    assert after.progress == progress_at_cancel, "the killed child kept reporting progress"


def test_worker_killed_mid_task_is_requeued_and_finished_by_a_new_worker(celery_worker, admin_client):
    # 10 s of work: about 9.9 s are left when the kill follows the first step
    run = start_selftest(admin_client, steps=100, step_s=0.1)
    wait_until(lambda: progressed(run["id"]), "a first step", worker=celery_worker)
    celery_worker.kill()
    assert TaskRun.objects.get(pk=run["id"]).state == "running"
    celery_worker.start()  # unacked message comes back after the broker's visibility timeout
    done = wait_for_run(run["id"], worker=celery_worker)
    assert done.state == "succeeded", done.error
    assert done.attempts == 2
    assert "previous worker stopped" in done.log_tail


def test_redelivered_message_of_a_finished_run_does_nothing(celery_worker, admin_client):
    run = start_selftest(admin_client, steps=2, step_s=0.01)
    first = wait_for_run(run["id"], worker=celery_worker)
    log_start = celery_worker.log_path.stat().st_size
    message = selftest.apply_async(kwargs={"task_run_id": run["id"]}, queue="default")

    def handled() -> bool:  # the worker logs "Task dla.selftest[<id>] succeeded" once the message is done
        with open(celery_worker.log_path, "rb") as log:
            log.seek(log_start)
            return f"[{message.id}] succeeded".encode() in log.read()

    wait_until(handled, f"the worker handling message {message.id}", worker=celery_worker)
    again = TaskRun.objects.get(pk=run["id"])
    assert (again.state, again.attempts, again.finished_at) == ("succeeded", 1, first.finished_at)


def test_cancel_of_a_queued_run_ends_it_before_any_work(admin_client, transactional_db):
    from django.db import transaction

    from dla_web.tasks import request_cancel

    with transaction.atomic():  # not committed yet: the message is not sent, so the run is still queued
        run = selftest.enqueue(params={"steps": 3, "step_s": 0.01})
        request_cancel(run)
    run.refresh_from_db()
    assert run.state == "cancelled" and run.started_at is None and run.cancel_requested
