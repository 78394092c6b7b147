"""The evaluation pages in headless Chromium: launch from the form with a real worker, watch the run finish and
the report appear (Table 1 next to the paper's, plotly strip/box plots and the Dice vs volume scatter, artifact
table, worst cases linking to the viewer); a refused launch shows the server's list of missing studies."""

import pytest
from playwright.sync_api import expect

from tests.integration.test_evaluation_api import (
    MOVED,
    SHAPE,
    SPACING,
    approve,
    make_model,
    predict,
    with_phantom_params,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def model(phantom_study, users):
    model = make_model("phantom model")
    model.activate()
    plan = [
        (81, "validation", False),
        (82, "validation", MOVED),
        (83, "test", MOVED),
        (84, "test", False),
        (85, "test", False),
    ]
    for i, (seed, cohort, motion) in enumerate(plan):
        study = with_phantom_params(
            phantom_study(seed=seed, shape=SHAPE, spacing_mm=SPACING, cohort=cohort, motion=motion)
        )
        approve(study, users["admin"])
        predict(study, model, flip_fraction=0.002 * (i + 1), seed=i)
    return model


def test_launch_watch_and_read_the_report(page, login, live_server, shot, model, celery_worker):
    login(page, "admin")
    page.goto(f"{live_server.url}/evaluations/")
    page.click("#eval-launch")
    page.wait_for_url(lambda url: "/evaluations/" in url and url.rstrip("/").split("/")[-1].isdigit())
    expect(page.locator("#table1")).to_be_visible(timeout=60_000)
    expect(page.locator('tr[data-dataset="Testing"] td[data-metric="dice"]')).to_contain_text("%")
    expect(page.locator('tr[data-paper="Testing"]')).to_contain_text("98.0% [97.4, 98.7]%")
    expect(page.locator("#plot-dice .main-svg").first).to_be_visible(timeout=10_000)
    expect(page.locator("#plot-dice-volume .main-svg").first).to_be_visible()
    expect(page.locator('#artifact-table tr[data-dataset="Testing"] td[data-side="dsa"]')).to_contain_text(
        "/3 ("
    )
    first_worst = page.locator("#worst-cases a").first
    assert first_worst.get_attribute("href").startswith("/studies/")
    assert page.js_errors == []
    shot(page, "evaluation-report")
    with page.expect_download() as download:
        page.click('a[data-download="summary-csv"]')
    assert download.value.suggested_filename.endswith("-summary.csv")


def test_refusal_lists_the_missing_studies(page, login, live_server, shot, model, phantom_study):
    phantom_study(seed=86, shape=SHAPE, spacing_mm=SPACING, cohort="test")  # no labels, no prediction
    login(page, "admin")
    page.goto(f"{live_server.url}/evaluations/")
    page.click("#eval-launch")
    alert = page.locator("#eval-error [role=alert]")
    expect(alert).to_contain_text("PH-086 (no prediction")
    expect(alert).to_contain_text("no approved label version")
    shot(page, "evaluation-refused")
    assert page.js_errors == []


def test_truth_section_next_to_table1(page, login, live_server, shot, model, client_for):
    """A phantom cohort's report shows the truth table (3D-DLA, DSA baseline, paired rows), Dice by vessel radius
    and residual bone by case as plotly charts."""
    from evaluation.models import Evaluation
    from tests.integration.test_evaluation_api import launch, run_inline

    response = launch(client_for("admin"), model_version=model.pk, cohorts=["validation", "test"])
    assert response.status_code == 202, response.json()
    evaluation = run_inline(Evaluation.objects.get(pk=response.json()["id"]))
    testing = {d["dataset"]: d for d in evaluation.summary["truth_referenced"]["datasets"]}["Testing"]
    login(page, "admin")
    page.goto(f"{live_server.url}/evaluations/{evaluation.pk}/")
    expect(page.locator("#truth-table")).to_be_visible()
    row = page.locator('#truth-table tr[data-truth-dataset="Testing"][data-method="dla"]')
    expect(row.locator('td[data-truth-metric="dice"]')).to_have_text(testing["rows"]["dla"]["dice"]["text"])
    dsa = page.locator('#truth-table tr[data-truth-dataset="Testing"][data-method="dsa"]')
    expect(dsa.locator('td[data-truth-metric="sensitivity"]')).to_have_text(
        testing["rows"]["dsa"]["sensitivity"]["text"]
    )
    expect(page.locator("#truth-radius-table")).to_contain_text("below one voxel")
    expect(
        page.locator('#truth-bone-table tr[data-truth-dataset="Testing"] td[data-side="dsa"]')
    ).to_have_text(testing["residual_bone"]["dsa"]["text"])
    expect(page.locator("#plot-truth-radius .main-svg").first).to_be_visible(timeout=10_000)
    expect(page.locator("#plot-truth-bone .main-svg").first).to_be_visible()
    assert page.locator("#plot-truth-radius .bars .point").count() > 0  # bars were drawn
    assert page.js_errors == []
    page.locator("#truth-card").scroll_into_view_if_needed()
    shot(page, "evaluation-truth")
