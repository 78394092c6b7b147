"""Page (HTML) routes of this app; templates live in frontend/templates/<app>/.

``/studies/``: the study list (search, filters cohort / label status / has DLA), rendered on the server so it
works without JavaScript. ``/studies/<id>/``: the annotation workspace; its data (volumes, geometry) is handed
to the ES modules through ``json_script`` and ``data-*`` attributes (with the study's newest predicted class map,
for "Accept model vessels"), everything else comes from the REST API.
``/studies/<id>/?review=<version id>`` opens the workspace read-only on that label version with its diff
against the parent (approve / reject for admins, through the API's review action).
``/reviews/``: the admins' review queue (submitted label versions, oldest first, and the latest outcomes),
rendered on the server.
"""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, Q, Subquery
from django.http import Http404
from django.shortcuts import render
from django.urls import path

from dla.classes import CLASS_NAMES, LABELED_CLASSES
from dla.labeling.recipe import (
    DEFAULT_VESSEL_EDGE_FRACTION,
    DEFAULT_VESSEL_LOW_THRESHOLD_HU,
    VESSELNESS_MAX_SCALES,
    RecipeParams,
)
from dla.render.slices import WINDOW_PRESETS_HU
from dla_web.roles import is_admin, is_annotator

from .models import Draft, LabelVersion, Study, Volume
from .pacs_page import pacs_page
from .subtraction import subtraction_check

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
        head_id=Subquery(head.values("pk")[:1]),
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
    study = Study.objects.filter(pk=pk).first()
    if study is None:
        raise Http404(
            f"There is no study with id {pk}; it may have been deleted. Pick one from the study list."
        )
    review = None
    review_id = request.GET.get("review", "")
    if review_id:
        review = (
            LabelVersion.objects.filter(study=study, pk=review_id).select_related("parent").first()
            if review_id.isdigit()
            else None
        )
        if review is None:
            raise Http404(f"study {study.pseudonym} has no label version with id {review_id!r} to review")
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
    # the newest predicted class map of the study (model-assisted labeling); the model's name is fetched by the
    # page from /api/models/<id>/ (this app does not import the inference app)
    class_map = study.volumes.filter(role=Volume.Role.CLASS_MAP).order_by("-created_at", "-id").first()
    return render(
        request,
        "annotations/workspace.html",
        {
            "study": study,
            "review": review,
            "volumes": newest,
            "class_map": None
            if class_map is None
            else {
                "id": class_map.pk,
                "model_version_id": class_map.model_version_id,
                "created_at": class_map.created_at.isoformat(),
                "shape": class_map.shape,
            },
            "presets": {k: {"center": c, "width": w} for k, (c, w) in WINDOW_PRESETS_HU.items()},
            "recipe_defaults": recipe_defaults(),
        },
    )


def recipe_defaults() -> dict:
    """The recipe's defaults for the workspace's advanced options (filled into the inputs; a switched-off option
    shows the value it would use when switched on)."""
    d = RecipeParams()
    low, edge = d.vessel_low_threshold_hu, d.vessel_edge_fraction
    return {
        "vessel_low_threshold_hu": low,
        "vessel_edge_fraction": edge,
        "low_threshold_hu": f"{DEFAULT_VESSEL_LOW_THRESHOLD_HU if low is None else low:g}",
        "edge_fraction": f"{DEFAULT_VESSEL_EDGE_FRACTION if edge is None else edge:g}",
        "vessel_edge_radius_mm": f"{d.vessel_edge_radius_mm:g}",
        "sigmas_text": " ".join(f"{s:g}" for s in d.vesselness_sigmas_mm),
        "vesselness_threshold": f"{d.vesselness_threshold:g}",
        "vesselness_reach_mm": f"{d.vesselness_reach_mm:g}",
        "max_scales": VESSELNESS_MAX_SCALES,
    }


def _class_counts(version: LabelVersion | None) -> dict[int, int]:
    counts = (version.counts or {}) if version else {}
    return {c: int(counts.get(str(c), counts.get(c, 0)) or 0) for c in LABELED_CLASSES}


def _queue_row(version: LabelVersion) -> dict:
    """One row of the review queue: the version, its per-class counts and their change from the parent, and the
    study's subtraction check (``annotations.subtraction``)."""
    now, before = _class_counts(version), _class_counts(version.parent)
    return {
        "version": version,
        "subtraction": subtraction_check(version.study),
        "classes": [
            {
                "id": c,
                "name": CLASS_NAMES[c].replace("_", " "),
                "count": f"{now[c]:,}",
                "delta": now[c] - before[c] if version.parent_id else None,
                "delta_text": f"{now[c] - before[c]:+,}" if version.parent_id else "",
            }
            for c in LABELED_CLASSES
        ],
    }


@login_required
def review_queue(request):
    """Submitted label versions waiting for an admin (oldest first) and the latest reviews."""
    if not is_admin(request.user):
        raise PermissionDenied(
            "Only admins may review label versions; annotators submit them from the workspace."
        )
    versions = LabelVersion.objects.select_related("study", "author", "reviewed_by", "parent")
    waiting = versions.filter(review_status=LabelVersion.Review.SUBMITTED).order_by("created_at", "id")
    done = versions.filter(
        review_status__in=[LabelVersion.Review.APPROVED, LabelVersion.Review.REJECTED],
        reviewed_at__isnull=False,
    ).order_by("-reviewed_at")[:20]
    return render(
        request,
        "annotations/review_queue.html",
        {
            "waiting": [_queue_row(v) for v in waiting],
            "done": list(done),
            "class_labels": [CLASS_NAMES[c].replace("_", " ") for c in LABELED_CLASSES],
        },
    )


urlpatterns = [
    path("studies/", study_list, name="study-list"),
    path("studies/<int:pk>/", workspace, name="study-workspace"),
    path("reviews/", review_queue, name="review-queue"),
    path("pacs/", pacs_page, name="pacs"),
]
