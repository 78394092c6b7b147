"""The one task decorator (``dla_task``) and the TaskRun life cycle shared by every long job.

``@dla_task(kind=..., queue=...)`` turns ``fn(ctx, **params)`` into a Celery task with acks_late,
reject_on_worker_lost, time limits and a retry policy for lost database connections. ``task.enqueue(...)``
creates the TaskRun and sends the message only after the surrounding transaction commits. The task body is
idempotent: a redelivered message for a finished or cancelled run does nothing, one for a run whose worker died
starts the work again from its parameters (writers of results must be atomic and keyed by the run).

Runs never lie about being alive: while a body runs, a heartbeat thread stamps ``TaskRun.heartbeat_at`` every
``TASK_HEARTBEAT_S``; a message for a run that is running with a fresh heartbeat is a duplicate and is skipped.
``reap_lost_runs`` (run by every worker at start and then periodically) finds running runs whose heartbeat is
older than ``TASK_LOST_AFTER_S``: each is requeued once (every body is idempotent: training resumes from its
checkpoint, cohort inference skips stored studies), a second loss ends it ``failed`` with the reason; cancelling
a lost run ends it at once.
"""

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from datetime import timedelta

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.utils import timezone

from .api import readable_error
from .models import TaskRun

logger = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 0.5


def heartbeat_s() -> float:
    return float(getattr(settings, "TASK_HEARTBEAT_S", 5))


def lost_after_s() -> float:
    return float(getattr(settings, "TASK_LOST_AFTER_S", 60))


TIME_LIMITS_S = {"default": (3600, 3660), "render": (3600, 3660), "gpu": (48 * 3600, 48 * 3600 + 60)}


class TaskCancelled(Exception):
    """Raised inside a task when its run was cancelled; the run ends in state ``cancelled``."""


class TaskSuperseded(Exception):
    """Raised inside a task whose run was taken over by another execution (its worker was taken as lost and the
    run requeued): this execution stops without touching the run."""


class TaskContext:
    """Handed to every task function: progress reporting, log lines and cooperative cancellation."""

    def __init__(self, run: TaskRun, *, terminal=None):
        self.run = run
        self.run_id = run.pk
        self.celery_id = run.celery_id
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
        if not TaskRun.objects.filter(pk=self.run_id, celery_id=self.celery_id).update(**fields):
            raise TaskSuperseded(f"task run {self.run_id} was requeued and is run by another execution")
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


def _finish(run_id: int, state: str, *, celery_id: str | None = None, **fields) -> None:
    """End a run (under its row lock); nothing happens when it already ended or, with ``celery_id``, when another
    execution has taken it over."""
    with transaction.atomic():
        run = TaskRun.objects.select_for_update().get(pk=run_id)
        if run.is_terminal or (celery_id is not None and run.celery_id != celery_id):
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


def _alive(run: TaskRun) -> bool:
    """Running with a heartbeat fresher than TASK_LOST_AFTER_S: some worker is executing it right now."""
    fresh = run.heartbeat_at and timezone.now() - run.heartbeat_at < timedelta(seconds=lost_after_s())
    return run.state == TaskRun.State.RUNNING and bool(fresh)


def _start(run_id: int, celery_id: str) -> TaskRun | None:
    """Lock the run and mark it running; None when there is nothing to do (finished, cancelled, or running
    elsewhere with a fresh heartbeat: a duplicate or early redelivery of its message)."""
    # Content type ids are cached per process; a worker outliving a database reset (test flushes, restores from
    # backup) must not write stale ids into TaskRun.target_type.
    ContentType.objects.clear_cache()
    with transaction.atomic():
        run = TaskRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.is_terminal:
            return None
        if _alive(run):
            logger.info(
                "task run %s is running elsewhere (heartbeat %s); message %s skipped",
                run_id,
                run.heartbeat_at,
                celery_id,
            )
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


def _done_message(result: dict) -> str:
    """The final message of a succeeded run: its warnings when it has any (never a plain "done" then), else the
    summary it reports (e.g. what the recipe kept), else "done"."""
    warnings = result.get("warnings") or []
    if warnings:
        return f"done, {len(warnings)} warning(s): {' '.join(map(str, warnings))}"[:500]
    report = result.get("report")
    summary = report.get("summary") if isinstance(report, dict) else None
    return f"done: {summary}"[:500] if summary else "done"


