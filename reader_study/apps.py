"""App config for blinded reader studies."""

from django.apps import AppConfig


class ReaderStudyConfig(AppConfig):
    name = "reader_study"
    verbose_name = "Reader studies"
