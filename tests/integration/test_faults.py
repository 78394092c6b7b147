"""Faults with real parts: a Celery worker killed during an ingest, and the database connection of a label
commit killed by PostgreSQL mid-transaction. After recovery nothing is lost or duplicated and every task run
ends in a true state. Each fault is injected on an event (a run's state, a checkpoint the training writes, the
first stored result, a backend waiting for a lock), never after a time that assumes a fast machine; deadlines
are hang guards only."""

import re
import threading
from pathlib import Path

import numpy as np
import psycopg
import pytest
from django.db import connection

from annotations.models import Draft, LabelVersion, Study
from dla_web.models import TaskRun
from tests.conftest import HANG_GUARD_S, database_url_for_current_test_db, wait_for_run, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
BRUSH = {"op": "brush", "center_zyx": [10, 20, 20], "radius_mm": 6, "label": 1, "shape": "sphere"}


def test_worker_killed_during_ingest_finishes_once(celery_worker, client_for, dicom_series):
    volume = np.random.default_rng(3).integers(-1000, 2000, size=(160, 128, 128), dtype=np.int16)
    _, _, paths = dicom_series(
        "s",
        volume,
        spacing_mm=(1.0, 1.0, 1.0),
        affine_lps=np.eye(4),
        series_description="FILL",
        series_number=1,
        patient_id="F1",
        patient_name="Fault^Test",
    )
    handles = [open(p, "rb") for p in paths]
    try:
        response = client_for("admin").post(
            "/api/studies/import/", {"files": handles, "pseudonym": "FAULT-1"}, format="multipart"
        )
    finally:
        for handle in handles:
            handle.close()
    run_id = response.json()["id"]
    wait_for_run(run_id, states=("running", "succeeded"), worker=celery_worker)
    celery_worker.kill()
    killed_state = TaskRun.objects.get(pk=run_id).state
    celery_worker.start()
    run = wait_for_run(run_id, worker=celery_worker)
    assert run.state == "succeeded", run.error
    assert Study.objects.filter(pseudonym="FAULT-1").count() == 1
    study = Study.objects.get(pseudonym="FAULT-1")
    assert study.volumes.count() == 1
    np.testing.assert_array_equal(study.volume("fill").array(), volume)
    if killed_state == "running":
        assert run.attempts == 2


def test_database_connection_killed_during_commit_loses_nothing(client_for, phantom_study):
    study = phantom_study(seed=41, shape=(24, 40, 40))
    client = client_for("annotator")
    draft = client.post("/api/drafts/", {"study": study.pk}, format="json").json()
    client.post(f"/api/drafts/{draft['id']}/ops/", {"op": BRUSH}, format="json")
    blocker = psycopg.connect(database_url_for_current_test_db(), autocommit=False)
    blocker.execute("SELECT id FROM annotations_study WHERE id = %s FOR UPDATE", (study.pk,))
    result = {}

    def commit():
        try:
            response = client.post(
                f"/api/drafts/{draft['id']}/commit/", {"message": "during outage"}, format="json"
            )
            result["status"], result["body"] = response.status_code, response.json()
        finally:
            connection.close()

    thread = threading.Thread(target=commit)
    thread.start()
    with psycopg.connect(database_url_for_current_test_db(), autocommit=True) as monitor:

        def kill_the_waiting_commit():  # the commit's backend waits for the row lock: kill it
            assert thread.is_alive(), f"the commit did not wait for the locked row: {result}"
            return monitor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()[0]

        killed = wait_until(
            kill_the_waiting_commit, "the commit's backend waiting for the row lock", interval_s=0.05
        )
    blocker.rollback()
    blocker.close()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "the commit request never answered"
    assert killed == 1, result
    assert result["status"] == 503 and "nothing was saved" in result["body"]["detail"]
    assert LabelVersion.objects.filter(study=study).count() == 0
    assert len(Draft.objects.get(pk=draft["id"]).ops) == 1, "the draft's edits survive the outage"
    retry = client.post(f"/api/drafts/{draft['id']}/commit/", {"message": "after outage"}, format="json")
    assert retry.status_code == 201 and retry.json()["number"] == 1


