"""Reader study in real headless Chromium: an admin designs and opens a 3-case study in the browser, a reader
scores every case (autosave, submit, next), resumes from the queue, and the admin sees the results page with
frequencies, tests and plotly charts. Screenshots go to test-artifacts/screenshots/reader-*.png."""

import pytest
from playwright.sync_api import expect

from tests.integration.reader_support import add_dla

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def score_case(page, *, bone_a: bool):
    """Answer every required question of the open case for images A and B."""
    for image, bone in (("A", bone_a), ("B", not bone_a)):
        page.locator(f"[data-testid=residual_bone-{image}-{'yes' if bone else 'no'}] + span").click()
        page.locator(f"[data-testid=artifact_severity-{image}-{2 if bone else 0}] + span").click()
        page.locator(f"[data-testid=small_vessel_conspicuity-{image}-4] + span").click()
        page.locator(f"[data-testid=diagnostic_confidence-{image}-3] + span").click()


def test_admin_designs_reader_scores_admin_sees_results(page, live_server, users, login, shot, phantom_study):
    from reader_study.models import Answer, Assignment, ReaderStudy

    studies = [phantom_study(seed=300 + i, shape=(32, 48, 48)) for i in range(3)]
    for s in studies:
        add_dla(s)

    # --- admin: create, add cases and the reader, open
    login(page, "admin")
    page.goto(f"{live_server.url}/reader-studies/")
    page.fill("#rs-create input[name=title]", "Residual bone artifacts")
    page.fill("#rs-create textarea[name=instructions]", "Score both images of every case.")
    page.click("#rs-create button[type=submit]")
    page.wait_for_url("**/reader-studies/*/")
    page.wait_for_selector("#d-eligible input[type=checkbox]")
    page.click("#d-select-all")
    page.click("#d-cases-add")
    expect(page.locator("#d-cases li")).to_have_count(3)
    page.select_option("#d-reader-select", label="reader")
    page.click("#d-reader-add")
    expect(page.locator("#d-readers")).to_contain_text("reader")
    page.click("[data-testid=open]")
    expect(page.locator("#d-status")).to_have_text("open")
    shot(page, "reader-design")
    assert not page.js_errors, page.js_errors
    rs = ReaderStudy.objects.get()
    assert rs.status == "open" and rs.cases.count() == 3

    # --- reader: queue, then score all three cases
    page.context.clear_cookies()
    login(page, "reader")
    page.goto(f"{live_server.url}/reading/")
    page.wait_for_selector("[data-testid=resume]")
    assert "0 of 3" in page.locator("[data-testid=reading-study]").inner_text()
    page.click("[data-testid=resume]")
    for n in range(1, 4):
        expect(page.get_by_test_id("progress")).to_have_text(f"Case {n} of 3")
        expect(page.locator("#rw-loading")).to_have_text("", timeout=30000)
        score_case(page, bone_a=(n % 2 == 1))
        if n == 1:
            page.get_by_test_id("play").click()  # pause the cine for a stable screenshot
            expect(page.get_by_test_id("save-state")).to_have_text("All answers saved")
            shot(page, "reader-workspace")
            # resume later: reload, answers are still there
            page.reload()
            page.wait_for_selector("[data-testid=residual_bone-A-yes]")
            assert page.locator("[data-testid=residual_bone-A-yes]").is_checked()
        page.get_by_test_id("submit").click()
        page.wait_for_selector("[data-testid=submitted]")
        if n == 1:
            shot(page, "reader-submitted")
        if n < 3:
            page.get_by_test_id("next").click()
    assert not page.js_errors, page.js_errors
    assert Assignment.objects.filter(submitted_at__isnull=False).count() == 3
    assert Answer.objects.count() == 3 * 2 * 4
    page.goto(f"{live_server.url}/reading/")
    page.wait_for_selector("[data-testid=reading-study]")
    assert "3 of 3" in page.locator("[data-testid=reading-study]").inner_text()
    shot(page, "reader-queue")

    # --- admin: results with frequencies, McNemar, charts
    page.context.clear_cookies()
    login(page, "admin")
    page.goto(f"{live_server.url}/reader-studies/{rs.pk}/results/")
    page.wait_for_selector("[data-testid=freq-residual_bone-dsa]")
    page.wait_for_selector("[data-question=residual_bone] .main-svg")  # plotly drew the chart
    dsa = page.get_by_test_id("freq-residual_bone-dsa").inner_text()
    dla = page.get_by_test_id("freq-residual_bone-dla").inner_text()
    n_dsa = sum(
        1
        for a in Answer.objects.filter(question__key="residual_bone").select_related("assignment")
        if a.assignment.method_of(a.image) == "dsa" and a.value is True
    )
    assert dsa.startswith(f"{n_dsa}/3 (") and dla.startswith(f"{3 - n_dsa}/3 (")
    assert "exact McNemar" in page.get_by_test_id("test-residual_bone").inner_text()
    assert page.get_by_test_id("progress-reader").inner_text() == "3 of 3"
    shot(page, "reader-results")
    assert not page.js_errors, page.js_errors
