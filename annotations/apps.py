"""App config for studies, volumes, ingest/export and labels."""

from django.apps import AppConfig


class AnnotationsConfig(AppConfig):
    name = "annotations"
    verbose_name = "Studies and labels"
