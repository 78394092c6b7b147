"""API routes of the inference app, included under ``/api/`` by ``dla_web.urls``."""

from rest_framework.routers import SimpleRouter

from .views import InferenceViewSet, LabelPriorityViewSet, ModelVersionViewSet, TrainingRunViewSet

router = SimpleRouter()
router.register("models", ModelVersionViewSet, basename="modelversion")
router.register("training-runs", TrainingRunViewSet, basename="trainingrun")
router.register("inference", InferenceViewSet, basename="inference")
router.register("label-priorities", LabelPriorityViewSet, basename="label-priorities")

urlpatterns = router.urls
