"""Domain rules of reader studies: design changes (cases, readers, questions; all frozen once the study leaves
the draft state), opening with secretly seeded randomization, saving and submitting answers with an
append-only history, the blinded image frames, and the results (frequencies, paired tests and agreement via
``dla.stats.reader``).

Blinding is a security property (DESIGN.md principle 8), measured by tests/integration/test_blinding_attack.py:
- one display transform for both methods: every frame of a case is windowed with the same floor above the DSA's
  background noise (``dla.render.slices.noise_floor_hu``, stored on the case), so both backgrounds are black;
- a study opens in two steps: ``begin_open`` (design frozen, status "opening") and ``finish_open`` once every
  frame of every case is in the MIP cache (``prepare_frames``, run by the opening task); readers see the study
  only then, and a frame missing later is rendered together with its partner, so no response is faster by
  method;
- queues and A/B come from the study's secret ``randomization_seed``, with A/B counterbalanced per reader;
- a reader must have no other role (annotators and admins can see the studies' volumes unblinded).

Views stay thin: they look up objects (a reader only ever finds their own assignments) and call these.
Errors on bad input are ``ReaderStudyError`` (400) or ``dla_web.api.Conflict`` (409), both with a message.
"""

from __future__ import annotations

import math
import random
import struct
import zlib
from collections import defaultdict
from statistics import median

import numpy as np
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from annotations import mip_cache
from annotations.models import Study, Volume
from dla.render.slices import WINDOW_PRESETS_HU, Window, floor_window, noise_floor_hu, window_to_uint8
from dla.stats import reader as st
from dla.stats.metrics import format_frequency
from dla_web.api import Conflict
from dla_web.roles import READER, roles_of

from . import design
from .models import (
    METHOD_LABELS,
    METHOD_ROLES,
    METHODS,
    Answer,
    AnswerEvent,
    Assignment,
    Case,
    Question,
    Reader,
    ReaderStudy,
    require_draft_design,
)

# Presentation: every frame of every image has this size, so byte sizes never depend on the method. The frames
# are the viewer's cine frames (one MIP cache, ``annotations.mip_cache``), precomputed after ingest and inference.
FRAME_SIZE = mip_cache.CINE_SIZE
N_ANGLES = mip_cache.CINE_ANGLES  # one frame every 10 degrees
MAX_TIME_PER_CALL_S = 600.0
# Window presets offered to readers (names say nothing about methods; values from dla.render.rendering).
READER_WINDOWS = {
    "vessel": WINDOW_PRESETS_HU["vessel"],
    "narrow": WINDOW_PRESETS_HU["dsa"],
    "wide": WINDOW_PRESETS_HU["bone"],
}

DEFAULT_QUESTIONS = [
    {
        "key": "residual_bone",
        "text": "Residual bone artifact present",
        "type": "yes_no",
        "required": True,
    },
    {
        "key": "artifact_locations",
        "text": "Locations of residual bone artifacts",
        "type": "multiple",
        "choices": ["otic capsule", "nasal cavity", "skull base", "calvarium", "other"],
        "required": False,
        "show_if": {"question": "residual_bone", "answer": True},
    },
    {
        "key": "artifact_severity",
        "text": "Severity of residual bone artifacts",
        "type": "ordinal",
        "scale_min": 0,
        "scale_max": 3,
        "scale_labels": {"0": "none", "1": "mild", "2": "moderate", "3": "severe"},
        "required": True,
    },
    {
        "key": "small_vessel_conspicuity",
        "text": "Small-vessel conspicuity",
        "type": "ordinal",
        "scale_min": 1,
        "scale_max": 5,
        "scale_labels": {"1": "poor", "5": "excellent"},
        "required": True,
    },
    {
        "key": "diagnostic_confidence",
        "text": "Diagnostic confidence",
        "type": "ordinal",
        "scale_min": 1,
        "scale_max": 5,
        "scale_labels": {"1": "very low", "5": "very high"},
        "required": True,
    },
    {"key": "comment", "text": "Comment", "type": "text", "required": False},
]


class ReaderStudyError(ValueError):
    """Bad input to a reader study (the API turns it into a 400 with this message)."""


# --------------------------------------------------------------------------------------------- design


def require_draft(rs: ReaderStudy, what: str) -> None:
    """409 (``DesignFrozen``) unless ``rs`` is a draft, read fresh from the database."""
    require_draft_design(rs.pk, what)


def reader_refusal(user) -> str | None:
    """Why ``user`` cannot read blinded images (None when they can): readers need the Reader role and no
    other, since annotators and admins can open the studies' volumes unblinded elsewhere."""
    roles = roles_of(user)
    if READER not in roles:
        return f"user {user.username} does not have the Reader role"
    others = sorted(roles - {READER})
    if others:
        return (
            f"user {user.username} also has the {' and '.join(others)} role: a reader must not be able to see "
            "the studies' volumes elsewhere; use an account that has only the Reader role"
        )
    return None


