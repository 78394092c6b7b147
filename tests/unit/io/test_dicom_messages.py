"""What the DICOM reader says about bad or unexpected input (issue 17): a truncated file is reported as truncated
(not as a duplicate slice position of its intact twin), an RT Plan / a waveform / a SEG as "not an image", series
by number and description (never by UID); folder reads skip and list non-DICOM files and non-image objects.
And what the writer promises: given SOP instance UIDs, rescale labels, StudyID, references with frame numbers."""

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dla.io.dicom import (
    IngestError,
    NotAnImageError,
    NotDicomError,
    SeriesRef,
    new_uid,
    object_kind,
    read_dicom_series,
    series_label,
    write_dicom_series,
)
from dla.io.seg import label_seg, probability_map


def _series(dicom_series, *, n=5, description="FILL run", number=7, **fields):
    """``n`` slices of a 6x5 ramp (2 x 0.5 x 0.5 mm, origin 0) of patient MRN-1 written into ``tmp_path / "s"``
    by the shared ``dicom_series`` fixture: (volume, paths)."""
    volume = np.arange(n * 6 * 5, dtype=np.int16).reshape(n, 6, 5)
    written = dicom_series(
        "s",
        volume,
        spacing_mm=(2.0, 0.5, 0.5),
        origin_lps=(0.0, 0.0, 0.0),
        series_description=description,
        series_number=number,
        patient_id="MRN-1",
        **fields,
    )
    return written.volume, written.paths


def test_series_label_names_number_and_description():
    assert series_label(3, "3D fill") == "series 3 '3D fill'"
    assert series_label(None, "") == "series (no description)"


def test_object_kind_of_non_image_sop_classes():
    assert object_kind(pydicom.uid.RTPlanStorage) == "an RT Plan"
    assert object_kind("1.2.840.10008.5.1.4.1.1.9.1.1") == "a waveform (12-lead ECG)"
    assert object_kind(pydicom.uid.SegmentationStorage).startswith("a DICOM SEG")
    assert object_kind("1.2.3.4.5") is None


def test_truncated_copy_is_reported_as_truncated_not_as_duplicate_position(tmp_path, dicom_series):
    _, paths = _series(dicom_series)
    data = paths[2].read_bytes()
    (tmp_path / "s" / "copy_of_slice_2.dcm").write_bytes(data[:-20])  # cut inside the pixel data
    with pytest.raises(IngestError) as exc:
        read_dicom_series(sorted((tmp_path / "s").glob("*.dcm")))
    assert "copy_of_slice_2.dcm: truncated pixel data" in str(exc.value)
    assert "duplicate" not in str(exc.value)


def test_rt_plan_and_waveform_are_not_images():
    with pytest.raises(NotAnImageError, match=r"rtplan.dcm: .*an RT Plan, not an image"):
        read_dicom_series([get_testdata_file("rtplan.dcm")])
    with pytest.raises(
        NotAnImageError, match=r"waveform_ecg.dcm: .*a waveform \(12-lead ECG\), not an image"
    ):
        read_dicom_series([get_testdata_file("waveform_ecg.dcm")])


def test_seg_is_refused_as_an_image_volume(tmp_path, dicom_series):
    _, paths = _series(dicom_series, n=4)
    labels = np.zeros((4, 6, 5), np.uint8)
    labels[1:3, 2:4, 1:4] = 1
    labels[0, :2] = 2
    seg = label_seg(labels, [pydicom.dcmread(p) for p in paths], series_description="labels")
    seg_path = tmp_path / "seg.dcm"
    seg.save_as(seg_path)
    with pytest.raises(NotAnImageError, match=r"seg.dcm: a DICOM SEG .*not an image volume") as exc:
        read_dicom_series([seg_path])
    assert "duplicate" not in str(exc.value)


def test_geometry_messages_name_the_series_by_number_and_description_never_the_uid(tmp_path, dicom_series):
    series_uid = new_uid()
    _, paths = _series(dicom_series, series_uid=series_uid, description="3D fill", number=4)
    dup = tmp_path / "s" / "dup.dcm"
    shutil.copy(paths[1], dup)
    ds = pydicom.dcmread(dup)
    ds.SOPInstanceUID = new_uid()
    ds.save_as(dup)
    with pytest.raises(IngestError) as exc:
        read_dicom_series([*paths, dup])
    assert str(exc.value).startswith("series 4 '3D fill': duplicate slice position")
    assert series_uid not in str(exc.value)


