"""Trust: the audit log records logins, failed logins, imports, commits, reviews, exports and role changes and
cannot be edited (PostgreSQL refuses UPDATE/DELETE); login throttling; security headers with a CSP that allows
no inline script; uploads are not reachable over HTTP."""

import pytest
from django.db import DatabaseError, connection, transaction
from rest_framework.test import APIClient

from dla_web.models import AuditEvent

pytestmark = pytest.mark.django_db

BRUSH = {"op": "brush", "center_zyx": [20, 24, 24], "radius_mm": 6, "label": 1, "shape": "sphere"}


def actions(after_id: int = 0) -> list[str]:
    return list(AuditEvent.objects.filter(id__gt=after_id).order_by("id").values_list("action", flat=True))


def last_event_id() -> int:
    """Where the test's own events begin (fixtures create users, which is audited too)."""
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def test_logins_and_failed_logins_are_audited(client, users):
    start = last_event_id()
    assert client.post("/login/", {"username": "annotator", "password": "nope"}).status_code == 200
    assert (
        client.post("/login/", {"username": "annotator", "password": "correct-horse-battery"}).status_code
        == 302
    )
    client.post("/logout/")
    assert actions(start) == ["auth.login_failed", "auth.login", "auth.logout"]
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert failed.username == "annotator" and failed.ip == "127.0.0.1"


def test_label_work_exports_and_role_changes_are_audited(users, client_for, phantom_study):
    study = phantom_study(seed=21)
    annotator, admin = client_for("annotator"), client_for("admin")
    start = last_event_id()
    draft = annotator.post("/api/drafts/", {"study": study.pk}, format="json").json()
    annotator.post(f"/api/drafts/{draft['id']}/ops/", {"op": BRUSH}, format="json")
    version = annotator.post(f"/api/drafts/{draft['id']}/commit/", {"message": "m"}, format="json").json()
    admin.post(f"/api/label-versions/{version['id']}/review/", {"status": "approved"}, format="json")
    annotator.get(f"/api/label-versions/{version['id']}/samples/")
    annotator.get(f"/api/volumes/{study.volume('fill').pk}/download/?as=nifti")
    admin.patch(f"/api/users/{users['norole'].pk}/", {"roles": ["Reader"]}, format="json")
    user_actions = [
        a for a in actions(start) if not a.startswith("task.cine")
    ]  # cines follow commits automatically
    assert user_actions == [
        "labels.commit",
        "labels.review",
        "export.samples",
        "export.volume",
        "user.roles",
    ]
    role_change = AuditEvent.objects.get(action="user.roles", id__gt=start)
    assert role_change.detail == {"before": [], "after": ["Reader"]}
    assert role_change.username == "admin" and role_change.object_repr == "norole"
    commit = AuditEvent.objects.get(action="labels.commit")
    assert commit.object_repr == study.pseudonym and commit.detail == {"version": 1}


def test_audit_log_is_admin_only_exportable_and_append_only(users, client_for):
    from dla_web.audit import record

    event = record("test.event", user=users["admin"], detail={"k": 1})
    listing = client_for("admin").get("/api/audit-events/?action=test.")
    assert [e["action"] for e in listing.json()["results"]] == ["test.event"]  # before the formula row below
    csv_text = b"".join(client_for("admin").get("/api/audit-events/export/").streaming_content).decode()
    assert csv_text.splitlines()[0].startswith("id,at,action") and "test.event" in csv_text
    record('=HYPERLINK("https://evil")', user=users["admin"])  # what a spreadsheet would run as a formula
    csv_text = b"".join(client_for("admin").get("/api/audit-events/export/").streaming_content).decode()
    assert '\'=HYPERLINK(""https://evil"")' in csv_text and ",=HYPERLINK" not in csv_text
    assert client_for("annotator").get("/api/audit-events/").status_code == 403
    assert client_for("admin").delete(f"/api/audit-events/{event.pk}/").status_code == 405
    assert connection.vendor == "postgresql"
    for statement in ("UPDATE dla_web_auditevent SET action = 'x'", "DELETE FROM dla_web_auditevent"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(statement)
    assert AuditEvent.objects.filter(action="test.event").count() == 1
    users["admin"].delete()  # deleting a user keeps their events, with the username
    assert AuditEvent.objects.get(action="test.event").username == "admin"


def test_login_is_throttled_after_repeated_failures(client, users, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "reader", "password": "bad"})
    locked = client.post("/login/", {"username": "reader", "password": "correct-horse-battery"})
    assert locked.status_code == 429
    api = APIClient().post(
        "/api/auth/token/", {"username": "reader", "password": "correct-horse-battery"}, format="json"
    )
    assert api.status_code == 429 and "This account is locked" in api.json()["detail"]
    other = client.post("/login/", {"username": "annotator", "password": "correct-horse-battery"})
    assert other.status_code == 302, "one locked account must not lock everybody"


def test_security_headers_and_csp_without_inline_scripts(client, users):
    response = client.get("/login/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in response.content.decode()


def test_stored_files_and_uploads_are_not_served(client, users, phantom_study, settings):
    study = phantom_study(seed=22)
    client.force_login(users["admin"])
    stored = study.volume("fill").file
    for url in (f"/{stored}", f"/media/{stored}", f"/storage/{stored}", "/uploads/", f"/static/../{stored}"):
        assert client.get(url).status_code == 404, url


from tests.integration.reader_support import open_reader_study, reader_cases  # noqa: E402,F401


def test_reader_answers_and_submits_are_audited(open_reader_study, client_for):  # noqa: F811
    from reader_study.models import Assignment

    rs = open_reader_study(n_cases=1)
    assignment = Assignment.objects.filter(case__reader_study=rs).first()
    reader = client_for("reader")
    case = reader.get(f"/api/reading/{assignment.token}/").json()
    yes_no = next(q for q in case["questions"] if q["type"] == "yes_no")
    saved = reader.put(
        f"/api/reading/{assignment.token}/answers/",
        {"answers": [{"question": yes_no["id"], "image": "A", "value": True}]},
        format="json",
    )
    assert saved.status_code == 200, saved.content
    events = AuditEvent.objects.filter(action="reader.answers")
    assert events.count() == 1 and events.get().username == "reader"
    assert events.get().detail == {"assignment": assignment.pk, "answers": 1}
