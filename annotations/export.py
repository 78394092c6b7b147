"""Export of stored volumes: NIfTI for research tools, DICOM (zip) for a PACS.

Every DICOM object exported has stable de-identified UIDs (``ingest.volume_series_uid`` /
``volume_instance_uids`` / ``derived_object_uids``: keyed by the project secret, derived from the stored
volume), so the same download twice is the same series and the SEG zip carries the very fill series of the fill
download. Image volumes (fill, mask, subtracted, other) are CT series in HU; the DLA volume is a DERIVED CT series
in HU whose slices reference the fill's instances (SourceImageSequence, ReferencedSeriesSequence); class maps and
phantom truths are DICOM SEG and vessel probability maps Parametric Maps over the fill series (never labelled HU),
each zipped with that fill series. The patient is the study's patient pseudonym, StudyID the study pseudonym.
A fill imported from a multi-frame object (enhanced or classic) is exported as a single-frame series like any
other, so the derived objects reference its instances one per slice and carry no frame numbers; results sent to
a PACS next to the multi-frame original reference its frames (``dicomweb.send_results``).
"""

import zipfile
from pathlib import Path

import numpy as np
import pydicom

from dla.io.dicom import SeriesRef, write_dicom_series
from dla.io.nifti import write_nifti
from dla.io.seg import label_seg, probability_map

from .ingest import (
    derived_object_uids,
    study_dicom_uid,
    study_frame_of_reference_uid,
    volume_instance_uids,
    volume_series_uid,
)
from .models import Volume

#: Roles written as a DERIVED CT series (HU) referencing the fill.
DERIVED_ROLES = {Volume.Role.DLA}
#: Roles written as a DICOM SEG / a Parametric Map over the fill series.
SEG_ROLES = {Volume.Role.CLASS_MAP, Volume.Role.TRUTH}
PARAMETRIC_ROLES = {Volume.Role.VESSEL_PROB}


class ExportError(ValueError):
    """A volume cannot be exported in the format asked for; the message says why."""


def _volume_stem(volume: Volume) -> str:
    return f"{volume.study.pseudonym}_{volume.role}_{volume.pk}"


def fill_reference(fill: Volume, description: str) -> SeriesRef:
    """The reference a derived object carries to ``fill``'s exported series and instances."""
    return SeriesRef(
        series_uid=volume_series_uid(fill),
        study_uid=study_dicom_uid(fill.study),
        sop_instance_uids=volume_instance_uids(fill),
        derivation_description=description,
    )


def _write_series(volume: Volume, array: np.ndarray, series_dir: Path) -> list[Path]:
    """Write ``volume`` as a CT series (HU) into ``series_dir``; a DLA volume references the study's fill."""
    study = volume.study
    fill = study.volume(Volume.Role.FILL)
    derived_from = None
    if volume.role in DERIVED_ROLES and fill is not None and fill.pk != volume.pk:
        derived_from = fill_reference(fill, f"{volume.get_role_display()} computed by DLA Workbench")
    series_dir.mkdir(parents=True)
    return write_dicom_series(
        array.astype(np.int16, copy=False),
        tuple(volume.spacing_mm),
        np.asarray(volume.affine_lps, dtype=float),
        series_dir,
        study_uid=study_dicom_uid(study),
        series_uid=volume_series_uid(volume),
        sop_instance_uids=volume_instance_uids(volume),
        frame_of_reference_uid=study_frame_of_reference_uid(study),
        series_description=f"{volume.get_role_display()}"[:64],
        series_number=100 + (volume.pk % 800),
        patient_id=study.patient_pseudonym,
        patient_name=f"{study.patient_pseudonym}^",
        study_id=study.pseudonym[:16],
        deidentified=True,
        derived_from=derived_from,
    )


def _zip(archive: Path, members: list[tuple[Path, str]]) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path, name in members:
            zf.write(path, name)
    return archive


