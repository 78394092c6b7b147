"""Training runs and the model registry through the API, against PostgreSQL and a real Celery worker: a tiny
train -> registered ModelVersion run with live curves, cancel within seconds keeping a checkpoint, NaN loss as a
clear failure, resume from a checkpoint after an interrupted attempt, every bad cohort refused before anything is
queued, weights upload refusing garbage and foreign architectures (nothing stored), download, activation."""

import hashlib
import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from django.conf import settings

from annotations.labels import _create_version, review
from annotations.models import Study
from dla.classes import BONE
from dla.model.base import DEFAULT_BONE_PRIOR_STRENGTH, DEFAULT_PRIOR_STRENGTH, tempered_priors
from dla.model.network import NetworkConfig, build_model, config_fingerprint, preset_config, save_weights
from dla.model.train import TrainConfig, autocast_dtype
from dla_web.models import TaskRun
from dla_web.tasks import TaskCancelled, TaskContext
from inference import services
from inference.models import ModelVersion, TrainingRun
from inference.tasks import train_model
from tests.conftest import ARTIFACTS, WorkerProcess, wait_for_run

SHAPE = (24, 48, 48)
SPACING = (3.0, 3.0, 3.0)  # a coarse grid puts more of the phantom's vessels into 24x48x48 voxels
TINY = {
    "preset": "tiny",
    "max_iterations": 20,
    "val_every": 10,
    "val_samples_per_class": 100,
    "dense_slabs_per_batch": 4,
    "checkpoint_every": 5,
    "epoch_voxels": 200_000,
}


def approve(study, admin, labels=None):
    """An approved label version of ``study`` (default: the phantom truth), made through the labeling rules."""
    if labels is None:
        labels = np.asarray(study.volume("truth").array())
    version = _create_version(
        study, labels=labels, parent=None, author=admin, message="truth", recipe={}, ops=[], roi=None
    )
    return review(version, admin, "approved", "")


@pytest.fixture
def cohorts(phantom_study, users):
    """Two approved training studies, one approved validation study and one unlabelled test study."""
    made = {
        "train": [phantom_study(seed=s, shape=SHAPE, spacing_mm=SPACING, cohort="train") for s in (11, 12)],
        "validation": [phantom_study(seed=13, shape=SHAPE, spacing_mm=SPACING, cohort="validation")],
        "test": [phantom_study(seed=14, shape=SHAPE, spacing_mm=SPACING, cohort="test")],
    }
    for study in made["train"] + made["validation"]:
        approve(study, users["admin"])
    return made


@pytest.mark.django_db(transaction=True)
def test_train_end_to_end_registers_active_model_with_curves(client_for, cohorts, celery_worker):
    admin = client_for("admin")
    response = admin.post("/api/training-runs/", {**TINY, "name": "tiny e2e"}, format="json")
    assert response.status_code == 202, response.content
    started = response.json()
    assert started["run"]["kind"] == "train" and started["run"]["queue"] == "gpu"
    assert [s["pseudonym"] for s in started["train_studies"]] == ["PH-011", "PH-012"]
    run = wait_for_run(started["id"], timeout_s=80, worker=celery_worker)
    assert run.state == "succeeded", (run.error, run.log_tail)

    live = admin.get(f"/api/training-runs/{run.pk}/").json()
    iterations = [p[0] for p in live["train_curve"]]
    assert iterations == list(range(1, 21)), "one loss point per iteration"
    assert all(np.isfinite(p[1]) for p in live["train_curve"])
    assert [p["iteration"] for p in live["val_curve"]] == [10, 20]
    for name in ("vessel", "bone", "soft_tissue"):
        assert 0.0 <= live["val_curve"][-1][f"val_err_{name}"] <= 1.0
    assert live["iteration"] == 20 and live["model_version"] is not None

    version = ModelVersion.objects.get(pk=live["model_version"])
    assert version.training_run_id == run.pk and version.is_active, "the first model becomes active"
    assert version.name == "tiny e2e" and version.created_by.username == "admin"
    assert version.fingerprint == config_fingerprint(preset_config("tiny"))
    assert version.train_config["max_iterations"] == 20 and version.train_config["momentum"] == 0.9
    assert version.metrics["summary"]["iterations"] == 20
    assert 0.0 <= version.metrics["final"]["val_error"] <= 1.0
    assert not services.checkpoint_path(run.pk).exists(), "the checkpoint is removed once the model is stored"
    assert run.result["model_version_id"] == version.pk

    listed = admin.get("/api/models/").json()["results"]
    assert [m["id"] for m in listed] == [version.pk] and listed[0]["summary"]["iterations"] == 20
    download = admin.get(f"/api/models/{version.pk}/download/")
    assert download.status_code == 200
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == version.sha256 == download["X-Checksum-SHA256"]
    runs = admin.get("/api/training-runs/").json()["results"]
    assert runs[0]["id"] == run.pk and "train_curve" not in runs[0]


