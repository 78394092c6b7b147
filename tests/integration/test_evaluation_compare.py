"""Model comparison (issue 18.2) through the API and the page against PostgreSQL: two model versions, a voxel
classifier and a 3D U-Net, on the same phantom test studies, with predictions built here from the truth (a exact
or nearly so, b eroded / with a block of bone called vessel / dilated), so a is better against the truth by a known
margin: the truth-referenced paired differences a - b are checked against scikit-learn and scipy's t interval,
the residual bone of b's bone block is counted, and the models' costs come from the training and inference run
records as the tasks store them. A real inference run (a 3D U-Net with random weights) supplies one side's
inference times in a second test. Cohorts without truth maps get a sentence; bad ids get a plain 4xx; only
admins may compare."""

import tempfile
from datetime import timedelta
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
from django.conf import settings
from django.utils import timezone
from scipy import ndimage, stats
from sklearn.metrics import f1_score

from annotations.models import Volume
from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.model.network import NetworkConfig, build_model, count_parameters, save_weights
from dla.model.unet3d import plan_unet3d
from dla_web.models import TaskRun
from evaluation.models import Evaluation
from inference.models import ModelVersion
from inference.services import register_model
from inference.tasks import infer_studies, start_inference
from tests.conftest import wait_for_run
from tests.integration.test_evaluation_api import (
    approve,
    launch,
    make_model,
    page_client,
    run_inline,
    with_phantom_params,
)

pytestmark = pytest.mark.django_db

SHAPE = (40, 64, 64)
SPACING = (2.0, 2.0, 2.0)  # one voxel = 2 mm: the phantom has vessels of radius >= one voxel
SIX = ndimage.generate_binary_structure(3, 1)
UNET = plan_unet3d(SPACING, (16, 16, 16), base_filters=8)


def class_map(study, vessel: np.ndarray) -> np.ndarray:
    """The truth (unlabeled -> soft tissue) with the vessel class replaced by ``vessel``."""
    truth = np.asarray(study.volume("truth").array())
    pred = np.where(truth == UNLABELED, SOFT_TISSUE, truth).astype(np.uint8)
    pred[(pred == VESSEL) & ~vessel] = SOFT_TISSUE
    pred[vessel] = VESSEL
    return pred


