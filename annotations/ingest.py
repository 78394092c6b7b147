"""Ingest: turn uploaded files (a directory, files, or a zip of a DICOM series or NIfTI) into a Study with
de-identified Volumes, all or nothing.

The numeric readers (``dla.io.dicom``, ``dla.io.nifti``, ``dla.io.archive``, ``dla.io.deidentify``) do the
parsing; this module decides roles, checks identity and geometry, writes the voxels, and creates the rows in one
transaction. On any error the files it wrote are removed and nothing is left in the database.

Identity rules (no original identifier is stored outside the pseudonym map; the comparisons use keyed hashes):
- a series added to a study must belong to its patient (``patient_pseudonym_for`` of the PatientID), its study
  (the de-identified StudyInstanceUID, itself an HMAC of the original) and, for the grid roles, its frame of
  reference (de-identified FrameOfReferenceUIDs kept in ``Study.metadata["frame_of_reference_uids"]``);
- a series whose UID or voxels are already stored, or a study already imported, is refused with "already
  imported as study X" instead of being duplicated;
- a series this installation exported (PatientID = a patient pseudonym and StudyInstanceUID = that study's
  export UID) keeps its pseudonym and UIDs: it is recognised as study X's, never hashed into a new patient.
The DICOM UIDs of exports are stable per stored volume (``volume_series_uid`` / ``volume_instance_uids``), so
two downloads of one volume are one series. Messages name files and series by number and description, never by
a UID, a patient name or ID.
"""

import hashlib
import hmac
import logging
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from pydicom.uid import UID_dictionary

from dla.io.archive import ArchiveError, extract_zip
from dla.io.deidentify import UidMap, deidentify_series_volume
from dla.io.dicom import IngestError, SeriesVolume, read_dicom_series
from dla.io.nifti import read_nifti
from dla_web.api import strip_paths

from . import volume_store
from .models import PseudonymMap, Study, Volume
from .subtraction import record_subtraction_check

logger = logging.getLogger(__name__)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
GRID_ROLES = {Volume.Role.FILL, Volume.Role.MASK, Volume.Role.SUBTRACTED, Volume.Role.DLA}
#: Roles whose values must be CT Hounsfield units: other modalities are refused for them.
CT_ROLES = GRID_ROLES
AFFINE_TOLERANCE_MM = 0.01
#: TaskRun.message keeps 500 characters: refusals are kept shorter, the full detail goes to the log.
MAX_MESSAGE_CHARS = 480
MODALITY_NAMES = {
    "MR": "magnetic resonance",
    "NM": "nuclear medicine",
    "PT": "PET",
    "US": "ultrasound",
    "XA": "X-ray angiography",
    "RF": "radio fluoroscopy",
    "CR": "computed radiography",
    "DX": "digital radiography",
    "RTDOSE": "RT dose",
    "OT": "other",
    "SEG": "segmentation",
}
_UID_PATTERN = re.compile(r"\b\d+(?:\.\d+){2,}\b")


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


# ----------------------------------------------------------------------------------------------------------
# Stable de-identified UIDs of what this installation exports (keyed by the project secret)
# ----------------------------------------------------------------------------------------------------------


def study_dicom_uid(study: Study) -> str:
    """The StudyInstanceUID exports of ``study`` carry: its de-identified import UID, else a keyed one."""
    return study.study_uid or project_uid_map().map(f"study:{study.pk}")


def study_frame_of_reference_uid(study: Study) -> str:
    """The FrameOfReferenceUID exports of ``study`` carry: the de-identified one of its imported grid, else a
    keyed one."""
    known = (study.metadata or {}).get("frame_of_reference_uids") or []
    return known[0] if known else project_uid_map().map(f"frame-of-reference:{study_dicom_uid(study)}")


def volume_series_uid(volume: Volume) -> str:
    """The SeriesInstanceUID exports of ``volume`` carry: the de-identified UID of the imported series, else a
    keyed UID of the stored voxels (sha256) and the row: the same volume always exports as the same series."""
    return volume.series_uid or project_uid_map().map(f"volume-series:{volume.pk}:{volume.sha256}")


def volume_instance_uids(volume: Volume) -> list[str]:
    """One stable SOPInstanceUID per z slice of ``volume``'s exported series."""
    series_uid, uid_map = volume_series_uid(volume), project_uid_map()
    return [uid_map.map(f"volume-instance:{series_uid}:{k}") for k in range(int(volume.shape[0]))]


