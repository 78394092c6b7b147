# ruff: noqa: F811
"""Reader-study API: design by an admin, randomized queues, answers with history, submit, and every kind of bad
input (unknown question, out-of-scale value, another reader's case, closed study, case without DLA, duplicate
submit, frozen questions)."""

import pytest

from tests.integration.reader_support import SHAPE, add_dla, open_reader_study, reader_cases  # noqa: F401

pytestmark = pytest.mark.django_db


def q_by_key(case_json):
    return {q["key"]: q for q in case_json["questions"]}


def full_answers(case_json, *, bone=(True, False)):
    """Answers to every required question for every image of a case."""
    qs = q_by_key(case_json)
    out = []
    for image, b in zip(case_json["images"], bone, strict=False):
        out += [
            {"question": qs["residual_bone"]["id"], "image": image, "value": b},
            {"question": qs["artifact_severity"]["id"], "image": image, "value": 2 if b else 0},
            {"question": qs["small_vessel_conspicuity"]["id"], "image": image, "value": 4},
            {"question": qs["diagnostic_confidence"]["id"], "image": image, "value": 3},
        ]
    return out


def test_admin_designs_and_opens_a_study(client_for, reader_cases, users, make_user):
    admin = client_for("admin")
    studies = reader_cases(3)
    r = admin.post(
        "/api/reader-studies/", {"title": "Bone", "instructions": "Score both.", "seed": 3}, format="json"
    )
    assert r.status_code == 201, r.json()
    rs_id = r.json()["id"]
    assert r.json()["n_questions"] == 6  # the paper's default questions

    eligible = admin.get("/api/reader-studies/eligible-studies/").json()
    assert {s["id"] for s in eligible} >= {s.pk for s in studies}

    r = admin.post(f"/api/reader-studies/{rs_id}/cases/", {"ids": [s.pk for s in studies]}, format="json")
    assert r.status_code == 201, r.json()
    assert len(r.json()["cases"]) == 3
    second = make_user("reader2", "Reader")
    r = admin.post(
        f"/api/reader-studies/{rs_id}/readers/", {"ids": [users["reader"].pk, second.pk]}, format="json"
    )
    assert r.status_code == 201, r.json()

    # an annotator is not a reader
    r = admin.post(f"/api/reader-studies/{rs_id}/readers/", {"ids": [users["annotator"].pk]}, format="json")
    assert r.status_code == 400 and "Reader role" in r.json()["detail"]

    r = admin.post(f"/api/reader-studies/{rs_id}/open/")
    assert r.status_code == 200 and r.json()["status"] == "open"
    # design is frozen once open
    r = admin.post(f"/api/reader-studies/{rs_id}/cases/", {"ids": [studies[0].pk]}, format="json")
    assert r.status_code == 409 and "draft" in r.json()["detail"]
    r = admin.patch(f"/api/reader-studies/{rs_id}/", {"seed": 99}, format="json")
    assert r.status_code == 400 and "seed" in r.json()["detail"]

    from reader_study.models import Assignment

    a1 = list(Assignment.objects.filter(reader__user=users["reader"]).order_by("position"))
    a2 = list(Assignment.objects.filter(reader__user=second).order_by("position"))
    assert [a.position for a in a1] == [1, 2, 3]
    assert sorted(a.case_id for a in a1) == sorted(a.case_id for a in a2)
    assert all({a.a_method, a.b_method} == {"dsa", "dla"} for a in a1 + a2)
    assert len({a.token for a in a1 + a2}) == 6


def test_randomization_is_seeded_and_varies_between_readers(open_reader_study):
    """Same seed -> same queue for a reader; over many cases both orders and A/B assignments vary."""
    from reader_study import services
    from reader_study.models import ReaderStudy

    rs = open_reader_study(n_cases=8, readers=("reader", "r2"))
    cases = list(rs.cases.order_by("id"))
    readers = list(rs.readers.order_by("id"))
    q1 = [(c.pk, a) for c, a, _ in services._queue_for(rs, readers[0], cases)]
    assert q1 == [(a.case_id, a.a_method) for a in readers[0].assignments.order_by("position")]
    q2 = [(c.pk, a) for c, a, _ in services._queue_for(rs, readers[1], cases)]
    assert q1 != q2
    assert {a for _, a in q1} == {"dsa", "dla"}
    other_seed = ReaderStudy(pk=rs.pk, seed=rs.seed + 1, mode=rs.mode)
    assert [(c.pk, a) for c, a, _ in services._queue_for(other_seed, readers[0], cases)] != q1


