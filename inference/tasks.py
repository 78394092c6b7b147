"""Celery tasks of the inference app (queue ``gpu``): training runs and dense inference.

Both are thin: the work is in ``services.run_training`` / ``services.run_inference``, which are idempotent per
TaskRun (a redelivered training run resumes from its checkpoint; a redelivered inference run skips the studies
it already stored).
"""

from dla_web.tasks import TaskContext, dla_task

from . import services


@dla_task(kind="train", queue="gpu")
def train_model(ctx: TaskContext, **params) -> dict:
    """Train a DLANet on the approved labels of a cohort and register it as a ModelVersion."""
    return services.run_training(ctx, **params)


@dla_task(kind="infer", queue="gpu")
def infer_studies(ctx: TaskContext, **params) -> dict:
    """Run a ModelVersion over the fill volumes of studies: class map, vessel probability, 3D-DLA volumes."""
    return services.run_inference(ctx, **params)
