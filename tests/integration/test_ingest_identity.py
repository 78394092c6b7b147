"""Identity and privacy of ingest and export (issue 17), one regression test per finding:

- a series added to a study must be the same patient, study and frame of reference (keyed hashes; no original ID
  stored outside the pseudonym map);
- re-imports (of the original series, of the study, of our own exports, of bit-identical voxels) are recognised
  as "already imported as study X" instead of making a new patient;
- exports have stable UIDs per stored volume, derived series and SEGs reference the fill's instances, class and
  probability maps are not labelled HU, and dciodvfy is clean;
- refusals name the file/series and the problem; no original UID, name or ID in messages, logs or audit rows;
- folders with sidecars (the one `make_phantoms` writes) import; `manage.py ingest` is audited; the upload limit
  is enforced before the request body is read.
"""

import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.conf import settings
from django.core.management import call_command
from pydicom.data import get_testdata_file

from annotations.export import export_label_version, export_volume
from annotations.ingest import ingest
from annotations.models import LabelVersion, Study, Volume
from dla.io.deidentify import UidMap
from dla.io.dicom import IngestError, new_uid
from dla_web.models import AuditEvent
from tests.dicom_support import write_series

PATIENT_ID, PATIENT_NAME = "MRN-90210", "Roe^Richard"
SHAPE = (6, 12, 10)


class Subject:
    """The original identity of one patient's study, as a PACS would have it."""

    def __init__(self, patient_id=PATIENT_ID, patient_name=PATIENT_NAME):
        self.patient_id, self.patient_name = patient_id, patient_name
        self.study_uid, self.frame_uid = new_uid(), new_uid()

    def series(self, out_dir: Path, volume, description, *, number=1, modality="CT", **overrides):
        args = dict(
            study_uid=self.study_uid,
            frame_of_reference_uid=self.frame_uid,
            series_description=description,
            series_number=number,
            patient_id=self.patient_id,
            patient_name=self.patient_name,
            modality=modality,
        )
        args.update(overrides)
        write_series(out_dir, volume, spacing_mm=(1.5, 0.8, 0.8), origin_lps=(-20.0, -30.0, 10.0), **args)
        return out_dir


def volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 2000, size=SHAPE, dtype=np.int16)


def originals(subject: Subject, folder: Path) -> set[str]:
    values = {
        subject.patient_id,
        subject.patient_name,
        "Roe",
        "Richard",
        subject.study_uid,
        subject.frame_uid,
    }
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values.update({ds.SeriesInstanceUID, ds.SOPInstanceUID})
    return values


def stored_text() -> str:
    return repr(list(Study.objects.values())) + repr(list(Volume.objects.values()))


def unzip(path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(path) as zf:
        zf.extractall(dest)
    return dest


pytestmark = pytest.mark.django_db


@pytest.fixture
def imported(tmp_path):
    """A subject's fill imported as a new study; returns (subject, study)."""
    subject = Subject()
    folder = subject.series(tmp_path / "fill", volume(1), "FILL run", number=1)
    result = ingest([folder], work_dir=tmp_path / "w1", pseudonym="CASE-1")
    return subject, result.study


# ---------------------------------------------------------------------------------------------------------
# identity of series added to a study
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "differs, names",
    [
        ({"patient_id": "MRN-OTHER"}, ["PatientID"]),
        ({"study_uid": None}, ["StudyInstanceUID"]),
        ({"frame_of_reference_uid": None}, ["FrameOfReferenceUID"]),
        ({"patient_id": "MRN-OTHER", "study_uid": None, "frame_of_reference_uid": None},
         ["PatientID", "StudyInstanceUID", "FrameOfReferenceUID"]),
    ],
    ids=["patient", "study", "frame-of-reference", "all-three"],
)  # fmt: skip
def test_series_of_another_patient_study_or_frame_is_refused(imported, tmp_path, differs, names):
    subject, study = imported
    overrides = {k: (v if v is not None else new_uid()) for k, v in differs.items()}
    folder = subject.series(tmp_path / "mask", volume(2), "MASK native", number=2, **overrides)
    with pytest.raises(IngestError) as exc:
        ingest([folder], work_dir=tmp_path / "w2", study=study)
    message = str(exc.value)
    assert message.startswith("series 2 'MASK native' does not belong to study CASE-1")
    for name in names:
        assert name in message
    assert list(study.volumes.values_list("role", flat=True)) == ["fill"]
    for value in originals(subject, tmp_path) | set(overrides.values()):
        assert value not in message


