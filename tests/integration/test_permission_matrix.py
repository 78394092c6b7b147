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
