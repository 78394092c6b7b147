"""Model-assisted labeling and the recipe beyond one threshold, in real headless Chromium with a real Celery worker:
the study list's "Label next" card (no active model said in words; then two predicted studies ranked by the
model's vessel uncertainty, checked against the entropy computed from the stored probability volumes, and the
study without a prediction counted), "Accept model vessels" in an axial slab (the draft panel's vessel count grows
by the class map's vessel voxels in that slab, one undo takes it back; then inside an ROI box), and the recipe applied with hysteresis
growing switched off and on (different vessel counts, both recorded in the draft's ops). Screenshots:
test-artifacts/screenshots/label-next-card.png, workspace-model-assist.png, workspace-recipe-advanced.png."""

import numpy as np
import pytest

from dla.classes import UNLABELED, VESSEL
from tests.conftest import wait_for_run
from tests.integration.test_inference_api import SHAPE, register_tiny
from tests.integration.test_label_priorities import entropy_bits

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SLAB = 9
SPACING = (1.5, 1.5, 1.5)  # the phantom's vessels stand out at 600 HU (its default grid is 7.5 mm)


def draft_state(study):
    from annotations import labels
    from annotations.models import Draft

    draft = Draft.objects.get(study=study, user__username="annotator")
    return draft, np.array(labels.draft_array(draft))


def wait_revision(page, revision, timeout=30000):
    page.wait_for_function(
        "(r) => Number(document.getElementById('workspace').dataset.draftRevision) === r",
        arg=revision,
        timeout=timeout,
    )
    page.wait_for_function("() => !document.getElementById('workspace').dataset.busy", timeout=timeout)


def panel_vessels(page) -> int:
    return int(page.get_attribute("[data-testid=draft-counts]", "data-vessel-voxels"))


def apply_recipe(page) -> dict:
    page.click("#threshold-apply")
    page.wait_for_selector("#recipe-progress .run[data-state=succeeded]", timeout=90000)
    numbers = page.locator("[data-testid=recipe-numbers]")
    numbers.wait_for(timeout=30000)
    return {
        "vessels": int(numbers.get_attribute("data-vessel-voxels")),
        "grown": int(numbers.get_attribute("data-grown-voxels")),
        "text": numbers.inner_text(),
        "report": page.locator("[data-testid=recipe-report]").inner_text(),
    }


