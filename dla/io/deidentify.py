"""De-identification of DICOM datasets: essentials of the PS3.15 Basic Application Level Confidentiality Profile.

:func:`deidentify_dataset` edits a pydicom Dataset in place (file meta included, recursing into sequences):
PatientName and PatientID become the pseudonym; identifying attributes of Table E.1-1 (birth date,
addresses, phone numbers, other IDs, institution, physicians, operators, accession number, study ID, device
serials, free-text comments, ...) are removed or emptied; every other person name (PN) is emptied; private
tags are removed; every non-standard UID (study, series, SOP instance, frame of reference, referenced UIDs in
sequences, ...) is replaced through a :class:`UidMap`; well-known DICOM UIDs (SOP classes, transfer syntaxes,
coding schemes) are kept. Decision on dates: **dates are shifted, not blanked** - every DA value and the date
part of every DT value move back by a per-pseudonym number of days (1..3650, derived from the project secret
by HMAC), so intervals between a patient's studies are preserved (PS3.15 "Retain Longitudinal Temporal
Information with Modified Dates" option); times of day are kept; PatientBirthDate is emptied. UIDs are
``2.25.<int>`` where the integer is a version-8 UUID built from HMAC-SHA256(secret, original UID): the same
secret always gives the same mapping (consistent across files, series and sessions), another secret gives
unrelated UIDs, and the original cannot be recovered without the secret.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import hmac
import uuid

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID_dictionary

from dla.io.dicom import HEADER_KEYWORDS, SeriesVolume

__all__ = [
    "UidMap",
    "deidentify_dataset",
    "deidentify_series_volume",
    "shift_date",
    "DEIDENTIFICATION_METHOD",
]

#: Value of DeidentificationMethod (LO, multi-valued: each value at most 64 characters).
DEIDENTIFICATION_METHOD = [
    "PS3.15 Basic Application Level Confidentiality Profile",
    "DLA Workbench: dates shifted per patient",
    "DLA Workbench: UIDs remapped by HMAC-SHA256",
    "DLA Workbench: private tags removed",
]


# Replaced by the pseudonym.
_PSEUDONYM_KEYWORDS = ("PatientName", "PatientID")

# Removed entirely (PS3.15 Table E.1-1 actions X / X-D / X-Z treated as X where the attribute is optional).
_REMOVE_KEYWORDS = (
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientTelecomInformation",
    "PatientBirthTime",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "MedicalRecordLocator",
    "EthnicGroup",
    "Occupation",
    "MilitaryRank",
    "BranchOfService",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientInsurancePlanCodeSequence",
    "PatientReligiousPreference",
    "AdditionalPatientHistory",
    "PatientComments",
    "PregnancyStatus",
    "LastMenstrualDate",
    "SmokingStatus",
    "MedicalAlerts",
    "Allergies",
    "IssuerOfPatientID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "InstitutionCodeSequence",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "OperatorsName",
    "OperatorIdentificationSequence",
    "RequestingPhysician",
    "ScheduledPerformingPhysicianName",
    "StationName",
    "DeviceSerialNumber",
    "DetectorID",
    "PlateID",
    "GantryID",
    "CassetteID",
    "InstanceCreatorUID",
    "RequestAttributesSequence",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "PerformedLocation",
    "PerformedStationName",
    "PerformedStationAETitle",
    "ScheduledStationName",
    "ScheduledStationAETitle",
    "AdmissionID",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "ReasonForStudy",
    "ReasonForTheRequestedProcedure",
    "RequestedProcedureDescription",
    "ImageComments",
    "StudyComments",
    "InterpretationText",
    "TextComments",
    "AdditionalPatientHistory",
    "CurrentPatientLocation",
    "PatientState",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "ModifiedAttributesSequence",
    "OriginalAttributesSequence",
    "DigitalSignaturesSequence",
    "ContentCreatorName",
    "VerifyingObserverName",
    "PersonName",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence",
    "ProtocolName",
)

# Emptied (type 2 attributes that must stay present).
_EMPTY_KEYWORDS = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber", "StudyID")

# Descriptors kept when keep_descriptors=True (removed otherwise); the app infers roles from them.
_DESCRIPTOR_KEYWORDS = ("StudyDescription", "SeriesDescription", "BodyPartExamined", "DerivationDescription")

# UI attributes that are never instance-identifying.
_KEEP_UID_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextGroupExtensionCreatorUID",
        "PrivateInformationCreatorUID",
        "SOPClassesInStudy",
    }
)


class UidMap:
    """Deterministic, secret-keyed replacement of DICOM UIDs and per-patient date offsets.

    ``map(uid)`` returns ``2.25.<int>`` (at most 44 characters) from a version-8 UUID whose 122 free bits come
    from HMAC-SHA256(secret, uid). Mapping is cached; ``len(uid_map)`` counts distinct UIDs mapped.
    """

    def __init__(self, secret: str | bytes):
        if not secret:
            raise ValueError("UidMap needs a non-empty project secret")
        self._key = secret.encode() if isinstance(secret, str) else bytes(secret)
        self._cache: dict[str, str] = {}

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()

    def map(self, uid: str) -> str:
        uid = str(uid).strip().rstrip("\x00")
        if not uid:
            return uid
        out = self._cache.get(uid)
        if out is None:
            value = int.from_bytes(self._digest("uid", uid)[:16], "big")
            value &= ~(0xF << 76)  # version field
            value |= 0x8 << 76  # version 8 (custom)
            value &= ~(0xC000 << 48)  # variant field
            value |= 0x8000 << 48  # RFC 4122 variant
            out = "2.25." + str(uuid.UUID(int=value).int)
            self._cache[uid] = out
        return out

    __call__ = map

    def __len__(self) -> int:
        return len(self._cache)

    def date_offset_days(self, pseudonym: str) -> int:
        """Days (1..3650) every date of this pseudonym's data is moved back."""
        return 1 + int.from_bytes(self._digest("date-shift", pseudonym)[:8], "big") % 3650


