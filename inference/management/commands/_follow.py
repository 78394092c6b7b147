"""Shared by the ``train`` and ``infer`` commands: follow a queued TaskRun with a terminal progress bar."""

import time

from django.core.management.base import CommandError

from dla_web.models import TaskRun
from dla_web.progress import TerminalProgress
from dla_web.tasks import request_cancel


def follow(run: TaskRun, stream, poll_s: float = 0.5) -> TaskRun:
    """Poll ``run`` until it ends, drawing its progress; Ctrl-C asks the run to cancel and keeps following."""
    bar = TerminalProgress(stream)
    cancelled = False
    while True:
        try:
            run.refresh_from_db()
            if run.is_terminal:
                bar(1.0 if run.state == TaskRun.State.SUCCEEDED else run.progress, run.message)
                if run.state != TaskRun.State.SUCCEEDED:
                    stream.write("\n")
                return run
            bar(run.progress, run.message)
            time.sleep(poll_s)
        except KeyboardInterrupt:
            if cancelled:
                raise CommandError(f"stopped following run {run.pk}; it keeps its cancel request") from None
            cancelled = True
            stream.write(f"\ncancelling run {run.pk} (Ctrl-C again to stop waiting)\n")
            request_cancel(run)