def bone_block(study) -> np.ndarray:
    """The bone voxels of one octant of the head far from every vessel (called vessel by model b)."""
    truth = np.asarray(study.volume("truth").array())
    far = ndimage.distance_transform_edt(truth != VESSEL) > 4
    octant = np.zeros(truth.shape, bool)
    octant[: truth.shape[0] // 2, : truth.shape[1] // 2, : truth.shape[2] // 2] = True
    block = (truth == BONE) & far & octant
    assert ndimage.binary_erosion(truth == BONE, SIX)[block].sum() >= 100, int(block.sum())
    return block


def store_class_map(study, model, pred: np.ndarray, source: str = "") -> Volume:
    t = study.volume("truth")
    return Volume.create_from_array(
        study=study,
        role="class_map",
        array=pred,
        spacing_mm=t.spacing_mm,
        affine_lps=t.affine_lps,
        model_version_id=model.pk,
        source=source,
    )


def finished_run(kind: str, seconds: float, result: dict) -> TaskRun:
    """A TaskRun as a worker leaves it (started, finished, result), e.g. a training or inference run."""
    end = timezone.now()
    return TaskRun.objects.create(
        kind=kind,
        state=TaskRun.State.SUCCEEDED,
        started_at=end - timedelta(seconds=seconds),
        finished_at=end,
        result=result,
        progress=1.0,
    )


def evaluate(client, model, cohorts=("test",), reference="truth") -> Evaluation:
    response = launch(client, model_version=model.pk, cohorts=list(cohorts), reference=reference)
    assert response.status_code == 202, response.json()
    return run_inline(Evaluation.objects.get(pk=response.json()["id"]))


@pytest.fixture
def two_models(phantom_study):
    """Model a (voxel classifier, trained here) and b (3D U-Net, trained here) on 3 phantom test studies."""
    train_a = finished_run("train", 1200.0, {})
    train_b = finished_run("train", 1800.0, {})
    model_a = make_model("voxel a")
    model_a.network_config = build_model("tiny").config.to_dict()
    model_a.training_run = train_a
    model_a.metrics = {"summary": {"iterations": 4000, "best_iteration": 3500, "elapsed_s": 1190.0}}
    model_a.save()
    model_b = make_model("unet b")
    model_b.network_config = UNET.to_dict()
    model_b.training_run = train_b
    model_b.metrics = {"summary": {"iterations": 900, "best_iteration": 900, "elapsed_s": 1795.0}}
    model_b.save()
    studies = [
        with_phantom_params(
            phantom_study(seed=seed, shape=SHAPE, spacing_mm=SPACING, cohort="test", motion=False)
        )
        for seed in (121, 122, 123)
    ]
    vessels = {"a": {}, "b": {}}
    elapsed = {"a": [4.0, 5.0, 9.0], "b": [1.5, 2.5, 2.0]}
    runs = {}
    for side, model in (("a", model_a), ("b", model_b)):
        runs[side] = finished_run("infer", 30.0, {})
        entries = []
        for i, study in enumerate(studies):
            truth_vessel = np.asarray(study.volume("truth").array()) == VESSEL
            if side == "a":
                vessel = truth_vessel
            elif i == 0:
                vessel = ndimage.binary_erosion(truth_vessel, SIX)
            elif i == 1:
                vessel = truth_vessel | bone_block(study)
            else:
                vessel = ndimage.binary_dilation(truth_vessel, SIX)
            vessels[side][study.pk] = vessel
            volume = store_class_map(
                study, model, class_map(study, vessel), source=f"infer-run-{runs[side].pk}"
            )
            entries.append(
                {
                    "study_id": study.pk,
                    "pseudonym": study.pseudonym,
                    "volumes": {"class_map": volume.pk},
                    "elapsed_s": elapsed[side][i],
                    "voxels_per_s": float(np.prod(SHAPE)) / elapsed[side][i],
                    "network_voxels": int(np.prod(SHAPE)),
                }
            )
        runs[side].result = {"model_version_id": model.pk, "studies": entries}
        runs[side].save(update_fields=["result"])
    return {
        "models": {"a": model_a, "b": model_b},
        "studies": studies,
        "vessels": vessels,
        "elapsed": elapsed,
        "runs": runs,
        "training": {"a": train_a, "b": train_b},
    }


def test_truth_paired_differences_follow_the_constructed_difference(two_models, client_for, users):
    admin = client_for("admin")
    ev_a = evaluate(admin, two_models["models"]["a"])
    ev_b = evaluate(admin, two_models["models"]["b"])
    response = admin.get(f"/api/evaluations/compare/?a={ev_a.pk}&b={ev_b.pk}")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert {r["dataset"] for r in data["rows"]} == {"Testing"}  # the Table 1 rows are still there
    truth = data["truth"]
    assert truth["available"] is True
    (testing,) = truth["datasets"]
    assert testing["dataset"] == "Testing" and testing["n"] == 3

    # whole-head Dice against the truth, independently: sklearn on the voxels, scipy's t interval
    dice = {side: [] for side in ("a", "b")}
    for study in two_models["studies"]:
        tv = (np.asarray(study.volume("truth").array()) == VESSEL).ravel()
        for side in ("a", "b"):
            dice[side].append(f1_score(tv, two_models["vessels"][side][study.pk].ravel()))
    diff = np.array(dice["a"]) - np.array(dice["b"])
    assert (diff > 0).all()  # as built: a is the truth, every b is off
    low, high = stats.t.interval(0.95, 2, loc=diff.mean(), scale=stats.sem(diff))
    paired = testing["paired"]["dice"]
    assert paired["mean"] == pytest.approx(diff.mean()) and paired["mean"] > 0
    assert paired["ci_low"] == pytest.approx(low) and paired["ci_high"] == pytest.approx(high)
    assert paired["text"].startswith(f"{100 * diff.mean():+.2f} pp")
    assert testing["means"]["a"]["dice"]["mean"] == pytest.approx(1.0)
    assert testing["means"]["b"]["dice"]["mean"] == pytest.approx(np.mean(dice["b"]))
    # the other truth metrics are stored per study; their paired means equal the per-study differences
    ref = {
        side: {r.study_id: r.truth["referenced"]["dla"] for r in ev.results.all()}
        for side, ev in (("a", ev_a), ("b", ev_b))
    }
    ids = [s.pk for s in two_models["studies"]]
    for metric, read in (
        ("sensitivity", lambda t: t["whole_head"]["sensitivity"]),
        ("ppv", lambda t: t["whole_head"]["ppv"]),
        ("centreline_sensitivity", lambda t: t["centreline"]["sensitivity"]),
        ("resolved_dice", lambda t: t["resolved"]["dice"]),
    ):
        pairs = [(read(ref["a"][pk]), read(ref["b"][pk])) for pk in ids]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]  # undefined pairs are dropped
        assert testing["paired"][metric]["n"] == len(pairs) > 0, metric
        assert testing["paired"][metric]["mean"] == pytest.approx(np.mean([x - y for x, y in pairs])), metric
    # b's extra bone block costs PPV, its eroded study sensitivity: both differences point to a
    assert testing["paired"]["ppv"]["mean"] > 0 and testing["paired"]["sensitivity"]["mean"] > 0
    # Dice per radius bin: only bins with a defined Dice in both, each with the mean of the per-study differences
    assert testing["by_radius"]
    for b in testing["by_radius"]:
        pairs = [
            (x["dice"], y["dice"])
            for pk in ids
            for x in ref["a"][pk]["by_radius"]
            for y in ref["b"][pk]["by_radius"]
            if x["label"] == y["label"] == b["label"] and x["dice"] is not None and y["dice"] is not None
        ]
        assert b["n"] == len(pairs) > 0
        assert b["paired_dice"]["mean"] == pytest.approx(np.mean([x - y for x, y in pairs]))
    # residual bone: b called a block of bone vessel in its second study, a called none
    bone = testing["residual_bone"]
    second = two_models["studies"][1].pseudonym
    assert bone["a"]["n"] == 0 and bone["a"]["cases"] == [] and bone["a"]["N"] == 3
    assert (
        second in bone["b"]["cases"]
        and bone["b"]["n"] >= 1
        and bone["b"]["text"].startswith(f"{bone['b']['n']}/3")
    )
    assert testing["verdict"].startswith("Testing, Dice against the truth: a (#")
    assert ("is better" in testing["verdict"]) == (paired["ci_low"] > 0)

    # the models: architecture, parameters, training time from the training runs, inference from the runs
    models = data["models"]
    assert models["a"]["architecture_label"] == "voxel classifier"
    assert models["b"]["architecture"] == "unet3d" and models["b"]["architecture_label"] == "3D U-Net"
    assert models["a"]["parameters"] == count_parameters(build_model("tiny"))
    assert models["b"]["parameters"] == count_parameters(build_model(UNET))
    for side, seconds in (("a", 1200.0), ("b", 1800.0)):
        m = models[side]
        assert m["training_s"] == pytest.approx(seconds)
        assert m["training_run"] == two_models["training"][side].pk
        inf = m["inference"]
        assert inf["n_timed"] == 3 and inf["runs"] == [two_models["runs"][side].pk]
        assert inf["mean_s"] == pytest.approx(np.mean(two_models["elapsed"][side]))
        assert inf["max_s"] == pytest.approx(max(two_models["elapsed"][side]))
        assert inf["whole_head_s"] == pytest.approx(400 * 512 * 512 / inf["voxels_per_s"])
        assert m["peak_memory"] is None and "not recorded" in m["peak_memory_note"]
    assert models["a"]["iterations"] == 4000 and models["a"]["best_iteration"] == 3500
    assert models["b"]["best_iteration"] == 900

    page = page_client(users["admin"]).get(f"/evaluations/compare/?a={ev_a.pk}&b={ev_b.pk}")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="models-table"' in html and "3D U-Net" in html and "voxel classifier" in html
    assert 'id="compare-truth-card"' in html and paired["text"] in html and second in html
    assert testing["verdict"] in html.replace("&#x27;", "'")
    assert "A positive difference means a scored higher" in html


