"""App config of the project package (roles, task runs, API plumbing)."""

from django.apps import AppConfig


class DlaWebConfig(AppConfig):
    name = "dla_web"
    verbose_name = "DLA Workbench"

    def ready(self):
        from . import audit, auth  # noqa: F401  (register the login/logout and user-change receivers)
