"""Serializers: the admin's view of a reader study (design, cases with their studies and volumes) and the
reader's blinded view (``Reading*``: tokens, positions, questions and own answers; never a method, study,
volume, file or series name)."""

from rest_framework import serializers

from .design import QUESTION_FIELDS, check_question_change, check_show_if_shape
from .models import Case, Question, Reader, ReaderStudy
from .services import N_ANGLES, READER_WINDOWS, validate_question_spec

# ----------------------------------------------------------------------------------------------- admin


class QuestionSerializer(serializers.ModelSerializer):
    has_answers = serializers.BooleanField(read_only=True)

    class Meta:
        model = Question
        fields = ["id", *QUESTION_FIELDS, "has_answers"]

    def validate(self, attrs):
        merged = (
            {f: getattr(self.instance, f) for f in ("type", "choices", "scale_min", "scale_max")}
            if self.instance
            else {}
        )
        merged.update({k: v for k, v in attrs.items() if k in ("type", "choices", "scale_min", "scale_max")})
        validate_question_spec(merged)  # ReaderStudyError -> 400 with its message
        if "show_if" in attrs:
            attrs["show_if"] = check_show_if_shape(attrs["show_if"])  # DesignError -> 400
        rs = self.context.get("reader_study") or (self.instance.reader_study if self.instance else None)
        if rs is not None:  # the whole question set's conditions after this change
            defaults = {"key": None, "choices": [], "scale_min": None, "scale_max": None, "show_if": None}
            new = {
                f: attrs[f] if f in attrs else getattr(self.instance, f) if self.instance else defaults.get(f)
                for f in ("key", "type", "choices", "scale_min", "scale_max", "show_if")
            }
            check_question_change(rs, old_key=self.instance.key if self.instance else None, new=new)
        return attrs


class CaseSerializer(serializers.ModelSerializer):
    study_pseudonym = serializers.CharField(source="study.pseudonym", read_only=True)

    class Meta:
        model = Case
        fields = [
            "id",
            "study",
            "study_pseudonym",
            "dsa_volume",
            "dla_volume",
            "display_floor_hu",
            "added_at",
        ]
        read_only_fields = fields


class ReaderSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    submitted = serializers.SerializerMethodField()
    total = serializers.SerializerMethodField()

    class Meta:
        model = Reader
        fields = ["id", "user", "username", "submitted", "total", "added_at"]
        read_only_fields = fields

    def get_submitted(self, obj) -> int:
        return obj.assignments.exclude(submitted_at=None).count()

    def get_total(self, obj) -> int:
        return obj.assignments.count()


class ReaderStudySerializer(serializers.ModelSerializer):
    with_default_questions = serializers.BooleanField(
        write_only=True, required=False, default=True, help_text="add the paper's default questions on create"
    )
    seed = serializers.SerializerMethodField(
        help_text="the secret randomization seed, drawn by the server (secrets); null until the study is closed"
    )
    n_cases = serializers.SerializerMethodField()
    n_readers = serializers.SerializerMethodField()
    n_questions = serializers.SerializerMethodField()

    class Meta:
        model = ReaderStudy
        fields = [
            "id",
            "title",
            "instructions",
            "mode",
            "seed",
            "status",
            "allow_edits",
            "window_preset",
            "created_by",
            "created_at",
            "opened_at",
            "closed_at",
            "n_cases",
            "n_readers",
            "n_questions",
            "with_default_questions",
        ]
        read_only_fields = ["status", "created_by", "created_at", "opened_at", "closed_at"]

    def get_seed(self, obj) -> str | None:
        return obj.seed_if_closed()

    def get_n_cases(self, obj) -> int:
        return obj.cases.count()

    def get_n_readers(self, obj) -> int:
        return obj.readers.count()

    def get_n_questions(self, obj) -> int:
        return obj.questions.count()

    def validate_window_preset(self, value):
        if value not in READER_WINDOWS:
            raise serializers.ValidationError(f"use one of {', '.join(READER_WINDOWS)}")
        return value

    def validate(self, attrs):
        if isinstance(self.initial_data, dict) and "seed" in self.initial_data:
            raise serializers.ValidationError(
                {
                    "seed": "the randomization seed is drawn by the server (secrets) and shown after the study "
                    "closes; it cannot be set"
                }
            )
        inst = self.instance
        if inst is not None and inst.status != ReaderStudy.Status.DRAFT:
            for field in ReaderStudy.FROZEN_FIELDS:
                if field in attrs and attrs[field] != getattr(inst, field):
                    raise serializers.ValidationError(
                        {
                            field: f"cannot change {field}: the reader study is {inst.status} and its design is frozen"
                        }
                    )
        return attrs