def test_series_of_the_same_patient_study_and_frame_is_added(imported, tmp_path):
    subject, study = imported
    folder = subject.series(tmp_path / "mask", volume(2), "MASK native", number=2)
    result = ingest([folder], work_dir=tmp_path / "w2", study=study)
    assert sorted(study.volumes.values_list("role", flat=True)) == ["fill", "mask"]
    assert result.volumes[0].series_uid == UidMap(settings.SECRET_KEY).map(
        pydicom.dcmread(next(folder.glob("*.dcm"))).SeriesInstanceUID
    )


def test_identity_is_stored_only_as_keyed_hashes(imported, tmp_path):
    subject, study = imported
    uid_map = UidMap(settings.SECRET_KEY)  # the project's keyed scheme, computed independently here
    assert study.study_uid == uid_map.map(subject.study_uid)
    assert study.metadata["frame_of_reference_uids"] == [uid_map.map(subject.frame_uid)]
    text = stored_text()
    for value in originals(subject, tmp_path):
        assert value not in text


# ---------------------------------------------------------------------------------------------------------
# re-imports
# ---------------------------------------------------------------------------------------------------------


def test_same_series_twice_is_already_imported(imported, tmp_path):
    _, study = imported
    for target in (None, study):
        with pytest.raises(IngestError, match=r"series 1 'FILL run' is already imported as study CASE-1"):
            ingest([tmp_path / "fill"], work_dir=tmp_path / "w2", study=target, pseudonym="CASE-2")
    assert Study.objects.count() == 1 and Volume.objects.count() == 1


def test_new_series_of_an_imported_study_points_to_that_study(imported, tmp_path):
    subject, study = imported
    folder = subject.series(tmp_path / "mask", volume(2), "MASK native", number=2)
    with pytest.raises(
        IngestError, match=rf"already imported as study CASE-1; add new series to it \(study={study.pk}\)"
    ):
        ingest([folder], work_dir=tmp_path / "w2")
    assert Study.objects.count() == 1


def test_reimport_of_our_own_export_keeps_its_identity(imported, tmp_path):
    _, study = imported
    fill = study.volume("fill")
    exported = unzip(export_volume(fill, "dicom", tmp_path), tmp_path / "export")
    with pytest.raises(
        IngestError, match=rf"exported by this installation from study CASE-1.*study={study.pk}"
    ):
        ingest([exported], work_dir=tmp_path / "w2", pseudonym="CASE-2")
    with pytest.raises(IngestError, match="already imported as study CASE-1"):
        ingest([exported], work_dir=tmp_path / "w3", study=study)
    # a series made from our export elsewhere (new series UID and voxels, same pseudonymous patient and study)
    # is study CASE-1's: added there with its UIDs as they are, not hashed into a new identity
    edited = tmp_path / "edited"
    edited.mkdir()
    series_uid = new_uid()
    for path in sorted(exported.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = series_uid, "SUBTRACTED DSA", 9
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.PixelData = (ds.pixel_array // 2).astype("<i2").tobytes()
        ds.save_as(edited / path.name)
    [added] = ingest([edited], work_dir=tmp_path / "w4", study=study).volumes
    assert added.role == "subtracted" and added.series_uid == series_uid
    assert Study.objects.count() == 1
    other = Study.objects.create(pseudonym="OTHER", patient_pseudonym="PT-00000000", study_uid="2.25.1")
    with pytest.raises(IngestError, match="belongs to study CASE-1 .*not to study OTHER"):
        ingest([exported], work_dir=tmp_path / "w5", study=other)


def test_bit_identical_voxels_are_already_imported(imported, tmp_path):
    _, study = imported
    nifti = export_volume(study.volume("fill"), "nifti", tmp_path)
    with pytest.raises(IngestError, match=r"already imported as study CASE-1 \(the same voxels as its fill"):
        ingest([nifti], work_dir=tmp_path / "w2", pseudonym="CASE-2")
    assert Study.objects.count() == 1


# ---------------------------------------------------------------------------------------------------------
# exports a PACS accepts
# ---------------------------------------------------------------------------------------------------------


def _dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith(("Error", "Warning"))]


@pytest.fixture
def study_with_results(imported):
    """The imported study plus a DLA volume, a class map, a vessel probability map and an approved version."""
    _, study = imported
    fill = study.volume("fill")
    grid = {"spacing_mm": fill.spacing_mm, "affine_lps": fill.affine_lps}
    fill_hu = np.asarray(fill.array())
    classes = np.where(fill_hu > 1000, 1, np.where(fill_hu > 500, 2, 3)).astype(np.uint8)
    Volume.create_from_array(study=study, role="dla", array=np.where(classes == 1, fill_hu, 0), **grid)
    Volume.create_from_array(study=study, role="class_map", array=classes, **grid)
    prob = np.random.default_rng(5).integers(0, 256, size=SHAPE).astype(np.uint8)
    Volume.create_from_array(study=study, role="vessel_prob", array=prob, **grid)
    return study


def _slices(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.rglob("slice_*.dcm"))]