def reading_refusal(user) -> str | None:
    """Why a user with the Reader role may not read now (None when they may): they gained another role."""
    others = sorted(roles_of(user) - {READER})
    if not others:
        return None
    return (
        f"Reading is refused: your account also has the {' and '.join(others)} role, which can see the studies' "
        "images unblinded. Read with an account that has only the Reader role."
    )


def eligible_studies():
    """Studies that have both a subtracted (DSA) and a DLA volume."""
    return (
        Study.objects.filter(volumes__role=METHOD_ROLES["dsa"])
        .filter(volumes__role=METHOD_ROLES["dla"])
        .distinct()
    )


@transaction.atomic
def add_cases(rs: ReaderStudy, study_ids) -> list[Case]:
    """Add one case per study (all or nothing). Each study needs a DSA and a DLA volume."""
    require_draft(rs, "cases can be added")
    rs = ReaderStudy.objects.select_for_update().get(pk=rs.pk)
    if not isinstance(study_ids, list) or not study_ids:
        raise ReaderStudyError("study_ids: give a non-empty list of study ids")
    made = []
    for sid in study_ids:
        if isinstance(sid, bool) or not isinstance(sid, int):
            raise ReaderStudyError(f"study_ids: {sid!r} is not a study id")
        study = Study.objects.filter(pk=sid).first()
        if study is None:
            raise ReaderStudyError(f"study {sid} does not exist")
        volumes = {m: study.volume(METHOD_ROLES[m]) for m in METHODS}
        missing = [f"{METHOD_LABELS[m]} ({METHOD_ROLES[m]})" for m in METHODS if volumes[m] is None]
        if missing:
            raise ReaderStudyError(
                f"study {study.pseudonym} cannot be a case: it has no {' and no '.join(missing)} volume; "
                "a case needs both a DSA and a DLA volume"
            )
        if Case.objects.filter(reader_study=rs, study=study).exists():
            raise ReaderStudyError(f"study {study.pseudonym} is already a case of this reader study")
        made.append(
            Case.objects.create(
                reader_study=rs, study=study, dsa_volume=volumes["dsa"], dla_volume=volumes["dla"]
            )
        )
    return made


@transaction.atomic
def remove_case(rs: ReaderStudy, case_id: int) -> None:
    require_draft(rs, "cases can be removed")
    deleted, _ = Case.objects.filter(reader_study=rs, pk=case_id).delete()
    if not deleted:
        raise ReaderStudyError(f"case {case_id} is not part of this reader study")


@transaction.atomic
def add_readers(rs: ReaderStudy, user_ids) -> list[Reader]:
    require_draft(rs, "readers can be added")
    if not isinstance(user_ids, list) or not user_ids:
        raise ReaderStudyError("user_ids: give a non-empty list of user ids")
    made = []
    for uid in user_ids:
        user = get_user_model().objects.filter(pk=uid).first() if isinstance(uid, int) else None
        if user is None:
            raise ReaderStudyError(f"user {uid!r} does not exist")
        refusal = reader_refusal(user)
        if refusal:
            raise ReaderStudyError(refusal)
        reader, _ = Reader.objects.get_or_create(reader_study=rs, user=user)
        made.append(reader)
    return made


@transaction.atomic
def remove_reader(rs: ReaderStudy, reader_id: int) -> None:
    require_draft(rs, "readers can be removed")
    deleted, _ = Reader.objects.filter(reader_study=rs, pk=reader_id).delete()
    if not deleted:
        raise ReaderStudyError(f"reader {reader_id} is not part of this reader study")


def validate_question_spec(spec: dict) -> dict:
    """Check the type-specific fields of a question (choices, scale); returns the cleaned spec."""
    qtype = spec.get("type")
    choices = spec.get("choices") or []
    if qtype in (Question.Type.SINGLE, Question.Type.MULTIPLE):
        if not isinstance(choices, list) or len(choices) < 2:
            raise ReaderStudyError(f"choices: a {qtype} choice question needs at least two choices")
        if not all(isinstance(c, str) and c.strip() for c in choices) or len(set(choices)) != len(choices):
            raise ReaderStudyError("choices: choices must be distinct non-empty texts")
    elif choices:
        raise ReaderStudyError(f"choices: a {qtype} question has no choices")
    lo, hi = spec.get("scale_min"), spec.get("scale_max")
    if qtype == Question.Type.ORDINAL:
        if lo is None or hi is None or float(lo) != int(lo) or float(hi) != int(hi) or not lo < hi:
            raise ReaderStudyError(
                "scale_min/scale_max: an ordinal scale needs integer bounds with min < max"
            )
        if hi - lo > 20:
            raise ReaderStudyError("scale_min/scale_max: an ordinal scale has at most 21 levels")
    elif qtype == Question.Type.NUMBER:
        if lo is not None and hi is not None and not lo <= hi:
            raise ReaderStudyError("scale_min/scale_max: min must not exceed max")
    elif lo is not None or hi is not None:
        raise ReaderStudyError(f"scale_min/scale_max: a {qtype} question has no scale")
    return spec