def derived_object_uids(kind: str, key: str) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of a single-instance export (SEG, parametric map) of ``key``."""
    uid_map = project_uid_map()
    return uid_map.map(f"{kind}-series:{key}"), uid_map.map(f"{kind}-instance:{key}")


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------


@dataclass
class IngestResult:
    """What an import did: the study, its new volumes, and the files it skipped ``(name, reason)``."""

    study: Study
    volumes: list[Volume]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _uid_or_keep(match: re.Match) -> str:
    """``<UID>`` for what looks like an instance UID; IPv4 addresses, version numbers and the standard UIDs of
    the DICOM dictionary (SOP classes, transfer syntaxes) are kept."""
    text = match.group(0)
    parts = text.split(".")
    if len(text) < 10 or (len(parts) == 4 and all(len(p) <= 3 and int(p) <= 255 for p in parts)):
        return text
    return text if text in UID_dictionary else "<UID>"


def public_error(exc: BaseException) -> BaseException:
    """An exception of the same type as ``exc`` whose message has no absolute server path (an OSError keeps its
    errno and gets the bare file name), for task runs and API answers; ``exc`` itself when nothing changes or
    its type cannot be rebuilt from a message (then a RuntimeError naming the type)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        names = [Path(str(f)).name for f in (exc.filename, exc.filename2) if f is not None]
        args = (exc.errno, exc.strerror, names[0], *((None, names[1]) if len(names) > 1 else ()))
        try:
            return type(exc)(*args)
        except TypeError:
            return RuntimeError(f"{type(exc).__name__}: {strip_paths(str(exc))}")
    text = str(exc)
    clean = strip_paths(text)
    if clean == text:
        return exc
    try:
        return type(exc)(clean)
    except TypeError:
        return RuntimeError(f"{type(exc).__name__}: {clean}")


def scrub(message: str, secrets_: tuple[str, ...] = ()) -> str:
    """``message`` without anything that looks like a DICOM UID or equals one of ``secrets_`` (patient
    names/IDs) and without absolute server paths, cut to MAX_MESSAGE_CHARS."""
    text = _UID_PATTERN.sub(_uid_or_keep, strip_paths(str(message)))
    for value in secrets_:
        if value and len(str(value)) >= 3:
            text = text.replace(str(value), "<removed>")
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 20].rstrip() + " ... (see the log)"
    return text


def _identifiers(series: list[SeriesVolume]) -> tuple[str, ...]:
    """The patient IDs and names (and the parts of names) read from ``series``: never shown in a message."""
    values = set()
    for s in series:
        for value in (s.patient_id, str(s.patient_name or "")):
            if value:
                values.add(value)
                values.update(part for part in re.split(r"[\^\s=]+", value) if len(part) >= 3)
    return tuple(sorted(values, key=len, reverse=True))


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


def read_series(files: list[Path], skipped: list[tuple[str, str]] | None = None) -> list[SeriesVolume]:
    """DICOM series and NIfTI volumes of ``files``. With a ``skipped`` list, non-DICOM files and non-image DICOM
    objects are listed there instead of failing the read, and NIfTI files next to DICOM series (copies, as in
    the folder ``manage.py make_phantoms`` writes) are listed as skipped: the DICOM carries the identity."""
    nifti = [f for f in files if f.name.lower().endswith(NIFTI_SUFFIXES)]
    dicom = [f for f in files if f not in nifti]
    series: list[SeriesVolume] = []
    if dicom:
        series.extend(read_dicom_series(dicom, skipped=skipped))
    if series and nifti and skipped is not None:
        skipped.extend((f.name, f"{f.name}: NIfTI next to DICOM series, not imported") for f in nifti)
        nifti = []
    return [read_nifti(f) for f in nifti] + series


def _check_same_grid(volumes: list[tuple[str, tuple, np.ndarray]]) -> None:
    """``volumes``: (name, shape, affine) of grid roles; all must match the first."""
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


def _named(s: SeriesVolume) -> str:
    return s.label if s.modality or s.series_number is not None else f"NIfTI file {s.series_description!r}"


