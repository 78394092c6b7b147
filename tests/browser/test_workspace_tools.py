"""Slicer's tools in the workspace, in real headless Chromium: islands (keep largest, split a clicked island to
another class, remove small below N mm^3), a brush drag that is one op and one undo step (nothing is sent while
dragging), scissors closed by a double-click, margin sizes refused in words, and the banner that appears when
someone else commits. Screenshot: test-artifacts/screenshots/workspace-tools.png."""

import numpy as np
import pytest
from rest_framework.test import APIClient

from dla.classes import BONE, UNLABELED, VESSEL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHAPE = (24, 48, 48)
SPACING = (1.5, 1.5, 1.5)
Z = 12

SCREEN_POS_JS = """([axis, row, col]) => {
  const v = document.getElementById('workspace').views[axis];
  const [x, y] = v.toCanvas(row, col);
  const r = v.canvas.getBoundingClientRect();
  return [r.left + x * r.width / v.canvas.width, r.top + y * r.height / v.canvas.height];
}"""

# the composed (slice-resolution) image of a view: 1 where the pixel has the vessel colour
VESSEL_PIXEL_JS = """([row, col]) => {
  const v = document.getElementById('workspace').views.z;
  const d = v.image.getContext('2d').getImageData(col, row, 1, 1).data;
  return d[0] > d[1] + 60 && d[0] > d[2] + 60;
}"""


def draft_state(study):
    from annotations import labels
    from annotations.models import Draft

    draft = Draft.objects.get(study=study, user__username="annotator")
    return draft, np.array(labels.draft_array(draft))


def wait_revision_above(page, revision, timeout=15000):
    page.wait_for_function(
        "(r) => Number(document.getElementById('workspace').dataset.draftRevision) > r",
        arg=revision,
        timeout=timeout,
    )
    page.wait_for_function("() => !document.getElementById('workspace').dataset.busy", timeout=timeout)
    revision = int(page.get_attribute("#workspace", "data-draft-revision"))
    page.wait_for_function(
        "(r) => (document.getElementById('view-z').dataset.loaded || '').endsWith(':' + r)",
        arg=str(revision),
        timeout=timeout,
    )
    return revision


def screen(page, row, col):
    return page.evaluate(SCREEN_POS_JS, ["z", row, col])


def click_voxel(page, row, col):
    x, y = screen(page, row, col)
    page.mouse.click(x, y)


