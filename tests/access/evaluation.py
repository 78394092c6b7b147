"""Permission-matrix rules of the evaluation app: (path regex, method or "*", allowed roles); first match wins.

Evaluations (launch, results, downloads, comparisons) are for admins only: annotators need not see how models
score, and readers must not learn anything about the methods they compare blindly."""

from tests.access.roles import ADMINS, ANNOTATORS, ANY_ROLE, ANY_USER, PUBLIC, READERS  # noqa: F401

RULES: list = [
    (r"^/api/evaluations/", "*", ADMINS),
]
