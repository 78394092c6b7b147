"""Page (HTML) routes of this app; templates live in frontend/templates/<app>/.

``/studies/``: the study list (search, filters cohort / label status / has DLA), rendered on the server so it
works without JavaScript. ``/studies/<id>/``: the annotation workspace; its data (volumes, geometry) is handed
to the ES modules through ``json_script`` and ``data-*`` attributes, everything else comes from the REST API.
"""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, Q, Subquery
from django.shortcuts import get_object_or_404, render
from django.urls import path

from dla.render.slices import WINDOW_PRESETS_HU
from dla_web.roles import is_annotator

from .models import Draft, LabelVersion, Study, Volume

LABEL_STATUSES = {
    "unlabeled": "no label version yet",
    "draft": "draft in progress (no version)",
    "none": "labeled, not submitted",
    "submitted": "submitted for review",
    "approved": "approved",
    "rejected": "rejected",
}


def _annotator_only(request):
    if not is_annotator(request.user):
        raise PermissionDenied("Only annotators and admins may open studies.")


def studies_with_status():
    head = LabelVersion.objects.filter(study=OuterRef("pk")).order_by("-number")
    return Study.objects.annotate(
        head_number=Subquery(head.values("number")[:1]),
        head_review=Subquery(head.values("review_status")[:1]),
        has_dla=Exists(Volume.objects.filter(study=OuterRef("pk"), role=Volume.Role.DLA)),
        has_draft=Exists(Draft.objects.filter(study=OuterRef("pk"))),
    ).prefetch_related("volumes")


@login_required
def study_list(request):
    _annotator_only(request)
    params = request.GET
    studies = studies_with_status()
    query = params.get("q", "").strip()
    if query:
        studies = studies.filter(Q(pseudonym__icontains=query) | Q(notes__icontains=query))
    cohort = params.get("cohort", "")
    if cohort in Study.Cohort.values:
        studies = studies.filter(cohort=cohort)
    status = params.get("label", "")
    if status == "unlabeled":
        studies = studies.filter(head_number__isnull=True, has_draft=False)
    elif status == "draft":
        studies = studies.filter(head_number__isnull=True, has_draft=True)
    elif status in LabelVersion.Review.values:
        studies = studies.filter(head_review=status)
    dla = params.get("dla", "")
    if dla == "yes":
        studies = studies.filter(has_dla=True)
    elif dla == "no":
        studies = studies.filter(has_dla=False)
    page = Paginator(studies.order_by("pseudonym"), 50).get_page(params.get("page"))
    for study in page:
        study.roles = sorted({v.role for v in study.volumes.all() if v.role != Volume.Role.TRUTH})
    return render(
        request,
        "annotations/study_list.html",
        {
            "page": page,
            "q": query,
            "cohort": cohort,
            "label": status,
            "dla": dla,
            "cohorts": Study.Cohort.values,
            "label_statuses": LABEL_STATUSES,
            "filtered": bool(query or cohort or status or dla),
        },
    )


@login_required
def workspace(request, pk: int):
    _annotator_only(request)
    study = get_object_or_404(Study, pk=pk)
    volumes = [
        {
            "id": v.pk,
            "role": v.role,
            "shape": v.shape,
            "spacing_mm": v.spacing_mm,
            "dtype": v.dtype,
            "hu_min": v.hu_min,
            "hu_max": v.hu_max,
        }
        for v in study.volumes.order_by("role", "-created_at", "-id")
        if v.role in Volume.IMAGE_ROLES
    ]
    seen, newest = set(), []
    for v in volumes:  # newest volume per role
        if v["role"] not in seen:
            seen.add(v["role"])
            newest.append(v)
    return render(
        request,
        "annotations/workspace.html",
        {
            "study": study,
            "volumes": newest,
            "presets": {k: {"center": c, "width": w} for k, (c, w) in WINDOW_PRESETS_HU.items()},
        },
    )


urlpatterns = [
    path("studies/", study_list, name="study-list"),
    path("studies/<int:pk>/", workspace, name="study-workspace"),
]
