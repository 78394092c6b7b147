"""The training and model-registry pages in headless Chromium with a real worker: launch a run from the form, watch
progress with ETA and plotly curves update, cancel it; launch a short run to success; the registered model shows
up active on /models/, inference runs from there."""

import numpy as np
import pytest
from playwright.sync_api import expect

from annotations.labels import _create_version, review
from dla.model.base import DEFAULT_BONE_PRIOR_STRENGTH, DEFAULT_PRIOR_STRENGTH
from dla_web.models import TaskRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHAPE, SPACING = (24, 48, 48), (3.0, 3.0, 3.0)


@pytest.fixture
def cohorts(phantom_study, users):
    studies = [phantom_study(seed=s, shape=SHAPE, spacing_mm=SPACING, cohort="train") for s in (41, 42)]
    studies.append(phantom_study(seed=43, shape=SHAPE, spacing_mm=SPACING, cohort="validation"))
    for study in studies:
        labels = np.asarray(study.volume("truth").array())
        version = _create_version(
            study,
            labels=labels,
            parent=None,
            author=users["admin"],
            message="truth",
            recipe={},
            ops=[],
            roi=None,
        )
        review(version, users["admin"], "approved", "")
    phantom_study(seed=44, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    return studies


def fill_form(page, max_iterations: int, val_every: int, patience: int = 10_000):
    page.select_option("select[name=preset]", "tiny")
    page.fill("input[name=early_stopping_patience]", str(patience))  # no early stop before the cancel click
    page.fill("input[name=max_iterations]", str(max_iterations))
    page.fill("input[name=val_every]", str(val_every))
    page.fill("input[name=dense_slabs_per_batch]", "4")
    page.fill("input[name=val_samples_per_class]", "100")


def test_admin_trains_watches_cancels_and_registers_model(
    page, live_server, login, shot, cohorts, celery_worker
):
    login(page, "admin")
    page.goto(f"{live_server.url}/models/train/")
    assert page.input_value("input[name=momentum]") == "0.9"
    assert page.input_value("input[name=lr_values]") == "0.001, 0.0001, 1e-05"
    assert page.input_value("input[name=batch_size]") == "512"

    # a long run: live progress, ETA and curves, then cancel
    fill_form(page, 100000, 5)
    page.fill("input[name=name]", "long run")
    page.click("#launch")
    page.wait_for_selector("#run-card[data-state=running]", timeout=30000)
    # plotly draws one trace per class plus the mean once the first validation point arrived
    page.wait_for_selector("#val-chart .scatterlayer .trace:nth-child(4) path.js-line", timeout=30000)
    page.wait_for_selector("#loss-chart .scatterlayer .trace path.js-line", timeout=10000)
    page.locator("#run-message", has_text="ETA").wait_for(timeout=10000)
    shot(page, "training-live")
    first = page.locator("#run-message").inner_text()
    expect(page.locator("#run-message")).not_to_have_text(first, timeout=10000)  # live updates
    page.click("#cancel-run")
    page.wait_for_selector("#run-card[data-state=cancelled]", timeout=15000)

    # a short run to success
    fill_form(page, 30, 10)
    page.fill("input[name=name]", "short run")
    page.check("input[name=activate]")
    page.click("#launch")
    page.wait_for_selector("#run-card[data-state=succeeded]", timeout=60000)
    page.wait_for_selector("#run-message a[href^='/models/#model-']")
    assert page.locator("#run-log").inner_text().count("registered model") == 1
    assert page.locator("#runs-table tbody tr").count() == 2
    page.wait_for_timeout(400)  # let the progress bar's CSS transition finish before the screenshot
    shot(page, "training-done")

    page.click("#run-message a[href^='/models/#model-']")
    page.wait_for_selector("#models-table tr[data-active=true]")
    assert "short run" in page.locator("#models-table tr[data-active=true]").inner_text()
    # the default, explained
    assert page.input_value("#infer-form input[name=prior_strength]") == f"{DEFAULT_PRIOR_STRENGTH:g}"
    assert "0 none (the paper's rule; set both to 0)" in page.locator("#prior-strength-help").inner_text()
    assert (
        page.input_value("#infer-form input[name=bone_prior_strength]") == f"{DEFAULT_BONE_PRIOR_STRENGTH:g}"
    )
    page.fill("#infer-form input[name=prior_strength]", "0.5")
    page.fill("#infer-form input[name=bone_prior_strength]", "0.3")
    assert not page.is_checked("#infer-form input[name=mirror]")  # one pass unless asked, explained
    assert "twice the network" in page.locator("#prior-strength-help").inner_text()
    page.check("#infer-form input[name=mirror]")
    page.click("#infer-form button[type=submit]")
    page.wait_for_selector("#infer-runs .run[data-state=succeeded]", timeout=60000)
    run = TaskRun.objects.filter(kind="infer").latest("pk")
    assert run.params["prior_strength"] == 0.5 and run.params["mirror"] is True
    assert run.params["bone_prior_strength"] == 0.3
    assert (
        "prior correction (strength 0.5 against soft tissue, 0.3 against bone)" in run.log_tail
        and "mirrored test-time augmentation" in run.log_tail
    )
    shot(page, "models-page")
    assert not page.js_errors, page.js_errors


def test_annotator_sees_registry_but_not_training(page, live_server, users, login):
    login(page, "annotator")
    page.goto(f"{live_server.url}/models/")
    page.wait_for_selector("#models-table td")
    assert page.locator("#upload-card").count() == 0 and page.locator("#train-link").count() == 0
    response = page.goto(f"{live_server.url}/models/train/")
    assert response.status == 403


def test_admin_trains_an_augmented_3d_unet_from_the_form(
    page, live_server, login, shot, cohorts, celery_worker
):
    """The architecture select and the augmentation section are the form's: the U-Net fields replace the voxel
    ones, a reversed HU scale range is refused in words, and the run that starts trains a U-Net with exactly the
    augmentation typed in."""
    from dla.model.network import NetworkConfig
    from dla.model.train import TrainConfig
    from inference.models import ModelVersion

    login(page, "admin")
    page.goto(f"{live_server.url}/models/train/")
    assert page.locator("label[data-arch=unet3d]").first.is_hidden()
    page.select_option("select[name=architecture]", "unet3d")
    assert page.locator("label[data-arch=unet3d]").first.is_visible()
    assert page.locator("select[name=preset]").is_hidden(), "the voxel preset does not apply to a U-Net"
    page.fill("input[name=unet_patch_px]", "16")
    page.fill("input[name=unet_base_filters]", "8")
    page.fill("input[name=max_iterations]", "10")
    page.fill("input[name=val_every]", "5")
    page.fill("input[name=dense_slabs_per_batch]", "2")
    page.fill("input[name=val_samples_per_class]", "100")
    page.fill("input[name=name]", "augmented unet")
    page.click("[data-testid=augmentation] summary")
    page.fill("input[name=augment_noise_hu]", "25")
    page.fill("input[name=augment_hu_scale_low]", "1.2")
    page.fill("input[name=augment_hu_scale_high]", "0.8")
    page.click("#launch")
    expect(page.locator("#form-error")).to_contain_text("the HU scale range must not end below its start")
    assert ModelVersion.objects.count() == 0
    page.fill("input[name=augment_hu_scale_low]", "0.9")
    page.fill("input[name=augment_hu_scale_high]", "1.1")
    page.click("#launch")
    page.wait_for_selector("#run-card:is([data-state=succeeded],[data-state=failed])", timeout=120000)
    assert page.get_attribute("#run-card", "data-state") == "succeeded", page.locator("#run-log").inner_text()
    page.wait_for_timeout(400)  # let the progress bar's CSS transition finish before the screenshot
    shot(page, "training-unet-augmentation")
    assert (
        "augmentation of 100% of training slabs/patches: HU x [0.9, 1.1]"
        in page.locator("#run-log").inner_text()
    )
    version = ModelVersion.objects.get(name="augmented unet")
    assert NetworkConfig.from_dict(version.network_config).architecture == "unet3d"
    cfg = TrainConfig.from_dict(version.train_config)
    assert (cfg.augment_noise_hu, cfg.augment_blur_sigma_voxels, cfg.augment_hu_scale) == (25, 0, (0.9, 1.1))
    assert not page.js_errors, page.js_errors
