"""API views of the model registry, training runs and inference (thin: rules in serializers and services).

Who may do what: admins train, upload, activate, rename and download weights; annotators (and admins) see the
registry and run inference on studies; readers see nothing here (their workspace must not hint at methods).
"""

from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from annotations import volume_store
from dla_web.audit import record
from dla_web.params import id_param
from dla_web.roles import IsAdmin, IsAnnotator
from dla_web.serializers import TaskRunSerializer

from . import services, tasks
from .models import ModelVersion, TrainingRun
from .serializers import (
    InferenceRequestSerializer,
    ModelVersionDetailSerializer,
    ModelVersionSerializer,
    TrainingRunListSerializer,
    TrainingRunSerializer,
    TrainRequestSerializer,
    WeightsUploadSerializer,
)


class ModelVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """Registered models (annotators and admins may list them). Renaming, activation, weights download and
    upload are for admins. Filter: ``active=1``."""

    queryset = ModelVersion.objects.select_related("created_by")
    permission_classes = [IsAnnotator]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_permissions(self):
        if self.action in ("list", "retrieve"):
            return super().get_permissions()
        return [IsAdmin()]

    def get_serializer_class(self):
        if self.action == "retrieve":
            return ModelVersionDetailSerializer
        if self.action == "upload":
            return WeightsUploadSerializer
        return ModelVersionSerializer

    def get_queryset(self):
        versions = super().get_queryset()
        if self.request.query_params.get("active") in ("1", "true"):
            versions = versions.filter(is_active=True)
        return versions

    @extend_schema(request=None, responses=ModelVersionSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        """Make this model the active one (used by default for inference); the previous one is deactivated."""
        version = self.get_object().activate()
        record("model.activate", request=request, obj=version)
        return Response(ModelVersionSerializer(version).data)

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """Download the weights file (.pt; its sha256 is in the model's record)."""
        version = self.get_object()
        if not volume_store.verify_file(version.weights_file, version.sha256):
            return Response(
                {"detail": f"the weights of model {version.pk} are missing or damaged in the storage"},
                status=status.HTTP_409_CONFLICT,
            )
        response = FileResponse(
            open(volume_store.local_path(version.weights_file), "rb"),
            as_attachment=True,
            filename=f"dla-model-{version.pk}-{version.sha256[:12]}.pt",
            content_type="application/octet-stream",
        )
        response["X-Checksum-SHA256"] = version.sha256
        record("export.model_weights", request=request, obj=version)
        return response

    @extend_schema(
        request={"multipart/form-data": WeightsUploadSerializer}, responses={201: ModelVersionSerializer}
    )
    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def upload(self, request):
        """Import weights trained elsewhere. Files that are not DLANet weights, or (with ``preset``) weights of
        another architecture, are refused with a 400 and nothing is stored."""
        form = WeightsUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        version = services.register_uploaded_weights(
            data["file"],
            name=data["name"],
            notes=data["notes"],
            user=request.user,
            preset=data["preset"],
            activate=data["activate"],
        )
        version.refresh_from_db()
        record("model.upload", request=request, obj=version, detail={"sha256": version.sha256})
        return Response(ModelVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class TrainingRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Training runs (admins): list, live state with curves (poll ``GET /api/training-runs/{id}/``), and
    ``POST`` to start one (202; the cohorts are checked first, a bad cohort is a 400 naming the problem).
    Cancel through ``POST /api/task-runs/{id}/cancel/`` (the ids are the same)."""

    permission_classes = [IsAdmin]
    queryset = TrainingRun.objects.select_related("task_run", "task_run__created_by", "task_run__target_type")

    def get_serializer_class(self):
        if self.action == "list":
            return TrainingRunListSerializer
        if self.action == "create":
            return TrainRequestSerializer
        return TrainingRunSerializer

    @extend_schema(request=TrainRequestSerializer, responses={202: TrainingRunSerializer})
    def create(self, request):
        form = TrainRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        plan = services.training_plan(data["train_cohort"], data["validation_cohort"])
        run, record = tasks.start_training(
            user=request.user, params=form.task_params(request.user), plan=plan
        )
        return Response(TrainingRunSerializer(record).data, status=status.HTTP_202_ACCEPTED)


class InferenceViewSet(viewsets.GenericViewSet):
    """Start inference (annotators and admins): a model (default: the active one) on a study, a list of
    studies or a cohort, as one run that loops over the studies with progress."""

    permission_classes = [IsAnnotator]
    serializer_class = InferenceRequestSerializer

    @extend_schema(request=InferenceRequestSerializer, responses={202: TaskRunSerializer})
    def create(self, request):
        form = InferenceRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        version = services.resolve_model(data["model_version"].pk if data.get("model_version") else None)
        study_ids = [data["study"].pk] if data.get("study") else [s.pk for s in data.get("studies") or []]
        studies = services.inference_studies(study_ids=study_ids or None, cohort=data.get("cohort"))
        services.load_model(version)  # refuse damaged / incompatible weights now, not in the worker
        run = tasks.start_inference(
            user=request.user,
            version=version,
            studies=studies,
            candidate_min_hu=data["candidate_min_hu"],
            prior_strength=data["prior_strength"],
            bone_prior_strength=data["bone_prior_strength"],
            mirror=data["mirror"],
        )
        return Response(TaskRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class LabelPriorityViewSet(viewsets.GenericViewSet):
    """Which study to label next (annotators and admins): the studies without approved labels ranked by the
    model's vessel uncertainty (``?model_version=<id>``, default the active model)."""

    permission_classes = [IsAnnotator]
    pagination_class = None

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "model_version",
                int,
                description="model version id (default: the active model)",
                required=False,
            )
        ],
        responses={200: dict},
    )
    def list(self, request):
        try:
            data = services.label_priorities(id_param(request, "model_version"))
        except services.InferenceInputError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(data)
