"""Page views: thin, they render templates; data comes from the REST API via ES modules."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render

from annotations.models import Study, Volume
from dla_web.roles import is_annotator


@login_required
def dashboard(request):
    return render(request, "frontend/dashboard.html")


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
