"""The paper's cohort plan (dla.phantoms.cohort)."""

from __future__ import annotations

import json

import numpy as np

from dla.phantoms import cohort_plan, subject_from_plan


def test_cohort_plan_counts_and_determinism():
    plan = cohort_plan()
    assert len(plan) == 105
    assert [p["subject_id"] for p in plan] == [f"PH-{i:03d}" for i in range(1, 106)]
    splits = [p["split"] for p in plan]
    assert (splits.count("train"), splits.count("validation"), splits.count("test")) == (35, 8, 62)
    injections = [p["injection"] for p in plan]
    assert (injections.count("ica"), injections.count("vertebral")) == (89, 16)
    n_motion = sum(p["motion"] for p in plan)
    assert n_motion == 42  # 40 % of 105
    assert len({p["seed"] for p in plan}) == 105
    for p in plan:
        kw = p["make_subject_kwargs"]
        assert (kw["motion"] is not False) == p["motion"]
        assert kw["injection"].startswith(p["injection"])
    assert json.dumps(plan) == json.dumps(cohort_plan())
    assert json.dumps(plan) != json.dumps(cohort_plan(seed=1))
    assert sum(p["motion"] for p in cohort_plan(50, motion_fraction=0.2)) == 10
    small = cohort_plan(10)
    assert len(small) == 10 and {p["split"] for p in small} <= {"train", "validation", "test"}


def test_subject_from_plan_follows_the_plan():
    plan = cohort_plan()
    entry = next(p for p in plan if p["injection"] == "vertebral" and p["motion"])
    s = subject_from_plan(entry, shape_zyx=(24, 24, 24))
    assert s.injection == "vertebral" and s.motion["enabled"]
    assert np.allclose(s.motion["rotation_deg"], entry["make_subject_kwargs"]["motion"]["rotation_deg"])
    assert s.params["seed"] == entry["seed"]
