"""The model comparison page in headless Chromium (issue 18.2): from the evaluations list an admin picks a voxel
classifier's and a 3D U-Net's evaluation of the same phantom test studies and compares them: the Models table
(architecture, training and inference time side by side), the Table 1 paired rows, and "Against the truth" with
the paired truth rows, the Dice verdict and the residual bone counts."""

import pytest
from playwright.sync_api import expect

from tests.integration.test_evaluation_compare import evaluate, two_models  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_compare_a_voxel_classifier_with_a_unet(page, login, live_server, shot, two_models, client_for):  # noqa: F811
    admin = client_for("admin")
    ev_a = evaluate(admin, two_models["models"]["a"])
    ev_b = evaluate(admin, two_models["models"]["b"])
    expected = admin.get(f"/api/evaluations/compare/?a={ev_a.pk}&b={ev_b.pk}").json()
    testing = expected["truth"]["datasets"][0]

    login(page, "admin")
    page.goto(f"{live_server.url}/evaluations/")
    form = page.locator("#compare-card form")
    form.locator("select[name=a]").select_option(str(ev_a.pk))
    form.locator("select[name=b]").select_option(str(ev_b.pk))
    expect(form.locator("select[name=b] option:checked")).to_contain_text("[3D U-Net]")
    form.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: "/evaluations/compare/" in url and f"b={ev_b.pk}" in url)

    expect(page.locator("#compare-explained")).to_contain_text("a minus the value of b")
    models = page.locator("#models-table")
    expect(models).to_be_visible(timeout=30_000)
    arch = models.locator('tr[data-model-row="architecture"]')
    expect(arch.locator('td[data-side="a"]')).to_have_text("voxel classifier")
    expect(arch.locator('td[data-side="b"]')).to_have_text("3D U-Net")
    expect(models.locator('tr[data-model-row="training_s"] td[data-side="a"]')).to_contain_text("20.0 min")
    expect(models.locator('tr[data-model-row="training_s"] td[data-side="b"]')).to_contain_text("30.0 min")
    expect(models.locator('tr[data-model-row="inference_max_s"] td[data-side="a"]')).to_have_text("9.00 s")
    expect(models.locator('tr[data-model-row="peak_memory"] td[data-side="b"]')).to_have_text("not recorded")
    expect(page.locator('#compare-table tr[data-dataset="Testing"]')).to_contain_text(
        expected["rows"][0]["dice"]["text"]
    )
    truth = page.locator('#compare-truth-card .truth-dataset[data-truth-dataset="Testing"]')
    expect(truth.locator('tr[data-row="paired"] td[data-truth-metric="dice"]')).to_have_text(
        testing["paired"]["dice"]["text"]
    )
    expect(truth.locator('[data-verdict="truth-Testing"]')).to_have_text(testing["verdict"])
    bone_b = truth.locator('[data-table="compare-truth-bone"] tr[data-bone-side="b"]')
    expect(bone_b).to_contain_text(testing["residual_bone"]["b"]["text"])
    expect(bone_b).to_contain_text(two_models["studies"][1].pseudonym)
    expect(truth.locator('[data-table="compare-truth-radius"] tbody tr').first).to_be_visible()
    assert page.js_errors == []
    shot(page, "model-comparison")


def test_a_bad_id_is_a_plain_sentence(page, login, live_server, shot, users):
    login(page, "admin")
    response = page.goto(f"{live_server.url}/evaluations/compare/?a=abc&b=2")
    assert response.status == 400
    expect(page.locator("#compare-error")).to_have_text(
        "The id of evaluation a must be a whole number, not 'abc'."
    )
    expect(page.locator("#compare-form button[type=submit]")).to_be_disabled()  # no finished evaluations yet
    assert page.js_errors == []
    shot(page, "model-comparison-refused")
