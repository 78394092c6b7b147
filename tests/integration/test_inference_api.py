"""Inference through the API with a real Celery worker: a registered model over a study and over a cohort ->
class map, vessel probability and 3D-DLA volumes on the fill's grid (checked against an independent dense
prediction with the same weights), idempotent reruns, and clear refusals: no active model, study without a fill
volume, damaged or foreign weights, readers."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from django.conf import settings
from django.db import transaction

from annotations.models import Study, Volume
from dla.classes import VESSEL
from dla.model.base import DEFAULT_BONE_PRIOR_STRENGTH
from dla.model.dense import DLA_BACKGROUND_HU, intensity_candidates, predict_volume
from dla.model.network import build_model, save_weights
from dla_web.models import TaskRun
from dla_web.tasks import TaskContext
from inference import services
from inference.models import ModelVersion
from inference.tasks import infer_studies
from tests.conftest import wait_for_run

SHAPE = (24, 48, 48)


def register_tiny(client, seed=0, name="tiny") -> dict:
    torch.manual_seed(seed)
    path = Path(settings.VAR_DIR) / f"infer-w-{seed}.pt"
    save_weights(build_model("tiny"), path)
    handle = io.BytesIO(path.read_bytes())
    path.unlink()
    handle.name = "w.pt"
    response = client.post("/api/models/upload/", {"file": handle, "name": name}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.django_db(transaction=True)
def test_inference_stores_dla_volumes_and_reruns_are_idempotent(client_for, phantom_study, celery_worker):
    admin, annotator = client_for("admin"), client_for("annotator")
    model = register_tiny(admin)
    a = phantom_study(seed=31, shape=SHAPE, cohort="test")
    b = phantom_study(seed=32, shape=SHAPE, cohort="test")
    response = annotator.post("/api/inference/", {"study": a.pk}, format="json")
    assert response.status_code == 202, response.content
    started = response.json()
    assert started["kind"] == "infer" and started["target"] == {"type": "study", "id": str(a.pk)}
    run = wait_for_run(started["id"], timeout_s=60, worker=celery_worker)
    assert run.state == "succeeded", (run.error, run.log_tail)
    assert run.result["model_version_id"] == model["id"] and run.result["studies"][0]["voxels_per_s"] > 0

    fill = np.asarray(a.volume("fill").array())
    outputs = {v.role: v for v in Volume.objects.filter(study=a, model_version_id=model["id"])}
    assert set(outputs) == {"class_map", "vessel_prob", "dla"}
    for volume in outputs.values():
        assert tuple(volume.shape) == fill.shape and volume.source == f"infer-run-{run.pk}"
        assert volume.spacing_mm == a.volume("fill").spacing_mm
    class_map = np.asarray(outputs["class_map"].array())
    prob = np.asarray(outputs["vessel_prob"].array())
    dla = np.asarray(outputs["dla"].array())
    assert class_map.dtype == np.uint8 and prob.dtype == np.uint8 and dla.dtype == np.int16
    # independent computation with the same weights, one pass like the run (the default)
    assert run.params["mirror"] is False
    reference = predict_volume(
        services.load_model(ModelVersion.objects.get(pk=model["id"])),
        fill,
        candidate_mask=intensity_candidates(fill, 100),
        prob_dtype=np.float32,
    )
    assert (class_map == reference.class_map).mean() > 0.999
    assert np.abs(prob.astype(np.float32) / 255 - reference.vessel_prob).max() <= 1 / 255 + 1e-3
    assert np.array_equal(dla, np.where(class_map == VESSEL, fill, DLA_BACKGROUND_HU).astype(np.int16))

    # a redelivered run (same run id) stores nothing new
    before = Volume.objects.count()
    again = services.run_inference(TaskContext(run), **run.params)
    assert Volume.objects.count() == before and again["studies"][0]["reused"]

    # one run over a cohort, with the active model by default
    response = annotator.post("/api/inference/", {"cohort": "test"}, format="json")
    assert response.status_code == 202, response.content
    cohort_run = wait_for_run(response.json()["id"], timeout_s=60, worker=celery_worker)
    assert cohort_run.state == "succeeded", cohort_run.error
    assert [s["pseudonym"] for s in cohort_run.result["studies"]] == ["PH-031", "PH-032"]
    for study in (a, b):
        assert (
            Volume.objects.filter(study=study, role="dla", source=f"infer-run-{cohort_run.pk}").count() == 1
        )
    listed = annotator.get(f"/api/volumes/?study={b.pk}&role=dla").json()
    assert listed["count"] == 1


@pytest.mark.django_db(transaction=True)
def test_inference_of_foreign_weights_fails_with_clear_error(users, client_for, phantom_study, celery_worker):
    model = register_tiny(client_for("admin"))
    study = phantom_study(seed=33, shape=SHAPE)
    # the stored record claims another architecture than the file holds (e.g. an edited registry row)
    ModelVersion.objects.filter(pk=model["id"]).update(network_config=build_model("cpu").config.to_dict())
    with transaction.atomic():
        run = infer_studies.enqueue(
            user=users["admin"], params={"model_version_id": model["id"], "study_ids": [study.pk]}
        )
    run = wait_for_run(run.pk, timeout_s=60, worker=celery_worker)
    assert run.state == "failed" and "architecture" in run.error, run.error
    assert not Volume.objects.filter(model_version_id=model["id"]).exists()


@pytest.mark.django_db
def test_bad_inference_requests_are_refused(client_for, phantom_study):
    admin, annotator = client_for("admin"), client_for("annotator")
    study = phantom_study(seed=34, shape=SHAPE, cohort="test")

    def refused(body):
        response = annotator.post("/api/inference/", body, format="json")
        assert response.status_code == 400, response.content
        return response.json()["detail"]

    assert "no active model" in refused({"study": study.pk})
    model = register_tiny(admin)
    bare = Study.objects.create(pseudonym="NOFILL", patient_pseudonym="PT-NOFILL", cohort="test")
    assert "without a fill volume" in refused({"study": bare.pk}) and "NOFILL" in refused({"cohort": "test"})
    assert "exactly one of" in refused({"study": study.pk, "cohort": "test"})
    assert "exactly one of" in refused({})
    assert "has no studies" in refused({"cohort": "validation"})
    for field in ("prior_strength", "bone_prior_strength"):
        for bad in (1.5, -0.1, "strong"):
            response = annotator.post("/api/inference/", {"study": study.pk, field: bad}, format="json")
            assert response.status_code == 400 and field in response.json()["errors"], response.content
    for bad in ("sometimes", 3, [True]):
        response = annotator.post("/api/inference/", {"study": study.pk, "mirror": bad}, format="json")
        assert response.status_code == 400 and "mirror" in response.json()["errors"], response.content
    assert "does not exist" in refused({"study": study.pk, "model_version": 999999})
    version = ModelVersion.objects.get(pk=model["id"])
    path = Path(settings.STORAGE_ROOT) / version.weights_file
    intact = path.read_bytes()
    path.write_bytes(intact[:-10])  # damaged in the storage
    assert "does not match its sha256" in refused({"study": study.pk})
    assert not TaskRun.objects.exists()
    path.write_bytes(intact)
    started = annotator.post("/api/inference/", {"study": study.pk, "prior_strength": 0}, format="json")
    assert started.status_code == 202, started.content
    params = TaskRun.objects.get(pk=started.json()["id"]).params
    assert params["prior_strength"] == 0.0 and params["mirror"] is False  # one pass unless asked
    assert params["bone_prior_strength"] == DEFAULT_BONE_PRIOR_STRENGTH  # each pair has its own strength
    mirrored = annotator.post("/api/inference/", {"study": study.pk, "mirror": True}, format="json")
    assert mirrored.status_code == 202
    assert TaskRun.objects.get(pk=mirrored.json()["id"]).params["mirror"] is True
    assert client_for("reader").post("/api/inference/", {"study": study.pk}, format="json").status_code == 403