def test_real_inference_run_times_the_unet_side(phantom_study, users, client_for):
    """The U-Net side's class maps come from a real inference run (random weights): its per-study times are the
    ones the run stored; uploaded weights have no training time, and the page says so."""
    studies = [
        with_phantom_params(phantom_study(seed=s, shape=SHAPE, spacing_mm=SPACING, cohort="test"))
        for s in (131, 132)
    ]
    torch.manual_seed(0)
    net = build_model(UNET)
    with tempfile.TemporaryDirectory(dir=settings.VAR_DIR) as tmp:
        save_weights(net, Path(tmp) / "w.pt")
        unet = register_model(
            Path(tmp) / "w.pt", config=UNET, activate=False, name="random unet", source="uploaded", metrics={}
        )
    run = start_inference(
        user=users["admin"], version=unet, studies=studies, candidate_min_hu=100, in_process=True, cine=False
    )
    run = infer_studies.run_here(run)
    assert run.state == "succeeded", run.error
    exact = make_model("exact voxel")
    for study in studies:
        store_class_map(study, exact, class_map(study, np.asarray(study.volume("truth").array()) == VESSEL))
    admin = client_for("admin")
    ev_unet, ev_exact = evaluate(admin, unet), evaluate(admin, exact)
    data = admin.get(f"/api/evaluations/compare/?a={ev_unet.pk}&b={ev_exact.pk}").json()
    inf = data["models"]["a"]["inference"]
    times = [s["elapsed_s"] for s in run.result["studies"]]
    assert inf["n_timed"] == 2 and inf["runs"] == [run.pk]
    assert inf["mean_s"] == pytest.approx(np.mean(times)) and inf["max_s"] == pytest.approx(max(times))
    # peak memory: the worker's peak resident memory during each study, as the run recorded it (Linux /proc)
    peaks = [s["peak_rss_gb"] for s in run.result["studies"]]
    assert all(0 < p < 64 for p in peaks), peaks
    assert inf["peak_rss_gb"] == pytest.approx(max(peaks)) and inf["n_peak"] == 2
    assert data["models"]["a"]["peak_memory"] == f"{max(peaks):.2f} GB in one study (largest of 2)"
    assert data["models"]["b"]["peak_memory"] is None
    assert data["models"]["a"]["training_s"] is None
    assert data["models"]["a"]["training_note"].startswith("uploaded weights")
    # the hand-made class maps of b were made by no inference run: no time, and the reason
    assert data["models"]["b"]["inference"]["mean_s"] is None
    assert "not made by an inference run" in data["models"]["b"]["inference"]["note"]
    assert (
        data["models"]["b"]["parameters"] is None
        and "could not be rebuilt" in data["models"]["b"]["parameters_note"]
    )
    # random weights are worse than the truth itself: a - b < 0 for Dice, for every pair
    testing = data["truth"]["datasets"][0]
    assert testing["paired"]["dice"]["mean"] < 0
    assert testing["means"]["b"]["dice"]["mean"] == pytest.approx(1.0)
    html = (
        page_client(users["admin"])
        .get(f"/evaluations/compare/?a={ev_unet.pk}&b={ev_exact.pk}")
        .content.decode()
    )
    assert "uploaded weights: trained elsewhere" in html and "not made by an inference run" in html


