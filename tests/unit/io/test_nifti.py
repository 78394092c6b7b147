"""Tests for dla.io.nifti: nibabel's own test images, RAS<->LPS, axis order, round trips, refusals."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dla.classes import BONE, SOFT_TISSUE, VESSEL
from dla.io.dicom import IngestError, read_dicom_series
from dla.io.nifti import NiftiWriteError, read_nifti, write_nifti
from tests.dicom_support import random_volume

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz"])
def test_reads_nibabel_test_images(name):
    path = NIB_DATA / name
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    sv = read_nifti(path)
    assert sv.volume_hu.dtype == np.int16
    assert sv.volume_hu.shape == tuple(reversed(img.shape))
    # voxel (i, j, k) of nibabel is [k, j, i] here, at the same physical point (RAS -> LPS: negate x and y)
    rng = np.random.default_rng(0)
    for _ in range(20):
        i, j, k = (int(rng.integers(0, s)) for s in img.shape)
        assert sv.volume_hu[k, j, i] == int(np.rint(data[i, j, k]))
        ras = img.affine @ [i, j, k, 1]
        lps = sv.affine_lps @ [i, j, k, 1]
        np.testing.assert_allclose(lps[:3], [-ras[0], -ras[1], ras[2]], atol=1e-6)
    zooms = img.header.get_zooms()[:3]
    np.testing.assert_allclose(sv.spacing_mm, (zooms[2], zooms[1], zooms[0]), rtol=1e-6)
    assert sv.series_uid.startswith("2.25.") and sv.series_uid == read_nifti(path).series_uid
    assert sv.patient_id == "" and sv.frame_of_reference_uid is None


def test_anatomical_orientation_is_las_in_lps_terms():
    sv = read_nifti(NIB_DATA / "anatomical.nii")
    # nibabel says L, A, S: +i goes Left, which is +x in LPS; +j goes Anterior, which is -y in LPS
    assert nib.aff2axcodes(nib.load(NIB_DATA / "anatomical.nii").affine) == ("L", "A", "S")
    assert sv.affine_lps[0, 0] > 0 and sv.affine_lps[1, 1] < 0 and sv.affine_lps[2, 2] > 0


def test_4d_refused_naming_shape():
    with pytest.raises(IngestError, match=r"example4d.nii.gz: 4D NIfTI of shape \(128, 96, 24, 2\)"):
        read_nifti(NIB_DATA / "example4d.nii.gz")


def test_round_trip_int16_oblique(tmp_path):
    vol = np.random.default_rng(1).integers(-1024, 3000, (7, 9, 11)).astype(np.int16)
    spacing = (1.5, 0.8, 0.6)
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([spacing[2], spacing[1], spacing[0]])
    affine[:3, 3] = (5, -7, 9)
    for suffix in (".nii", ".nii.gz"):
        path = write_nifti(vol, spacing, affine, tmp_path / f"v{suffix}")
        sv = read_nifti(path)
        np.testing.assert_array_equal(sv.volume_hu, vol)
        np.testing.assert_allclose(sv.affine_lps, affine, atol=1e-5)
        np.testing.assert_allclose(sv.spacing_mm, spacing, rtol=1e-6)
        img = nib.load(path)
        assert img.get_data_dtype() == np.int16
        np.testing.assert_allclose(img.affine[:2], -affine[:2], atol=1e-5)  # RAS stored in the file
        assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1


def test_label_map_round_trip(tmp_path):
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3], labels[2, 1, 1], labels[3, 4, 5] = VESSEL, BONE, SOFT_TISSUE
    path = write_nifti(labels, (1, 1, 1), np.eye(4), tmp_path / "lab.nii.gz")
    assert nib.load(path).get_data_dtype() == np.uint8
    sv = read_nifti(path, as_labels=True)
    assert sv.volume_hu.dtype == np.uint8
    np.testing.assert_array_equal(sv.volume_hu, labels)


def test_float_data_rounded_and_clipped(tmp_path):
    data = np.array([[[1.4, 1.6, -2.5, 40000.0, -1e6, np.nan]]], np.float32)  # x, y, z = 1, 1, 6
    path = tmp_path / "f.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    sv = read_nifti(path)
    assert sv.volume_hu.dtype == np.int16 and sv.volume_hu.shape == (6, 1, 1)
    assert sv.volume_hu[:, 0, 0].tolist() == [1, 2, -2, 32767, -32768, 0]


def test_dicom_to_nifti_to_dicom_geometry(tmp_path, dicom_series):
    vol = random_volume((4, 6, 5), seed=2, low_hu=-1000, high_hu=2000)
    _, _, paths = dicom_series("d", vol, spacing_mm=(2.0, 0.5, 0.75), origin_lps=(-20, 30, -40))
    [dv] = read_dicom_series(paths)
    nv = read_nifti(write_nifti(dv.volume_hu, dv.spacing_mm, dv.affine_lps, tmp_path / "v.nii.gz"))
    np.testing.assert_array_equal(nv.volume_hu, vol)
    np.testing.assert_allclose(nv.affine_lps, dv.affine_lps, atol=1e-5)


def test_write_refuses_bad_input(tmp_path):
    with pytest.raises(NiftiWriteError, match="int16"):
        write_nifti(np.zeros((2, 2, 2), np.float32), (1, 1, 1), np.eye(4), tmp_path / "x.nii")
    with pytest.raises(NiftiWriteError, match="does not match"):
        write_nifti(np.zeros((2, 2, 2), np.int16), (2, 1, 1), np.eye(4), tmp_path / "x.nii")


def test_not_nifti_refused(tmp_path):
    p = tmp_path / "x.nii"
    p.write_bytes(b"garbage" * 100)
    with pytest.raises(IngestError, match="x.nii: not a readable NIfTI file"):
        read_nifti(p)
