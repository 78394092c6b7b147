"""Reader-study exports for admins: every answer as CSV (readable, unblinded columns) and a self-contained HTML
summary of the results (frequencies, paired tests, agreement, reader progress)."""

import io

from django.template.loader import render_to_string
from django.utils import timezone

from dla_web import csv_export

from .models import METHOD_LABELS, Answer, ReaderStudy
from .services import compute_results

CSV_COLUMNS = [
    "reader_study",
    "reader",
    "queue_position",
    "case_id",
    "study",
    "image",
    "method",
    "question_key",
    "question",
    "question_type",
    "value",
    "answered_at",
    "case_submitted",
    "submitted_at",
    "case_time_s",
]


def readable_value(value) -> str:
    if value is None:
        return ""
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value)


def answers_csv(rs: ReaderStudy) -> str:
    """Every answer, one row per question and image; free text is formula-safe (``dla_web.csv_export``: a comment
    "=HYPERLINK(...)" is written as "'=HYPERLINK(...)")."""
    out = io.StringIO()
    writer = csv_export.writer(out)
    writer.writerow(CSV_COLUMNS)
    answers = (
        Answer.objects.filter(assignment__reader__reader_study=rs)
        .select_related("assignment__reader__user", "assignment__case__study", "question")
        .order_by(
            "assignment__reader__user__username",
            "assignment__position",
            "question__order",
            "question_id",
            "image",
        )
    )
    for a in answers:
        asg = a.assignment
        method = asg.method_of(a.image)
        writer.writerow(
            [
                rs.title,
                asg.reader.user.username,
                asg.position,
                asg.case_id,
                asg.case.study.pseudonym,
                a.image,
                METHOD_LABELS[method],
                a.question.key,
                a.question.text,
                a.question.type,
                readable_value(a.value),
                a.updated_at.isoformat(),
                "yes" if asg.submitted_at else "no",
                asg.submitted_at.isoformat() if asg.submitted_at else "",
                f"{asg.time_spent_s:.1f}",
            ]
        )
    return out.getvalue()


def summary_html(rs: ReaderStudy) -> str:
    results = compute_results(rs)
    return render_to_string(
        "reader_study/report.html",
        {"rs": rs, "results": results, "generated_at": timezone.now()},
    )
