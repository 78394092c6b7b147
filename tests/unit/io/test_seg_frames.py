"""refer_to_frames: a SEG built over single-frame stand-ins of a multi-frame CT's frames ends up referencing that
object's instance and, per SEG frame, the source frame at the same position (checked against the source's own
per-frame positions, not the code's mapping), with the series-level instance list deduplicated."""

import numpy as np
import pydicom
import pytest

from dla.io.dicom import new_uid, read_dicom_series, write_dicom_series
from dla.io.seg import label_seg, refer_to_frames
from tests.dicom_support import random_volume, write_series
from tests.unit.io.test_dicom import _to_enhanced


def _stand_in_seg(tmp_path):
    written = write_series(tmp_path / "s", random_volume((5, 8, 6)))
    mf = _to_enhanced(written.paths, tmp_path / "enhanced.dcm", [3, 0, 4, 1, 2])
    [sv] = read_dicom_series([mf])
    stand_ins = [new_uid() for _ in range(sv.volume_hu.shape[0])]
    paths = write_dicom_series(
        sv.volume_hu.astype(np.int16), sv.spacing_mm, sv.affine_lps, tmp_path / "stand-in",
        study_uid=sv.study_uid, series_uid=sv.series_uid, frame_of_reference_uid=sv.frame_of_reference_uid,
        series_description="fill", series_number=1, patient_id="P1", patient_name="Doe^Jane",
        sop_instance_uids=stand_ins,
    )  # fmt: skip
    labels = np.where(sv.volume_hu > 0, 1, 3).astype(np.uint8)
    seg = label_seg(labels, [pydicom.dcmread(p) for p in paths], series_description="labels")
    return pydicom.dcmread(mf), sv, stand_ins, seg


def test_seg_over_stand_ins_references_the_source_frames(tmp_path):
    source, sv, stand_ins, seg = _stand_in_seg(tmp_path)
    sources = dict(zip(stand_ins, zip(sv.sop_instance_uids, sv.frame_numbers, strict=True), strict=True))
    refer_to_frames(seg, sources, sop_class_uid=sv.sop_class_uid)
    [series_ref] = seg.ReferencedSeriesSequence
    assert [i.ReferencedSOPInstanceUID for i in series_ref.ReferencedInstanceSequence] == [
        source.SOPInstanceUID
    ]
    assert series_ref.ReferencedInstanceSequence[0].ReferencedSOPClassUID == source.SOPClassUID
    referenced = set()
    for item in seg.PerFrameFunctionalGroupsSequence:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        number = int(ref.ReferencedFrameNumber)
        referenced.add(number)
        frame = source.PerFrameFunctionalGroupsSequence[number - 1].PlanePositionSequence[0]
        np.testing.assert_allclose(
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
            [float(v) for v in frame.ImagePositionPatient],
        )
    assert referenced == set(range(1, 6))
    assert stand_ins[0] not in str(seg)


def test_unknown_reference_is_refused(tmp_path):
    _, sv, stand_ins, seg = _stand_in_seg(tmp_path)
    partial = {uid: (sv.sop_instance_uids[0], 1) for uid in stand_ins[1:]}
    with pytest.raises(ValueError, match="not a known source slice"):
        refer_to_frames(seg, partial, sop_class_uid=sv.sop_class_uid)
