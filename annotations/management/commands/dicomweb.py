"""``manage.py dicomweb``: the DICOMweb page from a terminal (servers from DLA_DICOMWEB_SERVERS).

    manage.py dicomweb servers
    manage.py dicomweb studies SERVER [--patient-id X] [--patient-name X] [--date YYYYMMDD[-YYYYMMDD]] [--modality CT]
    manage.py dicomweb series SERVER STUDY_UID
    manage.py dicomweb retrieve SERVER STUDY_UID [SERIES_UID ...] [--pseudonym P] [--study ID] [--role R] [--cohort C]
    manage.py dicomweb send SERVER STUDY_ID [--label-version N] [--no-dla]

``retrieve`` and ``send`` run the same tasks as the page (ingest with its checks and de-identification; STOW with
its verification) in this process with a progress bar; searches and transfers are audited like the API's.
"""

import getpass
import json

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from dla_web.audit import record
from dla_web.progress import TerminalProgress

from ... import dicomweb
from ...models import LabelVersion, Study, Volume
from ...tasks import dicomweb_send, ingest_upload


class Command(BaseCommand):
    help = "Browse DICOMweb servers, retrieve series into the normal ingest, send DLA series and SEGs back."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="what", required=True)
        sub.add_parser("servers", help="list the configured servers")
        studies = sub.add_parser("studies", help="QIDO-RS: search studies")
        studies.add_argument("server")
        studies.add_argument("--patient-id", default="")
        studies.add_argument("--patient-name", default="")
        studies.add_argument("--date", default="", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
        studies.add_argument("--modality", default="")
        studies.add_argument("--limit", type=int, default=100)
        series = sub.add_parser("series", help="QIDO-RS: the series of a study")
        series.add_argument("server")
        series.add_argument("study_uid")
        retrieve = sub.add_parser("retrieve", help="WADO-RS: retrieve series and import them")
        retrieve.add_argument("server")
        retrieve.add_argument("study_uid")
        retrieve.add_argument("series_uids", nargs="*", help="default: all series of the study")
        retrieve.add_argument("--pseudonym")
        retrieve.add_argument("--study", type=int, help="add the series to this existing study id")
        retrieve.add_argument(
            "--role",
            choices=[r for r in Volume.Role.values if r not in ("truth", "class_map", "vessel_prob")],
        )
        retrieve.add_argument("--cohort", choices=Study.Cohort.values, default=Study.Cohort.UNASSIGNED)
        retrieve.add_argument(
            "--injection-site", choices=Study.Injection.values, default=Study.Injection.UNKNOWN
        )
        send = sub.add_parser("send", help="STOW-RS: send a study's DLA series and/or approved SEG back")
        send.add_argument("server")
        send.add_argument("study_id", type=int)
        send.add_argument("--label-version", type=int, help="number of an approved label version")
        send.add_argument("--no-dla", action="store_true", help="do not send the DLA series")

    def handle(self, *args, what, **options):
        try:
            getattr(self, f"do_{what}")(**options)
        except dicomweb.DicomWebError as exc:
            raise CommandError(str(exc))
        except ImproperlyConfigured as exc:
            raise CommandError(f"DICOMweb configuration: {exc}")

    def _audit(self, action: str, **detail) -> None:
        record(action, detail={**detail, "via": "manage.py dicomweb", "os_user": getpass.getuser()})

    def do_servers(self, **options):
        for server in dicomweb.configured_servers().values():
            self.stdout.write(json.dumps(server.public()))

    def do_studies(self, *, server, patient_id, patient_name, date, modality, limit, **options):
        filters = {
            "PatientID": patient_id,
            "PatientName": patient_name,
            "StudyDate": date,
            "ModalitiesInStudy": modality,
        }
        found = dicomweb.search_studies(server, filters, limit=limit)
        self._audit(
            "dicomweb.search", server=server, level="studies", filters=sorted(k for k, v in filters.items() if v),
            results=len(found),
        )  # fmt: skip
        for study in found:
            self.stdout.write(json.dumps(study))

    def do_series(self, *, server, study_uid, **options):
        found = dicomweb.search_series(server, study_uid)
        self._audit("dicomweb.search", server=server, level="series", results=len(found))
        for series in found:
            self.stdout.write(json.dumps(series))

    def do_retrieve(
        self, *, server, study_uid, series_uids, pseudonym, study, role, cohort, injection_site, **o
    ):
        if study and not Study.objects.filter(pk=study).exists():
            raise CommandError(f"no study with id {study}")
        upload_id = dicomweb.prepare_retrieve(server, study_uid, series_uids)
        run = ingest_upload.create_run(
            params={
                "upload_id": upload_id,
                "study_id": study,
                "pseudonym": pseudonym,
                "role": role,
                "cohort": cohort,
                "injection_site": injection_site,
            },
            message=f"retrieve of {len(series_uids) or 'all'} series from {server} (manage.py dicomweb)",
        )
        run = ingest_upload.run_here(run, terminal=TerminalProgress(self.stderr))
        if run.state != "succeeded":
            raise CommandError(f"retrieve {run.state}: {run.error or run.message}")
        for name in run.result.get("skipped", []):
            self.stderr.write(f"skipped {name}")
        self.stdout.write(f"{run.result['pseudonym']}: volumes {run.result['volume_ids']}")

    def do_send(self, *, server, study_id, label_version, no_dla, **options):
        study = Study.objects.filter(pk=study_id).first()
        if study is None:
            raise CommandError(f"no study with id {study_id}")
        version = None
        if label_version is not None:
            version = LabelVersion.objects.filter(study=study, number=label_version).first()
            if version is None:
                raise CommandError(f"study {study.pseudonym} has no label version {label_version}")
        dicomweb.get_server(server)
        run = dicomweb_send.create_run(
            target=study,
            params={
                "server": server,
                "study_id": study.pk,
                "label_version_id": version.pk if version else None,
                "include_dla": not no_dla,
            },
            message=f"sending results of {study.pseudonym} to {server} (manage.py dicomweb)",
        )
        run = dicomweb_send.run_here(run, terminal=TerminalProgress(self.stderr))
        if run.state != "succeeded":
            raise CommandError(f"send {run.state}: {run.error or run.message}")
        self.stdout.write(f"{study.pseudonym}: {run.result['instances']} instance(s) stored on {server}")
