"""Celery task of the evaluation app (queue ``default``): score a model version on cohorts (``evaluate``).

Thin: the work is in ``services.run_evaluation``, which writes its rows in one transaction at the end and
replaces them on a rerun, so a redelivered message is harmless.
"""

from dla_web.tasks import TaskContext, dla_task

from . import services


@dla_task(kind="evaluate")
def evaluate(ctx: TaskContext, **params) -> dict:
    """Per-study 2x2 tables, metrics, class confusion and residual bone; Table 1 and artifact rates."""
    return services.run_evaluation(ctx, **params)