def test_two_downloads_are_one_series_and_derived_series_reference_the_fill(study_with_results, tmp_path):
    study = study_with_results
    fill, dla = study.volume("fill"), study.volume("dla")
    first = _slices(unzip(export_volume(fill, "dicom", tmp_path / "a"), tmp_path / "a1"))
    second = _slices(unzip(export_volume(fill, "dicom", tmp_path / "b"), tmp_path / "b1"))
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in second]
    assert {d.SeriesInstanceUID for d in first} == {d.SeriesInstanceUID for d in second} == {fill.series_uid}
    assert len({d.SOPInstanceUID for d in first}) == SHAPE[0]
    assert {d.StudyInstanceUID for d in first} == {study.study_uid} and first[0].StudyID == "CASE-1"
    fill_by_z = {round(float(d.ImagePositionPatient[2]), 3): d.SOPInstanceUID for d in first}
    for dirname in ("c", "d"):
        derived = _slices(unzip(export_volume(dla, "dicom", tmp_path / dirname), tmp_path / f"{dirname}1"))
        assert derived[0].ImageType[0] == "DERIVED" and derived[0].RescaleType == "HU"
        for ds in derived:
            source = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
            assert source == fill_by_z[round(float(ds.ImagePositionPatient[2]), 3)]
            assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == fill.series_uid
            assert ds.FrameOfReferenceUID == first[0].FrameOfReferenceUID
        if dirname == "c":
            dla_uids = [d.SOPInstanceUID for d in derived]
        else:
            assert [d.SOPInstanceUID for d in derived] == dla_uids
    for path in [*(tmp_path / "a1").rglob("*.dcm")][:2] + [*(tmp_path / "c1").rglob("*.dcm")][:2]:
        assert _dciodvfy_errors(path) == [], path


def test_class_and_probability_maps_are_seg_and_parametric_map_not_hu(study_with_results, tmp_path):
    study = study_with_results
    fill_uids = {
        d.SOPInstanceUID
        for d in _slices(unzip(export_volume(study.volume("fill"), "dicom", tmp_path), tmp_path / "f"))
    }
    for role, sop_class in (("class_map", pydicom.uid.SegmentationStorage),
                            ("vessel_prob", pydicom.uid.ParametricMapStorage)):  # fmt: skip
        folder = unzip(export_volume(study.volume(role), "dicom", tmp_path / role), tmp_path / f"{role}-x")
        [obj_path] = [p for p in folder.rglob("*.dcm") if not p.name.startswith("slice_")]
        obj = pydicom.dcmread(obj_path)
        assert obj.SOPClassUID == sop_class and "RescaleType" not in obj
        referenced = {
            i.ReferencedSOPInstanceUID
            for s in obj.ReferencedSeriesSequence
            for i in s.ReferencedInstanceSequence
        }
        assert referenced == fill_uids, role
        assert {d.SOPInstanceUID for d in _slices(folder)} == fill_uids  # the very fill series, not a copy
        assert _dciodvfy_errors(obj_path) == [], role
        again = unzip(
            export_volume(study.volume(role), "dicom", tmp_path / f"{role}2"), tmp_path / f"{role}-y"
        )
        [obj2] = [p for p in again.rglob("*.dcm") if not p.name.startswith("slice_")]
        assert pydicom.dcmread(obj2).SOPInstanceUID == obj.SOPInstanceUID


def make_version(study, labels: np.ndarray, status="approved") -> LabelVersion:
    from annotations.labels import _create_version

    version = _create_version(
        study, labels=labels, parent=None, author=None, message="vessels", recipe={}, ops=[], roi=None
    )
    LabelVersion.objects.filter(pk=version.pk).update(review_status=status)
    return LabelVersion.objects.get(pk=version.pk)


