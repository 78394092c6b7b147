"""API views for drafts (edit ops, undo/redo, commit, rebase) and label versions (history, diff, revert,
review, training samples). Thin: the rules live in ``annotations.labels``."""

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from django.conf import settings
from django.http import FileResponse, HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from dla.labeling.samples import save_samples_npz, training_samples
from dla_web.api import Conflict
from dla_web.audit import record
from dla_web.params import id_param
from dla_web.roles import IsAdmin, IsAnnotator
from dla_web.serializers import TaskRunSerializer

from . import export, labels
from .models import Draft, LabelVersion, Study
from .serializers import (
    CommitSerializer,
    DraftRevisionSerializer,
    DraftSerializer,
    EditOpSerializer,
    LabelVersionSerializer,
    RevertSerializer,
    ReviewSerializer,
)
from .tasks import apply_recipe, enqueue_label_cine


def conflict_response(exc: labels.LabelConflict) -> Conflict:
    head = exc.head
    return Conflict(
        str(exc),
        extra={
            "head": LabelVersionSerializer(head).data if head else None,
            "draft": DraftSerializer(exc.draft).data,
            "actions": {"rebase": f"/api/drafts/{exc.draft.pk}/rebase/"},
        },
    )


def moved_response(exc: labels.DraftMoved) -> Conflict:
    return Conflict(str(exc), extra={"draft": DraftSerializer(exc.draft).data})


