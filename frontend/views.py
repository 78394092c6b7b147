"""Page views: thin, they render templates; data comes from the REST API via ES modules."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def dashboard(request):
    return render(request, "frontend/dashboard.html")


@login_required
def task_runs(request):
    return render(request, "frontend/task_runs.html")
