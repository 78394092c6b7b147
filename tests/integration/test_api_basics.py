"""API conventions: JSON errors with a detail message, token auth (obtain, use, revoke), wrong credentials
as 401 (never 500), user role management by admins, pagination."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_token_obtain_use_and_revoke(users):
    client = APIClient()
    bad = client.post("/api/auth/token/", {"username": "admin", "password": "wrong"}, format="json")
    assert bad.status_code == 401 and "wrong password" in bad.json()["detail"]
    token = client.post(
        "/api/auth/token/", {"username": "admin", "password": "correct-horse-battery"}, format="json"
    )
    assert token.status_code == 200
    key = token.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    me = client.get("/api/me/")
    assert me.status_code == 200 and me.json()["username"] == "admin" and me.json()["roles"] == ["Admin"]
    assert client.delete("/api/auth/token/").status_code == 204
    after = client.get("/api/me/")
    assert after.status_code == 401 and "Invalid token" in after.json()["detail"]


def test_garbage_token_is_401_not_500():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = client.get("/api/task-runs/")
    assert response.status_code == 401 and response.json()["detail"]


def test_admin_assigns_roles_and_validation_errors_name_the_field(users, client_for):
    admin = client_for("admin")
    target = users["norole"]
    response = admin.patch(f"/api/users/{target.pk}/", {"roles": ["Reader"]}, format="json")
    assert response.status_code == 200 and response.json()["roles"] == ["Reader"]
    assert set(target.groups.values_list("name", flat=True)) == {"Reader"}
    bad = admin.patch(f"/api/users/{target.pk}/", {"roles": ["Emperor"]}, format="json")
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("roles:") and "Emperor" in bad.json()["detail"]
    assert set(target.groups.values_list("name", flat=True)) == {"Reader"}


def test_task_runs_are_private_to_their_creator(users, client_for):
    from dla_web.models import TaskRun

    mine = TaskRun.objects.create(kind="selftest", created_by=users["annotator"])
    theirs = TaskRun.objects.create(kind="selftest", created_by=users["reader"])
    annotator = client_for("annotator")
    listed = [r["id"] for r in annotator.get("/api/task-runs/").json()["results"]]
    assert listed == [mine.pk]
    assert annotator.get(f"/api/task-runs/{theirs.pk}/").status_code == 404
    assert annotator.post(f"/api/task-runs/{theirs.pk}/cancel/", {}, format="json").status_code == 404
    theirs.refresh_from_db()
    assert not theirs.cancel_requested
    admin_ids = {r["id"] for r in client_for("admin").get("/api/task-runs/").json()["results"]}
    assert admin_ids == {mine.pk, theirs.pk}


def test_list_is_paginated(users, client_for):
    from dla_web.models import TaskRun

    TaskRun.objects.bulk_create([TaskRun(kind="selftest", created_by=users["admin"]) for _ in range(60)])
    page = client_for("admin").get("/api/task-runs/").json()
    assert page["count"] == 60 and len(page["results"]) == 50 and page["next"]


def test_study_list_shows_label_status_and_filters_task_kinds(users, client_for, phantom_study):
    from annotations.labels import apply_draft_op, commit, get_or_create_draft
    from dla_web.models import TaskRun

    labelled, bare = phantom_study(seed=51), phantom_study(seed=52)
    draft = get_or_create_draft(labelled, users["annotator"])
    apply_draft_op(draft.pk, {"op": "brush", "center_zyx": [5, 5, 5], "radius_mm": 5, "label": 1})
    commit(draft.pk, users["annotator"], "v1")
    statuses = {
        s["pseudonym"]: s["label_status"]
        for s in client_for("annotator").get("/api/studies/").json()["results"]
    }
    assert statuses == {labelled.pseudonym: "labels not submitted", bare.pseudonym: "no labels"}
    TaskRun.objects.create(kind="cine", created_by=users["admin"])
    TaskRun.objects.create(kind="train", created_by=users["admin"])
    kinds = [
        r["kind"]
        for r in client_for("admin").get("/api/task-runs/?active=1&exclude_kind=cine").json()["results"]
    ]
    assert kinds == ["train"]