def _modality_phrase(modality: str) -> str:
    name = MODALITY_NAMES.get(modality)
    return f"{modality} ({name})" if name else modality


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
    patients = {s.patient_id for s in series if s.modality or s.study_uid}
    if len(patients) > 1:
        raise IngestError(f"the upload mixes {len(patients)} different patients; import one study at a time")
    assigned = [(role or s.role_hint or Volume.Role.OTHER, s) for s in series]
    seen: dict[str, SeriesVolume] = {}
    for assigned_role, s in assigned:
        if assigned_role in CT_ROLES and s.modality and s.modality != "CT":
            raise IngestError(
                f"{_named(s)} is {_modality_phrase(s.modality)}, not CT: a {assigned_role} volume must be CT "
                "in Hounsfield units (import it with role 'other' to keep it as stored values)"
            )
        if assigned_role in GRID_ROLES and assigned_role in seen:
            first, second = _named(seen[assigned_role]), _named(s)
            if first == second:
                first += f" ({len(seen[assigned_role].volume_hu)} slices)"
                second += f" ({len(s.volume_hu)} slices)"
            raise IngestError(
                f"two series would both become the {assigned_role} volume: {first} and {second}; "
                "upload them separately with explicit roles"
            )
        seen[assigned_role] = s
    return assigned


# ----------------------------------------------------------------------------------------------------------
# Identity
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Identity:
    """How the series of one upload relate to the studies already stored."""

    own_export_of: Study | None = None  # exported by this installation from this study: keep its UIDs
    patient_pseudonym: str | None = None  # keyed hash of the PatientID (None: no DICOM identity)
    study_uid: str = ""  # de-identified StudyInstanceUID
    frames_of_reference: list[str] = field(default_factory=list)  # de-identified FrameOfReferenceUIDs


def _own_export_study(s: SeriesVolume) -> Study | None:
    """The study this installation exported ``s`` from: its PatientID is that study's patient pseudonym and its
    StudyInstanceUID that study's export UID (both keyed by the project secret, so foreign data never
    matches)."""
    if not s.patient_id.startswith("PT-") or not s.study_uid:
        return None
    for study in Study.objects.filter(patient_pseudonym=s.patient_id):
        if study_dicom_uid(study) == s.study_uid:
            return study
    return None


def _already_stored(s: SeriesVolume, identity: _Identity, uid_map: UidMap) -> Volume | None:
    """A stored volume that is this series (by its UID), or None."""
    if not s.series_uid:
        return None
    if identity.own_export_of is not None:
        for volume in identity.own_export_of.volumes.all():
            if volume_series_uid(volume) == s.series_uid:
                return volume
        return Volume.objects.filter(series_uid=s.series_uid).select_related("study").first()
    return Volume.objects.filter(series_uid=uid_map.map(s.series_uid)).select_related("study").first()


def identify(assigned: list[tuple[str, SeriesVolume]], study: Study | None, uid_map: UidMap) -> _Identity:
    """Check the upload's identity against ``study`` (the study it is added to, or None for a new study) and
    against what is stored; raise IngestError naming the series and the mismatch."""
    dicom = [(r, s) for r, s in assigned if s.study_uid or s.modality]
    identity = _Identity()
    if dicom:
        first = dicom[0][1]
        own = _own_export_study(first)
        if own is not None:
            identity.own_export_of = own
            identity.patient_pseudonym = own.patient_pseudonym
            identity.study_uid = first.study_uid
            identity.frames_of_reference = sorted(
                {s.frame_of_reference_uid for r, s in dicom if s.frame_of_reference_uid and r in GRID_ROLES}
            )
            if study is None:
                raise IngestError(
                    f"{_named(first)} was exported by this installation from study {own.pseudonym}; it is not a "
                    f"new patient: add it to that study (study={own.pk}) instead"
                )
            if study.pk != own.pk:
                raise IngestError(
                    f"{_named(first)} belongs to study {own.pseudonym} (exported by this installation), not to "
                    f"study {study.pseudonym}"
                )
        else:
            identity.patient_pseudonym = patient_pseudonym_for(first.patient_id) if first.patient_id else None
            identity.study_uid = uid_map.map(first.study_uid) if first.study_uid else ""
            identity.frames_of_reference = sorted(
                {
                    uid_map.map(s.frame_of_reference_uid)
                    for r, s in dicom
                    if s.frame_of_reference_uid and r in GRID_ROLES
                }
            )
            if study is None and identity.study_uid:
                existing = Study.objects.filter(study_uid=identity.study_uid).first()
                if existing is not None:
                    raise IngestError(
                        f"the study of {_named(first)} is already imported as study {existing.pseudonym}; add "
                        f"new series to it (study={existing.pk}) instead of importing it again"
                    )
            if study is not None:
                _check_same_subject(first, dicom, identity, study)
    for _, s in assigned:
        stored = _already_stored(s, identity, uid_map)
        if stored is not None:
            raise IngestError(
                f"{_named(s)} is already imported as study {stored.study.pseudonym} (its {stored.role} volume "
                f"{stored.pk}); it is not imported twice"
            )
    return identity