def test_cohort_without_truth_maps_says_so(phantom_study, users, client_for):
    models = [make_model("no truth a"), make_model("no truth b")]
    for seed in (141, 142):
        study = phantom_study(seed=seed, shape=SHAPE, spacing_mm=SPACING, cohort="test")
        approve(study, users["admin"])
        truth_vessel = np.asarray(study.volume("truth").array()) == VESSEL
        store_class_map(study, models[0], class_map(study, truth_vessel))
        store_class_map(study, models[1], class_map(study, ndimage.binary_erosion(truth_vessel, SIX)))
        Volume.objects.filter(study=study, role="truth").delete()  # a real (non-phantom) study has none
    admin = client_for("admin")
    ev_a, ev_b = (evaluate(admin, m, reference="approved") for m in models)
    response = admin.get(f"/api/evaluations/compare/?a={ev_a.pk}&b={ev_b.pk}")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["truth"]["available"] is False
    assert "no study scored against a phantom truth volume" in data["truth"]["note"]
    assert data["rows"][0]["dice"]["mean"] > 0  # Table 1 against the labels still compares
    assert data["models"]["a"]["training_note"].startswith("not known")
    html = page_client(users["admin"]).get(f"/evaluations/compare/?a={ev_a.pk}&b={ev_b.pk}").content.decode()
    assert 'id="compare-truth-unavailable"' in html and "no study scored against a phantom truth" in html
    assert 'data-table="compare-truth"' not in html


