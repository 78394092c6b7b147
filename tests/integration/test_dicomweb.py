"""DICOMweb against a real Orthanc (tests/integration/pacs_support.py): phantom series go into the PACS, are
browsed (QIDO-RS) and retrieved (WADO-RS) through the app into the normal ingest, inferred, and the DLA series and
an approved label version's SEG are sent back (STOW-RS) next to the originals; the PACS is then queried again,
independently of the app's code, for valid references. Bad input: server down, wrong credentials, a study deleted
between query and retrieve, a series with a missing instance, a non-CT series, a retrieve over the size limit, a
STOW refused (HTTP 403) and a STOW silently dropped by the server: a clear message, the task failed with the
reason, nothing half-stored on our side, and nothing stored on the PACS that was refused."""

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.core.management import CommandError, call_command

from annotations.models import LabelVersion, PseudonymMap, Study, Volume
from annotations.phantom_import import write_subject
from dla.io.dicom import new_uid, write_dicom_series
from dla.phantoms import make_subject
from dla_web.models import AuditEvent, TaskRun
from tests.conftest import wait_for_run
from tests.integration.pacs_support import REFUSED_PATIENT_ID, orthanc_fixture, pacs_fixture  # noqa: F401

SHAPE = (12, 24, 24)
RUNS = ("fill", "mask", "subtracted")


def put_phantom(pacs, tmp_path: Path, *, patient_id="MRN-PACS-1", seed=3):
    """Write a phantom subject's fill/mask/subtracted series and upload them to the PACS."""
    subject = make_subject(SHAPE, seed=seed)
    folder = write_subject(subject, tmp_path / "phantom", subject_id=patient_id, nifti=False)
    paths = sorted((folder / "dicom").rglob("*.dcm"))
    pacs.upload(paths)
    by_role = {}
    for role in RUNS:
        ds = pydicom.dcmread(next((folder / "dicom" / role).glob("*.dcm")), stop_before_pixels=True)
        by_role[role] = ds.SeriesInstanceUID
    return subject, ds.StudyInstanceUID, by_role, folder


def identifiers(folder: Path, patient_id: str) -> set[str]:
    values = {patient_id, f"PHANTOM^{patient_id}"}
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID}
    return values


def dciodvfy_problems(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith(("Error", "Warning"))]


def retrieve_here(server, study_uid, series_uids=(), *extra) -> Study:
    """``manage.py dicomweb retrieve`` (the ingest task in this process)."""
    out = io.StringIO()
    call_command(
        "dicomweb", "retrieve", server, study_uid, *series_uids, *extra, stdout=out, stderr=io.StringIO()
    )
    return Study.objects.get(pseudonym=out.getvalue().split(":")[0])


def approve(study, labels) -> LabelVersion:
    from annotations.labels import _create_version

    version = _create_version(
        study, labels=labels, parent=None, author=None, message="vessels", recipe={}, ops=[], roi=None
    )
    LabelVersion.objects.filter(pk=version.pk).update(review_status=LabelVersion.Review.APPROVED)
    return LabelVersion.objects.get(pk=version.pk)


