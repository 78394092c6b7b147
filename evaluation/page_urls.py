"""Page (HTML) routes of this app; templates live in frontend/templates/evaluation/ (admins only).

``/evaluations/``: evaluations list, launch form and compare form. ``/evaluations/<id>/``: the report (Table 1
next to the paper's, per-patient plotly plots, Dice vs vessel volume, artifact table, worst cases linking to
the viewer, model and training run, downloads) or the live progress while it runs.
``/evaluations/compare/?a=&b=``: two models side by side: their costs (Models table), the paired Table 1 rows
and the paired rows against the phantom truth with residual bone counts and a Dice verdict.
Plotly is the copy served by the inference app (``/models/plotly.min.js``, from the installed python package).
"""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render
from django.urls import path

from dla_web.roles import is_admin
from inference.models import ModelVersion

from . import comparison, reports, services
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


def _seconds(value) -> str:
    if value is None:
        return ""
    if value >= 3600:
        return f"{value / 3600:.2f} h ({value:,.0f} s)"
    if value >= 100:
        return f"{value / 60:.1f} min ({value:,.0f} s)"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def _or(value, note: str) -> str:
    return value if value not in (None, "") else note


def _model_rows(models: dict) -> list[dict]:
    """The compare page's "Models" table: one row per cost or property, a and b side by side."""
    a, b = models["a"], models["b"]

    def row(key, label, text):
        return {"key": key, "label": label, "a": text(a), "b": text(b)}

    def count(v):
        return f"{v:,}" if v is not None else None

    def inference(m, field, first=False):
        inf = m["inference"]
        if inf[field] is None:
            return (inf["note"] or "not known") if first else "not known"
        return _seconds(inf[field])

    return [
        row("name", "Model", lambda m: f"#{m['model_version']} {m['name']}"),
        row("architecture", "Architecture", lambda m: m["architecture_label"]),
        row(
            "parameters",
            "Parameters",
            lambda m: (
                f"{m['parameters']:,} ({m['parameters_note']})"
                if m["parameters"] is not None
                else m["parameters_note"]
            ),
        ),
        row(
            "training_s",
            "Training time",
            lambda m: (
                f"{_seconds(m['training_s'])}; {m['training_note']}"
                if m["training_s"] is not None
                else m["training_note"]
            ),
        ),
        row("iterations", "Iterations", lambda m: _or(count(m["iterations"]), "not recorded")),
        row(
            "best_iteration",
            "Best validation iteration",
            lambda m: _or(count(m["best_iteration"]), "not recorded"),
        ),
        row(
            "training_voxels_per_s",
            "Training voxels/s",
            lambda m: _or(
                count(round(m["training_voxels_per_s"])) if m["training_voxels_per_s"] else None,
                "not recorded",
            ),
        ),
        row(
            "inference_mean_s",
            "Inference per study, mean",
            lambda m: (
                f"{inference(m, 'mean_s')} over {m['inference']['n_timed']} studies"
                + (f"; {m['inference']['note']}" if m["inference"]["note"] else "")
                if m["inference"]["mean_s"] is not None
                else inference(m, "mean_s", first=True)
            ),
        ),
        row("inference_max_s", "Inference per study, max", lambda m: inference(m, "max_s")),
        row(
            "voxels_per_s",
            "Inference voxels/s",
            lambda m: (
                count(round(m["inference"]["voxels_per_s"]))
                if m["inference"]["voxels_per_s"]
                else "not known"
            ),
        ),
        row("whole_head_s", "Inference per whole head (estimate)", lambda m: inference(m, "whole_head_s")),
        row("peak_memory", "Peak memory", lambda m: m["peak_memory"] or "not recorded"),
    ]


@login_required
def evaluation_compare(request):
    _admin(request)
    error, result, status = "", None, 200
    a_id, b_id = request.GET.get("a", ""), request.GET.get("b", "")
    problem = comparison.compare_id_problem("a", a_id) or comparison.compare_id_problem("b", b_id)
    if not a_id.strip() and not b_id.strip():
        pass  # the page itself: pick two evaluations
    elif problem:
        error, status = problem[0].upper() + problem[1:] + ".", 400
    else:
        a = Evaluation.objects.filter(pk=int(a_id)).select_related("model_version").first()
        b = Evaluation.objects.filter(pk=int(b_id)).select_related("model_version").first()
        if a is None or b is None:
            error, status = f"Evaluation {a_id if a is None else b_id} does not exist.", 404
        else:
            try:
                result = comparison.compare(a, b)
            except services.EvaluationInputError as exc:
                error, status = str(exc), 400
    notes = {}
    if result:
        labels = services.METRIC_LABELS
        for row in result["rows"]:
            row["cells"] = [
                (labels[m], row[m]["text"]) for m in ("sensitivity", "ppv", "dice", "accuracy", "specificity")
            ]
        result["model_rows"] = _model_rows(result["models"])
        result["ci_label"] = Evaluation.CI(result["ci_method"]).label
        notes = {
            "peak_memory": comparison.PEAK_MEMORY_NOTE,
            "whole_head": next(
                (
                    m["inference"]["whole_head_note"]
                    for m in result["models"].values()
                    if m["inference"]["whole_head_s"]
                ),
                "",
            ),
        }
        truth = result["truth"]
        for d in truth.get("datasets", []):
            d["cells"] = [(m["key"], m["label"], d["paired"][m["key"]]["text"]) for m in truth["metrics"]]
            d["mean_rows"] = [
                (
                    side,
                    [
                        (m["key"], (d["means"][side][m["key"]] or {}).get("text", "n/a"))
                        for m in truth["metrics"]
                    ],
                )
                for side in ("a", "b")
            ]
    evaluations = Evaluation.objects.exclude(summary={}).select_related("model_version", "task_run")[:200]
    return render(
        request,
        "evaluation/compare.html",
        {
            "error": error,
            "result": result,
            "notes": notes,
            "done": [e for e in evaluations if e.is_done],
            "a_id": a_id,
            "b_id": b_id,
        },
        status=status,
    )


urlpatterns = [
    path("evaluations/", evaluation_list, name="evaluation-list"),
    path("evaluations/compare/", evaluation_compare, name="evaluation-compare"),
    path("evaluations/<int:pk>/", evaluation_report, name="evaluation-report"),
]
