"""API of evaluations (admins only: evaluation numbers reveal how methods compare, and readers must stay blind).

``POST /api/evaluations/`` checks the inputs synchronously (a 400 lists the studies lacking predictions or
approved labels, grid mismatches, empty ROIs) and queues the ``evaluate`` task; list/detail/delete; per-study
results; downloads (per-study CSV, summary CSV, JSON, HTML and PDF reports, generated synchronously from the
stored results); ``GET /api/evaluations/compare/?a=<id>&b=<id>`` paired differences of two evaluations.
"""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from dla_web.audit import record
from dla_web.models import TaskRun
from dla_web.params import id_param
from dla_web.roles import IsAdmin

from . import comparison, reports, services, tasks
from .models import Evaluation
from .serializers import (
    EvaluationDetailSerializer,
    EvaluationRequestSerializer,
    EvaluationSerializer,
    StudyResultSerializer,
)


def _refuse(exc: Exception):
    return ValidationError({"detail": str(exc)})


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("model_version", int, description="only evaluations of this model version")
        ]
    )
)
class EvaluationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Evaluations of model versions on cohorts. Filter: ``model_version=<id>``."""

    queryset = Evaluation.objects.select_related("model_version", "task_run", "created_by")
    permission_classes = [IsAdmin]

    def get_serializer_class(self):
        if self.action == "create":
            return EvaluationRequestSerializer
        if self.action == "retrieve":
            return EvaluationDetailSerializer
        if self.action == "results":
            return StudyResultSerializer
        return EvaluationSerializer

    def get_queryset(self):
        qs = super().get_queryset()
        model_version_id = id_param(self.request, "model_version")
        if model_version_id is not None:
            qs = qs.filter(model_version_id=model_version_id)
        return qs

    @extend_schema(request=EvaluationRequestSerializer, responses={202: EvaluationSerializer})
    def create(self, request):
        """Check the cohorts and queue an evaluation run (202 with the evaluation and its task run)."""
        req = EvaluationRequestSerializer(data=request.data)
        req.is_valid(raise_exception=True)
        try:
            evaluation = tasks.start_evaluation(user=request.user, **req.validated_data)
        except services.EvaluationInputError as exc:
            raise _refuse(exc)
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)

    def destroy(self, request, *args, **kwargs):
        """Delete an evaluation and its results (not while it runs)."""
        evaluation = self.get_object()
        if evaluation.task_run and evaluation.task_run.state in (TaskRun.State.QUEUED, TaskRun.State.RUNNING):
            raise ValidationError({"detail": "the evaluation is still running; cancel its task run first"})
        evaluation.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        """Per-study results (paginated)."""
        evaluation = self.get_object()
        qs = evaluation.results.order_by("cohort", "pseudonym")
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(StudyResultSerializer(page, many=True).data)

    def _finished(self) -> Evaluation:
        evaluation = self.get_object()
        if not evaluation.is_done:
            raise ValidationError(
                {"detail": f"evaluation #{evaluation.pk} has no results yet (state {evaluation.state})"}
            )
        return evaluation

    def _download(self, body, content_type: str, filename: str, inline: bool = False) -> HttpResponse:
        record("export.evaluation", request=self.request, obj=self.get_object(), detail={"file": filename})
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{filename}"'
        return response

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path="studies-csv")
    def studies_csv(self, request, pk=None):
        """Per-study CSV: 2x2 table, metrics in percent, vessel volume, residual bone of DSA and DLA."""
        ev = self._finished()
        return self._download(
            reports.studies_csv(ev), "text/csv; charset=utf-8", f"evaluation-{ev.pk}-studies.csv"
        )

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path="summary-csv")
    def summary_csv(self, request, pk=None):
        """Table 1 (mean, 95% CI, SD, the page's text, the paper's numbers) and artifact rates, as CSV."""
        ev = self._finished()
        return self._download(
            reports.summary_csv(ev), "text/csv; charset=utf-8", f"evaluation-{ev.pk}-summary.csv"
        )

    @extend_schema(responses={(200, "application/json"): OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"], url_path="export-json")
    def export_json(self, request, pk=None):
        """Everything as one JSON file: parameters, model, summary, per-study rows, missing studies."""
        ev = self._finished()
        return self._download(reports.export_json(ev), "application/json", f"evaluation-{ev.pk}.json")

    @extend_schema(responses={(200, "text/html"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path="report-html")
    def report_html(self, request, pk=None):
        """Standalone HTML report (no scripts; figures as SVG). ``?inline=1`` shows it instead of downloading."""
        ev = self._finished()
        inline = request.query_params.get("inline") in ("1", "true")
        return self._download(
            reports.report_html(ev), "text/html; charset=utf-8", f"evaluation-{ev.pk}.html", inline
        )

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path="report-pdf")
    def report_pdf(self, request, pk=None):
        """PDF report (A4 landscape): Table 1 next to the paper's, artifacts, figures, per-study table, model."""
        ev = self._finished()
        return self._download(reports.report_pdf(ev), "application/pdf", f"evaluation-{ev.pk}.pdf")

    @extend_schema(
        parameters=[
            OpenApiParameter("a", int, required=True, description="evaluation id (minuend)"),
            OpenApiParameter("b", int, required=True, description="evaluation id (subtrahend)"),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=False, methods=["get"])
    def compare(self, request):
        """Paired per-patient differences a - b (percentage points, mean and 95% CI) on the shared studies: ``rows``
        (Table 1 metrics), ``truth`` (the 3D-DLA against the phantom truth: paired rows, cohort means, Dice by
        vessel radius, residual bone cases, a Dice verdict; ``available`` false with a note without truth maps)
        and ``models`` (architecture, parameters, training and inference time per study, peak memory)."""
        ids = []
        for key in ("a", "b"):
            value = request.query_params.get(key, "")
            problem = comparison.compare_id_problem(key, value)
            if problem:
                raise ValidationError({"detail": problem})
            ev = self.get_queryset().filter(pk=int(value)).first()
            if ev is None:
                raise ValidationError({"detail": f"evaluation {value} does not exist"})
            ids.append(ev)
        try:
            return Response(comparison.compare(*ids))
        except services.EvaluationInputError as exc:
            raise _refuse(exc)