def with_dla(study) -> Volume:
    fill = study.volume("fill")
    hu = np.asarray(fill.array())
    return Volume.create_from_array(
        study=study, role="dla", array=np.where(hu > 300, hu, 0).astype(np.int16),
        spacing_mm=fill.spacing_mm, affine_lps=fill.affine_lps,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Done when: PACS -> browse -> retrieve -> infer -> send back -> the PACS holds them with valid references
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_browse_retrieve_infer_and_send_back_through_the_app(pacs, celery_worker, client_for, tmp_path):
    from tests.integration.test_inference_api import register_tiny

    subject, study_uid, series_uids, folder = put_phantom(pacs, tmp_path)
    log_start = celery_worker.log_path.stat().st_size if celery_worker.log_path.exists() else 0
    admin = client_for("admin")
    assert client_for("annotator").get("/api/dicomweb/").status_code == 403
    servers = {s["name"]: s for s in admin.get("/api/dicomweb/").json()}
    assert servers["orthanc"]["auth"] == "basic" and "password" not in servers["orthanc"]

    # browse (QIDO-RS)
    found = admin.post("/api/dicomweb/orthanc/studies/", {"patient_id": "MRN-PACS-1"}, format="json")
    assert found.status_code == 200, found.content
    [study_row] = found.json()
    assert study_row["study_uid"] == study_uid and study_row["patient_name"] == "PHANTOM^MRN-PACS-1"
    assert study_row["series_count"] == 3 and study_row["instance_count"] == 3 * SHAPE[0]
    assert study_row["modalities"] == ["CT"] and study_row["imported_as"] is None
    listed = admin.post("/api/dicomweb/orthanc/series/", {"study_uid": study_uid}, format="json").json()
    assert [(s["number"], s["modality"], s["instance_count"]) for s in listed] == [
        (1, "CT", SHAPE[0]), (2, "CT", SHAPE[0]), (3, "CT", SHAPE[0])]  # fmt: skip
    assert {s["series_uid"] for s in listed} == set(series_uids.values())

    # retrieve (WADO-RS) into the normal ingest task, on the worker
    started = admin.post(
        "/api/dicomweb/orthanc/retrieve/",
        {"study_uid": study_uid, "series_uids": list(series_uids.values()), "pseudonym": "PACS-1"},
        format="json",
    )
    assert started.status_code == 202, started.content
    assert study_uid not in repr(started.json()) and "upload_id" in started.json()["params"]
    run = wait_for_run(started.json()["id"], worker=celery_worker, timeout_s=90)
    assert run.state == "succeeded", (run.error, run.log_tail)
    study = Study.objects.get(pseudonym="PACS-1")
    for role in RUNS:
        np.testing.assert_array_equal(study.volume(role).array(), getattr(subject, f"{role}_hu"))
    assert PseudonymMap.objects.get(study=study).original_study_uid == study_uid  # admin-only identity
    rows = repr(list(Study.objects.values())) + repr(list(Volume.objects.values()))
    rows += repr(list(TaskRun.objects.values("params", "message", "error", "result", "log_tail")))
    assert not [v for v in identifiers(folder, "MRN-PACS-1") if v in rows]
    again = admin.post("/api/dicomweb/orthanc/studies/", {"patient_id": "MRN-PACS-1"}, format="json").json()
    assert again[0]["imported_as"] == "PACS-1"

    # infer (the real inference task with a tiny model) and approve a label version
    model = register_tiny(admin)
    inferred = admin.post("/api/inference/", {"study": study.pk}, format="json")
    assert inferred.status_code == 202, inferred.content
    run = wait_for_run(inferred.json()["id"], worker=celery_worker, timeout_s=120)
    assert run.state == "succeeded", (run.error, run.log_tail)
    dla = Volume.objects.get(study=study, role="dla", model_version_id=model["id"])
    version = approve(study, (np.asarray(study.volume("fill").array()) > 300).astype(np.uint8))

    # send back (STOW-RS), then query the PACS again with an independent client
    sent = admin.post(
        "/api/dicomweb/orthanc/send/", {"study": study.pk, "label_version": version.pk}, format="json"
    )
    assert sent.status_code == 202, sent.content
    run = wait_for_run(sent.json()["id"], worker=celery_worker, timeout_s=90)
    assert run.state == "succeeded", (run.error, run.log_tail)
    assert run.result["instances"] == run.result["verified"] == SHAPE[0] + 1
    client = pacs.client()
    on_pacs = {
        s["0008103E"]["Value"][0]: s["0020000E"]["Value"][0] for s in client.search_for_series(study_uid)
    }
    assert len(on_pacs) == 5, on_pacs
    fill_uid = series_uids["fill"]
    fill = sorted(client.retrieve_series(study_uid, fill_uid), key=lambda d: float(d.ImagePositionPatient[2]))
    dla_uid = on_pacs["3D-DLA (DLA Workbench)"]
    dla_slices = sorted(
        client.retrieve_series(study_uid, dla_uid), key=lambda d: float(d.ImagePositionPatient[2])
    )
    assert len(dla_slices) == SHAPE[0]
    for original, derived in zip(fill, dla_slices, strict=True):
        assert derived.PatientID == "MRN-PACS-1" and derived.StudyInstanceUID == study_uid
        assert derived.FrameOfReferenceUID == original.FrameOfReferenceUID
        assert derived.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
        assert derived.ReferencedSeriesSequence[0].SeriesInstanceUID == fill_uid
        np.testing.assert_allclose(
            [float(v) for v in derived.ImagePositionPatient], [float(v) for v in original.ImagePositionPatient],
            atol=1e-3,
        )  # fmt: skip
    np.testing.assert_array_equal(np.stack([d.pixel_array for d in dla_slices]), np.asarray(dla.array()))
    [seg_uid] = [uid for name, uid in on_pacs.items() if name.startswith("DLA labels v1")]
    [seg] = client.retrieve_series(study_uid, seg_uid)
    assert seg.Modality == "SEG" and seg.PatientID == "MRN-PACS-1"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == fill_uid
    assert {
        i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    } <= {d.SOPInstanceUID for d in fill}
    for name, ds in (("dla.dcm", dla_slices[0]), ("seg.dcm", seg)):
        ds.save_as(tmp_path / name)
        assert dciodvfy_problems(tmp_path / name) == [], name
    count = pacs.instance_count()
    rerun = wait_for_run(
        admin.post(
            "/api/dicomweb/orthanc/send/", {"study": study.pk, "label_version": version.pk}, format="json"
        ).json()["id"],
        worker=celery_worker,
        timeout_s=90,
    )
    assert rerun.state == "succeeded" and pacs.instance_count() == count  # the same UIDs: nothing duplicated

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"dicomweb.search", "dicomweb.retrieve", "data.import", "dicomweb.send"} <= actions
    audit = repr(list(AuditEvent.objects.values()))
    assert not [v for v in identifiers(folder, "MRN-PACS-1") if v in audit]
    worker_log = celery_worker.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "store instances" in worker_log  # dicomweb-client's own log lines are there, scrubbed
    assert not [v for v in identifiers(folder, "MRN-PACS-1") if v in worker_log]