def shift_date(value: str, days: int) -> str:
    """Shift a DA (YYYYMMDD) or the date part of a DT value back by ``days``; unparsable values -> ''."""
    value = str(value).strip()
    if len(value) < 8 or not value[:8].isdigit():
        return ""
    try:
        day = _dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return ""
    return (day - _dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]


def _is_standard_uid(value: str) -> bool:
    return value in UID_dictionary


def _map_uid_value(value, uid_map: UidMap):
    if value is None or value == "":
        return value
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, str)):
        return [v if _is_standard_uid(str(v)) else uid_map.map(str(v)) for v in value]
    return value if _is_standard_uid(str(value)) else uid_map.map(str(value))


def _clean(
    ds: Dataset, *, pseudonym: str, uid_map: UidMap, days: int, keep_descriptors: bool, top: bool
) -> None:
    ds.remove_private_tags()
    for kw in _REMOVE_KEYWORDS:
        if kw in ds:
            delattr(ds, kw)
    if not keep_descriptors:
        for kw in _DESCRIPTOR_KEYWORDS:
            if kw in ds:
                delattr(ds, kw)
    for kw in _EMPTY_KEYWORDS:
        if kw in ds:
            ds[kw].value = None
    for kw in _PSEUDONYM_KEYWORDS:
        if kw in ds or top:
            setattr(ds, kw, pseudonym)
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or []:
                _clean(
                    item,
                    pseudonym=pseudonym,
                    uid_map=uid_map,
                    days=days,
                    keep_descriptors=keep_descriptors,
                    top=False,
                )
            continue
        keyword = elem.keyword
        if elem.VR == "PN" and keyword != "PatientName":
            elem.value = None
        elif elem.VR == "UI" and keyword not in _KEEP_UID_KEYWORDS:
            elem.value = _map_uid_value(elem.value, uid_map)
        elif elem.VR in ("DA", "DT") and elem.value not in (None, ""):
            if elem.VM > 1:
                elem.value = [shift_date(v, days) for v in elem.value]
            else:
                elem.value = shift_date(elem.value, days)
        elif elem.tag.group == 0x0010 and keyword not in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "PatientIdentityRemoved",
            "DeidentificationMethod",
            "DeidentificationMethodCodeSequence",
            "PatientPosition",
        ):
            delattr(ds, keyword) if keyword else ds.pop(elem.tag)  # unknown patient-module data: drop


