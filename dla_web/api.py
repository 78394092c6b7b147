"""API plumbing shared by all apps: the JSON error format ``{"detail": ...}`` for every error, including Django's
own 404/403 and validation errors, so clients always get a message that names the problem.
"""

import errno
import re

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


def first_message(errors, path: tuple = ()) -> tuple[tuple, str]:
    """The first message in DRF's nested error structure and where it sits: ``{"files": {0: ["empty"]}}`` ->
    (("files", 0), "empty"). Lists of messages are joined; messages come out as plain text (never a repr)."""
    if isinstance(errors, dict):
        if not errors:
            return path, ""
        key, value = next(iter(errors.items()))
        return first_message(value, path if key in ("detail", "non_field_errors") else (*path, key))
    if isinstance(errors, list | tuple):
        filled = [i for i, item in enumerate(errors) if item not in (None, "", [], {})]
        if not filled:
            return path, ""
        if all(isinstance(errors[i], str) for i in filled):
            return path, " ".join(str(errors[i]) for i in filled)
        index = filled[0]
        nested = isinstance(errors[index], dict | list) and len(errors) > 1
        return first_message(errors[index], (*path, index) if nested else path)
    return path, str(errors)


def error_text(errors) -> str:
    """One readable sentence for a DRF error structure, field first, list positions last:
    ``{"files": {0: ["The submitted file is empty."]}}`` -> "files: The submitted file is empty (item 1)."."""
    path, message = first_message(errors)
    fields = ".".join(str(key) for key in path if not isinstance(key, int))
    items = ", ".join(f"item {key + 1}" for key in path if isinstance(key, int))
    if items:
        message = f"{message.rstrip('.')} ({items})."
    return f"{fields}: {message}" if fields else message


OUR_PACKAGES = ("dla", "annotations", "inference", "evaluation", "reader_study", "dla_web")


def is_domain_error(exc: BaseException) -> bool:
    """A ValueError subclass raised by our own code: its message names the problem in words for the user."""
    return isinstance(exc, ValueError) and type(exc).__module__.split(".")[0] in OUR_PACKAGES


#: An absolute filesystem path (two or more components) not inside a word, a URL or a relative path; quotes and
#: whitespace end it (as Python's OSError and nibabel write file names).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~\\-])(?:/[^\s/'\"<>|]+){2,}/?")


def strip_paths(message: str) -> str:
    """``message`` with every absolute path on this server replaced by its last component (the file name the
    user gave, or the folder's): where uploads, storage and temporary folders live is nobody's business."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], str(message))


def readable_error(exc: BaseException) -> str:
    """The text a user sees for ``exc`` (a failed task's error): the message alone for domain and validation
    errors, never a class name or a list repr; unexpected errors keep their type for whoever debugs them. No
    absolute server path in any of them (``strip_paths``)."""
    if isinstance(exc, ValidationError):
        return strip_paths(" ".join(str(m) for m in exc.messages) or "invalid input")
    if isinstance(exc, exceptions.APIException):
        return strip_paths(error_text(exc.detail))
    if is_domain_error(exc):
        return strip_paths(str(exc))
    text = strip_paths(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    if is_domain_error(exc):
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
        response.data = {"detail": first_message(data["detail"])[1]}
    elif isinstance(data, dict | list):
        response.data = {"detail": error_text(data), "errors": data}
    if isinstance(exc, Conflict):
        response.data.update(exc.extra)
    return response
