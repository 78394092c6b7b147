"""URL map, the composition root: each app's API routes (its ``urls.py``) under ``/api/`` next to the
project's own (task runs, users, audit, token, me), the OpenAPI schema and docs, Django admin, and the pages
(``frontend.urls`` for login/dashboard/tasks/import, each app's ``page_urls.py``). Apps are included by module
name, so this floor imports none of them."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from .views import AuditEventViewSet, MeView, TaskRunViewSet, TokenView, UserViewSet

router = SimpleRouter()
router.register("task-runs", TaskRunViewSet, basename="taskrun")
router.register("users", UserViewSet, basename="user")
router.register("audit-events", AuditEventViewSet, basename="auditevent")

APPS = ("annotations", "inference", "reader_study", "evaluation")

api = [
    path("", RedirectView.as_view(pattern_name="api-docs"), name="api-root"),
    path("me/", MeView.as_view(), name="me"),
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    *router.urls,
    *(path("", include(f"{app}.urls")) for app in APPS),
]

urlpatterns = [
    path("api/", include(api)),
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
    *(path("", include(f"{app}.page_urls")) for app in APPS),
]

# error pages with the navigation and the reason (JSON under /api/)
handler400 = "frontend.views.bad_request"
handler403 = "frontend.views.permission_denied"
handler404 = "frontend.views.page_not_found"
handler500 = "frontend.views.server_error"
