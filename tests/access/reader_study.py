"""Permission-matrix rules of the reader_study app: (path regex, method or "*", allowed roles); first match wins.

Admins design studies and see results and exports; readers see only the blinded reading endpoints (and within
them only their own assignments: another reader's token is a 404, tested in test_reader_api)."""

from tests.access.roles import ADMINS, ANNOTATORS, ANY_ROLE, ANY_USER, PUBLIC, READERS  # noqa: F401

RULES: list = [
    (r"^/api/reader-studies/", "*", ADMINS),
    (r"^/api/reading-studies/", "*", READERS),
    (r"^/api/reading/", "*", READERS),
]
