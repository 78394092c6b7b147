"""Permission-matrix rules of the evaluation app: (path regex, method or "*", allowed roles); first match wins."""

from tests.access.roles import ADMINS, ANNOTATORS, ANY_ROLE, ANY_USER, PUBLIC, READERS  # noqa: F401

RULES: list = []
