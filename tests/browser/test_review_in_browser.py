"""Label review in real headless Chromium: an annotator's submitted version waits in the admin's review queue; the
admin opens it in the workspace read-only, sees the changes against the parent (overlay and per-class counts
that match an independent numpy diff of the two maps), is refused a rejection without a comment, approves with
one; the training form stops listing the study as lacking approved labels and the author sees "approved".
Screenshots: test-artifacts/screenshots/review-*.png."""

import numpy as np
import pytest
from rest_framework.test import APIClient

from dla.classes import BONE, LABELED_CLASSES, UNLABELED, VESSEL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHAPE, SPACING = (24, 40, 40), (2.0, 2.0, 2.0)

# pixels drawn in the diff colour for "now labeled" (magenta: red and blue high, green low)
MAGENTA_PIXELS_JS = """(testid) => {
  const c = document.querySelector(`[data-testid=${testid}]`);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 2] > 200 && d[i + 1] < 90) n++;
  return n;
}"""


# "now unlabeled" (cyan: green and blue high, red low)
CYAN_PIXELS_JS = MAGENTA_PIXELS_JS.replace(
    "d[i] > 200 && d[i + 2] > 200 && d[i + 1] < 90", "d[i + 1] > 200 && d[i + 2] > 200 && d[i] < 90"
)


def _annotator_versions(users, study):
    """v1 (two balls) and v2 (one more vessel ball, one bone ball erased), v2 submitted; made through the API
    as the annotator would in the workspace."""
    api = APIClient()
    api.force_authenticate(users["annotator"])
    draft = api.post("/api/drafts/", {"study": study.pk}, format="json").json()

    def op(**body):
        response = api.post(f"/api/drafts/{draft['id']}/ops/", {"op": body}, format="json")
        assert response.status_code == 200, response.json()

    op(op="brush", center_zyx=[12, 12, 12], radius_mm=5, label=VESSEL, shape="sphere")
    op(op="brush", center_zyx=[12, 28, 28], radius_mm=5, label=BONE, shape="sphere")
    v1 = api.post(f"/api/drafts/{draft['id']}/commit/", {"message": "two balls"}, format="json").json()
    op(op="brush", center_zyx=[8, 12, 28], radius_mm=4, label=VESSEL, shape="sphere")
    op(op="brush", center_zyx=[12, 28, 28], radius_mm=3, label=UNLABELED, shape="sphere")
    v2 = api.post(
        f"/api/drafts/{draft['id']}/commit/", {"message": "third ball, bone hollowed"}, format="json"
    )
    v2 = v2.json()
    assert api.post(f"/api/label-versions/{v2['id']}/submit/", {}, format="json").status_code == 200
    return v1, v2


def _table_numbers(page):
    """{class id: (before, after, gained, lost)} as the review panel's change table shows them."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#diff-table tbody tr')].map((tr) => [
             tr.dataset.classId,
             [...tr.cells].slice(1).map((td) => Number(td.textContent.replace(/[^0-9]/g, '')))]))"""
    )


