"""Typed readers of environment variables that fail at start with a message naming the variable.

Settings come from the environment only (twelve-factor); these helpers turn a malformed value into an
``ImproperlyConfigured`` error that says which variable is wrong and what it expected.
"""

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off."
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.")
    if value != value or value in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number.")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}.")
    return value


def env_rate(name: str, default: str) -> str:
    """A request rate ``N/unit`` (unit: s, min, hour or day; DRF's throttle notation), e.g. ``10/min``."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    count, _, unit = raw.strip().partition("/")
    if not count.isdigit() or int(count) < 1 or unit not in ("s", "sec", "min", "m", "hour", "h", "day", "d"):
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a rate; write it as N/unit, e.g. 10/min (s, min, hour, day)."
        )
    return f"{int(count)}/{unit}"


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]
