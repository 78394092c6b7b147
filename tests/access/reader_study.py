"""Permission-matrix rules of the reader_study app: (path regex, method or "*", allowed roles); first match wins."""

from tests.access.roles import ADMINS, ANNOTATORS, ANY_ROLE, ANY_USER, PUBLIC, READERS  # noqa: F401

RULES: list = []
