# ruff: noqa: F811
"""Reader-study API: design by an admin, randomized queues, answers with history, submit, and every kind of bad
input (unknown question, out-of-scale value, another reader's case, closed study, case without DLA, duplicate
submit, frozen questions)."""

import shutil
from pathlib import Path

import pytest
from django.conf import settings

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
    from dla_web.models import AuditEvent, TaskRun
    from reader_study.tasks import render_reader_study_cines

    admin = client_for("admin")
    studies = reader_cases(3)
    r = admin.post("/api/reader-studies/", {"title": "Bone", "instructions": "Score both."}, format="json")
    assert r.status_code == 201, r.json()
    rs_id = r.json()["id"]
    assert r.json()["n_questions"] == 6  # the paper's default questions
    assert r.json()["seed"] is None  # drawn by the server, secret until the study closes

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

    # opening renders every frame first: 202 "opening", readers see nothing until the task has run. The MIP
    # cache is content-addressed and shared by the session: other tests may have rendered these phantoms already
    shutil.rmtree(Path(settings.STORAGE_ROOT) / "mip_cache", ignore_errors=True)
    r = admin.post(f"/api/reader-studies/{rs_id}/open/")
    assert r.status_code == 202 and r.json()["status"] == "opening", r.json()
    reader = client_for("reader")
    assert reader.get("/api/reading-studies/").json() == []
    assert reader.get(f"/api/reading-studies/{rs_id}/").status_code == 404
    run = render_reader_study_cines.run_here(TaskRun.objects.get(pk=r.json()["cine_task_run"]))
    assert run.state == "succeeded", run.error
    assert run.result["cines"] == 6 and run.result["status"] == "open"
    detail = admin.get(f"/api/reader-studies/{rs_id}/").json()
    assert detail["status"] == "open" and all(c["display_floor_hu"] > 0 for c in detail["cases"])
    assert reader.get(f"/api/reading-studies/{rs_id}/").json()["total"] == 3
    # opening again is a no-op 200
    r = admin.post(f"/api/reader-studies/{rs_id}/open/")
    assert r.status_code == 200 and r.json()["status"] == "open"

    # the design is frozen once open, through every endpoint
    question = detail["questions"][0]["id"]
    for method, url, body, status in [
        ("post", "cases/", {"ids": [studies[0].pk]}, 409),
        ("delete", f"cases/{detail['cases'][0]['id']}/", None, 409),
        ("post", "readers/", {"ids": [make_user("reader3", "Reader").pk]}, 409),
        ("delete", f"readers/{detail['readers'][0]['id']}/", None, 409),
        ("post", "questions/", {"key": "late", "text": "Late", "type": "yes_no", "required": True}, 409),
        ("post", "default-questions/", None, 409),
        ("patch", f"questions/{question}/", {"text": "changed"}, 409),
        ("delete", f"questions/{question}/", None, 409),
        ("patch", "", {"seed": 99}, 400),
        ("patch", "", {"instructions": "changed"}, 400),
        ("patch", "", {"allow_edits": True}, 400),
        ("patch", "", {"mode": "single"}, 400),
        ("delete", "", None, 409),
    ]:
        r = getattr(admin, method)(f"/api/reader-studies/{rs_id}/{url}", body, format="json")
        assert r.status_code == status, (method, url, r.status_code, r.json())
    after = admin.get(f"/api/reader-studies/{rs_id}/").json()
    for field in ("instructions", "allow_edits", "mode", "cases", "readers", "questions"):
        assert after[field] == detail[field], field
    assert (
        admin.patch(f"/api/reader-studies/{rs_id}/", {"title": "Bone (renamed)"}, format="json").status_code
        == 200
    )

    from reader_study.models import Assignment

    a1 = list(Assignment.objects.filter(reader__user=users["reader"]).order_by("position"))
    a2 = list(Assignment.objects.filter(reader__user=second).order_by("position"))
    assert [a.position for a in a1] == [1, 2, 3]
    assert sorted(a.case_id for a in a1) == sorted(a.case_id for a in a2)
    assert all({a.a_method, a.b_method} == {"dsa", "dla"} for a in a1 + a2)
    assert len({a.token for a in a1 + a2}) == 6

    # every design change above is in the audit log with before and after
    events = {
        e.action: e
        for e in AuditEvent.objects.filter(object_id=str(rs_id), action__startswith="reader_study.")
    }
    assert {
        "reader_study.create",
        "reader_study.cases.add",
        "reader_study.readers.add",
        "reader_study.opening",
        "reader_study.open",
        "reader_study.change",
    } <= set(events)
    assert events["reader_study.cases.add"].detail == {"before": [], "after": sorted(s.pk for s in studies)}
    change = events["reader_study.change"].detail
    assert change["before"]["title"] == "Bone" and change["after"]["title"] == "Bone (renamed)"
    assert events["reader_study.open"].username == "admin"  # the task opened it on the admin's behalf
    assert not any("seed" in str(e.detail) for e in events.values())


