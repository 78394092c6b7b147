"""The one task decorator (``dla_task``) and the TaskRun life cycle shared by every long job.

``@dla_task(kind=..., queue=...)`` turns ``fn(ctx, **params)`` into a Celery task with acks_late,
reject_on_worker_lost, time limits and a retry policy for lost database connections. ``task.enqueue(...)``
creates the TaskRun and sends the message only after the surrounding transaction commits. The task body is
idempotent: a redelivered message for a finished or cancelled run does nothing, one for a run whose worker died
starts the work again from its parameters (writers of results must be atomic and keyed by the run).
"""

import logging
import os
import socket
import time
import traceback
import uuid

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.contrib.contenttypes.models import ContentType
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from .models import TaskRun

logger = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 0.5
TIME_LIMITS_S = {"default": (3600, 3660), "gpu": (48 * 3600, 48 * 3600 + 60)}


class TaskCancelled(Exception):
    """Raised inside a task when its run was cancelled; the run ends in state ``cancelled``."""


class TaskContext:
    """Handed to every task function: progress reporting, log lines and cooperative cancellation."""

    def __init__(self, run: TaskRun, *, terminal=None):
        self.run = run
        self.run_id = run.pk
        self.terminal = terminal  # optional (fraction, message) callback: a terminal progress bar in commands
        self._last_write = 0.0

    def progress(self, fraction: float, message: str | None = None, *, force: bool = False) -> None:
        """Record progress in 0..1 (throttled writes) and raise ``TaskCancelled`` if cancel was requested."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.terminal is not None:
            self.terminal(fraction, message or "")
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self._last_write = now
        fields = {"progress": fraction, "heartbeat_at": timezone.now()}
        if message is not None:
            fields["message"] = message[:500]
        TaskRun.objects.filter(pk=self.run_id).update(**fields)
        self.check_cancelled()

    def should_cancel(self) -> bool:
        return TaskRun.objects.filter(pk=self.run_id, cancel_requested=True).exists()

    def check_cancelled(self) -> None:
        if self.should_cancel():
            raise TaskCancelled("cancelled on request")

    def log(self, line: str) -> None:
        with transaction.atomic():
            run = TaskRun.objects.select_for_update().get(pk=self.run_id)
            run.append_log(f"{timezone.now():%H:%M:%S} {line}")
            run.save(update_fields=["log_tail"])


def _finish(run_id: int, state: str, **fields) -> None:
    with transaction.atomic():
        run = TaskRun.objects.select_for_update().get(pk=run_id)
        if run.is_terminal:
            return
        if state == TaskRun.State.SUCCEEDED and run.cancel_requested:
            state = TaskRun.State.CANCELLED
            fields = {"message": "cancelled on request"}
        for name, value in fields.items():
            setattr(run, name, value)
        run.state = state
        run.finished_at = timezone.now()
        if state == TaskRun.State.SUCCEEDED:
            run.progress = 1.0
        run.save()


def _start(run_id: int, celery_id: str) -> TaskRun | None:
    """Lock the run and mark it running; None when there is nothing to do (finished or cancelled)."""
    # Content type ids are cached per process; a worker outliving a database reset (test flushes, restores from
    # backup) must not write stale ids into TaskRun.target_type.
    ContentType.objects.clear_cache()
    with transaction.atomic():
        run = TaskRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.is_terminal:
            return None
        if run.cancel_requested:
            run.state = TaskRun.State.CANCELLED
            run.finished_at = timezone.now()
            run.message = "cancelled before it started"
            run.save()
            return None
        run.attempts += 1
        if run.attempts > 1:
            run.append_log(
                f"attempt {run.attempts}: the previous worker stopped before finishing; starting again"
            )
        run.state = TaskRun.State.RUNNING
        run.started_at = run.started_at or timezone.now()
        run.heartbeat_at = timezone.now()
        run.celery_id = celery_id or run.celery_id
        run.worker = f"{socket.gethostname()}:{os.getpid()}"
        run.progress = 0.0
        run.save()
        return run


class DlaTask(Task):
    """Celery task class whose instances know their TaskRun kind and queue."""

    kind = ""
    dla_queue = "default"

    def create_run(
        self, *, user=None, target=None, params: dict | None = None, message: str = "queued"
    ) -> TaskRun:
        """The TaskRun of one execution (state ``queued``), audited as ``task.<kind>``; nothing is sent."""
        run = TaskRun.objects.create(
            kind=self.kind,
            queue=self.dla_queue,
            params=params or {},
            created_by=user if (user is not None and user.is_authenticated) else None,
            celery_id=str(uuid.uuid4()),
            message=message,
            target_type=ContentType.objects.get_for_model(target) if target is not None else None,
            target_id=str(target.pk) if target is not None else "",
        )
        from .audit import record

        record(
            f"task.{self.kind}",
            user=user,
            obj=target if target is not None else run,
            detail={
                "task_run": run.pk,
                "params": {k: v for k, v in (params or {}).items() if k != "upload_id"},
            },
        )
        return run

    def enqueue(
        self, *, user=None, target=None, params: dict | None = None, message: str = "queued"
    ) -> TaskRun:
        """Create the TaskRun and send the task to a worker once the current transaction commits."""
        run = self.create_run(user=user, target=target, params=params, message=message)
        transaction.on_commit(lambda: self._send(run.pk, run.celery_id))
        return run

    def run_here(self, run: TaskRun, *, terminal=None) -> TaskRun:
        """Execute ``run`` in this process (management commands, tests, benchmarks) with exactly a worker's
        life cycle: the same start/finish states, progress and log in the database, cancel through the run's
        cancel flag; ``terminal(fraction, message)`` also sees every progress call. Returns the finished run
        (read ``state``, ``error``, ``result``); exceptions of the body end the run ``failed``, as on a worker."""
        try:
            self.execute(run.pk, celery_id=run.celery_id, terminal=terminal)
        except KeyboardInterrupt:
            _finish(run.pk, TaskRun.State.CANCELLED, message="interrupted (Ctrl-C)")
            raise
        run.refresh_from_db()
        return run

    def _send(self, run_id: int, celery_id: str) -> None:
        try:
            self.apply_async(kwargs={"task_run_id": run_id}, task_id=celery_id, queue=self.dla_queue)
        except Exception as exc:  # broker unreachable: say so on the run instead of leaving it queued forever
            logger.exception("could not enqueue task run %s", run_id)
            _finish(
                run_id,
                TaskRun.State.FAILED,
                error=f"could not reach the task broker: {exc}",
                message="not started: task broker unreachable",
            )


def dla_task(*, kind: str, queue: str = "default", max_retries: int = 3):
    """Decorate ``fn(ctx: TaskContext, **params) -> dict | None`` as an idempotent TaskRun-backed Celery task."""
    soft_limit_s, hard_limit_s = TIME_LIMITS_S[queue]

    def decorator(fn):
        @shared_task(
            bind=True,
            base=DlaTask,
            name=f"dla.{kind}",
            acks_late=True,
            reject_on_worker_lost=True,
            soft_time_limit=soft_limit_s,
            time_limit=hard_limit_s,
            max_retries=max_retries,
        )
        def task(self, *, task_run_id: int):
            execute(task_run_id, celery_id=self.request.id, retry=self)
            return None

        def execute(task_run_id: int, *, celery_id: str, retry=None, terminal=None) -> None:
            """Run the body for ``task_run_id`` and end its TaskRun; ``retry`` is the bound Celery task
            (database errors are retried with backoff there), None in-process."""
            run = _start(task_run_id, celery_id)
            if run is None:
                return
            ctx = TaskContext(run, terminal=terminal)
            try:
                result = fn(ctx, **run.params)
            except TaskCancelled:
                _finish(task_run_id, TaskRun.State.CANCELLED, message="cancelled on request")
            except SoftTimeLimitExceeded:
                _finish(
                    task_run_id,
                    TaskRun.State.FAILED,
                    error=f"time limit of {soft_limit_s} s exceeded",
                    message="failed: time limit",
                )
            except (OperationalError, InterfaceError) as exc:
                if retry is not None and retry.request.retries < max_retries:
                    raise retry.retry(exc=exc, countdown=2 ** (retry.request.retries + 1))
                _finish(
                    task_run_id, TaskRun.State.FAILED, error=f"database unavailable: {exc}", message="failed"
                )
            except Exception as exc:
                tb = traceback.format_exc(limit=8)
                logger.warning("task run %s (%s) failed: %s", task_run_id, kind, exc)
                _finish(
                    task_run_id,
                    TaskRun.State.FAILED,
                    error=f"{type(exc).__name__}: {exc}",
                    message=f"failed: {exc}"[:500],
                    log_tail=(run.log_tail + "\n" + tb)[-20000:],
                )
            else:
                _finish(task_run_id, TaskRun.State.SUCCEEDED, result=result or {}, message="done")

        task.execute = execute
        task.kind = kind
        task.dla_queue = queue
        return task

    return decorator


def request_cancel(run: TaskRun, *, force: bool = False) -> TaskRun:
    """Ask a run to stop. Queued runs end at once; running ones stop at their next progress check, or at once
    with ``force`` (the worker child is terminated, the run marked cancelled). Finished runs are left as they are."""
    from .celery import app

    with transaction.atomic():
        run = TaskRun.objects.select_for_update().get(pk=run.pk)
        if run.is_terminal:
            return run
        was_running = run.state == TaskRun.State.RUNNING
        run.cancel_requested = True
        if not was_running or force:
            run.state = TaskRun.State.CANCELLED
            run.finished_at = timezone.now()
            run.message = "cancelled" + (
                " (worker process terminated)" if was_running else " before it started"
            )
        else:
            run.message = "cancelling..."
        run.save()
        celery_id = run.celery_id

    def revoke():
        try:
            app.control.revoke(celery_id, terminate=bool(force and was_running), signal="SIGKILL")
        except Exception:  # the embedded filesystem broker has no broadcast; cooperative cancel still works
            logger.info("revoke of %s not delivered (broker without broadcast)", celery_id)

    transaction.on_commit(revoke)
    return run


@dla_task(kind="selftest")
def selftest(ctx: TaskContext, *, steps: int = 10, step_s: float = 0.2, fail_at: int | None = None) -> dict:
    """A worker health check: counts ``steps`` steps of ``step_s`` seconds, optionally failing at ``fail_at``."""
    for step in range(steps):
        if fail_at is not None and step == fail_at:
            raise RuntimeError(f"self-test failure requested at step {step}")
        time.sleep(step_s)
        ctx.progress((step + 1) / steps, f"step {step + 1} of {steps}", force=True)
    return {"steps": steps}
