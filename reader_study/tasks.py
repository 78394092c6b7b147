"""Celery tasks of reader studies: opening. A study that is "opening" becomes readable only when every case's
two volumes have their rotating MIP cine in the one MIP cache (``annotations.mip_cache``, the same frames as
the viewer's cine, usually already computed after ingest and inference by ``annotations.tasks.compute_cine``)
and every case its window floor; this task renders what is missing, then opens the study. Re-running it is
harmless (frames are keyed by content, view and size; opening is idempotent)."""

from dla_web.audit import record
from dla_web.tasks import dla_task

from . import services
from .models import ReaderStudy


@dla_task(kind="reader_study_cines", queue="default")
def render_reader_study_cines(ctx, *, reader_study_id: int) -> dict:
    rs = ReaderStudy.objects.get(pk=reader_study_id)
    if rs.status != ReaderStudy.Status.OPENING:
        ctx.progress(1.0, f"nothing to do: the reader study is {rs.status}", force=True)
        return {"cines": 0, "frames_rendered": 0, "status": rs.status}
    result = services.prepare_frames(rs, progress=ctx.progress)
    rs = services.finish_open(rs)
    if rs.status == ReaderStudy.Status.OPEN:
        record("reader_study.open", user=ctx.run.created_by, obj=rs, detail={"task_run": ctx.run.pk})
    ctx.progress(1.0, f"{result['cines']} cines ready; the reader study is {rs.status}", force=True)
    return {**result, "status": rs.status}