def _require_fill(study, what: str) -> Volume:
    fill = study.volume(Volume.Role.FILL)
    if fill is None:
        raise ExportError(
            f"study {study.pseudonym} has no fill volume: {what} is exported as DICOM over the fill series it "
            "was computed on"
        )
    return fill


def _map_object(volume: Volume, fill_slices: list) -> pydicom.Dataset:
    """The SEG (class map, truth) or Parametric Map (vessel probability) of ``volume`` over the fill slices."""
    series_uid, sop_uid = derived_object_uids(volume.role, f"{volume.pk}:{volume.sha256}")
    description = f"{volume.get_role_display()}"[:64]
    array = np.asarray(volume.array())
    if volume.role in PARAMETRIC_ROLES:
        return probability_map(
            array,
            fill_slices,
            series_description=description,
            series_instance_uid=series_uid,
            sop_instance_uid=sop_uid,
            series_number=100 + (volume.pk % 800),
        )
    return label_seg(
        array.astype(np.uint8, copy=False),
        fill_slices,
        series_description=description,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        series_number=100 + (volume.pk % 800),
    )


def export_volume(volume: Volume, fmt: str, work_dir: Path) -> Path:
    """Write ``volume`` into ``work_dir`` as ``fmt`` ('nifti' or 'dicom'); returns the file to send."""
    stem = _volume_stem(volume)
    array = np.asarray(volume.array())
    if fmt == "nifti":
        affine = np.asarray(volume.affine_lps, dtype=float)
        return write_nifti(array, tuple(volume.spacing_mm), affine, work_dir / f"{stem}.nii.gz")
    if volume.role in SEG_ROLES | PARAMETRIC_ROLES:
        fill = _require_fill(volume.study, f"a {volume.get_role_display()}")
        fill_stem = _volume_stem(fill)
        paths = _write_series(fill, np.asarray(fill.array()), work_dir / fill_stem)
        obj = _map_object(volume, [pydicom.dcmread(p) for p in paths])
        obj_path = work_dir / f"{stem}.dcm"
        obj.save_as(obj_path)
        members = [(p, f"{fill_stem}/{p.name}") for p in paths] + [(obj_path, f"{stem}/{obj_path.name}")]
        return _zip(work_dir / f"{stem}_dicom.zip", members)
    paths = _write_series(volume, array, work_dir / stem)
    return _zip(work_dir / f"{stem}_dicom.zip", [(p, f"{stem}/{p.name}") for p in paths])


def label_version_seg(version, fill_slices: list) -> pydicom.Dataset:
    """The DICOM SEG of a label version over ``fill_slices`` (stable UIDs per version)."""
    from .labels import version_labels

    series_uid, sop_uid = derived_object_uids("label-seg", f"{version.pk}:{version.sha256}")
    return label_seg(
        version_labels(version),
        fill_slices,
        series_description=f"Labels v{version.number}: {version.message}"[:64],
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        series_number=300 + (version.number % 600),
    )


def export_label_version(version, fmt: str, work_dir: Path) -> Path:
    """Write a label version as NIfTI (uint8 class ids) or as a zip of the fill CT series plus a DICOM SEG that
    references it (``fmt`` 'nifti' or 'seg')."""
    from .labels import version_labels

    study = version.study
    fill = _require_fill(study, "a label version")
    stem = f"{study.pseudonym}_labels_v{version.number}"
    if fmt == "nifti":
        labels = version_labels(version)
        affine = np.asarray(fill.affine_lps, dtype=float)
        return write_nifti(labels, tuple(fill.spacing_mm), affine, work_dir / f"{stem}.nii.gz")
    fill_stem = _volume_stem(fill)
    paths = _write_series(fill, np.asarray(fill.array()), work_dir / fill_stem)
    seg = label_version_seg(version, [pydicom.dcmread(path) for path in paths])
    seg_path = work_dir / f"{stem}_seg.dcm"
    seg.save_as(seg_path)
    members = [(p, f"{fill_stem}/{p.name}") for p in paths] + [(seg_path, f"{stem}/seg.dcm")]
    return _zip(work_dir / f"{stem}_seg.zip", members)