@pytest.mark.django_db(transaction=True)
def test_unet3d_trains_through_the_form_api_and_its_model_infers(client_for, cohorts, celery_worker):
    """architecture=unet3d through the real endpoint: a U-Net planned for the cohort's 3 mm spacing is trained,
    registered with its own fingerprint, and the inference endpoint runs it with the same outputs as the voxel
    net (an independent sliding-window prediction with the stored weights agrees)."""
    from dla.model.dense import dla_volume, intensity_candidates, predict_volume
    from dla.model.network import NetworkConfig

    admin = client_for("admin")
    body = {**TINY, "name": "unet", "architecture": "unet3d", "unet_patch_px": 16, "unet_base_filters": 8}
    bad = admin.post("/api/training-runs/", {**body, "mode": "patch"}, format="json")
    assert bad.status_code == 400 and "mode" in bad.json()["errors"]
    response = admin.post("/api/training-runs/", body, format="json")
    assert response.status_code == 202, response.content
    run = wait_for_run(response.json()["id"], timeout_s=120, worker=celery_worker)
    assert run.state == "succeeded", (run.error, run.log_tail)
    assert "3D U-Net planned for spacing (3, 3, 3) mm: patch 16x16x16" in run.log_tail
    live = admin.get(f"/api/training-runs/{run.pk}/").json()
    assert [p["iteration"] for p in live["val_curve"]] == [10, 20]
    version = ModelVersion.objects.get(pk=live["model_version"])
    config = NetworkConfig.from_dict(version.network_config)
    assert config.architecture == "unet3d" and config.unet_spacing_mm == SPACING
    assert version.fingerprint == config_fingerprint(config) and version.fingerprint.startswith("unet3d-")
    assert version.train_config["preset"] == "unet3d" and version.metrics["summary"]["iterations"] == 20

    test_study = cohorts["test"][0]
    started = admin.post(
        "/api/inference/", {"study": test_study.pk, "model_version": version.pk}, format="json"
    ).json()
    inferred = wait_for_run(started["id"], timeout_s=60, worker=celery_worker)
    assert inferred.state == "succeeded", (inferred.error, inferred.log_tail)
    assert inferred.result["studies"][0]["voxels_per_s"] > 0
    outputs = {v.role: np.asarray(v.array()) for v in test_study.volumes.filter(model_version_id=version.pk)}
    fill = np.asarray(test_study.volume("fill").array())
    priors = version.metrics.get("class_priors")
    reference = predict_volume(
        services.load_model(version),
        fill,
        candidate_mask=intensity_candidates(fill, 100),
        prob_dtype=np.float32,
        class_priors=tempered_priors(
            tuple(priors[k] for k in ("vessel", "bone", "soft_tissue")),
            DEFAULT_PRIOR_STRENGTH,
            DEFAULT_BONE_PRIOR_STRENGTH,
        )
        if priors
        else None,
    )
    assert (outputs["class_map"] == reference.class_map).mean() > 0.999
    assert np.array_equal(outputs["dla"], dla_volume(fill, outputs["class_map"]))


class DDPWorker(WorkerProcess):
    """A worker machine configured for two training processes per run (DDP on gloo here, NCCL on GPUs)."""

    def env(self) -> dict:
        return {**super().env(), "DLA_TRAIN_PROCESSES": "2"}


@pytest.fixture
def ddp_worker(celery_worker):
    """The session's worker is stopped while a DDP-configured worker serves the queues."""
    celery_worker.stop()
    worker = DDPWorker(ARTIFACTS / "celery-ddp-worker.log")
    worker.start()
    yield worker
    worker.stop()
    celery_worker.start()


