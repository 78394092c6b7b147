"""Django settings for DLA Workbench, read from the environment.

Embedded defaults (SQLite file, a filesystem Celery broker, files under ``var/``) make ``make run`` work on a
fresh machine with no servers; production sets ``DATABASE_URL`` (PostgreSQL), ``CELERY_BROKER_URL`` (Redis),
``SECRET_KEY``, ``ALLOWED_HOSTS`` and optionally S3 storage. A malformed variable stops the start with a
message that names it (see ``dla_web.env``).
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_list, env_rate, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("DLA_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is not set; set it (or DEBUG=1 for a local development key).")
    SECRET_KEY = "insecure-development-key-only-for-DEBUG"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "dla_web",
    "annotations",
    "inference",
    "reader_study",
    "evaluation",
    "frontend",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "dla_web.security.SessionTimeoutMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dla_web.security.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",
    "dla_web.audit.RequestContextMiddleware",
]

ROOT_URLCONF = "dla_web.urls"
WSGI_APPLICATION = "dla_web.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dla_web.roles.role_context",
                "frontend.context_processors.tissue_classes",
            ],
        },
    },
]

_default_db = f"sqlite:///{VAR_DIR / 'dla.sqlite3'}"
try:
    DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL", _default_db), conn_max_age=60)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}")
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # login throttling: refuses after AXES_FAILURE_LIMIT failures
    "django.contrib.auth.backends.ModelBackend",
    "dla_web.backends.AdminRoleBackend",
]
AXES_FAILURE_LIMIT = env_int("DLA_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("DLA_LOGIN_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# A locked account's further attempts do not extend the lock, so "unlocks at" in the refusal stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "dla_web.client.client_ip"  # honours DLA_TRUSTED_PROXIES, like the API throttle
AXES_LOCKOUT_CALLABLE = (
    "dla_web.security.lockout_response"  # the login page saying until when, not plain text
)
# POST /api/auth/token/ (password checks) per client address, across usernames; the lockout above is per
# username + address. Counted per web process (Django's local-memory cache).
DLA_LOGIN_RATE = env_rate("DLA_LOGIN_RATE", "10/min")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "dla_web.security.UsernameInPasswordValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("DLA_PASSWORD_MIN_LENGTH", 12, minimum=8)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGE_ROOT = Path(env_str("DLA_STORAGE_ROOT", str(VAR_DIR / "storage")))
_storage_backend = env_str("DLA_STORAGE_BACKEND", "filesystem")
if _storage_backend == "filesystem":
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(STORAGE_ROOT), "base_url": None},
    }
elif _storage_backend == "s3":
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("DLA_S3_BUCKET", ""),
            "endpoint_url": env_str("DLA_S3_ENDPOINT_URL", "") or None,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
    if not _default_storage["OPTIONS"]["bucket_name"]:
        raise ImproperlyConfigured("DLA_STORAGE_BACKEND=s3 needs DLA_S3_BUCKET.")
else:
    raise ImproperlyConfigured(f"DLA_STORAGE_BACKEND={_storage_backend!r} must be 'filesystem' or 's3'.")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}


def _static_file_headers(headers, path, url):
    """WhiteNoise answers static files itself: nosniff on each, even were its middleware moved above Django's
    SecurityMiddleware (which adds it to every other response)."""
    headers["X-Content-Type-Options"] = "nosniff"


WHITENOISE_ADD_HEADERS_FUNCTION = _static_file_headers
# Volumes are memory-mapped from a local path; with S3 this directory is a read-through cache.
VOLUME_CACHE_DIR = Path(env_str("DLA_VOLUME_CACHE_DIR", str(STORAGE_ROOT)))
# Uploads wait here for the ingest worker (shared by web and workers; never served over HTTP).
UPLOAD_DIR = Path(env_str("DLA_UPLOAD_DIR", str(STORAGE_ROOT / "uploads")))
DLA_KEEP_PSEUDONYM_MAP = env_bool("DLA_KEEP_PSEUDONYM_MAP", False)
# processes per training run (DDP): 0 = one per visible CUDA GPU (1 without CUDA); N > 1 = N ranks (gloo on CPU)
DLA_TRAIN_PROCESSES = env_int("DLA_TRAIN_PROCESSES", 0, minimum=0)
# MIP renders per web process (annotations.mip_cache): renders at once, torch threads per render, how long a
# request waits for a render slot (then 503), and how many more may wait; the per-process caches' sizes.
DLA_RENDER_CONCURRENCY = env_int("DLA_RENDER_CONCURRENCY", 1, minimum=1)
DLA_RENDER_THREADS = env_int("DLA_RENDER_THREADS", 1, minimum=1)
DLA_RENDER_WAIT_S = env_float("DLA_RENDER_WAIT_S", 30.0, minimum=0.0)
DLA_RENDER_QUEUE = env_int("DLA_RENDER_QUEUE", 2, minimum=0)
DLA_MIP_PREPARED_CACHE = env_int("DLA_MIP_PREPARED_CACHE", 4, minimum=1)
DLA_LABEL_DECODE_CACHE = env_int("DLA_LABEL_DECODE_CACHE", 4, minimum=1)
DATA_UPLOAD_MAX_NUMBER_FILES = env_int(
    "DLA_MAX_UPLOAD_FILES", 5000, minimum=1
)  # a series is one file per slice
# JSON and form bodies (not file parts) over this are refused: a JSON 400 naming the limit under /api/, a page
# elsewhere (frontend.views.bad_request).
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DLA_MAX_UPLOAD_BYTES = env_int("DLA_MAX_UPLOAD_BYTES", 2 * 1024**3, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes missing/invalid credentials a 401, not a 403.
        "dla_web.auth.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "dla_web.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "dla_web.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_THROTTLE_RATES": {"login": DLA_LOGIN_RATE},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "DLA Workbench API",
    "DESCRIPTION": "Studies, volumes, labels, models, evaluations and reader studies for deep learning angiography.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: the embedded default is kombu's filesystem transport (no server needed); production uses Redis.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    (_broker_dir / "out").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Unacknowledged messages of a crashed worker come back after the visibility timeout (longer than any task),
    # found by a sweep every CELERY_UNACKED_RESTORE_INTERVAL_S seconds.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_S", 49 * 3600, minimum=1),
        "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL_S", 10, minimum=1),
        "unacked_restore_throttle": 1,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# API keys (stored hashed, shown once) expire after this many days.
API_TOKEN_DAYS = env_int("DLA_API_TOKEN_DAYS", 30, minimum=1)
# A running task stamps its heartbeat every TASK_HEARTBEAT_S; without one for TASK_LOST_AFTER_S its worker is
# taken as gone (the run is requeued once, or failed with that reason).
TASK_HEARTBEAT_S = env_int("DLA_TASK_HEARTBEAT_S", 5, minimum=1)
TASK_LOST_AFTER_S = env_int("DLA_TASK_LOST_AFTER_S", 60, minimum=2)
if TASK_LOST_AFTER_S <= 2 * TASK_HEARTBEAT_S:
    raise ImproperlyConfigured("DLA_TASK_LOST_AFTER_S must be more than twice DLA_TASK_HEARTBEAT_S")

# Sessions end after DLA_SESSION_IDLE_MINUTES without a request and DLA_SESSION_MAX_HOURS after the login,
# whatever happens in between (dla_web.security.SessionTimeoutMiddleware); the cookie lives no longer.
SESSION_IDLE_TIMEOUT_S = env_int("DLA_SESSION_IDLE_MINUTES", 60, minimum=1) * 60
SESSION_MAX_AGE_S = env_int("DLA_SESSION_MAX_HOURS", 12, minimum=1) * 3600
SESSION_COOKIE_AGE = SESSION_MAX_AGE_S
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# HTTPS. Django never terminates TLS itself: a proxy (nginx, traefik, a load balancer) does.
# DLA_BEHIND_TLS_PROXY=1: trust the proxy's X-Forwarded-Proto (it must set it and drop the client's), so Django
# knows a request came over HTTPS; redirect plain HTTP to HTTPS, send HSTS, secure cookies. DLA_TLS=1 alone
# gives secure cookies and HSTS only (HSTS is sent on requests Django sees as HTTPS).
BEHIND_TLS_PROXY = env_bool("DLA_BEHIND_TLS_PROXY", False)
_tls = env_bool("DLA_TLS", False) or BEHIND_TLS_PROXY
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = BEHIND_TLS_PROXY and env_bool("DLA_SSL_REDIRECT", True)
SESSION_COOKIE_SECURE = _tls
CSRF_COOKIE_SECURE = _tls
SECURE_HSTS_SECONDS = env_int("DLA_HSTS_SECONDS", 31536000, minimum=0) if _tls else 0
# Proxies in front whose X-Forwarded-For entries are trusted (the client address is the entry this many from
# the right); 0 = REMOTE_ADDR. Login throttling and lockout count per client address.
TRUSTED_PROXIES = env_int("DLA_TRUSTED_PROXIES", 1 if BEHIND_TLS_PROXY else 0, minimum=0)
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXIES
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
