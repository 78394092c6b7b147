"""The permission matrix: every endpoint of the OpenAPI schema, for every role. An endpoint missing from
ACCESS fails the suite, so a new endpoint cannot ship without a decision on who may call it."""

import re

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.access import core, evaluation, inference, reader_study
from tests.access.roles import PUBLIC

ROLES = ["anonymous", "norole", "annotator", "reader", "admin"]

# (path regex, method or "*", roles allowed), one file per app; the first match wins.
ACCESS = [*core.RULES, *inference.RULES, *reader_study.RULES, *evaluation.RULES]


def allowed_roles(path: str, method: str):
    for pattern, rule_method, roles in ACCESS:
        if re.match(pattern, path) and rule_method in ("*", method):
            return roles
    return None


def schema_operations():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, item in schema["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method.upper()


def test_every_endpoint_has_an_access_rule():
    missing = [
        f"{method} {path}" for path, method in schema_operations() if allowed_roles(path, method) is None
    ]
    assert not missing, "endpoints without a permission-matrix entry: " + ", ".join(missing)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix(role, client_for):
    client = client_for(None if role == "anonymous" else role)
    failures = []
    for path, method in schema_operations():
        roles = allowed_roles(path, method)
        url = re.sub(r"\{[^}]+\}", "999999", path)
        response = getattr(client, method.lower())(url, {}, format="json")
        code = response.status_code
        if code >= 500:
            failures.append(f"{role} {method} {path}: server error {code}")
        elif roles == PUBLIC:
            continue
        elif role == "anonymous":
            if code not in (401, 403):
                failures.append(f"anonymous {method} {path}: {code}, expected 401/403")
        elif role in roles and code in (401, 403):
            failures.append(f"{role} {method} {path}: refused ({code}) but the role is allowed")
        elif role not in roles and code != 403:
            failures.append(f"{role} {method} {path}: {code}, expected 403")
        if code in (401, 403, 404) and "detail" not in response.json():
            failures.append(f"{role} {method} {path}: error without a detail message")
    assert not failures, "\n".join(failures)


def _readme_role_row(role: str) -> str:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith(f"| {role} |")]
    assert len(rows) == 1, f"README's role table has no single row for {role}"
    return rows[0].lower()


def test_readme_role_table_agrees_with_the_rules_for_import_and_inference():
    """Annotators may import data and run inference (a research team's annotators bring their own cases and
    look at the model's output); the README's role table says so, and the Admin row does not claim them."""
    assert "annotator" in allowed_roles("/api/studies/import/", "POST")
    assert "annotator" in allowed_roles("/api/inference/", "POST")
    assert "admin" in allowed_roles("/api/studies/import/", "POST")
    annotator, admin = _readme_role_row("Annotator"), _readme_role_row("Admin")
    assert "import data" in annotator and "run inference" in annotator
    assert "import" not in admin and "run inference" not in admin
    for admin_only in ("/api/training-runs/", "/api/evaluations/", "/api/users/", "/api/dicomweb/"):
        assert allowed_roles(admin_only, "GET") == {"admin"}, admin_only
    assert "train" in admin and "evaluation" in admin and "manage users" in admin and "pacs" in admin
