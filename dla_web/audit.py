"""The audit log: who did what, when, to which object, from where. Append-only: rows are only ever inserted
(the admin shows them read-only, there is no API to change them, and on PostgreSQL a trigger refuses UPDATE and
DELETE). Never store PHI here: objects are named by type, id and pseudonym only."""

import contextvars
import logging

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from .client import client_ip
from .models import AuditEvent

logger = logging.getLogger(__name__)
_current_request: contextvars.ContextVar = contextvars.ContextVar("dla_audit_request", default=None)


class RequestContextMiddleware:
    """Makes the current request known to ``record`` calls that do not pass one (model signals fired by the
    Django admin or the API), so every event names the acting user and address."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


def _ip(request) -> str:
    """The client's address as the audit row keeps it (behind a trusted proxy the address it saw, not its own)."""
    return "" if request is None else client_ip(request)[:64]


def record(action: str, *, user=None, request=None, obj=None, detail: dict | None = None) -> AuditEvent:
    """Append one event. ``user`` defaults to the request's user; ``obj`` is any model instance (type + id +
    its ``pseudonym``/``str`` are kept, not its content). Without ``request`` the request being served (if
    any) is used."""
    if request is None:
        request = _current_request.get()
    if user is None and request is not None and getattr(request, "user", None) is not None:
        user = request.user if request.user.is_authenticated else None
    return AuditEvent.objects.create(
        action=action,
        user=user if (user is not None and getattr(user, "is_authenticated", False)) else None,
        username=getattr(user, "username", "") or "",
        ip=_ip(request),
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=(getattr(obj, "pseudonym", None) or str(obj))[:200] if obj is not None else "",
        detail=detail or {},
    )


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    record("auth.login", user=user, request=request)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        record("auth.logout", user=user, request=request)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    AuditEvent.objects.create(
        action="auth.login_failed",
        username=str(credentials.get("username", ""))[:150],
        ip=_ip(request),
    )