def test_label_next_accept_model_vessels_and_recipe_growing(
    page, live_server, users, login, shot, phantom_study, client_for, celery_worker
):
    from annotations.models import Volume

    admin, annotator = client_for("admin"), client_for("annotator")
    studies = [phantom_study(seed=s, shape=SHAPE, spacing_mm=SPACING, cohort="train") for s in (61, 62)]
    unpredicted = phantom_study(seed=63, shape=SHAPE, spacing_mm=SPACING, cohort="validation")
    login(page, "annotator")

    # no model yet: the card says so in words
    page.goto(f"{live_server.url}/studies/")
    page.wait_for_selector("#label-next[data-ready]")
    assert "No active model: train or activate one to rank studies" in page.inner_text("#label-next")

    model = register_tiny(admin, seed=3)
    for study in studies:
        started = annotator.post("/api/inference/", {"study": study.pk}, format="json").json()
        run = wait_for_run(started["id"], timeout_s=120, worker=celery_worker)
        assert run.state == "succeeded", run.error
    entropy = {
        s.pseudonym: entropy_bits(np.asarray(Volume.objects.get(study=s, role="vessel_prob").array()))
        for s in studies
    }
    order = sorted(entropy, key=lambda name: -entropy[name])

    page.goto(f"{live_server.url}/studies/")
    page.wait_for_selector("#label-next[data-ready]")
    rows = page.locator("[data-testid=label-next-table] tbody tr")
    assert rows.count() == 2
    served = {r["pseudonym"]: r for r in annotator.get("/api/label-priorities/").json()["ranked"]}
    for i, name in enumerate(order):
        cells = rows.nth(i).locator("td").all_text_contents()
        assert cells[1] == name and cells[2] == "train", cells
        assert cells[3] == f"{entropy[name]:.2f}", (cells, entropy[name])
        assert cells[4] == f"{served[name]['uncertain_mm3']:,.0f}", (cells, served[name])
    card = page.inner_text("#label-next")
    assert "tiny" in card and "Measure: mean binary entropy" in card, card
    assert "1 study has no prediction" in page.inner_text("[data-testid=label-next-missing]")
    shot(page, "label-next-card")

    # the study without a prediction: no button, a hint
    page.goto(f"{live_server.url}/studies/{unpredicted.pk}/")
    page.wait_for_selector("#workspace[data-draft-revision]")
    assert page.locator("#model-accept").count() == 0
    assert "run inference on this study to get model suggestions" in page.inner_text(
        "[data-testid=model-hint]"
    )

    # open the most uncertain study from the card
    page.goto(f"{live_server.url}/studies/")
    page.wait_for_selector("#label-next[data-ready]")
    page.locator("[data-testid=label-next-table] tbody tr").first.locator("a").click()
    top = next(s for s in studies if s.pseudonym == order[0])
    page.wait_for_url(f"**/studies/{top.pk}/")
    page.wait_for_selector("#workspace[data-draft-revision='0']")
    assert panel_vessels(page) == 0
    page.wait_for_function(
        "(n) => document.querySelector('[data-testid=model-info]').textContent.includes(n)", arg="“tiny”"
    )
    class_map = Volume.objects.filter(study=top, role="class_map").order_by("-created_at").first()
    assert class_map.model_version_id == model["id"]
    predicted = np.asarray(class_map.array())

    # accept the model's vessels in an axial slab of 9 slices around the current slice
    z = page.evaluate("() => document.getElementById('workspace').ws.crosshair.z")
    z0 = max(0, z - (SLAB - 1) // 2)
    z1 = min(SHAPE[0], z0 + SLAB)
    in_slab = int((predicted[z0:z1] == VESSEL).sum())
    assert in_slab > 0, "the tiny model must call some voxels of the slab vessel"
    page.select_option("[data-testid=model-scope]", "slab")
    page.fill("#model-slab", str(SLAB))
    assert page.is_checked("#model-only-unlabeled")
    page.click("[data-testid=model-accept]")
    wait_revision(page, 1)
    page.wait_for_function(
        "(n) => document.querySelector('[data-testid=draft-counts]').dataset.vesselVoxels === String(n)",
        arg=in_slab,
    )
    draft, labels = draft_state(top)
    expected = np.zeros(SHAPE, np.uint8)
    expected[z0:z1][predicted[z0:z1] == VESSEL] = VESSEL
    np.testing.assert_array_equal(labels, expected)
    assert draft.ops[-1]["op"] == {
        "op": "model_vessels",
        "volume_id": class_map.pk,
        "box_zyx": [z0, z1, 0, SHAPE[1], 0, SHAPE[2]],
        "only_class": UNLABELED,
    }
    assert "Accepted the model's vessels" in page.inner_text("#ws-status")
    shot(page, "workspace-model-assist")

    # one undo reverts it
    page.click("#undo")
    wait_revision(page, 2)
    assert panel_vessels(page) == 0
    assert not (draft_state(top)[1] == VESSEL).any()

    # an ROI box set elsewhere (another tab): the page follows the draft, and "inside the ROI box" uses it
    box = [4, 20, 10, 40, 5, 30]
    set_roi = annotator.post(
        f"/api/drafts/{draft.pk}/ops/", {"op": {"op": "set_roi", "box_zyx": box}}, format="json"
    )
    assert set_roi.status_code == 200, set_roi.content
    wait_revision(page, 3)
    page.wait_for_function("() => !document.querySelector('#model-scope option[value=roi]').disabled")
    page.select_option("[data-testid=model-scope]", "roi")
    page.click("[data-testid=model-accept]")
    wait_revision(page, 4)
    in_box = int((predicted[4:20, 10:40, 5:30] == VESSEL).sum())
    assert 0 < in_box < int((predicted == VESSEL).sum())
    assert panel_vessels(page) == in_box == int((draft_state(top)[1] == VESSEL).sum())
    assert draft_state(top)[0].ops[-1]["op"]["box_zyx"] == box
    page.click("#undo")
    wait_revision(page, 5)
    assert panel_vessels(page) == 0

    # the recipe with hysteresis growing off, then on: different vessel counts, each as reported
    page.click("#recipe-advanced summary")
    assert page.input_value("#low-threshold") == "100" and page.is_checked("#grow-on")
    assert page.input_value("#edge-fraction") == "0.5" and page.input_value("#edge-radius") == "2"
    assert "preview shows the threshold only" in page.inner_text("[data-testid=preview-note]").lower()
    page.uncheck("#grow-on")
    assert page.is_disabled("#low-threshold")
    off = apply_recipe(page)
    wait_revision(page, 6)
    draft, labels = draft_state(top)
    assert draft.ops[-1]["op"]["params"]["vessel_low_threshold_hu"] is None
    assert off["vessels"] == int((labels == VESSEL).sum()) == panel_vessels(page)
    assert "growing off" in off["text"] and "hysteresis" not in off["report"], off

    page.check("#grow-on")
    on = apply_recipe(page)
    wait_revision(page, 7)
    draft, labels = draft_state(top)
    assert draft.ops[-1]["op"]["params"]["vessel_low_threshold_hu"] == 100
    assert on["vessels"] == int((labels == VESSEL).sum()) == panel_vessels(page)
    assert on["vessels"] != off["vessels"], (on, off)
    assert on["grown"] > 0 and f"grown +{on['grown']:,}" in on["text"], on
    assert "hysteresis from 100 HU added" in on["report"], on
    page.set_viewport_size({"width": 1400, "height": 1700})  # the side panel scrolls: show all of it
    page.locator("[data-testid=recipe-report]").scroll_into_view_if_needed()
    shot(page, "workspace-recipe-advanced")
    assert not page.js_errors, page.js_errors
