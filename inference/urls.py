"""API routes of this app, registered on the project's single router."""

from .views import InferenceViewSet, ModelVersionViewSet, TrainingRunViewSet


def register(router) -> None:
    router.register("models", ModelVersionViewSet, basename="modelversion")
    router.register("training-runs", TrainingRunViewSet, basename="trainingrun")
    router.register("inference", InferenceViewSet, basename="inference")
