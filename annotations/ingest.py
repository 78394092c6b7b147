"""Ingest: turn uploaded files (a directory, files, or a zip of a DICOM series or NIfTI) into a Study with
de-identified Volumes, all or nothing.

The numeric readers (``dicom_io``, ``nifti_io``, ``safe_archive``, ``deidentify``) do the parsing; this module
decides roles, checks that the volumes of a study share one grid, writes the voxels, and creates the rows in one
transaction. On any error the files it wrote are removed and nothing is left in the database.
"""

import hashlib
import hmac
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from dla.io.archive import extract_zip
from dla.io.deidentify import UidMap, deidentify_series_volume
from dla.io.dicom import IngestError, SeriesVolume, read_dicom_series
from dla.io.nifti import read_nifti

from . import volume_store
from .models import PseudonymMap, Study, Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GRID_ROLES = {Volume.Role.FILL, Volume.Role.MASK, Volume.Role.SUBTRACTED, Volume.Role.DLA}
AFFINE_TOLERANCE_MM = 0.01


def project_uid_map() -> UidMap:
    return UidMap(settings.SECRET_KEY)


def patient_pseudonym_for(patient_id: str) -> str:
    """A stable pseudonym for a patient ID (keyed hash: the same patient maps to the same pseudonym across
    imports, and the ID cannot be recovered without the project secret)."""
    if not patient_id:
        return "PT-" + secrets.token_hex(4).upper()
    digest = hmac.new(settings.SECRET_KEY.encode(), f"patient:{patient_id}".encode(), hashlib.sha256)
    return "PT-" + digest.hexdigest()[:8].upper()


def new_study_pseudonym() -> str:
    while True:
        candidate = "ST-" + secrets.token_hex(3).upper()
        if not Study.objects.filter(pseudonym=candidate).exists():
            return candidate


def collect_files(paths: list[Path], work_dir: Path) -> list[Path]:
    """Expand directories recursively and extract zips (safely, into ``work_dir``); returns regular files."""
    candidates: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            candidates.append(path)
        else:
            raise IngestError(f"{path.name}: no such file")
    files: list[Path] = []
    for index, path in enumerate(candidates):
        if path.suffix.lower() == ".zip":
            dest = work_dir / f"zip-{index}-{path.stem}"
            files.extend(extract_zip(path, dest, max_total_bytes=settings.DLA_MAX_UPLOAD_BYTES))
        else:
            files.append(path)
    files = [f for f in files if not f.name.startswith(".")]
    if not files:
        raise IngestError("the upload contains no files")
    return files


def read_series(files: list[Path]) -> list[SeriesVolume]:
    nifti = [f for f in files if f.name.lower().endswith(NIFTI_SUFFIXES)]
    dicom = [f for f in files if f not in nifti]
    series = [read_nifti(f) for f in nifti]
    if dicom:
        series.extend(read_dicom_series(dicom))
    return series


