"""Smoke test of `make run`'s embedded defaults: with no DATABASE_URL and no broker URL the app migrates into a
SQLite file, serves /api/schema/ and the login page, and its filesystem-broker worker finishes a task."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import WORKER_ARGV

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def embedded_env(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        DEBUG="0",  # as scripts/run.sh runs it: no technical error pages, a generated secret key
        SECRET_KEY="smoke-test-secret-key-generated-once-by-run-sh-0123456789",
        DLA_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="dla_web.settings",
    )
    return env


def test_embedded_defaults_boot_and_run_a_task(embedded_env):
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=REPO, env=embedded_env, check=True)
    password_file = Path(embedded_env["DLA_VAR_DIR"]) / "demo-password"
    password_file.write_text("smoke-test-pass\n")
    out = subprocess.run(
        [*manage, "createdemo", "--password-file", str(password_file), "--no-data"],
        cwd=REPO,
        env=embedded_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "admin" in out and "smoke-test-pass" in out
    assert (Path(embedded_env["DLA_VAR_DIR"]) / "dla.sqlite3").exists()
    port = free_port()
    web = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=REPO,
        env=embedded_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [*WORKER_ARGV, "--loglevel", "WARNING"],
        cwd=REPO,
        env=embedded_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        status, body, deadline = None, b"", time.monotonic() + 180  # a hang guard only: startup may be slow
        while status is None:
            assert time.monotonic() < deadline and web.poll() is None, "the web server did not start"
            try:
                status, body = get(f"{base}/api/schema/")
            except OSError:
                time.sleep(0.2)
        assert status == 200 and b"DLA Workbench API" in body
        status, body = get(f"{base}/login/")
        assert status == 200 and b"Log in" in body
        status, body = get(f"{base}/no-such-page/")  # anonymous: the friendly 404, no URL pattern listing
        assert status == 404 and b"URLconf" not in body and b"Traceback" not in body
        status, body = get(
            f"{base}/api/auth/token/",
            {"Content-Type": "application/json"},
            json.dumps({"username": "admin", "password": "smoke-test-pass"}).encode(),
        )
        assert status == 200
        auth = {"Authorization": f"Token {json.loads(body)['token']}", "Content-Type": "application/json"}
        status, body = get(
            f"{base}/api/task-runs/selftest/", auth, json.dumps({"steps": 3, "step_s": 0.05}).encode()
        )
        assert status == 202
        run_id = json.loads(body)["id"]
        state, deadline = None, time.monotonic() + 180  # a hang guard only: the worker may start slowly
        while time.monotonic() < deadline:
            state = json.loads(get(f"{base}/api/task-runs/{run_id}/", auth)[1])["state"]
            if state in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        assert state == "succeeded"
    finally:
        web.terminate()
        worker.terminate()
        web.wait(10)
        worker.wait(20)


def test_invalid_setting_fails_at_start_naming_the_variable(embedded_env):
    for name, value in [
        ("DEBUG", "perhaps"),
        ("DATABASE_URL", "notadb://x"),
        ("DLA_STORAGE_BACKEND", "tape"),
    ]:
        env = dict(embedded_env, **{name: value})
        result = subprocess.run(
            [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert result.returncode != 0
        assert name in result.stderr, result.stderr[-500:]
    env = dict(embedded_env, DEBUG="0")
    env.pop("SECRET_KEY")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "SECRET_KEY is not set" in result.stderr
