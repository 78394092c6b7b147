# ruff: noqa: F811
"""Cine precomputation: opening a reader study queues a real Celery task that renders both volumes' rotating MIPs;
frames then come from the cache and equal the on-demand rendering (same size and bytes)."""

import numpy as np
import pytest

from tests.conftest import wait_for_run
from tests.integration.reader_support import open_reader_study, reader_cases  # noqa: F401


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_open_precomputes_cines_with_a_worker(reader_cases, users, client_for, celery_worker):
    from annotations import volume_store
    from dla.render.mip import rotated_mip
    from reader_study import services
    from reader_study.models import Assignment, Cine

    admin = client_for("admin")
    rs_id = admin.post("/api/reader-studies/", {"title": "cines"}, format="json").json()["id"]
    study = reader_cases(1)[0]
    admin.post(f"/api/reader-studies/{rs_id}/cases/", {"ids": [study.pk]}, format="json")
    admin.post(f"/api/reader-studies/{rs_id}/readers/", {"ids": [users["reader"].pk]}, format="json")
    r = admin.post(f"/api/reader-studies/{rs_id}/open/")
    assert r.status_code == 200
    # a frame before the cine exists is rendered on demand
    asg_before = Assignment.objects.get(reader__reader_study_id=rs_id)
    on_demand = services.blinded_frame_png(asg_before, "A", 40, "vessel")
    run = wait_for_run(r.json()["cine_task_run"], worker=celery_worker, timeout_s=120)
    assert run.state == "succeeded", run.error
    assert Cine.objects.count() == 2
    cine = Cine.objects.get(volume=study.volume("dla"))
    stack = volume_store.load_array(cine.file)
    assert stack.shape == (services.N_ANGLES, services.FRAME_SIZE, services.FRAME_SIZE)
    direct = rotated_mip(cine.volume.array(), cine.volume.spacing_mm, 90.0, out_size=services.FRAME_SIZE)
    assert np.abs(stack[9].astype(np.float32) - direct).max() <= 0.5 + 1e-3
    cached = services.blinded_frame_png(asg_before, "A", 40, "vessel")
    assert len(cached) == len(on_demand)
    reader = client_for("reader")
    assert reader.get(f"/api/reading/{asg_before.token}/image/A/?angle=40").content == cached
