"""App config for the network, training, inference, model registry and evaluation."""

from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Models and evaluation"
