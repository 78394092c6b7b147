"""What of a reader study's design is audited, defined once for the API views and the Django admin: the study
and question fields, and their JSON snapshots (never the randomization seed)."""

from .models import Question, ReaderStudy

STUDY_FIELDS = ("title", "instructions", "mode", "allow_edits", "window_preset", "status")
QUESTION_FIELDS = (
    "order",
    "key",
    "text",
    "type",
    "choices",
    "scale_min",
    "scale_max",
    "scale_labels",
    "required",
)


def study_fields(rs: ReaderStudy) -> dict:
    return {f: getattr(rs, f) for f in STUDY_FIELDS}


def study_snapshot(rs: ReaderStudy) -> dict:
    """The design of a reader study for the audit log: its fields, cases and readers."""
    return {
        **study_fields(rs),
        "cases": sorted(rs.cases.values_list("study_id", flat=True)),
        "readers": sorted(rs.readers.values_list("user_id", flat=True)),
    }


def question_snapshot(question: Question) -> dict:
    return {"id": question.pk, **{f: getattr(question, f) for f in QUESTION_FIELDS}}
