"""Static anatomy and region masks (dla.phantoms.anatomy): where the regions lie, and ``make_anatomy`` /
``anatomy_from_params`` (anatomy only, no vessels or physics) reproducing make_subject's regions exactly."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from dla.classes import BONE
from dla.phantoms import (
    ANATOMY_REGION_NAMES,
    PhantomParameterError,
    anatomy_from_params,
    cohort_plan,
    make_anatomy,
    make_subject,
    subject_from_plan,
)

from .cases import lps_coordinates, subject


def test_regions_lie_where_their_names_say():
    s = subject()
    for name in ANATOMY_REGION_NAMES:
        assert s.regions[name].any(), name
    # LPS: -y anterior, +z superior
    nasal = lps_coordinates(s, s.regions["nasal_cavity"]).mean(axis=0)
    otic = lps_coordinates(s, s.regions["otic_capsule"])
    vault = lps_coordinates(s, s.regions["vault"]).mean(axis=0)
    base = lps_coordinates(s, s.regions["skull_base"]).mean(axis=0)
    assert nasal[1] < -20 and nasal[2] < vault[2]
    assert base[2] < vault[2]
    assert (otic[:, 0] > 15).any() and (otic[:, 0] < -15).any()  # one capsule on each side
    assert abs(otic[:, 0].mean()) < 5
    # otic capsules are the densest bone
    fill = s.fill_hu.astype(np.float64)
    assert np.median(fill[s.regions["otic_capsule"] & (s.truth == BONE)]) > np.median(fill[s.truth == BONE])


CASES = [
    ((32, 32, 32), None, 0, {}),
    ((40, 48, 44), None, 3, {"motion": True, "injection": "vertebral"}),
    (
        (36, 40, 28),
        (4.5, 4.0, 5.0),
        11,
        {"aneurysm": {"site": "mca_right", "radius_mm": 5.0}, "coil": "clip"},
    ),
    ((48, 48, 48), None, 12345, {"aneurysm": True, "coil": "coil", "injection": "ica_left"}),
]


@pytest.mark.parametrize("shape, spacing, seed, kwargs", CASES)
def test_anatomy_alone_equals_the_subjects_anatomy(shape, spacing, seed, kwargs):
    s = make_subject(shape, spacing, seed, **kwargs)
    stored = json.loads(json.dumps(s.params))  # as kept in a study's metadata
    for anatomy in (make_anatomy(shape, spacing, seed), anatomy_from_params(stored)):
        assert anatomy.shape_zyx == shape and anatomy.truth.dtype == np.uint8
        assert anatomy.spacing_mm == s.spacing_mm and np.array_equal(anatomy.affine_lps, s.affine_lps)
        assert set(anatomy.regions) == set(ANATOMY_REGION_NAMES)
        for name in ANATOMY_REGION_NAMES:
            assert anatomy.regions[name].dtype == bool
            assert np.array_equal(anatomy.regions[name], s.regions[name]), name
        # the subject's truth is the anatomy's, except where vessel lumens (every territory, the sac) and metal are
        vessels = s.regions["metal"].copy()
        for name in ("vessels_anterior_left", "vessels_anterior_right", "vessels_posterior"):
            vessels |= s.regions[name]
        assert vessels.any()
        assert np.array_equal(anatomy.truth[~vessels], s.truth[~vessels])
        assert not np.any((s.truth == BONE) & (anatomy.truth != BONE))
        assert np.any((anatomy.truth == BONE) & vessels)  # the ICAs run through the skull base


def test_anatomy_from_a_planned_subject():
    entry = next(p for p in cohort_plan(12, seed=2) if p["motion"] and p["injection"] == "vertebral")
    s = subject_from_plan(entry, (32, 36, 40))
    anatomy = anatomy_from_params(json.loads(json.dumps(s.params)))
    assert all(np.array_equal(anatomy.regions[n], s.regions[n]) for n in ANATOMY_REGION_NAMES)


def test_anatomy_from_params_refuses_bad_or_foreign_params():
    params = json.loads(json.dumps(make_subject((16, 16, 16), seed=4).params))
    for key in ("seed", "shape_zyx", "spacing_mm"):
        with pytest.raises(PhantomParameterError, match=key):
            anatomy_from_params({k: v for k, v in params.items() if k != key})
    with pytest.raises(PhantomParameterError, match="shape_zyx"):
        anatomy_from_params({**params, "shape_zyx": [4, 16, 16]})
    with pytest.raises(PhantomParameterError, match="seed"):
        anatomy_from_params({**params, "seed": "four"})
    with pytest.raises(PhantomParameterError, match="params must be a dict"):
        anatomy_from_params(None)
    # anatomy numbers that the seed does not give: made by another generator version (or tampered with)
    with pytest.raises(PhantomParameterError, match="anatomy numbers"):
        anatomy_from_params({**params, "seed": 5})
    tampered = {
        **params,
        "anatomy": {**params["anatomy"], "otic_radius_mm": params["anatomy"]["otic_radius_mm"] + 0.1},
    }
    with pytest.raises(PhantomParameterError, match="anatomy numbers"):
        anatomy_from_params(tampered)
    # without stored anatomy numbers the seed alone decides
    bare = {k: params[k] for k in ("seed", "shape_zyx", "spacing_mm")}
    assert np.array_equal(anatomy_from_params(bare).truth, anatomy_from_params(params).truth)


def test_anatomy_alone_is_faster_than_a_whole_subject():
    """Prints the time ratio make_subject / anatomy_from_params (run with -s to see it); asserts no timing."""
    shape = (64, 64, 64)
    params = make_subject(shape, seed=21).params
    t_subject, t_anatomy = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        make_subject(shape, seed=21, motion=False)
        t1 = time.perf_counter()
        anatomy_from_params(params)
        t_subject.append(t1 - t0)
        t_anatomy.append(time.perf_counter() - t1)
    ratio = min(t_subject) / min(t_anatomy)
    print(
        f"\n{shape}: make_subject(motion=False) {min(t_subject) * 1e3:.0f} ms, "
        f"anatomy_from_params {min(t_anatomy) * 1e3:.0f} ms, ratio {ratio:.1f}x (best of 3)"
    )