def _expected_revision(request) -> int | None:
    body = DraftRevisionSerializer(data=request.data if isinstance(request.data, dict) else {})
    body.is_valid(raise_exception=True)
    return body.validated_data.get("revision")


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter("study", int, description="only this study's")])
)
class DraftViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Label drafts: one per study and user. POST ``{"study": id}`` opens (or returns) yours; edit it with
    ``ops``, ``undo``, ``redo``; ``commit`` turns it into the next label version. Only the owner may change a
    draft; colleagues may look at it."""

    serializer_class = DraftSerializer
    permission_classes = [IsAnnotator]

    def get_queryset(self):
        drafts = Draft.objects.select_related("user", "base_version", "study").order_by("-updated_at", "-id")
        study_id = id_param(self.request, "study")
        if study_id is not None:
            drafts = drafts.filter(study_id=study_id)
        if self.request.query_params.get("mine", "1") in ("1", "true") and self.action == "list":
            drafts = drafts.filter(user=self.request.user)
        return drafts

    def owned(self) -> Draft:
        draft = self.get_object()
        if draft.user_id != self.request.user.pk:
            raise PermissionDenied(
                f"this draft belongs to {draft.user.username}; only its owner can change or commit it"
            )
        return draft

    def create(self, request, *args, **kwargs):
        study_id = request.data.get("study") if isinstance(request.data, dict) else None
        study = Study.objects.filter(pk=study_id).first() if str(study_id or "").isdigit() else None
        if study is None:
            return Response(
                {"detail": f"study: no study with id {study_id!r}"}, status=status.HTTP_400_BAD_REQUEST
            )
        draft = labels.get_or_create_draft(study, request.user)
        return Response(DraftSerializer(draft).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=EditOpSerializer, responses={200: dict, 202: TaskRunSerializer, 409: dict})
    @action(detail=True, methods=["post"])
    def ops(self, request, pk=None):
        """Apply one edit op. The whole-volume ``recipe`` op runs as a task (202 with its task run). With
        ``revision`` (the draft revision the edit was made on), a draft that moved on since is a 409."""
        draft = self.owned()
        body = EditOpSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        op = body.validated_data["op"]
        expected = body.validated_data.get("revision")
        if op.get("op") == "recipe":
            try:
                labels.check_revision(draft, expected)
            except labels.DraftMoved as exc:
                raise moved_response(exc)
            op = labels.checked_op(draft, op)  # bad parameters are a 400 now, not a failed task later
            run = apply_recipe.enqueue(
                user=request.user,
                target=draft,
                params={"draft_id": draft.pk, "op": op},
                message="recipe queued",
            )
            return Response(TaskRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)
        try:
            draft, result = labels.apply_draft_op(draft.pk, op, expected_revision=expected)
        except labels.DraftMoved as exc:
            raise moved_response(exc)
        return Response({"result": result.to_dict(), "draft": DraftSerializer(draft).data})

    @extend_schema(request=DraftRevisionSerializer, responses={200: DraftSerializer, 409: dict})
    @action(detail=True, methods=["post"])
    def undo(self, request, pk=None):
        """Undo the last edit (optional ``revision``: 409 if the draft moved on since, e.g. in another tab)."""
        draft = self.owned()
        try:
            return Response(
                DraftSerializer(labels.undo(draft.pk, expected_revision=_expected_revision(request))).data
            )
        except labels.DraftMoved as exc:
            raise moved_response(exc)

    @extend_schema(request=DraftRevisionSerializer, responses={200: DraftSerializer, 409: dict})
    @action(detail=True, methods=["post"])
    def redo(self, request, pk=None):
        """Redo the last undone edit (optional ``revision`` as for undo)."""
        draft = self.owned()
        try:
            return Response(
                DraftSerializer(labels.redo(draft.pk, expected_revision=_expected_revision(request))).data
            )
        except labels.DraftMoved as exc:
            raise moved_response(exc)

    @extend_schema(request=None, responses=DraftSerializer)
    @action(detail=True, methods=["post"])
    def discard(self, request, pk=None):
        """Drop all edits and start again from the head version."""
        return Response(DraftSerializer(labels.discard(self.owned().pk)).data)

    @extend_schema(request=None, responses=DraftSerializer)
    @action(detail=True, methods=["post"])
    def rebase(self, request, pk=None):
        """Replay your edits on the current head version (after a 409 on commit)."""
        return Response(DraftSerializer(labels.rebase(self.owned().pk)).data)

    @extend_schema(request=CommitSerializer, responses={201: LabelVersionSerializer, 409: dict})
    @action(detail=True, methods=["post"])
    def commit(self, request, pk=None):
        """Commit the draft as the study's next label version; 409 if someone committed first."""
        draft = self.owned()
        body = CommitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            version = labels.commit(draft.pk, request.user, body.validated_data["message"])
        except labels.LabelConflict as exc:
            raise conflict_response(exc)
        record("labels.commit", request=request, obj=version.study, detail={"version": version.number})
        enqueue_label_cine(version, user=request.user)
        return Response(LabelVersionSerializer(version).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter("study", int, description="only this study's")])
)
class LabelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """Immutable label versions with their history (filter ``study``), diff, revert, review and samples."""

    serializer_class = LabelVersionSerializer
    permission_classes = [IsAnnotator]

    def get_queryset(self):
        versions = LabelVersion.objects.select_related("author", "reviewed_by", "parent", "study")
        study_id = id_param(self.request, "study")
        if study_id is not None:
            versions = versions.filter(study_id=study_id)
        if self.request.query_params.get("review_status"):
            versions = versions.filter(review_status=self.request.query_params["review_status"])
        return versions

    @extend_schema(
        parameters=[OpenApiParameter("against", int, description="id of the version to compare with")],
        responses=dict,
    )
    @action(detail=True, methods=["get"])
    def diff(self, request, pk=None):
        """Per-class changes from ``against`` (default: the parent) to this version."""
        version = self.get_object()
        against_id = request.query_params.get("against")
        if against_id:
            other = LabelVersion.objects.filter(pk=against_id).first() if against_id.isdigit() else None
            if other is None:
                return Response({"detail": f"against: no label version {against_id!r}"}, status=400)
        else:
            other = version.parent
            if other is None:
                return Response(
                    {"detail": f"v{version.number} has no parent; pass ?against=<id>"}, status=400
                )
        return Response(labels.diff_versions(other, version))

    @extend_schema(request=RevertSerializer, responses={201: LabelVersionSerializer})
    @action(detail=True, methods=["post"])
    def revert(self, request, pk=None):
        """Create a new head version with this version's labels."""
        body = RevertSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = labels.revert(self.get_object(), request.user, body.validated_data["message"])
        record("labels.revert", request=request, obj=version.study, detail={"version": version.number})
        return Response(LabelVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=LabelVersionSerializer)
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        """Send this version to the admins for review."""
        return Response(LabelVersionSerializer(labels.submit_for_review(self.get_object())).data)

    @extend_schema(request=ReviewSerializer, responses=LabelVersionSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsAdmin])
    def review(self, request, pk=None):
        """Approve or reject (with a comment) a version; only approved versions feed training."""
        body = ReviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = labels.review(
            self.get_object(), request.user, body.validated_data["status"], body.validated_data["comment"]
        )
        record(
            "labels.review",
            request=request,
            obj=version.study,
            detail={"version": version.number, "status": version.review_status},
        )
        return Response(LabelVersionSerializer(version).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("as", str, enum=["nifti", "seg"], description="download format (default seg)")
        ],
        responses={(200, "application/octet-stream"): bytes},
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """The label map as DICOM SEG (zip with the fill series it references) or NIfTI (uint8 class ids)."""
        version = self.get_object()
        fmt = request.query_params.get("as", "seg")
        if fmt not in ("nifti", "seg"):
            return Response({"detail": f"unknown format {fmt!r}; use seg or nifti"}, status=400)
        work = Path(tempfile.mkdtemp(prefix="export-", dir=settings.VAR_DIR))
        try:
            path = export.export_label_version(version, fmt, work)
            handle = open(path, "rb")  # the open handle keeps the bytes readable after the folder is removed
        finally:
            shutil.rmtree(work, ignore_errors=True)
        record(
            "export.labels",
            request=request,
            obj=version.study,
            detail={"version": version.number, "format": fmt},
        )
        return FileResponse(handle, as_attachment=True, filename=path.name)

    @extend_schema(
        parameters=[OpenApiParameter("seed", int)], responses={(200, "application/octet-stream"): bytes}
    )
    @action(detail=True, methods=["get"])
    def samples(self, request, pk=None):
        """Training samples as in the paper (all vessel voxels + as many bone and soft-tissue voxels), as .npz
        with an int32 array ``samples`` [n, 4] = (z, y, x, class)."""
        version = self.get_object()
        seed = request.query_params.get("seed", "0")
        if not seed.isdigit():
            return Response({"detail": f"seed must be a non-negative integer, got {seed!r}"}, status=400)
        coords = training_samples(labels.version_labels(version), seed=int(seed))
        record("export.samples", request=request, obj=version.study, detail={"version": version.number})
        buffer = io.BytesIO()
        save_samples_npz(
            buffer, coords, {"study": version.study.pseudonym, "version": version.number, "seed": int(seed)}
        )
        response = HttpResponse(buffer.getvalue(), content_type="application/octet-stream")
        response["Content-Disposition"] = (
            f'attachment; filename="samples_{version.study_id}_v{version.number}.npz"'
        )
        response["X-Sample-Count"] = str(int(np.asarray(coords).shape[0]))
        return response
