"""Rendering API: raw and PNG slices equal the stored voxels (windowed independently here), label slices equal
the draft's / version's labels, ETags give 304s, MIPs come from the cache after the cine task, and bad input is
a 400 whose message names the problem."""

import io

import numpy as np
import pytest
from PIL import Image

from dla.classes import VESSEL
from tests.conftest import wait_for_run

SHAPE = (20, 24, 28)


def _raw(response, dtype):
    rows, cols = (int(n) for n in response["X-Shape"].split(","))
    return np.frombuffer(response.content, dtype=np.dtype(dtype).newbyteorder("<")).reshape(rows, cols)


@pytest.fixture
def study(phantom_study):
    return phantom_study(seed=3, shape=SHAPE)


@pytest.fixture
def api(client_for):
    return client_for("annotator")


@pytest.mark.django_db
@pytest.mark.parametrize("axis,index", [("z", 0), ("z", 19), ("y", 7), ("x", 27)])
def test_raw_slice_equals_stored_voxels(study, api, axis, index):
    fill = study.volume("fill")
    response = api.get(f"/api/volumes/{fill.pk}/slice/", {"axis": axis, "index": index, "format": "raw"})
    assert response.status_code == 200, response.content[:200]
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Dtype"] == "int16"
    expected = np.take(np.load(f"{_storage_root()}/{fill.file}"), index, axis="zyx".index(axis))
    np.testing.assert_array_equal(_raw(response, "int16"), expected)
    assert "immutable" in response["Cache-Control"]


def _storage_root():
    from django.conf import settings

    return settings.STORAGE_ROOT