@pytest.mark.django_db(transaction=True)
def test_training_task_launches_ddp_processes_and_cancels_them(client_for, cohorts, ddp_worker):
    admin = client_for("admin")
    started = admin.post("/api/training-runs/", {**TINY, "name": "ddp"}, format="json").json()
    run = wait_for_run(started["id"], timeout_s=120, worker=ddp_worker)
    assert run.state == "succeeded", (run.error, run.log_tail, ddp_worker.tail())
    assert "DDP over 2 processes (gloo)" in run.log_tail
    live = admin.get(f"/api/training-runs/{run.pk}/").json()
    assert [p[0] for p in live["train_curve"]] == list(range(1, 21)), "rank 0's curve reaches the page"
    assert [p["iteration"] for p in live["val_curve"]] == [10, 20]
    version = ModelVersion.objects.get(pk=live["model_version"])
    assert version.metrics["summary"]["processes"] == 2 and version.metrics["summary"]["iterations"] == 20
    assert not services.checkpoint_path(run.pk).exists()
    assert services.load_model(version).config == preset_config("tiny"), "the registered weights load"

    body = {**TINY, "max_iterations": 1_000_000, "val_every": 1000, "checkpoint_every": 100_000}
    started = admin.post("/api/training-runs/", body, format="json").json()
    deadline = time.monotonic() + 90
    while TrainingRun.objects.get(pk=started["id"]).iteration < 3:
        assert time.monotonic() < deadline, ddp_worker.tail()
        time.sleep(0.2)
    assert admin.post(f"/api/task-runs/{started['id']}/cancel/", {}, format="json").status_code == 202
    run = wait_for_run(started["id"], timeout_s=30, worker=ddp_worker)
    assert run.state == "cancelled", (run.error, run.log_tail)
    assert services.checkpoint_path(run.pk).exists(), "rank 0 checkpointed before all ranks stopped"
    assert ModelVersion.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_training_within_seconds_and_keeps_checkpoint(client_for, cohorts, celery_worker):
    admin = client_for("admin")
    body = {**TINY, "max_iterations": 1_000_000, "val_every": 1000, "checkpoint_every": 100_000}
    started = admin.post("/api/training-runs/", body, format="json").json()
    deadline = time.monotonic() + 60
    while TrainingRun.objects.get(pk=started["id"]).iteration < 3:
        assert time.monotonic() < deadline, celery_worker.tail()
        assert TaskRun.objects.get(pk=started["id"]).state in ("queued", "running")
        time.sleep(0.2)
    running = admin.get(f"/api/training-runs/{started['id']}/").json()
    assert "ETA" in running["run"]["message"] and running["run"]["progress"] > 0
    asked = time.monotonic()
    assert admin.post(f"/api/task-runs/{started['id']}/cancel/", {}, format="json").status_code == 202
    run = wait_for_run(started["id"], timeout_s=15, worker=celery_worker)
    stopped_s = time.monotonic() - asked
    assert run.state == "cancelled", (run.error, run.log_tail)
    assert stopped_s < 10, f"cancel took {stopped_s:.1f} s"
    assert services.checkpoint_path(run.pk).exists(), "cancel writes a checkpoint of the last iteration"
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_nan_loss_fails_with_clear_error_and_keeps_last_good_checkpoint(users, cohorts, celery_worker):
    from django.db import transaction

    params = {
        "preset": "tiny",
        "train_config": {
            "lr_values": [1e5],
            "lr_boundaries_epochs": [],
            "max_iterations": 50,
            "val_every": 10,
            "val_samples_per_class": 100,
            "dense_slabs_per_batch": 4,
        },
        "checkpoint_every": 1,
    }
    with transaction.atomic():
        run = train_model.enqueue(user=users["admin"], params=params)
    run = wait_for_run(run.pk, timeout_s=60, worker=celery_worker)
    assert run.state == "failed"
    assert run.error.startswith("loss is nan at iteration"), "the reason in words, no class name"
    assert "last good checkpoint is iteration" in run.error
    good = int(run.error.split("last good checkpoint is iteration ")[1].split()[0])
    assert good >= 1 and services.checkpoint_path(run.pk).exists()
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_interrupted_training_resumes_from_its_checkpoint(users, cohorts):
    params = {
        "preset": "tiny",
        "train_config": {
            "max_iterations": 12,
            "val_every": 4,
            "val_samples_per_class": 100,
            "dense_slabs_per_batch": 4,
            "epoch_voxels": 200_000,
        },
        "checkpoint_every": 3,
    }
    run = train_model.create_run(user=users["admin"], params=params)

    def stop_at_half(fraction, message):  # what Ctrl-C or a cancel check does at the first progress >= 0.5
        if fraction >= 0.5:
            raise TaskCancelled("stopped at half way")

    run = train_model.run_here(run, terminal=stop_at_half)
    assert run.state == "cancelled"
    assert services.checkpoint_path(run.pk).exists()
    stopped_at = TrainingRun.objects.get(pk=run.pk).iteration
    assert 6 <= stopped_at < 12
    TaskRun.objects.filter(pk=run.pk).update(state="queued", finished_at=None)  # as ``train --resume`` does
    run = train_model.run_here(run)
    assert run.state == "succeeded", run.error
    assert f"resuming from the checkpoint at iteration {stopped_at}" in run.log_tail
    curve = TrainingRun.objects.get(pk=run.pk).train_curve
    assert [p[0] for p in curve] == list(range(1, 13)), "no duplicated or missing iterations after resume"
    version = ModelVersion.objects.get(pk=run.result["model_version_id"])
    assert version.metrics["summary"]["iterations"] == 12
    # a redelivery after success registers nothing new
    assert services.run_training(TaskContext(run), **params)["model_version_id"] == version.pk
    assert ModelVersion.objects.count() == 1