def test_randomization_is_secret_counterbalanced_and_varies_between_readers(open_reader_study):
    """Same secret seed -> same queue for a reader; A/B is exactly balanced per reader; orders and A/B differ
    between readers and with another seed."""
    from reader_study import services
    from reader_study.models import ReaderStudy, new_randomization_seed

    rs = open_reader_study(n_cases=8, readers=("reader", "r2"))
    assert len(rs.randomization_seed) == 64 and int(rs.randomization_seed, 16) >= 0
    cases = list(rs.cases.order_by("id"))
    readers = list(rs.readers.order_by("id"))
    q1 = [(c.pk, a) for c, a, _ in services._queue_for(rs, readers[0], cases)]
    assert q1 == [(a.case_id, a.a_method) for a in readers[0].assignments.order_by("position")]
    q2 = [(c.pk, a) for c, a, _ in services._queue_for(rs, readers[1], cases)]
    assert q1 != q2
    for queue in (q1, q2):
        assert sum(a == "dla" for _, a in queue) == 4  # counterbalanced: half of the cases show DLA as A
    other_seed = ReaderStudy(pk=rs.pk, randomization_seed=new_randomization_seed(), mode=rs.mode)
    assert [(c.pk, a) for c, a, _ in services._queue_for(other_seed, readers[0], cases)] != q1
    assert new_randomization_seed() != new_randomization_seed()


def test_studies_opened_with_the_legacy_seed_keep_their_queues(open_reader_study):
    """A study opened before the secret seed existed (empty randomization_seed) is reproduced by the old
    formula, written out here, so existing assignments stay what they were."""
    import random

    from reader_study import services
    from reader_study.models import ReaderStudy

    rs = open_reader_study(n_cases=5)
    legacy = ReaderStudy(pk=rs.pk, seed=7, randomization_seed="", mode=rs.mode)
    cases = list(rs.cases.order_by("id"))
    reader = rs.readers.get()
    rng = random.Random(f"reader-study:7:reader:{reader.user_id}")
    expected = []
    for case in cases:
        a = rng.choice(("dsa", "dla"))
        expected.append((case.pk, a, "dla" if a == "dsa" else "dsa"))
    rng.shuffle(expected)
    assert [(c.pk, a, b) for c, a, b in services._queue_for(legacy, reader, cases)] == expected


def test_seed_is_set_by_the_server_and_shown_only_after_close(open_reader_study, client_for):
    from reader_study import services

    admin = client_for("admin")
    r = admin.post("/api/reader-studies/", {"title": "s", "seed": 1}, format="json")
    assert r.status_code == 400 and "seed" in r.json()["detail"] and "cannot be set" in r.json()["detail"]
    rs = open_reader_study(n_cases=2, readers=("reader", "r2"))
    assert admin.get(f"/api/reader-studies/{rs.pk}/").json()["seed"] is None
    assert admin.get(f"/api/reader-studies/{rs.pk}/results/").json()["reader_study"]["seed"] is None
    assert rs.randomization_seed.encode() not in admin.get(f"/api/reader-studies/{rs.pk}/report/").content
    closed = admin.post(f"/api/reader-studies/{rs.pk}/close/").json()
    assert closed["seed"] == rs.randomization_seed
    assert (
        admin.get(f"/api/reader-studies/{rs.pk}/results/").json()["reader_study"]["seed"]
        == rs.randomization_seed
    )
    assert rs.randomization_seed.encode() in admin.get(f"/api/reader-studies/{rs.pk}/report/").content
    # with the seed, anyone can reproduce every queue after the study
    cases = list(rs.cases.order_by("id"))
    for reader in rs.readers.all():
        stored = [(a.case_id, a.a_method, a.b_method) for a in reader.assignments.order_by("position")]
        assert [(c.pk, a, b) for c, a, b in services._queue_for(rs, reader, cases)] == stored


