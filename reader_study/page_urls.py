"""Page (HTML) routes of this app; templates live in frontend/templates/reader_study/.

Readers: ``/reading/`` (their queue) and ``/reading/<token>/`` (the blinded workspace; only their own tokens,
and only for accounts whose one role is Reader, as in the API).
Admins: ``/reader-studies/`` (list, create), ``/reader-studies/<id>/`` (design), ``/reader-studies/<id>/results/``.
Pages are thin: data comes from the API through the ES modules in ``frontend/static/frontend/js/reader*.js``.
The results page's charts use the one plotly.js route of the product (``plotly-js``, in ``inference.page_urls``).
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import path

from dla_web.roles import is_admin, is_reader

from . import services
from .models import Assignment, ReaderStudy


def _role_required(check, message):
    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(request, *args, **kwargs):
            if not check(request.user):
                raise PermissionDenied(message)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def reader_required(view):
    """Readers whose only role is Reader (the API's ``IsBlindedReader``), else a 403 page saying why."""

    @wraps(view)
    @login_required
    def wrapped(request, *args, **kwargs):
        if not is_reader(request.user):
            raise PermissionDenied("Only readers may open the reading workspace.")
        refusal = services.reading_refusal(request.user)
        if refusal:
            raise PermissionDenied(refusal)
        return view(request, *args, **kwargs)

    return wrapped


admin_required = _role_required(is_admin, "Only admins may manage reader studies.")


@reader_required
def reading_queue(request):
    return render(request, "reader_study/reading_queue.html")


@reader_required
def reading_workspace(request, token):
    assignment = Assignment.objects.filter(
        token=token, reader__user=request.user, reader__reader_study__status__in=["open", "closed"]
    ).first()
    if assignment is None:
        raise Http404("No such case in your reading queue.")
    return render(request, "reader_study/workspace.html", {"token": assignment.token})


@admin_required
def study_list(request):
    return render(request, "reader_study/study_list.html")


@admin_required
def study_design(request, pk):
    rs = get_object_or_404(ReaderStudy, pk=pk)
    return render(request, "reader_study/design.html", {"rs": rs})


@admin_required
def study_results(request, pk):
    rs = get_object_or_404(ReaderStudy, pk=pk)
    return render(request, "reader_study/results.html", {"rs": rs})


urlpatterns = [
    path("reading/", reading_queue, name="reading-queue"),
    path("reading/<str:token>/", reading_workspace, name="reading-workspace"),
    path("reader-studies/", study_list, name="reader-study-list"),
    path("reader-studies/<int:pk>/", study_design, name="reader-study-design"),
    path("reader-studies/<int:pk>/results/", study_results, name="reader-study-results"),
]