def test_label_seg_zip_carries_the_fill_download_series(study_with_results, tmp_path):
    study = study_with_results
    version = make_version(study, np.asarray(study.volume("class_map").array()))
    folder = unzip(export_label_version(version, "seg", tmp_path), tmp_path / "seg")
    fill_download = _slices(
        unzip(export_volume(study.volume("fill"), "dicom", tmp_path / "v"), tmp_path / "v1")
    )
    assert [d.SOPInstanceUID for d in _slices(folder)] == [d.SOPInstanceUID for d in fill_download]
    seg = pydicom.dcmread(next(folder.rglob("seg.dcm")))
    again = pydicom.dcmread(
        next(unzip(export_label_version(version, "seg", tmp_path / "2"), tmp_path / "s2").rglob("seg.dcm"))
    )
    assert seg.SOPInstanceUID == again.SOPInstanceUID and seg.SeriesInstanceUID == again.SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.volume("fill").series_uid
    assert _dciodvfy_errors(next(folder.rglob("seg.dcm"))) == []


def test_exports_of_a_fill_imported_from_a_multi_frame_object_reference_their_own_instances(tmp_path):
    """A fill imported from one enhanced multi-frame CT (frames out of z order) exports as a single-frame series
    (one distinct instance per slice, in z order, no frame numbers to refer to); the DLA series, the class map's
    SEG and a label version's SEG reference exactly those instances slice by slice, dciodvfy clean. (Results
    sent to the PACS next to the multi-frame original reference its frames: test_dicomweb.)"""
    from tests.unit.io.test_dicom import _to_enhanced

    subject = Subject()
    subject.series(tmp_path / "single", volume(3), "FILL run")
    enhanced = _to_enhanced(
        sorted((tmp_path / "single").glob("*.dcm")), tmp_path / "mf.dcm", [4, 1, 5, 0, 3, 2]
    )
    study = ingest([enhanced], work_dir=tmp_path / "w", pseudonym="CASE-MF").study
    fill = study.volume("fill")
    np.testing.assert_array_equal(fill.array(), volume(3).astype(np.int32) - 10)
    grid = {"spacing_mm": fill.spacing_mm, "affine_lps": fill.affine_lps}
    fill_hu = np.asarray(fill.array())
    classes = np.where(fill_hu > 1000, 1, np.where(fill_hu > 500, 2, 3)).astype(np.uint8)
    dla = Volume.create_from_array(study=study, role="dla", array=np.where(classes == 1, fill_hu, 0), **grid)
    class_map = Volume.create_from_array(study=study, role="class_map", array=classes, **grid)

    exported = _slices(unzip(export_volume(fill, "dicom", tmp_path / "f"), tmp_path / "f1"))
    z = [float(d.ImagePositionPatient[2]) for d in exported]
    assert len({d.SOPInstanceUID for d in exported}) == SHAPE[0] and z == sorted(z)
    assert all("NumberOfFrames" not in d and d.SOPClassUID == pydicom.uid.CTImageStorage for d in exported)
    assert {d.SeriesInstanceUID for d in exported} == {fill.series_uid}
    np.testing.assert_array_equal(np.stack([d.pixel_array for d in exported]), fill_hu)
    by_z = {round(v, 3): d.SOPInstanceUID for v, d in zip(z, exported, strict=True)}

    derived = _slices(unzip(export_volume(dla, "dicom", tmp_path / "d"), tmp_path / "d1"))
    for ds in derived:
        ref = ds.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == by_z[round(float(ds.ImagePositionPatient[2]), 3)]
        assert "ReferencedFrameNumber" not in ref and ref.ReferencedSOPClassUID == pydicom.uid.CTImageStorage
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == fill.series_uid
    segs = [
        next(p for p in unzip(export_volume(class_map, "dicom", tmp_path / "c"), tmp_path / "c1").rglob("*.dcm")
             if not p.name.startswith("slice_")),
        next(unzip(export_label_version(make_version(study, classes), "seg", tmp_path / "l"), tmp_path / "l1")
             .rglob("seg.dcm")),
    ]  # fmt: skip
    for path in segs:
        seg = pydicom.dcmread(path)
        [series_ref] = seg.ReferencedSeriesSequence
        assert series_ref.SeriesInstanceUID == fill.series_uid
        assert {i.ReferencedSOPInstanceUID for i in series_ref.ReferencedInstanceSequence} == set(
            by_z.values()
        )
        for item in seg.PerFrameFunctionalGroupsSequence:
            ref = item.DerivationImageSequence[0].SourceImageSequence[0]
            position_z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
            assert ref.ReferencedSOPInstanceUID == by_z[round(position_z, 3)]
        assert _dciodvfy_errors(path) == [], path.name
    for path in [*(tmp_path / "f1").rglob("*.dcm")][:1] + [*(tmp_path / "d1").rglob("*.dcm")][:1]:
        assert _dciodvfy_errors(path) == [], path


