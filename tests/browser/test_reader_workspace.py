# ruff: noqa: F811
"""Reader study in real headless Chromium: an admin designs and opens a 3-case study in the browser (no seed to
choose; opening shows the frame-rendering task until the study is readable, then the design is frozen in the
page), a reader scores every case (autosave, submit, next), resumes from the queue, and the admin sees the
results page with frequencies, tests and plotly charts; conditional questions show and hide live (reader) and
are edited in the design page (admin); the MIP window is one display transform for A and B, and the label
workspace's fill MIP is no saturated block. Screenshots go to test-artifacts/screenshots/reader-*.png."""

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.integration.reader_support import add_dla, open_reader_study, reader_cases  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def score_case(page, *, bone_a: bool):
    """Answer every required question of the open case for images A and B."""
    for image, bone in (("A", bone_a), ("B", not bone_a)):
        page.locator(f"[data-testid=residual_bone-{image}-{'yes' if bone else 'no'}] + span").click()
        page.locator(f"[data-testid=artifact_severity-{image}-{2 if bone else 0}] + span").click()
        page.locator(f"[data-testid=small_vessel_conspicuity-{image}-4] + span").click()
        page.locator(f"[data-testid=diagnostic_confidence-{image}-3] + span").click()


def test_admin_designs_reader_scores_admin_sees_results(page, live_server, users, login, shot, phantom_study):
    from dla_web.models import TaskRun
    from reader_study.models import Answer, Assignment, ReaderStudy
    from reader_study.tasks import render_reader_study_cines

    studies = [phantom_study(seed=300 + i, shape=(32, 48, 48)) for i in range(3)]
    for s in studies:
        add_dla(s)

    # --- admin: create, add cases and the reader, open
    login(page, "admin")
    page.goto(f"{live_server.url}/reader-studies/")
    assert page.locator("#rs-create input[name=seed]").count() == 0  # the server draws a secret seed
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
    expect(page.get_by_test_id("seed")).to_have_text("secret until the study closes")
    page.click("[data-testid=open]")
    # the frames are not rendered yet: "opening" with the task's progress, nothing to read until it is done
    expect(page.locator("#d-status")).to_have_text("opening")
    expect(page.get_by_test_id("opening")).to_contain_text("rendering every frame")
    expect(page.locator("#d-close")).to_have_text("Cancel opening")
    shot(page, "reader-opening")
    run = TaskRun.objects.filter(kind="reader_study_cines").latest("id")
    render_reader_study_cines.run_here(run)  # the task, here (a worker of this session may have taken it)
    expect(page.locator("#d-status")).to_have_text("open", timeout=120000)
    expect(page.get_by_test_id("opening")).to_be_hidden()
    # the design is frozen in the page too
    expect(page.locator("#d-frozen")).to_be_visible()
    for selector in (
        "#d-settings textarea[name=instructions]",
        "#d-settings select[name=mode]",
        "#d-question-form button[type=submit]",
        "#d-defaults",
        "#d-cases-add",
        "#d-reader-add",
    ):
        expect(page.locator(selector)).to_be_disabled()
    expect(page.locator("#d-cases")).to_contain_text("floor")
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


# Non-black pixels of a viewer canvas: both images have black backgrounds (the window floor above the DSA noise),
# so what is not black is content (vessels, artifacts).
BRIGHT_PIXELS_JS = """(testid) => {
  const c = document.querySelector(`[data-testid=${testid}]`);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
}"""


