"""DLA Workbench project package: settings, URLs, the Celery app, roles and task runs."""

from .celery import app as celery_app

__all__ = ["celery_app"]