# ---------------------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------------------


def test_two_series_for_one_role_are_named_by_number_and_description(tmp_path):
    subject = Subject()
    subject.series(tmp_path / "up" / "a", volume(1), "3D fill", number=3)
    subject.series(tmp_path / "up" / "b", volume(2)[:5], "3D fill", number=4)
    with pytest.raises(
        IngestError, match=r"both become the fill volume: series 3 '3D fill' and series 4 '3D fill'"
    ):
        ingest([tmp_path / "up"], work_dir=tmp_path / "w")


@pytest.mark.parametrize("modality, name", [("MR", "magnetic resonance"), ("NM", "nuclear medicine")])
def test_non_ct_series_refused_for_ct_roles_and_kept_as_stored_values_otherwise(tmp_path, modality, name):
    subject = Subject()
    folder = subject.series(tmp_path / "s", volume(1), "post contrast", number=5, modality=modality)
    with pytest.raises(IngestError, match=rf"series 5 'post contrast' is {modality} \({name}\), not CT"):
        ingest([folder], work_dir=tmp_path / "w")
    [other] = ingest([folder], work_dir=tmp_path / "w2", role="other").volumes
    assert other.source == f"{modality} import (stored values, not HU)"


@pytest.mark.parametrize(
    "testdata, message",
    [
        ("rtplan.dcm", "an RT Plan, not an image"),
        ("waveform_ecg.dcm", "a waveform (12-lead ECG), not an image"),
    ],
)
def test_non_image_objects_are_named(tmp_path, testdata, message):
    with pytest.raises(IngestError, match=rf"nothing importable: {testdata}: .*{re.escape(message)}"):
        ingest([Path(get_testdata_file(testdata))], work_dir=tmp_path / "w")
    assert Study.objects.count() == 0


def test_folder_with_sidecars_imports_and_lists_what_it_skipped(tmp_path):
    subject = Subject()
    folder = subject.series(tmp_path / "up", volume(1), "FILL run")
    (folder / "params.json").write_text('{"kv": 90}')
    (folder / "README").write_text("exported from the scanner\n")
    shutil.copy(get_testdata_file("rtplan.dcm"), folder / "plan.dcm")
    result = ingest([folder], work_dir=tmp_path / "w")
    assert [v.role for v in result.volumes] == ["fill"]
    assert sorted(name for name, _ in result.skipped) == ["README", "params.json", "plan.dcm"]


def test_the_folder_make_phantoms_writes_imports(tmp_path):
    call_command("make_phantoms", "--shape", "8", "16", "16", "--out", str(tmp_path / "out"))
    result = ingest([tmp_path / "out"], work_dir=tmp_path / "w")  # the folder itself, as written
    assert sorted(v.role for v in result.volumes) == ["fill", "mask", "subtracted"]
    skipped = {name for name, _ in result.skipped}
    assert {"meta.json", "fill.nii.gz", "truth.nii.gz"} <= skipped
    assert result.study.patient_pseudonym.startswith("PT-") and "PH-000" not in stored_text()


def test_manage_py_ingest_is_audited(tmp_path):
    folder = Subject().series(tmp_path / "s", volume(1), "FILL run")
    call_command("ingest", str(folder), "--pseudonym", "CMD-1", stdout=io.StringIO(), stderr=io.StringIO())
    study = Study.objects.get(pseudonym="CMD-1")
    event = AuditEvent.objects.get(action="data.import", object_id=str(study.pk))
    assert event.detail["via"] == "manage.py ingest" and event.detail["volumes"] == [study.volume("fill").pk]


