"""What of a reader study's design is audited, defined once for the API views and the Django admin: the study
and question fields, their JSON snapshots (never the randomization seed), and the rules of conditional
questions.

Conditional questions: ``Question.show_if`` is null (always shown) or ``{"question": <key>, "answer": <value>}``:
the question is shown for an image only while the question ``key`` (of the same study, a yes/no, single
choice, multiple choice or ordinal question) is shown for that image and answered ``value`` there (for a
multiple-choice condition: ``value`` is among the chosen). The paper's "locations of residual bone artifacts"
is shown only when "residual bone artifact present" is yes. ``check_conditions`` checks a whole question set
(the condition's question exists, is not the question itself, takes that answer, no cycles), so a change to
any question (its key, type or choices, or deleting it) that would leave a dangling condition is refused.
``shown`` says which questions one image shows for a set of answers; ``services`` uses it to validate answers
(a hidden question is never required, an answer to it is refused, a stored one is cleared when it hides)."""

from .models import Question, ReaderStudy

STUDY_FIELDS = ("title", "instructions", "mode", "allow_edits", "window_preset", "status")
QUESTION_FIELDS = (
    "order",
    "key",
    "text",
    "type",
    "choices",
    "scale_min",
    "scale_max",
    "scale_labels",
    "required",
    "show_if",
)
CONDITION_TYPES = (Question.Type.YES_NO, Question.Type.SINGLE, Question.Type.MULTIPLE, Question.Type.ORDINAL)


class DesignError(ValueError):
    """A question set whose conditions do not hold (the API answers 400 with the message)."""


def study_fields(rs: ReaderStudy) -> dict:
    return {f: getattr(rs, f) for f in STUDY_FIELDS}


def study_snapshot(rs: ReaderStudy) -> dict:
    """The design of a reader study for the audit log: its fields, cases and readers."""
    return {
        **study_fields(rs),
        "cases": sorted(rs.cases.values_list("study_id", flat=True)),
        "readers": sorted(rs.readers.values_list("user_id", flat=True)),
    }


def question_snapshot(question: Question) -> dict:
    return {"id": question.pk, **{f: getattr(question, f) for f in QUESTION_FIELDS}}


def question_spec(question: Question) -> dict:
    """The fields of ``question`` that conditions depend on, as a plain dict."""
    return {f: getattr(question, f) for f in ("key", "type", "choices", "scale_min", "scale_max", "show_if")}


def _check_answer(parent: dict, answer, label: str) -> None:
    qtype = parent.get("type")
    if qtype == Question.Type.YES_NO:
        if not isinstance(answer, bool):
            raise DesignError(f"{label}: {parent['key']!r} is a yes/no question; answer true or false")
    elif qtype in (Question.Type.SINGLE, Question.Type.MULTIPLE):
        if answer not in (parent.get("choices") or []):
            raise DesignError(f"{label}: {answer!r} is not one of the choices of {parent['key']!r}")
    elif qtype == Question.Type.ORDINAL:
        lo, hi = parent.get("scale_min"), parent.get("scale_max")
        if isinstance(answer, bool) or not isinstance(answer, int) or not lo <= answer <= hi:
            raise DesignError(
                f"{label}: answer a whole number on the scale {lo:g}..{hi:g} of {parent['key']!r}"
            )
    else:
        raise DesignError(
            f"{label}: {parent['key']!r} is a {qtype} question; a condition needs a yes/no, single choice, "
            "multiple choice or ordinal question"
        )


def check_show_if_shape(show_if) -> dict | None:
    """``show_if`` as stored: null, or exactly ``{"question": <key text>, "answer": <value>}``."""
    if show_if in (None, {}):
        return None
    if not isinstance(show_if, dict) or set(show_if) != {"question", "answer"}:
        raise DesignError(
            'show_if: give null or {"question": <key of another question>, "answer": <the answer that shows '
            'this one>}, e.g. {"question": "residual_bone", "answer": true}'
        )
    if not isinstance(show_if["question"], str) or not show_if["question"]:
        raise DesignError("show_if: question must be the key of another question of this study")
    return show_if


def check_conditions(specs: list[dict]) -> None:
    """Raise ``DesignError`` naming the problem unless every ``show_if`` of the question set ``specs`` (dicts
    with key, type, choices, scale_min, scale_max, show_if) refers to another question of the set that can take
    its answer, without cycles."""
    by_key = {s["key"]: s for s in specs}
    for spec in specs:
        cond = check_show_if_shape(spec.get("show_if"))
        if cond is None:
            continue
        label = f"show_if of {spec['key']!r}"
        if cond["question"] == spec["key"]:
            raise DesignError(f"{label}: a question cannot depend on itself")
        parent = by_key.get(cond["question"])
        if parent is None:
            raise DesignError(f"{label}: there is no question {cond['question']!r} in this study")
        _check_answer(parent, cond["answer"], label)
    for spec in specs:  # cycles: follow the chain of conditions
        seen, key = [], spec["key"]
        while key is not None:
            if key in seen:
                raise DesignError(f"show_if: the conditions of {' -> '.join([*seen, key])} form a cycle")
            seen.append(key)
            cond = by_key[key].get("show_if") if key in by_key else None
            key = cond["question"] if cond else None


def check_question_change(rs: ReaderStudy, *, old_key: str | None = None, new: dict | None = None) -> None:
    """Check the study's question set after replacing the question ``old_key`` (None: adding) by ``new``
    (None: deleting it); ``DesignError`` when a condition would dangle or break."""
    specs = [question_spec(q) for q in rs.questions.all() if q.key != old_key]
    if new is not None:
        specs.append(new)
    elif old_key is not None:
        dependants = sorted(s["key"] for s in specs if (s.get("show_if") or {}).get("question") == old_key)
        if dependants:
            raise DesignError(
                f"question {old_key!r} is the condition of {', '.join(map(repr, dependants))}; change or "
                "delete those first"
            )
    if old_key is not None and new is not None and new["key"] != old_key:
        dependants = sorted(s["key"] for s in specs if (s.get("show_if") or {}).get("question") == old_key)
        if dependants:
            raise DesignError(
                f"key: question {old_key!r} is the condition of {', '.join(map(repr, dependants))}; its key "
                "cannot change"
            )
    check_conditions(specs)


def condition_met(show_if: dict, value) -> bool:
    """True when the answer ``value`` of the condition's question shows the dependent question."""
    if value is None:
        return False
    if isinstance(value, list):
        return show_if["answer"] in value
    if isinstance(show_if["answer"], bool) or isinstance(value, bool):
        return value is show_if["answer"]
    return value == show_if["answer"]


def shown(questions, values: dict) -> set:
    """The ids of the questions one image shows. ``questions``: the study's Question rows; ``values``:
    {question id: that image's answer}. A question is shown when it has no condition, or its condition's
    question is shown and answered so."""
    by_key = {q.key: q for q in questions}
    memo: dict[int, bool] = {}

    def visible(q, depth=0) -> bool:
        if q.pk not in memo:
            cond = q.show_if
            if not cond or depth > len(by_key):
                memo[q.pk] = not cond
            else:
                parent = by_key.get(cond["question"])
                memo[q.pk] = (
                    parent is not None
                    and visible(parent, depth + 1)
                    and condition_met(cond, values.get(parent.pk))
                )
        return memo[q.pk]

    return {q.pk for q in questions if visible(q)}
