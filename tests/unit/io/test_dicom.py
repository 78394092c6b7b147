"""Tests for dla.io.dicom: round trips, real pydicom test files, validation errors, DICOM conformance."""

import random
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dla.io.dicom import (
    DicomWriteError,
    IngestError,
    SeriesRef,
    infer_role_hint,
    new_uid,
    read_dicom_series,
    write_dicom_series,
)
from tests.dicom_support import axis_affine, random_volume


def test_round_trip_anisotropic(dicom_series):
    spacing = (2.5, 0.7, 0.45)
    vol, affine, paths = dicom_series(spacing_mm=spacing)
    [sv] = read_dicom_series(paths)
    assert sv.volume_hu.dtype == np.int16
    np.testing.assert_array_equal(sv.volume_hu, vol)
    np.testing.assert_allclose(sv.spacing_mm, spacing, rtol=1e-6)
    np.testing.assert_allclose(sv.affine_lps, affine, atol=1e-5)
    assert sv.patient_id == "PID-7" and sv.patient_name == "Doe^Jane" and sv.modality == "CT"
    assert sv.study_date == "20260101" and sv.role_hint == "fill"
    assert sv.source_files == [str(p) for p in paths]
    assert "PixelData" not in sv.header and sv.header["n_slices"] == vol.shape[0]


def test_round_trip_rotated_orientation(dicom_series):
    # rotation about z by 30 degrees: oblique in-plane, slices still stacked along the normal
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    spacing = (1.25, 0.5, 0.5)
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([spacing[2], spacing[1], spacing[0]])
    affine[:3, 3] = (10, -20, 30)
    vol, _, paths = dicom_series(spacing_mm=spacing, affine_lps=affine)
    [sv] = read_dicom_series(paths)
    np.testing.assert_array_equal(sv.volume_hu, vol)
    np.testing.assert_allclose(sv.affine_lps, affine, atol=1e-5)


def test_shuffled_file_order(dicom_series):
    vol, affine, paths = dicom_series()
    shuffled = list(paths)
    random.Random(1).shuffle(shuffled)
    assert shuffled != paths
    [sv] = read_dicom_series(shuffled)
    np.testing.assert_array_equal(sv.volume_hu, vol)
    np.testing.assert_allclose(sv.affine_lps, affine, atol=1e-5)


def test_slice_order_uses_position_not_instance_number(dicom_series):
    vol, affine, paths = dicom_series()
    for p in paths:  # scramble InstanceNumber: ordering must come from ImagePositionPatient
        ds = pydicom.dcmread(p)
        ds.InstanceNumber = random.Random(str(p)).randint(1, 1000)
        ds.save_as(p)
    [sv] = read_dicom_series(reversed(paths))
    np.testing.assert_array_equal(sv.volume_hu, vol)


def test_two_series_returned_separately(dicom_series):
    study = new_uid()
    vol_a, _, paths_a = dicom_series(name="a", study_uid=study, series_description="MASK run")
    vol_b, _, paths_b = dicom_series(
        volume=random_volume(seed=5), name="b", study_uid=study, series_description="DSA"
    )
    mixed = [p for pair in zip(paths_a, paths_b, strict=True) for p in pair]
    out = read_dicom_series(mixed)
    assert len(out) == 2
    np.testing.assert_array_equal(out[0].volume_hu, vol_a)
    np.testing.assert_array_equal(out[1].volume_hu, vol_b)
    assert [sv.role_hint for sv in out] == ["mask", "subtracted"]
    assert out[0].study_uid == out[1].study_uid == study


