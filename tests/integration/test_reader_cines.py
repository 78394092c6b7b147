# ruff: noqa: F811
"""Cine precomputation: opening a reader study queues a real Celery task that fills the one MIP cache with both
volumes' rotating MIPs (the viewer's cine frames); a frame fetched before then is rendered on demand and stored,
and every later fetch of it, by the reader or through the viewer, serves the same frame."""

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import wait_for_run
from tests.integration.reader_support import open_reader_study, reader_cases  # noqa: F401


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_open_precomputes_cines_with_a_worker(reader_cases, users, client_for, celery_worker):
    from annotations import mip_cache
    from dla.render.mip import rotated_mip
    from dla.render.slices import WINDOW_PRESETS_HU, Window, window_to_uint8
    from reader_study import services
    from reader_study.models import Assignment

    admin = client_for("admin")
    rs_id = admin.post("/api/reader-studies/", {"title": "cines"}, format="json").json()["id"]
    study = reader_cases(1, first_seed=140)[0]
    admin.post(f"/api/reader-studies/{rs_id}/cases/", {"ids": [study.pk]}, format="json")
    admin.post(f"/api/reader-studies/{rs_id}/readers/", {"ids": [users["reader"].pk]}, format="json")
    r = admin.post(f"/api/reader-studies/{rs_id}/open/")
    assert r.status_code == 200
    # a frame before the cine exists is rendered on demand (and stored in the shared cache)
    asg = Assignment.objects.get(reader__reader_study_id=rs_id)
    on_demand = services.blinded_frame_png(asg, "A", 40, "vessel")
    run = wait_for_run(r.json()["cine_task_run"], worker=celery_worker, timeout_s=120)
    assert run.state == "succeeded", run.error
    assert run.result["cines"] == 2
    for method in ("dsa", "dla"):
        assert services.cine_ready(asg.case.volume(method))
    # the stored frame is the MIP rendered here independently, rounded to whole HU
    dla = study.volume("dla")
    key = mip_cache.frame_key(mip_cache.volume_source(dla), services.frame_view(9))
    stored = mip_cache.load_frame(key)
    assert stored.shape == (services.FRAME_SIZE, services.FRAME_SIZE) and stored.dtype == np.int16
    direct = rotated_mip(dla.array(), dla.spacing_mm, 90.0, out_size=services.FRAME_SIZE)
    assert np.abs(stored.astype(np.float32) - direct).max() <= 0.5 + 1e-3
    # the frame rendered on demand is the cached frame, byte for byte, through the reader's token URL too
    cached = services.blinded_frame_png(asg, "A", 40, "vessel")
    assert cached == on_demand
    reader = client_for("reader")
    assert reader.get(f"/api/reading/{asg.token}/image/A/?angle=40").content == cached
    # one cache: the annotator viewer's MIP of the same volume and angle is that frame in the same window
    volume_a = asg.case.volume(asg.method_of("A"))
    viewer = client_for("annotator").get(
        f"/api/volumes/{volume_a.pk}/mip/", {"angle": 40, "size": services.FRAME_SIZE, "preset": "vessel"}
    )
    assert viewer.status_code == 200 and viewer["X-Cache"] == "hit"
    shown = np.asarray(Image.open(io.BytesIO(viewer.content)))
    frame = mip_cache.load_frame(
        mip_cache.frame_key(mip_cache.volume_source(volume_a), services.frame_view(4))
    )
    np.testing.assert_array_equal(shown, window_to_uint8(frame, Window(*WINDOW_PRESETS_HU["vessel"])))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(cached))), shown)
