"""``manage.py check_storage``: verify that every stored file the database knows (volumes, label versions,
model weights) exists and hashes to its recorded sha256. Exit status 1 when anything is missing or corrupt;
run it after restoring a backup or moving storage."""

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from annotations import volume_store
from dla_web.progress import TerminalProgress

# (app label, model, file field, sha256 field): the stored files with a recorded checksum.
CHECKED = [
    ("annotations", "Volume", "file", "sha256"),
    ("inference", "ModelVersion", "weights_file", "sha256"),
]


class Command(BaseCommand):
    help = "Verify every stored file against the sha256 recorded in the database."

    def handle(self, *args, **options):
        from annotations.labels import version_labels
        from annotations.models import LabelVersion
        from dla.labeling.codec import labels_sha256

        targets = []
        for app_label, model_name, file_field, hash_field in CHECKED:
            try:
                model = apps.get_model(app_label, model_name)
            except LookupError:
                continue
            if not hasattr(model, hash_field):
                continue
            targets += [
                (f"{model_name} {pk}", name, digest)
                for pk, name, digest in model.objects.values_list("pk", file_field, hash_field)
            ]
        versions = list(LabelVersion.objects.all())
        total = len(targets) + len(versions)
        progress = TerminalProgress(self.stderr)
        problems = []
        for index, (what, name, digest) in enumerate(targets):
            if not volume_store.verify_file(name, digest):
                problems.append(f"{what}: {name} is missing or does not match its sha256")
            progress((index + 1) / max(total, 1), what)
        for index, version in enumerate(versions):
            try:
                ok = labels_sha256(version_labels(version)) == version.sha256
            except (OSError, ValueError):
                ok = False
            if not ok:
                problems.append(
                    f"LabelVersion {version.pk} ({version.study.pseudonym} v{version.number}): "
                    f"{version.file} is missing, unreadable or does not match its sha256"
                )
            progress((len(targets) + index + 1) / max(total, 1), f"label version {version.pk}")
        if problems:
            for line in problems:
                self.stderr.write(line)
            raise CommandError(f"{len(problems)} of {total} stored files failed the check")
        self.stdout.write(self.style.SUCCESS(f"all {total} stored files present and intact"))
