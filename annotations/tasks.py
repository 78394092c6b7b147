"""Celery tasks of the annotations app: ingest of uploaded files (queue ``default``).

Errors of the ingest and DICOMweb tasks reach TaskRun.error/message without absolute server paths
(``ingest.public_error``); the server log keeps the original."""

import logging
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from dla_web.audit import record
from dla_web.tasks import TaskContext, dla_task

from .ingest import ingest, public_error, remove_upload
from .labels import apply_draft_op
from .models import Study

logger = logging.getLogger(__name__)


@contextmanager
def _no_server_paths(what: str):
    """Re-raise an exception whose message names an absolute path on this server with the bare file name."""
    try:
        yield
    except Exception as exc:
        public = public_error(exc)
        if public is exc:
            raise
        logger.warning("%s failed: %s", what, exc)
        raise public from None


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
    from . import dicomweb

    upload_dir = Path(settings.UPLOAD_DIR) / upload_id
    files_dir = upload_dir / "files"
    from_pacs = dicomweb.has_selection(upload_dir)
    if not files_dir.is_dir() and not from_pacs:
        raise FileNotFoundError(f"upload {upload_id} is gone (already imported or removed)")
    user = get_user_model().objects.filter(pk=ctx.run.created_by_id).first()
    study = Study.objects.get(pk=study_id) if study_id else None
    with _no_server_paths("ingest"):
        return _ingest_upload(ctx, upload_dir, files_dir, from_pacs, user=user, study=study, pseudonym=pseudonym,
                              role=role, cohort=cohort, injection_site=injection_site)  # fmt: skip


def _ingest_upload(
    ctx, upload_dir, files_dir, from_pacs, *, user, study, pseudonym, role, cohort, injection_site
):
    from . import dicomweb

    progress = ctx.progress
    transfer = None
    try:
        if from_pacs:  # a DICOMweb retrieve: fetch into files/, then the same ingest as an upload
            server = dicomweb.selection_server(upload_dir)
            try:
                transfer = dicomweb.fetch_selection(
                    upload_dir,
                    max_bytes=settings.DLA_MAX_UPLOAD_BYTES,
                    progress=lambda fraction, message: ctx.progress(0.5 * fraction, message),
                )
            except dicomweb.DicomWebError as exc:
                record(
                    "dicomweb.retrieve_failed",
                    user=user,
                    detail={"server": server.name, "reason": str(exc), "task_run": ctx.run_id},
                )
                raise
            progress = lambda fraction, message: ctx.progress(0.5 + 0.5 * fraction, message)  # noqa: E731
        result = ingest(
            sorted(files_dir.iterdir()),
            work_dir=upload_dir / "work",
            user=user,
            study=study,
            pseudonym=pseudonym,
            role=role,
            cohort=cohort,
            injection_site=injection_site,
            source_tag=f"run-{ctx.run_id}",
            keep_identity=bool(from_pacs and server.keep_identity),
            progress=lambda fraction, message: progress(fraction, message),
        )
    finally:
        remove_upload(upload_dir)
    if transfer is not None:
        record("dicomweb.retrieve", user=user, obj=result.study, detail={**transfer, "task_run": ctx.run_id})
    for _, reason in result.skipped:
        ctx.log(f"skipped {reason}")
    study, volumes = result.study, result.volumes
    enqueue_cines(volumes, user=user)
    record(
        "data.import",
        user=user,
        obj=study,
        detail={"volumes": [v.pk for v in volumes], "task_run": ctx.run_id, "skipped": len(result.skipped)},
    )
    return {
        "study_id": study.pk,
        "pseudonym": study.pseudonym,
        "volume_ids": [v.pk for v in volumes],
        "skipped": [name for name, _ in result.skipped],
    }


@dla_task(kind="dicomweb_send")
def dicomweb_send(
    ctx: TaskContext,
    *,
    server: str,
    study_id: int,
    label_version_id: int | None = None,
    include_dla: bool = True,
) -> dict:
    """STOW-RS the study's DLA series and/or an approved label version's SEG to a DICOMweb server, next to the
    originals (``dicomweb.send_results``); audited whether it succeeds or not. Idempotent: the UIDs are stable,
    a re-run stores the same instances again."""
    from . import dicomweb
    from .models import LabelVersion

    user = get_user_model().objects.filter(pk=ctx.run.created_by_id).first()
    study = Study.objects.get(pk=study_id)
    version = LabelVersion.objects.get(pk=label_version_id, study=study) if label_version_id else None
    detail = {"server": server, "label_version": version.number if version else None, "task_run": ctx.run_id}
    try:
        with _no_server_paths("dicomweb send"):
            result = dicomweb.send_results(
                server, study, label_version=version, include_dla=include_dla, progress=ctx.progress
            )
    except dicomweb.DicomWebError as exc:
        record("dicomweb.send_failed", user=user, obj=study, detail={**detail, "reason": str(exc)})
        raise
    record("dicomweb.send", user=user, obj=study, detail={**detail, **result})
    return result


@dla_task(kind="recipe")
def apply_recipe(ctx: TaskContext, *, draft_id: int, op: dict) -> dict:
    """Run the auto-label recipe over the whole volume as an op of the draft (undoable like any op)."""
    ctx.progress(0.05, "running the label recipe", force=True)
    draft, result = apply_draft_op(draft_id, op)
    return {"draft_id": draft.pk, "revision": draft.revision, **result.to_dict()}


CINE_ROLES = ("fill", "subtracted", "dla")


@dla_task(kind="cine", queue="render")
def compute_cine(
    ctx: TaskContext,
    *,
    volume_id: int | None = None,
    label_version_id: int | None = None,
    size: int = 256,
    angles: int = 36,
    class_id: int = 1,
    center: float | None = None,
    width: float | None = None,
) -> dict:
    """Fill the MIP cache with the ``angles`` evenly spaced upright frames of a volume (HU, any window) or of
    one class of a label version (``mip_cache.fill_cine``). Idempotent: cached frames are skipped. ``center``
    and ``width`` are ignored (frames are stored before windowing); runs queued with them still run."""
    from . import mip_cache
    from .models import LabelVersion, Volume

    if volume_id is not None:
        volume = Volume.objects.get(pk=volume_id)
        source, target, what = mip_cache.volume_source(volume), {"volume_id": volume.pk}, "MIP"
    else:
        version = LabelVersion.objects.select_related("study").get(pk=label_version_id)
        source = mip_cache.version_source(version, class_id)
        target, what = {"label_version_id": version.pk}, "label MIP"

    def progress(fraction: float, angle_deg: float) -> None:
        done = round(fraction * angles)
        ctx.progress(fraction, f"{what} {done}/{angles} ({angle_deg:g} deg)")

    computed = mip_cache.fill_cine(source, size=size, n_angles=angles, progress=progress)
    return {**target, "angles": mip_cache.cine_angles(angles), "computed": computed, "size": size}


def enqueue_cines(volumes, *, user=None) -> list:
    """Queue a cine for each image volume worth rotating (fill, subtracted, DLA); sent on commit."""
    return [
        compute_cine.enqueue(user=user, target=v, params={"volume_id": v.pk}, message="cine queued")
        for v in volumes
        if v.role in CINE_ROLES
    ]


def enqueue_label_cine(version, *, user=None):
    """Queue the vessel-class cine of a new label version; sent on commit."""
    return compute_cine.enqueue(
        user=user, target=version, params={"label_version_id": version.pk}, message="label cine queued"
    )
