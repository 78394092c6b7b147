"""Celery tasks of the annotations app: ingest of uploaded files (queue ``default``)."""

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from dla_web.tasks import TaskContext, dla_task

from .ingest import ingest_files, remove_upload
from .models import Study


@dla_task(kind="ingest")
def ingest_upload(
    ctx: TaskContext,
    *,
    upload_id: str,
    study_id: int | None = None,
    pseudonym: str | None = None,
    role: str | None = None,
    cohort: str = Study.Cohort.UNASSIGNED,
    injection_site: str = Study.Injection.UNKNOWN,
) -> dict:
    """Import the files of upload ``upload_id`` (a folder under UPLOAD_DIR) as a study's volumes.

    Idempotent: a re-run of a run that already created its study returns that study."""
    done = Study.objects.filter(metadata__import=f"run-{ctx.run_id}").first()
    if done is not None:
        return {
            "study_id": done.pk,
            "pseudonym": done.pseudonym,
            "volume_ids": list(done.volumes.values_list("pk", flat=True)),
        }
    upload_dir = Path(settings.UPLOAD_DIR) / upload_id
    files_dir = upload_dir / "files"
    if not files_dir.is_dir():
        raise FileNotFoundError(f"upload {upload_id} is gone (already imported or removed)")
    user = get_user_model().objects.filter(pk=ctx.run.created_by_id).first()
    study = Study.objects.get(pk=study_id) if study_id else None
    try:
        study, volumes = ingest_files(
            sorted(files_dir.iterdir()),
            work_dir=upload_dir / "work",
            user=user,
            study=study,
            pseudonym=pseudonym,
            role=role,
            cohort=cohort,
            injection_site=injection_site,
            source_tag=f"run-{ctx.run_id}",
            progress=lambda fraction, message: ctx.progress(fraction, message),
        )
    finally:
        remove_upload(upload_dir)
    return {"study_id": study.pk, "pseudonym": study.pseudonym, "volume_ids": [v.pk for v in volumes]}


@dla_task(kind="recipe")
def apply_recipe(ctx: TaskContext, *, draft_id: int, op: dict) -> dict:
    """Run the auto-label recipe over the whole volume as an op of the draft (undoable like any op)."""
    from .labels import apply_draft_op

    ctx.progress(0.05, "running the label recipe", force=True)
    draft, result = apply_draft_op(draft_id, op)
    return {"draft_id": draft.pk, "revision": draft.revision, **result.to_dict()}