@pytest.mark.django_db
def test_bad_training_requests_are_refused_before_anything_is_queued(client_for, phantom_study, users):
    admin = client_for("admin")

    def refused(body=None, status=400):
        response = admin.post("/api/training-runs/", {**TINY, **(body or {})}, format="json")
        assert response.status_code == status, response.content
        return response.json()["detail"]

    assert "has no studies" in refused()
    a = phantom_study(seed=21, shape=SHAPE, spacing_mm=SPACING, cohort="train")
    b = phantom_study(seed=22, shape=SHAPE, spacing_mm=SPACING, cohort="train")
    detail = refused()
    assert "no approved label versions" in detail and "PH-021" in detail and "PH-022" in detail
    truth = np.asarray(a.volume("truth").array())
    approve(a, users["admin"], np.where(truth == BONE, 0, truth).astype(np.uint8))
    assert "no voxels of class bone" in refused(), "a missing class is named"
    approve(b, users["admin"])
    v = phantom_study(seed=23, shape=SHAPE, spacing_mm=SPACING, cohort="validation")
    assert "validation cohort" in refused() and "PH-023" in refused()
    approve(v, users["admin"])
    t = phantom_study(seed=24, shape=SHAPE, spacing_mm=SPACING, cohort="test")
    Study.objects.filter(pk=t.pk).update(patient_pseudonym=b.patient_pseudonym)
    detail = refused()
    assert f"patient {b.patient_pseudonym}: study PH-024 in test" in detail
    Study.objects.filter(pk=t.pk).update(patient_pseudonym="PT-other")
    assert "momentum" in refused({"momentum": 1.5})
    assert "lr_values" in refused({"lr_values": [0.0]})
    assert "lr_boundaries_epochs" in refused({"lr_values": [1e-3], "lr_boundaries_epochs": [1.0]})
    assert "lr_boundaries_epochs" in refused({"lr_boundaries_epochs": [1.5, 1.0]})
    assert "max_iterations" in refused({"max_iterations": 0})
    assert "validation_cohort" in refused({"validation_cohort": "train"})
    assert "preset" in refused({"preset": "huge"})
    assert "augment_noise_hu" in refused({"augment_noise_hu": -1})
    assert "augment_blur_sigma_voxels" in refused({"augment_blur_sigma_voxels": 5})
    assert "augment_probability" in refused({"augment_probability": 1.5})
    assert "augment_hu_scale_low" in refused({"augment_hu_scale_low": 0.1})
    detail = refused({"augment_hu_scale_low": 1.2, "augment_hu_scale_high": 0.8})
    assert "augment_hu_scale_high" in detail and "must not end below its start" in detail
    assert not TaskRun.objects.exists() and not TrainingRun.objects.exists()
    assert client_for("annotator").post("/api/training-runs/", TINY, format="json").status_code == 403
    # the valid request is accepted (202) once everything is in place (not run: no worker here)
    assert admin.post("/api/training-runs/", TINY, format="json").status_code == 202


