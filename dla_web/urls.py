"""URL map: pages from ``frontend``, the REST API under ``/api/`` (one router; each app registers its viewsets
in its ``urls.py`` as ``register(router)``), the OpenAPI schema and docs, and Django admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from annotations.urls import register as register_annotations
from evaluation.urls import register as register_evaluation
from inference.urls import register as register_inference
from reader_study.urls import register as register_reader_study

from .views import AuditEventViewSet, MeView, TaskRunViewSet, TokenView, UserViewSet

router = DefaultRouter()
router.register("task-runs", TaskRunViewSet, basename="taskrun")
router.register("users", UserViewSet, basename="user")
router.register("audit-events", AuditEventViewSet, basename="auditevent")
register_annotations(router)
register_inference(router)
register_reader_study(router)
register_evaluation(router)

urlpatterns = [
    path("api/", include(router.urls)),
    path("api/me/", MeView.as_view(), name="me"),
    path("api/auth/token/", TokenView.as_view(), name="api-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
]
