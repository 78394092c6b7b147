"""Evaluations through the API against PostgreSQL (and a real Celery worker for the end-to-end run): three small
phantom studies with approved labels and predictions made here (truth with voxels flipped), ModelVersion rows made
directly. Stored per-study numbers are checked against scikit-learn on the same voxels, Table 1 against numpy and
scipy's t interval; every bad input is refused with a message naming the studies and leaves nothing behind."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from annotations.labels import _create_version, review
from annotations.models import Volume
from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.stats.artifacts import residual_bone
from dla_web.models import TaskRun
from dla_web.tasks import TaskContext
from evaluation import services
from evaluation.models import Evaluation, StudyResult
from evaluation.tasks import evaluate
from inference.models import ModelVersion
from tests.conftest import wait_for_run

SHAPE = (24, 48, 48)
SPACING = (3.0, 3.0, 3.0)
ROI = [2, 22, 4, 44, 4, 44]
MOVED = {"rotation_deg": (0.0, 0.0, 0.0), "translation_mm": (4.5, 4.5, 0.0)}


# ------------------------------------------------------------------------------------------------ helpers


def make_model(name: str = "test model") -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, weights_file="none.pt", sha256="0" * 64, fingerprint="test", network_config={"preset": "t"}
    )


def predict(study, model, flip_fraction: float, seed: int, shape=None) -> np.ndarray:
    """A class map = the phantom truth with ``flip_fraction`` of its labeled voxels moved to another class."""
    truth = np.asarray(study.volume("truth").array())
    pred = truth.copy()
    pred[pred == UNLABELED] = SOFT_TISSUE
    rng = np.random.default_rng(seed)
    labeled = np.flatnonzero(truth != UNLABELED)
    flip = rng.choice(labeled, size=int(flip_fraction * labeled.size), replace=False)
    flat = pred.reshape(-1)
    flat[flip] = (flat[flip] - 1 + rng.integers(1, 3, size=flip.size)) % 3 + 1
    if shape is not None:
        pred = np.ascontiguousarray(pred[: shape[0], : shape[1], : shape[2]])
    truth_volume = study.volume("truth")
    Volume.create_from_array(
        study=study,
        role="class_map",
        array=pred.astype(np.uint8),
        spacing_mm=truth_volume.spacing_mm,
        affine_lps=truth_volume.affine_lps,
        model_version_id=model.pk,
    )
    return pred


def approve(study, admin, labels=None, roi=None):
    """An approved label version (default: the phantom truth; outside ``roi`` unlabeled, as set_roi does)."""
    if labels is None:
        labels = np.asarray(study.volume("truth").array()).copy()
    if roi is not None:
        inside = np.zeros(labels.shape, dtype=bool)
        z0, z1, y0, y1, x0, x1 = roi
        inside[z0:z1, y0:y1, x0:x1] = True
        labels = np.where(inside, labels, UNLABELED).astype(np.uint8)
    version = _create_version(
        study, labels=labels, parent=None, author=admin, message="reference", recipe={}, ops=[], roi=roi
    )
    return review(version, admin, "approved", ""), labels


def with_phantom_params(study):
    study.metadata = {"phantom": {"params": study.subject.params}}
    study.save(update_fields=["metadata"])
    return study


@pytest.fixture
def cohort(phantom_study, users):
    """validation: 1 study (ROI); test: 2 studies (one with inter-sweep motion, one with edited labels).
    Returns {"model", "studies", "labels" (approved arrays), "preds"}."""
    model = make_model("model A")
    val = with_phantom_params(
        phantom_study(seed=61, shape=SHAPE, spacing_mm=SPACING, cohort="validation", motion=False)
    )
    moved = with_phantom_params(
        phantom_study(seed=62, shape=SHAPE, spacing_mm=SPACING, cohort="test", motion=MOVED)
    )
    still = with_phantom_params(
        phantom_study(seed=63, shape=SHAPE, spacing_mm=SPACING, cohort="test", motion=False)
    )
    labels, preds = {}, {}
    _, labels[val.pk] = approve(val, users["admin"], roi=ROI)
    _, labels[moved.pk] = approve(moved, users["admin"])
    edited = np.asarray(still.volume("truth").array()).copy()
    edited[10:12, 20:30, 20:30] = np.where(
        edited[10:12, 20:30, 20:30] == VESSEL, SOFT_TISSUE, edited[10:12, 20:30, 20:30]
    )
    _, labels[still.pk] = approve(still, users["admin"], labels=edited)
    for i, study in enumerate((val, moved, still)):
        preds[study.pk] = predict(study, model, flip_fraction=0.01 + 0.01 * i, seed=i)
    return {"model": model, "studies": [val, moved, still], "labels": labels, "preds": preds}


def run_inline(evaluation: Evaluation) -> Evaluation:
    """Run the evaluate task in this process with a worker's life cycle (tests without a worker)."""
    run = evaluate.run_here(evaluation.task_run)
    if not run.is_terminal:  # the session's worker took the enqueued message first: it runs it, wait for it
        run = wait_for_run(run.pk, timeout_s=900)
    assert run.state == "succeeded", run.error
    return Evaluation.objects.select_related("task_run", "model_version").get(pk=evaluation.pk)


