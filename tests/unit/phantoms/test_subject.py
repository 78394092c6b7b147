"""make_subject as a whole (dla.phantoms.subject): reproducibility, array contract, subtraction, bad arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.phantoms import REGION_NAMES, PhantomParameterError, cohort_plan, make_subject

from .cases import strong_motion_key, subject


def test_same_seed_reproducible_and_different_seeds_differ():
    a = make_subject((32, 32, 32), seed=11)
    b = make_subject((32, 32, 32), seed=11)
    c = make_subject((32, 32, 32), seed=12)
    for name in ("fill_hu", "mask_hu", "subtracted_hu", "truth"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.regions.keys() == b.regions.keys()
    assert all(np.array_equal(a.regions[k], b.regions[k]) for k in a.regions)
    assert json.dumps(a.params, sort_keys=True) == json.dumps(b.params, sort_keys=True)
    assert not np.array_equal(a.fill_hu, c.fill_hu)
    assert not np.array_equal(a.truth, c.truth)


def test_dtypes_shapes_and_json_params():
    shape = (40, 48, 44)
    s = make_subject(shape, seed=3)
    assert s.fill_hu.dtype == np.int16 and s.mask_hu.dtype == np.int16 and s.subtracted_hu.dtype == np.int16
    assert s.truth.dtype == np.uint8
    for arr in (s.fill_hu, s.mask_hu, s.subtracted_hu, s.truth):
        assert arr.shape == shape
    assert set(s.regions) == set(REGION_NAMES)
    for name in REGION_NAMES:
        assert s.regions[name].dtype == bool and s.regions[name].shape == shape
    assert s.affine_lps.shape == (4, 4) and s.affine_lps.dtype == np.float64
    assert s.injection in ("ica", "vertebral")
    assert set(np.unique(s.truth)) <= {UNLABELED, VESSEL, BONE, SOFT_TISSUE}
    assert np.asarray(s.motion["rotation_deg"]).shape == (3,)
    assert np.asarray(s.motion["translation_mm"]).shape == (3,)
    json.dumps(s.params)  # must be JSON-serializable


def test_subtracted_is_fill_minus_mask():
    s = subject(motion=strong_motion_key())
    diff = s.fill_hu.astype(np.int32) - s.mask_hu.astype(np.int32)
    assert np.array_equal(diff, s.subtracted_hu.astype(np.int32))


def test_truth_classes_present_and_hu_consistent_with_labels():
    s = subject()
    counts = {c: int((s.truth == c).sum()) for c in (UNLABELED, VESSEL, BONE, SOFT_TISSUE)}
    assert all(n > 0 for n in counts.values()), counts
    assert counts[SOFT_TISSUE] > counts[BONE] > counts[VESSEL]
    fill = s.fill_hu.astype(np.float64)
    assert np.median(fill[s.truth == UNLABELED]) < -800  # air
    assert -100 < np.median(fill[s.truth == SOFT_TISSUE]) < 150
    assert np.median(fill[s.truth == BONE]) > 400


def test_invalid_arguments_raise_specific_errors():
    with pytest.raises(PhantomParameterError, match="shape_zyx"):
        make_subject((4, 64, 64))
    with pytest.raises(PhantomParameterError, match="spacing_mm"):
        make_subject((16, 16, 16), spacing_mm=(-1, 1, 1))
    with pytest.raises(PhantomParameterError, match="spacing_mm"):
        make_subject((16, 16, 16), spacing_mm=("a", 1, 1))
    with pytest.raises(PhantomParameterError, match="seed"):
        make_subject((16, 16, 16), seed=-1)
    with pytest.raises(PhantomParameterError, match="injection"):
        make_subject((16, 16, 16), injection="carotid")
    with pytest.raises(PhantomParameterError, match="motion"):
        make_subject((16, 16, 16), motion="yes")
    with pytest.raises(PhantomParameterError, match="coil"):
        make_subject((16, 16, 16), aneurysm=False, coil=True)
    with pytest.raises(PhantomParameterError, match="site"):
        make_subject((16, 16, 16), aneurysm={"site": "basilar_tip"})
    with pytest.raises(ValueError):
        cohort_plan(0)
    assert issubclass(PhantomParameterError, ValueError)
