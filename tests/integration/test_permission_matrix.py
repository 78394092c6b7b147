"""The permission matrix: every endpoint of the OpenAPI schema, for every role. An endpoint missing from
ACCESS fails the suite, so a new endpoint cannot ship without a decision on who may call it."""

import re

import pytest
from drf_spectacular.generators import SchemaGenerator

PUBLIC = "public"
ANY_USER = {"norole", "annotator", "reader", "admin"}
ANY_ROLE = {"annotator", "reader", "admin"}
ANNOTATORS = {"annotator", "admin"}
ADMINS = {"admin"}
ROLES = ["anonymous", "norole", "annotator", "reader", "admin"]

# (path regex, method) -> roles allowed. Order matters: the first match wins.
ACCESS = [
    (r"^/api/schema/$", "GET", PUBLIC),
    (r"^/api/auth/token/$", "POST", PUBLIC),
    (r"^/api/auth/token/$", "DELETE", ANY_USER),
    (r"^/api/me/$", "GET", ANY_USER),
    (r"^/api/task-runs/selftest/$", "POST", ADMINS),
    (r"^/api/task-runs/", "*", ANY_ROLE),
    (r"^/api/users/", "*", ADMINS),
    (r"^/api/studies/\{id\}/$", "PUT", ADMINS),
    (r"^/api/studies/\{id\}/$", "PATCH", ADMINS),
    (r"^/api/studies/", "*", ANNOTATORS),
    (r"^/api/volumes/", "*", ANNOTATORS),
    (r"^/api/label-versions/\{id\}/review/$", "POST", ADMINS),
    (r"^/api/label-versions/", "*", ANNOTATORS),
    (r"^/api/drafts/", "*", ANNOTATORS),
]


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
