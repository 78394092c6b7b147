"""App config for evaluation runs and reports (the metrics themselves are pure code in dla/stats/metrics.py)."""

from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = "Evaluation"