def _check_same_grid(volumes: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """``volumes``: (role, shape, affine) of grid roles; all must match the first."""
    if len(volumes) < 2:
        return
    role0, shape0, affine0 = volumes[0]
    for role, shape, affine in volumes[1:]:
        if tuple(shape) != tuple(shape0):
            raise IngestError(
                f"the {role} volume's grid {tuple(shape)} does not match the {role0} volume's {tuple(shape0)}; "
                "fill, mask, subtracted and DLA volumes of a study must share one voxel grid"
            )
        if not np.allclose(affine, affine0, atol=AFFINE_TOLERANCE_MM):
            raise IngestError(
                f"the {role} volume's position/orientation does not match the {role0} volume's "
                f"(affines differ by more than {AFFINE_TOLERANCE_MM} mm)"
            )


def assign_roles(series: list[SeriesVolume], role: str | None) -> list[tuple[str, SeriesVolume]]:
    valid = set(Volume.Role.values) - {Volume.Role.TRUTH, Volume.Role.CLASS_MAP, Volume.Role.VESSEL_PROB}
    if role is not None and role not in valid:
        raise IngestError(f"unknown volume role {role!r}; use one of {', '.join(sorted(valid))}")
    if role is not None and len(series) > 1:
        raise IngestError(
            f"the upload contains {len(series)} series but one role ({role}) was given; "
            "upload one series per role, or leave the role empty to infer it from the DICOM tags"
        )
    studies = {s.study_uid for s in series if s.study_uid}
    if len(studies) > 1:
        raise IngestError(f"the upload mixes {len(studies)} different studies; import one study at a time")
    assigned = [(role or s.role_hint or Volume.Role.OTHER, s) for s in series]
    seen: dict[str, str] = {}
    for assigned_role, s in assigned:
        if assigned_role in GRID_ROLES and assigned_role in seen:
            raise IngestError(
                f"two series would both become the {assigned_role} volume ({seen[assigned_role]!r} and "
                f"{s.series_description!r}); upload them separately with explicit roles"
            )
        seen[assigned_role] = s.series_description
    return assigned


def ingest_files(
    paths: list[Path],
    *,
    work_dir: Path,
    user=None,
    study: Study | None = None,
    pseudonym: str | None = None,
    role: str | None = None,
    cohort: str = Study.Cohort.UNASSIGNED,
    injection_site: str = Study.Injection.UNKNOWN,
    deidentify: bool = True,
    source_tag: str = "",
    progress: Callable[[float, str], None] = lambda f, m: None,
) -> tuple[Study, list[Volume]]:
    """Read, de-identify and store ``paths`` as volumes of ``study`` (or of a new study). All or nothing."""
    progress(0.05, "reading files")
    files = collect_files(paths, work_dir)
    progress(0.15, f"parsing {len(files)} files")
    series = read_series(files)
    assigned = assign_roles(series, role)
    progress(0.6, f"{len(series)} series read; checking geometry")

    grid = [(r, s.volume_hu.shape, s.affine_lps) for r, s in assigned if r in GRID_ROLES]
    if study is not None:
        grid = [
            (v.role, tuple(v.shape), np.asarray(v.affine_lps))
            for v in study.volumes.filter(role__in=GRID_ROLES)
        ] + grid
    _check_same_grid(grid)

    original_patient = next((s.patient_id for _, s in assigned if s.patient_id), "")
    original_identity = {
        "original_patient_id": original_patient,
        "original_patient_name": next((str(s.patient_name) for _, s in assigned if s.patient_name), ""),
        "original_study_uid": next((s.study_uid for _, s in assigned if s.study_uid), ""),
    }
    study_pseudonym = study.pseudonym if study else (pseudonym or new_study_pseudonym())
    uid_map = project_uid_map()
    if deidentify:
        assigned = [(r, deidentify_series_volume(s, study_pseudonym, uid_map)) for r, s in assigned]

    written: list[str] = []
    try:
        arrays = []
        for index, (assigned_role, s) in enumerate(assigned):
            name, digest = volume_store.save_array(s.volume_hu, prefix="volumes/incoming")
            written.append(name)
            arrays.append((assigned_role, s, name, digest))
            progress(0.6 + 0.35 * (index + 1) / len(assigned), f"stored {assigned_role} volume")
        with transaction.atomic():
            if study is None:
                if Study.objects.filter(pseudonym=study_pseudonym).exists():
                    raise IngestError(
                        f"a study named {study_pseudonym} already exists; choose another pseudonym"
                    )
                study = Study.objects.create(
                    pseudonym=study_pseudonym,
                    patient_pseudonym=patient_pseudonym_for(original_patient),
                    cohort=Study.Cohort.UNASSIGNED,
                    injection_site=injection_site,
                    source="nifti"
                    if all(f.name.lower().endswith(NIFTI_SUFFIXES) for f in files)
                    else "dicom",
                    study_uid=next((s.study_uid for _, s in assigned if s.study_uid), ""),
                    created_by=user,
                    metadata={"import": source_tag} if source_tag else {},
                )
                if settings.DLA_KEEP_PSEUDONYM_MAP:
                    PseudonymMap.objects.create(study=study, **original_identity)
                if cohort != Study.Cohort.UNASSIGNED:
                    study.check_cohort_assignment(cohort)
                    study.cohort = cohort
                    study.save(update_fields=["cohort"])
            volumes = [
                Volume.objects.create(
                    study=study,
                    role=assigned_role,
                    file=name,
                    dtype=str(s.volume_hu.dtype),
                    shape=list(s.volume_hu.shape),
                    spacing_mm=[float(v) for v in s.spacing_mm],
                    affine_lps=np.asarray(s.affine_lps, dtype=float).tolist(),
                    hu_min=int(s.volume_hu.min()),
                    hu_max=int(s.volume_hu.max()),
                    sha256=digest,
                    series_uid=s.series_uid,
                    series_description=s.series_description[:200],
                    source=f"{s.modality or 'NIfTI'} import",
                    created_by=user,
                )
                for assigned_role, s, name, digest in arrays
            ]
    except BaseException:
        for name in written:
            volume_store.delete_file(name)
        raise
    progress(1.0, f"imported {len(volumes)} volume(s) into {study.pseudonym}")
    return study, volumes


def remove_upload(upload_dir: Path) -> None:
    shutil.rmtree(upload_dir, ignore_errors=True)