def weights_bytes(preset: str, seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    path = Path(settings.VAR_DIR) / f"w-{preset}-{seed}.pt"
    save_weights(build_model(preset), path)
    data = path.read_bytes()
    path.unlink()
    return data


def upload(client, data: bytes, **fields):
    handle = io.BytesIO(data)
    handle.name = "weights.pt"
    return client.post("/api/models/upload/", {"file": handle, **fields}, format="multipart")


def stored_model_files() -> list:
    root = Path(settings.STORAGE_ROOT) / "models"
    return sorted(root.iterdir()) if root.exists() else []


@pytest.mark.django_db
def test_weights_upload_refuses_bad_files_and_registry_rules(client_for):
    admin, annotator, reader = client_for("admin"), client_for("annotator"), client_for("reader")
    files_before = stored_model_files()
    buffer = io.BytesIO()
    torch.save({"hello": torch.zeros(3)}, buffer)
    for bad, message in (
        (b"not a weights file at all", "not a readable DLANet weights file"),
        (buffer.getvalue(), "not a DLANet weights file"),
    ):
        response = upload(admin, bad)
        assert response.status_code == 400 and message in response.json()["detail"], response.content
    tiny = weights_bytes("tiny")
    response = upload(admin, tiny, preset="cpu")
    assert response.status_code == 400 and "architecture" in response.json()["detail"]
    assert not ModelVersion.objects.exists() and stored_model_files() == files_before, (
        "a refused upload stores nothing"
    )
    assert upload(annotator, tiny).status_code == 403

    first = upload(admin, tiny, name="imported tiny", preset="tiny")
    assert first.status_code == 201, first.content
    first = first.json()
    assert first["sha256"] == hashlib.sha256(tiny).hexdigest() and first["is_active"]
    assert first["source"] == "uploaded" and first["name"] == "imported tiny"
    second = upload(admin, weights_bytes("tiny", seed=1), name="second").json()
    assert not second["is_active"], "the first model stays active until another is activated"
    assert admin.post(f"/api/models/{second['id']}/activate/").json()["is_active"]
    assert list(ModelVersion.objects.filter(is_active=True).values_list("pk", flat=True)) == [second["id"]]
    assert annotator.post(f"/api/models/{first['id']}/activate/").status_code == 403

    assert len(annotator.get("/api/models/").json()["results"]) == 2
    assert annotator.get("/api/models/?active=1").json()["results"][0]["id"] == second["id"]
    assert annotator.get(f"/api/models/{first['id']}/download/").status_code == 403
    assert reader.get("/api/models/").status_code == 403
    renamed = admin.patch(f"/api/models/{first['id']}/", {"name": "renamed", "sha256": "x"}, format="json")
    assert renamed.json()["name"] == "renamed" and renamed.json()["sha256"] == first["sha256"]
    body = b"".join(admin.get(f"/api/models/{first['id']}/download/").streaming_content)
    assert body == tiny


@pytest.mark.django_db
def test_train_and_infer_management_commands(cohorts, users):
    from django.core.management import CommandError, call_command

    out, err = io.StringIO(), io.StringIO()
    call_command(
        "train",
        *("--preset", "tiny", "--max-iterations", "8", "--val-every", "4", "--val-samples-per-class", "100"),
        *("--slabs-per-batch", "4", "--user", "admin", "--name", "from the terminal"),
        stdout=out,
        stderr=err,
    )
    version = ModelVersion.objects.get(name="from the terminal")
    assert f"model #{version.pk} from the terminal: 8 iterations" in out.getvalue()
    assert "[####" in err.getvalue() and "100.0%" in err.getvalue(), "a terminal progress bar was drawn"
    run = version.training_run
    assert run.state == "succeeded" and run.created_by.username == "admin" and run.kind == "train"
    assert version.is_active and TrainingRun.objects.get(pk=run.pk).iteration == 8
    # mixed precision where this CPU has native bf16, said in the log and the model's training summary
    bf16 = autocast_dtype("cpu") is not None
    assert version.metrics["summary"]["precision"] == ("bfloat16" if bf16 else "float32")
    assert ("mixed precision: the forward pass in bfloat16" if bf16 else "float32 training (this device") in (
        run.log_tail
    )

    out = io.StringIO()
    call_command("infer", "--cohort", "test", stdout=out, stderr=io.StringIO())
    assert "PH-014: volumes" in out.getvalue()
    test_study = cohorts["test"][0]
    assert test_study.volume("dla").model_version_id == version.pk
    run = TaskRun.objects.filter(kind="infer").latest("pk")
    assert run.params["mirror"] is False and "mirrored" not in run.log_tail  # one pass unless asked
    call_command("infer", "--cohort", "test", "--mirror", stdout=io.StringIO(), stderr=io.StringIO())
    run = TaskRun.objects.filter(kind="infer").latest("pk")
    assert run.state == "succeeded" and run.params["mirror"] is True
    assert "mirrored test-time augmentation: each volume" in run.log_tail
    with pytest.raises(CommandError, match="momentum"):
        call_command("train", "--momentum", "2", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="two numbers"):
        call_command("train", "--augment-hu-scale", "0.8", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="augment_hu_scale_high: the HU scale range must not end below"):
        call_command("train", "--augment-hu-scale", "1.2,0.8", stdout=io.StringIO(), stderr=io.StringIO())

    # the architecture and the augmentation are the command's too: a 3D U-Net trained with augmentation
    out = io.StringIO()
    call_command(
        "train",
        *("--architecture", "unet3d", "--unet-patch-px", "16", "--unet-base-filters", "8"),
        *("--max-iterations", "4", "--val-every", "2", "--val-samples-per-class", "100"),
        *("--slabs-per-batch", "2", "--name", "unet from the terminal"),
        *("--augment-noise-hu", "30", "--augment-blur-sigma-voxels", "0.5", "--augment-hu-scale", "0.9,1.1"),
        stdout=out,
        stderr=io.StringIO(),
    )
    unet = ModelVersion.objects.get(name="unet from the terminal")
    assert f"model #{unet.pk} unet from the terminal: 4 iterations" in out.getvalue()
    assert NetworkConfig.from_dict(unet.network_config).architecture == "unet3d"
    cfg = TrainConfig.from_dict(unet.train_config)
    assert cfg.augment_noise_hu == 30 and cfg.augment_blur_sigma_voxels == 0.5
    assert cfg.augment_hu_scale == (0.9, 1.1) and cfg.augments
    # the mirrored pass is the voxel classifier's: a U-Net runs once and the run's log says so
    call_command(
        "infer",
        "--cohort",
        "test",
        "--model",
        str(unet.pk),
        "--mirror",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    run = TaskRun.objects.filter(kind="infer").latest("pk")
    assert run.state == "succeeded" and "this 3D U-Net predicts without it" in run.log_tail
    with pytest.raises(CommandError, match="unknown studies: NOPE"):
        call_command("infer", "--study", "NOPE", stdout=io.StringIO(), stderr=io.StringIO())
    n_runs = TaskRun.objects.filter(kind="infer").count()
    with pytest.raises(CommandError, match="the prior strength must be a number from 0 to 1, got 1.5"):
        call_command(
            "infer", "--cohort", "test", "--prior-strength", "1.5", stdout=io.StringIO(), stderr=io.StringIO()
        )
    with pytest.raises(
        CommandError, match="--bone-prior-strength: the prior strength must be a number from 0 to 1"
    ):
        call_command(
            "infer",
            "--cohort",
            "test",
            "--bone-prior-strength",
            "-0.2",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert TaskRun.objects.filter(kind="infer").count() == n_runs  # refused before anything was queued
    with pytest.raises(
        CommandError,
        match="no approved label versions in the training cohort .test.; studies lacking them: PH-014",
    ):
        call_command("train", "--train-cohort", "test", "--validation-cohort", "none", stdout=io.StringIO())
