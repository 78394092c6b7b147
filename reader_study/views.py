"""API views of reader studies.

Admins (``/api/reader-studies/``): design (cases, readers, questions), open/close, results, CSV and HTML reports.
Readers (``/api/reading-studies/`` and ``/api/reading/{token}/``): their own queue, the blinded case, answers,
submit, and image frames. A reader's querysets only ever contain their own assignments, so another reader's
token is a 404; the image response carries no metadata (fixed-size PNG, no ETag, no file name). Only users
whose one role is Reader may read (``IsBlindedReader``): an annotator or admin could match the frames to the
unblinded MIP endpoints.

Every design change through this API is in the audit log with before and after (``reader_study.*`` actions);
the Django admin records its own (``reader_study/admin.py``). The randomization seed is never written there.
"""

from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from dla_web.api import Conflict
from dla_web.audit import record
from dla_web.roles import READER, IsAdmin, IsReader

from . import reports, services
from .design import check_question_change, question_snapshot, study_snapshot
from .models import Assignment, Question, ReaderStudy
from .serializers import (
    IdListSerializer,
    QuestionSerializer,
    ReaderStudyDetailSerializer,
    ReaderStudySerializer,
    ReadingCaseSerializer,
    SaveAnswersSerializer,
    reading_case,
    reading_study_summary,
)


class IsBlindedReader(IsReader):
    """Readers whose only role is Reader: anyone who may also open the studies' volumes (annotators, admins)
    could match the blinded frames to unblinded ones, so their reading is refused with the reason."""

    def has_permission(self, request, view):
        if not super().has_permission(request, view):
            return False
        refusal = services.reading_refusal(request.user)
        if refusal:
            self.message = refusal
            return False
        return True


def audit_design(request, rs, action: str, before, after, **detail) -> None:
    record(
        f"reader_study.{action}", request=request, obj=rs, detail={"before": before, "after": after, **detail}
    )