def test_bad_ids_are_plain_4xx_and_only_admins_compare(phantom_study, users, client_for):
    model = make_model("one")
    study = phantom_study(seed=151, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    store_class_map(study, model, class_map(study, np.asarray(study.volume("truth").array()) == VESSEL))
    ev = evaluate(client_for("admin"), model)
    admin, page = client_for("admin"), page_client(users["admin"])
    assert "give two evaluation ids" in admin.get("/api/evaluations/compare/").json()["detail"]
    empty = page.get("/evaluations/compare/")  # the page itself: a form to pick two
    assert empty.status_code == 200 and 'id="compare-prompt"' in empty.content.decode()
    for query, words in (
        (f"?a={ev.pk}", "b is missing"),
        (f"?a=abc&b={ev.pk}", "the id of evaluation a must be a whole number, not 'abc'"),
        (f"?a={ev.pk}&b=1.5", "the id of evaluation b must be a whole number"),
        (f"?a={ev.pk}&b=99999999999999999999999", "evaluation 99999999999999999999999 does not exist"),
        (f"?a={ev.pk}&b={ev.pk}", "compare two different evaluations"),
    ):
        api = admin.get(f"/api/evaluations/compare/{query}")
        assert api.status_code == 400 and words in api.json()["detail"], (query, api.content)
        shown = page.get(f"/evaluations/compare/{query}")
        alert = unescape(shown.content.decode().split('id="compare-error">')[1].split("</div>")[0])
        assert shown.status_code == 400 and words.lower() in alert.lower(), (query, alert)
        assert "Error" not in alert and "Exception" not in alert  # plain words, no class names
    missing = admin.get(f"/api/evaluations/compare/?a={ev.pk}&b={ev.pk + 1000}")
    assert (
        missing.status_code == 400 and f"evaluation {ev.pk + 1000} does not exist" in missing.json()["detail"]
    )
    assert page.get(f"/evaluations/compare/?a={ev.pk}&b={ev.pk + 1000}").status_code == 404
    for role in ("annotator", "reader"):
        assert client_for(role).get(f"/api/evaluations/compare/?a={ev.pk}&b={ev.pk}").status_code == 403
        assert page_client(users[role]).get(f"/evaluations/compare/?a={ev.pk}&b={ev.pk}").status_code == 403


E2E_SHAPE = (24, 48, 48)
E2E_SPACING = (3.0, 3.0, 3.0)
E2E_TRAIN = {
    "max_iterations": 20,
    "val_every": 10,
    "val_samples_per_class": 100,
    "dense_slabs_per_batch": 4,
    "checkpoint_every": 5,
    "epoch_voxels": 200_000,
}


@pytest.mark.django_db(transaction=True)
def test_train_infer_evaluate_and_compare_end_to_end(phantom_study, users, client_for, celery_worker):
    """The issue's path through the API and a real worker: a voxel classifier and a 3D U-Net trained on the same
    approved labels, each inferring the test cohort, both evaluated against the truth and compared: the models'
    training times, iterations and inference times are the ones their runs stored."""
    admin = client_for("admin")
    plan = [(161, "train"), (162, "train"), (163, "validation"), (164, "test"), (165, "test")]
    studies = {}
    for seed, cohort in plan:
        study = with_phantom_params(
            phantom_study(seed=seed, shape=E2E_SHAPE, spacing_mm=E2E_SPACING, cohort=cohort)
        )
        if cohort != "test":
            approve(study, users["admin"])
        studies.setdefault(cohort, []).append(study)
    bodies = {
        "voxel": {**E2E_TRAIN, "preset": "tiny", "name": "voxel e2e"},
        "unet3d": {
            **E2E_TRAIN,
            "name": "unet e2e",
            "architecture": "unet3d",
            "unet_patch_px": 16,
            "unet_base_filters": 8,
        },
    }
    versions, evaluations, inference_runs, training_runs = {}, {}, {}, {}
    for arch, body in bodies.items():
        response = admin.post("/api/training-runs/", body, format="json")
        assert response.status_code == 202, response.content
        run = wait_for_run(response.json()["id"], timeout_s=900, worker=celery_worker)
        assert run.state == "succeeded", (run.error, run.log_tail)
        training_runs[arch] = run
        versions[arch] = ModelVersion.objects.get(training_run=run)
        response = admin.post(
            "/api/inference/", {"cohort": "test", "model_version": versions[arch].pk}, format="json"
        )
        assert response.status_code == 202, response.content
        inferred = wait_for_run(response.json()["id"], timeout_s=900, worker=celery_worker)
        assert inferred.state == "succeeded", (inferred.error, inferred.log_tail)
        inference_runs[arch] = inferred
        response = launch(admin, model_version=versions[arch].pk, cohorts=["test"], reference="truth")
        assert response.status_code == 202, response.json()
        evaluations[arch] = run_inline(Evaluation.objects.get(pk=response.json()["id"]))
    a, b = evaluations["voxel"], evaluations["unet3d"]
    response = admin.get(f"/api/evaluations/compare/?a={a.pk}&b={b.pk}")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["truth"]["available"] is True and data["truth"]["datasets"][0]["n"] == 2
    for side, arch, label in (("a", "voxel", "voxel classifier"), ("b", "unet3d", "3D U-Net")):
        m = data["models"][side]
        run = training_runs[arch]
        assert m["architecture_label"] == label and m["training_run"] == run.pk
        assert m["training_s"] == pytest.approx((run.finished_at - run.started_at).total_seconds())
        summary = versions[arch].metrics["summary"]
        assert m["iterations"] == summary["iterations"] == 20
        assert m["best_iteration"] == summary["best_iteration"]
        times = [s["elapsed_s"] for s in inference_runs[arch].result["studies"]]
        assert m["inference"]["n_timed"] == 2 and m["inference"]["runs"] == [inference_runs[arch].pk]
        assert m["inference"]["mean_s"] == pytest.approx(np.mean(times))
        assert m["parameters"] == count_parameters(
            build_model(NetworkConfig.from_dict(versions[arch].network_config))
        )
    html = page_client(users["admin"]).get(f"/evaluations/compare/?a={a.pk}&b={b.pk}").content.decode()
    assert 'id="models-table"' in html and 'id="compare-truth-card"' in html and "3D U-Net" in html
