"""Page routes of the frontend itself: login/logout, password change, dashboard, task runs and import (each app's pages are in
``<app>/page_urls.py``, included by ``dla_web.urls``)."""

from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/password/", views.PasswordChangeView.as_view(), name="password-change"),
    path("tasks/", views.task_runs, name="task-runs"),
    path("import/", views.import_page, name="import"),
    path("favicon.ico", RedirectView.as_view(url=static("frontend/img/favicon.svg"), permanent=False)),
]
