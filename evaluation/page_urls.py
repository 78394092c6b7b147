"""Page (HTML) routes of this app; templates live in frontend/templates/evaluation/ (admins only).

``/evaluations/``: evaluations list, launch form and compare form. ``/evaluations/<id>/``: the report (Table 1
next to the paper's, per-patient plotly plots, Dice vs vessel volume, artifact table, worst cases linking to
the viewer, model and training run, downloads) or the live progress while it runs.
``/evaluations/compare/?a=&b=``: paired differences of two evaluations. Plotly is the copy served by the
inference app (``/models/plotly.min.js``, from the installed python package).
"""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render
from django.urls import path

from dla_web.roles import is_admin
from inference.models import ModelVersion

from . import reports, services
from .models import Evaluation


def _admin(request):
    if not is_admin(request.user):
        raise PermissionDenied("Only admins may see evaluations.")


@login_required
def evaluation_list(request):
    _admin(request)
    evaluations = list(Evaluation.objects.select_related("model_version", "task_run", "created_by")[:200])
    return render(
        request,
        "evaluation/list.html",
        {
            "evaluations": evaluations,
            "done": [e for e in evaluations if e.is_done],
            "models": ModelVersion.objects.order_by("-is_active", "-created_at")[:100],
            "cohorts": list(services.COHORTS),
        },
    )


def _plot_data(ctx: dict) -> dict:
    return {
        "cohorts": ctx["evaluation"].cohorts,
        "dataset_names": services.DATASET_NAMES,
        "metrics": [
            {"key": c["metric"], "label": c["label"]}
            for c in (ctx["table1"][0]["cells"] if ctx["table1"] else [])
        ],
        "studies": [
            {
                "id": s["study_id"],
                "pseudonym": s["pseudonym"],
                "cohort": s["cohort"],
                "vessel_volume_ml": s["vessel_volume_ml"],
                **{m: s[m] for m in ("sensitivity", "ppv", "dice", "accuracy")},
            }
            for s in ctx["studies"]
        ],
        "summary": {
            row["dataset"]: {c["metric"]: c["summary"] for c in row["cells"]} for row in ctx["table1"]
        },
    }


@login_required
def evaluation_report(request, pk: int):
    _admin(request)
    evaluation = get_object_or_404(Evaluation.objects.select_related("model_version", "task_run"), pk=pk)
    ctx = {"evaluation": evaluation}
    if evaluation.is_done:
        ctx = reports.report_context(evaluation)
        ctx["plot_data"] = _plot_data(ctx)
        ctx["others"] = (
            Evaluation.objects.exclude(pk=pk)
            .filter(reference=evaluation.reference)
            .exclude(summary={})
            .select_related("model_version")[:50]
        )
    return render(request, "evaluation/report.html", ctx)


@login_required
def evaluation_compare(request):
    _admin(request)
    error, result = "", None
    a_id, b_id = request.GET.get("a", ""), request.GET.get("b", "")
    if not (a_id.isdigit() and b_id.isdigit()):
        error = "Choose two evaluations to compare (?a=<id>&b=<id>)."
    else:
        a = Evaluation.objects.filter(pk=int(a_id)).select_related("model_version").first()
        b = Evaluation.objects.filter(pk=int(b_id)).select_related("model_version").first()
        if a is None or b is None:
            error = f"evaluation {a_id if a is None else b_id} does not exist"
        else:
            try:
                result = services.compare(a, b)
            except services.EvaluationInputError as exc:
                error = str(exc)
    if result:
        labels = services.METRIC_LABELS
        for row in result["rows"]:
            row["cells"] = [
                (labels[m], row[m]["text"]) for m in ("sensitivity", "ppv", "dice", "accuracy", "specificity")
            ]
    return render(request, "evaluation/compare.html", {"error": error, "result": result})


urlpatterns = [
    path("evaluations/", evaluation_list, name="evaluation-list"),
    path("evaluations/compare/", evaluation_compare, name="evaluation-compare"),
    path("evaluations/<int:pk>/", evaluation_report, name="evaluation-report"),
]
