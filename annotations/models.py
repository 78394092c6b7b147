"""Studies and their volumes: the pseudonymized exam, its cohort, and the image volumes (fill, mask,
subtracted DSA, DLA, ...) whose voxels live in the volume store while their geometry lives here.

Label drafts and versions live beside these models once the labeling layer lands.
"""

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from . import volume_store


class Study(models.Model):
    class Cohort(models.TextChoices):
        UNASSIGNED = "unassigned"
        TRAIN = "train"
        VALIDATION = "validation"
        TEST = "test"

    class Injection(models.TextChoices):
        UNKNOWN = "unknown"
        ICA = "ica", "internal carotid artery"
        VERTEBRAL = "vertebral", "vertebral artery"

    pseudonym = models.CharField(max_length=64, unique=True)
    patient_pseudonym = models.CharField(
        max_length=64,
        db_index=True,
        help_text="Studies of one patient share this; a patient is in one cohort only.",
    )
    cohort = models.CharField(max_length=16, choices=Cohort.choices, default=Cohort.UNASSIGNED, db_index=True)
    injection_site = models.CharField(max_length=16, choices=Injection.choices, default=Injection.UNKNOWN)
    source = models.CharField(max_length=32, default="dicom", help_text="phantom, dicom or nifti")
    study_uid = models.CharField(max_length=128, blank=True, default="", help_text="de-identified Study UID")
    notes = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["pseudonym"]
        verbose_name_plural = "studies"

    def __str__(self):
        return self.pseudonym

    def volume(self, role: str):
        """The newest volume of ``role`` or None."""
        return self.volumes.filter(role=role).order_by("-created_at", "-id").first()

    def check_cohort_assignment(self, cohort: str) -> None:
        """A patient's studies must all be in one cohort (never train and test at once)."""
        if cohort == self.Cohort.UNASSIGNED:
            return
        clash = (
            Study.objects.filter(patient_pseudonym=self.patient_pseudonym)
            .exclude(pk=self.pk)
            .exclude(cohort__in=[self.Cohort.UNASSIGNED, cohort])
            .values_list("pseudonym", "cohort")
            .first()
        )
        if clash:
            raise ValidationError(
                f"patient {self.patient_pseudonym} already has study {clash[0]} in cohort {clash[1]}; "
                f"a patient may not be in two cohorts"
            )