def _check_same_subject(
    first: SeriesVolume, dicom: list[tuple[str, SeriesVolume]], identity: _Identity, study: Study
) -> None:
    if not study.study_uid:
        raise IngestError(
            f"study {study.pseudonym} has no DICOM identity (it was not imported from DICOM), so {_named(first)} "
            "cannot be confirmed to be the same patient and study; import it as a new study"
        )
    differ = []
    if not first.patient_id:
        differ.append("PatientID (missing)")
    elif identity.patient_pseudonym != study.patient_pseudonym:
        differ.append("PatientID")
    if identity.study_uid != study.study_uid:
        differ.append("StudyInstanceUID")
    known = (study.metadata or {}).get("frame_of_reference_uids") or []
    if known and identity.frames_of_reference and not set(identity.frames_of_reference) <= set(known):
        differ.append("FrameOfReferenceUID")
    if differ:
        raise IngestError(
            f"{_named(first)} does not belong to study {study.pseudonym}: its {', '.join(differ)} "
            f"differ{'s' if len(differ) == 1 else ''} from the study's; a series is added only to its own "
            "patient's study"
        )


# ----------------------------------------------------------------------------------------------------------
# Import
# ----------------------------------------------------------------------------------------------------------


def ingest(
    paths: list[Path],
    *,
    work_dir: Path,
    user=None,
    study: Study | None = None,
    pseudonym: str | None = None,
    role: str | None = None,
    cohort: str = Study.Cohort.UNASSIGNED,
    injection_site: str = Study.Injection.UNKNOWN,
    source_tag: str = "",
    keep_identity: bool = False,
    progress: Callable[[float, str], None] = lambda f, m: None,
) -> IngestResult:
    """Read, check, de-identify and store ``paths`` as volumes of ``study`` (or of a new study). All or
    nothing. The original identity goes into the pseudonym map (admin-only) when DLA_KEEP_PSEUDONYM_MAP is set
    or ``keep_identity`` is asked for (data retrieved from a PACS that results are sent back to). Non-DICOM
    files and non-image DICOM objects of a folder are skipped and listed in the result; the import fails only
    when nothing importable remains. Every IngestError raised has no UID, patient name or ID
    in its message."""
    originals: tuple[str, ...] = ()
    try:
        progress(0.05, "reading files")
        files = collect_files(paths, work_dir)
        progress(0.15, f"parsing {len(files)} files")
        skipped: list[tuple[str, str]] = []
        series = read_series(files, skipped)
        originals = _identifiers(series)
        assigned = assign_roles(series, role)
        progress(0.6, f"{len(series)} series read; checking geometry and identity")
        grid = [(r, s.volume_hu.shape, s.affine_lps) for r, s in assigned if r in GRID_ROLES]
        if study is not None:
            grid = [
                (v.role, tuple(v.shape), np.asarray(v.affine_lps))
                for v in study.volumes.filter(role__in=GRID_ROLES)
            ] + grid
        _check_same_grid(grid)
        uid_map = project_uid_map()
        identity = identify(assigned, study, uid_map)
        result = _store(
            assigned,
            files=files,
            identity=identity,
            uid_map=uid_map,
            skipped=skipped,
            user=user,
            study=study,
            pseudonym=pseudonym,
            cohort=cohort,
            injection_site=injection_site,
            source_tag=source_tag,
            keep_identity=keep_identity or settings.DLA_KEEP_PSEUDONYM_MAP,
            progress=progress,
        )
        result.skipped = [(scrub(name, originals), scrub(reason, originals)) for name, reason in skipped]
        return result
    except (IngestError, ArchiveError) as exc:
        raise type(exc)(scrub(str(exc), originals)) from None
    except OSError as exc:  # disk full, permissions: the file name, never where it lives on the server
        logger.warning("ingest failed on the server's files: %s", exc)  # the server log keeps the path
        raise public_error(exc) from None