class ReaderStudyDetailSerializer(ReaderStudySerializer):
    cases = CaseSerializer(many=True, read_only=True)
    readers = ReaderSerializer(many=True, read_only=True)
    questions = QuestionSerializer(many=True, read_only=True)

    class Meta(ReaderStudySerializer.Meta):
        fields = [*ReaderStudySerializer.Meta.fields, "cases", "readers", "questions"]


class IdListSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(), allow_empty=False)


# ----------------------------------------------------------------------------------------------- reader


class ReadingQuestionSerializer(serializers.ModelSerializer):
    """A question as a reader sees it: the admin's view without the bookkeeping."""

    class Meta:
        model = Question
        fields = [f for f in QuestionSerializer.Meta.fields if f != "has_answers"]
        read_only_fields = fields


def reading_queue_item(assignment) -> dict:
    return {
        "position": assignment.position,
        "token": assignment.token,
        "submitted": assignment.submitted_at is not None,
        "started": assignment.opened_at is not None,
    }


def reading_study_summary(rs, assignments: list) -> dict:
    """The reader's blinded view of one study: title, instructions, own progress and queue."""
    done = sum(1 for a in assignments if a.submitted_at)
    resume = next(
        (a.token for a in assignments if not a.submitted_at), assignments[0].token if assignments else None
    )
    return {
        "id": rs.pk,
        "title": rs.title,
        "instructions": rs.instructions,
        "status": rs.status,
        "submitted": done,
        "total": len(assignments),
        "progress": f"{done} of {len(assignments)}",
        "resume": resume,
        "queue": [reading_queue_item(a) for a in assignments],
    }


def reading_case(assignment, siblings: list) -> dict:
    """The reader's blinded view of one case (assignment). ``siblings``: the reader's queue in order."""
    rs = assignment.reader_study
    index = next(i for i, a in enumerate(siblings) if a.pk == assignment.pk)
    answers: dict = {}
    for ans in assignment.answers.all():
        answers.setdefault(str(ans.question_id), {})[ans.image] = ans.value
    done = sum(1 for a in siblings if a.submitted_at)
    return {
        "token": assignment.token,
        "position": assignment.position,
        "total": len(siblings),
        "progress": f"{assignment.position} of {len(siblings)}",
        "submitted_count": done,
        "previous": siblings[index - 1].token if index > 0 else None,
        "next": siblings[index + 1].token if index + 1 < len(siblings) else None,
        "study": {"id": rs.pk, "title": rs.title, "instructions": rs.instructions, "status": rs.status},
        "images": list(assignment.images()),
        "n_angles": N_ANGLES,
        "windows": list(READER_WINDOWS),
        "window": rs.window_preset,
        "questions": ReadingQuestionSerializer(rs.questions.order_by("order", "id"), many=True).data,
        "answers": answers,
        "submitted": assignment.submitted_at is not None,
        "submitted_at": assignment.submitted_at,
        "locked": (assignment.submitted_at is not None and not rs.allow_edits) or rs.status != "open",
        "allow_edits": rs.allow_edits,
        "time_spent_s": round(assignment.time_spent_s, 1),
    }


class AnswerItemSerializer(serializers.Serializer):
    question = serializers.IntegerField()
    image = serializers.CharField(required=False, default="A")
    value = serializers.JSONField(allow_null=True)


class SaveAnswersSerializer(serializers.Serializer):
    answers = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    elapsed_s = serializers.FloatField(required=False, allow_null=True, min_value=0)


class ReadingCaseSerializer(serializers.Serializer):
    """Documentation of the reader's case JSON (the view builds it with ``reading_case``)."""

    token = serializers.CharField()
    position = serializers.IntegerField()
    total = serializers.IntegerField()
    progress = serializers.CharField()
    previous = serializers.CharField(allow_null=True)
    next = serializers.CharField(allow_null=True)
    images = serializers.ListField(child=serializers.CharField())
    questions = ReadingQuestionSerializer(many=True)
    answers = serializers.DictField()
    submitted = serializers.BooleanField()
    locked = serializers.BooleanField()
    time_spent_s = serializers.FloatField()