class Volume(models.Model):
    class Role(models.TextChoices):
        FILL = "fill", "fill (contrast-enhanced)"
        MASK = "mask", "mask (no contrast)"
        SUBTRACTED = "subtracted", "subtracted DSA"
        DLA = "dla", "3D-DLA"
        VESSEL_PROB = "vessel_prob", "vessel probability"
        CLASS_MAP = "class_map", "predicted class map"
        TRUTH = "truth", "phantom truth"
        OTHER = "other"

    IMAGE_ROLES = (Role.FILL, Role.MASK, Role.SUBTRACTED, Role.DLA, Role.OTHER)

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="volumes")
    role = models.CharField(max_length=16, choices=Role.choices, db_index=True)
    file = models.CharField(max_length=300, help_text="storage name of the .npy file")
    dtype = models.CharField(max_length=8, default="int16")
    shape = models.JSONField(help_text="[z, y, x]")
    spacing_mm = models.JSONField(help_text="[dz, dy, dx] in mm")
    affine_lps = models.JSONField(help_text="4x4: (i=x, j=y, k=z, 1) -> patient LPS mm")
    hu_min = models.IntegerField(default=0)
    hu_max = models.IntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    series_uid = models.CharField(max_length=128, blank=True, default="")
    series_description = models.CharField(max_length=200, blank=True, default="")
    source = models.CharField(max_length=200, blank=True, default="", help_text="where the voxels came from")
    model_version_id = models.BigIntegerField(
        null=True, blank=True, help_text="for DLA volumes: the model used"
    )
    stats = models.JSONField(
        default=dict,
        blank=True,
        help_text="numbers summarising the voxels (vessel probability: its 256-bin histogram, for the label-next "
        "ranking)",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["study", "role", "-created_at"]

    def __str__(self):
        return f"{self.study.pseudonym}/{self.role}#{self.pk}"

    @classmethod
    def create_from_array(
        cls, *, study: Study, role: str, array: np.ndarray, spacing_mm, affine_lps, **fields
    ):
        """Store ``array`` ([z, y, x], int16 HU or uint8 map) and create its row; the file is written first,
        so a failed insert leaves only an orphan file, never a row without voxels."""
        if array.ndim != 3:
            raise ValueError(f"a volume must be 3-D [z, y, x]; got shape {array.shape}")
        name, digest = volume_store.save_array(array, prefix=f"volumes/{study.pk}")
        return cls.objects.create(
            study=study,
            role=role,
            file=name,
            dtype=str(array.dtype),
            shape=list(array.shape),
            spacing_mm=[float(s) for s in spacing_mm],
            affine_lps=np.asarray(affine_lps, dtype=float).tolist(),
            hu_min=int(array.min()) if array.size else 0,
            hu_max=int(array.max()) if array.size else 0,
            sha256=digest,
            **fields,
        )

    def array(self) -> np.ndarray:
        """Read-only memory map of the voxels, [z, y, x]."""
        return volume_store.load_array(self.file)


class LabelVersion(models.Model):
    """An immutable label map of a study: number per study, parent, author, message, the recipe and edit ops
    that made it, per-class voxel counts, sha256 of the voxels and the compressed file. Never updated in place
    (only its review fields change); revert creates a new version."""

    class Review(models.TextChoices):
        NONE = "none", "not submitted"
        SUBMITTED = "submitted"
        APPROVED = "approved"
        REJECTED = "rejected"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="label_versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.TextField()
    recipe = models.JSONField(default=dict, blank=True)
    ops = models.JSONField(default=list, blank=True)
    counts = models.JSONField(help_text="{class id: voxels} for 0..3")
    roi_box_zyx = models.JSONField(null=True, blank=True)
    shape = models.JSONField()
    sha256 = models.CharField(max_length=64, help_text="of the uint8 voxels")
    file = models.CharField(max_length=300, help_text="storage name of the compressed label map")
    stored_bytes = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    review_status = models.CharField(
        max_length=16, choices=Review.choices, default=Review.NONE, db_index=True
    )
    review_comment = models.TextField(blank=True, default="")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study", "-number"]
        constraints = [models.UniqueConstraint(fields=["study", "number"], name="one_number_per_study")]

    def __str__(self):
        return f"{self.study.pseudonym} v{self.number}"


class Draft(models.Model):
    """One annotator's working copy of a study's labels: a base version plus an ordered list of edit ops.
    The materialized array is a cache in the volume store; the ops are the truth and can be replayed."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="drafts")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="label_drafts")
    base_version = models.ForeignKey(
        LabelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    ops = models.JSONField(default=list, blank=True, help_text="[{op, result, undo}] in order")
    redo = models.JSONField(default=list, blank=True, help_text="undone ops that redo re-applies")
    revision = models.PositiveIntegerField(default=0, help_text="bumped by every change")
    file = models.CharField(
        max_length=300, blank=True, default="", help_text="materialized uint8 labels (.npy)"
    )
    counts = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "user"], name="one_draft_per_study_and_user")]

    def __str__(self):
        return f"draft of {self.study.pseudonym} by {self.user}"


class PseudonymMap(models.Model):
    """The original identity behind a study's pseudonym. Written only when the deployment enables it
    (``DLA_KEEP_PSEUDONYM_MAP=1``, e.g. to re-identify incidental findings); visible to admins in Django admin
    only, never through the API."""

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="pseudonym_map")
    original_patient_id = models.CharField(max_length=128, blank=True, default="")
    original_patient_name = models.CharField(max_length=200, blank=True, default="")
    original_study_uid = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"identity of {self.study.pseudonym}"