def test_reader_viewer_turns_both_images_through_token_urls_only(
    page, live_server, users, login, open_reader_study
):
    """The shared rotating-MIP component in the reader workspace: both images turn together (slider, drag), zoom,
    window switch; every request the page makes goes through the case's opaque token, none names a method."""
    from reader_study.models import Assignment
    from reader_study.services import N_ANGLES

    rs = open_reader_study(n_cases=1)
    assignment = Assignment.objects.get(reader__reader_study=rs, reader__user__username="reader")
    token = assignment.token
    urls: list[str] = []
    login(page, "reader")
    page.on("request", lambda request: urls.append(request.url))
    page.goto(f"{live_server.url}/reading/{token}/")
    expect(page.get_by_test_id("progress")).to_have_text("Case 1 of 1")
    expect(page.locator("#rw-loading")).to_have_text("", timeout=30000)
    page.get_by_test_id("play").click()
    expect(page.get_by_test_id("play")).to_have_text("Play")

    # the angle slider turns both images to the same frame
    page.evaluate(
        "() => { const s = document.getElementById('rw-angle'); s.value = '9'; s.dispatchEvent(new Event('input')); }"
    )
    expect(page.locator("#rw-angle-text")).to_have_text("90°")
    for image in ("A", "B"):
        expect(page.get_by_test_id(f"viewer-{image}")).to_have_attribute("data-angle", "90")
        assert page.evaluate(BRIGHT_PIXELS_JS, f"viewer-{image}") > 0, f"image {image} is blank"

    # zoom magnifies (more non-black pixels), reset restores
    before = page.evaluate(BRIGHT_PIXELS_JS, "viewer-A")
    page.click("#rw-zoom-in")
    page.click("#rw-zoom-in")
    assert page.evaluate(BRIGHT_PIXELS_JS, "viewer-A") > before
    page.click("#rw-zoom-reset")
    expect(page.locator("#rw-zoom-reset")).to_have_text("1.0×")
    assert page.evaluate(BRIGHT_PIXELS_JS, "viewer-A") == before

    # dragging one image turns both
    box = page.get_by_test_id("viewer-B").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + box["width"] / 4, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    angle = page.get_attribute("[data-testid=viewer-A]", "data-angle")
    assert angle != "90" and page.get_attribute("[data-testid=viewer-B]", "data-angle") == angle
    assert page.locator("#rw-angle-text").inner_text() == f"{angle}°"

    # another window reloads every frame of both images with it
    page.select_option("[data-testid=window]", "wide")
    expect(page.locator("#rw-loading")).to_have_text("", timeout=30000)
    assert not page.js_errors, page.js_errors

    api = [urlsplit(u) for u in urls if urlsplit(u).path.startswith("/api/")]
    images = [u for u in api if "/image/" in u.path]
    assert api and all(u.path.startswith(f"/api/reading/{token}/") for u in api), [u.path for u in api]
    pattern = re.compile(rf"/api/reading/{re.escape(token)}/image/[AB]/")
    assert all(pattern.fullmatch(u.path) and re.fullmatch(r"angle=\d+&window=\w+", u.query) for u in images)
    for window in ("vessel", "wide"):  # every frame of A and B, once per window
        fetched = {(u.path[-2], u.query) for u in images if u.query.endswith(f"window={window}")}
        assert len(fetched) == 2 * N_ANGLES, (window, len(fetched))
    page_text = (" ".join(urls) + page.inner_html("#rw-viewers")).replace(token, "<token>").lower()
    assert not any(word in page_text for word in ("dsa", "dla", "subtracted", "method")), page_text[:500]


def _set_range(page, testid: str, value: int) -> None:
    page.evaluate(
        "([t, v]) => { const s = document.querySelector(`[data-testid=${t}]`); s.value = String(v);"
        " s.dispatchEvent(new Event('input')); }",
        [testid, value],
    )


def test_conditional_questions_and_one_window_for_both_images(
    page, live_server, users, login, shot, open_reader_study
):
    """Locations are asked per image only while that image's residual bone is yes (an answer given before
    it hides is cleared, on the page and on the server); the window control (preset, black/white points)
    changes both images the same way and every frame of A and B is fetched with the same window."""
    from reader_study.models import Answer, Assignment

    rs = open_reader_study(n_cases=1)
    token = Assignment.objects.get(reader__reader_study=rs, reader__user__username="reader").token
    urls: list[str] = []
    login(page, "reader")
    page.on("request", lambda request: urls.append(request.url))
    page.goto(f"{live_server.url}/reading/{token}/")
    expect(page.get_by_test_id("progress")).to_have_text("Case 1 of 1")
    expect(page.locator("#rw-loading")).to_have_text("", timeout=30000)
    page.get_by_test_id("play").click()
    expect(page.get_by_test_id("play")).to_have_text("Play")

    locations = page.locator("[data-question=artifact_locations]")
    expect(locations).to_be_hidden()  # no residual bone answered yet: asked for neither image
    page.locator("[data-testid=residual_bone-A-yes] + span").click()
    expect(page.get_by_test_id("row-artifact_locations-A")).to_be_visible()
    expect(page.get_by_test_id("row-artifact_locations-B")).to_be_hidden()
    page.locator("[data-testid=row-artifact_locations-A] input[value='skull base']").check()
    page.locator("[data-testid=residual_bone-B-no] + span").click()
    expect(page.get_by_test_id("save-state")).to_have_text("All answers saved")
    stored = Answer.objects.get(assignment__token=token, question__key="artifact_locations", image="A")
    assert stored.value == ["skull base"]
    shot(page, "reader-conditional")
    # A turns to no: the locations hide and lose their answer
    page.locator("[data-testid=residual_bone-A-no] + span").click()
    expect(locations).to_be_hidden()
    expect(page.get_by_test_id("save-state")).to_have_text("All answers saved")
    stored.refresh_from_db()
    assert stored.value is None
    page.locator("[data-testid=residual_bone-A-yes] + span").click()
    expect(page.get_by_test_id("row-artifact_locations-A")).to_be_visible()
    assert not page.locator("[data-testid=row-artifact_locations-A] input[value='skull base']").is_checked()

    # black/white points: one grey-level mapping for both images
    before = {i: page.evaluate(BRIGHT_PIXELS_JS, f"viewer-{i}") for i in "AB"}
    assert all(before.values()), before
    _set_range(page, "window-black", 200)
    darker = {i: page.evaluate(BRIGHT_PIXELS_JS, f"viewer-{i}") for i in "AB"}
    assert all(darker[i] < before[i] for i in "AB"), (before, darker)
    shot(page, "reader-window-black-point")
    page.get_by_test_id("window-reset").click()
    assert {i: page.evaluate(BRIGHT_PIXELS_JS, f"viewer-{i}") for i in "AB"} == before
    # a preset reloads both images with it
    page.select_option("[data-testid=window]", "narrow")
    expect(page.locator("#rw-loading")).to_have_text("", timeout=30000)
    images = [urlsplit(u) for u in urls if "/image/" in urlsplit(u).path]
    by_image = {i: {u.query for u in images if u.path.endswith(f"/image/{i}/")} for i in "AB"}
    assert by_image["A"] == by_image["B"] and any(q.endswith("window=narrow") for q in by_image["A"])
    assert not any("center=" in q or "width=" in q for q in by_image["A"])  # named presets only, no HU
    page_text = (" ".join(urls) + page.inner_html("#rw-window-box")).replace(token, "<token>").lower()
    assert not any(word in page_text for word in ("dsa", "dla", "subtracted", "method"))
    shot(page, "reader-workspace-window")
    assert not page.js_errors, page.js_errors


