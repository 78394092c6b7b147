"""App config of the project package (roles, task runs, API plumbing)."""

from django.apps import AppConfig


class DlaWebConfig(AppConfig):
    name = "dla_web"
    verbose_name = "DLA Workbench"
