"""Celery tasks of reader studies: precompute the rotating MIP cines of every case's two volumes when a study
opens, so readers get every frame from the cache (frames are rendered on demand until then)."""

from dla_web.tasks import dla_task

from . import services
from .models import ReaderStudy


@dla_task(kind="reader_study_cines", queue="default")
def render_reader_study_cines(ctx, *, reader_study_id: int) -> dict:
    rs = ReaderStudy.objects.get(pk=reader_study_id)
    volumes = []
    for case in rs.cases.select_related("dsa_volume", "dla_volume").order_by("id"):
        volumes += [case.dsa_volume, case.dla_volume]
    made = 0
    for i, volume in enumerate(volumes):
        ctx.progress(i / max(1, len(volumes)), f"cine {i + 1} of {len(volumes)}")
        services.ensure_cine(volume)  # idempotent: keyed by volume and geometry
        made += 1
    ctx.progress(1.0, f"{made} cines ready", force=True)
    return {"cines": made}