def test_a_reader_with_another_role_is_refused(open_reader_study, client_for, make_user, users):
    from django.contrib.auth.models import Group
    from django.test import Client

    admin = client_for("admin")
    both = make_user("both", "Reader")
    both.groups.add(Group.objects.get(name="Annotator"))
    rs_id = admin.post("/api/reader-studies/", {"title": "roles"}, format="json").json()["id"]
    r = admin.post(f"/api/reader-studies/{rs_id}/readers/", {"ids": [both.pk]}, format="json")
    assert r.status_code == 400 and "also has the Annotator role" in r.json()["detail"], r.json()
    eligible = {u["username"] for u in admin.get("/api/reader-studies/eligible-readers/").json()}
    assert "reader" in eligible and "both" not in eligible
    # a reader who gains another role after the study opened can no longer read
    rs = open_reader_study(n_cases=1)
    reader = users["reader"]
    token = rs.readers.get().assignments.get().token
    reader.groups.add(Group.objects.get(name="Annotator"))
    api = client_for("reader")
    for url in ("/api/reading-studies/", f"/api/reading/{token}/", f"/api/reading/{token}/image/A/?angle=0"):
        r = api.get(url)
        assert r.status_code == 403 and "also has the Annotator role" in r.json()["detail"], (url, r.json())
    web = Client()
    web.force_login(reader)
    page = web.get(f"/reading/{token}/")
    assert page.status_code == 403 and b"also has the Annotator role" in page.content


def test_opening_refuses_a_reader_who_gained_another_role(client_for, reader_cases, users):
    from django.contrib.auth.models import Group

    admin = client_for("admin")
    rs_id = admin.post("/api/reader-studies/", {"title": "late role"}, format="json").json()["id"]
    admin.post(f"/api/reader-studies/{rs_id}/cases/", {"ids": [reader_cases(1)[0].pk]}, format="json")
    admin.post(f"/api/reader-studies/{rs_id}/readers/", {"ids": [users["reader"].pk]}, format="json")
    users["reader"].groups.add(Group.objects.get(name="Admin"))
    r = admin.post(f"/api/reader-studies/{rs_id}/open/")
    assert r.status_code == 400 and "also has the Admin role" in r.json()["detail"], r.json()
    assert admin.get(f"/api/reader-studies/{rs_id}/").json()["status"] == "draft"


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


def test_questions_validate_and_freeze_once_open(open_reader_study, client_for):
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
    assert r.status_code == 409 and "only while it is a draft" in r.json()["detail"]
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


def test_the_migration_gives_drafts_a_secret_seed_and_leaves_opened_studies_alone(users):
    """0003's data step on rows as the migration finds them (empty randomization_seed): drafts get a secret
    seed each, studies already opened keep none, so their stored queues and legacy seed stay as they are."""
    import importlib

    from django.apps import apps

    from reader_study.models import ReaderStudy

    migration = importlib.import_module("reader_study.migrations.0003_secret_seed_opening_floor")
    drafts = [ReaderStudy.objects.create(title=f"d{i}", randomization_seed="") for i in range(2)]
    opened = ReaderStudy.objects.create(title="o", seed=5, randomization_seed="")
    ReaderStudy.objects.filter(pk=opened.pk).update(status="open")
    migration.secret_seeds_for_drafts(apps, None)
    seeds = [ReaderStudy.objects.get(pk=d.pk).randomization_seed for d in drafts]
    assert all(len(s) == 64 for s in seeds) and seeds[0] != seeds[1]
    kept = ReaderStudy.objects.get(pk=opened.pk)
    assert kept.randomization_seed == "" and kept.seed == 5
