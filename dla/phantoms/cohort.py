"""The paper's cohort of synthetic subjects: ``cohort_plan`` draws who is in which split with which injection,
motion, aneurysm and coil (35 train / 8 validation / 62 test; 89 ICA / 16 vertebral injections for 105
subjects), and ``subject_from_plan`` builds one planned subject with ``make_subject``.  Plans are plain
JSON-ready dicts, deterministic in their arguments; pure numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dla.phantoms.grid import PhantomParameterError, check_seed
from dla.phantoms.motion import MOTION_MAX_ROTATION_DEG, MOTION_MAX_TRANSLATION_MM
from dla.phantoms.shift import check_shift
from dla.phantoms.subject import ANEURYSM_PROBABILITY, PhantomSubject, make_subject
from dla.phantoms.vessels import ANEURYSM_SITES


def cohort_plan(
    n_subjects: int = 105, seed: int = 0, *, motion_fraction: float = 0.4, shift=None
) -> list[dict[str, Any]]:
    """Per-subject parameters of a synthetic cohort mirroring the paper's split.

    For 105 subjects: 35 train / 8 validation / 62 test, 89 ICA / 16 vertebral injections; other sizes scale
    these proportions (rounded, test takes the remainder).  Exactly ``round(motion_fraction * n)`` subjects
    get inter-sweep motion (explicit rotation/translation values), the others none.  Returns a list of dicts
    with subject_id ("PH-001", ...), split, seed, injection ("ica"/"vertebral"), injected_side, motion (bool),
    aneurysm, coil and ``make_subject_kwargs`` (pass to ``make_subject`` together with a shape).
    Deterministic in (n_subjects, seed, motion_fraction).  ``shift`` (None, or a dict of
    ``dla.phantoms.shift.SHIFT_OPTIONS`` overrides, validated here): every entry's ``make_subject_kwargs`` gets
    it as ``shift`` (a shifted cohort: the same subjects and split, other settings); None or {} leaves the plan
    as it was, without the key.
    """
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int | np.integer) or n_subjects < 1:
        raise PhantomParameterError(f"n_subjects must be a positive int, got {n_subjects!r}")
    if not (0.0 <= float(motion_fraction) <= 1.0):
        raise PhantomParameterError(f"motion_fraction must be within [0, 1], got {motion_fraction!r}")
    seed = check_seed(seed)
    shift_d = check_shift(shift)
    n = int(n_subjects)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0407]))
    n_train = round(n * 35 / 105)
    n_val = round(n * 8 / 105)
    n_test = n - n_train - n_val
    n_vert = round(n * 16 / 105)
    n_motion = round(float(motion_fraction) * n)
    split = np.array(["train"] * n_train + ["validation"] * n_val + ["test"] * n_test)[rng.permutation(n)]
    vertebral = np.zeros(n, dtype=bool)
    vertebral[rng.permutation(n)[:n_vert]] = True
    moving = np.zeros(n, dtype=bool)
    moving[rng.permutation(n)[:n_motion]] = True
    plan = []
    for i in range(n):
        sub_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0] & 0x7FFFFFFF)
        side = "left" if rng.uniform() < 0.5 else "right"
        rot = rng.uniform(-MOTION_MAX_ROTATION_DEG, MOTION_MAX_ROTATION_DEG, 3)
        tr = rng.uniform(-MOTION_MAX_TRANSLATION_MM, MOTION_MAX_TRANSLATION_MM, 3)
        has_aneurysm = bool(rng.uniform() < ANEURYSM_PROBABILITY)
        site = ANEURYSM_SITES[int(rng.integers(0, len(ANEURYSM_SITES)))]
        radius = float(rng.uniform(2.0, 5.0))
        coil_kind = ("coil" if rng.uniform() < 0.7 else "clip") if rng.uniform() < 0.3 else False
        injection = "vertebral" if vertebral[i] else "ica"
        motion = {"rotation_deg": rot.tolist(), "translation_mm": tr.tolist()} if moving[i] else False
        aneurysm = {"site": site, "radius_mm": radius} if has_aneurysm else False
        coil = coil_kind if has_aneurysm else False
        kwargs = {
            "seed": sub_seed,
            "injection": f"ica_{side}" if injection == "ica" else f"vertebral_{side}",
            "motion": motion,
            "aneurysm": aneurysm,
            "coil": coil,
        }
        if shift_d:
            kwargs["shift"] = dict(shift_d)
        plan.append(
            {
                "subject_id": f"PH-{i + 1:03d}",
                "split": str(split[i]),
                "seed": sub_seed,
                "injection": injection,
                "injected_side": side,
                "motion": bool(moving[i]),
                "aneurysm": aneurysm,
                "coil": coil,
                "make_subject_kwargs": kwargs,
            }
        )
    return plan


def subject_from_plan(
    entry: dict[str, Any], shape_zyx=(64, 64, 64), spacing_mm=None, *, shift=None
) -> PhantomSubject:
    """``make_subject`` for one ``cohort_plan`` entry; ``shift`` (see ``dla.phantoms.shift``) overrides the
    entry's own ``make_subject_kwargs["shift"]`` when given (a shifted cohort: the same plan, other settings)."""
    kwargs = dict(entry["make_subject_kwargs"])
    if shift is not None:
        kwargs["shift"] = shift
    return make_subject(shape_zyx, spacing_mm, **kwargs)
