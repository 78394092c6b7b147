"""Celery tasks of reader studies: when a study opens, make sure every case's two volumes have their rotating
MIP cine in the one MIP cache (``annotations.mip_cache``, the same frames as the viewer's cine, usually already
computed after ingest and inference by ``annotations.tasks.compute_cine``); missing frames are rendered here, and
on demand until then."""

from dla_web.tasks import dla_task

from . import services
from .models import ReaderStudy


@dla_task(kind="reader_study_cines", queue="render")
def render_reader_study_cines(ctx, *, reader_study_id: int) -> dict:
    rs = ReaderStudy.objects.get(pk=reader_study_id)
    volumes = []
    for case in rs.cases.select_related("dsa_volume", "dla_volume").order_by("id"):
        volumes += [case.dsa_volume, case.dla_volume]
    rendered = 0
    for i, volume in enumerate(volumes):
        ctx.progress(i / max(1, len(volumes)), f"cine {i + 1} of {len(volumes)}")
        rendered += services.ensure_cine(volume)  # idempotent: frames keyed by content, view and size
    ctx.progress(1.0, f"{len(volumes)} cines ready", force=True)
    return {"cines": len(volumes), "frames_rendered": rendered}
