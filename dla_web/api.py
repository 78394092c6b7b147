"""API plumbing shared by all apps: the JSON error format ``{"detail": ...}`` for every error, including Django's
own 404/403 and validation errors, so clients always get a message that names the problem.
"""

import errno

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object changed since you loaded it."
    default_code = "conflict"

    def __init__(self, detail=None, *, extra: dict | None = None):
        super().__init__(detail)
        self.extra = extra or {}


def _disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps: pydicom re-raises I/O errors with the errno only in the text) is a
    'no space left on device' error."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or f"[Errno {errno.ENOSPC}]" in str(exc)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def exception_handler(exc, context):
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        # The database went away mid-request: the transaction was rolled back, so nothing was saved.
        return Response(
            {"detail": "The database connection was lost; nothing was saved. Please try again."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    if _disk_full(exc):
        return Response(
            {
                "detail": "The server ran out of disk space while writing; nothing was kept. Please tell an admin."
            },
            status=status.HTTP_507_INSUFFICIENT_STORAGE,
        )
    if isinstance(exc, ValidationError) and not isinstance(exc, exceptions.ValidationError):
        exc = exceptions.ValidationError(detail={"detail": exc.messages[0] if exc.messages else str(exc)})
    if isinstance(exc, ValueError) and type(exc).__module__.split(".")[0] in (
        "dla",
        "annotations",
        "inference",
        "evaluation",
        "reader_study",
        "dla_web",
    ):
        # Domain errors from the numeric core carry a message that names the problem.
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and "detail" in data and len(data) == 1:
        pass
    elif isinstance(data, dict):
        first_field, first_error = next(iter(data.items()), ("", ""))
        message = first_error[0] if isinstance(first_error, list) and first_error else first_error
        response.data = {
            "detail": f"{first_field}: {message}" if first_field != "detail" else message,
            "errors": data,
        }
    elif isinstance(data, list):
        response.data = {"detail": "; ".join(str(item) for item in data), "errors": data}
    if isinstance(exc, Conflict):
        response.data.update(exc.extra)
    return response