def test_islands_stroke_undo_scissors_margin_and_commit_banner(
    page, live_server, users, login, shot, phantom_study, make_user
):
    study = phantom_study(seed=31, shape=SHAPE, spacing_mm=SPACING)
    api = APIClient()
    api.force_authenticate(users["annotator"])
    draft = api.post("/api/drafts/", {"study": study.pk}, format="json").json()
    for op in (
        {"op": "brush", "center_zyx": [Z, 16, 16], "radius_mm": 6, "label": VESSEL, "shape": "sphere"},
        {"op": "brush", "center_zyx": [Z, 34, 34], "radius_mm": 2, "label": VESSEL, "shape": "sphere"},
    ):
        assert api.post(f"/api/drafts/{draft['id']}/ops/", {"op": op}, format="json").status_code == 200
    _, start = draft_state(study)
    speck_voxels = 7  # radius 2 mm at 1.5 mm: the centre and its 6 face neighbours (23.6 mm^3)

    login(page, "annotator")
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    page.wait_for_selector("#workspace[data-draft-revision='2']")
    page.evaluate(
        """(z) => { const s = document.querySelector('#view-z .slice-slider');
                   s.value = String(z); s.dispatchEvent(new Event('input')); }""",
        Z,
    )
    page.wait_for_function(f"() => (document.getElementById('view-z').dataset.loaded || '') === '{Z}:2'")
    revision = 2

    # islands: keep the largest vessel island (the speck goes), undo brings it back
    assert page.locator("#island-options").is_hidden(), "only the active tool's options are shown"
    page.keyboard.press("i")
    page.select_option("#island-class", str(VESSEL))
    page.click("#keep-largest")
    revision = wait_revision_above(page, revision)
    _, labels = draft_state(study)
    assert (
        labels[Z, 34, 34] == UNLABELED and int((labels == VESSEL).sum()) == int((start == VESSEL).sum()) - 7
    )
    page.click("#undo")
    revision = wait_revision_above(page, revision)
    np.testing.assert_array_equal(draft_state(study)[1], start)

    # a click splits the speck off to bone; "remove small" under 30 mm^3 of bone then removes it
    page.select_option("#island-mode", "split")
    page.select_option("#island-to", str(BONE))
    click_voxel(page, 34, 34)
    revision = wait_revision_above(page, revision)
    _, labels = draft_state(study)
    assert int((labels == BONE).sum()) == speck_voxels and labels[Z, 34, 34] == BONE
    page.select_option("#island-class", str(BONE))
    page.fill("#min-island", "30")
    page.click("#remove-small")
    revision = wait_revision_above(page, revision)
    _, before_stroke = draft_state(study)
    assert not (before_stroke == BONE).any()
    assert "islands under 30" in page.inner_text("#ws-status")
    shot(page, "workspace-tools-islands")

    # a brush drag: painted locally while dragging (no request), one op with all its dabs on release
    page.keyboard.press("b")
    page.fill("#brush-radius", "2")
    page.select_option("#brush-class", str(VESSEL))
    ops_before = len(draft_state(study)[0].ops)
    x0, y0 = screen(page, 40, 6)
    x1, y1 = screen(page, 40, 40)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=12)
    assert page.evaluate(VESSEL_PIXEL_JS, [40, 23]), "the stroke is previewed while dragging"
    page.wait_for_timeout(300)
    assert len(draft_state(study)[0].ops) == ops_before, "nothing is sent while dragging"
    shot(page, "workspace-tools-stroke-preview")
    page.mouse.up()
    revision = wait_revision_above(page, revision)
    row, labels = draft_state(study)
    assert len(row.ops) == ops_before + 1, "one drag is one op"
    stroke = row.ops[-1]["op"]
    dabs = 1 + len(stroke.get("stroke_zyx", []))
    assert stroke["op"] == "brush" and dabs == int(page.get_attribute("#workspace", "data-last-stroke-dabs"))
    assert dabs >= 12, "dabs at most half a radius apart along the 34-voxel drag"
    assert (labels[Z, 40, 6:41] == VESSEL).all()
    # one undo reverts the whole stroke
    page.keyboard.press("Control+z")
    revision = wait_revision_above(page, revision)
    np.testing.assert_array_equal(draft_state(study)[1], before_stroke)

    # scissors: three clicks and a double-click close the polygon (no duplicate vertex), erasing inside
    page.keyboard.press("s")
    for r, c in ((9, 9), (9, 23), (23, 23)):
        click_voxel(page, r, c)
    x, y = screen(page, 23, 9)
    page.mouse.dblclick(x, y)
    revision = wait_revision_above(page, revision)
    row, labels = draft_state(study)
    cut = row.ops[-1]["op"]
    assert cut["op"] == "scissors" and len(cut["polygon"]) == 4, cut
    assert not (labels[Z, 10:23, 10:23] == VESSEL).any() and (labels[Z - 2, 16, 16] == VESSEL)

    # smoothing: a closing of the vessel class, only over unlabeled voxels
    page.keyboard.press("g")
    page.select_option("#only-over", str(UNLABELED))
    page.select_option("#smooth-method", "closing")
    page.fill("#smooth-kernel", "3")
    page.click("#smooth-apply")
    revision = wait_revision_above(page, revision)
    row, smoothed = draft_state(study)
    assert (smoothed[Z, 14:19, 14:19] == VESSEL).all(), "the closing bridges the one-slice cut"
    assert row.ops[-1]["op"] == {
        "op": "smooth",
        "label": VESSEL,
        "method": "closing",
        "kernel_mm": 3,
        "only_class": UNLABELED,
    }
    assert ((smoothed != labels) <= (labels == UNLABELED)).all()

    # margin: sizes refused in words (in the page and by the server), nothing changed; then a real grow
    ops_before = len(row.ops)
    page.keyboard.press("m")
    page.select_option("#morph-class", str(VESSEL))
    page.fill("#margin-size", "0")
    page.click("#margin-grow")
    assert "must be a number of mm above 0" in page.inner_text("#ws-status")
    page.fill("#margin-size", "500")
    page.click("#margin-grow")
    page.wait_for_function(
        "() => document.getElementById('ws-status').textContent.includes('larger than the whole volume')"
    )
    assert "error" in page.get_attribute("#ws-status", "class")
    assert len(draft_state(study)[0].ops) == ops_before
    page.select_option("#only-over", "")
    page.fill("#margin-size", "1.5")
    page.click("#margin-grow")
    revision = wait_revision_above(page, revision)
    _, grown = draft_state(study)
    assert int((grown == VESSEL).sum()) > int((smoothed == VESSEL).sum())

    # someone else commits: the open workspace says so and offers the rebase
    other = APIClient()
    other.force_authenticate(make_user("annotator2", "Annotator"))
    theirs = other.post("/api/drafts/", {"study": study.pk}, format="json").json()
    op = {"op": "brush", "center_zyx": [4, 40, 8], "radius_mm": 3, "label": BONE, "shape": "sphere"}
    assert other.post(f"/api/drafts/{theirs['id']}/ops/", {"op": op}, format="json").status_code == 200
    commit = other.post(
        f"/api/drafts/{theirs['id']}/commit/", {"message": "bone at the skull base"}, format="json"
    )
    assert commit.status_code == 201
    banner = page.get_by_test_id("commit-banner")
    banner.wait_for(state="visible", timeout=15000)
    text = banner.inner_text()
    assert "v1 was committed by annotator2" in text and "rebase" in text.lower(), text
    shot(page, "workspace-tools")
    page.click("#commit-banner-rebase")
    page.wait_for_function("() => document.getElementById('commit-banner').hidden", timeout=15000)
    assert " on v1 " in page.inner_text("#draft-info")
    row, _ = draft_state(study)
    assert row.base_version is not None and row.base_version.number == 1
    assert not page.js_errors, page.js_errors