def test_admin_edits_conditions_on_the_design_page(page, live_server, users, login, shot):
    from reader_study import services
    from reader_study.models import ReaderStudy

    rs = ReaderStudy.objects.create(title="Conditions", created_by=users["admin"])
    services.add_default_questions(rs)
    login(page, "admin")
    page.goto(f"{live_server.url}/reader-studies/{rs.pk}/")
    page.wait_for_selector("[data-testid=showif-comment-question]")
    expect(page.get_by_test_id("showif-artifact_locations-question")).to_have_value("residual_bone")
    expect(page.get_by_test_id("showif-artifact_locations-answer")).to_have_value("true")
    # the comment only when the diagnostic confidence is 1
    page.select_option("[data-testid=showif-comment-question]", "diagnostic_confidence")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=showif-comment-answer]')?.value === '1'"
        " && !document.querySelector('#d-error .error')"
    )
    page.wait_for_timeout(300)
    comment = rs.questions.get(key="comment")
    assert comment.show_if == {"question": "diagnostic_confidence", "answer": 1}
    page.select_option("[data-testid=showif-comment-answer]", "2")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=showif-comment-answer]')?.value === '2'"
    )
    page.wait_for_timeout(300)
    comment.refresh_from_db()
    assert comment.show_if == {"question": "diagnostic_confidence", "answer": 2}
    # a refused change (the condition's question cannot be deleted) says why
    page.locator("[data-question=diagnostic_confidence] button.danger").click()
    expect(page.locator("#d-error")).to_contain_text("is the condition of 'comment'")
    # a new question with a condition
    page.fill("#d-question-form input[name=key]", "bone_side")
    page.fill("#d-question-form input[name=text]", "Side of the residual bone")
    page.select_option("#d-question-form select[name=type]", "single")
    page.fill("#d-question-form input[name=choices]", "left, right")
    page.select_option("[data-testid=showif-new-question]", "residual_bone")
    page.select_option("[data-testid=showif-new-answer]", "true")
    page.click("#d-question-form button[type=submit]")
    expect(page.get_by_test_id("condition-bone_side")).to_be_visible()
    new = rs.questions.get(key="bone_side")
    assert new.show_if == {"question": "residual_bone", "answer": True} and new.required
    expect(page.locator("[data-question=bone_side]")).to_contain_text("when shown")
    shot(page, "reader-design-conditions")
    assert not page.js_errors, page.js_errors


SATURATED_SHARE_JS = """(testid) => {
  const c = document.querySelector(`[data-testid=${testid}]`);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0, white = 0;
  for (let i = 0; i < d.length; i += 4) { if (d[i] > 8) lit++; if (d[i] >= 250) white++; }
  return lit ? white / lit : -1;
}"""


def test_label_workspace_fill_mip_is_windowed_not_a_white_block(
    page, live_server, users, login, shot, phantom_study
):
    """The same viewer component in the label workspace: its "auto" window (measured on the fill at the full
    HU range) shows the skull with grey levels; the vessel preset saturates it (the block of issue 15.7)."""
    study = phantom_study(seed=9, shape=(32, 48, 48))
    urls: list[str] = []
    login(page, "annotator")
    page.on("request", lambda request: urls.append(request.url))
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    page.wait_for_function(f"() => ({SATURATED_SHARE_JS})('mip-canvas') >= 0", timeout=30000)
    expect(page.get_by_test_id("mip-window")).to_have_value("auto")
    page.wait_for_timeout(500)
    auto = page.evaluate(SATURATED_SHARE_JS, "mip-canvas")
    shot(page, "workspace-mip-auto-window")
    page.select_option("[data-testid=mip-window]", "vessel")
    page.wait_for_function(
        "() => performance.getEntriesByType('resource').some((e) => e.name.includes('width=1200'))"
    )
    page.wait_for_timeout(800)
    vessel = page.evaluate(SATURATED_SHARE_JS, "mip-canvas")
    # the vessel window saturates the fill's skull (on this small phantom 16% of the lit pixels, half on 64^3,
    # a white block on a real head); the measured window saturates next to nothing
    assert vessel > 0.12, vessel
    assert auto < 0.03, auto
    assert any("/mip/" in u and "center=" in u for u in urls)
    assert not page.js_errors, page.js_errors
