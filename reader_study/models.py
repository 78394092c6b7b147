"""Reader studies: the design (cases, questions, readers), the blinded and randomized presentation (one
assignment per reader and case, reached through an opaque token), the readers' answers with an append-only
history. The images are frames of the one MIP cache (``annotations.mip_cache``), keyed by the volumes' content:
no table of their own.

A case compares two volumes of one study: method "dsa" (the subtracted volume) and method "dla". In side-by-side
mode a reader sees both per case as "A" and "B" (random per reader and case); in single mode every image is its
own item (image "A" only) in the reader's random queue. Questions are answered per image, so every answer maps to
one method. Nothing here that names the method is ever sent to a reader (see ``serializers.Reading*``).

The design (settings, cases, readers, questions) is frozen once a study leaves the draft state, here on the models
too, so no path (API, Django admin, shell) can change what readers were shown: saving or deleting a case, reader
or question of such a study, or changing a frozen setting, raises ``DesignFrozen`` (409). A study opens through
"opening" (its frames rendered first, see ``services``), so nobody can read before every frame exists. Queues and
A/B come from ``randomization_seed``, 256 secret bits drawn with ``secrets`` when the study is created and shown
to admins only after it closes; studies opened before it existed keep their integer ``seed`` (and queues).
"""

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from dla_web.api import Conflict

METHODS = ("dsa", "dla")
METHOD_ROLES = {"dsa": "subtracted", "dla": "dla"}
METHOD_LABELS = {"dsa": "DSA", "dla": "DLA"}
IMAGES = ("A", "B")
# Substrings a token must never contain (a random token spelling "dla" would look like a leak to a reader).
_TOKEN_FORBIDDEN = ("dsa", "dla", "sub", "mask", "fill")


def new_token() -> str:
    """An opaque, unguessable URL token (128 random bits) that spells no method name."""
    while True:
        token = secrets.token_urlsafe(16)
        if not any(word in token.lower() for word in _TOKEN_FORBIDDEN):
            return token


def new_randomization_seed() -> str:
    """256 random bits from ``secrets`` as 64 hex digits: the seed of one reader study's queues and A/B."""
    return secrets.token_hex(32)


class DesignFrozen(Conflict):
    """A change to the design of a reader study that is no longer a draft (HTTP 409)."""


class ReaderStudy(models.Model):
    class Mode(models.TextChoices):
        SIDE_BY_SIDE = "side_by_side", "side by side (A and B per case)"
        SINGLE = "single", "single image per item"

    class Status(models.TextChoices):
        DRAFT = "draft"
        OPENING = "opening", "opening (rendering frames)"
        OPEN = "open"
        CLOSED = "closed"

    # Fixed once the study leaves the draft state (with its cases, readers and questions); the title stays free.
    FROZEN_FIELDS = ("instructions", "mode", "seed", "randomization_seed", "allow_edits", "window_preset")

    title = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, default="")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.SIDE_BY_SIDE)
    seed = models.BigIntegerField(
        default=0,
        editable=False,
        help_text="legacy integer seed, used only by studies opened before randomization_seed existed",
    )
    randomization_seed = models.CharField(
        max_length=64,
        default=new_randomization_seed,
        editable=False,
        help_text="secret seed of case order and A/B (secrets.token_hex); shown to admins after the study closes; "
        "empty for studies opened with the legacy integer seed",
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT, db_index=True)
    allow_edits = models.BooleanField(default=False, help_text="readers may change submitted answers")
    window_preset = models.CharField(
        max_length=16, default="vessel", help_text="initial window of both images"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "reader studies"

    def __str__(self):
        return self.title

    def save(self, *args, **kwargs):
        if self.pk is not None:
            stored = ReaderStudy.objects.filter(pk=self.pk).values("status", *self.FROZEN_FIELDS).first()
            if stored is not None and stored["status"] != self.Status.DRAFT:
                changed = [f for f in self.FROZEN_FIELDS if getattr(self, f) != stored[f]]
                if changed:
                    raise DesignFrozen(
                        f"the reader study is {stored['status']}: {', '.join(changed)} cannot change after it was "
                        "opened"
                    )
        super().save(*args, **kwargs)

    @property
    def images_per_item(self) -> tuple[str, ...]:
        return IMAGES if self.mode == self.Mode.SIDE_BY_SIDE else ("A",)

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT

    def seed_if_closed(self) -> str | None:
        """The randomization seed (the legacy integer as text for old studies) once the study is closed, else
        None: while it can be read, not even admins see it."""
        if self.status != self.Status.CLOSED:
            return None
        return self.randomization_seed or str(self.seed)


def require_draft_design(reader_study_id, what: str) -> None:
    """Raise ``DesignFrozen`` unless the reader study ``reader_study_id`` is a draft (or does not exist)."""
    status = ReaderStudy.objects.filter(pk=reader_study_id).values_list("status", flat=True).first()
    if status is not None and status != ReaderStudy.Status.DRAFT:
        raise DesignFrozen(f"the reader study is {status}: {what} only while it is a draft")


class _DesignPart(models.Model):
    """A case, reader or question: part of the design, so saved and deleted only while the study is a draft."""

    design_noun = "the design"

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        require_draft_design(self.reader_study_id, f"{self.design_noun} can be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        require_draft_design(self.reader_study_id, f"{self.design_noun} can be changed")
        return super().delete(*args, **kwargs)


class Case(_DesignPart):
    """One compared pair: the study's DSA (subtracted) and DLA volume, fixed when the case is added.
    ``display_floor_hu``: the window floor both images are shown with (above the DSA's background noise, see
    ``dla.render.slices.noise_floor_hu``), set from the DSA cine when the study opens."""

    design_noun = "cases"
    reader_study = models.ForeignKey(ReaderStudy, on_delete=models.CASCADE, related_name="cases")
    study = models.ForeignKey("annotations.Study", on_delete=models.PROTECT, related_name="+")
    dsa_volume = models.ForeignKey("annotations.Volume", on_delete=models.PROTECT, related_name="+")
    dla_volume = models.ForeignKey("annotations.Volume", on_delete=models.PROTECT, related_name="+")
    display_floor_hu = models.FloatField(
        null=True,
        blank=True,
        editable=False,
        help_text="window floor of both images (HU above the DSA background noise), set when the study opens",
    )
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["reader_study", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["reader_study", "study"], name="one_case_per_study_and_reader_study"
            )
        ]

    def __str__(self):
        return f"{self.reader_study_id}: {self.study}"

    def volume(self, method: str):
        return self.dsa_volume if method == "dsa" else self.dla_volume


class Question(_DesignPart):
    design_noun = "questions"

    class Type(models.TextChoices):
        YES_NO = "yes_no", "yes / no"
        SINGLE = "single", "single choice"
        MULTIPLE = "multiple", "multiple choice"
        ORDINAL = "ordinal", "ordinal scale"
        NUMBER = "number"
        TEXT = "text", "free text"

    reader_study = models.ForeignKey(ReaderStudy, on_delete=models.CASCADE, related_name="questions")
    key = models.SlugField(max_length=40, help_text="short column name in exports")
    text = models.CharField(max_length=300)
    type = models.CharField(max_length=8, choices=Type.choices)
    choices = models.JSONField(default=list, blank=True, help_text="options of single/multiple choice")
    scale_min = models.FloatField(null=True, blank=True)
    scale_max = models.FloatField(null=True, blank=True)
    scale_labels = models.JSONField(default=dict, blank=True, help_text='{"0": "none", "3": "severe"}')
    required = models.BooleanField(default=True, help_text="required when shown (a hidden question never is)")
    show_if = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text='shown only when another question has an answer: {"question": "residual_bone", "answer": true} '
        "(see reader_study/design.py); empty: always shown",
    )
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["reader_study", "order", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["reader_study", "key"], name="question_key_unique_per_reader_study"
            )
        ]

    def __str__(self):
        return self.text

    @property
    def has_answers(self) -> bool:
        return Answer.objects.filter(question=self).exists()