def test_single_mode_makes_one_item_per_image(open_reader_study, client_for):
    rs = open_reader_study(n_cases=2, mode="single")
    reader = client_for("reader")
    summary = reader.get(f"/api/reading-studies/{rs.pk}/").json()
    assert summary["total"] == 4
    case = reader.get(f"/api/reading/{summary['queue'][0]['token']}/").json()
    assert case["images"] == ["A"]
    r = reader.get(f"/api/reading/{case['token']}/image/B/")
    assert r.status_code == 400


def test_reader_answers_autosave_history_and_submit(open_reader_study, client_for, users):
    from reader_study.models import AnswerEvent

    open_reader_study(n_cases=3)
    reader = client_for("reader")
    queue = reader.get("/api/reading-studies/").json()
    assert len(queue) == 1 and queue[0]["progress"] == "0 of 3"
    token = queue[0]["resume"]
    case = reader.get(f"/api/reading/{token}/").json()
    assert case["progress"] == "1 of 3" and case["previous"] is None and case["next"]
    qs = q_by_key(case)

    # autosave one answer, then change it: two history events, one current value
    bone = qs["residual_bone"]["id"]
    for value in (True, False):
        r = reader.put(
            f"/api/reading/{token}/answers/",
            {"answers": [{"question": bone, "image": "A", "value": value}], "elapsed_s": 2.5},
            format="json",
        )
        assert r.status_code == 200, r.json()
    assert r.json()["answers"][str(bone)] == {"A": False}
    assert r.json()["time_spent_s"] == pytest.approx(5.0)
    events = AnswerEvent.objects.filter(assignment__token=token, question_id=bone)
    assert [e.value for e in events] == [True, False]
    assert all(e.user == users["reader"] for e in events)

    # saving the same value again adds no event
    reader.put(
        f"/api/reading/{token}/answers/",
        {"answers": [{"question": bone, "image": "A", "value": False}]},
        format="json",
    )
    assert events.count() == 2

    # submit with required answers missing: 400 naming them, nothing changes
    r = reader.post(f"/api/reading/{token}/submit/", {}, format="json")
    assert r.status_code == 400 and "Small-vessel conspicuity" in r.json()["detail"]

    r = reader.put(f"/api/reading/{token}/answers/", {"answers": full_answers(case)}, format="json")
    assert r.status_code == 200
    r = reader.post(f"/api/reading/{token}/submit/", {"elapsed_s": 1}, format="json")
    assert r.status_code == 200 and r.json()["submitted"] and r.json()["locked"]
    first_submitted_at = r.json()["submitted_at"]
    # duplicate submit: idempotent, same state, one submit event
    r = reader.post(f"/api/reading/{token}/submit/", {}, format="json")
    assert r.status_code == 200 and r.json()["submitted_at"] == first_submitted_at
    assert AnswerEvent.objects.filter(assignment__token=token, kind="submit").count() == 1

    # locked after submit (allow_edits is off)
    r = reader.put(
        f"/api/reading/{token}/answers/",
        {"answers": [{"question": bone, "image": "A", "value": True}]},
        format="json",
    )
    assert r.status_code == 409 and "locked" in r.json()["detail"]

    # resume: the queue now points at the next unsubmitted case
    queue = reader.get("/api/reading-studies/").json()
    assert queue[0]["progress"] == "1 of 3" and queue[0]["resume"] == case["next"]


def test_edits_after_submit_are_allowed_and_recorded_when_the_study_allows(open_reader_study, client_for):
    from reader_study.models import AnswerEvent

    rs = open_reader_study(n_cases=1, allow_edits=True)
    reader = client_for("reader")
    token = reader.get(f"/api/reading-studies/{rs.pk}/").json()["resume"]
    case = reader.get(f"/api/reading/{token}/").json()
    reader.put(f"/api/reading/{token}/answers/", {"answers": full_answers(case)}, format="json")
    assert reader.post(f"/api/reading/{token}/submit/").status_code == 200
    bone = q_by_key(case)["residual_bone"]["id"]
    r = reader.put(
        f"/api/reading/{token}/answers/",
        {"answers": [{"question": bone, "image": "A", "value": False}]},
        format="json",
    )
    assert r.status_code == 200 and not r.json()["locked"]
    assert AnswerEvent.objects.filter(assignment__token=token, kind="edit_after_submit").count() == 1


