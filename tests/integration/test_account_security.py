"""Accounts and sessions (issue 16, item 9): HTTPS behind a TLS-terminating proxy (HSTS, redirect, secure
cookies), idle and absolute session timeouts, the self-service password change (validated, revokes API keys,
audited), password strength ("reader3reader3" refused, the demo passwords pass), the login throttle of the token
view (429 with a JSON message; a forged X-Forwarded-For does not reset it), a locked-out account told so and
until when (API and login page), the last active admin kept (API and Django admin), nosniff on static files, and
the DLA_RENDER_* settings read from the environment."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client, override_settings
from rest_framework.test import APIClient

from dla_web.auth import issue_token
from dla_web.models import ApiToken, AuditEvent
from dla_web.security import LOGIN_AT, SEEN_AT

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def fresh_login_allowance():
    """The token view's throttle counts in the process-wide cache: each test here starts (and leaves) with an
    empty history for the test client's address, whatever ran before it."""
    from django.core.cache import cache

    cache.delete("throttle_login_127.0.0.1")
    yield
    cache.delete("throttle_login_127.0.0.1")


def settings_in_subprocess(tmp_path, **env) -> dict:
    """The production settings module loaded with ``env`` (a fresh interpreter: settings read the environment
    once, at start)."""
    names = [
        "SECURE_PROXY_SSL_HEADER",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "TRUSTED_PROXIES",
        "SESSION_COOKIE_AGE",
        "SESSION_IDLE_TIMEOUT_S",
        "SESSION_MAX_AGE_S",
        "DLA_LOGIN_RATE",
        "DLA_RENDER_CONCURRENCY",
        "DLA_RENDER_THREADS",
        "DLA_RENDER_WAIT_S",
        "DLA_RENDER_QUEUE",
    ]
    code = (
        "import json; from dla_web import settings as s; "
        f"print(json.dumps({{n: getattr(s, n, None) for n in {names!r}}}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DLA_", "DJANGO_"))}
    base.update(SECRET_KEY="x" * 50, DLA_VAR_DIR=str(tmp_path / "var"), **env)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=base, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ HTTPS


