"""Security plumbing not covered by Django's own: a Content-Security-Policy that forbids inline scripts and every
third-party origin (pages load ES modules from our static files only); the session timeouts (idle and absolute);
the
throttle of ``POST /api/auth/token/``; the lockout refusal that says until when; and the password validator that
refuses a password containing the username ("reader3reader3")."""

import math
import time
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.utils import timezone
from rest_framework.throttling import SimpleRateThrottle

from .client import client_ip

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self' data:",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
# Swagger UI's page (drf-spectacular) boots with one inline script; it shows only the public schema.
CSP_DOCS = CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = CSP_DOCS if request.path.startswith("/api/docs") else CSP
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        return response


# ------------------------------------------------------------------------------------------------ sessions

LOGIN_AT = (
    "dla_login_at"  # session keys: when the session was signed in, when it was last used (epoch seconds)
)
SEEN_AT = "dla_seen_at"


def _touch_interval_s() -> float:
    """The last-use stamp is rewritten at most this often (one session write a minute, not one per slice)."""
    return min(60.0, settings.SESSION_IDLE_TIMEOUT_S / 10)


def start_session_clock(request) -> None:
    """At login: the session's absolute and idle clocks start now."""
    session = getattr(request, "session", None)
    if session is not None:
        session[LOGIN_AT] = session[SEEN_AT] = time.time()


def _minutes(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes % 60 == 0 and minutes >= 60:
        hours = minutes // 60
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class SessionTimeoutMiddleware:
    """Ends a signed-in browser session after ``SESSION_IDLE_TIMEOUT_S`` without a request
    (``DLA_SESSION_IDLE_MINUTES``) or ``SESSION_MAX_AGE_S`` after its login (``DLA_SESSION_MAX_HOURS``), whichever
    comes first: the user is logged out (audited as ``auth.session_expired``), a page says why on the login
    form, an API call gets a 401 saying why. Token-authenticated API calls carry no session and are not
    affected (their keys expire by ``DLA_API_TOKEN_DAYS``)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.contrib.auth import SESSION_KEY

        session = getattr(request, "session", None)
        if session is not None and SESSION_KEY in session:
            expired = self._check(request, session)
            if expired and request.path.startswith("/api/"):
                return JsonResponse({"detail": expired}, status=401)
        return self.get_response(request)

    def _check(self, request, session) -> str:
        now = time.time()
        login_at = session.get(LOGIN_AT)
        seen_at = session.get(SEEN_AT)
        if not isinstance(login_at, int | float):  # a session signed in before this middleware existed
            session[LOGIN_AT] = session[SEEN_AT] = now
            return ""
        idle, maximum = settings.SESSION_IDLE_TIMEOUT_S, settings.SESSION_MAX_AGE_S
        reason = ""
        if isinstance(seen_at, int | float) and now - seen_at > idle:
            reason = f"Your session ended after {_minutes(idle)} without activity; please log in again."
            kind = "idle"
        elif now - login_at > maximum:
            reason = f"Your session ended {_minutes(maximum)} after you logged in; please log in again."
            kind = "maximum"
        if reason:
            self._end(request, kind, now - (seen_at or now), now - login_at, reason)
            return reason
        if not isinstance(seen_at, int | float) or now - seen_at >= _touch_interval_s():
            session[SEEN_AT] = now
        return ""

    @staticmethod
    def _end(request, kind: str, idle_s: float, age_s: float, reason: str) -> None:
        from django.contrib import messages
        from django.contrib.auth import logout

        from .audit import record

        record(
            "auth.session_expired",
            user=request.user,
            request=request,
            detail={"reason": kind, "idle_s": round(idle_s), "age_s": round(age_s)},
        )
        logout(request)
        if not request.path.startswith("/api/"):
            messages.warning(request, reason)


# ------------------------------------------------------------------------------------------------ logins


def locked_until(request, username: str) -> datetime | None:
    """When the login lockout of ``username`` from this client's address ends (the last counted failure plus
    the cool-off; None when locks never end by themselves). Call it for a locked account only."""
    from axes.helpers import get_cool_off
    from axes.models import AccessAttempt
    from django.db.models import Max

    cool_off = get_cool_off(request)
    if not cool_off:
        return None
    latest = AccessAttempt.objects.filter(username=username, ip_address=client_ip(request)).aggregate(
        at=Max("attempt_time")
    )["at"]
    return (latest or timezone.now()) + cool_off


def lockout_message(until: datetime | None) -> str:
    limit = settings.AXES_FAILURE_LIMIT
    text = f"This account is locked after {limit} failed logins from your address"
    if until is None:
        return f"{text}; ask an admin to unlock it."
    minutes = max(1, math.ceil((until - timezone.now()).total_seconds() / 60))
    return (
        f"{text}. It unlocks at {until.astimezone(timezone.get_current_timezone()):%H:%M} "
        f"{timezone.get_current_timezone_name()} (in {minutes} minute{'s' if minutes != 1 else ''}); "
        "an admin can unlock it sooner."
    )


def retry_after(until: datetime | None) -> str:
    """The Retry-After value (seconds) of a lockout ending at ``until`` (an hour for one that never ends)."""
    return str(max(1, math.ceil((until - timezone.now()).total_seconds()))) if until else "3600"


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' refusal of a locked-out login (429): the login page again with the reason and the time it
    unlocks, or JSON ``{"detail": ...}`` under /api/."""
    from django.shortcuts import render

    username = str((credentials or {}).get("username") or request.POST.get("username", ""))
    until = locked_until(request, username)
    message = lockout_message(until)
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    else:
        response = render(
            request, "frontend/login.html", {"locked": message, "username": username}, status=429
        )
    response["Retry-After"] = retry_after(until)
    return response


class LoginRateThrottle(SimpleRateThrottle):
    """At most ``DLA_LOGIN_RATE`` password checks (requests with a text username and password) per client
    address on ``POST /api/auth/token/``, whatever the usernames: one address cannot spray passwords over
    many accounts (the lockout counts per username + address). Counted in Django's cache (per web process)."""

    scope = "login"

    def get_rate(self):
        return settings.DLA_LOGIN_RATE

    def get_cache_key(self, request, view):
        data = request.data
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("username", "password")
        ):
            return None  # refused with a 400 before any password is checked
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request)}


# ------------------------------------------------------------------------------------------------ passwords


class UsernameInPasswordValidator:
    """Refuses a password that contains the username (any case): "reader3reader3" for reader3, which Django's
    similarity check lets through (the ratio of a doubled name is 2/3, under its 0.7)."""

    def validate(self, password, user=None):
        username = str(getattr(user, "username", "") or "").casefold()
        if len(username) >= 3 and username in password.casefold():
            raise ValidationError(
                "This password contains the username; choose one that does not.",
                code="password_contains_username",
            )

    def get_help_text(self):
        return "Your password can’t contain your username."
