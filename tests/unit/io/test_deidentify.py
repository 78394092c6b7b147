"""Tests for dla.io.deidentify: no identifying value survives anywhere; UIDs mapped consistently."""

import datetime as dt

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dla.io.deidentify import UidMap, deidentify_dataset, deidentify_series_volume, shift_date
from dla.io.dicom import new_uid, read_dicom_series
from tests.dicom_support import random_volume

SECRET = "project-secret-1"


def _all_values(ds):
    """Every element value as text, recursing into sequences and the file meta."""
    out = []
    datasets = [ds]
    if getattr(ds, "file_meta", None) is not None:
        datasets.append(ds.file_meta)
    for d in datasets:
        for elem in d.iterall():
            if elem.VR != "SQ" and elem.tag != 0x7FE00010:
                out.append(str(elem.value))
    return out


def _identifying_ct_small():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientBirthDate = "19610304"
    ds.PatientAddress = "12 Elm Street, Springfield"
    ds.PatientTelephoneNumbers = "555-0199"
    ds.InstitutionAddress = "1 Hospital Road"
    ds.ReferringPhysicianName = "Welby^Marcus"
    ds.PerformingPhysicianName = "House^Gregory"
    ds.OperatorsName = "Nurse^Ratched"
    ds.AccessionNumber = "ACC99887"
    ds.StudyID = "STUDY4242"
    ds.DeviceSerialNumber = "SN-123456"
    ds.ImageComments = "patient Smith moved"
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    ref.ReviewerName = "Hidden^Person"  # a PN nested in a sequence, not in any removal list
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new(0x00291010, "LO", "private Smith^John")
    return ds


def _identifying_values(ds):
    vals = {
        str(ds.PatientName),
        ds.PatientID,
        "ABCD1234",
        "1234ABCD",  # OtherPatientIDsSequence
        ds.PatientBirthDate,
        ds.PatientAddress,
        ds.PatientTelephoneNumbers,
        ds.InstitutionName,
        ds.InstitutionAddress,
        str(ds.ReferringPhysicianName),
        str(ds.PerformingPhysicianName),
        str(ds.OperatorsName),
        ds.AccessionNumber,
        ds.StudyID,
        ds.DeviceSerialNumber,
        ds.StationName,
        ds.ImageComments,
        "Hidden^Person",
        "private Smith^John",
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        ds.FrameOfReferenceUID,
        ds.InstanceCreatorUID,
        "1.2.3.4.5.6.7.8.9",
    }
    vals |= {ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate, ds.ContentDate, ds.InstanceCreationDate}
    return {v for v in vals if v}


def test_no_identifying_value_remains():
    ds = _identifying_ct_small()
    secrets = _identifying_values(ds)
    before = _all_values(ds)
    assert all(any(secret in v for v in before) for secret in secrets)  # the check below is not vacuous
    uid_map = UidMap(SECRET)
    deidentify_dataset(ds, pseudonym="PSN-0001", uid_map=uid_map)
    values = _all_values(ds)
    for secret in secrets:
        leaks = [v for v in values if secret in v]
        assert not leaks, f"{secret!r} still present in {leaks}"
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert ds.PatientName == "PSN-0001" and ds.PatientID == "PSN-0001"
    assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage  # well-known UIDs kept
    assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == pydicom.uid.CTImageStorage
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == uid_map.map("1.2.3.4.5.6.7.8.9")
    # still a valid image
    np.testing.assert_array_equal(
        ds.pixel_array, pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    )


def test_dates_shifted_by_per_patient_offset():
    ds = _identifying_ct_small()
    orig = {kw: ds.data_element(kw).value for kw in ("StudyDate", "SeriesDate", "ContentDate")}
    uid_map = UidMap(SECRET)
    deidentify_dataset(ds, pseudonym="PSN-0001", uid_map=uid_map)
    days = uid_map.date_offset_days("PSN-0001")
    assert 1 <= days <= 3650
    for kw, value in orig.items():
        expected = dt.datetime.strptime(value, "%Y%m%d").date() - dt.timedelta(days=days)
        assert ds.data_element(kw).value == expected.strftime("%Y%m%d")
    # interval between study and series date preserved
    assert ds.PatientBirthDate in ("", None)
    assert ds.StudyTime == "072730"  # times of day kept (documented)
    assert shift_date("20260301120000.5", 1) == "20260228120000.5"
    assert shift_date("garbage", 5) == ""


def _two_series_of_a_study(dicom_series):
    """A mask and a fill series of one study and frame of reference of patient MRN777 (Roe^Richard), 3x4x4
    voxels of 1 mm each: [mask paths, fill paths]."""
    study, frame = new_uid(), new_uid()
    return [
        dicom_series(
            name,
            random_volume((3, 4, 4), seed=len(name), low_hu=-1000, high_hu=2000),
            spacing_mm=(1.0, 1.0, 1.0),
            affine_lps=np.eye(4),
            study_uid=study,
            frame_of_reference_uid=frame,
            series_description=name,
            series_number=1,
            patient_id="MRN777",
            patient_name="Roe^Richard",
            study_date="20250611",
        ).paths
        for name in ("mask", "fill")
    ]