@pytest.mark.django_db
def test_png_slice_is_the_windowed_slice(study, api):
    fill = study.volume("fill")
    response = api.get(
        f"/api/volumes/{fill.pk}/slice/",
        {"axis": "z", "index": 10, "format": "png", "center": 40, "width": 400},
    )
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    decoded = np.asarray(Image.open(io.BytesIO(response.content)))
    hu = study.subject.fill_hu[10].astype(np.float64)
    expected = np.clip(np.floor((hu - (40 - 200)) * 255.0 / 400.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(decoded, expected)
    preset = api.get(f"/api/volumes/{fill.pk}/slice/", {"index": 10, "format": "png", "preset": "bone"})
    decoded = np.asarray(Image.open(io.BytesIO(preset.content)))
    expected = np.clip(np.floor((hu - (500 - 1250)) * 255.0 / 2500.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.django_db
def test_etag_gives_304_and_differs_per_slice(study, api):
    fill = study.volume("fill")
    url = f"/api/volumes/{fill.pk}/slice/"
    first = api.get(url, {"index": 3})
    again = api.get(url, {"index": 3}, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304 and again.content == b""
    assert api.get(url, {"index": 4})["ETag"] != first["ETag"]
    mip = api.get(f"/api/volumes/{fill.pk}/mip/", {"angle": 20, "size": 64})
    assert mip.status_code == 200 and mip["Content-Type"] == "image/png"
    assert (
        api.get(
            f"/api/volumes/{fill.pk}/mip/", {"angle": 20, "size": 64}, HTTP_IF_NONE_MATCH=mip["ETag"]
        ).status_code
        == 304
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params,fragment",
    [
        ({"axis": "z", "index": 20}, "slice index 20 is outside 0..19 along z"),
        ({"axis": "q", "index": 0}, "unknown axis 'q'"),
        ({"axis": "z"}, "index: this query parameter is required"),
        ({"axis": "z", "index": "ten"}, "index must be an integer"),
        ({"index": 1, "format": "png", "center": "abc", "width": 100}, "must be numbers"),
        ({"index": 1, "format": "png", "center": 40, "width": 0}, "width must be in"),
        ({"index": 1, "format": "png", "preset": "lung"}, "unknown window preset 'lung'"),
        ({"index": 1, "format": "jpeg"}, "unknown format 'jpeg'"),
    ],
)
def test_bad_slice_requests_name_the_problem(study, api, params, fragment):
    fill = study.volume("fill")
    response = api.get(f"/api/volumes/{fill.pk}/slice/", params)
    assert response.status_code == 400
    assert fragment in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params,fragment",
    [
        ({"angle": "left"}, "angle must be a number"),
        ({"tilt": 120}, "tilt within [-90, 90]"),
        ({"size": 4}, "size=4 is outside 16..512"),
        ({"size": 1024}, "size=1024 is outside 16..512"),
        ({"size": "big"}, "size must be an integer"),
        ({"tilt": "-inf"}, "tilt must be finite"),
        ({"angle": "nan"}, "angle must be finite"),
    ],
)
def test_bad_mip_requests_name_the_problem(study, api, params, fragment):
    response = api.get(f"/api/volumes/{study.volume('fill').pk}/mip/", params)
    assert response.status_code == 400
    assert fragment in response.json()["detail"]


@pytest.mark.django_db
def test_unknown_volume_and_roles(study, client_for):
    assert client_for("annotator").get("/api/volumes/999999/slice/", {"index": 0}).json()["detail"]
    assert client_for("annotator").get("/api/volumes/999999/slice/", {"index": 0}).status_code == 404
    fill = study.volume("fill")
    assert client_for("reader").get(f"/api/volumes/{fill.pk}/slice/", {"index": 0}).status_code == 403
    assert client_for(None).get(f"/api/volumes/{fill.pk}/mip/").status_code in (401, 403)


@pytest.mark.django_db
def test_draft_and_version_label_slices_equal_the_labels(study, api, users, client_for):
    from annotations import labels
    from annotations.models import Draft

    draft_id = api.post("/api/drafts/", {"study": study.pk}, format="json").json()["id"]
    op = {
        "op": "brush",
        "center_zyx": [10, 12, 14],
        "radius_mm": 4 * max(study.subject.spacing_mm),
        "label": VESSEL,
        "shape": "sphere",
    }
    assert api.post(f"/api/drafts/{draft_id}/ops/", {"op": op}, format="json").status_code == 200
    url = f"/api/drafts/{draft_id}/slice/"
    response = api.get(url, {"axis": "z", "index": 10})
    assert response.status_code == 200 and response["X-Dtype"] == "uint8"
    draft = Draft.objects.get(pk=draft_id)
    expected = np.asarray(labels.draft_array(draft))[10]
    got = _raw(response, "uint8")
    np.testing.assert_array_equal(got, expected)
    assert (got == VESSEL).sum() > 10
    # a colleague may look; the ETag follows the draft revision
    assert client_for("admin").get(url, {"axis": "y", "index": 12}).status_code == 200
    assert api.get(url, {"axis": "z", "index": 10}, HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304
    api.post(f"/api/drafts/{draft_id}/undo/", {}, format="json")
    after = api.get(url, {"axis": "z", "index": 10}, HTTP_IF_NONE_MATCH=response["ETag"])
    assert after.status_code == 200 and not (_raw(after, "uint8") == VESSEL).any()
    api.post(f"/api/drafts/{draft_id}/redo/", {}, format="json")
    version = api.post(f"/api/drafts/{draft_id}/commit/", {"message": "one ball"}, format="json").json()
    vresponse = api.get(f"/api/label-versions/{version['id']}/slice/", {"axis": "x", "index": 14})
    assert vresponse.status_code == 200 and "immutable" in vresponse["Cache-Control"]
    from annotations.models import LabelVersion

    np.testing.assert_array_equal(
        _raw(vresponse, "uint8"), labels.version_labels(LabelVersion.objects.get(pk=version["id"]))[:, :, 14]
    )
    bad = api.get(f"/api/label-versions/{version['id']}/slice/", {"axis": "x", "index": 28})
    assert bad.status_code == 400 and "outside 0..27 along x" in bad.json()["detail"]
    # the vessel MIP of the version is an RGBA image whose opaque pixels are in the vessel colour
    mip = api.get(f"/api/label-versions/{version['id']}/mip/", {"angle": 0, "size": 64})
    rgba = np.asarray(Image.open(io.BytesIO(mip.content)))
    assert rgba.shape == (64, 64, 4) and rgba[..., 3].max() > 200
    draft_mip = api.get(f"/api/drafts/{draft_id}/mip/", {"angle": 90, "size": 64})
    assert draft_mip.status_code == 200 and "no-cache" in draft_mip["Cache-Control"]


@pytest.mark.django_db(transaction=True)
def test_cine_task_fills_the_cache_and_mips_are_hits(phantom_study, client_for, celery_worker):
    study = phantom_study(seed=4, shape=SHAPE)
    api = client_for("annotator")
    fill = study.volume("fill")
    status = api.get(f"/api/volumes/{fill.pk}/cine/", {"size": 64}).json()
    assert status["complete"] is False and len(status["angles"]) == 36 and status["run"] is None
    run = api.post(f"/api/volumes/{fill.pk}/cine/", {"size": 64}, format="json")
    assert run.status_code == 202
    done = wait_for_run(run.json()["id"], worker=celery_worker, timeout_s=60)
    assert done.state == "succeeded", done.error
    assert done.result["computed"] == 36
    status = api.get(f"/api/volumes/{fill.pk}/cine/", {"size": 64}).json()
    assert status["complete"] is True and status["run"]["state"] == "succeeded"
    hit = api.get(f"/api/volumes/{fill.pk}/mip/", {"angle": 30, "size": 64})
    assert hit["X-Cache"] == "hit"
    # the cached bytes are the windowed MIP rendered here independently
    from dla.render.mip import rotated_mip
    from dla.render.slices import WINDOW_PRESETS_HU, Window, window_to_uint8

    expected = window_to_uint8(
        rotated_mip(study.subject.fill_hu, study.subject.spacing_mm, 30.0, out_size=64),
        Window(*WINDOW_PRESETS_HU["vessel"]),
    )
    decoded = np.asarray(Image.open(io.BytesIO(hit.content)))
    assert np.mean(np.abs(decoded.astype(int) - expected.astype(int)) <= 1) > 0.99
    assert api.get(f"/api/volumes/{fill.pk}/mip/", {"angle": 35, "size": 64})["X-Cache"] == "miss"


@pytest.mark.django_db
def test_worst_mip_parameters_are_refused_or_served_bounded(study, api):
    """Every MIP endpoint (volume, label version, draft) refuses a size above the cap with a 400 naming it, and
    serves the largest size at the steepest tilt (the bounded grid, see tests/unit/render/test_render_budget.py
    for its measured memory)."""
    from dla.render.mip import MAX_MIP_SIZE_PX

    draft_id = api.post("/api/drafts/", {"study": study.pk}, format="json").json()["id"]
    op = {"op": "brush", "center_zyx": [10, 12, 14], "radius_mm": 6.0, "label": VESSEL, "shape": "sphere"}
    assert api.post(f"/api/drafts/{draft_id}/ops/", {"op": op}, format="json").status_code == 200
    version = api.post(f"/api/drafts/{draft_id}/commit/", {"message": "ball"}, format="json").json()["id"]
    assert api.post(f"/api/drafts/{draft_id}/ops/", {"op": op}, format="json").status_code == 200
    urls = [
        f"/api/volumes/{study.volume('fill').pk}/mip/",
        f"/api/label-versions/{version}/mip/",
        f"/api/drafts/{draft_id}/mip/",
    ]
    for url in urls:
        refused = api.get(url, {"angle": 33, "tilt": 45, "size": 1024})
        assert refused.status_code == 400, url
        assert f"size=1024 is outside 16..{MAX_MIP_SIZE_PX}" in refused.json()["detail"]
        for tilt in (45, -90, 0):
            served = api.get(url, {"angle": 33, "tilt": tilt, "size": MAX_MIP_SIZE_PX})
            assert served.status_code == 200, (url, tilt, served.content[:200])
            image = np.asarray(Image.open(io.BytesIO(served.content)))
            assert image.shape[:2] == (MAX_MIP_SIZE_PX, MAX_MIP_SIZE_PX)
        tilted = np.asarray(
            Image.open(io.BytesIO(api.get(url, {"angle": 33, "tilt": 45, "size": 64}).content))
        )
        assert tilted.max() > tilted.min(), f"{url}: the tilted MIP shows something"
    cine = api.post(f"/api/volumes/{study.volume('fill').pk}/cine/", {"size": 1024}, format="json")
    assert cine.status_code == 400 and "size=1024 is outside 16..512" in cine.json()["detail"]


@pytest.mark.django_db
def test_renders_beyond_the_slots_get_a_503_not_a_pile_up(study, api, settings):
    """With every render slot taken, a MIP outside the cine is refused at once once the queue is full, a cine
    frame waits at most DLA_RENDER_WAIT_S; both are 503s with a message, and the next request renders again."""
    import threading

    from annotations import mip_cache

    settings.DLA_RENDER_QUEUE = 0
    settings.DLA_RENDER_WAIT_S = 0.2
    url = f"/api/volumes/{study.volume('fill').pk}/mip/"
    holding, release = threading.Event(), threading.Event()

    def hold():
        with mip_cache.render_slot():
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        busy = api.get(url, {"angle": 33, "tilt": 45, "size": 64})
        assert busy.status_code == 503 and "busy rendering" in busy.json()["detail"]
        assert busy["Retry-After"] == "2", "a client is told when to try again"
        waited = api.get(url, {"angle": 70})  # a cine view: waits for a slot, then gives up
        assert waited.status_code == 503 and "try again" in waited.json()["detail"]
    finally:
        release.set()
        holder.join(30)
    assert api.get(url, {"angle": 33, "tilt": 45, "size": 64}).status_code == 200
    assert api.get(url, {"angle": 70})["X-Cache"] == "miss"
