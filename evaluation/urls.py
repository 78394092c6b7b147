"""API routes of the evaluation app, included under ``/api/`` by ``dla_web.urls``."""

from rest_framework.routers import SimpleRouter

from .views import EvaluationViewSet

router = SimpleRouter()
router.register("evaluations", EvaluationViewSet, basename="evaluation")

urlpatterns = router.urls
