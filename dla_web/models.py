"""TaskRun: the state of every long job (ingest, recipe, training, inference, reports) in the database.

A row is created when work is requested and enqueued with ``transaction.on_commit``; the Celery task updates
state, progress (0..1), message and a bounded log tail; the browser polls it for progress bars. Cancel sets
``cancel_requested``, which the task checks cooperatively; a forced cancel also terminates the worker child.
"""

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone

LOG_TAIL_LINES = 200


class TaskRun(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    kind = models.CharField(max_length=64, db_index=True)
    queue = models.CharField(max_length=32, default="default")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=500, blank=True, default="")
    log_tail = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="task_runs"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    celery_id = models.CharField(max_length=64, blank=True, default="")
    worker = models.CharField(max_length=200, blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    target_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.SET_NULL)
    target_id = models.CharField(max_length=64, blank=True, default="")
    target = GenericForeignKey("target_type", "target_id")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self):
        return f"{self.kind} #{self.pk} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL_STATES

    @property
    def duration_s(self) -> float | None:
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    def append_log(self, line: str) -> None:
        lines = (self.log_tail.splitlines() if self.log_tail else []) + [line]
        self.log_tail = "\n".join(lines[-LOG_TAIL_LINES:])


class AuditEvent(models.Model):
    """One append-only audit record (see ``dla_web.audit``)."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(
        max_length=150, blank=True, default="", help_text="kept if the user is deleted"
    )
    ip = models.CharField(max_length=64, blank=True, default="")
    object_type = models.CharField(max_length=100, blank=True, default="")
    object_id = models.CharField(max_length=64, blank=True, default="")
    object_repr = models.CharField(max_length=200, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action}"


class ApiToken(models.Model):
    """An API key, stored as its sha256 only (the key itself is shown once, when it is issued). It expires after
    ``DLA_API_TOKEN_DAYS`` and is revoked by ``DELETE /api/auth/token/``, a password change, a role change or
    deactivation of its user (``dla_web.auth``)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    key_sha256 = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8, help_text="first characters of the key, to tell tokens apart")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"token {self.prefix}... of {self.user}"

    @property
    def is_valid(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now() and self.user.is_active
