"""Tests for dla.stats.truth (truth-referenced vessel metrics), dla.stats.metrics.paired_tests and the phantom's
vessel radii: tubes of known radius built here with numpy, so every count is known independently (sklearn on
the voxels, shells of independent dilations, brute-force distances, hand-enumerated Wilcoxon p-values, the
labeling recipe's own vessel mask)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import ndimage, stats
from skimage.morphology import skeletonize
from sklearn.metrics import f1_score, precision_score, recall_score

from dla.classes import VESSEL
from dla.labeling.recipe import RecipeParams, run_recipe
from dla.phantoms import PhantomParameterError, make_subject, vessel_radii_from_params
from dla.phantoms.vessels import MIN_VESSEL_RADIUS_MM
from dla.stats.metrics import MetricsError, paired_tests
from dla.stats.truth import (
    DEFAULT_RADIUS_EDGES_MM,
    TruthError,
    TruthReference,
    centreline_mask,
    dsa_baseline_vessels,
    estimate_radius_mm,
    voxel_size_mm,
)

SHAPE = (40, 40, 48)


def tube(shape, z0, y0, radius_vox, x0=0, x1=None):
    """Voxels within ``radius_vox`` of the line (z0, y0, x) for x in [x0, x1) (a one-voxel line for 0)."""
    z, y, x = np.indices(shape)
    x1 = shape[2] if x1 is None else x1
    return ((z - z0) ** 2 + (y - y0) ** 2 <= radius_vox**2) & (x >= x0) & (x < x1)


def three_tubes(spacing=1.0):
    """A one-voxel line (radius 0.4 mm), a tube of radius 1.2 mm and one of 2.6 mm, far apart (mm = voxels at 1 mm)."""
    thin = tube(SHAPE, 8, 8, 0)
    mid = tube(SHAPE, 8, 28, 1.2 / spacing)
    big = tube(SHAPE, 28, 18, 2.6 / spacing)
    radius = np.zeros(SHAPE, np.float32)
    radius[thin], radius[mid], radius[big] = 0.4, 1.2, 2.6
    return thin, mid, big, thin | mid | big, radius


def test_whole_head_overlap_matches_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.random(SHAPE) < 0.05
    pred = truth ^ (rng.random(SHAPE) < 0.02)
    radius = np.where(truth, rng.uniform(0.3, 2.9, SHAPE), 0).astype(np.float32)
    m = TruthReference(truth, radius, (1.0, 1.0, 1.0)).score(pred)
    y_t, y_p = truth.ravel(), pred.ravel()
    assert m.whole_head.sensitivity == pytest.approx(recall_score(y_t, y_p))
    assert m.whole_head.ppv == pytest.approx(precision_score(y_t, y_p))
    assert m.whole_head.dice == pytest.approx(f1_score(y_t, y_p))
    # every false positive is either in a radius stratum or remote
    assert sum(s.overlap.fp for s in m.strata) + m.remote_fp == m.whole_head.fp
    assert sum(s.overlap.tp + s.overlap.fn for s in m.strata) == int(truth.sum())


def test_strata_with_thin_vessel_removed():
    thin, mid, big, truth, radius = three_tubes()
    m = TruthReference(truth, radius, (1.0, 1.0, 1.0)).score(truth & ~thin)
    by = {s.label: s for s in m.strata}
    assert [s.label for s in m.strata] == ["0-0.5 mm", "0.5-1 mm", "1-1.5 mm", "1.5-2 mm", ">= 2 mm"]
    assert by["0-0.5 mm"].overlap.tp == 0 and by["0-0.5 mm"].overlap.fn == int(thin.sum())
    assert by["0-0.5 mm"].overlap.sensitivity == 0.0 and by["0-0.5 mm"].centreline_sensitivity == 0.0
    assert by["0.5-1 mm"].overlap.sensitivity is None  # no vessel of that size
    for label, mask in (("1-1.5 mm", mid), (">= 2 mm", big)):
        assert by[label].overlap.tp == int(mask.sum()) and by[label].overlap.fn == 0
        assert by[label].overlap.dice == 1.0 and by[label].centreline_sensitivity == 1.0
    assert m.whole_head.sensitivity == pytest.approx(1 - thin.sum() / truth.sum())
    # the resolved group (radius >= 1 voxel = 1 mm) is the two tubes; the line is below one voxel
    assert m.resolved.overlap.tp == int(mid.sum() + big.sum()) and m.resolved.overlap.dice == 1.0
    assert [s.relation for s in m.strata] == [
        "below one voxel",
        "below one voxel",
        "at least one voxel",
        "at least one voxel",
        "at least one voxel",
    ]
    # at 1.25 mm voxels the 1-1.5 mm bin straddles one voxel
    coarse = TruthReference(truth, radius, (1.25, 1.25, 1.25)).score(truth)
    assert coarse.strata[2].relation == "straddles one voxel" and coarse.voxel_mm == pytest.approx(1.25)


def test_dilated_prediction_false_positives_go_to_their_vessel():
    thin, mid, big, truth, radius = three_tubes()
    six = ndimage.generate_binary_structure(3, 1)
    pred = ndimage.binary_dilation(truth, six)
    blob = np.zeros(SHAPE, bool)
    blob[30:34, 32:36, 40:44] = True  # far from every tube: remote false positives
    m = TruthReference(truth, radius, (1.0, 1.0, 1.0)).score(pred | blob)
    assert m.remote_fp == int(blob.sum())
    for stratum, mask in ((m.strata[0], thin), (m.strata[2], mid), (m.strata[4], big)):
        shell = int((ndimage.binary_dilation(mask, six) & ~mask).sum())  # independent, per tube
        n = int(mask.sum())
        assert stratum.overlap.fp == shell
        assert stratum.overlap.dice == pytest.approx(2 * n / (2 * n + shell))
    assert m.whole_head.fp == int(((pred | blob) & ~truth).sum())


def test_centreline_counts_thin_vessels_by_length():
    thick = tube(SHAPE, 20, 12, 4, x0=4, x1=44)
    line = tube(SHAPE, 20, 30, 0, x0=4, x1=44)
    truth = thick | line
    radius = np.where(thick, 4.0, np.where(line, 0.4, 0)).astype(np.float32)
    m = TruthReference(truth, radius, (1.0, 1.0, 1.0)).score(thick)
    assert m.whole_head.sensitivity > 0.95  # by voxels the line hardly counts ...
    skel_truth = skeletonize(truth)  # ... by centreline length it is about half
    assert m.centreline.truth_voxels == int(skel_truth.sum())
    assert m.centreline.sensitivity == pytest.approx((skel_truth & thick).sum() / skel_truth.sum())
    assert 0.4 < m.centreline.sensitivity < 0.6
    skel_pred = skeletonize(thick)
    tprec = (skel_pred & truth).sum() / skel_pred.sum()
    tsens = m.centreline.sensitivity
    assert m.centreline.precision == pytest.approx(tprec) == 1.0
    assert m.centreline.cldice == pytest.approx(2 * tprec * tsens / (tprec + tsens))
    assert centreline_mask(np.zeros(SHAPE, bool)).sum() == 0


def test_empty_truth_and_prediction():
    empty = np.zeros(SHAPE, bool)
    pred = tube(SHAPE, 10, 10, 1)
    m = TruthReference(empty, np.zeros(SHAPE, np.float32), (1, 1, 1)).score(pred)
    assert m.whole_head.sensitivity is None and m.whole_head.ppv == 0.0 and m.remote_fp == int(pred.sum())
    assert m.centreline.sensitivity is None and m.centreline.cldice is None
    thin, mid, big, truth, radius = three_tubes()
    m = TruthReference(truth, radius, (1, 1, 1)).score(empty)
    assert m.whole_head.sensitivity == 0.0 and m.whole_head.ppv is None and m.whole_head.dice == 0.0


def test_reference_bad_inputs():
    thin, mid, big, truth, radius = three_tubes()
    with pytest.raises(TruthError, match="> 0 at every truth-vessel voxel"):
        TruthReference(truth, np.where(thin, 0, radius), (1, 1, 1))
    with pytest.raises(TruthError, match="increase strictly"):
        TruthReference(truth, radius, (1, 1, 1), radius_edges_mm=(0, 1, 1, 2))
    with pytest.raises(TruthError, match="outside the radius bins"):
        TruthReference(truth, radius, (1, 1, 1), radius_edges_mm=(0, 1, 2))
    with pytest.raises(TruthError, match="spacing_mm"):
        TruthReference(truth, radius, (1, 0, 1))
    with pytest.raises(TruthError, match="boolean"):
        TruthReference(truth.astype(np.uint8), radius, (1, 1, 1))
    with pytest.raises(TruthError, match="shape mismatch"):
        TruthReference(truth, radius, (1, 1, 1)).score(truth[:-1])
    with pytest.raises(TruthError, match="near_mm"):
        TruthReference(truth, radius, (1, 1, 1), near_mm=-1)
    assert voxel_size_mm((1.0, 2.0, 4.0)) == pytest.approx(2.0)


def test_estimated_radius_of_tubes():
    thin, mid, big, truth, radius = three_tubes()
    est = estimate_radius_mm(truth, (1.0, 1.0, 1.0))
    assert np.all(est[truth] > 0) and np.all(est[~truth] == 0)
    assert np.median(est[thin]) == pytest.approx(0.5)
    centre = np.zeros(SHAPE, bool)
    centre[:, :, 10:38] = True  # away from the tube ends
    assert abs(np.median(est[big & centre]) - 2.6) <= 0.75
    assert abs(np.median(est[mid & centre]) - 1.2) <= 0.75


def test_dsa_baseline_is_the_recipe_vessel_mask():
    s = make_subject((40, 48, 48), seed=4, motion=True)
    baseline = dsa_baseline_vessels(s.subtracted_hu, s.spacing_mm)
    threshold_only = RecipeParams(vessel_low_threshold_hu=None, vessel_edge_fraction=None)  # no growing
    labels = run_recipe(s.fill_hu, s.subtracted_hu, s.spacing_mm, threshold_only).labels
    assert np.array_equal(baseline, labels == VESSEL)
    # the floor in mm^3: 7 voxels of 1 mm^3 are dropped, 8 kept (default 20 mm^3 -> floor of 2.5 mm^3 here)
    sub = np.zeros((12, 12, 12), np.int16)
    sub[1, 1, 1:8] = 900  # 7 voxels
    sub[6, 6, 1:9] = 900  # 8 voxels
    kept = dsa_baseline_vessels(sub, (1, 1, 1), min_vessel_component_mm3=8)
    assert kept.sum() == 8 and kept[6, 6, 1:9].all()
    with pytest.raises(TruthError, match="vessel_threshold_hu"):
        dsa_baseline_vessels(sub, (1, 1, 1), vessel_threshold_hu=5000)


@pytest.mark.parametrize(
    "seed, shape, kw",
    [
        (1, (48, 48, 48), {}),
        (7, (64, 64, 64), {"aneurysm": True, "coil": "coil"}),
        (3, (40, 56, 48), {"injection": "vertebral"}),
    ],
)
def test_phantom_vessel_radii_match_its_truth(seed, shape, kw):
    s = make_subject(shape, seed=seed, **kw)
    radii = vessel_radii_from_params(json.loads(json.dumps(s.params)))  # as stored in a study's metadata
    truth_vessel = s.truth == VESSEL
    assert np.array_equal(radii.vessel, truth_vessel)
    r = radii.radius_mm[truth_vessel]
    assert np.all(r >= 0.9 * MIN_VESSEL_RADIUS_MM)  # the thinnest branch tapers to 0.9 of its start radius
    assert r.max() <= max(2.9, (s.params["aneurysm"] or {}).get("radius_mm", 0)) + 1e-6
    assert np.all(radii.radius_mm[~truth_vessel] == 0)
    # the bins cover every phantom radius
    TruthReference(truth_vessel, radii.radius_mm, s.spacing_mm, radius_edges_mm=DEFAULT_RADIUS_EDGES_MM)


def test_phantom_radii_agree_with_the_mask_estimate_on_a_fine_grid():
    s = make_subject((64, 64, 64), spacing_mm=1.2, seed=5)
    truth_vessel = s.truth == VESSEL
    exact = vessel_radii_from_params(s.params).radius_mm[truth_vessel]
    est = estimate_radius_mm(truth_vessel, s.spacing_mm)[truth_vessel]
    assert np.median(np.abs(exact - est)) < 1.2  # within a voxel: the estimate is coarse, the phantom exact
    assert stats.spearmanr(exact, est).statistic > 0.3


def test_phantom_radii_bad_params():
    s = make_subject((40, 40, 40), seed=2)
    with pytest.raises(PhantomParameterError, match="lack"):
        vessel_radii_from_params({"seed": 2})
    bad = dict(s.params, anatomy={**s.params["anatomy"], "head_scale": 2.0})
    with pytest.raises(PhantomParameterError, match="anatomy numbers differ"):
        vessel_radii_from_params(bad)
    with pytest.raises(PhantomParameterError, match="injection"):
        vessel_radii_from_params(dict(s.params, injection="carotid"))


# --------------------------------------------------------------------------------------------- paired tests


def wilcoxon_exact_p(d):
    """Two-sided exact signed-rank p by enumerating all sign patterns (distinct |d|, no zeros)."""
    ranks = stats.rankdata(np.abs(d))
    w_obs = ranks[d > 0].sum()
    total = ranks.sum()
    ws = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product((0, 1), repeat=len(d))
    ]
    lo = min(w_obs, total - w_obs)
    return min(1.0, 2 * np.mean([w <= lo + 1e-9 for w in ws]))


def test_paired_tests_match_hand_computation():
    a = [0.91, 0.85, 0.88, 0.95, 0.79, 0.83, 0.9]
    b = [0.80, 0.86, 0.70, 0.81, 0.75, 0.60, 0.72]
    r = paired_tests(a, b)
    d = np.array(a) - np.array(b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert r.n == 7 and r.t_statistic == pytest.approx(t)
    assert r.t_p == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    assert r.wilcoxon_p == pytest.approx(wilcoxon_exact_p(d))
    assert r.note == ""


def test_paired_tests_undefined_cases():
    r = paired_tests([0.5, 0.6, None], [0.5, 0.6, 0.7])
    assert r.t_p is None and r.wilcoxon_p is None and "all differences are zero" in r.note
    assert "1 incomplete pairs dropped" in r.note
    assert paired_tests([0.5], [0.4]).t_p is None
    r = paired_tests([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])  # constant difference
    assert r.t_p is None and "zero variance" in r.note and r.wilcoxon_p == pytest.approx(0.25)
    with pytest.raises(MetricsError, match="equal lengths"):
        paired_tests([1.0], [1.0, 2.0])
    with pytest.raises(MetricsError, match="non-finite"):
        paired_tests([float("nan"), 1.0], [1.0, 2.0])
