"""App config of the project package (roles, task runs, API plumbing)."""

from django.apps import AppConfig


class DlaWebConfig(AppConfig):
    name = "dla_web"
    verbose_name = "DLA Workbench"

    def ready(self):
        from . import audit  # noqa: F401  (registers the login/logout receivers)