def test_worker_killed_during_training_resumes_and_registers_one_model(
    celery_worker, client_for, users, phantom_study
):
    from dla.model.train import load_checkpoint
    from inference.models import ModelVersion, TrainingRun
    from tests.integration.test_training_api import SPACING, TINY, approve

    for seed, cohort in ((61, "train"), (62, "train"), (63, "validation")):
        approve(
            phantom_study(seed=seed, shape=(24, 48, 48), spacing_mm=SPACING, cohort=cohort), users["admin"]
        )
    body = {
        **TINY,
        "max_iterations": 400,
        "checkpoint_every": 20,
        "early_stopping_patience": 10_000,
        "name": "killed",
    }
    started = client_for("admin").post("/api/training-runs/", body, format="json")
    assert started.status_code == 202, started.content
    run_id = started.json()["id"]

    def checkpointed_iteration() -> int:  # the iteration of the checkpoint the task wrote so far, 0 if none
        record = TrainingRun.objects.filter(pk=run_id).first()
        if record is None or not record.checkpoint or not Path(record.checkpoint).exists():
            return 0
        return int(load_checkpoint(record.checkpoint)["state"]["iteration"])  # written atomically (a rename)

    wait_until(lambda: checkpointed_iteration() >= 40, "a checkpoint at iteration 40", worker=celery_worker)
    celery_worker.kill()  # crash the worker once a checkpoint past iteration 40 exists
    iteration_at_kill = checkpointed_iteration()
    assert TaskRun.objects.get(pk=run_id).state == "running", "the run ended before the crash"
    celery_worker.start()
    run = wait_for_run(run_id, worker=celery_worker)
    assert run.state == "succeeded", run.error
    assert run.attempts == 2 and "previous worker stopped" in run.log_tail
    assert iteration_at_kill >= 40
    resumed = re.search(r"resuming from the checkpoint at iteration (\d+)", run.log_tail)
    assert resumed and int(resumed.group(1)) >= iteration_at_kill, "the second attempt did not resume"
    assert ModelVersion.objects.filter(training_run_id=run_id).count() == 1
    curve = TrainingRun.objects.get(pk=run_id).train_curve
    iterations = [point[0] if isinstance(point, list | tuple) else point.get("iteration") for point in curve]
    assert len(iterations) == len(set(iterations)), "resumed run duplicated curve points"


def test_broker_unreachable_marks_the_run_failed_with_a_message(users):
    """A web process whose broker is down (here: a subprocess pointed at the discard port) enqueues work: the
    run ends failed with a message instead of staying queued forever."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    script = (
        "import django; django.setup();"
        "from django.db import transaction; from dla_web.tasks import selftest;"
        "from django.contrib.auth import get_user_model;"
        "user = get_user_model().objects.get(username='admin');"
        "run = transaction.atomic()(lambda: selftest.enqueue(user=user, params={'steps': 1}))();"
        "print('RUN', run.pk)"
    )
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="dla_web.test_settings",
        DATABASE_URL=database_url_for_current_test_db(),
        CELERY_BROKER_URL="redis://127.0.0.1:9/0",
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    run = TaskRun.objects.get(pk=int(out.stdout.split("RUN")[1].split()[0]))
    assert run.state == "failed" and "could not reach the task broker" in run.error
    assert run.message == "not started: task broker unreachable"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs (a disk that fills up), unmounted afterwards."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_during_export_is_a_507_and_leaves_nothing(client_for, phantom_study, tiny_disk, settings):
    study = phantom_study(
        seed=71, shape=(32, 96, 96)
    )  # a DICOM export of ~0.6 MB of int16 + headers x2 (zip)
    fill = study.volume("fill")
    settings.VAR_DIR = tiny_disk
    (tiny_disk / "ballast").write_bytes(b"\0" * (1536 * 1024))  # leave ~0.5 MiB free
    client = client_for("annotator")
    response = client.get(f"/api/volumes/{fill.pk}/download/?as=dicom")
    assert response.status_code == 507
    assert "ran out of disk space" in response.json()["detail"]
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["ballast"], "a half-written export was left behind"
    (tiny_disk / "ballast").unlink()
    again = client.get(f"/api/volumes/{fill.pk}/download/?as=dicom")
    assert again.status_code == 200 and len(b"".join(again.streaming_content)) > 0
    np.testing.assert_array_equal(fill.array(), study.subject.fill_hu)  # the stored volume is intact


def test_worker_killed_during_cohort_inference_stores_each_study_once(
    celery_worker, client_for, phantom_study
):
    from annotations.models import Volume
    from tests.integration.test_inference_api import register_tiny

    model = register_tiny(client_for("admin"))
    studies = [phantom_study(seed=80 + i, shape=(48, 96, 96), cohort="test") for i in range(8)]
    started = client_for("annotator").post("/api/inference/", {"cohort": "test"}, format="json")
    assert started.status_code == 202, started.content
    run_id = started.json()["id"]
    wait_until(
        lambda: Volume.objects.filter(model_version_id=model["id"], role="dla").exists(),
        "the first study's stored results",
        worker=celery_worker,
        interval_s=0.05,
    )
    celery_worker.kill()  # crash the worker once the first study's volumes are stored
    assert TaskRun.objects.get(pk=run_id).state == "running", "the run ended before the crash"
    celery_worker.start()
    run = wait_for_run(run_id, worker=celery_worker)
    assert run.state == "succeeded", run.error
    assert run.attempts == 2, "the worker was not killed mid-run"
    for study in studies:
        roles = sorted(
            Volume.objects.filter(study=study, model_version_id=model["id"]).values_list("role", flat=True)
        )
        assert roles == ["class_map", "dla", "vessel_prob"], (study.pseudonym, roles)
