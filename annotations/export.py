"""Export of stored volumes: NIfTI for research tools, a DICOM series (zip) for PACS. Derived volumes (DLA,
probability maps) are written as DERIVED/SECONDARY series that reference the study's fill series."""

import zipfile
from pathlib import Path

import numpy as np

from dla.io.dicom import SeriesRef, new_uid, write_dicom_series
from dla.io.nifti import write_nifti

from .ingest import project_uid_map
from .models import Volume

DERIVED_ROLES = {Volume.Role.DLA, Volume.Role.VESSEL_PROB, Volume.Role.CLASS_MAP, Volume.Role.TRUTH}


def _volume_stem(volume: Volume) -> str:
    return f"{volume.study.pseudonym}_{volume.role}_{volume.pk}"


def _write_series(volume: Volume, array: np.ndarray, series_dir: Path) -> list[Path]:
    """Write ``volume`` as a CT series into ``series_dir``; derived volumes reference the study's fill series."""
    study = volume.study
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
    series_dir.mkdir(parents=True)
    return write_dicom_series(
        array.astype(np.int16, copy=False),
        tuple(volume.spacing_mm),
        np.asarray(volume.affine_lps, dtype=float),
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


def _zip(archive: Path, members: list[tuple[Path, str]]) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path, name in members:
            zf.write(path, name)
    return archive


def export_volume(volume: Volume, fmt: str, work_dir: Path) -> Path:
    """Write ``volume`` into ``work_dir`` as ``fmt`` ('nifti' or 'dicom'); returns the file to send."""
    stem = _volume_stem(volume)
    array = np.asarray(volume.array())
    if fmt == "nifti":
        affine = np.asarray(volume.affine_lps, dtype=float)
        return write_nifti(array, tuple(volume.spacing_mm), affine, work_dir / f"{stem}.nii.gz")
    paths = _write_series(volume, array, work_dir / stem)
    return _zip(work_dir / f"{stem}_dicom.zip", [(p, f"{stem}/{p.name}") for p in paths])


def export_label_version(version, fmt: str, work_dir: Path) -> Path:
    """Write a label version as NIfTI (uint8 class ids) or as a zip of the fill CT series plus a DICOM SEG that
    references it (``fmt`` 'nifti' or 'seg')."""
    import pydicom

    from dla.io.seg import label_seg

    from .labels import version_labels

    study = version.study
    fill = study.volume(Volume.Role.FILL)
    labels = version_labels(version)
    stem = f"{study.pseudonym}_labels_v{version.number}"
    affine = np.asarray(fill.affine_lps, dtype=float)
    if fmt == "nifti":
        return write_nifti(labels, tuple(fill.spacing_mm), affine, work_dir / f"{stem}.nii.gz")
    fill_stem = _volume_stem(fill)
    paths = _write_series(fill, np.asarray(fill.array()), work_dir / fill_stem)
    slices = [pydicom.dcmread(path) for path in paths]
    seg = label_seg(labels, slices, series_description=f"Labels v{version.number}: {version.message}"[:64])
    seg_path = work_dir / f"{stem}_seg.dcm"
    seg.save_as(seg_path)
    members = [(p, f"{fill_stem}/{p.name}") for p in paths] + [(seg_path, f"{stem}/seg.dcm")]
    return _zip(work_dir / f"{stem}_seg.zip", members)
