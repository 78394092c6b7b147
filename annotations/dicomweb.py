"""DICOMweb with a PACS (``dicomweb-client``): browse (QIDO-RS), retrieve into the normal ingest (WADO-RS), and
send results back next to the originals (STOW-RS).

Servers come from the environment, read at each call: ``DLA_DICOMWEB_SERVERS=pacs,research`` names them, and
for each ``DLA_DICOMWEB_<NAME>_URL`` (the DICOMweb root, required), ``_USERNAME`` / ``_PASSWORD`` (HTTP basic) or
``_TOKEN`` (bearer), ``_TIMEOUT_S`` (default 30), ``_RETRIES`` (default 2, on 429/503/504 and connection errors)
and ``_KEEP_IDENTITY`` (default 1: studies retrieved from it keep their original identity in the pseudonym map,
admin-only, which sending results back needs). Secrets are never returned by :func:`public`.

- :func:`search_studies` / :func:`search_series`: QIDO-RS lists (patient, description, modality, date, instance
  counts) plus whether a study/series is already imported here.
- :func:`prepare_retrieve` writes the selection into an upload folder (original UIDs stay in that server-side
  file, never in task parameters); the ingest task calls :func:`fetch_selection`, which streams the instances
  (WADO-RS) into the folder, refusing a retrieve over the upload limit, a series the server no longer has and a
  series that arrives with missing instances. The ingest that follows is the normal one (same checks,
  de-identification and progress), all or nothing.
- :func:`send_results`: the DLA series and an approved label version's SEG, in the original study, referencing
  the original fill series and instances (looked up on the server from the pseudonym map's study and our keyed
  series UID; its instances ordered by the same geometry code as ingest), and for a multi-frame original (enhanced
  or classic) the instance and its frame (ReferencedFrameNumber), with UIDs that are stable per volume /
  version, so a re-send duplicates nothing. The store is verified by QIDO afterwards: a server that acknowledges
  but does not store (a filter) is reported like one that refuses.
Every error is a :class:`DicomWebError` whose message names the server and what failed, without UIDs.
"""

import json
import logging
import re
import tempfile
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from dla.io.dicom import IngestError, SeriesRef, series_label, slice_order, write_dicom_series
from dla.io.seg import label_seg, refer_to_frames
from dla_web.env import env_bool, env_int, env_list, env_str

from .ingest import project_uid_map, scrub
from .models import LabelVersion, PseudonymMap, Study, Volume

SELECTION_FILE = "dicomweb.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
STUDY_FIELDS = [
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyDescription",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
]
SERIES_FIELDS = [
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "SeriesDate",
    "BodyPartExamined",
    "NumberOfSeriesRelatedInstances",
]
#: QIDO study filters accepted from the page / API / command (DICOM keyword: value; wildcards * and ?).
STUDY_FILTERS = (
    "PatientID",
    "PatientName",
    "StudyDate",
    "ModalitiesInStudy",
    "AccessionNumber",
    "StudyDescription",
)


class DicomWebError(ValueError):
    """A DICOMweb exchange failed; the message names the server and the problem (never a UID).
    ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(scrub(message))
        self.status = status


class _ScrubUids(logging.Filter):
    """dicomweb-client logs the UIDs it asks for: keep them out of our logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = ()
        return True


