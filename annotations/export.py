"""Export of stored volumes: NIfTI for research tools, a DICOM series (zip) for PACS. Derived volumes (DLA,
probability maps) are written as DERIVED/SECONDARY series that reference the study's fill series."""

import zipfile
from pathlib import Path

import numpy as np

from .dicom_io import SeriesRef, new_uid, write_dicom_series
from .ingest import project_uid_map
from .models import Volume
from .nifti_io import write_nifti

DERIVED_ROLES = {Volume.Role.DLA, Volume.Role.VESSEL_PROB, Volume.Role.CLASS_MAP, Volume.Role.TRUTH}


def export_volume(volume: Volume, fmt: str, work_dir: Path) -> Path:
    """Write ``volume`` into ``work_dir`` as ``fmt`` ('nifti' or 'dicom'); returns the file to send."""
    study = volume.study
    stem = f"{study.pseudonym}_{volume.role}_{volume.pk}"
    array = np.asarray(volume.array())
    affine = np.asarray(volume.affine_lps, dtype=float)
    if fmt == "nifti":
        return write_nifti(array, tuple(volume.spacing_mm), affine, work_dir / f"{stem}.nii.gz")
    uid_map = project_uid_map()
    study_uid = study.study_uid or uid_map.map(f"study:{study.pk}")
    fill = study.volume(Volume.Role.FILL)
    derived_from = None
    if volume.role in DERIVED_ROLES and fill is not None and fill.series_uid:
        derived_from = SeriesRef(
            series_uid=fill.series_uid,
            study_uid=study_uid,
            derivation_description=f"{volume.get_role_display()} computed by DLA Workbench",
        )
    series_dir = work_dir / stem
    series_dir.mkdir(parents=True)
    write_dicom_series(
        array.astype(np.int16, copy=False),
        tuple(volume.spacing_mm),
        affine,
        series_dir,
        study_uid=study_uid,
        series_uid=new_uid(),
        frame_of_reference_uid=uid_map.map(f"frame-of-reference:{study_uid}"),
        series_description=f"{volume.get_role_display()}"[:64],
        series_number=100 + (volume.pk % 800),
        patient_id=study.patient_pseudonym,
        patient_name=f"{study.patient_pseudonym}^",
        derived_from=derived_from,
    )
    archive = work_dir / f"{stem}_dicom.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(series_dir.iterdir()):
            zf.write(path, f"{stem}/{path.name}")
    return archive


def export_label_version(version, fmt: str, work_dir: Path) -> Path:
    """Write a label version as NIfTI (uint8 class ids) or as a zip of the fill CT series plus a DICOM SEG that
    references it (``fmt`` 'nifti' or 'seg')."""
    import pydicom

    from .labels import version_labels
    from .seg_export import label_seg

    study = version.study
    fill = study.volume(Volume.Role.FILL)
    labels = version_labels(version)
    stem = f"{study.pseudonym}_labels_v{version.number}"
    affine = np.asarray(fill.affine_lps, dtype=float)
    if fmt == "nifti":
        return write_nifti(labels, tuple(fill.spacing_mm), affine, work_dir / f"{stem}.nii.gz")
    series_zip = export_volume(fill, "dicom", work_dir)
    series_dir = work_dir / f"{study.pseudonym}_{fill.role}_{fill.pk}"
    slices = [pydicom.dcmread(path) for path in sorted(series_dir.glob("*.dcm"))]
    seg = label_seg(labels, slices, series_description=f"Labels v{version.number}: {version.message}"[:64])
    seg_path = work_dir / f"{stem}_seg.dcm"
    seg.save_as(seg_path)
    with zipfile.ZipFile(series_zip, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.write(seg_path, f"{stem}/seg.dcm")
    final = work_dir / f"{stem}_seg.zip"
    series_zip.rename(final)
    return final