class ReaderStudyViewSet(viewsets.ModelViewSet):
    """Reader-study design and results (admins only)."""

    permission_classes = [IsAdmin]
    queryset = ReaderStudy.objects.all()

    def get_serializer_class(self):
        if self.action == "retrieve":
            return ReaderStudyDetailSerializer
        if self.action in ("questions", "question_detail"):
            return QuestionSerializer
        if self.action in ("cases", "readers"):
            return IdListSerializer
        return ReaderStudySerializer

    def perform_create(self, serializer):
        with_defaults = serializer.validated_data.pop("with_default_questions", True)
        rs = serializer.save(created_by=self.request.user)
        if with_defaults:
            services.add_default_questions(rs)
        after = study_snapshot(rs)
        after["questions"] = [question_snapshot(q) for q in rs.questions.all()]
        audit_design(self.request, rs, "create", None, after)

    def perform_update(self, serializer):
        serializer.validated_data.pop("with_default_questions", None)
        before = study_snapshot(serializer.instance)
        rs = serializer.save()
        audit_design(self.request, rs, "change", before, study_snapshot(rs))

    def perform_destroy(self, instance):
        services.require_draft(instance, "a reader study can be deleted")
        before = study_snapshot(instance)
        record(
            "reader_study.delete",
            request=self.request,
            obj=instance,
            detail={"before": before, "after": None},
        )
        instance.delete()

    @extend_schema(request=IdListSerializer, responses=ReaderStudyDetailSerializer)
    @action(detail=True, methods=["get", "post"])
    def cases(self, request, pk=None):
        """GET: the cases; POST {"ids": [study ids]}: add cases (each study needs a DSA and a DLA volume)."""
        rs = self.get_object()
        if request.method == "POST":
            before = study_snapshot(rs)
            services.add_cases(rs, _ids(request.data))
            audit_design(request, rs, "cases.add", before["cases"], study_snapshot(rs)["cases"])
            return Response(ReaderStudyDetailSerializer(rs).data, status=status.HTTP_201_CREATED)
        return Response(ReaderStudyDetailSerializer(rs).data["cases"])

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"cases/(?P<case_id>\d+)")
    def remove_case(self, request, pk=None, case_id=None):
        rs = self.get_object()
        before = study_snapshot(rs)
        services.remove_case(rs, int(case_id))
        audit_design(
            request, rs, "cases.remove", before["cases"], study_snapshot(rs)["cases"], case=int(case_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=IdListSerializer, responses=ReaderStudyDetailSerializer)
    @action(detail=True, methods=["get", "post"])
    def readers(self, request, pk=None):
        """GET: readers with progress; POST {"ids": [user ids]}: add readers (users whose only role is Reader:
        anyone who can also open the studies elsewhere is refused with a 400)."""
        rs = self.get_object()
        if request.method == "POST":
            before = study_snapshot(rs)
            services.add_readers(rs, _ids(request.data))
            audit_design(request, rs, "readers.add", before["readers"], study_snapshot(rs)["readers"])
            return Response(ReaderStudyDetailSerializer(rs).data, status=status.HTTP_201_CREATED)
        return Response(ReaderStudyDetailSerializer(rs).data["readers"])

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"readers/(?P<reader_id>\d+)")
    def remove_reader(self, request, pk=None, reader_id=None):
        rs = self.get_object()
        before = study_snapshot(rs)
        services.remove_reader(rs, int(reader_id))
        audit_design(
            request,
            rs,
            "readers.remove",
            before["readers"],
            study_snapshot(rs)["readers"],
            reader=int(reader_id),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=QuestionSerializer, responses=QuestionSerializer(many=True))
    @action(detail=True, methods=["get", "post"])
    def questions(self, request, pk=None):
        rs = self.get_object()
        if request.method == "POST":
            services.require_draft(rs, "questions can be added")
            serializer = QuestionSerializer(data=request.data, context={"reader_study": rs})
            serializer.is_valid(raise_exception=True)
            if rs.questions.filter(key=serializer.validated_data["key"]).exists():
                raise services.ReaderStudyError(
                    f"key: a question with key {serializer.validated_data['key']!r} exists"
                )
            question = serializer.save(reader_study=rs)
            audit_design(request, rs, "question.add", None, question_snapshot(question))
            return Response(QuestionSerializer(question).data, status=status.HTTP_201_CREATED)
        return Response(QuestionSerializer(rs.questions.all(), many=True).data)

    @extend_schema(request=QuestionSerializer, responses=QuestionSerializer)
    @action(
        detail=True, methods=["get", "put", "patch", "delete"], url_path=r"questions/(?P<question_id>\d+)"
    )
    def question_detail(self, request, pk=None, question_id=None):
        """Edit or delete a question; only while the study is a draft (else 409)."""
        rs = self.get_object()
        question = get_object_or_404(Question, reader_study=rs, pk=question_id)
        if request.method == "GET":
            return Response(QuestionSerializer(question).data)
        services.check_question_editable(question)
        before = question_snapshot(question)
        if request.method == "DELETE":
            check_question_change(rs, old_key=question.key, new=None)  # no condition may point at it
            question.delete()
            audit_design(request, rs, "question.delete", before, None)
            return Response(status=status.HTTP_204_NO_CONTENT)
        serializer = QuestionSerializer(question, data=request.data, partial=request.method == "PATCH")
        serializer.is_valid(raise_exception=True)
        key = serializer.validated_data.get("key")
        if key and rs.questions.filter(key=key).exclude(pk=question.pk).exists():
            raise services.ReaderStudyError(f"key: a question with key {key!r} exists")
        question = serializer.save()
        audit_design(request, rs, "question.change", before, question_snapshot(question))
        return Response(serializer.data)

    @extend_schema(request=None, responses=QuestionSerializer(many=True))
    @action(detail=True, methods=["post"], url_path="default-questions")
    def default_questions(self, request, pk=None):
        """Add the paper's default questions that are not there yet."""
        rs = self.get_object()
        made = services.add_default_questions(rs)
        if made:
            audit_design(request, rs, "question.add", None, [question_snapshot(q) for q in made])
        return Response(QuestionSerializer(rs.questions.all(), many=True).data)

    @extend_schema(request=None, responses={200: ReaderStudySerializer, 202: ReaderStudySerializer})
    @action(detail=True, methods=["post"])
    def open(self, request, pk=None):
        """Open for reading. The design freezes at once; readers see the study when every frame of every case
        is rendered: 200 "open" when they already are, else 202 "opening" with ``cine_task_run``, the task that
        renders them and then opens the study (the first opening creates every reader's randomized queue;
        reopening a closed study keeps them)."""
        rs = services.begin_open(self.get_object())
        if rs.status == ReaderStudy.Status.OPENING and services.frames_ready(rs):
            rs = services.finish_open(rs)
        if rs.status == ReaderStudy.Status.OPEN:
            record("reader_study.open", request=request, obj=rs)
            return Response(ReaderStudySerializer(rs).data)
        from .tasks import render_reader_study_cines

        run = render_reader_study_cines.enqueue(
            user=request.user, target=rs, params={"reader_study_id": rs.pk}, message="rendering the frames"
        )
        record("reader_study.opening", request=request, obj=rs, detail={"task_run": run.pk})
        data = ReaderStudySerializer(rs).data
        data["cine_task_run"] = run.pk
        return Response(data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=ReaderStudySerializer)
    @action(detail=True, methods=["post"])
    def close(self, request, pk=None):
        """Close (open -> closed); closing a study that is still opening cancels the opening."""
        rs = services.close_study(self.get_object())
        record("reader_study.close", request=request, obj=rs, detail={"status": rs.status})
        return Response(ReaderStudySerializer(rs).data)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        """Frequencies, paired tests, agreement, per-reader progress and reading times."""
        return Response(services.compute_results(self.get_object()))

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path="answers-csv")
    def answers_csv(self, request, pk=None):
        """Every answer (readable columns, unblinded) as CSV."""
        rs = self.get_object()
        record("export.reader_answers", request=request, obj=rs)
        response = HttpResponse(reports.answers_csv(rs), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="reader-study-{rs.pk}-answers.csv"'
        return response

    @extend_schema(responses={(200, "text/html"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"])
    def report(self, request, pk=None):
        """A self-contained HTML summary of the results."""
        rs = self.get_object()
        response = HttpResponse(reports.summary_html(rs), content_type="text/html; charset=utf-8")
        if request.query_params.get("download"):
            response["Content-Disposition"] = f'attachment; filename="reader-study-{rs.pk}-report.html"'
        return response

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="eligible-studies")
    def eligible_studies(self, request):
        """Studies that have both a DSA (subtracted) and a DLA volume."""
        rows = services.eligible_studies().order_by("pseudonym").values("id", "pseudonym", "cohort")
        return Response(list(rows))

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="eligible-readers")
    def eligible_readers(self, request):
        """Active users whose only role is Reader (anyone else is refused as a reader)."""
        users = get_user_model().objects.filter(is_active=True, groups__name=READER).order_by("username")
        return Response(
            [
                {"id": u.pk, "username": u.username, "name": u.get_full_name()}
                for u in users.distinct()
                if services.reader_refusal(u) is None
            ]
        )


def _ids(data):
    ids = data.get("ids") if hasattr(data, "get") else None
    if not isinstance(ids, list) or not ids:
        raise services.ReaderStudyError('ids: give a non-empty list of ids, e.g. {"ids": [1, 2]}')
    return ids


# ----------------------------------------------------------------------------------------------- reader


def _my_assignments(user):
    return Assignment.objects.filter(reader__user=user, reader__reader_study__status__in=["open", "closed"])


class ReadingStudyViewSet(viewsets.ReadOnlyModelViewSet):
    """A reader's own reader studies with progress and queue (opaque tokens)."""

    permission_classes = [IsBlindedReader]
    serializer_class = None
    pagination_class = None
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return (
            ReaderStudy.objects.filter(readers__user=self.request.user, status__in=["open", "closed"])
            .distinct()
            .order_by("-opened_at", "-id")
        )

    def _summary(self, rs):
        assignments = list(
            _my_assignments(self.request.user).filter(reader__reader_study=rs).order_by("position")
        )
        return reading_study_summary(rs, assignments)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def list(self, request):
        return Response([self._summary(rs) for rs in self.get_queryset()])

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def retrieve(self, request, pk=None):
        return Response(self._summary(get_object_or_404(self.get_queryset(), pk=pk)))


class ReadingViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One blinded case of the reader's queue, by opaque token: answers (autosave), submit, image frames."""

    permission_classes = [IsBlindedReader]
    lookup_field = "token"
    lookup_value_regex = r"[A-Za-z0-9_\-]+"
    serializer_class = ReadingCaseSerializer

    def get_queryset(self):
        return _my_assignments(self.request.user).select_related("reader__reader_study", "case")

    def _case(self, assignment):
        siblings = list(Assignment.objects.filter(reader=assignment.reader).order_by("position"))
        return reading_case(assignment, siblings)

    def retrieve(self, request, token=None):
        assignment = self.get_object()
        if assignment.opened_at is None and assignment.reader_study.status == ReaderStudy.Status.OPEN:
            from django.utils import timezone

            Assignment.objects.filter(pk=assignment.pk, opened_at=None).update(opened_at=timezone.now())
        return Response(self._case(assignment))

    @extend_schema(request=SaveAnswersSerializer, responses=ReadingCaseSerializer)
    @action(detail=True, methods=["put"])
    def answers(self, request, token=None):
        """Save (autosave) answers: {"answers": [{"question": id, "image": "A", "value": ...}], "elapsed_s": 3.2}."""
        assignment = self.get_object()
        body = request.data if isinstance(request.data, dict) else {}
        answers = body.get("answers", [])
        assignment = services.save_answers(assignment, request.user, answers, elapsed_s=body.get("elapsed_s"))
        record(
            "reader.answers",
            request=request,
            obj=assignment.reader_study,
            detail={"assignment": assignment.pk, "answers": len(answers) if isinstance(answers, list) else 0},
        )
        return Response(self._case(assignment))

    @extend_schema(request=SaveAnswersSerializer, responses=ReadingCaseSerializer)
    @action(detail=True, methods=["post"])
    def submit(self, request, token=None):
        """Final submit of this case (idempotent); answers are locked afterwards unless the study allows edits."""
        assignment = self.get_object()
        body = request.data if isinstance(request.data, dict) else {}
        assignment = services.submit(assignment, request.user, elapsed_s=body.get("elapsed_s"))
        record(
            "reader.submit",
            request=request,
            obj=assignment.reader_study,
            detail={"assignment": assignment.pk},
        )
        return Response(self._case(assignment))

    @extend_schema(request=SaveAnswersSerializer, responses=ReadingCaseSerializer)
    @action(detail=True, methods=["post"])
    def time(self, request, token=None):
        """Add reading time: {"elapsed_s": seconds since the last report} (capped per call)."""
        assignment = self.get_object()
        if assignment.reader_study.status != ReaderStudy.Status.OPEN:
            raise Conflict(
                f"the reader study is {assignment.reader_study.status}; reading time is not recorded"
            )
        body = request.data if isinstance(request.data, dict) else {}
        services.add_time(assignment, body.get("elapsed_s"))
        assignment.refresh_from_db()
        return Response(self._case(assignment))

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "angle", OpenApiTypes.FLOAT, description="degrees; snapped to the cine's frames"
            ),
            OpenApiParameter("window", OpenApiTypes.STR, description="window preset"),
        ],
        responses={(200, "image/png"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], url_path=r"image/(?P<image>[^/.]+)")
    def image(self, request, token=None, image=None):
        """One frame of image A or B: a fixed-size PNG without metadata."""
        assignment = self.get_object()
        png = services.blinded_frame_png(
            assignment, image, request.query_params.get("angle", 0), request.query_params.get("window")
        )
        response = HttpResponse(png, content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        return response
