"""Celery tasks of the inference app (queue ``gpu``): training runs and dense inference, and how callers start
them (``start_training``, ``start_inference``: on a worker, or in this process for management commands).

Both are thin: the work is in ``services.run_training`` / ``services.run_inference``, which are idempotent per
TaskRun (a redelivered training run resumes from its checkpoint; a redelivered inference run skips the studies
it already stored).
"""

from django.db import transaction

from annotations.models import Volume
from annotations.tasks import enqueue_cines
from dla.model.base import DEFAULT_BONE_PRIOR_STRENGTH, DEFAULT_MIRROR, DEFAULT_PRIOR_STRENGTH
from dla_web.tasks import TaskContext, dla_task

from . import services


@dla_task(kind="train", queue="gpu")
def train_model(ctx: TaskContext, **params) -> dict:
    """Train a DLANet on the approved labels of a cohort and register it as a ModelVersion."""
    return services.run_training(ctx, **params)


@dla_task(kind="infer", queue="gpu")
def infer_studies(ctx: TaskContext, *, cine: bool = True, **params) -> dict:
    """Run a ModelVersion over the fill volumes of studies: class map, vessel probability, 3D-DLA volumes; with
    ``cine`` queue the rotating MIP of each new DLA volume for the viewer."""
    result = services.run_inference(ctx, **params)
    if cine:
        new_dla = [s["volumes"][Volume.Role.DLA] for s in result["studies"] if not s.get("reused")]
        enqueue_cines(Volume.objects.filter(pk__in=new_dla), user=ctx.run.created_by)
    return result


def start_training(*, user, params: dict, plan: dict, in_process: bool = False):
    """The TaskRun (kind ``train``) and its TrainingRun row, in one transaction; sent to the ``gpu`` queue on
    commit, or left queued for ``train_model.run_here`` with ``in_process``. Returns (run, record)."""
    message = f"training on {len(plan['train'])} studies queued"
    with transaction.atomic():
        make = train_model.create_run if in_process else train_model.enqueue
        run = make(user=user, params=params, message=message)
        record = services.create_training_record(run, params=params, plan=plan)
    return run, record


def start_inference(
    *,
    user,
    version,
    studies,
    candidate_min_hu,
    in_process: bool = False,
    cine: bool = True,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
    mirror: bool = DEFAULT_MIRROR,
    bone_prior_strength: float = DEFAULT_BONE_PRIOR_STRENGTH,
):
    """The TaskRun (kind ``infer``) of ``version`` over ``studies``; sent to the ``gpu`` queue on commit, or left
    queued for ``infer_studies.run_here`` with ``in_process``."""
    request = services.inference_request(
        user=user,
        version=version,
        studies=studies,
        candidate_min_hu=candidate_min_hu,
        prior_strength=prior_strength,
        mirror=mirror,
        bone_prior_strength=bone_prior_strength,
    )
    if not cine:
        request["params"]["cine"] = False
    with transaction.atomic():
        make = infer_studies.create_run if in_process else infer_studies.enqueue
        return make(**request)