def test_uids_consistent_across_files_and_series(dicom_series):
    series = _two_series_of_a_study(dicom_series)
    uid_map = UidMap(SECRET)
    deid = []
    for paths in series:
        dsets = [pydicom.dcmread(p) for p in paths]
        originals = [
            (d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID, d.FrameOfReferenceUID) for d in dsets
        ]
        for d in dsets:
            deidentify_dataset(d, pseudonym="PSN-7", uid_map=uid_map)
        deid.append((originals, dsets))
    study_uids = {d.StudyInstanceUID for _, dsets in deid for d in dsets}
    frame_uids = {d.FrameOfReferenceUID for _, dsets in deid for d in dsets}
    assert len(study_uids) == 1 and len(frame_uids) == 1
    for originals, dsets in deid:
        assert len({d.SeriesInstanceUID for d in dsets}) == 1
        assert len({d.SOPInstanceUID for d in dsets}) == len(dsets)
        for (st, se, sop, fr), d in zip(originals, dsets, strict=True):
            assert (d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID, d.FrameOfReferenceUID) == (
                uid_map.map(st), uid_map.map(se), uid_map.map(sop), uid_map.map(fr))  # fmt: skip
            assert d.SOPInstanceUID != sop and d.StudyInstanceUID != st
    assert deid[0][1][0].SeriesInstanceUID != deid[1][1][0].SeriesInstanceUID
    # UIDs are valid DICOM UIDs: 2.25.<int>, at most 64 characters
    for _, dsets in deid:
        for d in dsets:
            for uid in (d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID):
                assert uid.startswith("2.25.") and len(uid) <= 64 and pydicom.uid.UID(uid).is_valid
    # the de-identified files still read as two series of one study
    for (_, dsets), paths in zip(deid, series, strict=True):
        for d, p in zip(dsets, paths, strict=True):
            d.save_as(p)
    vols = read_dicom_series([p for paths in series for p in paths])
    assert len(vols) == 2 and vols[0].study_uid == vols[1].study_uid and vols[0].patient_id == "PSN-7"


def test_mapping_is_deterministic_and_salted():
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    a, b, c = UidMap(SECRET), UidMap(SECRET), UidMap("another-secret")
    assert a.map(uid) == b.map(uid)
    assert a.map(uid) != c.map(uid)
    assert a.map(uid) != a.map(uid + "1")
    assert a.date_offset_days("PSN-1") == b.date_offset_days("PSN-1")
    with pytest.raises(ValueError):
        UidMap("")


def test_keep_descriptors_flag():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SeriesDescription = "fill run"
    deidentify_dataset(ds, pseudonym="P", uid_map=UidMap(SECRET), keep_descriptors=True)
    assert ds.SeriesDescription == "fill run"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SeriesDescription = "fill run"
    deidentify_dataset(ds, pseudonym="P", uid_map=UidMap(SECRET), keep_descriptors=False)
    assert "SeriesDescription" not in ds and "StudyDescription" not in ds


def test_deidentify_series_volume_matches_dataset_mapping(tmp_path, dicom_series):
    paths = _two_series_of_a_study(dicom_series)[0]
    [sv] = read_dicom_series(paths)
    uid_map = UidMap(SECRET)
    dsv = deidentify_series_volume(sv, "PSN-7", uid_map)
    ds = pydicom.dcmread(paths[0])
    deidentify_dataset(ds, pseudonym="PSN-7", uid_map=uid_map)
    assert (dsv.series_uid, dsv.study_uid, dsv.frame_of_reference_uid) == (
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID)  # fmt: skip
    assert dsv.study_date == ds.StudyDate != sv.study_date
    assert dsv.patient_id == dsv.patient_name == "PSN-7"
    assert dsv.source_files == [] and dsv.volume_hu is sv.volume_hu
    text = repr({k: v for k, v in vars(dsv).items() if k != "volume_hu"})
    for secret in ("MRN777", "Roe", sv.series_uid, sv.study_uid, "20250611", str(tmp_path)):
        assert secret not in text


def test_deidentified_volume_maps_each_slice_instance_like_the_dataset(dicom_series):
    paths = _two_series_of_a_study(dicom_series)[0]
    [sv] = read_dicom_series(paths)
    uid_map = UidMap(SECRET)
    dsv = deidentify_series_volume(sv, "PSN-7", uid_map)
    by_position = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        original = ds.SOPInstanceUID
        deidentify_dataset(ds, pseudonym="PSN-7", uid_map=uid_map)
        by_position[float(ds.ImagePositionPatient[2])] = (original, ds.SOPInstanceUID)
    in_z_order = [by_position[z] for z in sorted(by_position)]
    assert sv.sop_instance_uids == [original for original, _ in in_z_order]
    assert dsv.sop_instance_uids == [mapped for _, mapped in in_z_order]
    assert not set(dsv.sop_instance_uids) & set(sv.sop_instance_uids)


def test_keep_uids_is_for_our_own_exports_only_cleans_the_rest(dicom_series):
    paths = _two_series_of_a_study(dicom_series)[0]
    [sv] = read_dicom_series(paths)
    kept = deidentify_series_volume(sv, "PSN-7", UidMap(SECRET), keep_uids=True)
    assert (kept.series_uid, kept.study_uid, kept.sop_instance_uids, kept.study_date) == (
        sv.series_uid, sv.study_uid, sv.sop_instance_uids, sv.study_date)  # fmt: skip
    assert kept.source_files == [] and kept.patient_name == kept.patient_id == sv.patient_id
    assert set(kept.header) <= set(sv.header)
