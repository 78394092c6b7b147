"""Who is asking: the client's address behind ``DLA_TRUSTED_PROXIES`` reverse proxies, one definition for the
audit log, the login throttle and the lockout (django-axes' ``AXES_CLIENT_IP_CALLABLE``)."""

from django.conf import settings


def client_ip(request) -> str:
    """The client's address: ``REMOTE_ADDR``, or behind ``DLA_TRUSTED_PROXIES`` proxies the X-Forwarded-For
    entry that many from the right (what the nearest trusted proxy saw; entries further left are the client's
    word and can be forged)."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    proxies = getattr(settings, "TRUSTED_PROXIES", 0)
    if proxies:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-min(proxies, len(forwarded))]
    return remote