def _scrub_library_logs(prefixes=("dicomweb_client", "highdicom")) -> None:
    """dicomweb-client and highdicom log the UIDs they handle (at INFO): scrub them on every logger of theirs (a
    logger's filters do not see its children's records, so each one gets the filter)."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in prefixes]
    for name in {*prefixes, *names}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ScrubUids) for f in logger.filters):
            logger.addFilter(_ScrubUids())


_scrub_library_logs()  # highdicom (through dla.io.seg) and dicomweb-client are imported above


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DicomWebServer:
    name: str
    url: str
    username: str = ""
    password: str = ""
    token: str = ""
    timeout_s: int = 30
    retries: int = 2
    keep_identity: bool = True

    @property
    def env_prefix(self) -> str:
        return "DLA_DICOMWEB_" + self.name.upper().replace("-", "_")

    def public(self) -> dict:
        """What the admin page shows: no password, no token."""
        auth = "basic" if self.username else ("token" if self.token else "none")
        return {
            "name": self.name,
            "url": self.url,
            "auth": auth,
            "username": self.username,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "keep_identity": self.keep_identity,
        }


def configured_servers() -> dict[str, DicomWebServer]:
    """The servers of DLA_DICOMWEB_SERVERS, in order; ImproperlyConfigured names a malformed variable."""
    servers: dict[str, DicomWebServer] = {}
    for name in env_list("DLA_DICOMWEB_SERVERS", []):
        if not _NAME.match(name):
            raise ImproperlyConfigured(
                f"DLA_DICOMWEB_SERVERS: server name {name!r} must be lower-case letters, digits, - or _ "
                "(at most 32 characters)"
            )
        prefix = "DLA_DICOMWEB_" + name.upper().replace("-", "_")
        url = env_str(f"{prefix}_URL", "").strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ImproperlyConfigured(f"{prefix}_URL={url!r} must be the http(s) URL of the DICOMweb root")
        if parts.username or parts.password:
            raise ImproperlyConfigured(
                f"{prefix}_URL must not carry credentials; use {prefix}_USERNAME/_PASSWORD"
            )
        servers[name] = DicomWebServer(
            name=name,
            url=url,
            username=env_str(f"{prefix}_USERNAME", ""),
            password=env_str(f"{prefix}_PASSWORD", ""),
            token=env_str(f"{prefix}_TOKEN", ""),
            timeout_s=env_int(f"{prefix}_TIMEOUT_S", 30, minimum=1),
            retries=env_int(f"{prefix}_RETRIES", 2, minimum=0),
            keep_identity=env_bool(f"{prefix}_KEEP_IDENTITY", True),
        )
    return servers


def get_server(name: str) -> DicomWebServer:
    server = configured_servers().get(str(name))
    if server is None:
        known = ", ".join(configured_servers()) or "none configured (DLA_DICOMWEB_SERVERS)"
        raise DicomWebError(f"no DICOMweb server named {str(name)[:40]!r}; known: {known}", status=404)
    return server


class _WildcardSession(requests.Session):
    """dicomweb-client percent-encodes the QIDO wildcards ``*`` and ``?`` (``%2A``, ``%3F``), which Orthanc (and
    other servers) then match literally, so ``DOE*`` found nothing. Both characters are allowed as they are in a
    URL's query (RFC 3986), so they are sent unencoded."""

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        if parts.query:
            query = re.sub("%2[Aa]", "*", re.sub("%3[Ff]", "?", parts.query))
            url = urlunsplit(parts._replace(query=query))
        return super().request(method, url, *args, **kwargs)


def _client(server: DicomWebServer) -> DICOMwebClient:
    session = _WildcardSession()
    if server.username:
        session.auth = (server.username, server.password)
    elif server.token:
        session.headers["Authorization"] = f"Bearer {server.token}"
    client = DICOMwebClient(server.url, session=session, timeout=server.timeout_s)
    client.set_http_retry_params(
        retry=server.retries > 0, max_attempts=server.retries + 1, wait_exponential_multiplier=200
    )
    return client


@contextmanager
def _talking_to(server: DicomWebServer, what: str, *, not_found: str | None = None):
    """Turn the transport's exceptions into a DicomWebError naming ``server`` and ``what`` was being done."""
    try:
        yield
    except DicomWebError:
        raise
    except requests.exceptions.Timeout:
        raise DicomWebError(
            f"DICOMweb server {server.name} did not answer within {server.timeout_s} s while {what}",
            status=504,
        ) from None
    except requests.exceptions.ConnectionError:
        host = urlsplit(server.url).netloc
        raise DicomWebError(
            f"DICOMweb server {server.name} ({host}) cannot be reached while {what}: is it running?"
        ) from None
    except requests.exceptions.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else 0
        if code in (401, 403) and "storing" not in what:
            raise DicomWebError(
                f"DICOMweb server {server.name} refused our credentials (HTTP {code}) while {what}; check "
                f"{server.env_prefix}_USERNAME/_PASSWORD or _TOKEN"
            ) from None
        if code == 404 and not_found:
            raise DicomWebError(not_found, status=409) from None
        reason = exc.response.reason if exc.response is not None else ""
        raise DicomWebError(
            f"DICOMweb server {server.name} refused {what} (HTTP {code} {reason})".rstrip()
        ) from None
    except (ValueError, KeyError, TypeError) as exc:  # an answer that is not valid DICOM JSON / multipart
        raise DicomWebError(
            f"DICOMweb server {server.name} sent an answer we cannot read while {what} ({type(exc).__name__})"
        ) from None


