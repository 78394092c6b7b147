"""Pages that explain themselves, in real headless Chromium: 403/404 pages keep the navigation and say why (JSON
under /api/), the 500 page too; API and task errors read as words (no Python class names, no list reprs); the
import page's pseudonym pattern is valid for Chromium; annotators find the model registry; the Tasks page shows
a run's study, start time and duration; opening a workspace makes no draft until the first edit; a favicon; the
Django admin shows label versions, drafts and task runs read-only. Screenshots: test-artifacts/screenshots/pages-*.png.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from dla.classes import VESSEL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _console_errors(page):
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def test_403_page_has_navigation_and_reason(page, live_server, users, login, shot):
    login(page, "annotator")
    response = page.goto(f"{live_server.url}/reader-studies/")
    assert response.status == 403
    assert page.get_by_test_id("error-page").get_attribute("data-status") == "403"
    assert page.get_by_test_id("error-reason").inner_text() == "Only admins may manage reader studies."
    # the navigation of the annotator is there, with the way back
    nav = page.locator(".topbar nav")
    for link in ("Dashboard", "Studies", "Import", "Models", "Tasks"):
        assert nav.get_by_role("link", name=link, exact=True).is_visible(), link
    assert page.get_by_test_id("whoami").inner_text() == "annotator"
    assert "signed in as annotator" in page.locator(".error-page").inner_text()
    assert "Forbidden" not in page.content()
    shot(page, "pages-403")
    # the API answers a refusal in JSON, never with the HTML page
    api = page.request.get(f"{live_server.url}/api/reader-studies/")
    assert api.status == 403 and "detail" in api.json()


def test_404_page_has_navigation_and_reason(page, live_server, users, login, shot):
    login(page, "annotator")
    response = page.goto(f"{live_server.url}/studies/999999/")
    assert response.status == 404
    assert page.get_by_test_id("error-page").get_attribute("data-status") == "404"
    assert "There is no study with id 999999" in page.get_by_test_id("error-reason").inner_text()
    assert page.locator(".topbar nav").get_by_role("link", name="Studies", exact=True).is_visible()
    assert "/studies/999999/" in page.locator(".error-page").inner_text()
    shot(page, "pages-404")
    # an address that matches no route: the page says so, in words, not Django's resolver dictionary
    page.goto(f"{live_server.url}/no/such/page/")
    assert page.get_by_test_id("error-reason").inner_text() == "Nothing lives at this address."
    api = page.request.get(f"{live_server.url}/api/no-such-endpoint/")
    assert api.status == 404 and api.headers["content-type"].startswith("application/json")
    assert api.json()["detail"]
    # a review link to a version of another study is a 404 that names the problem
    page.goto(f"{live_server.url}/studies/999999/?review=1")
    assert page.get_by_test_id("error-page").get_attribute("data-status") == "404"


def test_500_page_keeps_navigation(rf, users):
    from frontend.views import server_error

    request = rf.get("/studies/1/")
    request.user = users["admin"]
    response = server_error(request)
    assert response.status_code == 500
    html = response.content.decode()
    assert "Something went wrong on the server" in html and 'href="/reviews/"' in html
    request = rf.get("/api/studies/")
    request.user = users["admin"]
    response = server_error(request)
    assert response.status_code == 500 and response["content-type"] == "application/json"


def test_error_messages_are_words(page, live_server, users, login, shot):
    """An empty upload: DRF's nested list error reaches the page as a sentence, not a repr."""
    errors = _console_errors(page)
    login(page, "annotator")
    page.goto(f"{live_server.url}/import/")
    # the pseudonym pattern compiles in Chromium (no console errors) and validates
    page.fill("input[name=pseudonym]", "bad name!")
    assert page.eval_on_selector("input[name=pseudonym]", "i => i.validity.patternMismatch")
    page.fill("input[name=pseudonym]", "CASE-017_b")
    assert page.eval_on_selector("input[name=pseudonym]", "i => i.validity.valid")
    assert not [e for e in errors if "pattern" in e.lower()], errors
    page.set_input_files(
        "#files", files=[{"name": "empty.dcm", "mimeType": "application/dicom", "buffer": b""}]
    )
    page.click("#import-form button[type=submit]")
    status = page.get_by_test_id("upload-status")
    status.locator(".flash.error").wait_for()
    text = status.inner_text()
    assert "empty" in text.lower(), text
    for leak in ("ErrorDetail", "[", "{", "ValidationError"):
        assert leak not in text, text
    shot(page, "pages-import-error")
    # the next upload clears the old banner (no worker runs here: the import stays queued)
    page.set_input_files(
        "#files", files=[{"name": "x.dcm", "mimeType": "application/dicom", "buffer": b"x" * 64}]
    )
    page.click("#import-form button[type=submit]")
    page.wait_for_function(
        "() => document.getElementById('upload-status').innerText.includes('importing')", timeout=15000
    )
    assert status.locator(".flash.error").count() == 0
    # the refused upload's 400 is logged by Chromium as a failed load; nothing else may be
    assert not [e for e in errors if "status of 400" not in e], errors