def test_behind_a_tls_proxy_the_settings_trust_its_header_and_turn_on_hsts(tmp_path):
    plain = settings_in_subprocess(tmp_path)
    assert plain["SECURE_PROXY_SSL_HEADER"] is None and not plain["SECURE_SSL_REDIRECT"]
    assert plain["SECURE_HSTS_SECONDS"] == 0 and not plain["SESSION_COOKIE_SECURE"]
    assert plain["TRUSTED_PROXIES"] == 0
    proxied = settings_in_subprocess(tmp_path, DLA_BEHIND_TLS_PROXY="1")
    assert proxied["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert proxied["SECURE_SSL_REDIRECT"] and proxied["SECURE_HSTS_SECONDS"] >= 31536000
    assert proxied["SESSION_COOKIE_SECURE"] and proxied["CSRF_COOKIE_SECURE"]
    assert proxied["TRUSTED_PROXIES"] == 1
    bad = subprocess.run(
        [sys.executable, "-c", "import dla_web.settings"],
        cwd=REPO,
        env={**os.environ, "SECRET_KEY": "x" * 50, "DLA_BEHIND_TLS_PROXY": "maybe"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "DLA_BEHIND_TLS_PROXY='maybe' is not a boolean" in bad.stderr


@override_settings(
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    SECURE_SSL_REDIRECT=True,
    SECURE_HSTS_SECONDS=31536000,
    SESSION_COOKIE_SECURE=True,
)
def test_over_the_proxy_https_gets_hsts_and_plain_http_is_redirected(users):
    client = Client()  # built under the override: SecurityMiddleware reads the settings when it is created
    secure = client.get("/login/", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"].startswith("max-age=31536000")
    plain = client.get("/login/")
    assert plain.status_code == 301 and plain["Location"] == "https://testserver/login/"
    assert "Strict-Transport-Security" not in plain
    logged_in = client.post(
        "/login/", {"username": "reader", "password": PASSWORD}, HTTP_X_FORWARDED_PROTO="https"
    )
    assert logged_in.status_code == 302 and logged_in.cookies["sessionid"]["secure"]


# ------------------------------------------------------------------------------------------------ sessions


def _age_session(client, **seconds_ago):
    session = client.session
    now = time.time()
    for key, ago in seconds_ago.items():
        session[key] = now - ago
    session.save()


def test_a_session_idle_longer_than_the_timeout_ends_with_a_message(client, users, settings):
    settings.SESSION_IDLE_TIMEOUT_S = 20 * 60
    client.force_login(users["annotator"])
    assert client.get("/").status_code == 200
    _age_session(client, **{SEEN_AT: settings.SESSION_IDLE_TIMEOUT_S + 5})
    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0].startswith("/login/")
    text = response.content.decode()
    assert "Your session ended after 20 minutes without activity; please log in again." in text
    event = AuditEvent.objects.filter(action="auth.session_expired").get()
    assert event.username == "annotator" and event.detail["reason"] == "idle"
    assert client.get("/api/me/").status_code in (401, 403), "the session is gone"


def test_an_api_call_on_an_expired_session_is_a_401_that_says_why(client, users, settings):
    client.force_login(users["annotator"])
    _age_session(client, **{SEEN_AT: settings.SESSION_IDLE_TIMEOUT_S + 5})
    response = client.get("/api/me/")
    assert response.status_code == 401 and "without activity" in response.json()["detail"]


def test_activity_keeps_a_session_but_not_beyond_the_absolute_limit(client, users, settings):
    client.force_login(users["annotator"])
    half = settings.SESSION_IDLE_TIMEOUT_S / 2
    _age_session(client, **{SEEN_AT: half})
    assert client.get("/api/me/").status_code == 200
    assert time.time() - client.session[SEEN_AT] < 5, "a request stamps the session as used"
    _age_session(client, **{LOGIN_AT: settings.SESSION_MAX_AGE_S + 5, SEEN_AT: 1})
    response = client.get("/api/me/")
    assert response.status_code == 401
    hours = settings.SESSION_MAX_AGE_S // 3600
    assert f"ended {hours} hours after you logged in" in response.json()["detail"]
    assert AuditEvent.objects.get(action="auth.session_expired").detail["reason"] == "maximum"


def test_the_session_cookie_lives_no_longer_than_the_absolute_limit(settings):
    assert settings.SESSION_COOKIE_AGE == settings.SESSION_MAX_AGE_S
    assert settings.SESSION_IDLE_TIMEOUT_S < settings.SESSION_MAX_AGE_S


def test_session_timeouts_come_from_the_environment(tmp_path):
    values = settings_in_subprocess(tmp_path, DLA_SESSION_IDLE_MINUTES="20", DLA_SESSION_MAX_HOURS="8")
    assert values["SESSION_IDLE_TIMEOUT_S"] == 20 * 60
    assert values["SESSION_MAX_AGE_S"] == values["SESSION_COOKIE_AGE"] == 8 * 3600
    defaults = settings_in_subprocess(tmp_path)
    assert defaults["SESSION_IDLE_TIMEOUT_S"] == 60 * 60 and defaults["SESSION_MAX_AGE_S"] == 12 * 3600


# ------------------------------------------------------------------------------------------------ passwords


def test_password_change_page_needs_a_login(client):
    response = client.get("/account/password/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_password_change_validates_revokes_api_keys_and_is_audited(client, users):
    user = users["reader"]
    key, _ = issue_token(user)
    client.force_login(user)
    page = client.get("/account/password/")
    assert page.status_code == 200 and 'name="new_password1"' in page.content.decode()
    wrong = client.post(
        "/account/password/",
        {
            "old_password": "nope",
            "new_password1": "a-new-long-passphrase",
            "new_password2": "a-new-long-passphrase",
        },
    )
    assert wrong.status_code == 200 and "old password was entered incorrectly" in wrong.content.decode()
    short = client.post(
        "/account/password/", {"old_password": PASSWORD, "new_password1": "Xq7#kz", "new_password2": "Xq7#kz"}
    )
    assert "at least 12 characters" in short.content.decode()
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    done = client.post(
        "/account/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "a-new-long-passphrase",
            "new_password2": "a-new-long-passphrase",
        },
        follow=True,
    )
    assert done.redirect_chain[-1][0] == "/" and "Your password was changed. 1 API key was revoked" in (
        done.content.decode()
    )
    user.refresh_from_db()
    assert user.check_password("a-new-long-passphrase")
    assert ApiToken.objects.filter(user=user, revoked_at__isnull=True).count() == 0
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/me/").status_code == 401
    events = AuditEvent.objects.filter(id__gt=before)
    change = events.get(action="user.password")
    assert change.username == "reader" and change.object_repr == "reader" and change.ip == "127.0.0.1"
    assert events.filter(action="token.revoke").count() == 1
    assert client.get("/").status_code == 200, "the browser that changed it stays signed in"


def test_a_password_made_of_the_username_is_refused(client, make_user):
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    user = make_user("reader3", "Reader")
    for weak in ("reader3reader3", "READER3-reader3", "my-reader3-password"):
        with pytest.raises(ValidationError, match="contains the username"):
            validate_password(weak, user)
    validate_password("violet-harbour-lantern", user)  # a passphrase without the name passes
    client.force_login(user)
    response = client.post(
        "/account/password/",
        {"old_password": PASSWORD, "new_password1": "reader3reader3", "new_password2": "reader3reader3"},
    )
    assert response.status_code == 200 and "contains the username" in response.content.decode()
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_the_django_admin_refuses_a_new_user_whose_password_is_the_username_twice(users):
    web = Client()
    web.force_login(users["admin"])
    form = {
        "username": "reader3",
        "usable_password": "true",
        "password1": "reader3reader3",
        "password2": "reader3reader3",
    }
    response = web.post("/admin/auth/user/add/", form)
    assert response.status_code == 200 and "contains the username" in response.content.decode()
    assert not type(users["admin"]).objects.filter(username="reader3").exists()
    accepted = web.post(
        "/admin/auth/user/add/",
        {**form, "password1": "violet-harbour-lantern", "password2": "violet-harbour-lantern"},
    )
    assert accepted.status_code == 302 and type(users["admin"]).objects.filter(username="reader3").exists()


def test_common_and_numeric_passwords_are_refused(make_user):
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    user = make_user("someone")
    for weak, why in (("907152836401", "entirely numeric"), ("password1234", "too common")):
        with pytest.raises(ValidationError, match=why):
            validate_password(weak, user)


def test_generated_demo_passwords_pass_the_validators_and_stay_off_the_command_line(db):
    from io import StringIO

    from django.contrib.auth import get_user_model
    from django.contrib.auth.password_validation import validate_password

    for _ in range(3):
        out = StringIO()
        call_command("createdemo", "--no-data", stdout=out)
        password = re.search(r"^\s+admin\s+(\S+)", out.getvalue(), re.M).group(1)
        for user in get_user_model().objects.filter(
            username__in=["admin", "annotator", "reader1", "reader2"]
        ):
            validate_password(password, user)
            assert user.check_password(password)
    run_sh = (REPO / "scripts" / "run.sh").read_text()
    assert "createdemo --password-file var/demo-password" in run_sh
    assert not re.search(r"createdemo[^\n]*--password[ =]", run_sh), "a password argument shows in ps"


# ------------------------------------------------------------------------------------------------ logins


@pytest.fixture
def login_rate(settings):
    """A low login rate (the history is emptied by ``fresh_login_allowance``)."""
    settings.DLA_LOGIN_RATE = "3/min"
    return 3


def test_the_token_view_throttles_password_checks_per_address(users, login_rate):
    client = APIClient()
    for i in range(login_rate):
        wrong = client.post("/api/auth/token/", {"username": f"user{i}", "password": "guess"}, format="json")
        assert wrong.status_code == 401, wrong.content
    throttled = client.post("/api/auth/token/", {"username": "admin", "password": PASSWORD}, format="json")
    assert throttled.status_code == 429
    detail = throttled.json()["detail"]
    assert "Too many login attempts from your address" in detail and "seconds" in detail
    assert 1 <= int(throttled["Retry-After"]) <= 60
    forged = client.post(
        "/api/auth/token/",
        {"username": "admin", "password": PASSWORD},
        format="json",
        HTTP_X_FORWARDED_FOR="203.0.113.7",
    )
    assert forged.status_code == 429, "a forged X-Forwarded-For must not give a fresh allowance"
    not_a_check = client.post("/api/auth/token/", {"username": ["x"]}, format="json")
    assert not_a_check.status_code == 400, "a body without credentials checks no password and is not counted"


def test_behind_a_trusted_proxy_the_throttle_counts_the_forwarded_client(users, login_rate, settings):
    from django.core.cache import cache

    settings.TRUSTED_PROXIES = 1
    client = APIClient()
    try:
        for _ in range(login_rate):
            client.post(
                "/api/auth/token/",
                {"username": "x", "password": "y"},
                format="json",
                HTTP_X_FORWARDED_FOR="198.51.100.1",
            )
        other = client.post(
            "/api/auth/token/",
            {"username": "admin", "password": PASSWORD},
            format="json",
            HTTP_X_FORWARDED_FOR="198.51.100.2",
        )
        assert other.status_code == 200, "another client behind the same proxy is not throttled"
        again = client.post(
            "/api/auth/token/",
            {"username": "admin", "password": PASSWORD},
            format="json",
            HTTP_X_FORWARDED_FOR="10.0.0.9, 198.51.100.1",
        )
        assert again.status_code == 429, (
            "the entry the proxy added counts, not what the client wrote before it"
        )
    finally:
        for ip in ("198.51.100.1", "198.51.100.2"):
            cache.delete(f"throttle_login_{ip}")


def test_a_locked_out_account_is_told_so_and_until_when(client, users, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "reader", "password": "bad"})
    api = APIClient().post("/api/auth/token/", {"username": "reader", "password": PASSWORD}, format="json")
    assert api.status_code == 429
    detail = api.json()["detail"]
    minutes = round(settings.AXES_COOLOFF_TIME * 60)
    assert detail.startswith(f"This account is locked after {settings.AXES_FAILURE_LIMIT} failed logins")
    assert re.search(r"unlocks at \d\d:\d\d UTC \(in (\d+) minutes?\)", detail), detail
    assert int(re.search(r"\(in (\d+) minute", detail).group(1)) in (minutes - 1, minutes)
    assert 0 < int(api["Retry-After"]) <= minutes * 60
    page = client.post("/login/", {"username": "reader", "password": PASSWORD})
    assert page.status_code == 429
    text = page.content.decode()
    assert "This account is locked" in text and "unlocks at" in text and 'name="password"' in text
    second = APIClient().post("/api/auth/token/", {"username": "reader", "password": PASSWORD}, format="json")
    assert second.json()["detail"] == detail, "attempts during the lockout do not extend it"


def test_a_wrong_password_still_says_wrong_password(users):
    response = APIClient().post("/api/auth/token/", {"username": "reader", "password": "bad"}, format="json")
    assert response.status_code == 401 and response.json()["detail"] == "Unknown username or wrong password."


# ------------------------------------------------------------------------------------------------ last admin


def test_the_api_refuses_to_take_the_admin_role_or_active_flag_from_the_last_admin(users, client_for):
    admin = client_for("admin")
    target = users["admin"].pk
    for change in ({"roles": ["Annotator"]}, {"roles": []}, {"is_active": False}):
        response = admin.patch(f"/api/users/{target}/", change, format="json")
        assert response.status_code == 400, (change, response.content)
        assert "admin is the last active admin" in response.json()["detail"]
    users["admin"].refresh_from_db()
    assert users["admin"].is_active and users["admin"].groups.filter(name="Admin").exists()
    assert (
        admin.patch(f"/api/users/{users['norole'].pk}/", {"roles": ["Admin"]}, format="json").status_code
        == 200
    )
    handed_over = admin.patch(f"/api/users/{target}/", {"roles": ["Annotator"]}, format="json")
    assert handed_over.status_code == 200, "with a second admin the first may step down"
    second = APIClient()
    second.force_authenticate(users["norole"])
    refused = second.patch(f"/api/users/{users['norole'].pk}/", {"is_active": False}, format="json")
    assert refused.status_code == 400 and "norole is the last active admin" in refused.json()["detail"]


@pytest.fixture
def admin_web(users):
    web = Client()
    web.force_login(users["admin"])
    return web


def _change_form(user, **overrides) -> dict:
    data = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
        "groups": [str(g.pk) for g in user.groups.all()],
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_the_django_admin_keeps_the_last_admin(users, admin_web):
    me = users["admin"]
    url = f"/admin/auth/user/{me.pk}/change/"
    reader = str(Group.objects.get(name="Reader").pk)
    for change in ({"groups": [reader]}, {"is_active": None}):
        response = admin_web.post(url, _change_form(me, **change))
        assert response.status_code == 200, "the form comes back with the error"
        assert "admin is the last active admin" in response.content.decode()
    me.refresh_from_db()
    assert me.is_active and me.groups.filter(name="Admin").exists()
    deleted = admin_web.post(f"/admin/auth/user/{me.pk}/delete/", {"post": "yes"}, follow=True)
    assert "is the last active admin and cannot be deleted" in deleted.content.decode()
    assert type(me).objects.filter(pk=me.pk).exists()
    bulk = admin_web.post(
        "/admin/auth/user/",
        {"action": "delete_selected", "_selected_action": [str(me.pk)], "post": "yes"},
        follow=True,
    )
    assert type(me).objects.filter(pk=me.pk).exists(), bulk.content[:500]
    admin_group = Group.objects.get(name="Admin")
    group_delete = admin_web.post(f"/admin/auth/group/{admin_group.pk}/delete/", {"post": "yes"})
    assert group_delete.status_code == 403 and Group.objects.filter(name="Admin").exists()


def test_the_django_admin_keeps_a_superuser_who_is_the_last_admin(users, admin_web):
    me = users["admin"]
    me.is_superuser = True
    me.save()
    me.groups.clear()  # an admin by the superuser flag only
    response = admin_web.post(f"/admin/auth/user/{me.pk}/change/", _change_form(me))  # the flag unticked
    assert response.status_code == 200 and "admin is the last active admin" in response.content.decode()
    me.refresh_from_db()
    assert me.is_superuser
    kept = admin_web.post(
        f"/admin/auth/user/{me.pk}/change/", _change_form(me, is_superuser="on", first_name="Ada")
    )
    assert kept.status_code == 302, "other changes to the last admin are fine"


def test_the_django_admin_lets_an_admin_step_down_once_another_exists(users, admin_web):
    me = users["admin"]
    users["annotator"].groups.add(Group.objects.get(name="Admin"))
    annotator = str(Group.objects.get(name="Annotator").pk)
    response = admin_web.post(f"/admin/auth/user/{me.pk}/change/", _change_form(me, groups=[annotator]))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert list(me.groups.values_list("name", flat=True)) == ["Annotator"]


# ------------------------------------------------------------------------------------------------ headers, settings


def test_static_files_are_served_with_nosniff(client):
    response = client.get("/static/frontend/css/app.css")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/css")
    assert response["X-Content-Type-Options"] == "nosniff"


def test_the_static_file_header_function_adds_nosniff(settings):
    headers: dict = {}
    settings.WHITENOISE_ADD_HEADERS_FUNCTION(headers, "/x/app.js", "/static/app.js")
    assert headers == {"X-Content-Type-Options": "nosniff"}


def test_render_limits_come_from_the_environment(tmp_path):
    defaults = settings_in_subprocess(tmp_path)
    assert (defaults["DLA_RENDER_CONCURRENCY"], defaults["DLA_RENDER_THREADS"]) == (1, 1)
    assert (defaults["DLA_RENDER_WAIT_S"], defaults["DLA_RENDER_QUEUE"]) == (30.0, 2)
    tuned = settings_in_subprocess(
        tmp_path,
        DLA_RENDER_CONCURRENCY="3",
        DLA_RENDER_THREADS="2",
        DLA_RENDER_WAIT_S="2.5",
        DLA_RENDER_QUEUE="0",
        DLA_LOGIN_RATE="20/min",
    )
    assert (tuned["DLA_RENDER_CONCURRENCY"], tuned["DLA_RENDER_THREADS"]) == (3, 2)
    assert (tuned["DLA_RENDER_WAIT_S"], tuned["DLA_RENDER_QUEUE"]) == (2.5, 0)
    assert tuned["DLA_LOGIN_RATE"] == "20/min"
    bad = subprocess.run(
        [sys.executable, "-c", "import dla_web.settings"],
        cwd=REPO,
        env={**os.environ, "SECRET_KEY": "x" * 50, "DLA_RENDER_WAIT_S": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "DLA_RENDER_WAIT_S='soon' is not a number" in bad.stderr
    bad_rate = subprocess.run(
        [sys.executable, "-c", "import dla_web.settings"],
        cwd=REPO,
        env={**os.environ, "SECRET_KEY": "x" * 50, "DLA_LOGIN_RATE": "many"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_rate.returncode != 0 and "DLA_LOGIN_RATE='many' is not a rate" in bad_rate.stderr


def test_audit_rows_keep_the_client_address_a_trusted_proxy_saw(users, settings):
    """Behind DLA_TRUSTED_PROXIES the audit log names the client, not the proxy; without it a forged
    X-Forwarded-For is ignored."""
    forwarded = {"HTTP_X_FORWARDED_FOR": "198.51.100.7, 203.0.113.9", "REMOTE_ADDR": "10.0.0.2"}
    settings.TRUSTED_PROXIES = 1
    Client().post("/login/", {"username": "reader1", "password": "wrong"}, **forwarded)
    assert AuditEvent.objects.filter(action="auth.login_failed").latest("pk").ip == "203.0.113.9"
    settings.TRUSTED_PROXIES = 0
    Client().post("/login/", {"username": "reader1", "password": "wrong"}, **forwarded)
    assert AuditEvent.objects.filter(action="auth.login_failed").latest("pk").ip == "10.0.0.2"
