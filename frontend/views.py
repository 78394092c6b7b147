"""Page views: thin, they render templates; data comes from the REST API via ES modules.

Also the self-service password change (its save revokes the user's API keys and is audited: ``dla_web.auth``)
and the project's error pages (``handler400``/``handler403``/``handler404``/``handler500`` in ``dla_web.urls``):
the page keeps the navigation and says why, in words (the reason given by the view that refused); requests under
``/api/`` get the API's JSON ``{"detail": ...}`` instead of HTML.
"""

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.sessions.exceptions import SessionInterrupted
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db.models.functions import Coalesce
from django.http import HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.urls import reverse_lazy
from django.utils import timezone
from django.views.decorators.csrf import requires_csrf_token

from annotations.models import LabelVersion, Study, Volume
from dla_web.roles import is_admin, is_annotator

logger = logging.getLogger(__name__)


@login_required
def dashboard(request):
    context = {}
    if is_annotator(request.user):
        context["my_versions"] = list(
            LabelVersion.objects.filter(author=request.user)
            .exclude(review_status=LabelVersion.Review.NONE)
            .select_related("study", "reviewed_by")
            .annotate(last_change=Coalesce("reviewed_at", "created_at"))
            .order_by("-last_change", "-id")[:8]
        )
    if is_admin(request.user):
        context["awaiting_review"] = LabelVersion.objects.filter(
            review_status=LabelVersion.Review.SUBMITTED
        ).count()
    return render(request, "frontend/dashboard.html", context)


@login_required
def task_runs(request):
    return render(request, "frontend/task_runs.html")


@login_required
def import_page(request):
    if not is_annotator(request.user):
        raise PermissionDenied("Only annotators and admins may import data.")
    context = {
        "roles_choices": [(v, label) for v, label in Volume.Role.choices if v in Volume.IMAGE_ROLES],
        "cohorts": Study.Cohort.choices,
        "injections": Study.Injection.choices,
        "studies": Study.objects.order_by("pseudonym").values_list("pk", "pseudonym"),
    }
    return render(request, "frontend/import.html", context)


class PasswordChangeView(auth_views.PasswordChangeView):
    """Change your own password (the current one, then the new one twice, checked by the password validators).
    Saving it keeps this browser signed in, signs out the user's other sessions and revokes their API keys."""

    template_name = "frontend/password_change.html"
    success_url = reverse_lazy("dashboard")

    def form_valid(self, form):
        from dla_web.models import ApiToken

        live = ApiToken.objects.filter(
            user=self.request.user, revoked_at__isnull=True, expires_at__gt=timezone.now()
        ).count()
        response = super().form_valid(form)
        keys = f" {live} API key{'s were' if live != 1 else ' was'} revoked; get a new one." if live else ""
        messages.success(self.request, f"Your password was changed.{keys}")
        return response


# ------------------------------------------------------------------------------------------------ error pages

ERRORS = {
    400: ("The request was refused", "The request could not be read."),
    403: ("You may not open this page", "Your role does not allow this page."),
    404: ("Page not found", "Nothing lives at this address."),
    500: ("Something went wrong on the server", "The error was logged; nothing you did caused it."),
}


def _reason(exception) -> str:
    """The message a view gave its exception, or '' (never a class name or Django's resolver dictionary)."""
    message = exception.args[0] if exception is not None and getattr(exception, "args", None) else ""
    return message if isinstance(message, str) else ""


def _error_page(request, status: int, reason: str = ""):
    title, fallback = ERRORS[status]
    reason = reason or fallback
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": reason}, status=status)
    context = {
        "status": status,
        "title": title,
        "reason": reason,
        "path": request.path,
    }
    return render(request, "frontend/error.html", context, status=status)


def _megabytes(n: int) -> str:
    return f"{n / 1024**2:g} MB"


def _bad_request_reason(exception) -> str:
    """Words for Django's own refusals of a request body (raised before any view runs)."""
    if isinstance(exception, RequestDataTooBig):
        return (
            f"The request body is larger than the {_megabytes(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)} limit for "
            "form and JSON data; files go in multipart file fields (up to DLA_MAX_UPLOAD_BYTES)."
        )
    if isinstance(exception, SessionInterrupted):
        return "Your session ended while this request ran (you logged out elsewhere); please log in again."
    if isinstance(exception, TooManyFilesSent):
        return f"The request sends more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files (the limit)."
    if isinstance(exception, TooManyFieldsSent):
        return (
            f"The request sends more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form fields (the limit)."
        )
    return ""


@requires_csrf_token
def bad_request(request, exception=None):
    return _error_page(request, 400, _bad_request_reason(exception))


@requires_csrf_token
def permission_denied(request, exception=None):
    return _error_page(request, 403, _reason(exception))


@requires_csrf_token
def page_not_found(request, exception=None):
    return _error_page(request, 404, _reason(exception))


@requires_csrf_token
def server_error(request):
    try:
        return _error_page(request, 500)
    except Exception:  # the page itself failed (e.g. the database is down): a plain page without navigation
        logger.exception("the error page could not be rendered")
        title, reason = ERRORS[500]
        return HttpResponseServerError(
            f"<!doctype html><title>{title}</title><h1>{title}</h1><p>{reason}</p><p><a href='/'>Dashboard</a></p>"
        )
