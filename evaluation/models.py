"""Evaluation runs: ``Evaluation`` (a model version scored on one or more cohorts against a reference, computed by
an ``evaluate`` TaskRun) and ``StudyResult`` (one row per evaluated study: 2x2 table, metrics, 3x3 class
confusion, vessel volume, residual bone of DSA vs DLA, and on phantoms the metrics against the exact truth).

The numbers come from the pure modules ``dla.stats.metrics`` and ``dla.stats.artifacts``; ``services.py``
loads, checks, calls and saves. A run's rows are written in one transaction at its end, so a failed or
cancelled run leaves no half-written results.
"""

from django.conf import settings
from django.db import models

from annotations.models import LabelVersion, Study, Volume
from dla_web.models import TaskRun
from inference.models import ModelVersion


class Evaluation(models.Model):
    class Reference(models.TextChoices):
        APPROVED = "approved", "newest approved label version"
        TRUTH = "truth", "exact phantom truth"

    class CI(models.TextChoices):
        T = "t", "Student t over patients"
        BOOTSTRAP = "bootstrap", "percentile bootstrap over patients"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="evaluations")
    name = models.CharField(max_length=120, blank=True, default="")
    cohorts = models.JSONField(help_text='cohorts scored, one Table 1 row each, e.g. ["validation", "test"]')
    reference = models.CharField(max_length=16, choices=Reference.choices, default=Reference.APPROVED)
    ci_method = models.CharField(max_length=16, choices=CI.choices, default=CI.T)
    n_boot = models.PositiveIntegerField(default=10000)
    seed = models.PositiveIntegerField(default=0)
    bright_hu = models.FloatField(
        default=300.0, help_text="residual bone: HU at or above which bone is bright"
    )
    min_cluster_voxels = models.PositiveIntegerField(
        default=20, help_text="residual bone: smallest bright 26-connected cluster counted as an artifact"
    )
    allow_missing = models.BooleanField(
        default=False, help_text="evaluate the studies that can be evaluated and list the others"
    )
    task_run = models.OneToOneField(
        TaskRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluation"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    summary = models.JSONField(
        default=dict,
        blank=True,
        help_text="Table 1 rows, truth rows, artifact rates, notes (set by the task)",
    )
    missing = models.JSONField(
        default=list, blank=True, help_text="[{study, pseudonym, cohort, reason}] studies not evaluated"
    )
    elapsed_s = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"evaluation #{self.pk} of {self.model_version}"

    @property
    def state(self) -> str:
        return self.task_run.state if self.task_run_id else "unknown"

    @property
    def is_done(self) -> bool:
        return bool(self.summary) and self.state == TaskRun.State.SUCCEEDED


class StudyResult(models.Model):
    """Per-study numbers of one evaluation. Metrics are fractions in [0, 1] or null when undefined (the
    reason is in ``reasons``)."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="results")
    study = models.ForeignKey(Study, null=True, on_delete=models.SET_NULL, related_name="+")
    pseudonym = models.CharField(max_length=64, help_text="kept if the study is deleted")
    cohort = models.CharField(max_length=16)
    label_version = models.ForeignKey(LabelVersion, null=True, blank=True, on_delete=models.SET_NULL)
    prediction = models.ForeignKey(
        Volume, null=True, on_delete=models.SET_NULL, related_name="+", help_text="class_map volume"
    )
    tp = models.BigIntegerField()
    fp = models.BigIntegerField()
    fn = models.BigIntegerField()
    tn = models.BigIntegerField()
    accuracy = models.FloatField(null=True)
    sensitivity = models.FloatField(null=True)
    ppv = models.FloatField(null=True)
    dice = models.FloatField(null=True)
    specificity = models.FloatField(null=True)
    reasons = models.JSONField(default=dict, blank=True)
    class_confusion = models.JSONField(help_text="3x3 rows reference, columns predicted: vessel, bone, soft")
    vessel_volume_ml = models.FloatField(help_text="reference vessel volume in the scored region, mL")
    roi_box_zyx = models.JSONField(null=True, blank=True)
    artifacts = models.JSONField(
        default=dict, blank=True, help_text='{"dsa": ResidualBone dict | null, "dla": ..., "regions": note}'
    )
    truth = models.JSONField(
        null=True, blank=True, help_text="metrics against the exact phantom truth (reference=approved only)"
    )

    class Meta:
        ordering = ["evaluation", "cohort", "pseudonym"]
        constraints = [models.UniqueConstraint(fields=["evaluation", "study"], name="one_result_per_study")]

    def __str__(self):
        return f"{self.pseudonym} in evaluation #{self.evaluation_id}"
