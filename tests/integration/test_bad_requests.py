"""Hostile or malformed requests are 400s with a JSON message naming the problem, never a 5xx: id filters that
are not ids (letters, 30 digits), JSON bodies nested 100,000 deep, integers of 400 digits, NaN/Infinity, bodies
over the 10 MB limit (a JSON 400 naming it under /api/, the error page elsewhere)."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", ["abc", "1" * 30, "-3", "0", "１２"])
@pytest.mark.parametrize(
    "path, name",
    [
        ("/api/evaluations/", "model_version"),
        ("/api/volumes/", "study"),
        ("/api/label-versions/", "study"),
        ("/api/drafts/", "study"),
    ],
)
def test_id_filters_that_are_not_ids_are_400s(client_for, value, path, name):
    response = client_for("admin").get(path, {name: value})
    assert response.status_code == 400, response.content
    assert f"{name} must be a positive integer id" in response.json()["detail"]


def test_an_id_filter_still_filters(client_for):
    response = client_for("admin").get("/api/evaluations/", {"model_version": "12345"})
    assert response.status_code == 200 and response.json()["count"] == 0


@pytest.mark.parametrize(
    "body, message",
    [
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
        ('{"steps": ' + "9" * 400 + "}", "is too large"),
        ('{"steps": 1e400}', "too large for a float"),
        ('{"steps": NaN}', "NaN is not allowed"),
        ('{"steps": Infinity}', "Infinity is not allowed"),
        ('{"steps": ', "JSON parse error"),
        (b'{"steps": "\xff"}', "not valid utf-8"),
    ],
    ids=["deep", "huge-int", "huge-float", "nan", "infinity", "truncated", "not-utf8"],
)
def test_hostile_json_bodies_are_400s_naming_the_problem(client_for, body, message):
    response = client_for("admin").post("/api/task-runs/selftest/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert message in response.json()["detail"]


def test_ordinary_json_still_parses(client_for):
    response = client_for("admin").post(
        "/api/task-runs/selftest/", {"steps": 2, "step_s": 0.01}, format="json"
    )
    assert response.status_code == 202, response.content


def test_failed_task_errors_are_words_not_class_names_or_reprs():
    from django.core.exceptions import ValidationError as DjangoValidationError
    from rest_framework.exceptions import ValidationError

    from dla.labeling.roi import RoiBoxError
    from dla_web.api import readable_error

    django_error = readable_error(DjangoValidationError(["patient P1 already has study S2 in cohort test"]))
    assert django_error == "patient P1 already has study S2 in cohort test"
    drf_error = readable_error(ValidationError({"files": {0: ["The submitted file is empty."]}}))
    assert (
        "ErrorDetail" not in drf_error and "[" not in drf_error and "The submitted file is empty" in drf_error
    )
    assert readable_error(RoiBoxError("ROI box [1] is not six numbers")) == "ROI box [1] is not six numbers"
    assert readable_error(KeyError("x")) == "KeyError: 'x'", "unexpected errors keep their type for debugging"
    # no task error shows where the server keeps its files (training, inference, ingest alike)
    leaked = readable_error(RuntimeError("cannot read /srv/dla/var/checkpoints/run-12.pt: bad zip"))
    assert leaked == "RuntimeError: cannot read run-12.pt: bad zip"
    assert readable_error(RoiBoxError("see http://pacs:8042/dicom-web/studies")).endswith(
        "/dicom-web/studies"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"username": True, "password": "x"},
        {"username": "admin"},
        {"username": ["a"], "password": 1},
        {"username": "\x00admin", "password": "x"},  # found by the fuzzer: PostgreSQL refuses NUL in text
        {"username": "admin", "password": "pw\x00"},
    ],
)
def test_token_requests_with_non_text_credentials_are_400s(body):
    from rest_framework.test import APIClient

    response = APIClient().post("/api/auth/token/", body, format="json")
    assert response.status_code == 400 and "username and password as text" in response.json()["detail"]


OVER_10_MB = 10 * 1024 * 1024 + 1


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/json", b'{"steps": "' + b"9" * OVER_10_MB + b'"}'),
        ("application/x-www-form-urlencoded", b"steps=" + b"9" * OVER_10_MB),
    ],
    ids=["json", "form"],
)
def test_an_api_body_over_the_limit_is_a_json_400_naming_the_limit(client_for, content_type, body):
    client = client_for("admin")
    client.raise_request_exception = False
    response = client.post("/api/task-runs/selftest/", body, content_type=content_type)
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert "larger than the 10 MB limit" in response.json()["detail"]


def test_a_page_body_over_the_limit_gets_the_friendly_error_page(users):
    from django.test import Client

    client = Client(raise_request_exception=False)
    client.force_login(users["annotator"])
    body = "username=a&password=" + "x" * OVER_10_MB
    response = client.post("/login/", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert 'data-testid="error-page"' in text and "larger than the 10 MB limit" in text
    assert 'data-testid="whoami"' in text, "the page keeps the navigation"


def test_django_refusals_of_a_request_read_as_words():
    from django.contrib.sessions.exceptions import SessionInterrupted
    from django.core.exceptions import TooManyFieldsSent, TooManyFilesSent

    from frontend.views import _bad_request_reason

    assert "logged out elsewhere" in _bad_request_reason(SessionInterrupted())
    assert "files (the limit)" in _bad_request_reason(TooManyFilesSent())
    assert "form fields (the limit)" in _bad_request_reason(TooManyFieldsSent())
