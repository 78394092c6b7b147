"""API keys an admin cannot take: stored as a hash only (nothing in the database or the Django admin shows a
key), expiring, revoked by their owner, a password change, a role change, deactivation or a superuser flag;
issue/use/revoke and every user, role and password change audited with before/after and the acting user, from the
API and from the Django admin; the audit log append-only through the ORM on every database."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from dla_web.auth import issue_token
from dla_web.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"


def login_token(username: str) -> str:
    response = APIClient().post(
        "/api/auth/token/", {"username": username, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()["token"]


def me(key: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/me/")


def test_keys_are_stored_hashed_and_never_readable(users):
    key = login_token("reader")
    assert me(key).json()["username"] == "reader"
    with connection.cursor() as cursor:  # no column of any table holds the key
        tables = connection.introspection.table_names(cursor)
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                assert not any(isinstance(v, str) and key in v for v in row), table
    assert "authtoken_token" not in tables, "the plain-text key table is gone"
    admin = APIClient()
    admin.force_login(users["admin"])
    assert admin.get("/admin/authtoken/tokenproxy/").status_code == 404
    assert AuditEvent.objects.filter(action="token.issue", username="reader").count() == 1
    assert AuditEvent.objects.filter(action="token.use", username="reader").count() == 1


def test_each_login_issues_a_new_key_and_revoke_ends_only_that_one(users):
    first, second = login_token("annotator"), login_token("annotator")
    assert first != second
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert client.delete("/api/auth/token/").status_code == 204
    assert me(first).status_code == 401 and "revoked" in me(first).json()["detail"]
    assert me(second).status_code == 200
    revoke = AuditEvent.objects.get(action="token.revoke")
    assert revoke.username == "annotator" and revoke.detail["reason"] == "revoked by its owner"


def test_expired_keys_are_refused(users):
    key, token = issue_token(users["reader"])
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = me(key)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


@pytest.mark.parametrize("change", ["password", "role", "deactivate", "superuser"])
def test_security_relevant_user_changes_revoke_every_key(users, change):
    user = users["reader"]
    keys = [issue_token(user)[0] for _ in range(2)]
    if change == "password":
        user.set_password("another-long-password")
        user.save()
    elif change == "role":
        user.groups.add(Group.objects.get_or_create(name="Annotator")[0])
    elif change == "deactivate":
        user.is_active = False
        user.save()
    else:
        user.is_superuser = True
        user.save()
    for key in keys:
        assert me(key).status_code == 401
    assert ApiToken.objects.filter(user=user, revoked_at__isnull=True).count() == 0


def test_an_unrelated_save_keeps_the_keys(users):
    key, _ = issue_token(users["reader"])
    users["reader"].first_name = "Rea"
    users["reader"].save()
    assert me(key).status_code == 200


def test_django_admin_changes_are_audited_with_the_actor_and_before_after(users):
    from django.test import Client

    boss = users["admin"]
    boss.is_staff = True
    boss.save()
    web = Client()
    web.force_login(boss)
    target = users["reader"]
    response = web.post(
        f"/admin/auth/user/{target.pk}/password/",
        {
            "password1": "a-brand-new-password-9",
            "password2": "a-brand-new-password-9",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.filter(action="user.password", object_id=str(target.pk)).latest("id")
    assert event.username == "admin" and event.ip, "the admin who did it, from where"
    target.refresh_from_db()
    target.groups.set([Group.objects.get_or_create(name="Annotator")[0]])
    roles = AuditEvent.objects.filter(action="user.roles", object_id=str(target.pk)).latest("id")
    assert roles.detail["after"] == ["Annotator"]
    target.is_superuser = True
    target.save()
    change = AuditEvent.objects.filter(action="user.change", object_id=str(target.pk)).latest("id")
    assert change.detail == {"is_superuser": {"before": False, "after": True}}


def test_audit_rows_cannot_be_changed_or_deleted_through_the_orm(users):
    from django.db import DatabaseError, transaction

    from dla_web.audit import record

    event = record("test.event", user=users["admin"], detail={"x": 1})
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="forged")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"
