"""Import through the API and a real worker: a DICOM series becomes a de-identified study whose voxels match;
bad uploads fail with a message naming the problem and store nothing; earlier volumes stay intact."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from pydicom.data import get_testdata_file

from annotations.models import Study, Volume
from dla.io.dicom import new_uid
from tests.conftest import wait_for_run

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "MRN-4711"


# the grid and the patient of every series these tests upload (written by the shared dicom_series fixture)
SERIES = dict(
    spacing_mm=(1.5, 0.8, 0.8),
    origin_lps=(-20.0, -30.0, 10.0),
    series_number=1,
    patient_id=PATIENT_ID,
    patient_name=PATIENT_NAME,
)


def upload(client, paths, **fields):
    files = [open(p, "rb") for p in paths]
    try:
        response = client.post("/api/studies/import/", {"files": files, **fields}, format="multipart")
    finally:
        for handle in files:
            handle.close()
    return response


def stored_files() -> list[Path]:
    root = Path(settings.STORAGE_ROOT) / "volumes"
    return sorted(p for p in root.rglob("*.npy")) if root.exists() else []


def test_dicom_series_imports_as_deidentified_study(celery_worker, client_for, dicom_series):
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 2000, size=(6, 12, 10), dtype=np.int16)
    paths = dicom_series("fill", volume, series_description="FILL run", **SERIES).paths
    response = upload(client_for("annotator"), paths[::-1], pseudonym="CASE-1", injection_site="ica")
    assert response.status_code == 202, response.content
    run = wait_for_run(response.json()["id"], worker=celery_worker)
    assert run.state == "succeeded", run.error
    study = Study.objects.get(pk=run.result["study_id"])
    assert study.pseudonym == "CASE-1" and study.injection_site == "ica"
    fill = study.volume("fill")
    assert fill is not None and fill.shape == [6, 12, 10] and fill.spacing_mm == [1.5, 0.8, 0.8]
    np.testing.assert_array_equal(fill.array(), volume)
    everything = repr(list(Study.objects.values())) + repr(list(Volume.objects.values()))
    assert PATIENT_ID not in everything and "Doe" not in everything
    assert study.patient_pseudonym.startswith("PT-")
    assert not (Path(settings.UPLOAD_DIR) / run.params["upload_id"]).exists(), "upload left behind"
    listed = client_for("annotator").get("/api/studies/?search=CASE").json()["results"]
    assert [s["pseudonym"] for s in listed] == ["CASE-1"]


def test_real_pydicom_ct_file_imports_with_hounsfield_units(celery_worker, client_for):
    import pydicom

    path = Path(get_testdata_file("CT_small.dcm"))
    ds = pydicom.dcmread(path)
    response = upload(client_for("admin"), [path], role="fill")
    run = wait_for_run(response.json()["id"], worker=celery_worker)
    assert run.state == "succeeded", run.error
    fill = Study.objects.get(pk=run.result["study_id"]).volume("fill")
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(fill.array()[0], np.round(expected).astype(np.int16))


@pytest.mark.parametrize(
    "make_files, message",
    [
        (lambda d: [_text_file(d)], "not a DICOM file"),
        (lambda d: [_zip_with(d, "../escape.dcm")], "escape.dcm"),
        (lambda d: [_truncated_dicom(d)], "truncated"),
    ],
    ids=["not-dicom", "zip-traversal", "truncated-dicom"],
)
def test_bad_upload_fails_with_message_and_stores_nothing(
    celery_worker, client_for, tmp_path, make_files, message
):
    before = stored_files()
    response = upload(client_for("annotator"), make_files(tmp_path))
    assert response.status_code == 202
    run = wait_for_run(response.json()["id"], worker=celery_worker)
    assert run.state == "failed"
    assert message.lower() in run.error.lower(), run.error
    assert Study.objects.count() == 0 and Volume.objects.count() == 0
    assert stored_files() == before
    assert not (Path(settings.UPLOAD_DIR) / run.params["upload_id"]).exists()


def test_volume_on_another_grid_is_refused_and_earlier_volume_kept(celery_worker, client_for, dicom_series):
    client = client_for("annotator")
    study_uid = new_uid()
    fill = np.zeros((6, 12, 10), dtype=np.int16)
    first = wait_for_run(
        upload(
            client, dicom_series("a", fill, series_description="FILL", study_uid=study_uid, **SERIES).paths
        ).json()["id"],
        worker=celery_worker,
    )
    assert first.state == "succeeded", first.error
    study = Study.objects.get(pk=first.result["study_id"])
    sub = np.zeros((5, 12, 10), dtype=np.int16)
    paths = dicom_series("b", sub, series_description="SUBTRACTED DSA", study_uid=study_uid, **SERIES).paths
    second = wait_for_run(upload(client, paths, study=study.pk).json()["id"], worker=celery_worker)
    assert second.state == "failed"
    assert "does not match" in second.error and "(5, 12, 10)" in second.error
    assert list(study.volumes.values_list("role", flat=True)) == ["fill"]
    np.testing.assert_array_equal(study.volume("fill").array(), fill)


def test_upload_over_the_size_limit_is_refused_before_storing(client_for, tmp_path, settings):
    settings.DLA_MAX_UPLOAD_BYTES = 100
    big = tmp_path / "big.dcm"
    big.write_bytes(b"\0" * 1000)

    def stored():  # the session's upload folder is shared: another test's finishing import may still be in it
        return set(Path(settings.UPLOAD_DIR).glob("*")) if Path(settings.UPLOAD_DIR).exists() else set()

    before = stored()
    response = upload(client_for("annotator"), [big])
    assert response.status_code == 413
    assert "exceeds the limit of 100 bytes" in response.json()["detail"]
    assert not stored() - before, "the refused upload stored nothing"


def test_import_without_files_is_a_400_naming_the_field(client_for):
    response = client_for("annotator").post("/api/studies/import/", {}, format="multipart")
    assert response.status_code == 400 and response.json()["detail"].startswith("files:")


def test_download_nifti_and_dicom_round_trip(celery_worker, client_for, tmp_path, dicom_series):
    import nibabel as nib

    from dla.io.dicom import read_dicom_series

    volume = np.arange(6 * 12 * 10, dtype=np.int16).reshape(6, 12, 10)
    run = wait_for_run(
        upload(
            client_for("admin"), dicom_series("s", volume, series_description="FILL", **SERIES).paths
        ).json()["id"],
        worker=celery_worker,
    )
    fill = Study.objects.get(pk=run.result["study_id"]).volume("fill")
    client = client_for("annotator")
    nifti = client.get(f"/api/volumes/{fill.pk}/download/?as=nifti")
    assert nifti.status_code == 200
    path = tmp_path / "out.nii.gz"
    path.write_bytes(b"".join(nifti.streaming_content))
    data = np.asarray(nib.load(path).dataobj)
    np.testing.assert_array_equal(np.transpose(data, (2, 1, 0)), volume)
    dicom = client.get(f"/api/volumes/{fill.pk}/download/?as=dicom")
    assert dicom.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(dicom.streaming_content))) as zf:
        zf.extractall(tmp_path / "dcm")
    (series,) = read_dicom_series(sorted((tmp_path / "dcm").rglob("*.dcm")))
    np.testing.assert_array_equal(series.volume_hu, volume)
    bad = client.get(f"/api/volumes/{fill.pk}/download/?as=jpeg")
    assert bad.status_code == 400 and "unknown format" in bad.json()["detail"]


def _text_file(directory: Path) -> Path:
    path = directory / "notes.txt"
    path.write_text("this is not an image")
    return path


def _zip_with(directory: Path, member: str) -> Path:
    path = directory / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, b"x" * 100)
    return path


def _truncated_dicom(directory: Path) -> Path:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    path = directory / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("keep_map", [False, True])
def test_pseudonym_map_is_kept_only_when_enabled(tmp_path, settings, keep_map, dicom_series):
    from annotations.ingest import ingest_files
    from annotations.models import PseudonymMap

    settings.DLA_KEEP_PSEUDONYM_MAP = keep_map
    volume = np.zeros((3, 8, 8), dtype=np.int16)
    study_uid = new_uid()
    paths = dicom_series("s", volume, series_description="FILL", study_uid=study_uid, **SERIES).paths
    study, _ = ingest_files(paths, work_dir=tmp_path / "w", pseudonym="MAP-1")
    if keep_map:
        identity = PseudonymMap.objects.get(study=study)
        assert identity.original_patient_id == PATIENT_ID and "Doe" in identity.original_patient_name
        assert identity.original_study_uid == study_uid and study.study_uid != study_uid
    else:
        assert not PseudonymMap.objects.exists()
        everything = repr(list(Study.objects.values())) + repr(list(Volume.objects.values()))
        assert PATIENT_ID not in everything and study_uid not in everything