def test_bad_answers_are_refused_and_nothing_is_written(open_reader_study, client_for, reader_cases):
    from reader_study.models import Answer, AnswerEvent, ReaderStudy

    rs = open_reader_study(n_cases=1)
    other = ReaderStudy.objects.create(title="other")
    from reader_study import services

    services.add_default_questions(other)
    foreign_q = other.questions.first().pk
    reader = client_for("reader")
    token = reader.get(f"/api/reading-studies/{rs.pk}/").json()["resume"]
    case = reader.get(f"/api/reading/{token}/").json()
    qs = q_by_key(case)
    good = {"question": qs["residual_bone"]["id"], "image": "A", "value": True}
    bad_cases = [
        ({"question": foreign_q, "image": "A", "value": True}, "not part of this reader study"),
        ({"question": 999999, "image": "A", "value": True}, "not part of this reader study"),
        ({"question": qs["artifact_severity"]["id"], "image": "A", "value": 4}, "outside the scale 0..3"),
        (
            {"question": qs["small_vessel_conspicuity"]["id"], "image": "B", "value": 0},
            "outside the scale 1..5",
        ),
        ({"question": qs["small_vessel_conspicuity"]["id"], "image": "A", "value": 2.5}, "whole number"),
        ({"question": qs["residual_bone"]["id"], "image": "A", "value": "maybe"}, "true or false"),
        ({"question": qs["artifact_locations"]["id"], "image": "A", "value": ["elbow"]}, "list of choices"),
        ({"question": qs["residual_bone"]["id"], "image": "C", "value": True}, "image 'C'"),
    ]
    for bad, message in bad_cases:
        r = reader.put(f"/api/reading/{token}/answers/", {"answers": [good, bad]}, format="json")
        assert r.status_code == 400, (bad, r.json())
        assert message in r.json()["detail"], (message, r.json())
    assert not Answer.objects.filter(assignment__token=token).exists()
    assert not AnswerEvent.objects.filter(assignment__token=token).exists()


def test_another_readers_case_is_not_found(open_reader_study, client_for, users):
    rs = open_reader_study(n_cases=1, readers=("reader", "reader2"))
    from reader_study.models import Assignment

    theirs = Assignment.objects.get(reader__reader_study=rs, reader__user__username="reader2")
    me = client_for("reader")
    for method, url in [
        ("get", f"/api/reading/{theirs.token}/"),
        ("put", f"/api/reading/{theirs.token}/answers/"),
        ("post", f"/api/reading/{theirs.token}/submit/"),
        ("get", f"/api/reading/{theirs.token}/image/A/"),
    ]:
        r = getattr(me, method)(url, {"answers": []}, format="json")
        assert r.status_code == 404, (url, r.status_code)
    assert me.get(f"/api/reading-studies/{rs.pk}/").json()["total"] == 1
    # readers cannot reach the admin side (results, answers)
    assert me.get(f"/api/reader-studies/{rs.pk}/results/").status_code == 403
    assert me.get(f"/api/reader-studies/{rs.pk}/answers-csv/").status_code == 403
    # the reader page of someone else's token is a 404 too
    from django.test import Client

    web = Client()
    web.force_login(users["reader"])
    assert web.get(f"/reading/{theirs.token}/").status_code == 404


def test_answers_after_close_are_refused(open_reader_study, client_for):
    rs = open_reader_study(n_cases=1)
    reader = client_for("reader")
    token = reader.get(f"/api/reading-studies/{rs.pk}/").json()["resume"]
    case = reader.get(f"/api/reading/{token}/").json()
    bone = q_by_key(case)["residual_bone"]["id"]
    assert (
        reader.put(
            f"/api/reading/{token}/answers/",
            {"answers": [{"question": bone, "image": "A", "value": True}]},
            format="json",
        ).status_code
        == 200
    )
    assert client_for("admin").post(f"/api/reader-studies/{rs.pk}/close/").json()["status"] == "closed"
    r = reader.put(
        f"/api/reading/{token}/answers/",
        {"answers": [{"question": bone, "image": "A", "value": False}]},
        format="json",
    )
    assert r.status_code == 409 and "closed" in r.json()["detail"]
    r = reader.post(f"/api/reading/{token}/submit/")
    assert r.status_code == 409 and "closed" in r.json()["detail"]
    # the earlier answer is kept, and the reader can still look at the case
    case = reader.get(f"/api/reading/{token}/").json()
    assert case["answers"][str(bone)] == {"A": True} and case["locked"]