def test_ct_small_hu_matches_pydicom():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected = np.rint(
        ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    )
    [sv] = read_dicom_series([path])
    assert sv.volume_hu.shape == (1, ds.Rows, ds.Columns)
    np.testing.assert_array_equal(sv.volume_hu[0], expected.astype(np.int16))
    assert sv.spacing_mm[1:] == (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    np.testing.assert_allclose(sv.affine_lps[:3, 3], [float(v) for v in ds.ImagePositionPatient])
    assert sv.series_uid == ds.SeriesInstanceUID and sv.header["KVP"] == 120.0


def test_rescale_slope_and_clipping(dicom_series):
    vol, _, paths = dicom_series(volume=np.full((2, 4, 4), 1000, np.int16))
    ds = pydicom.dcmread(paths[0])
    ds.RescaleSlope = "40.5"
    ds.RescaleIntercept = "-7.3"
    ds.save_as(paths[0])
    ds = pydicom.dcmread(paths[1])
    ds.RescaleSlope = "0.5"
    ds.RescaleIntercept = "-0.25"
    ds.save_as(paths[1])
    [sv] = read_dicom_series(paths)
    assert np.all(sv.volume_hu[0] == 32767)  # 1000 * 40.5 - 7.3 clipped
    assert np.all(sv.volume_hu[1] == np.rint(1000 * 0.5 - 0.25))


def test_big_endian_and_implicit_match_explicit():
    ref = read_dicom_series([get_testdata_file("MR_small.dcm")])[0].volume_hu
    for name in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm"):
        np.testing.assert_array_equal(read_dicom_series([get_testdata_file(name)])[0].volume_hu, ref)


def test_jpeg2000_decodes_or_is_refused():
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    path = get_testdata_file("MR_small_jp2klossless.dcm")
    if get_decoder(JPEG2000Lossless).is_available:
        ref = read_dicom_series([get_testdata_file("MR_small.dcm")])[0].volume_hu
        np.testing.assert_array_equal(read_dicom_series([path])[0].volume_hu, ref)
    else:
        with pytest.raises(
            IngestError, match=r"JPEG 2000 .*\(1\.2\.840\.10008\.1\.2\.4\.90\) cannot be decoded"
        ):
            read_dicom_series([path])


def test_jpeg_ls_decoded_with_a_handler_or_refused_naming_the_syntax():
    """highdicom brings pyjpegls, a JPEG-LS decoder; without one the syntax must be named in the refusal."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    if get_decoder(JPEGLSLossless).is_available:
        reference = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        expected = reference.pixel_array.astype(np.float64) * float(getattr(reference, "RescaleSlope", 1))
        expected += float(getattr(reference, "RescaleIntercept", 0))
        np.testing.assert_array_equal(read_dicom_series([path])[0].volume_hu[0], np.round(expected))
    else:
        with pytest.raises(
            IngestError,
            match=r"MR_small_jpeg_ls_lossless.dcm: JPEG-LS Lossless Image Compression \(1\.2\.840\.10008\.1\.2\.4\.80\) "
            r"cannot be decoded: no pixel data handler installed",
        ):
            read_dicom_series([path])


def test_unknown_transfer_syntax_refused(dicom_series):
    _, _, paths = dicom_series(volume=random_volume((1, 4, 4)))
    ds = pydicom.dcmread(paths[0])
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    ds.save_as(paths[0], enforce_file_format=False)
    with pytest.raises(IngestError, match=r"1\.2\.3\.4\.5\.6\.7"):
        read_dicom_series(paths)


def test_classic_multiframe_rtdose():
    path = get_testdata_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    [sv] = read_dicom_series([path])
    assert sv.volume_hu.shape == (ds.NumberOfFrames, ds.Rows, ds.Columns)
    np.testing.assert_array_equal(sv.volume_hu, np.clip(ds.pixel_array, -32768, 32767))
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    assert sv.spacing_mm[0] == pytest.approx(offsets[1] - offsets[0])
    np.testing.assert_allclose(sv.affine_lps[:3, 3], [float(v) for v in ds.ImagePositionPatient])


def _to_enhanced(paths, out_path, frame_order):
    """Pack single-frame files into one enhanced multi-frame CT-like object (frames in ``frame_order``)."""
    slices = [pydicom.dcmread(p) for p in paths]
    first = slices[0]
    ds = Dataset()
    ds.file_meta = first.file_meta.copy()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality", "PatientID",
               "PatientName", "StudyDate", "SeriesDescription", "ImageType", "SamplesPerPixel",
               "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
               "PixelRepresentation"):  # fmt: skip
        setattr(ds, kw, getattr(first, kw))
    ds.NumberOfFrames = len(frame_order)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = first.PixelSpacing
    pm.SliceThickness = first.SliceThickness
    shared.PixelMeasuresSequence = Sequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = first.ImageOrientationPatient
    shared.PlaneOrientationSequence = Sequence([po])
    pvt = Dataset()
    pvt.RescaleSlope = "1"
    pvt.RescaleIntercept = "-10"
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for i in frame_order:
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = slices[i].ImagePositionPatient
        item.PlanePositionSequence = Sequence([pp])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.PixelData = b"".join(slices[i].PixelData for i in frame_order)
    ds.save_as(out_path, enforce_file_format=True)
    return out_path


def test_enhanced_multiframe(tmp_path, dicom_series):
    vol, affine, paths = dicom_series(volume=random_volume((5, 8, 6)))
    order = [3, 0, 4, 1, 2]
    mf = _to_enhanced(paths, tmp_path / "enhanced.dcm", order)
    [sv] = read_dicom_series([mf])
    np.testing.assert_array_equal(sv.volume_hu, vol.astype(np.int32) - 10)
    np.testing.assert_allclose(sv.affine_lps, affine, atol=1e-5)
    assert sv.header["n_files"] == 1 and sv.header["n_slices"] == 5


def test_real_enhanced_seg_with_inconsistent_frame_count_refused():
    # pydicom's liver_1frame.dcm declares 1 frame but carries 3 per-frame functional group items
    with pytest.raises(IngestError, match="liver_1frame.dcm: PerFrameFunctionalGroupsSequence has 3 items"):
        read_dicom_series([get_testdata_file("liver_1frame.dcm")])


def test_non_dicom_file_refused(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, this is not DICOM\n" * 20)
    with pytest.raises(IngestError, match="notes.txt: not a DICOM file"):
        read_dicom_series([p])


def test_truncated_files_refused(dicom_series):
    with pytest.raises(
        IngestError, match=r"MR_truncated.dcm: truncated pixel data: \d+ bytes, expected 8192"
    ):
        read_dicom_series([get_testdata_file("MR_truncated.dcm")])
    _, _, paths = dicom_series()
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) // 2])  # cut inside the pixel data
    with pytest.raises(
        IngestError, match=rf"{paths[2].name}: missing pixel data \(not an image or truncated"
    ):
        read_dicom_series(paths)
    paths[3].write_bytes(paths[3].read_bytes()[:300])  # cut inside the header
    with pytest.raises(IngestError, match=rf"{paths[3].name}: (missing pixel data|truncated or corrupt)"):
        read_dicom_series(paths[3:4])


def test_missing_pixel_data_refused(tmp_path):
    with pytest.raises(IngestError, match="rtplan.dcm: missing pixel data"):
        read_dicom_series([get_testdata_file("rtplan.dcm")])


def _edit(path, **changes):
    ds = pydicom.dcmread(path)
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.save_as(path)


def test_rows_columns_mismatch_refused(dicom_series):
    _, _, paths = dicom_series()
    _, _, other = dicom_series(volume=random_volume((1, 12, 9)), name="o")
    ds = pydicom.dcmread(other[0])
    ref = pydicom.dcmread(paths[1])
    ds.SeriesInstanceUID = ref.SeriesInstanceUID
    ds.ImagePositionPatient = [float(v) + 0 for v in ref.ImagePositionPatient]
    ds.save_as(paths[1])
    with pytest.raises(IngestError, match=r"matrix size differs: .* is 12x9 .* is 12x10"):
        read_dicom_series(paths)


def test_inconsistent_orientation_refused(dicom_series):
    _, _, paths = dicom_series()
    _edit(paths[2], ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6])
    with pytest.raises(IngestError, match=f"inconsistent orientation: {paths[2].name}"):
        read_dicom_series(paths)


def test_missing_slice_refused_with_gap_location(dicom_series):
    _, _, paths = dicom_series()  # dz = 2.5 mm, origin z = -13.25
    del paths[3]
    with pytest.raises(IngestError) as exc:
        read_dicom_series(paths)
    msg = str(exc.value)
    assert "non-uniform slice spacing: gap of 5.000 mm" in msg
    assert "slice_00002.dcm at -8.250 mm and slice_00004.dcm at -3.250 mm" in msg
    assert "expected 2.500 mm (tolerance 1%)" in msg and "1 slice(s) missing" in msg


def test_slightly_irregular_spacing_within_tolerance_accepted(dicom_series):
    vol, _, paths = dicom_series()
    ds = pydicom.dcmread(paths[2])
    pos = [float(v) for v in ds.ImagePositionPatient]
    _edit(paths[2], ImagePositionPatient=[pos[0], pos[1], pos[2] + 0.01])  # 0.4 % of 2.5 mm
    np.testing.assert_array_equal(read_dicom_series(paths)[0].volume_hu, vol)
    _edit(paths[2], ImagePositionPatient=[pos[0], pos[1], pos[2] + 0.2])  # 8 %
    with pytest.raises(IngestError, match="non-uniform slice spacing"):
        read_dicom_series(paths)


def test_duplicate_position_refused(tmp_path, dicom_series):
    _, _, paths = dicom_series()
    dup = tmp_path / "dup.dcm"
    shutil.copy(paths[1], dup)
    _edit(dup, SOPInstanceUID=new_uid())
    with pytest.raises(
        IngestError, match=r"duplicate slice position .*(slice_00001.dcm and dup.dcm|dup.dcm and sl)"
    ):
        read_dicom_series([*paths, dup])


def test_inconsistent_pixel_type_refused(dicom_series):
    _, _, paths = dicom_series(volume=np.abs(random_volume()))
    ds = pydicom.dcmread(paths[4])
    ds.PixelRepresentation = 0
    ds.save_as(paths[4])
    with pytest.raises(
        IngestError, match=rf"inconsistent pixel type: {paths[4].name} has .*=\(16, 16, 0, 1\)"
    ):
        read_dicom_series(paths)


def test_role_hints():
    assert infer_role_hint("Head CBCT DSA subtracted") == "subtracted"
    assert infer_role_hint("3D mask run", ["ORIGINAL", "PRIMARY"]) == "mask"
    assert infer_role_hint("Fill 20s") == "fill"
    assert infer_role_hint("DLA result", ["DERIVED", "SECONDARY"]) == "dla"
    assert infer_role_hint("non-contrast head") == "mask"
    assert infer_role_hint("PRESET 4") is None  # whole words only


def test_writer_rejects_inconsistent_inputs(tmp_path):
    vol = random_volume((2, 4, 4))
    with pytest.raises(DicomWriteError, match="does not match the affine"):
        write_dicom_series(vol, (1.0, 1.0, 1.0), axis_affine((2.0, 1.0, 1.0)), tmp_path, study_uid=new_uid(),
                           series_uid=new_uid(), frame_of_reference_uid=new_uid(), series_description="x",
                           series_number=1, patient_id="p", patient_name="n")  # fmt: skip
    with pytest.raises(DicomWriteError, match="int16"):
        write_dicom_series(vol.astype(np.float32), (1.0, 1.0, 1.0), np.eye(4), tmp_path, study_uid=new_uid(),
                           series_uid=new_uid(), frame_of_reference_uid=new_uid(), series_description="x",
                           series_number=1, patient_id="p", patient_name="n")  # fmt: skip


def test_derived_series_references_source(dicom_series):
    study = new_uid()
    _, _, src_paths = dicom_series(name="src", study_uid=study)
    src = [pydicom.dcmread(p) for p in src_paths]
    ref = SeriesRef(
        series_uid=src[0].SeriesInstanceUID,
        study_uid=study,
        sop_instance_uids=[d.SOPInstanceUID for d in src],
        derivation_description="DLA vessel prediction",
    )
    _, _, paths = dicom_series(name="dla", study_uid=study, series_description="DLA", derived_from=ref)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.DerivationDescription == "DLA vessel prediction"
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src[k].SOPInstanceUID
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src[0].SeriesInstanceUID
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPInstanceUID not in {d.SOPInstanceUID for d in src}
    [sv] = read_dicom_series(paths)
    assert sv.role_hint == "dla"


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed")
@pytest.mark.parametrize("derived", [False, True, "other-study"])
def test_dciodvfy_reports_no_errors(derived, dicom_series):
    ref = None
    study = new_uid()
    if derived:
        ref = SeriesRef(new_uid(), study if derived is True else new_uid(), [new_uid(), new_uid(), new_uid()])
    _, _, paths = dicom_series(volume=random_volume((3, 8, 8)), study_uid=study, derived_from=ref,
                         patient_name="Müller^Jürgen")  # fmt: skip
    for p in (paths[0], paths[-1]):
        res = subprocess.run(["dciodvfy", str(p)], capture_output=True, text=True, timeout=60)
        report = res.stdout + res.stderr
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], report
        assert "CTImage" in report


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmtk (dcmdump) not installed")
def test_dcmdump_parses_output(dicom_series):
    vol, _, paths = dicom_series(volume=random_volume((2, 8, 8)))
    res = subprocess.run(["dcmdump", "-E", str(paths[1])], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "CTImageStorage" in res.stdout and "(0028,0103) US 1" in res.stdout
    assert "ImagePositionPatient" in res.stdout and "E:" not in res.stderr