# ---------------------------------------------------------------------------------------------------------
# bad input against the real server
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "server, status, message",
    [
        ("orthanc-down", 502, "DICOMweb server orthanc-down (127.0.0.1:"),
        ("orthanc-wrongpw", 502, "refused our credentials (HTTP 401)"),
        ("nonesuch", 404, "no DICOMweb server named 'nonesuch'"),
    ],
)
def test_server_down_or_wrong_credentials_are_clear_errors(pacs, client_for, server, status, message):
    response = client_for("admin").post(f"/api/dicomweb/{server}/studies/", {}, format="json")
    assert response.status_code == status and message in response.json()["detail"], response.content


@pytest.mark.django_db
def test_qido_wildcards_match_on_the_server(pacs, client_for, tmp_path):
    """dicomweb-client percent-encodes * and ?, which Orthanc then matched literally (a patient filter "DOE*"
    found nothing): the wildcards reach the server unencoded."""
    put_phantom(pacs, tmp_path, patient_id="MRN-WILD-1")
    admin = client_for("admin")

    def patients(**filters):
        found = admin.post("/api/dicomweb/orthanc/studies/", filters, format="json")
        assert found.status_code == 200, found.content
        return [s["patient_id"] for s in found.json()]

    assert patients(patient_id="MRN-WILD-*") == ["MRN-WILD-1"]
    assert patients(patient_id="MRN-WILD-?") == ["MRN-WILD-1"]
    assert patients(patient_name="PHANTOM*") == ["MRN-WILD-1"]
    assert patients(patient_id="MRN-WILD-*2") == []  # still a filter, not "everything"


@pytest.mark.django_db
def test_retrieve_from_a_server_that_is_down_fails_the_task_and_stores_nothing(pacs, tmp_path, settings):
    _, study_uid, _, _ = put_phantom(pacs, tmp_path)
    with pytest.raises(
        CommandError, match=r"orthanc-down \(127.0.0.1:\d+\) cannot be reached while looking up"
    ):
        retrieve_here("orthanc-down", study_uid)
    run = TaskRun.objects.get(kind="ingest")
    assert run.state == "failed" and "cannot be reached" in run.error and study_uid not in run.error
    assert Study.objects.count() == 0 and not any(Path(settings.UPLOAD_DIR).iterdir())
    assert AuditEvent.objects.filter(action="dicomweb.retrieve_failed").exists()


@pytest.mark.django_db
def test_study_deleted_between_query_and_retrieve(pacs, client_for, tmp_path, settings):
    _, study_uid, series_uids, _ = put_phantom(pacs, tmp_path)
    listed = client_for("admin").post(
        "/api/dicomweb/orthanc/series/", {"study_uid": study_uid}, format="json"
    )
    assert len(listed.json()) == 3
    pacs.delete_study(study_uid)
    with pytest.raises(
        CommandError, match="not on DICOMweb server orthanc \\(any more\\): deleted after the query"
    ):
        retrieve_here("orthanc", study_uid, list(series_uids.values()))
    assert Study.objects.count() == 0 and Volume.objects.count() == 0
    assert not any(Path(settings.UPLOAD_DIR).iterdir())