def _store(
    assigned,
    *,
    files,
    identity,
    uid_map,
    skipped,
    user,
    study,
    pseudonym,
    cohort,
    injection_site,
    source_tag,
    keep_identity,
    progress,
) -> IngestResult:
    original_patient = next((s.patient_id for _, s in assigned if s.patient_id), "")
    original_identity = {
        "original_patient_id": original_patient,
        "original_patient_name": next((str(s.patient_name) for _, s in assigned if s.patient_name), ""),
        "original_study_uid": next((s.study_uid for _, s in assigned if s.study_uid), ""),
    }
    study_pseudonym = study.pseudonym if study else (pseudonym or new_study_pseudonym())
    if identity.own_export_of is not None:  # our own export: already de-identified, keep pseudonym and UIDs
        assigned = [
            (r, deidentify_series_volume(s, identity.own_export_of.pseudonym, uid_map, keep_uids=True))
            for r, s in assigned
        ]
    else:
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
            for _, s, _, digest in arrays:
                same = Volume.objects.filter(sha256=digest).select_related("study").first()
                if same is not None:
                    raise IngestError(
                        f"{_named(s)} is already imported as study {same.study.pseudonym} (the same voxels as "
                        f"its {same.role} volume {same.pk}); it is not imported twice"
                    )
            if study is None:
                if Study.objects.filter(pseudonym=study_pseudonym).exists():
                    raise IngestError(
                        f"a study named {study_pseudonym} already exists; choose another pseudonym"
                    )
                metadata = {"import": source_tag} if source_tag else {}
                if identity.frames_of_reference:
                    metadata["frame_of_reference_uids"] = identity.frames_of_reference
                study = Study.objects.create(
                    pseudonym=study_pseudonym,
                    patient_pseudonym=identity.patient_pseudonym or patient_pseudonym_for(""),
                    cohort=Study.Cohort.UNASSIGNED,
                    injection_site=injection_site,
                    source="nifti"
                    if all(f.name.lower().endswith(NIFTI_SUFFIXES) for f in files)
                    else "dicom",
                    study_uid=identity.study_uid,
                    created_by=user,
                    metadata=metadata,
                )
                if keep_identity and identity.own_export_of is None:
                    PseudonymMap.objects.create(study=study, **original_identity)
                if cohort != Study.Cohort.UNASSIGNED:
                    study.check_cohort_assignment(cohort)
                    study.cohort = cohort
                    study.save(update_fields=["cohort"])
            else:
                study = Study.objects.select_for_update().get(pk=study.pk)
                known = list((study.metadata or {}).get("frame_of_reference_uids") or [])
                new = [uid for uid in identity.frames_of_reference if uid not in known]
                if new:
                    study.metadata = {**(study.metadata or {}), "frame_of_reference_uids": known + new}
                    study.save(update_fields=["metadata"])
                if (
                    keep_identity
                    and identity.own_export_of is None
                    and original_identity["original_study_uid"]
                ):
                    PseudonymMap.objects.get_or_create(study=study, defaults=original_identity)
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
                    source=_source_of(s),
                    created_by=user,
                )
                for assigned_role, s, name, digest in arrays
            ]
    except BaseException:
        for name in written:
            volume_store.delete_file(name)
        raise
    if any(v.role in (Volume.Role.FILL, Volume.Role.SUBTRACTED) for v in volumes):
        record_subtraction_check(study)  # once the study has both scans; for the review queue
    note = f"; skipped {len(skipped)} file(s) that are not images" if skipped else ""
    progress(1.0, f"imported {len(volumes)} volume(s) into {study.pseudonym}{note}")
    return IngestResult(study=study, volumes=volumes, skipped=skipped)


def _source_of(s: SeriesVolume) -> str:
    if not s.modality:
        return "NIfTI import"
    if s.modality == "CT":
        return "CT import"
    return f"{s.modality} import (stored values, not HU)"


def ingest_files(paths: list[Path], **kwargs) -> tuple[Study, list[Volume]]:
    """:func:`ingest` returning ``(study, volumes)``."""
    result = ingest(paths, **kwargs)
    return result.study, result.volumes


def remove_upload(upload_dir: Path) -> None:
    shutil.rmtree(upload_dir, ignore_errors=True)
