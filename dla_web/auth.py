"""API keys that an admin cannot read: ``issue_token`` returns a random key once and stores only its sha256;
``HashedTokenAuthentication`` checks ``Authorization: Token <key>`` against the hash, refusing revoked or expired
keys and inactive users; ``revoke_tokens`` ends every key of a user. Signal receivers revoke a user's keys when
their password, roles, superuser/staff flags or active flag change, and audit those changes with before/after
values and the acting user (from ``dla_web.audit``'s request context), whether made in the API or the Django
admin. Issue, first use per ``USE_AUDIT_INTERVAL``, and revoke are audited too. A login starts the session's
idle and absolute clocks (``dla_web.security.SessionTimeoutMiddleware``)."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import m2m_changed, post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from .audit import record
from .models import ApiToken

USE_AUDIT_INTERVAL = timedelta(minutes=15)
WATCHED_FIELDS = ("username", "is_active", "is_staff", "is_superuser")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_token(user, *, request=None) -> tuple[str, ApiToken]:
    """A new API key for ``user``: (the key, shown to the caller once; its row, which holds only the hash)."""
    key = secrets.token_urlsafe(32)
    days = getattr(settings, "API_TOKEN_DAYS", 30)
    token = ApiToken.objects.create(
        user=user, key_sha256=_digest(key), prefix=key[:8], expires_at=timezone.now() + timedelta(days=days)
    )
    record(
        "token.issue",
        user=user,
        request=request,
        obj=token,
        detail={"expires_at": token.expires_at.isoformat()},
    )
    return key, token


def revoke_tokens(user, reason: str, *, request=None, tokens=None) -> int:
    """Revoke ``tokens`` (default: every live key of ``user``) with ``reason``; audited; returns how many."""
    live = (tokens if tokens is not None else ApiToken.objects.filter(user=user)).filter(
        revoked_at__isnull=True
    )
    ids = list(live.values_list("pk", flat=True))
    if ids:
        ApiToken.objects.filter(pk__in=ids).update(revoked_at=timezone.now(), revoked_reason=reason[:100])
        record("token.revoke", user=None, request=request, obj=user, detail={"tokens": ids, "reason": reason})
    return len(ids)


class HashedTokenAuthentication(BaseAuthentication):
    """``Authorization: Token <key>``: a live key's user, or 401 naming why (unknown, expired, revoked)."""

    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: send 'Token <key>'.")
        try:
            key = parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token header: the key is not text.")
        token = ApiToken.objects.select_related("user").filter(key_sha256=_digest(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed(
                f"Invalid token: revoked ({token.revoked_reason}); get a new one."
            )
        if token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("Invalid token: expired; get a new one.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > USE_AUDIT_INTERVAL:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            record("token.use", user=token.user, request=request, obj=token)
        request.api_token = token
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword


# ------------------------------------------------------------------------------ user changes: audit + revoke


@receiver(user_logged_in)
def _start_session_clock(sender, request, user, **kwargs):
    from .security import start_session_clock

    start_session_clock(request)


User = get_user_model()


@receiver(pre_save, sender=User)
def _remember_user_before(sender, instance, **kwargs):
    old = sender.objects.filter(pk=instance.pk).first() if instance.pk else None
    instance._audit_before = (
        {**{f: getattr(old, f) for f in WATCHED_FIELDS}, "password": old.password}
        if old is not None
        else None
    )


@receiver(post_save, sender=User)
def _audit_user_change(sender, instance, created, **kwargs):
    before = getattr(instance, "_audit_before", None)
    after = {f: getattr(instance, f) for f in WATCHED_FIELDS}
    if created or before is None:
        record("user.create", obj=instance, detail={"after": after})
        return
    changed = {f: {"before": before[f], "after": after[f]} for f in WATCHED_FIELDS if before[f] != after[f]}
    password_changed = before["password"] != instance.password
    if password_changed:
        record("user.password", obj=instance, detail={"changed": True})
    if changed:
        record("user.change", obj=instance, detail=changed)
    reasons = [f for f in ("is_active", "is_staff", "is_superuser") if f in changed]
    if password_changed:
        reasons.insert(0, "password")
    if reasons:
        revoke_tokens(instance, f"{', '.join(reasons)} changed")
    instance._audit_before = {**after, "password": instance.password}


@receiver(m2m_changed, sender=User.groups.through)
def _audit_role_change(sender, instance, action, reverse, pk_set, **kwargs):
    if reverse or action not in (
        "pre_add",
        "pre_remove",
        "pre_clear",
        "post_add",
        "post_remove",
        "post_clear",
    ):
        return
    if action.startswith("pre_"):
        instance._roles_before = sorted(instance.groups.values_list("name", flat=True))
        return
    before = getattr(instance, "_roles_before", None)
    after = sorted(instance.groups.values_list("name", flat=True))
    if before is not None and before != after:
        record("user.roles", obj=instance, detail={"before": before, "after": after})
        revoke_tokens(instance, "roles changed")
