"""``manage.py createdemo``: demo users for each role (and demo studies once phantoms can be generated).

Idempotent: running it again resets the demo passwords and keeps existing data. The passwords are printed,
never stored in the repository; pass ``--password-file`` (read from a file, so it never shows in ``ps``) or
``--password`` to choose one, or a random one is generated.
"""

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from dla_web.roles import ADMIN, ANNOTATOR, READER

DEMO_USERS = (
    ("admin", ADMIN, "Ada", "Admin"),
    ("annotator", ANNOTATOR, "Anna", "Notator"),
    ("reader1", READER, "Rita", "Reader"),
    ("reader2", READER, "Rolf", "Reader"),
)


class Command(BaseCommand):
    help = "Create demo users (admin, annotator, reader1, reader2) and demo data."

    def add_arguments(self, parser):
        parser.add_argument("--password", help="password for all demo users (default: random, printed)")
        parser.add_argument("--password-file", help="read the password from this file (first line)")
        parser.add_argument("--no-data", action="store_true", help="create users only, no demo studies")

    def handle(self, *args, password=None, password_file=None, no_data=False, **options):
        if password_file:
            try:
                password = Path(password_file).read_text().strip().splitlines()[0]
            except (OSError, IndexError) as exc:
                raise CommandError(f"cannot read a password from {password_file}: {exc}") from None
        password = password or secrets.token_urlsafe(9)
        User = get_user_model()
        for username, role, first, last in DEMO_USERS:
            user, _ = User.objects.get_or_create(
                username=username, defaults={"first_name": first, "last_name": last}
            )
            user.set_password(password)
            user.is_active = True
            user.save()
            user.groups.add(Group.objects.get(name=role))
        if not no_data:
            self._demo_data()
        self.stdout.write(self.style.SUCCESS("Demo users (username / password):"))
        for username, role, _, _ in DEMO_USERS:
            self.stdout.write(f"  {username:<10} {password}   ({role})")

    def _demo_data(self):
        from django.core.management import call_command
        from django.core.management.base import CommandError

        try:
            call_command("seed_demo_studies", stdout=self.stdout)
        except CommandError as exc:
            if "Unknown command" not in str(exc):
                raise