@pytest.mark.django_db
def test_series_with_a_missing_instance_is_refused_naming_the_gap(pacs, tmp_path):
    _, study_uid, series_uids, folder = put_phantom(pacs, tmp_path)
    middle = sorted((folder / "dicom" / "fill").glob("*.dcm"))[5]
    pacs.delete_instance(pydicom.dcmread(middle, stop_before_pixels=True).SOPInstanceUID)
    with pytest.raises(
        CommandError, match=r"series 1 'FILL contrast-enhanced CBCT': non-uniform slice spacing.*missing"
    ):
        retrieve_here("orthanc", study_uid, [series_uids["fill"]])
    assert Study.objects.count() == 0


@pytest.mark.django_db
def test_non_ct_series_is_refused_for_the_fill_role(pacs, tmp_path):
    paths = write_dicom_series(
        np.zeros((4, 8, 8), np.int16), (2.0, 1.0, 1.0), np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "mr",
        study_uid=new_uid(), series_uid=new_uid(), frame_of_reference_uid=new_uid(), series_description="T1 post",
        series_number=4, patient_id="MRN-MR", patient_name="Mr^Patient", modality="MR",
    )  # fmt: skip
    pacs.upload(paths)
    study_uid = pydicom.dcmread(paths[0]).StudyInstanceUID
    with pytest.raises(CommandError, match=r"series 4 'T1 post' is MR \(magnetic resonance\), not CT"):
        retrieve_here("orthanc", study_uid, (), "--role", "fill")
    assert Study.objects.count() == 0


@pytest.mark.django_db
def test_retrieve_larger_than_the_limit_is_refused(pacs, tmp_path, settings):
    _, study_uid, _, _ = put_phantom(pacs, tmp_path)
    settings.DLA_MAX_UPLOAD_BYTES = 20_000
    with pytest.raises(CommandError, match="larger than the limit of 20000 bytes"):
        retrieve_here("orthanc", study_uid)
    assert Study.objects.count() == 0 and not any(Path(settings.UPLOAD_DIR).iterdir())


@pytest.mark.django_db
def test_stow_refused_by_the_server_fails_and_stores_nothing(pacs, tmp_path):
    _, study_uid, _, _ = put_phantom(pacs, tmp_path)
    study = retrieve_here("orthanc", study_uid)
    with_dla(study)
    before_volumes, before_instances = Volume.objects.count(), pacs.instance_count()
    with pytest.raises(CommandError, match=r"orthanc-readonly refused storing 13 instance\(s\) \(HTTP 403"):
        call_command("dicomweb", "send", "orthanc-readonly", str(study.pk), "--label-version", str(
            approve(study, (np.asarray(study.volume("fill").array()) > 300).astype(np.uint8)).number
        ), stdout=io.StringIO(), stderr=io.StringIO())  # fmt: skip
    assert pacs.instance_count() == before_instances and Volume.objects.count() == before_volumes
    event = AuditEvent.objects.get(action="dicomweb.send_failed")
    assert event.detail["server"] == "orthanc-readonly" and study_uid not in repr(event.detail)


@pytest.mark.django_db
def test_stow_acknowledged_but_dropped_by_the_server_is_reported(pacs, tmp_path):
    _, study_uid, _, _ = put_phantom(pacs, tmp_path, patient_id=REFUSED_PATIENT_ID, seed=4)
    study = retrieve_here("orthanc", study_uid)
    with_dla(study)
    before = pacs.instance_count()
    with pytest.raises(CommandError, match=r"did not store 12 of the 12 instances sent.*it stored 0"):
        call_command("dicomweb", "send", "orthanc", str(study.pk), stdout=io.StringIO(), stderr=io.StringIO())
    assert pacs.instance_count() == before
    run = TaskRun.objects.get(kind="dicomweb_send")
    assert run.state == "failed" and "Re-sending after fixing the cause duplicates nothing" in run.error