def check_question_editable(question: Question) -> None:
    require_draft_design(question.reader_study_id, "questions can be changed")
    if question.has_answers:
        raise Conflict(
            f"question {question.key!r} already has answers and is frozen; "
            "add a new question instead of changing this one"
        )


def add_default_questions(rs: ReaderStudy) -> list[Question]:
    """Add the paper's default questions whose keys the study does not have yet. A default condition whose
    question the study lacks or has with another meaning (``design.check_conditions`` fails) is left off."""
    require_draft(rs, "questions can be added")
    start = (rs.questions.aggregate(m=Max("order"))["m"] or 0) + 1
    specs = [design.question_spec(q) for q in rs.questions.all()]
    have = {s["key"] for s in specs}
    made = []
    for i, spec in enumerate(DEFAULT_QUESTIONS):
        if spec["key"] in have:
            continue
        spec = dict(spec)
        full = {"choices": [], "scale_min": None, "scale_max": None, "show_if": None, **spec}
        try:
            design.check_conditions([*specs, full])
        except design.DesignError:
            spec.pop("show_if", None)
            full["show_if"] = None
        specs.append(full)
        made.append(Question.objects.create(reader_study=rs, order=start + i, **spec))
    return made


# --------------------------------------------------------------------------------------------- status


def _other(method: str) -> str:
    return "dla" if method == "dsa" else "dsa"