class Reader(_DesignPart):
    design_noun = "readers"
    reader_study = models.ForeignKey(ReaderStudy, on_delete=models.CASCADE, related_name="readers")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reader_roles")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["reader_study", "id"]
        constraints = [
            models.UniqueConstraint(fields=["reader_study", "user"], name="one_reader_row_per_user_and_study")
        ]

    def __str__(self):
        return f"{self.user} in {self.reader_study_id}"


class Assignment(models.Model):
    """One item of a reader's queue: a case (and in single mode one of its methods) at a random position,
    with the methods randomly mapped to images "A" (and "B"). ``token`` is the only handle a reader sees."""

    reader = models.ForeignKey(Reader, on_delete=models.CASCADE, related_name="assignments")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="assignments")
    position = models.PositiveIntegerField(help_text="1-based position in the reader's queue")
    a_method = models.CharField(max_length=4, choices=[(m, m) for m in METHODS])
    b_method = models.CharField(max_length=4, choices=[(m, m) for m in METHODS], blank=True, default="")
    token = models.CharField(max_length=40, unique=True, default=new_token, editable=False)
    time_spent_s = models.FloatField(default=0.0)
    opened_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["reader", "position"]
        constraints = [
            models.UniqueConstraint(fields=["reader", "position"], name="one_assignment_per_queue_position"),
            models.UniqueConstraint(
                fields=["reader", "case", "a_method"], name="one_assignment_per_reader_case_method"
            ),
        ]

    def __str__(self):
        return f"{self.reader.user} #{self.position}"

    @property
    def reader_study(self) -> ReaderStudy:
        return self.reader.reader_study

    def method_of(self, image: str) -> str:
        return self.a_method if image == "A" else self.b_method

    def images(self) -> tuple[str, ...]:
        return IMAGES if self.b_method else ("A",)


class Answer(models.Model):
    """The current value of one question for one image of one assignment; every change is an AnswerEvent."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="answers")
    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="answers")
    image = models.CharField(max_length=1, choices=[(i, i) for i in IMAGES])
    value = models.JSONField(null=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["assignment", "question__order", "image"]
        constraints = [
            models.UniqueConstraint(
                fields=["assignment", "question", "image"], name="one_answer_per_question_and_image"
            )
        ]

    def __str__(self):
        return f"answer {self.question_id}/{self.image} of assignment {self.assignment_id}"


class AnswerEvent(models.Model):
    """Append-only history: who set which value when (also submits and edits after submit)."""

    class Kind(models.TextChoices):
        SAVE = "save"
        SUBMIT = "submit"
        EDIT_AFTER_SUBMIT = "edit_after_submit", "edit after submit"

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="events")
    question = models.ForeignKey(Question, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    image = models.CharField(max_length=1, blank=True, default="")
    value = models.JSONField(null=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.SAVE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["assignment", "created_at", "id"]

    def __str__(self):
        return f"{self.kind} by {self.user_id} at {self.created_at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("answer events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("answer events are append-only")