def test_case_without_dla_is_refused(client_for, phantom_study, reader_cases):
    admin = client_for("admin")
    rs_id = admin.post("/api/reader-studies/", {"title": "x"}, format="json").json()["id"]
    good = reader_cases(1)[0]
    no_dla = phantom_study(seed=5, shape=SHAPE)
    r = admin.post(f"/api/reader-studies/{rs_id}/cases/", {"ids": [good.pk, no_dla.pk]}, format="json")
    assert r.status_code == 400
    assert no_dla.pseudonym in r.json()["detail"] and "DLA" in r.json()["detail"]
    # all or nothing: the good study was not added either
    assert admin.get(f"/api/reader-studies/{rs_id}/cases/").json() == []
    r = admin.post(f"/api/reader-studies/{rs_id}/cases/", {"ids": []}, format="json")
    assert r.status_code == 400
    r = admin.post(f"/api/reader-studies/{rs_id}/open/")
    assert r.status_code == 400 and "case" in r.json()["detail"]


def test_questions_validate_and_freeze_once_answered(open_reader_study, client_for):
    admin = client_for("admin")
    rs_id = admin.post(
        "/api/reader-studies/", {"title": "q", "with_default_questions": False}, format="json"
    ).json()["id"]
    r = admin.post(
        f"/api/reader-studies/{rs_id}/questions/",
        {"key": "s", "text": "Scale", "type": "ordinal", "scale_min": 3, "scale_max": 1},
        format="json",
    )
    assert r.status_code == 400 and "min < max" in r.json()["detail"]
    r = admin.post(
        f"/api/reader-studies/{rs_id}/questions/",
        {"key": "c", "text": "Pick", "type": "single", "choices": ["a"]},
        format="json",
    )
    assert r.status_code == 400 and "two choices" in r.json()["detail"]
    r = admin.post(
        f"/api/reader-studies/{rs_id}/questions/",
        {"key": "n", "text": "Count", "type": "number", "scale_min": 0, "scale_max": 10, "required": False},
        format="json",
    )
    assert r.status_code == 201
    qid = r.json()["id"]
    r = admin.patch(
        f"/api/reader-studies/{rs_id}/questions/{qid}/", {"text": "Count of stenoses"}, format="json"
    )
    assert r.status_code == 200 and r.json()["text"] == "Count of stenoses"

    rs = open_reader_study(n_cases=1)
    reader = client_for("reader")
    token = reader.get(f"/api/reading-studies/{rs.pk}/").json()["resume"]
    case = reader.get(f"/api/reading/{token}/").json()
    bone = q_by_key(case)["residual_bone"]["id"]
    reader.put(
        f"/api/reading/{token}/answers/",
        {"answers": [{"question": bone, "image": "A", "value": True}]},
        format="json",
    )
    r = admin.patch(f"/api/reader-studies/{rs.pk}/questions/{bone}/", {"text": "changed"}, format="json")
    assert r.status_code == 409 and "frozen" in r.json()["detail"]
    r = admin.delete(f"/api/reader-studies/{rs.pk}/questions/{bone}/")
    assert r.status_code == 409
    assert (
        admin.get(f"/api/reader-studies/{rs.pk}/questions/{bone}/").json()["text"]
        == "Residual bone artifact present"
    )


def test_csv_export_has_every_answer_with_readable_columns(open_reader_study, client_for):
    import csv
    import io

    rs = open_reader_study(n_cases=2)
    reader = client_for("reader")
    token = reader.get(f"/api/reading-studies/{rs.pk}/").json()["resume"]
    case = reader.get(f"/api/reading/{token}/").json()
    answers = full_answers(case)
    reader.put(f"/api/reading/{token}/answers/", {"answers": answers}, format="json")
    reader.post(f"/api/reading/{token}/submit/")
    r = client_for("admin").get(f"/api/reader-studies/{rs.pk}/answers-csv/")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert len(rows) == len(answers)
    from reader_study.models import Assignment

    asg = Assignment.objects.get(token=token)
    for row in rows:
        assert row["method"] == {"dsa": "DSA", "dla": "DLA"}[asg.method_of(row["image"])]
        assert row["reader"] == "reader" and row["study"] == asg.case.study.pseudonym
        assert row["case_submitted"] == "yes"
    bone_rows = {row["image"]: row["value"] for row in rows if row["question_key"] == "residual_bone"}
    assert bone_rows == {"A": "yes", "B": "no"}
    html = client_for("admin").get(f"/api/reader-studies/{rs.pk}/report/")
    assert html.status_code == 200 and b"Residual bone artifact present" in html.content