class _Heartbeat:
    """A daemon thread that stamps ``heartbeat_at`` of a running run every TASK_HEARTBEAT_S while the body runs,
    so a long step without progress calls still shows the run alive (its own database connection)."""

    def __init__(self, run_id: int, celery_id: str):
        self.run_id = run_id
        self.celery_id = celery_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)
        return False

    def _beat(self) -> None:
        try:
            while not self.stop.wait(heartbeat_s()):
                try:
                    TaskRun.objects.filter(
                        pk=self.run_id, celery_id=self.celery_id, state=TaskRun.State.RUNNING
                    ).update(heartbeat_at=timezone.now())
                except Exception:  # a busy SQLite file or a database restart: try again next beat
                    logger.info("heartbeat of task run %s not written", self.run_id, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()


def reap_lost_runs() -> list[int]:
    """Find running runs whose heartbeat is older than TASK_LOST_AFTER_S (their worker is gone): requeue each
    once with a new message, end it failed with the reason after a second loss (or cancelled when cancel was
    asked). Returns the run ids."""
    limit = timezone.now() - timedelta(seconds=lost_after_s())
    reaped = []
    candidates = TaskRun.objects.filter(state=TaskRun.State.RUNNING, heartbeat_at__lt=limit).values_list(
        "pk", flat=True
    )
    for run_id in list(candidates):
        with transaction.atomic():
            run = TaskRun.objects.select_for_update().filter(pk=run_id).first()
            if run is None or _alive(run) or run.state != TaskRun.State.RUNNING:
                continue
            since = timezone.localtime(run.heartbeat_at).strftime("%H:%M:%S")
            task = _REGISTRY.get(run.kind)
            if run.cancel_requested:
                run.state, run.message = (
                    TaskRun.State.CANCELLED,
                    f"cancelled (its worker is gone since {since})",
                )
                run.finished_at = timezone.now()
            elif task is not None and run.attempts < 2:
                run.state = TaskRun.State.QUEUED
                run.celery_id = str(uuid.uuid4())
                run.message = f"worker lost (no heartbeat since {since}); requeued"
                run.append_log(f"{timezone.now():%H:%M:%S} worker {run.worker} lost; requeued")
                celery_id = run.celery_id
                transaction.on_commit(lambda t=task, r=run_id, c=celery_id: t._send(r, c))
            else:
                run.state, run.finished_at = TaskRun.State.FAILED, timezone.now()
                run.error = f"the worker running it stopped (no heartbeat since {since})"
                run.message = "failed: worker lost"
            run.save()
            reaped.append(run_id)
    if reaped:
        logger.warning("reaped lost task runs %s", reaped)
    return reaped


_REGISTRY: dict[str, "DlaTask"] = {}


def start_reaper() -> threading.Thread:
    """Run ``reap_lost_runs`` now and then every third of TASK_LOST_AFTER_S in a daemon thread (each worker
    starts one; several reapers are safe: each run is reaped under its row lock)."""

    def loop():
        while True:
            try:
                reap_lost_runs()
            except Exception:  # the database is down for a moment: the next round tries again
                logger.warning("reaping lost task runs failed", exc_info=True)
            finally:
                close_old_connections()
            time.sleep(max(1.0, lost_after_s() / 3))

    thread = threading.Thread(target=loop, name="task-reaper", daemon=True)
    thread.start()
    return thread


@worker_ready.connect
def _start_reaping_lost_runs(**kwargs):
    """Every worker looks for runs whose worker died (no heartbeat) at start and then periodically."""
    start_reaper()


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
            beat = _Heartbeat(task_run_id, run.celery_id)
            try:
                with beat:
                    result = fn(ctx, **run.params)
            except TaskSuperseded as exc:
                logger.warning("%s; this execution stops", exc)
            except TaskCancelled:
                _finish(
                    task_run_id,
                    TaskRun.State.CANCELLED,
                    celery_id=run.celery_id,
                    message="cancelled on request",
                )
            except SoftTimeLimitExceeded:
                _finish(
                    task_run_id,
                    TaskRun.State.FAILED,
                    celery_id=run.celery_id,
                    error=f"time limit of {soft_limit_s} s exceeded",
                    message="failed: time limit",
                )
            except (OperationalError, InterfaceError) as exc:
                if retry is not None and retry.request.retries < max_retries:
                    raise retry.retry(exc=exc, countdown=2 ** (retry.request.retries + 1))
                _finish(
                    task_run_id,
                    TaskRun.State.FAILED,
                    celery_id=run.celery_id,
                    error=f"database unavailable: {exc}",
                    message="failed",
                )
            except Exception as exc:
                tb = traceback.format_exc(limit=8)
                logger.warning("task run %s (%s) failed: %s", task_run_id, kind, exc)
                _finish(
                    task_run_id,
                    TaskRun.State.FAILED,
                    celery_id=run.celery_id,
                    error=readable_error(exc),
                    message=f"failed: {readable_error(exc)}"[:500],
                    log_tail=(run.log_tail + "\n" + tb)[-20000:],
                )
            else:
                _finish(
                    task_run_id,
                    TaskRun.State.SUCCEEDED,
                    celery_id=run.celery_id,
                    result=result or {},
                    message=_done_message(result or {}),
                )

        task.execute = execute
        task.kind = kind
        task.dla_queue = queue
        _REGISTRY[kind] = task
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
        lost = was_running and not _alive(run)
        run.cancel_requested = True
        if not was_running or force or lost:
            run.state = TaskRun.State.CANCELLED
            run.finished_at = timezone.now()
            if lost:
                since = (
                    timezone.localtime(run.heartbeat_at).strftime("%H:%M:%S")
                    if run.heartbeat_at
                    else "its start"
                )
                run.message = f"cancelled (its worker is gone: no heartbeat since {since})"
            elif was_running:
                run.message = "cancelled (the worker process running it was terminated)"
            else:
                run.message = "cancelled before it started"
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
