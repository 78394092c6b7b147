"""Model registry and training runs: ``ModelVersion`` (stored DLANet weights with sha256, configs, metrics,
exactly one active) and ``TrainingRun`` (the live curves of a training TaskRun, polled by the training page).

The numeric work lives in ``network.py`` / ``trainer.py`` / ``dense.py``; ``services.py`` loads, calls and saves.
"""

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q

from dla_web.models import TaskRun

# Curves are rewritten as one JSON list per write; beyond this many points they are thinned 2:1 (the newest
# point is always kept), so a 200k-iteration run stays a few hundred kB.
MAX_CURVE_POINTS = 2000


class ModelVersion(models.Model):
    """A registered network: weights file in the storage (immutable, sha256), architecture and training
    configuration, the training run that made it (if any), final metrics and curves."""

    class Source(models.TextChoices):
        TRAINED = "trained"
        UPLOADED = "uploaded"

    name = models.CharField(max_length=120)
    weights_file = models.CharField(max_length=300, help_text="storage name of the weights (.pt)")
    sha256 = models.CharField(max_length=64, help_text="of the weights file bytes")
    size_bytes = models.BigIntegerField(default=0)
    fingerprint = models.CharField(max_length=120, help_text="architecture + input normalisation id")
    network_config = models.JSONField(help_text="dla.model.network.NetworkConfig as a dict")
    train_config = models.JSONField(default=dict, blank=True, help_text="dla.model.train.TrainConfig")
    training_run = models.OneToOneField(
        TaskRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_version"
    )
    metrics = models.JSONField(default=dict, blank=True, help_text="final validation metrics and curves")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.TRAINED)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=False, db_index=True)
    notes = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="one_active_model"
            )
        ]

    def __str__(self):
        return f"{self.name} (#{self.pk})"

    @classmethod
    def active(cls) -> "ModelVersion | None":
        return cls.objects.filter(is_active=True).first()

    def activate(self) -> "ModelVersion":
        """Make this the one active model (the others are deactivated in the same transaction)."""
        with transaction.atomic():
            list(ModelVersion.objects.select_for_update().filter(is_active=True))
            ModelVersion.objects.filter(is_active=True).exclude(pk=self.pk).update(is_active=False)
            ModelVersion.objects.filter(pk=self.pk).update(is_active=True)
        self.is_active = True
        return self


class TrainingRun(models.Model):
    """Live state of a training TaskRun beyond progress/message: the loss and validation curves.

    ``train_curve``: ``[[iteration, loss, lr], ...]``; ``val_curve``: ``[{iteration, val_error,
    val_err_<class>, val_acc_<class>}, ...]``. Both are appended by the task (throttled) and thinned beyond
    MAX_CURVE_POINTS.
    """

    task_run = models.OneToOneField(
        TaskRun, primary_key=True, on_delete=models.CASCADE, related_name="training"
    )
    name = models.CharField(max_length=120, blank=True, default="")
    max_iterations = models.PositiveIntegerField(default=0)
    iteration = models.PositiveIntegerField(default=0)
    voxels_per_s = models.FloatField(default=0.0)
    eta_s = models.FloatField(null=True, blank=True)
    train_studies = models.JSONField(
        default=list, blank=True, help_text="[{study, pseudonym, label_version}]"
    )
    validation_studies = models.JSONField(default=list, blank=True)
    train_curve = models.JSONField(default=list, blank=True)
    val_curve = models.JSONField(default=list, blank=True)
    checkpoint = models.CharField(max_length=500, blank=True, default="", help_text="local checkpoint path")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-task_run_id"]

    def __str__(self):
        return f"training run #{self.task_run_id}"


def thin_curve(points: list, limit: int = MAX_CURVE_POINTS) -> list:
    """Every other point of ``points`` once it exceeds ``limit`` (the last point is always kept)."""
    if len(points) <= limit:
        return points
    thinned = points[::2]
    if thinned[-1] is not points[-1]:
        thinned.append(points[-1])
    return thinned
