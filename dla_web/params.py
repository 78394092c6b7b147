"""Query parameters of list endpoints, validated in one place: an id filter is a positive integer that fits the
database's 64-bit keys, anything else is a 400 naming the parameter and the value (never a 500)."""

from rest_framework.exceptions import ValidationError

MAX_ID = 2**63 - 1


def id_param(request, name: str) -> int | None:
    """The integer value of query parameter ``name`` (``?study=12``), None when it is absent or empty; a 400
    with the reason when it is not an id."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or int(text) < 1 or int(text) > MAX_ID:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ValidationError({"detail": f"{name} must be a positive integer id, got {shown!r}"})
    return int(text)
