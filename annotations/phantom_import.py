"""Phantom subjects on disk and in the database: write a subject as DICOM series (fill, mask, subtracted share
one Study and Frame of Reference UID, each its own Series UID) plus NIfTI and a JSON sidecar; import a subject
through the real ingest path (DICOM files -> de-identified Study), attaching the exact truth map."""

import json
import tempfile
from pathlib import Path

import numpy as np

from dla.io.dicom import new_uid, write_dicom_series
from dla.io.nifti import write_nifti
from dla.phantoms import PhantomSubject

from .ingest import ingest_files
from .models import Study, Volume

RUNS = (
    ("fill", "FILL contrast-enhanced CBCT", 1),
    ("mask", "MASK native CBCT", 2),
    ("subtracted", "SUBTRACTED 3D-DSA", 3),
)


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_subject(
    subject: PhantomSubject,
    out_dir: Path,
    *,
    subject_id: str,
    nifti: bool = True,
    extra_meta: dict | None = None,
) -> Path:
    """Write ``subject`` under ``out_dir/subject_id``: ``dicom/<run>/slice_*.dcm``, ``nifti/<run>.nii.gz`` (and
    ``truth.nii.gz``), ``meta.json``. Returns the subject folder."""
    folder = Path(out_dir) / subject_id
    study_uid, frame_uid = new_uid(), new_uid()
    for role, description, number in RUNS:
        write_dicom_series(
            getattr(subject, f"{role}_hu"),
            subject.spacing_mm,
            subject.affine_lps,
            folder / "dicom" / role,
            study_uid=study_uid,
            series_uid=new_uid(),
            frame_of_reference_uid=frame_uid,
            series_description=description,
            series_number=number,
            patient_id=subject_id,
            patient_name=f"PHANTOM^{subject_id}",
        )
        if nifti:
            write_nifti(
                getattr(subject, f"{role}_hu"),
                subject.spacing_mm,
                subject.affine_lps,
                folder / "nifti" / f"{role}.nii.gz",
            )
    if nifti:
        write_nifti(subject.truth, subject.spacing_mm, subject.affine_lps, folder / "nifti" / "truth.nii.gz")
    meta = {
        "subject_id": subject_id,
        "injection": subject.injection,
        "motion": subject.motion,
        "spacing_mm": subject.spacing_mm,
        "params": subject.params,
        **(extra_meta or {}),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default))
    return folder


def import_subject(
    subject: PhantomSubject,
    *,
    subject_id: str,
    cohort: str = Study.Cohort.UNASSIGNED,
    user=None,
    progress=lambda f, m: None,
) -> Study:
    """Write ``subject`` as DICOM, ingest it like any upload (de-identified), then attach the truth map and the
    phantom's parameters (motion, injection, region masks' voxel counts) to the study."""
    with tempfile.TemporaryDirectory(prefix="phantom-") as tmp:
        folder = write_subject(subject, Path(tmp), subject_id=subject_id, nifti=False)
        study, _ = ingest_files(
            [folder / "dicom"],
            work_dir=Path(tmp) / "work",
            user=user,
            pseudonym=subject_id,
            cohort=cohort,
            injection_site=subject.injection,
            progress=progress,
        )
    Volume.create_from_array(
        study=study,
        role=Volume.Role.TRUTH,
        array=subject.truth,
        spacing_mm=subject.spacing_mm,
        affine_lps=subject.affine_lps,
        source="phantom truth",
    )
    study.source = "phantom"
    study.metadata = {
        **study.metadata,
        "phantom": json.loads(
            json.dumps(
                {"motion": subject.motion, "injection": subject.injection, "params": subject.params},
                default=_json_default,
            )
        ),
    }
    study.save(update_fields=["source", "metadata"])
    return study