def deidentify_dataset(
    ds: Dataset, *, pseudonym: str, uid_map: UidMap, keep_descriptors: bool = True
) -> None:
    """De-identify ``ds`` in place (and its file meta): see the module docstring for what is changed.

    ``keep_descriptors`` keeps StudyDescription / SeriesDescription / BodyPartExamined / DerivationDescription
    (needed to infer the role of a series; they are not cleaned - do not put names in them).
    Sets PatientIdentityRemoved=YES, DeidentificationMethod and its code sequence, and
    LongitudinalTemporalInformationModified=MODIFIED.
    """
    if not pseudonym:
        raise ValueError("pseudonym must not be empty")
    days = uid_map.date_offset_days(pseudonym)
    _clean(ds, pseudonym=pseudonym, uid_map=uid_map, days=days, keep_descriptors=keep_descriptors, top=True)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for kw in ("MediaStorageSOPInstanceUID",):
            if kw in meta:
                meta[kw].value = uid_map.map(str(meta[kw].value))
        for kw in (
            "SourceApplicationEntityTitle",
            "SendingApplicationEntityTitle",
            "ReceivingApplicationEntityTitle",
        ):
            if kw in meta:
                delattr(meta, kw)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    codes = []
    for value, meaning in (
        ("113100", "Basic Application Confidentiality Profile"),
        ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = DicomSequence(codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"


_SAFE_HEADER_KEYS = frozenset(
    {
        *HEADER_KEYWORDS,  # the technical DICOM tags the reader keeps
        "TransferSyntaxUID",
        "n_files",
        "n_slices",
        "format",  # NIfTI header fields (nifti_io)
        "datatype",
        "qform_code",
        "sform_code",
        "space_unit",
        "shape_xyz",
    }
)


def deidentify_series_volume(
    sv: SeriesVolume, pseudonym: str, uid_map: UidMap, *, keep_uids: bool = False
) -> SeriesVolume:
    """A copy of ``sv`` with de-identified metadata (voxels and geometry shared, not copied).

    Patient name/ID -> pseudonym, UIDs (study, series, frame of reference and each slice's SOP instance) mapped
    through ``uid_map`` (same mapping as :func:`deidentify_dataset`),
    study_date shifted like DICOM dates, ``source_files`` emptied (paths may contain names), ``header`` reduced
    to technical keys. The series description is kept. ``keep_uids`` is for data this installation de-identified
    and exported itself: its UIDs and dates are kept as they are (mapping them again would make a new identity),
    the rest is cleaned as above.
    """
    days = uid_map.date_offset_days(pseudonym)
    if keep_uids:
        return dataclasses.replace(
            sv,
            patient_id=sv.patient_id,
            patient_name=sv.patient_id,
            source_files=[],
            header={k: v for k, v in sv.header.items() if k in _SAFE_HEADER_KEYS},
        )
    return dataclasses.replace(
        sv,
        series_uid=uid_map.map(sv.series_uid) if sv.series_uid else "",
        study_uid=uid_map.map(sv.study_uid) if sv.study_uid else "",
        frame_of_reference_uid=uid_map.map(sv.frame_of_reference_uid) if sv.frame_of_reference_uid else None,
        sop_instance_uids=[uid_map.map(uid) if uid else "" for uid in sv.sop_instance_uids],
        patient_id=pseudonym,
        patient_name=pseudonym,
        study_date=shift_date(sv.study_date, days) if sv.study_date else "",
        source_files=[],
        header={k: v for k, v in sv.header.items() if k in _SAFE_HEADER_KEYS},
    )