def page_client(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def launch(client, **body):
    return client.post("/api/evaluations/", body, format="json")


def sklearn_numbers(reference, predicted, roi=None):
    select = reference != UNLABELED
    if roi is not None:
        inside = np.zeros(reference.shape, dtype=bool)
        z0, z1, y0, y1, x0, x1 = roi
        inside[z0:z1, y0:y1, x0:x1] = True
        select &= inside
    y_true = (reference[select] == VESSEL).astype(int)
    y_pred = (predicted[select] == VESSEL).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "accuracy": accuracy_score(y_true, y_pred),
        "sensitivity": recall_score(y_true, y_pred),
        "ppv": precision_score(y_true, y_pred),
        "dice": f1_score(y_true, y_pred),
        "class_confusion": confusion_matrix(
            reference[select], predicted[select], labels=[VESSEL, BONE, SOFT_TISSUE]
        ).tolist(),
    }


def check_against_sklearn(evaluation, cohort):
    results = {r.study_id: r for r in evaluation.results.all()}
    assert set(results) == {s.pk for s in cohort["studies"]}
    for study in cohort["studies"]:
        r = results[study.pk]
        roi = ROI if study.cohort == "validation" else None
        expected = sklearn_numbers(cohort["labels"][study.pk], cohort["preds"][study.pk], roi)
        for key in ("tp", "fp", "fn", "tn"):
            assert getattr(r, key) == expected[key], (study.pseudonym, key)
        for key in ("accuracy", "sensitivity", "ppv", "dice"):
            assert getattr(r, key) == pytest.approx(expected[key], abs=1e-12), (study.pseudonym, key)
        assert r.class_confusion == expected["class_confusion"]
        truth = np.asarray(study.volume("truth").array())
        expected_truth = sklearn_numbers(truth, cohort["preds"][study.pk], roi)
        assert r.truth["dice"] == pytest.approx(expected_truth["dice"], abs=1e-12)
    return results


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_end_to_end_with_a_worker_matches_sklearn_and_scipy(cohort, client_for, celery_worker):
    admin = client_for("admin")
    response = launch(admin, model_version=cohort["model"].pk, cohorts=["validation", "test"])
    assert response.status_code == 202, response.json()
    body = response.json()
    run = wait_for_run(body["task_run"]["id"], worker=celery_worker, timeout_s=120)
    assert run.state == "succeeded", run.error
    evaluation = Evaluation.objects.get(pk=body["id"])
    results = check_against_sklearn(evaluation, cohort)

    table = {row["dataset"]: row for row in evaluation.summary["table1"]}
    assert list(table) == ["Validation", "Testing"]
    test_ids = [s.pk for s in cohort["studies"] if s.cohort == "test"]
    for metric in ("sensitivity", "ppv", "dice", "accuracy"):
        values = [getattr(results[pk], metric) for pk in test_ids]
        low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        low, high = max(low, 0.0), min(high, 1.0)  # proportions: the CI is clipped to [0, 1]
        s = table["Testing"][metric]
        assert s["mean"] == pytest.approx(np.mean(values)) and s["n"] == 2
        assert s["ci_low"] == pytest.approx(low) and s["ci_high"] == pytest.approx(high)
        assert table["Testing"]["paper"][metric]["text"].endswith("]%")
        # one patient: no CI, said so, never NaN
        v = table["Validation"][metric]
        assert v["ci_low"] is None and v["ci_high"] is None and "[no CI]" in v["text"]
        assert "nan" not in v["text"].lower()
    assert any("one patient" in note for note in table["Validation"]["notes"])

    # residual bone: the stored per-study numbers are residual_bone() of the DSA and of the derived 3D-DLA
    for study in cohort["studies"]:
        r = results[study.pk]
        bone = cohort["labels"][study.pk] == BONE
        dsa = residual_bone(
            np.asarray(study.volume("subtracted").array()), bone, bright_hu=300.0, min_cluster_voxels=20
        )
        assert r.artifacts["dsa"]["present"] == dsa.present
        assert r.artifacts["dsa"]["n_bright_voxels"] == dsa.n_bright_voxels
        assert "derived" in r.artifacts["dla_source"]
        assert set(r.artifacts["dsa"]["by_region"]) == {"otic_capsule", "nasal_cavity", "skull_base", "vault"}
    arts = evaluation.summary["artifacts"]["Testing"]
    n_dsa = sum(1 for pk in test_ids if results[pk].artifacts["dsa"]["present"])
    assert arts["dsa"]["text"] == f"{n_dsa}/2 ({100 * n_dsa / 2:.1f}%)"
    assert arts["dla"]["N"] == 2

    detail = admin.get(f"/api/evaluations/{evaluation.pk}/").json()
    assert (
        detail["state"] == "succeeded"
        and detail["table1"]["Testing"]["dice"] == table["Testing"]["dice"]["text"]
    )
    page = admin.get(f"/api/evaluations/{evaluation.pk}/results/").json()
    assert page["count"] == 3


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.django_db
def test_missing_predictions_and_labels_are_listed_and_nothing_is_created(phantom_study, users, client_for):
    model = make_model()
    ok = phantom_study(seed=71, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    no_labels = phantom_study(seed=72, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    no_pred = phantom_study(seed=73, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    approve(ok, users["admin"])
    approve(no_pred, users["admin"])
    predict(ok, model, 0.01, 0)
    predict(no_labels, model, 0.01, 1)
    admin = client_for("admin")
    response = launch(admin, model_version=model.pk, cohorts=["test"])
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "2 studies cannot be evaluated" in detail
    assert f"{no_labels.pseudonym} (no approved label version)" in detail
    assert no_pred.pseudonym in detail and "no prediction" in detail and ok.pseudonym not in detail
    assert Evaluation.objects.count() == 0 and not TaskRun.objects.filter(kind="evaluate").exists()

    # allow_missing: the others are evaluated and the missing ones listed on the evaluation
    response = launch(admin, model_version=model.pk, cohorts=["test"], allow_missing=True)
    assert response.status_code == 202, response.json()
    evaluation = run_inline(Evaluation.objects.get(pk=response.json()["id"]))
    assert [r.pseudonym for r in evaluation.results.all()] == [ok.pseudonym]
    assert {m["pseudonym"] for m in evaluation.missing} == {no_labels.pseudonym, no_pred.pseudonym}
    html = admin.get(f"/api/evaluations/{evaluation.pk}/report-html/").content.decode()
    assert "Not evaluated (2)" in html and no_pred.pseudonym in html


@pytest.mark.django_db
def test_a_cohort_where_nothing_can_be_evaluated_is_refused_even_with_allow_missing(
    phantom_study, client_for
):
    model = make_model()
    study = phantom_study(seed=74, shape=SHAPE, spacing_mm=SPACING, cohort="validation")
    response = launch(client_for("admin"), model_version=model.pk, cohorts=["validation"], allow_missing=True)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "nothing to evaluate in the validation cohort" in detail and study.pseudonym in detail


@pytest.mark.django_db
def test_label_grid_differing_from_the_prediction_is_refused(phantom_study, users, client_for):
    model = make_model()
    study = phantom_study(seed=75, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    approve(study, users["admin"])
    predict(study, model, 0.01, 0, shape=(24, 48, 40))
    response = launch(client_for("admin"), model_version=model.pk, cohorts=["test"])
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "not on the prediction's grid" in detail and study.pseudonym in detail and "[24, 48, 40]" in detail
    assert Evaluation.objects.count() == 0


@pytest.mark.django_db
def test_empty_roi_is_refused(phantom_study, users, client_for):
    model = make_model()
    flat_box = phantom_study(seed=76, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    unlabeled = phantom_study(seed=77, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    version, _ = approve(flat_box, users["admin"])
    version.roi_box_zyx = [5, 5, 0, 48, 0, 48]  # zero slices thick
    version.save(update_fields=["roi_box_zyx"])
    approve(unlabeled, users["admin"], labels=np.zeros(SHAPE, dtype=np.uint8))
    for study in (flat_box, unlabeled):
        predict(study, model, 0.01, 0)
    response = launch(client_for("admin"), model_version=model.pk, cohorts=["test"])
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("empty region of interest")
    assert f"{flat_box.pseudonym} (ROI box [5, 5, 0, 48, 0, 48] is empty along z (5 >= 5))" in detail
    assert f"{unlabeled.pseudonym} (labels v1 have no labeled voxel)" in detail


@pytest.mark.django_db
def test_roi_without_labeled_voxels_fails_the_run_naming_the_study_and_writes_nothing(
    phantom_study, users, client_for
):
    model = make_model()
    study = phantom_study(seed=78, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    labels = np.asarray(study.volume("truth").array()).copy()
    labels[:4] = UNLABELED  # labels exist, but none inside the ROI box below
    version, _ = approve(study, users["admin"], labels=labels)
    version.roi_box_zyx = [0, 4, 0, 48, 0, 48]
    version.save(update_fields=["roi_box_zyx"])
    predict(study, model, 0.01, 0)
    response = launch(client_for("admin"), model_version=model.pk, cohorts=["test"])
    assert response.status_code == 202
    evaluation = Evaluation.objects.get(pk=response.json()["id"])
    with pytest.raises(
        services.EvaluationInputError,
        match=f"{study.pseudonym} .labels v1.: no labeled voxels inside the ROI",
    ):
        services.run_evaluation(TaskContext(evaluation.task_run), evaluation_id=evaluation.pk)
    evaluation.refresh_from_db()
    assert evaluation.summary == {} and not StudyResult.objects.exists()
    # and the downloads refuse an evaluation without results
    response = client_for("admin").get(f"/api/evaluations/{evaluation.pk}/summary-csv/")
    assert response.status_code == 400 and "has no results yet" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, message",
    [
        ({"cohorts": ["holdout"]}, "cohorts"),
        ({"cohorts": []}, "cohorts"),
        ({"cohorts": ["test", "test"]}, "twice"),
        ({"cohorts": ["train"]}, "the train cohort has no studies"),
        ({"model_version": 987654}, "model version 987654 does not exist"),
        ({"reference": "gold"}, "reference"),
        ({"ci_method": "wald"}, "ci_method"),
    ],
)
def test_bad_requests_are_400_with_a_message(body, message, client_for):
    model = make_model()
    response = launch(client_for("admin"), **{"model_version": model.pk, **body})
    assert response.status_code == 400
    assert message in response.json()["detail"]


@pytest.mark.django_db
def test_no_active_model_is_a_clear_400(client_for):
    response = launch(client_for("admin"), cohorts=["test"])
    assert response.status_code == 400 and "no model is active" in response.json()["detail"]


@pytest.mark.django_db
def test_non_admins_cannot_launch_or_read(cohort, users, client_for):
    for role in ("annotator", "reader"):
        assert launch(client_for(role), model_version=cohort["model"].pk, cohorts=["test"]).status_code == 403
    assert page_client(users["annotator"]).get("/evaluations/").status_code == 403


# ------------------------------------------------------------------------------------------------ comparison


@pytest.mark.django_db
def test_comparison_gives_paired_differences_with_t_intervals(cohort, users, client_for):
    admin = client_for("admin")
    model_b = make_model("model B")
    preds_b = {}
    for i, study in enumerate(cohort["studies"]):
        preds_b[study.pk] = predict(study, model_b, flip_fraction=0.05 + 0.02 * i, seed=10 + i)
    ids = []
    for model in (cohort["model"], model_b):
        response = launch(admin, model_version=model.pk, cohorts=["validation", "test"])
        assert response.status_code == 202, response.json()
        ids.append(run_inline(Evaluation.objects.get(pk=response.json()["id"])).pk)
    response = admin.get(f"/api/evaluations/compare/?a={ids[0]}&b={ids[1]}")
    assert response.status_code == 200, response.json()
    rows = {row["dataset"]: row for row in response.json()["rows"]}
    test_studies = [s for s in cohort["studies"] if s.cohort == "test"]
    diffs = []
    for study in test_studies:
        a = sklearn_numbers(cohort["labels"][study.pk], cohort["preds"][study.pk])["dice"]
        b = sklearn_numbers(cohort["labels"][study.pk], preds_b[study.pk])["dice"]
        diffs.append(a - b)
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=np.mean(diffs), scale=stats.sem(diffs))
    dice = rows["Testing"]["dice"]
    assert dice["mean"] == pytest.approx(np.mean(diffs)) and dice["mean"] > 0
    assert dice["ci_low"] == pytest.approx(low) and dice["ci_high"] == pytest.approx(high)
    assert rows["Validation"]["n"] == 1 and rows["Validation"]["dice"]["ci_low"] is None
    assert "[no CI]" in rows["Validation"]["dice"]["text"]
    assert not any(isinstance(v, float) and math.isnan(v) for v in dice.values())

    page = page_client(users["admin"]).get(f"/evaluations/compare/?a={ids[0]}&b={ids[1]}")
    assert page.status_code == 200 and dice["text"] in page.content.decode()
    assert admin.get(f"/api/evaluations/compare/?a={ids[0]}&b={ids[0]}").status_code == 400
    assert "is missing" in admin.get(f"/api/evaluations/compare/?a={ids[0]}").json()["detail"]
