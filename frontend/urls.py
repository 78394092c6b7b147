"""Page routes: login/logout, dashboard and task runs here; each app adds its pages in ``<app>/page_urls.py``."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tasks/", views.task_runs, name="task-runs"),
    path("import/", views.import_page, name="import"),
    path("", include("annotations.page_urls")),
    path("", include("inference.page_urls")),
    path("", include("reader_study.page_urls")),
    path("", include("evaluation.page_urls")),
]
