"""API routes of the evaluation app, registered on the project's single router."""

from .views import EvaluationViewSet


def register(router) -> None:
    router.register("evaluations", EvaluationViewSet, basename="evaluation")
