"""Celery task of the evaluation app (queue ``default``): score a model version on cohorts (``evaluate``), and
how callers start it (``start_evaluation``: on a worker, or in this process for ``manage.py evaluate``).

Thin: the work is in ``services.run_evaluation``, which writes its rows in one transaction at the end and
replaces them on a rerun, so a redelivered message is harmless.
"""

from django.db import transaction

from dla_web.tasks import TaskContext, dla_task

from . import services
from .models import Evaluation


@dla_task(kind="evaluate")
def evaluate(ctx: TaskContext, **params) -> dict:
    """Per-study 2x2 tables, metrics, class confusion and residual bone; Table 1 and artifact rates."""
    return services.run_evaluation(ctx, **params)


def start_evaluation(*, user, in_process: bool = False, **request) -> Evaluation:
    """Create the Evaluation (``request``: model_version, cohorts, reference, ci_method, allow_missing, ...) and
    its TaskRun in one transaction; sent to a worker on commit, or left queued for ``evaluate.run_here`` with
    ``in_process``. Raises ``services.EvaluationInputError`` naming what is missing."""
    with transaction.atomic():
        evaluation, n_studies = services.create_evaluation(user=user, **request)
        make = evaluate.create_run if in_process else evaluate.enqueue
        evaluation.task_run = make(
            user=user,
            target=evaluation,
            params={"evaluation_id": evaluation.pk},
            message=f"queued: {n_studies} studies",
        )
        evaluation.save(update_fields=["task_run"])
    return evaluation
