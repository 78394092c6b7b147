"""Permission-matrix rules of the inference app: (path regex, method or "*", allowed roles); first match wins.

Admins train models and change the registry (upload, activate, rename, download weights); annotators may see
the registry, run inference on studies and see which study to label next; readers get nothing here (a reader
must not learn about methods)."""

from tests.access.roles import ADMINS, ANNOTATORS, ANY_ROLE, ANY_USER, PUBLIC, READERS  # noqa: F401

RULES: list = [
    (r"^/api/models/$", "GET", ANNOTATORS),
    (r"^/api/models/\{id\}/$", "GET", ANNOTATORS),
    (r"^/api/models/", "*", ADMINS),  # PATCH, activate, download, upload
    (r"^/api/training-runs/", "*", ADMINS),
    (r"^/api/inference/$", "POST", ANNOTATORS),
    (r"^/api/label-priorities/$", "GET", ANNOTATORS),  # which study to label next (IsAnnotator)
]
