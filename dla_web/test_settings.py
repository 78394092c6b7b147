"""Settings for the test suite: the real settings with test defaults for PostgreSQL (Unix socket, peer/trust
auth as the current OS user) and a Redis broker, and a fast password hasher. Environment variables win.

Each test session gets its own test database, broker key prefix and var/ folder (``DLA_TEST_SESSION``, the
pytest process id, inherited by the worker subprocess), so concurrent sessions never see each other's data.
"""

import os

_session = os.environ.setdefault("DLA_TEST_SESSION", str(os.getpid()))
os.environ.setdefault("DATABASE_URL", "postgres:///dla?host=/var/run/postgresql")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault(
    "DLA_VAR_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "var", "test", _session)
)

from .settings import *  # noqa: E402,F403

DATABASES["default"]["TEST"] = {"NAME": f"test_dla_{_session}"}  # noqa: F405
CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = f"dla-test-{_session}:"  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405
WHITENOISE_USE_FINDERS = True
