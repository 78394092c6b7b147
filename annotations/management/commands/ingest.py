"""``manage.py ingest PATH [PATH ...]``: import DICOM/NIfTI files, folders or zips as one study (audited like an
import through the API: a ``data.import`` event naming the command and the OS user)."""

import getpass
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from dla.io.archive import ArchiveError
from dla.io.dicom import IngestError
from dla_web.audit import record
from dla_web.progress import TerminalProgress

from ...ingest import ingest
from ...models import Study, Volume
from ...tasks import enqueue_cines


class Command(BaseCommand):
    help = "Import DICOM series, zips or NIfTI files as one de-identified study."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--pseudonym", help="study pseudonym (default: generated)")
        parser.add_argument("--study", type=int, help="add the volumes to this existing study id")
        parser.add_argument(
            "--role",
            choices=[r for r in Volume.Role.values if r not in ("truth", "class_map", "vessel_prob")],
        )
        parser.add_argument("--cohort", choices=Study.Cohort.values, default=Study.Cohort.UNASSIGNED)
        parser.add_argument(
            "--injection-site", choices=Study.Injection.values, default=Study.Injection.UNKNOWN
        )

    def handle(self, *args, paths, pseudonym, study, role, cohort, injection_site, **options):
        target = Study.objects.filter(pk=study).first() if study else None
        if study and target is None:
            raise CommandError(f"no study with id {study}")
        with tempfile.TemporaryDirectory(prefix="ingest-") as work:
            try:
                result = ingest(
                    paths,
                    work_dir=Path(work),
                    study=target,
                    pseudonym=pseudonym,
                    role=role,
                    cohort=cohort,
                    injection_site=injection_site,
                    source_tag="manage.py ingest",
                    progress=TerminalProgress(self.stderr),
                )
            except (IngestError, ArchiveError) as exc:
                raise CommandError(str(exc))
        study_obj, volumes = result.study, result.volumes
        record(
            "data.import",
            obj=study_obj,
            detail={
                "volumes": [v.pk for v in volumes],
                "via": "manage.py ingest",
                "os_user": getpass.getuser(),
                "skipped": len(result.skipped),
            },
        )
        enqueue_cines(volumes)
        for _, reason in result.skipped:
            self.stderr.write(f"skipped {reason}")
        for volume in volumes:
            self.stdout.write(
                f"{study_obj.pseudonym}: {volume.role} volume {volume.pk} {tuple(volume.shape)}"
            )