def test_tasks_page_shows_study_start_and_duration(page, live_server, users, login, shot, phantom_study):
    from annotations.models import Volume
    from dla_web.models import TaskRun

    study = phantom_study(seed=71, shape=(12, 16, 16), pseudonym="TASKS-071")
    volume = study.volume(Volume.Role.FILL)
    started = timezone.now() - timedelta(minutes=10)
    TaskRun.objects.create(
        kind="cine",
        state=TaskRun.State.SUCCEEDED,
        progress=1.0,
        message="done",
        created_by=users["annotator"],
        target=volume,
        started_at=started,
        finished_at=started + timedelta(seconds=65),
    )
    TaskRun.objects.create(
        kind="ingest",
        state=TaskRun.State.FAILED,
        progress=0.2,
        message="failed: ['patient P1 already has study S2 in cohort test']",
        error="ValidationError: ['patient P1 already has study S2 in cohort test']",
        created_by=users["annotator"],
        params={"study_id": study.pk},
        started_at=started,
        finished_at=started + timedelta(seconds=3),
    )
    login(page, "annotator")
    page.goto(f"{live_server.url}/tasks/")
    cine = page.locator(".run", has_text="cine #")
    cine.get_by_test_id("run-study").locator("a", has_text="TASKS-071").wait_for()
    assert cine.get_by_test_id("run-study").locator("a").get_attribute("href") == f"/studies/{study.pk}/"
    when = cine.get_by_test_id("run-when").inner_text()
    assert "started" in when and "took 1 min 05 s" in when and "by annotator" in when
    failed = page.locator(".run", has_text="ingest #")
    failed.get_by_test_id("run-study").locator("a", has_text="TASKS-071").wait_for()
    text = failed.inner_text()
    assert "patient P1 already has study S2 in cohort test" in text
    assert "ValidationError" not in text and "['" not in text, text
    shot(page, "pages-tasks")


def test_workspace_makes_no_draft_until_the_first_edit(page, live_server, users, login, shot, phantom_study):
    from annotations.models import Draft

    study = phantom_study(seed=72, shape=(16, 24, 24))
    login(page, "annotator")
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    page.wait_for_selector("#workspace[data-draft-revision='0']")
    page.wait_for_function("() => (document.getElementById('view-z').dataset.loaded || '').endsWith(':0')")
    assert "first edit" in page.get_by_test_id("draft-info").inner_text()
    assert page.locator("#discard").is_disabled() and page.locator("#undo").is_disabled()
    page.wait_for_timeout(300)
    assert not Draft.objects.filter(study=study).exists(), "opening the workspace must not create a draft"
    # the first edit makes the draft and applies the edit
    page.keyboard.press("b")
    view = page.locator("#view-z canvas").bounding_box()
    page.mouse.click(view["x"] + view["width"] * 0.4, view["y"] + view["height"] * 0.4)
    page.wait_for_function("() => Number(document.getElementById('workspace').dataset.draftRevision) > 0")
    draft = Draft.objects.get(study=study, user=users["annotator"])
    assert len(draft.ops) == 1 and draft.ops[0]["op"]["label"] == VESSEL
    assert page.locator("#discard").is_enabled() and page.locator("#undo").is_enabled()
    assert not page.js_errors, page.js_errors


def test_navigation_favicon_and_read_only_admin(page, live_server, users, login, shot, phantom_study):
    from rest_framework.test import APIClient

    from dla_web.models import TaskRun

    study = phantom_study(seed=73, shape=(12, 16, 16), pseudonym="ADMIN-073")
    api = APIClient()
    api.force_authenticate(users["annotator"])
    draft = api.post("/api/drafts/", {"study": study.pk}, format="json").json()
    op = {"op": "brush", "center_zyx": [6, 8, 8], "radius_mm": 3, "label": VESSEL, "shape": "sphere"}
    assert api.post(f"/api/drafts/{draft['id']}/ops/", {"op": op}, format="json").status_code == 200
    assert api.post(f"/api/drafts/{draft['id']}/commit/", {"message": "m"}, format="json").status_code == 201
    TaskRun.objects.create(kind="selftest", state=TaskRun.State.SUCCEEDED, created_by=users["admin"])

    errors = _console_errors(page)
    login(page, "annotator")
    assert page.locator(".topbar nav a", has_text="Models").get_attribute("href") == "/models/"
    assert page.locator(".topbar nav a", has_text="Review").count() == 0
    page.click(".topbar nav a:has-text('Models')")
    assert page.locator("#models-card").is_visible()
    icon = page.get_attribute("link[rel=icon]", "href")
    assert page.request.get(f"{live_server.url}{icon}").status == 200
    favicon = page.request.get(f"{live_server.url}/favicon.ico")
    assert favicon.status == 200 and "svg" in favicon.headers["content-type"]
    assert not errors, errors

    # the Admin role (no Django model permissions) reads label versions, drafts and task runs, changes nothing
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        admin = context.new_page()
        login(admin, "admin")
        for model, shown in (
            ("annotations/labelversion", "ADMIN-073"),
            ("annotations/draft", "ADMIN-073"),
            ("dla_web/taskrun", "selftest"),
        ):
            response = admin.goto(f"{live_server.url}/admin/{model}/")
            assert response.status == 200, model
            assert admin.locator("#content a.addlink").count() == 0, f"{model} must be read-only"
            assert shown in admin.locator("#result_list").inner_text(), model
            admin.locator("#result_list tbody tr th a").first.click()
            assert admin.locator("input[name=_save]").count() == 0, f"{model} rows must not be editable"
            assert admin.locator("a.deletelink").count() == 0, f"{model} rows must not be deletable"
        admin.goto(f"{live_server.url}/admin/")
        assert admin.locator("a", has_text="Label versions").is_visible()
        shot(admin, "pages-admin-index")
    finally:
        context.close()
