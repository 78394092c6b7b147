"""Foundation pages in real headless Chromium: login (wrong and right password), dashboard by role with live
task-run progress, the task-run page's self-test button, the API docs served without any CDN, and the password
change page reached from the top bar (a weak password refused with the reason, a good one accepted)."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_rejects_wrong_password_then_shows_dashboard(page, live_server, users, login, shot):
    login(page, "annotator", "wrong-password")
    assert "didn't match" in page.locator("[role=alert]").inner_text()
    shot(page, "login-error")
    login(page, "annotator")
    assert page.url.rstrip("/") == live_server.url
    assert page.get_by_test_id("whoami").inner_text() == "annotator"
    assert page.locator("#studies-card").is_visible()
    assert page.locator("#reader-card").count() == 0, "an annotator must not see the reader card"
    page.wait_for_selector("#active-runs p")
    shot(page, "dashboard-annotator")
    assert not page.js_errors


def test_reader_dashboard_has_no_annotation_or_admin_links(page, users, login):
    login(page, "reader")
    assert page.locator("#reader-card").is_visible()
    assert page.locator("#studies-card").count() == 0
    assert page.locator("a[href='/admin/']").count() == 0


def test_admin_runs_worker_selftest_and_sees_progress(page, live_server, users, login, shot, celery_worker):
    login(page, "admin")
    page.goto(f"{live_server.url}/tasks/")
    page.click("#selftest-form button")
    page.wait_for_selector(".run[data-state=succeeded]", timeout=30000)
    assert "selftest" in page.locator(".run").first.inner_text()
    shot(page, "task-runs")
    assert not page.js_errors


def test_api_docs_render_from_local_assets(page, live_server, users, login, shot):
    login(page, "admin")
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info", timeout=15000)
    assert "DLA Workbench API" in page.locator(".swagger-ui .info").inner_text()
    shot(page, "api-docs")


def test_password_change_from_the_top_bar(page, live_server, users, login, shot):
    login(page, "reader")
    page.get_by_test_id("nav-password").click()
    page.wait_for_selector("[data-testid=password-change]")
    assert "at least 12 characters" in page.get_by_test_id("password-rules").inner_text()
    page.fill("input[name=old_password]", "correct-horse-battery")
    page.fill("input[name=new_password1]", "readerreader")
    page.fill("input[name=new_password2]", "readerreader")
    page.click("[data-testid=password-change] button[type=submit]")
    page.wait_for_selector("[data-field=new_password2]")
    assert "contains the username" in page.locator("[data-field=new_password2]").inner_text()
    shot(page, "password-change-refused")
    page.fill("input[name=old_password]", "correct-horse-battery")
    page.fill("input[name=new_password1]", "violet-harbour-lantern")
    page.fill("input[name=new_password2]", "violet-harbour-lantern")
    page.click("[data-testid=password-change] button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert page.url.rstrip("/") == live_server.url
    assert "Your password was changed." in page.locator(".flash.success").inner_text()
    assert page.get_by_test_id("whoami").inner_text() == "reader", "still signed in"
    users["reader"].refresh_from_db()
    assert users["reader"].check_password("violet-harbour-lantern")
    assert not page.js_errors