def test_folder_read_skips_and_lists_non_dicom_and_non_image_files(tmp_path, dicom_series):
    vol, paths = _series(dicom_series)
    readme = tmp_path / "s" / "README"
    readme.write_text("phantom export\n")
    plan = tmp_path / "s" / "plan.dcm"
    shutil.copy(get_testdata_file("rtplan.dcm"), plan)
    files = [*paths, readme, plan]
    with pytest.raises(NotDicomError, match="README: not a DICOM file"):
        read_dicom_series(files)  # strict by default
    skipped: list = []
    [sv] = read_dicom_series(files, skipped=skipped)
    np.testing.assert_array_equal(sv.volume_hu, vol)
    assert sorted(name for name, _ in skipped) == ["README", "plan.dcm"]
    assert any("an RT Plan, not an image" in reason for _, reason in skipped)
    with pytest.raises(NotAnImageError, match="nothing importable: README: not a DICOM file"):
        read_dicom_series([readme], skipped=[])


def test_reader_keeps_series_number_and_instance_uids_in_z_order(dicom_series):
    uids = [new_uid() for _ in range(5)]
    _, paths = _series(dicom_series, sop_instance_uids=uids, number=12)
    [sv] = read_dicom_series(reversed(paths))
    assert sv.series_number == 12 and sv.label == "series 12 'FILL run'"
    assert sv.sop_instance_uids == uids and sv.frame_numbers == [None] * 5
    assert sv.sop_class_uid == pydicom.uid.CTImageStorage


def test_writer_given_uids_rescale_and_references(tmp_path):
    uids = [new_uid() for _ in range(3)]
    source = [new_uid() for _ in range(3)]
    study = new_uid()
    vol = np.array([[[0, 100]], [[255, 7]], [[3, 9]]], dtype=np.int16)
    paths = write_dicom_series(
        vol, (1.0, 1.0, 1.0), np.eye(4), tmp_path / "d", study_uid=study, series_uid=new_uid(),
        frame_of_reference_uid=new_uid(), series_description="derived", series_number=2, patient_id="PT-1",
        patient_name="PT-1^", sop_instance_uids=uids, rescale_slope=0.5, rescale_intercept=-1.0,
        study_id="ST-ABCDEF-LONG-PSEUDONYM", deidentified=True,
        derived_from=SeriesRef(series_uid="1.2.3.4", study_uid=study, sop_instance_uids=source,
                               frame_numbers=[1, 2, 3]),
    )  # fmt: skip
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == uids[k] and ds.file_meta.MediaStorageSOPInstanceUID == uids[k]
        assert float(ds.RescaleSlope) == 0.5 and float(ds.RescaleIntercept) == -1.0
        assert ds.StudyID == "ST-ABCDEF-LONG-P" and ds.PatientIdentityRemoved == "YES"
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source[k]
        assert ds.SourceImageSequence[0].ReferencedFrameNumber == k + 1
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == "1.2.3.4"
    [sv] = read_dicom_series(paths)
    np.testing.assert_array_equal(sv.volume_hu, np.rint(vol * 0.5 - 1.0).astype(np.int16))
    with pytest.raises(ValueError, match="2 SOP instance UIDs given for a volume of 3 slices"):
        write_dicom_series(
            vol, (1.0, 1.0, 1.0), np.eye(4), tmp_path / "e", study_uid=study, series_uid=new_uid(),
            frame_of_reference_uid=new_uid(), series_description="x", series_number=1, patient_id="P",
            patient_name="P^", sop_instance_uids=uids[:2],
        )  # fmt: skip


def test_probability_map_maps_stored_values_to_probability(dicom_series):
    _, paths = _series(dicom_series, n=3)
    prob = np.random.default_rng(1).integers(0, 256, size=(3, 6, 5)).astype(np.uint8)
    uid = new_uid()
    pm = probability_map(
        prob, [pydicom.dcmread(p) for p in paths], series_description="p", sop_instance_uid=uid
    )
    assert pm.Modality == "OT" or pm.SOPClassUID == pydicom.uid.ParametricMapStorage
    assert pm.SOPInstanceUID == uid and "RescaleType" not in pm
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert float(mapping.RealWorldValueSlope) == pytest.approx(1 / 255)
    # one frame per slice (in highdicom's order: sort them back by position along z)
    z = [
        float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in pm.PerFrameFunctionalGroupsSequence
    ]
    np.testing.assert_array_equal(pm.pixel_array[np.argsort(z)], prob)
    with pytest.raises(ValueError, match="must be uint8"):
        probability_map(prob.astype(np.float32), [pydicom.dcmread(p) for p in paths], series_description="p")