# ---------------------------------------------------------------------------------------------------------
# no absolute server path in an error (issue 16: "ingest errors reveal the absolute storage path")
# ---------------------------------------------------------------------------------------------------------


def _unreadable_nifti(folder: Path) -> Path:
    path = folder / "junk.nii"  # nibabel: 'Cannot work out file type of "/abs/.../junk.nii"'
    path.write_bytes(b"x" * 400)
    return path


def _truncated_nifti(folder: Path) -> Path:
    import nibabel as nib

    whole = folder / "whole.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), whole)
    path = folder / "cut.nii"  # nibabel: "Expected 128 bytes, got 8 bytes from /abs/.../cut.nii"
    path.write_bytes(whole.read_bytes()[:360])
    whole.unlink()
    return path


@pytest.mark.parametrize("make, name", [(_unreadable_nifti, "junk.nii"), (_truncated_nifti, "cut.nii")])
def test_ingest_errors_name_the_file_not_where_it_lives(tmp_path, users, make, name):
    from annotations.tasks import ingest_upload

    upload_id = "pathleak" + name.replace(".", "")
    files = Path(settings.UPLOAD_DIR) / upload_id / "files"
    files.mkdir(parents=True)
    make(files)
    # the service (manage.py ingest, the API's task)
    with pytest.raises(IngestError) as refused:
        ingest([files / name], work_dir=tmp_path / "w")
    assert name in str(refused.value) and str(files) not in str(refused.value)
    assert not re.search(r"(^|[\s'\"(])/\w+/", str(refused.value)), str(refused.value)
    # the task run a user reads
    run = ingest_upload.run_here(
        ingest_upload.create_run(user=users["annotator"], params={"upload_id": upload_id})
    )
    assert run.state == "failed" and name in run.error
    for text in (run.error, run.message):
        assert str(settings.UPLOAD_DIR) not in text and str(settings.VAR_DIR) not in text, text
        assert not re.search(r"(^|[\s'\"(])/\w+/", text), text
    assert Study.objects.count() == 0


def test_an_os_error_keeps_its_kind_and_file_name_without_the_server_path(tmp_path):
    from annotations.ingest import public_error, scrub

    with pytest.raises(OSError) as failed:
        open(tmp_path / "storage" / "volumes" / "fill-1.npy", "rb")  # a real error of the OS
    assert str(tmp_path) in str(failed.value)
    public = public_error(failed.value)
    assert type(public) is FileNotFoundError and public.errno == failed.value.errno
    assert str(public) == "[Errno 2] No such file or directory: 'fill-1.npy'"
    # messages keep URLs, hosts, relative paths and dates as they are
    kept = "server pacs (10.0.0.5:8042) http://10.0.0.5:8042/dicom-web fill/mask 2025/03/14"
    assert scrub(kept) == kept
    assert scrub(f"cannot write {tmp_path}/a/b.npy: disk full") == "cannot write b.npy: disk full"


# ---------------------------------------------------------------------------------------------------------
# the upload limit, before the body is read
# ---------------------------------------------------------------------------------------------------------


class CountingInput(io.BytesIO):
    """A request body that remembers how many bytes were read from it."""

    read_bytes = 0

    def read(self, size=-1):
        data = super().read(size)
        CountingInput.read_bytes += len(data)
        return data

    def readline(self, size=-1):
        data = super().readline(size)
        CountingInput.read_bytes += len(data)
        return data


@pytest.mark.parametrize("role", ["annotator", None])
def test_upload_limit_is_checked_from_content_length_before_the_body_is_read(client_for, settings, role):
    settings.DLA_MAX_UPLOAD_BYTES = 1000
    body = CountingInput(b"--x\r\n" + b"\0" * 4096)
    CountingInput.read_bytes = 0
    response = client_for(role).generic(
        "POST",
        "/api/studies/import/",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(50 * 1024 * 1024),
        **{"wsgi.input": body},
    )
    assert response.status_code == 413
    assert "exceeds the limit of 1000 bytes" in response.json()["detail"]
    assert CountingInput.read_bytes == 0
    assert not (Path(settings.UPLOAD_DIR).exists() and any(Path(settings.UPLOAD_DIR).iterdir()))


# ---------------------------------------------------------------------------------------------------------
# no original identifier in task runs, logs or audit rows (through the API and a real worker)
# ---------------------------------------------------------------------------------------------------------