def _queue_for(rs: ReaderStudy, reader: Reader, cases: list[Case]) -> list[tuple[Case, str, str]]:
    """Random queue of (case, a_method, b_method) for one reader (independent of other readers), from the
    study's secret seed: in side-by-side mode exactly half of the cases (one more at random when odd) show DLA
    as "A", so the letter says nothing; then the queue is shuffled. Studies opened with the legacy integer seed
    (no ``randomization_seed``) keep its formula, so their stored queues stay reproducible."""
    if not rs.randomization_seed:
        rng = random.Random(f"reader-study:{rs.seed}:reader:{reader.user_id}")
        if rs.mode == ReaderStudy.Mode.SIDE_BY_SIDE:
            items = []
            for case in cases:
                a = rng.choice(METHODS)
                items.append((case, a, _other(a)))
        else:
            items = [(case, m, "") for case in cases for m in METHODS]
        rng.shuffle(items)
        return items
    rng = random.Random(f"reader-study:{rs.randomization_seed}:reader:{reader.user_id}")
    if rs.mode == ReaderStudy.Mode.SIDE_BY_SIDE:
        firsts = ["dsa", "dla"] * (len(cases) // 2) + ([rng.choice(METHODS)] if len(cases) % 2 else [])
        rng.shuffle(firsts)
        items = [(case, a, _other(a)) for case, a in zip(cases, firsts, strict=True)]
    else:
        items = [(case, m, "") for case in cases for m in METHODS]
    rng.shuffle(items)
    return items


@transaction.atomic
def begin_open(rs: ReaderStudy) -> ReaderStudy:
    """draft -> opening (checked: cases, readers with only the Reader role, questions; the design is frozen
    from here on) or closed -> opening (reopen). An opening or open study is returned unchanged. Readers see
    nothing until ``finish_open``."""
    rs = ReaderStudy.objects.select_for_update().get(pk=rs.pk)
    if rs.status in (ReaderStudy.Status.OPEN, ReaderStudy.Status.OPENING):
        return rs
    if rs.status == ReaderStudy.Status.DRAFT:
        if not rs.cases.exists():
            raise ReaderStudyError("add at least one case before opening the reader study")
        readers = list(rs.readers.select_related("user").order_by("id"))
        if not readers:
            raise ReaderStudyError("add at least one reader before opening the reader study")
        for reader in readers:
            refusal = reader_refusal(reader.user)
            if refusal:
                raise ReaderStudyError(f"{refusal}; remove the reader or the other role before opening")
        if not rs.questions.exists():
            raise ReaderStudyError("add at least one question before opening the reader study")
    rs.status = ReaderStudy.Status.OPENING
    rs.save(update_fields=["status"])
    return rs


def case_floor_hu(case: Case) -> float:
    """The window floor of both images of ``case`` (HU): above the background noise of the DSA's cine frames
    (``noise_floor_hu``); computed once (rendering missing DSA frames) and stored on the case."""
    if case.display_floor_hu is None:
        frames = np.stack([frame_hu(case.dsa_volume, i) for i in range(N_ANGLES)])
        floor = noise_floor_hu(frames)
        Case.objects.filter(pk=case.pk, display_floor_hu=None).update(display_floor_hu=floor)
        case.display_floor_hu = Case.objects.values_list("display_floor_hu", flat=True).get(pk=case.pk)
    return case.display_floor_hu


def prepare_frames(rs: ReaderStudy, progress=None) -> dict:
    """Render every missing cine frame of every case's two volumes into the MIP cache and set each case's
    window floor (idempotent). ``progress(fraction, message)`` after each volume."""
    cases = list(rs.cases.select_related("dsa_volume", "dla_volume").order_by("id"))
    rendered, total = 0, 2 * len(cases)
    for i, case in enumerate(cases):
        for j, method in enumerate(METHODS):
            rendered += ensure_cine(case.volume(method))
            if progress is not None:
                done = 2 * i + j + 1
                progress(done / max(1, total), f"frames of {done} of {total} images ready")
        case_floor_hu(case)
    return {"cines": total, "frames_rendered": rendered}


def frames_ready(rs: ReaderStudy) -> bool:
    """True when both volumes of every case have their complete cine in the MIP cache (the window floors are
    then cheap: ``finish_open`` sets any missing one from the cached DSA frames)."""
    cases = list(rs.cases.select_related("dsa_volume", "dla_volume"))
    return all(all(cine_ready(case.volume(m)) for m in METHODS) for case in cases)


@transaction.atomic
def finish_open(rs: ReaderStudy) -> ReaderStudy:
    """opening -> open, once every frame exists (``frames_ready``; else a 409): the first opening creates every
    reader's randomized queue, a reopening keeps them. Any other status is returned unchanged (an opening
    cancelled by ``close_study`` stays cancelled)."""
    rs = ReaderStudy.objects.select_for_update().get(pk=rs.pk)
    if rs.status != ReaderStudy.Status.OPENING:
        return rs
    if not frames_ready(rs):
        raise Conflict("the reader study's frames are not all rendered yet; it opens when they are")
    for case in rs.cases.select_related("dsa_volume").filter(display_floor_hu=None):
        case_floor_hu(case)
    if rs.opened_at is None:
        cases = list(rs.cases.order_by("id"))
        for reader in rs.readers.order_by("id"):
            for position, (case, a, b) in enumerate(_queue_for(rs, reader, cases), start=1):
                Assignment.objects.create(reader=reader, case=case, position=position, a_method=a, b_method=b)
        rs.opened_at = timezone.now()
    rs.status = ReaderStudy.Status.OPEN
    rs.closed_at = None
    rs.save(update_fields=["status", "opened_at", "closed_at"])
    return rs


def open_study(rs: ReaderStudy, progress=None) -> ReaderStudy:
    """Open now, in this process (commands, tests, benchmarks): ``begin_open``, render what is missing
    (``prepare_frames``), ``finish_open``. The API does the middle step in the opening task instead."""
    rs = begin_open(rs)
    if rs.status == ReaderStudy.Status.OPENING:
        prepare_frames(rs, progress)
        rs = finish_open(rs)
    return rs


@transaction.atomic
def close_study(rs: ReaderStudy) -> ReaderStudy:
    """open -> closed. Closing a study that is still opening cancels the opening: back to draft when it was
    never open, else closed again."""
    rs = ReaderStudy.objects.select_for_update().get(pk=rs.pk)
    if rs.status == ReaderStudy.Status.DRAFT:
        raise Conflict("a draft reader study cannot be closed; open it first")
    if rs.status == ReaderStudy.Status.OPENING and rs.opened_at is None:
        rs.status = ReaderStudy.Status.DRAFT
        rs.save(update_fields=["status"])
    elif rs.status in (ReaderStudy.Status.OPEN, ReaderStudy.Status.OPENING):
        rs.status = ReaderStudy.Status.CLOSED
        rs.closed_at = timezone.now()
        rs.save(update_fields=["status", "closed_at"])
    return rs


# --------------------------------------------------------------------------------------------- answers


def validate_value(question: Question, value):
    """Check ``value`` against the question; returns the normalized value (None clears the answer)."""
    if value is None:
        return None
    qt = question.type
    label = f"question {question.key!r}"
    if qt == Question.Type.YES_NO:
        if not isinstance(value, bool):
            raise ReaderStudyError(f"{label} takes true or false, got {value!r}")
        return value
    if qt == Question.Type.SINGLE:
        if value not in question.choices:
            raise ReaderStudyError(f"{label}: {value!r} is not one of {question.choices}")
        return value
    if qt == Question.Type.MULTIPLE:
        if not isinstance(value, list) or any(v not in question.choices for v in value):
            raise ReaderStudyError(f"{label} takes a list of choices from {question.choices}, got {value!r}")
        return [c for c in question.choices if c in value]  # canonical order, no duplicates
    if qt in (Question.Type.ORDINAL, Question.Type.NUMBER):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ReaderStudyError(f"{label} takes a number, got {value!r}")
        if qt == Question.Type.ORDINAL and value != int(value):
            raise ReaderStudyError(f"{label} takes a whole number on its scale, got {value!r}")
        lo, hi = question.scale_min, question.scale_max
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ReaderStudyError(f"{label}: {value} is outside the scale {lo:g}..{hi:g}")
        return int(value) if qt == Question.Type.ORDINAL else value
    if not isinstance(value, str):
        raise ReaderStudyError(f"{label} takes text, got {value!r}")
    if len(value) > 5000:
        raise ReaderStudyError(f"{label}: text is longer than 5000 characters")
    return value


def _require_open(rs: ReaderStudy) -> None:
    if rs.status != ReaderStudy.Status.OPEN:
        raise Conflict(f"the reader study is {rs.status}; answers can no longer be changed")


def add_time(assignment: Assignment, seconds) -> None:
    if seconds is None:
        return
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ReaderStudyError(f"elapsed_s must be a non-negative number of seconds, got {seconds!r}")
    Assignment.objects.filter(pk=assignment.pk).update(
        time_spent_s=F("time_spent_s") + min(float(seconds), MAX_TIME_PER_CALL_S)
    )


@transaction.atomic
def save_answers(assignment: Assignment, user, answers, *, elapsed_s=None) -> Assignment:
    """Validate every given answer first, then store the changed ones and append one event each."""
    assignment = (
        Assignment.objects.select_for_update().select_related("reader__reader_study").get(pk=assignment.pk)
    )
    rs = assignment.reader_study
    _require_open(rs)
    if assignment.submitted_at and not rs.allow_edits:
        raise Conflict("this case is submitted and its answers are locked")
    if not isinstance(answers, list):
        raise ReaderStudyError("answers: give a list of {question, image, value}")
    all_questions = list(rs.questions.all())
    questions = {q.pk: q for q in all_questions}
    cleaned = []
    for item in answers:
        if not isinstance(item, dict) or "question" not in item or "value" not in item:
            raise ReaderStudyError("answers: every answer needs question, image and value")
        question = questions.get(item["question"]) if isinstance(item["question"], int) else None
        if question is None:
            raise ReaderStudyError(f"question {item['question']!r} is not part of this reader study")
        image = item.get("image", "A")
        if image not in assignment.images():
            raise ReaderStudyError(
                f"image {image!r} is not shown in this case; use {' or '.join(assignment.images())}"
            )
        cleaned.append((question, image, validate_value(question, item["value"])))
    current = {(a.question_id, a.image): a for a in Answer.objects.filter(assignment=assignment)}
    cleaned += _hidden_answers(assignment, all_questions, current, cleaned)
    add_time(assignment, elapsed_s)
    kind = AnswerEvent.Kind.EDIT_AFTER_SUBMIT if assignment.submitted_at else AnswerEvent.Kind.SAVE
    now = timezone.now()
    new_rows, changed_rows, events = [], [], []
    for question, image, value in cleaned:
        row = current.get((question.pk, image))
        if row is not None and row.value == value:
            continue
        if row is None:
            row = Answer(assignment=assignment, question=question, image=image, value=value, updated_at=now)
            current[(question.pk, image)] = row
            new_rows.append(row)
        else:
            row.value, row.updated_at = value, now
            if row.pk is not None:
                changed_rows.append(row)
        events.append(
            AnswerEvent(
                assignment=assignment,
                question=question,
                image=image,
                value=value,
                kind=kind,
                user=user,
                created_at=now,
            )
        )
    Answer.objects.bulk_create(new_rows)
    Answer.objects.bulk_update(changed_rows, ["value", "updated_at"])
    AnswerEvent.objects.bulk_create(events)  # append-only: events are only ever inserted
    if assignment.opened_at is None:
        assignment.opened_at = now
        assignment.save(update_fields=["opened_at", "updated_at"])
    assignment.refresh_from_db()
    return assignment


def _values_by_image(answers) -> dict[str, dict[int, object]]:
    """{image: {question id: value}} of ``answers`` ((question id, image) -> value)."""
    out: dict[str, dict[int, object]] = defaultdict(dict)
    for (qid, image), value in answers.items():
        out[image][qid] = value
    return out


def _hidden_answers(assignment: Assignment, questions: list[Question], current: dict, cleaned: list) -> list:
    """Conditional questions (``design.shown``) after this save: a non-empty answer to a question its image
    hides is refused (400 naming the condition); a stored answer whose question this save hides is cleared
    (returned as extra (question, image, None) items, so the history records it)."""
    after = {key: row.value for key, row in current.items()}
    after.update({(q.pk, image): value for q, image, value in cleaned})
    by_image = _values_by_image(after)
    by_key = {q.key: q for q in questions}
    sent = {(q.pk, image) for q, image, _v in cleaned}
    clears = []
    for image in assignment.images():
        visible = design.shown(questions, by_image.get(image, {}))
        for q in questions:
            if q.pk in visible or not _answered(after.get((q.pk, image))):
                continue
            if (q.pk, image) in sent:
                cond = q.show_if
                parent = by_key.get(cond["question"])
                raise ReaderStudyError(
                    f"question {q.key!r} is not shown for image {image}: it is asked only when "
                    f"'{parent.text if parent else cond['question']}' is answered {_readable(cond['answer'])}"
                )
            clears.append((q, image, None))
    return clears


def _readable(value) -> str:
    return "yes" if value is True else "no" if value is False else repr(value)


def missing_required(assignment: Assignment) -> list[str]:
    """The required questions an image shows (``design.shown``) that have no answer yet; a hidden question is
    never required."""
    answers = Answer.objects.filter(assignment=assignment)
    have = {(a.question_id, a.image) for a in answers if _answered(a.value)}
    by_image = _values_by_image({(a.question_id, a.image): a.value for a in answers})
    questions = list(assignment.reader_study.questions.all())
    visible = {image: design.shown(questions, by_image.get(image, {})) for image in assignment.images()}
    missing = []
    for q in questions:
        for image in assignment.images():
            if q.required and q.pk in visible[image] and (q.pk, image) not in have:
                missing.append(f"{q.text} ({image})" if len(assignment.images()) > 1 else q.text)
    return missing


@transaction.atomic
def submit(assignment: Assignment, user, *, elapsed_s=None) -> Assignment:
    """Final submit of one case; submitting again is a no-op that returns the same state."""
    assignment = (
        Assignment.objects.select_for_update().select_related("reader__reader_study").get(pk=assignment.pk)
    )
    if assignment.submitted_at is not None:
        return assignment
    _require_open(assignment.reader_study)
    missing = missing_required(assignment)
    if missing:
        raise ReaderStudyError("answer the required questions first: " + "; ".join(missing))
    add_time(assignment, elapsed_s)
    now = timezone.now()
    assignment.submitted_at = now
    assignment.save(update_fields=["submitted_at", "updated_at"])
    AnswerEvent.objects.create(
        assignment=assignment, kind=AnswerEvent.Kind.SUBMIT, value=None, user=user, created_at=now
    )
    assignment.refresh_from_db()
    return assignment


# --------------------------------------------------------------------------------------------- images


def snap_angle(angle) -> int:
    """Index of the cine frame nearest to ``angle`` degrees (any real number; wraps around)."""
    try:
        a = float(angle)
    except (TypeError, ValueError):
        raise ReaderStudyError(f"angle must be a number of degrees, got {angle!r}")
    if not math.isfinite(a):
        raise ReaderStudyError(f"angle must be finite, got {angle!r}")
    return int(round(a / (360.0 / N_ANGLES))) % N_ANGLES


def frame_view(frame_index: int) -> mip_cache.View:
    """The view of cine frame ``frame_index``: upright, ``FRAME_SIZE`` pixels, 360 / ``N_ANGLES`` degrees apart."""
    return mip_cache.View.of(frame_index * 360.0 / N_ANGLES, 0.0, FRAME_SIZE)


def ensure_cine(volume: Volume, progress=None) -> int:
    """Render the missing frames of ``volume``'s cine into the MIP cache (idempotent); returns how many.
    ``progress(fraction)`` is called after each frame."""
    return mip_cache.fill_cine(
        mip_cache.volume_source(volume),
        size=FRAME_SIZE,
        n_angles=N_ANGLES,
        progress=None if progress is None else (lambda fraction, _angle: progress(fraction)),
    )


def cine_ready(volume: Volume) -> bool:
    """True when every frame of ``volume``'s cine is in the MIP cache."""
    cached = mip_cache.cached_angles(mip_cache.volume_source(volume), size=FRAME_SIZE, n_angles=N_ANGLES)
    return len(cached) == N_ANGLES


def frame_hu(volume: Volume, frame_index: int) -> np.ndarray:
    """One cine frame in HU (float32 [FRAME_SIZE, FRAME_SIZE]): from the MIP cache, else rendered and stored
    now, so the first and every later fetch of a frame give the same bytes."""
    frame = mip_cache.frame(mip_cache.volume_source(volume), frame_view(frame_index))
    return frame.array.astype(np.float32)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def fixed_size_png(image: np.ndarray) -> bytes:
    """A grayscale PNG of a uint8 [h, w] image whose byte length depends only on h and w (stored, uncompressed
    deflate blocks; one IDAT; no text, time or other metadata chunks), so sizes never reveal the content."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ReaderStudyError(f"expected a uint8 [h, w] image, got {image.dtype} {image.shape}")
    h, w = image.shape
    raw = np.zeros((h, w + 1), dtype=np.uint8)  # filter byte 0 (none) per row
    raw[:, 1:] = image
    idat = zlib.compress(raw.tobytes(), level=0)
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def reader_window(case: Case, window: str) -> Window:
    """The window a reader's preset ``window`` shows both images of ``case`` with: its lower end raised to the
    case's floor above the DSA noise (``case_floor_hu``), identical for A and B."""
    return floor_window(Window(*READER_WINDOWS[window]), case_floor_hu(case))


def blinded_frame_png(assignment: Assignment, image: str, angle, window: str | None) -> bytes:
    """One frame of image ``image`` as a fixed-size PNG. Both volumes' frames of this angle are in the MIP
    cache before either is served (a missing one, e.g. removed from storage, is rendered together with its
    partner), so response times do not depend on the method; both are shown with the case's one window."""
    if image not in assignment.images():
        raise ReaderStudyError(f"image {image!r} is not shown in this case")
    window = window or assignment.reader_study.window_preset
    if window not in READER_WINDOWS:
        raise ReaderStudyError(f"unknown window {window!r}; use one of {', '.join(READER_WINDOWS)}")
    case = assignment.case
    index = snap_angle(angle)
    shown = assignment.method_of(image)
    other = case.volume(_other(shown))
    if not mip_cache.has_frame(mip_cache.frame_key(mip_cache.volume_source(other), frame_view(index))):
        frame_hu(other, index)  # renders and stores the partner first
    hu = frame_hu(case.volume(shown), index)
    return fixed_size_png(window_to_uint8(hu, reader_window(case, window)))


# --------------------------------------------------------------------------------------------- results


def _fmt_p(p):
    return None if p is None else float(p)


def collect_reads(rs: ReaderStudy, *, submitted_only: bool = True):
    """{question_id: {(case_id, reader_user_id, method): value}} of the final answers."""
    answers = Answer.objects.filter(assignment__reader__reader_study=rs).select_related("assignment__reader")
    if submitted_only:
        answers = answers.exclude(assignment__submitted_at=None)
    reads: dict[int, dict] = defaultdict(dict)
    for a in answers:
        asg = a.assignment
        reads[a.question_id][(asg.case_id, asg.reader.user_id, asg.method_of(a.image))] = a.value
    return reads


def _answered(v) -> bool:
    return v is not None and v != "" and v != []


def _agreement(question: Question, values_by_item: dict, reader_ids: list[int]) -> dict:
    """Kappas over items rated by every reader. values_by_item: {item: {reader_id: value}}."""
    items = [
        item for item, by in sorted(values_by_item.items()) if all(_answered(by.get(r)) for r in reader_ids)
    ]
    out = {"n_items": len(items), "n_readers": len(reader_ids)}
    if len(reader_ids) < 2 or not items:
        out["note"] = "needs at least two readers and items rated by all of them"
        return out
    if question.type == Question.Type.YES_NO:
        cats = [False, True]
    elif question.type == Question.Type.SINGLE:
        cats = list(question.choices)
    else:
        cats = list(range(int(question.scale_min), int(question.scale_max) + 1))
    ratings = [[values_by_item[item][r] for r in reader_ids] for item in items]

    def k(result):
        return {"value": result.value, "reason": result.reason}

    if len(reader_ids) == 2:
        r1, r2 = [r[0] for r in ratings], [r[1] for r in ratings]
        out["method"] = "cohen"
        out["kappa"] = k(st.cohen_kappa(r1, r2, categories=cats))
        if question.type == Question.Type.ORDINAL:
            out["kappa_linear"] = k(st.cohen_kappa(r1, r2, categories=cats, weights="linear"))
            out["kappa_quadratic"] = k(st.cohen_kappa(r1, r2, categories=cats, weights="quadratic"))
    else:
        out["method"] = "fleiss"
        out["kappa"] = k(st.fleiss_kappa(st.ratings_to_table(ratings, cats)))
    return out


def question_results(question: Question, reads: dict, reader_ids: list[int]) -> dict:
    by_method = {m: {k: v for k, v in reads.items() if k[2] == m and _answered(v)} for m in METHODS}
    res = {
        "id": question.pk,
        "key": question.key,
        "text": question.text,
        "type": question.type,
        "methods": {},
    }
    qt = question.type
    for m in METHODS:
        vals = list(by_method[m].values())
        entry = {"n": len(vals), "label": METHOD_LABELS[m]}
        if qt == Question.Type.YES_NO:
            k = sum(1 for v in vals if v is True)
            entry.update(positive=k, frequency=st.frequency(vals, True) if vals else None)
        elif qt in (Question.Type.SINGLE, Question.Type.MULTIPLE):
            counts = {}
            for c in question.choices:
                k = sum(1 for v in vals if (v == c if qt == Question.Type.SINGLE else c in v))
                counts[c] = {"count": k, "frequency": format_frequency(k, len(vals)) if vals else None}
            entry["choices"] = counts
        elif qt in (Question.Type.ORDINAL, Question.Type.NUMBER):
            entry.update(
                mean=float(np.mean(vals)) if vals else None,
                median=float(median(vals)) if vals else None,
            )
            if qt == Question.Type.ORDINAL:
                levels = range(int(question.scale_min), int(question.scale_max) + 1)
                entry["levels"] = {str(v): sum(1 for x in vals if x == v) for v in levels}
        else:
            entry["n_comments"] = len(vals)
        res["methods"][m] = entry
    # paired test per (case, reader)
    pairs = sorted({(c, r) for (c, r, _m) in by_method["dsa"]} & {(c, r) for (c, r, _m) in by_method["dla"]})
    x = [by_method["dsa"][(c, r, "dsa")] for c, r in pairs]
    y = [by_method["dla"][(c, r, "dla")] for c, r in pairs]
    if pairs and qt == Question.Type.YES_NO:
        t = st.mcnemar_from_pairs(x, y)
        res["paired_test"] = {
            "test": "exact McNemar (DSA vs DLA, paired per case and reader)",
            "n_pairs": len(pairs),
            "b_dsa_only": t.b,
            "c_dla_only": t.c,
            "statistic": t.statistic,
            "p_value": _fmt_p(t.p_value),
            "note": t.note,
        }
    elif pairs and qt in (Question.Type.ORDINAL, Question.Type.NUMBER):
        t = st.wilcoxon_signed_rank(x, y)
        res["paired_test"] = {
            "test": "Wilcoxon signed-rank (DSA vs DLA, paired per case and reader)",
            "n_pairs": len(pairs),
            "n_nonzero": t.n_nonzero,
            "statistic": t.statistic,
            "p_value": _fmt_p(t.p_value),
            "note": t.note,
        }
    if qt in (Question.Type.YES_NO, Question.Type.SINGLE, Question.Type.ORDINAL):
        agreement = {}
        for scope in (*METHODS, "all"):
            items: dict = defaultdict(dict)
            for (c, r, m), v in reads.items():
                if scope in (m, "all"):
                    items[(c, m)][r] = v
            agreement[scope] = _agreement(question, items, reader_ids)
        res["agreement"] = agreement
    return res


def compute_results(rs: ReaderStudy) -> dict:
    """Everything the results page, the CSV/HTML reports and the tests need, from submitted answers."""
    readers = list(rs.readers.select_related("user").order_by("user__username"))
    reader_ids = [r.user_id for r in readers]
    reads = collect_reads(rs)
    progress = []
    for r in readers:
        asg = list(r.assignments.all())
        done = [a for a in asg if a.submitted_at]
        times = [a.time_spent_s for a in done]
        progress.append(
            {
                "reader": r.user.username,
                "user_id": r.user_id,
                "submitted": len(done),
                "total": len(asg),
                "progress": f"{len(done)} of {len(asg)}",
                "total_time_s": float(sum(a.time_spent_s for a in asg)),
                "median_time_per_case_s": float(median(times)) if times else None,
                "mean_time_per_case_s": float(np.mean(times)) if times else None,
            }
        )
    questions = [
        question_results(q, reads.get(q.pk, {}), reader_ids) for q in rs.questions.order_by("order", "id")
    ]
    return {
        "reader_study": {
            "id": rs.pk,
            "title": rs.title,
            "status": rs.status,
            "mode": rs.mode,
            "seed": rs.seed_if_closed(),
        },
        "n_cases": rs.cases.count(),
        "n_readers": len(readers),
        "readers": progress,
        "questions": questions,
        "note": "Statistics use submitted cases only; paired tests pair the DSA and DLA reads of one case by one reader.",
    }