def test_admin_reviews_a_version_in_the_browser(
    page, browser, live_server, users, login, shot, phantom_study
):
    from annotations import labels
    from annotations.models import Draft, LabelVersion
    from annotations.subtraction import record_subtraction_check

    study = phantom_study(seed=61, shape=SHAPE, spacing_mm=SPACING, cohort="train", pseudonym="REVIEW-061")
    check = record_subtraction_check(study)  # what the import records (this fixture writes volumes directly)
    assert check["motion_suspected"] == study.subject.motion["enabled"]
    v1, v2 = _annotator_versions(users, study)
    # a second study whose first version waits too (no parent: everything it labels is new)
    other = phantom_study(
        seed=62, shape=SHAPE, spacing_mm=SPACING, cohort="validation", pseudonym="REVIEW-062"
    )
    api = APIClient()
    api.force_authenticate(users["annotator"])
    draft = api.post("/api/drafts/", {"study": other.pk}, format="json").json()
    op = {"op": "brush", "center_zyx": [12, 20, 20], "radius_mm": 5, "label": VESSEL, "shape": "sphere"}
    assert api.post(f"/api/drafts/{draft['id']}/ops/", {"op": op}, format="json").status_code == 200
    first = api.post(
        f"/api/drafts/{draft['id']}/commit/", {"message": "one vessel ball"}, format="json"
    ).json()
    assert api.post(f"/api/label-versions/{first['id']}/submit/", {}, format="json").status_code == 200
    drafts_before = Draft.objects.count()

    # the admin's dashboard points at the queue; the queue lists the version with author, age and counts
    login(page, "admin")
    assert page.get_by_test_id("awaiting-review").inner_text() == "2"
    page.get_by_test_id("nav-review").click()
    page.wait_for_selector("[data-testid=review-queue]")
    row = page.locator(f"tr[data-version-id='{v2['id']}']")
    text = row.inner_text()
    assert "REVIEW-061" in text and "v2" in text and "from v1" in text and "annotator" in text
    assert "ago" in text
    assert check["summary"] in text, "the subtraction check of the study is shown"
    assert "not checked" in page.locator(f"tr[data-version-id='{first['id']}']").inner_text()
    vessel_count = v2["counts"][str(VESSEL)]
    assert f"{vessel_count:,}" in text
    ids = page.eval_on_selector_all(
        "[data-testid=review-queue] tbody tr", "rows => rows.map((r) => r.dataset.versionId)"
    )
    assert ids == [str(v2["id"]), str(first["id"])], "oldest first"
    shot(page, "review-queue")

    # the study list offers the review too
    page.goto(f"{live_server.url}/studies/?label=submitted")
    link = page.get_by_test_id("study-table").get_by_role("link", name="review", exact=True).first
    assert link.get_attribute("href") == f"/studies/{study.pk}/?review={v2['id']}"

    # the training form lists the study as lacking approved labels, with a link to its review
    page.goto(f"{live_server.url}/models/train/")
    lacking = page.get_by_test_id("lacking-labels")
    assert "REVIEW-061" in lacking.inner_text() and "waiting for review" in lacking.inner_text()
    href = lacking.locator("a", has_text="REVIEW-061").get_attribute("href")
    assert href == f"/studies/{study.pk}/?review={v2['id']}"
    assert page.locator("#run-progress").is_hidden(), "no progress bar while no run is selected"
    shot(page, "review-training-lacking")

    # open the version from the queue: read-only, changes against v1 counted per class
    page.goto(f"{live_server.url}/reviews/")
    row.get_by_test_id("open-review").click()
    page.wait_for_selector("#workspace[data-review-ready]")
    assert "review v2" in page.get_by_test_id("review-mode").text_content()
    assert page.locator("#tools [data-tool=brush]").is_hidden()
    assert page.locator("#commit-form").is_hidden()
    before = labels.version_labels(LabelVersion.objects.get(pk=v1["id"]))
    after = labels.version_labels(LabelVersion.objects.get(pk=v2["id"]))
    shown = _table_numbers(page)
    for class_id in (*LABELED_CLASSES, UNLABELED):
        expected = (
            int((before == class_id).sum()),
            int((after == class_id).sum()),
            int(((after == class_id) & (before != class_id)).sum()),
            int(((before == class_id) & (after != class_id)).sum()),
        )
        assert tuple(shown[str(class_id)]) == expected, (class_id, shown[str(class_id)], expected)
    changed = int((before != after).sum())
    assert page.get_attribute("#workspace", "data-changed-voxels") == str(changed)
    assert f"{changed:,} voxels changed" in page.get_by_test_id("diff-summary").inner_text()

    # "go to the changes" moves the axial view into the changed box; the changed voxels are drawn in magenta
    page.click("#diff-goto")
    per_slice = (before != after).sum(axis=(1, 2))
    z = int(np.argmax(per_slice))  # the first slice with the most changed voxels
    page.wait_for_function("(z) => document.getElementById('workspace').views.z.index === z", arg=z)
    page.wait_for_function(
        "(key) => (document.getElementById('view-z').dataset.loaded || '') === key",
        arg=f"{z}:review-{v2['id']}",
    )
    magenta = page.evaluate(MAGENTA_PIXELS_JS, "canvas-z")
    cyan = page.evaluate(CYAN_PIXELS_JS, "canvas-z")
    gained_here = int(((after[z] != before[z]) & (after[z] != UNLABELED)).sum())
    cleared_here = int(((after[z] != before[z]) & (after[z] == UNLABELED)).sum())
    assert (magenta > 0) == (gained_here > 0) and (cyan > 0) == (cleared_here > 0), (z, magenta, cyan)
    assert magenta + cyan > 0
    diff_pixels = f"() => ({MAGENTA_PIXELS_JS})('canvas-z') + ({CYAN_PIXELS_JS})('canvas-z')"
    page.uncheck("#diff-visible")
    page.wait_for_function(f"{diff_pixels} === 0")
    page.check("#diff-visible")
    page.wait_for_function(f"{diff_pixels} > 0")
    shot(page, "review-workspace")

    # a rejection without a comment is refused with a message that says why; nothing changes
    page.click("#reject-button")
    page.wait_for_selector("#ws-status.error")
    assert "comment" in page.inner_text("#ws-status")
    assert "Error" not in page.inner_text("#ws-status")
    assert LabelVersion.objects.get(pk=v2["id"]).review_status == "submitted"
    shot(page, "review-reject-refused")

    # approve with a comment
    page.fill("#review-comment", "clean vessel, good bone edges")
    page.click("#approve-button")
    page.wait_for_selector("#ws-status.success")
    assert "approved" in page.inner_text("#ws-status")
    assert page.locator("#review-form").is_hidden()
    assert "approved by admin" in page.get_by_test_id("review-outcome").inner_text()
    assert page.locator("#history li[data-version='2']").get_attribute("data-status") == "approved"
    version = LabelVersion.objects.get(pk=v2["id"])
    assert (version.review_status, version.review_comment) == ("approved", "clean vessel, good bone edges")
    assert version.reviewed_by == users["admin"]
    assert Draft.objects.count() == drafts_before, "reviewing must not create drafts"
    shot(page, "review-approved")

    # the training form no longer lists the study; the queue is empty and shows the outcome
    page.goto(f"{live_server.url}/models/train/")
    assert "REVIEW-061" not in page.get_by_test_id("lacking-labels").inner_text()
    page.goto(f"{live_server.url}/reviews/")
    queue = page.get_by_test_id("review-queue")
    assert queue.locator(f"tr[data-version-id='{v2['id']}']").count() == 0
    assert queue.locator(f"tr[data-version-id='{first['id']}']").count() == 1
    assert "clean vessel" in page.get_by_test_id("review-done").inner_text()
    assert not page.js_errors, page.js_errors

    # the author sees the outcome on the dashboard and in the workspace history
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        author = context.new_page()
        login(author, "annotator")
        mine = author.locator(f"[data-testid=my-versions] li[data-version-id='{v2['id']}']")
        assert mine.get_attribute("data-status") == "approved"
        assert "approved by admin" in mine.inner_text().lower() and "clean vessel" in mine.inner_text()
        shot(author, "review-author-dashboard")
        author.goto(f"{live_server.url}/studies/{study.pk}/")
        author.wait_for_selector("#history li[data-version='2'][data-status=approved]")
        note = author.locator("#history li[data-version='2'] [data-testid=review-note]").inner_text()
        assert "approved by admin" in note and "clean vessel" in note
        shot(author, "review-author-history")
    finally:
        context.close()