def _upload(client, paths, **fields):
    handles = [open(p, "rb") for p in paths]
    try:
        return client.post("/api/studies/import/", {"files": handles, **fields}, format="multipart")
    finally:
        for handle in handles:
            handle.close()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_refused_imports_leak_no_original_identifier(celery_worker, client_for, tmp_path):
    from dla_web.models import TaskRun
    from tests.conftest import wait_for_run

    client = client_for("annotator")
    log_start = celery_worker.log_path.stat().st_size if celery_worker.log_path.exists() else 0
    subject = Subject()
    folder = subject.series(tmp_path / "fill", volume(1), "FILL run")
    first = wait_for_run(_upload(client, sorted(folder.glob("*.dcm"))).json()["id"], worker=celery_worker)
    assert first.state == "succeeded", first.error
    study = Study.objects.get(pk=first.result["study_id"])
    # 1. a series with a duplicate slice position; 2. another patient's series for this study
    broken = subject.series(tmp_path / "broken", volume(2), "MASK native", number=2)
    dup = broken / "dup.dcm"
    shutil.copy(broken / "slice_00001.dcm", dup)
    ds = pydicom.dcmread(dup)
    ds.SOPInstanceUID = new_uid()
    ds.save_as(dup)
    stranger = Subject("MRN-STRANGER", "Stranger^Sam").series(
        tmp_path / "other", volume(3), "MASK native", number=2
    )
    runs = []
    for files, fields, expected in (
        (
            sorted(broken.glob("*.dcm")),
            {"study": study.pk},
            "series 2 'MASK native': duplicate slice position",
        ),
        (sorted(stranger.glob("*.dcm")), {"study": study.pk}, "does not belong to study"),
    ):
        run = wait_for_run(_upload(client, files, **fields).json()["id"], worker=celery_worker)
        assert run.state == "failed" and expected in run.error, run.error
        runs.append(run)
    secrets = originals(subject, tmp_path) | originals(
        Subject("MRN-STRANGER", "Stranger^Sam"), tmp_path / "other"
    )
    secrets |= {"MRN-STRANGER", "Stranger", str(tmp_path)}
    worker_log = celery_worker.log_path.read_bytes()[log_start:].decode(errors="replace")
    texts = {
        "task runs": repr(list(TaskRun.objects.values("message", "error", "log_tail", "result", "params"))),
        "audit": repr(list(AuditEvent.objects.values())),
        "rows": stored_text(),
        "worker log": worker_log,
    }
    for where, text in texts.items():
        leaked = sorted(value for value in secrets if value in text)
        assert not leaked, f"{where} holds original identifiers: {leaked}"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_refusal_message_is_whole_in_the_task_run(celery_worker, client_for, tmp_path):
    from tests.conftest import wait_for_run

    files = []
    for index in range(40):
        path = tmp_path / f"notes_{index:02d}_with_a_rather_long_file_name.txt"
        path.write_text("not an image")
        files.append(path)
    run = wait_for_run(_upload(client_for("annotator"), files).json()["id"], worker=celery_worker)
    assert run.state == "failed" and run.error.startswith("nothing importable")
    assert len(run.message) <= 500 and run.message == ("failed: " + run.error)[:500]
    assert "(and 35 more)" in run.message or "(see the log)" in run.message


def test_a_body_streaming_past_the_limit_stops_during_the_session_csrf_read(users, settings, tmp_path):
    """With session authentication the CSRF check reads the multipart body before the view runs: the streaming
    upload handler stops it there (413), nothing is stored."""
    from rest_framework.test import APIClient

    settings.DLA_MAX_UPLOAD_BYTES = 100
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(users["annotator"])
    client.cookies["csrftoken"] = "a" * 32  # a valid pair: the check reads the body for its form field first
    big = tmp_path / "big.dcm"
    big.write_bytes(b"\0" * 5000)  # Content-Length is under limit + multipart allowance: the handler decides
    with open(big, "rb") as handle:
        response = client.post(
            "/api/studies/import/", {"files": [handle]}, format="multipart", HTTP_X_CSRFTOKEN="a" * 32
        )
    assert response.status_code == 413, response.content
    # "more than 100": stopped while streaming (the view's own check, after a full read, names all 5000 bytes)
    assert response.json()["detail"] == "upload of more than 100 bytes exceeds the limit of 100 bytes"
    assert not (Path(settings.UPLOAD_DIR).exists() and any(Path(settings.UPLOAD_DIR).iterdir()))
