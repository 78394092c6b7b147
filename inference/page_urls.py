"""Page (HTML) routes of this app; templates live in frontend/templates/inference/.

``/models/``: the model registry (annotators see it and run inference; admins also upload, activate and
download weights). ``/models/train/``: the live training page (admins): launch form with the paper's defaults,
progress with ETA, plotly curves, log tail, cancel, and the studies of the chosen cohorts that lack an approved
label version (training skips them; a cohort with none cannot train), each linked to its workspace or review. ``/models/plotly.min.js`` (name ``plotly-js``) serves
plotly.js from the installed python ``plotly`` package (no CDN: the machines may have no internet); it is the
only plotly route, every page with charts (training, evaluation report, reader study results) loads it.
"""

from functools import cache
from pathlib import Path

import plotly
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Subquery
from django.http import FileResponse, Http404
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from annotations.models import LabelVersion, Study
from dla.model.base import DEFAULT_BONE_PRIOR_STRENGTH, DEFAULT_MIRROR, DEFAULT_PRIOR_STRENGTH
from dla.model.network import PRESETS, build_model, config_fingerprint, count_parameters
from dla_web.roles import is_admin, is_annotator

from .serializers import FORM_DEFAULTS


@cache
def _plotly_js_path() -> Path:
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@require_GET
@login_required
def plotly_js(request):
    js = _plotly_js_path()
    if not js.exists():
        raise Http404("plotly.min.js is not installed with the plotly package")
    response = FileResponse(open(js, "rb"), content_type="text/javascript")
    response["Cache-Control"] = "private, max-age=86400"
    return response


@cache
def _preset_summaries() -> list[dict]:
    out = []
    for name, config in sorted(PRESETS.items()):
        out.append(
            {
                "name": name,
                "layers": config.num_conv_layers,
                "width": config.width,
                "parameters": count_parameters(build_model(config)),
                "fingerprint": config_fingerprint(config),
            }
        )
    return out


@login_required
def models_page(request):
    if not is_annotator(request.user):
        raise PermissionDenied("Only annotators and admins may see the model registry.")
    return render(
        request,
        "inference/models.html",
        {
            "cohorts": [c for c in Study.Cohort.values if c != Study.Cohort.UNASSIGNED],
            "presets": sorted(PRESETS),
            "default_prior_strength": f"{DEFAULT_PRIOR_STRENGTH:g}",
            "default_bone_prior_strength": f"{DEFAULT_BONE_PRIOR_STRENGTH:g}",
            "default_mirror": DEFAULT_MIRROR,
        },
    )


def studies_lacking_approved_labels() -> dict[str, list[dict]]:
    """{cohort: [{id, pseudonym, head (number or None), head_id, status}]} of the studies without an approved
    label version, per cohort (what training would skip)."""
    versions = LabelVersion.objects.filter(study=OuterRef("pk"))
    head = versions.order_by("-number")
    studies = (
        Study.objects.exclude(cohort=Study.Cohort.UNASSIGNED)
        .annotate(
            approved=Exists(versions.filter(review_status=LabelVersion.Review.APPROVED)),
            head_number=Subquery(head.values("number")[:1]),
            head_id=Subquery(head.values("pk")[:1]),
            head_review=Subquery(head.values("review_status")[:1]),
        )
        .filter(approved=False)
        .order_by("cohort", "pseudonym")
    )
    lacking: dict[str, list[dict]] = {c: [] for c in Study.Cohort.values if c != Study.Cohort.UNASSIGNED}
    for study in studies:
        lacking[study.cohort].append(
            {
                "id": study.pk,
                "pseudonym": study.pseudonym,
                "head": study.head_number,
                "head_id": study.head_id,
                "status": study.head_review or "unlabeled",
            }
        )
    return lacking


@login_required
def training_page(request):
    if not is_admin(request.user):
        raise PermissionDenied("Only admins may train models.")
    return render(
        request,
        "inference/training.html",
        {
            "defaults": FORM_DEFAULTS,
            "presets": _preset_summaries(),
            "cohorts": [c for c in Study.Cohort.values if c != Study.Cohort.UNASSIGNED],
            "selected": request.GET.get("run", ""),
            "lacking": studies_lacking_approved_labels(),
            "lr_text": ", ".join(f"{v:g}" for v in FORM_DEFAULTS["lr_values"]),
            "bounds_text": ", ".join(f"{v:g}" for v in FORM_DEFAULTS["lr_boundaries_epochs"]),
        },
    )


urlpatterns = [
    path("models/", models_page, name="models"),
    path("models/train/", training_page, name="training"),
    path("models/plotly.min.js", plotly_js, name="plotly-js"),
]