def _value(item: dict, keyword: str, default=None):
    tag = pydicom.datadict.tag_for_keyword(keyword)
    element = item.get(f"{tag:08X}") if tag is not None else None
    values = (element or {}).get("Value") or []
    if not values:
        return default
    value = values[0]
    if isinstance(value, dict):  # PN
        return value.get("Alphabetic", "")
    return value


def _values(item: dict, keyword: str) -> list:
    tag = pydicom.datadict.tag_for_keyword(keyword)
    return list(((item.get(f"{tag:08X}") or {}).get("Value")) or [])


def _int(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------------
# QIDO-RS
# ----------------------------------------------------------------------------------------------------------


def search_studies(server_name: str, filters: dict | None = None, *, limit: int = 100) -> list[dict]:
    """Studies on the server matching ``filters`` (keys of STUDY_FILTERS), newest first."""
    server = get_server(server_name)
    search = {k: str(v) for k, v in (filters or {}).items() if k in STUDY_FILTERS and str(v).strip()}
    with _talking_to(server, "searching studies"):
        items = _client(server).search_for_studies(search_filters=search, fields=STUDY_FIELDS, limit=limit)
    uid_map = project_uid_map()
    studies = []
    for item in items:
        study_uid = str(_value(item, "StudyInstanceUID", ""))
        here = Study.objects.filter(study_uid=uid_map.map(study_uid)).first() if study_uid else None
        studies.append(
            {
                "study_uid": study_uid,
                "patient_id": str(_value(item, "PatientID", "")),
                "patient_name": str(_value(item, "PatientName", "")),
                "study_date": str(_value(item, "StudyDate", "")),
                "description": str(_value(item, "StudyDescription", "")),
                "accession_number": str(_value(item, "AccessionNumber", "")),
                "modalities": [str(v) for v in _values(item, "ModalitiesInStudy")],
                "series_count": _int(_value(item, "NumberOfStudyRelatedSeries")),
                "instance_count": _int(_value(item, "NumberOfStudyRelatedInstances")),
                "imported_as": here.pseudonym if here else None,
            }
        )
    studies.sort(key=lambda s: s["study_date"], reverse=True)
    return studies


def _series_items(server: DicomWebServer, client: DICOMwebClient, study_uid: str, *, what: str) -> list[dict]:
    with _talking_to(
        server,
        what,
        not_found=f"the study is not on DICOMweb server {server.name} (any more): deleted after the query?",
    ):
        return client.search_for_series(study_uid, fields=SERIES_FIELDS)


def search_series(server_name: str, study_uid: str) -> list[dict]:
    """The series of one study (number, description, modality, date, instance count, imported here as)."""
    server = get_server(server_name)
    _check_uid(study_uid, "study_uid")
    items = _series_items(server, _client(server), study_uid, what="searching the series of a study")
    uid_map = project_uid_map()
    series = []
    for item in items:
        series_uid = str(_value(item, "SeriesInstanceUID", ""))
        here = (
            Volume.objects.filter(series_uid=uid_map.map(series_uid)).select_related("study").first()
            if series_uid
            else None
        )
        series.append(
            {
                "series_uid": series_uid,
                "number": _int(_value(item, "SeriesNumber")),
                "description": str(_value(item, "SeriesDescription", "")),
                "modality": str(_value(item, "Modality", "")),
                "date": str(_value(item, "SeriesDate", "")),
                "body_part": str(_value(item, "BodyPartExamined", "")),
                "instance_count": _int(_value(item, "NumberOfSeriesRelatedInstances")),
                "imported_as": {
                    "study": here.study.pseudonym,
                    "study_id": here.study_id,
                    "volume": here.pk,
                    "role": here.role,
                }
                if here
                else None,
            }
        )
    series.sort(key=lambda s: (s["number"] is None, s["number"] or 0))
    return series


def _check_uid(uid: str, field: str) -> None:
    if not isinstance(uid, str) or not _UID.match(uid) or len(uid) > 64:
        raise DicomWebError(f"{field}: not a DICOM UID (digits and dots, at most 64 characters)", status=400)


# ----------------------------------------------------------------------------------------------------------
# WADO-RS retrieve (the ingest task calls fetch_selection)
# ----------------------------------------------------------------------------------------------------------


def prepare_retrieve(server_name: str, study_uid: str, series_uids: list[str] | None = None) -> str:
    """Write the selection (server, study, series; empty series = all of the study) into a new upload folder and
    return its id, for ``ingest_upload``. No network call: the task reports an unreachable server."""
    server = get_server(server_name)
    _check_uid(study_uid, "study_uid")
    for uid in series_uids or []:
        _check_uid(uid, "series_uids")
    upload_id = uuid.uuid4().hex
    folder = Path(settings.UPLOAD_DIR) / upload_id
    folder.mkdir(parents=True)
    selection = {"server": server.name, "study_uid": study_uid, "series_uids": list(series_uids or [])}
    (folder / SELECTION_FILE).write_text(json.dumps(selection))
    return upload_id


def has_selection(upload_dir: Path) -> bool:
    return (upload_dir / SELECTION_FILE).is_file()


def selection_server(upload_dir: Path) -> DicomWebServer:
    return get_server(json.loads((upload_dir / SELECTION_FILE).read_text())["server"])


def fetch_selection(
    upload_dir: Path, *, max_bytes: int, progress: Callable[[float, str], None] = lambda f, m: None
) -> dict:
    """Retrieve the selected series into ``upload_dir/files`` (one folder per series). Refuses (DicomWebError,
    the folder left for the caller to remove) a study or series no longer on the server, a retrieve over
    ``max_bytes``, and a series that arrives with fewer instances than the server lists."""
    selection = json.loads((upload_dir / SELECTION_FILE).read_text())
    server = get_server(selection["server"])
    client = _client(server)
    study_uid = selection["study_uid"]
    items = _series_items(server, client, study_uid, what="looking up the selected series")
    listed = {str(_value(item, "SeriesInstanceUID", "")): item for item in items}
    wanted = selection["series_uids"] or list(listed)
    gone = [uid for uid in wanted if uid not in listed]
    if not listed or gone:
        raise DicomWebError(
            f"{len(gone) or 'all'} of the {len(wanted)} selected series are not on DICOMweb server {server.name} "
            "(any more): deleted after the query? Nothing was imported",
            status=409,
        )
    files_dir = upload_dir / "files"
    files_dir.mkdir(exist_ok=True)
    expected_total = sum(_int(_value(listed[uid], "NumberOfSeriesRelatedInstances")) or 0 for uid in wanted)
    received = total_bytes = 0
    for index, uid in enumerate(wanted):
        item = listed[uid]
        label = series_label(_int(_value(item, "SeriesNumber")), str(_value(item, "SeriesDescription", "")))
        expected = _int(_value(item, "NumberOfSeriesRelatedInstances"))
        series_dir = files_dir / f"series-{index:03d}"
        series_dir.mkdir()
        count = 0
        with _talking_to(
            server,
            f"retrieving {label}",
            not_found=f"{label} is not on DICOMweb server {server.name} (any more): deleted after the query? "
            "Nothing was imported",
        ):
            for ds in client.iter_series(study_uid, uid):
                path = series_dir / f"{count:06d}.dcm"
                ds.save_as(path)
                count += 1
                received += 1
                total_bytes += path.stat().st_size
                if total_bytes > max_bytes:
                    raise DicomWebError(
                        f"the retrieve from DICOMweb server {server.name} is larger than the limit of {max_bytes} "
                        "bytes (DLA_MAX_UPLOAD_BYTES); nothing was imported",
                        status=413,
                    )
                progress(
                    received / max(expected_total, received, 1),
                    f"retrieving {label} ({count}/{expected or '?'} instances)",
                )
        if count == 0 or (expected is not None and count < expected):
            raise DicomWebError(
                f"{label}: DICOMweb server {server.name} sent {count} of its {expected} instances; nothing was "
                "imported",
                status=409,
            )
    return {"server": server.name, "series": len(wanted), "instances": received, "bytes": total_bytes}


# ----------------------------------------------------------------------------------------------------------
# STOW-RS send-back
# ----------------------------------------------------------------------------------------------------------


def _from_json(item: dict) -> pydicom.Dataset:
    return pydicom.Dataset.from_json(item, bulk_data_uri_handler=lambda *args: b"")


def send_results(
    server_name: str,
    study: Study,
    *,
    label_version: LabelVersion | None = None,
    include_dla: bool = True,
    progress: Callable[[float, str], None] = lambda f, m: None,
) -> dict:
    """STOW the study's DLA series and/or the SEG of an approved label version into the original study on the
    server, referencing the original fill series and instances. Returns counts (no UIDs)."""
    server = get_server(server_name)
    identity = PseudonymMap.objects.filter(study=study).first()
    if identity is None or not identity.original_study_uid:
        raise DicomWebError(
            f"study {study.pseudonym} has no pseudonym map, so its originals on the PACS are unknown; results are "
            "sent back only for studies imported with their identity kept (a DICOMweb server with "
            "_KEEP_IDENTITY=1, or DLA_KEEP_PSEUDONYM_MAP=1)",
            status=409,
        )
    fill = study.volume(Volume.Role.FILL)
    if fill is None or not fill.series_uid:
        raise DicomWebError(f"study {study.pseudonym} has no fill series imported from DICOM", status=409)
    dla = study.volume(Volume.Role.DLA) if include_dla else None
    if include_dla and dla is None:
        raise DicomWebError(f"study {study.pseudonym} has no DLA volume yet: run inference first", status=409)
    if label_version is not None and label_version.review_status != LabelVersion.Review.APPROVED:
        raise DicomWebError(
            f"label version {label_version.number} of study {study.pseudonym} is not approved "
            f"({label_version.review_status}); only approved labels are sent",
            status=409,
        )
    if dla is None and label_version is None:
        raise DicomWebError(
            "nothing to send: choose the DLA series and/or an approved label version", status=400
        )

    client = _client(server)
    uid_map = project_uid_map()
    study_uid = identity.original_study_uid
    progress(0.05, f"looking up the fill series of {study.pseudonym} on {server.name}")
    items = _series_items(server, client, study_uid, what="looking up the fill series")
    original_fill = next(
        (
            str(_value(item, "SeriesInstanceUID"))
            for item in items
            if uid_map.map(str(_value(item, "SeriesInstanceUID", ""))) == fill.series_uid
        ),
        None,
    )
    if original_fill is None:
        raise DicomWebError(
            f"the fill series of study {study.pseudonym} is not on DICOMweb server {server.name}; results are "
            "sent to the server the study came from",
            status=409,
        )
    with _talking_to(server, "reading the fill series' metadata"):
        metadata = [_from_json(item) for item in client.retrieve_series_metadata(study_uid, original_fill)]
    try:
        order = slice_order(metadata)
    except IngestError as exc:
        raise DicomWebError(
            f"the fill series on {server.name} cannot be referenced: {exc}", status=409
        ) from None
    if order.shape != tuple(fill.shape) or not np.allclose(order.affine_lps, fill.affine_lps, atol=0.01):
        raise DicomWebError(
            f"the fill series on {server.name} ({order.shape[0]} slices) no longer matches the stored fill of "
            f"study {study.pseudonym} ({fill.shape[0]} slices, same grid required)",
            status=409,
        )
    multi_frame = any(f is not None for f in order.frame_numbers)
    first = next(ds for ds in metadata if str(ds.get("SOPInstanceUID", "")) == order.sop_instance_uids[0])
    study_date = str(first.get("StudyDate", "") or "")
    written = dict(
        study_uid=study_uid,
        frame_of_reference_uid=order.frame_of_reference_uid or uid_map.map(f"pacs-frame:{study_uid}"),
        patient_id=str(first.get("PatientID", "") or identity.original_patient_id),
        patient_name=str(first.get("PatientName", "") or identity.original_patient_name),
        study_date=study_date if len(study_date) == 8 and study_date.isdigit() else "20260101",
        study_id=str(first.get("StudyID", "") or "1"),
    )
    to_send: list[pydicom.Dataset] = []
    sent = {}
    with tempfile.TemporaryDirectory(prefix="stow-") as tmp:
        if dla is not None:
            key = f"{dla.pk}:{dla.sha256}:{original_fill}"
            paths = write_dicom_series(
                np.asarray(dla.array()).astype(np.int16, copy=False),
                tuple(dla.spacing_mm),
                np.asarray(dla.affine_lps, dtype=float),
                Path(tmp) / "dla",
                series_uid=uid_map.map(f"pacs-dla-series:{key}"),
                sop_instance_uids=[uid_map.map(f"pacs-dla-instance:{key}:{k}") for k in range(dla.shape[0])],
                series_description="3D-DLA (DLA Workbench)",
                series_number=900,
                derived_from=SeriesRef(
                    series_uid=original_fill,
                    study_uid=study_uid,
                    sop_instance_uids=order.sop_instance_uids,
                    frame_numbers=order.frame_numbers,
                    sop_class_uid=order.sop_class_uid,
                    derivation_description="3D-DLA computed by DLA Workbench from the fill series",
                ),
                **written,
            )
            to_send.extend(pydicom.dcmread(p) for p in paths)
            sent["dla_instances"] = len(paths)
        if label_version is not None:
            from .labels import version_labels

            # the originals' headers as highdicom's source images (not sent); the frames of a multi-frame
            # original get single-frame stand-ins whose references are then pointed at the original's frames
            stand_ins = (
                [uid_map.map(f"pacs-stand-in:{original_fill}:{k}") for k in range(fill.shape[0])]
                if multi_frame
                else order.sop_instance_uids
            )
            source = write_dicom_series(
                np.asarray(fill.array()).astype(np.int16, copy=False),
                tuple(fill.spacing_mm),
                np.asarray(fill.affine_lps, dtype=float),
                Path(tmp) / "fill",
                series_uid=original_fill,
                sop_instance_uids=stand_ins,
                series_description=str(first.get("SeriesDescription", "") or "fill"),
                series_number=int(first.get("SeriesNumber", 1) or 1),
                **written,
            )
            key = f"{label_version.pk}:{label_version.sha256}:{original_fill}"
            seg = label_seg(
                version_labels(label_version),
                [pydicom.dcmread(p) for p in source],
                series_description=f"DLA labels v{label_version.number}: {label_version.message}"[:64],
                series_instance_uid=uid_map.map(f"pacs-seg-series:{key}"),
                sop_instance_uid=uid_map.map(f"pacs-seg-instance:{key}"),
                series_number=901,
            )
            if multi_frame:
                refer_to_frames(
                    seg,
                    dict(
                        zip(
                            stand_ins,
                            zip(order.sop_instance_uids, order.frame_numbers, strict=True),
                            strict=True,
                        )
                    ),
                    sop_class_uid=order.sop_class_uid,
                )
            to_send.append(seg)
            sent["seg_instances"] = 1
        progress(0.4, f"storing {len(to_send)} instance(s) on {server.name}")
        with _talking_to(server, f"storing {len(to_send)} instance(s)"):
            response = client.store_instances(to_send, study_instance_uid=study_uid)
    failed = list(response.get("FailedSOPSequence", []) or [])
    progress(0.8, f"checking what {server.name} stored")
    by_series: dict[str, set[str]] = {}
    for ds in to_send:
        by_series.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))
    stored = 0
    for series_uid, uids in by_series.items():
        with _talking_to(server, "checking the stored instances", not_found=""):
            try:
                found = client.search_for_instances(study_uid, series_uid, fields=["SOPInstanceUID"])
            except requests.exceptions.HTTPError as exc:
                if exc.response is None or exc.response.status_code != 404:
                    raise
                found = []
        stored += len(uids & {str(_value(item, "SOPInstanceUID", "")) for item in found})
    if failed or stored < len(to_send):
        reasons = sorted({str(item.get("FailureReason", "")) for item in failed if "FailureReason" in item})
        why = f" (failure reasons {', '.join(reasons)})" if reasons else ""
        raise DicomWebError(
            f"DICOMweb server {server.name} did not store {len(to_send) - stored} of the {len(to_send)} instances "
            f"sent{why}; it stored {stored}. Re-sending after fixing the cause duplicates nothing (the UIDs are "
            "stable)",
            status=502,
        )
    progress(1.0, f"sent {len(to_send)} instance(s) to {server.name}")
    return {"server": server.name, "instances": len(to_send), "verified": stored, **sent}
