"""The ROI-box tool in headless Chromium: drag a box on the axial view; labels outside it (through all slices)
become unlabeled, labels inside stay, and the op is recorded (undoable) on the draft."""

import numpy as np
import pytest
from rest_framework.test import APIClient

from dla.classes import BONE, VESSEL
from tests.browser.test_workspace import (
    SCREEN_POS_JS,
    SPACING,
    _draft_labels,
    _go_to_slice,
    _wait_revision_above,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_roi_box_keeps_labels_inside_only(page, live_server, users, login, shot, phantom_study):
    study = phantom_study(seed=91, shape=(32, 64, 64), spacing_mm=SPACING)
    api = APIClient()
    api.force_authenticate(users["annotator"])
    draft = api.post("/api/drafts/", {"study": study.pk}, format="json").json()
    for center, label in (([16, 20, 20], VESSEL), ([16, 44, 44], BONE)):
        op = {"op": "brush", "center_zyx": center, "radius_mm": 6, "label": label, "shape": "sphere"}
        assert api.post(f"/api/drafts/{draft['id']}/ops/", {"op": op}, format="json").status_code == 200
    login(page, "annotator")
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    page.wait_for_selector("#workspace[data-draft-revision]")
    _go_to_slice(page, "z", 16)
    revision = int(page.get_attribute("#workspace", "data-draft-revision"))
    page.click("#tools button[data-tool=roi]")
    x0, y0 = page.evaluate(SCREEN_POS_JS, ["z", 8, 8])  # (row=y, col=x) corners around the vessel sphere
    x1, y1 = page.evaluate(SCREEN_POS_JS, ["z", 31, 31])
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    _wait_revision_above(page, revision)
    shot(page, "workspace-roi")
    saved, labels = _draft_labels(study)
    last = saved.ops[-1]["op"]
    assert last["op"] == "set_roi" and last["box_zyx"] == [0, 32, 8, 32, 8, 32]
    assert (labels[:, 8:32, 8:32] == VESSEL).any(), "the vessel inside the box was lost"
    outside = labels.copy()
    outside[:, 8:32, 8:32] = 0
    assert not outside.any() and not (labels == BONE).any(), "labels outside the box survived"
    assert not page.js_errors
    np.testing.assert_array_equal(labels[16, 20, 20], VESSEL)
