# ruff: noqa: F811
"""Frames before reading: opening a reader study whose frames are not all rendered answers 202 "opening" and
queues a real Celery task that fills the one MIP cache with both volumes' rotating MIPs (the viewer's cine
frames) and sets each case's window floor; readers see the study only once it is open, so no first fetch is
slower by method. A frame that goes missing later (storage cleaned) is rendered together with its partner
before either is served. Every fetch of a frame, by the reader or through the viewer, shows the same cached
frame (the reader's with the case's floored window)."""

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from tests.conftest import wait_for_run
from tests.integration.reader_support import open_reader_study, reader_cases  # noqa: F401


def cache_path(key: str) -> str:
    return f"mip_cache/{key[:2]}/{key}.npy"  # the storage layout documented in annotations.mip_cache


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_open_renders_every_frame_with_a_worker_before_anyone_reads(
    reader_cases, users, client_for, celery_worker
):
    from annotations import mip_cache
    from dla.render.mip import rotated_mip
    from dla.render.slices import WINDOW_PRESETS_HU, Window, floor_window, window_to_uint8
    from reader_study import services
    from reader_study.models import Assignment, ReaderStudy

    admin = client_for("admin")
    rs_id = admin.post("/api/reader-studies/", {"title": "cines"}, format="json").json()["id"]
    study = reader_cases(1, first_seed=140)[0]
    admin.post(f"/api/reader-studies/{rs_id}/cases/", {"ids": [study.pk]}, format="json")
    admin.post(f"/api/reader-studies/{rs_id}/readers/", {"ids": [users["reader"].pk]}, format="json")
    r = admin.post(f"/api/reader-studies/{rs_id}/open/")
    assert r.status_code == 202 and r.json()["status"] == "opening", r.json()
    # nothing to read while the frames are rendered (checked when the worker had not finished by then)
    reader = client_for("reader")
    listed = reader.get("/api/reading-studies/").json()
    if ReaderStudy.objects.get(pk=rs_id).status == "opening":
        assert listed == []
    run = wait_for_run(r.json()["cine_task_run"], worker=celery_worker, timeout_s=180)
    assert run.state == "succeeded", run.error
    assert run.result["cines"] == 2 and run.result["status"] == "open"
    rs = ReaderStudy.objects.get(pk=rs_id)
    assert rs.status == "open" and services.frames_ready(rs)
    asg = Assignment.objects.get(reader__reader_study_id=rs_id)
    for method in ("dsa", "dla"):
        assert services.cine_ready(asg.case.volume(method))
    assert asg.case.display_floor_hu > 0
    # the stored frame is the MIP rendered here independently, rounded to whole HU
    dla = study.volume("dla")
    key = mip_cache.frame_key(mip_cache.volume_source(dla), services.frame_view(9))
    stored = mip_cache.load_frame(key)
    assert stored.shape == (services.FRAME_SIZE, services.FRAME_SIZE) and stored.dtype == np.int16
    direct = rotated_mip(dla.array(), dla.spacing_mm, 90.0, out_size=services.FRAME_SIZE)
    assert np.abs(stored.astype(np.float32) - direct).max() <= 0.5 + 1e-3
    # the reader's frame is the cached frame in the case's floored window, through the token URL
    window = floor_window(Window(*WINDOW_PRESETS_HU["vessel"]), asg.case.display_floor_hu)
    volume_a = asg.case.volume(asg.method_of("A"))
    frame_a = mip_cache.load_frame(
        mip_cache.frame_key(mip_cache.volume_source(volume_a), services.frame_view(4))
    )
    served = reader.get(f"/api/reading/{asg.token}/image/A/?angle=40")
    assert served.status_code == 200
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(served.content))), window_to_uint8(frame_a, window)
    )
    # one cache: the annotator viewer's MIP of the same volume and angle is that frame (its own window)
    viewer = client_for("annotator").get(
        f"/api/volumes/{volume_a.pk}/mip/", {"angle": 40, "size": services.FRAME_SIZE, "preset": "vessel"}
    )
    assert viewer.status_code == 200 and viewer["X-Cache"] == "hit"
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(viewer.content))),
        window_to_uint8(frame_a, Window(*WINDOW_PRESETS_HU["vessel"])),
    )


@pytest.mark.django_db
def test_a_missing_frame_is_rendered_with_its_partner_before_either_is_served(open_reader_study, client_for):
    from annotations import mip_cache
    from reader_study import services

    rs = open_reader_study(n_cases=1)
    asg = rs.readers.get().assignments.get()
    keys = {
        image: mip_cache.frame_key(
            mip_cache.volume_source(asg.case.volume(asg.method_of(image))), services.frame_view(7)
        )
        for image in ("A", "B")
    }
    before = {image: mip_cache.load_frame(key) for image, key in keys.items()}
    reader = client_for("reader")
    png_a = reader.get(f"/api/reading/{asg.token}/image/A/?angle=70").content
    for evicted, asked in (("B", "A"), ("A", "B")):
        default_storage.delete(cache_path(keys[evicted]))
        assert not mip_cache.has_frame(keys[evicted])
        r = reader.get(f"/api/reading/{asg.token}/image/{asked}/?angle=70")
        assert r.status_code == 200
        assert mip_cache.has_frame(keys[evicted])  # the partner was rendered and stored first
        np.testing.assert_array_equal(mip_cache.load_frame(keys[evicted]), before[evicted])
    assert reader.get(f"/api/reading/{asg.token}/image/A/?angle=70").content == png_a