@pytest.mark.django_db
def test_results_over_a_multi_frame_original_reference_its_frames(pacs, tmp_path):
    """An enhanced multi-frame CT fill (frames stored out of z order) on the PACS: retrieved, then the DLA series
    and the SEG sent back reference that one instance and, per slice, the frame at the same position
    (ReferencedFrameNumber); dciodvfy clean."""
    from tests.dicom_support import write_series
    from tests.unit.io.test_dicom import _to_enhanced

    written = write_series(tmp_path / "single", None, patient_id="MRN-MF-1", patient_name="ENHANCED^CASE")
    enhanced = _to_enhanced(written.paths, tmp_path / "enhanced.dcm", [3, 0, 5, 1, 4, 2])
    source = pydicom.dcmread(enhanced)
    pacs.upload([enhanced])
    study = retrieve_here("orthanc", source.StudyInstanceUID)
    fill = study.volume("fill")
    np.testing.assert_array_equal(fill.array(), written.volume.astype(np.int32) - 10)  # the shared rescale
    with_dla(study)
    version = approve(study, (np.asarray(fill.array()) > 300).astype(np.uint8))
    out = io.StringIO()
    call_command("dicomweb", "send", "orthanc", str(study.pk), "--label-version", str(version.number),
                 stdout=out, stderr=io.StringIO())  # fmt: skip

    def frame_position(number: int) -> list[float]:
        item = source.PerFrameFunctionalGroupsSequence[number - 1]
        return [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]

    client = pacs.client()
    on_pacs = {
        s["0008103E"]["Value"][0]: s["0020000E"]["Value"][0]
        for s in client.search_for_series(source.StudyInstanceUID)
    }
    dla = client.retrieve_series(source.StudyInstanceUID, on_pacs["3D-DLA (DLA Workbench)"])
    assert len(dla) == fill.shape[0]
    frames = set()
    for ds in dla:
        ref = ds.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == source.SOPClassUID
        frames.add(int(ref.ReferencedFrameNumber))
        position = [float(v) for v in ds.ImagePositionPatient]
        np.testing.assert_allclose(position, frame_position(int(ref.ReferencedFrameNumber)), atol=1e-3)
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert frames == set(range(1, fill.shape[0] + 1))
    [seg_uid] = [uid for name, uid in on_pacs.items() if name.startswith("DLA labels v1")]
    [seg] = client.retrieve_series(source.StudyInstanceUID, seg_uid)
    [series_ref] = seg.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == source.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series_ref.ReferencedInstanceSequence] == [
        source.SOPInstanceUID
    ]
    for item in seg.PerFrameFunctionalGroupsSequence:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, frame_position(int(ref.ReferencedFrameNumber)), atol=1e-3)
    for name, ds in (("dla.dcm", dla[0]), ("seg.dcm", seg)):
        ds.save_as(tmp_path / name)
        assert dciodvfy_problems(tmp_path / name) == [], name


@pytest.mark.django_db
def test_send_needs_the_original_identity_and_an_approved_version(pacs, tmp_path, client_for):
    _, study_uid, _, _ = put_phantom(pacs, tmp_path)
    study = retrieve_here("orthanc", study_uid)
    version = approve(study, (np.asarray(study.volume("fill").array()) > 300).astype(np.uint8))
    LabelVersion.objects.filter(pk=version.pk).update(review_status="submitted")
    with pytest.raises(CommandError, match="label version 1 .* is not approved"):
        call_command("dicomweb", "send", "orthanc", str(study.pk), "--label-version", "1", "--no-dla",
                     stdout=io.StringIO(), stderr=io.StringIO())  # fmt: skip
    with pytest.raises(CommandError, match="has no DLA volume yet"):
        call_command("dicomweb", "send", "orthanc", str(study.pk), stdout=io.StringIO(), stderr=io.StringIO())
    PseudonymMap.objects.filter(study=study).delete()
    with_dla(study)
    with pytest.raises(CommandError, match="has no pseudonym map"):
        call_command("dicomweb", "send", "orthanc", str(study.pk), stdout=io.StringIO(), stderr=io.StringIO())
    bad = client_for("admin").post("/api/dicomweb/orthanc/series/", {"study_uid": "1.2.x"}, format="json")
    assert bad.status_code == 400 and bad.json()["detail"].startswith("study_uid:")


@pytest.mark.django_db
def test_the_command_browses_like_the_page_and_is_audited(pacs, tmp_path):
    _, study_uid, series_uids, _ = put_phantom(pacs, tmp_path)
    out = io.StringIO()
    call_command("dicomweb", "studies", "orthanc", "--patient-id", "MRN-PACS-1", stdout=out)
    assert study_uid in out.getvalue()
    out = io.StringIO()
    call_command("dicomweb", "series", "orthanc", study_uid, stdout=out)
    assert all(uid in out.getvalue() for uid in series_uids.values())
    out = io.StringIO()
    call_command("dicomweb", "servers", stdout=out)
    assert '"name": "orthanc"' in out.getvalue() and "password" not in out.getvalue()
    events = AuditEvent.objects.filter(action="dicomweb.search")
    assert [e.detail["level"] for e in events.order_by("pk")] == ["studies", "series"]
    assert not [e for e in events if study_uid in repr(e.detail) or "MRN-PACS-1" in repr(e.detail)]
