"""The recipe's vessel tree beyond one threshold: hysteresis growing, the local half-maximum edge and the
vesselness option, each checked against an independent scipy computation or a constructed truth."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from dla.classes import VESSEL
from dla.labeling.recipe import RecipeError, RecipeParams, run_recipe

SPACING = (0.5, 0.5, 0.5)
SHAPE = (32, 48, 64)
ST26 = np.ones((3, 3, 3), bool)
OFF = {"vessel_low_threshold_hu": None, "vessel_edge_fraction": None}


def _tube(y0, z0, r, x0=4, x1=60):
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return ((y - y0) ** 2 + (z - z0) ** 2 <= r * r) & (x >= x0) & (x < x1)


def _volumes(sub):
    fill = np.full(SHAPE, 40, np.int16)  # no bone: the tests look at vessels only
    return fill, sub.astype(np.int16)


@pytest.fixture(scope="module")
def branching():
    """A bright artery (800 HU), a dim branch touching it (300 HU) and a separate dim blob (300 HU)."""
    rng = np.random.default_rng(1)
    sub = rng.normal(0, 20, SHAPE)
    artery = _tube(16, 16, 3)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    branch = ((x - 30) ** 2 + (z - 16) ** 2 <= 2) & (y >= 18) & (y < 44)
    blob = (abs(z - 8) <= 2) & (abs(y - 40) <= 2) & (abs(x - 54) <= 2)
    sub[branch] = 300
    sub[blob] = 300
    sub[artery] = 800
    return sub, artery, branch, blob


def test_hysteresis_grows_connected_dim_branches_only(branching):
    sub, artery, branch, blob = branching
    fill, sub16 = _volumes(sub)
    params = RecipeParams(
        min_vessel_component_mm3=5.0, vessel_low_threshold_hu=150.0, vessel_edge_fraction=None
    )
    res = run_recipe(fill, sub16, SPACING, params)
    got = res.labels == VESSEL
    # independent: components of sub >= low that hold a voxel of the kept high-threshold tree
    high, _ = ndi.label(sub16 >= 600, ST26)
    sizes = np.bincount(high.ravel())
    kept = np.isin(high, np.flatnonzero(sizes * 0.125 >= 5.0)) & (high > 0)
    low, _ = ndi.label(sub16 >= 150, ST26)
    expected = np.isin(low, np.unique(low[kept])) & (low > 0)
    np.testing.assert_array_equal(got, expected)
    assert got[branch].all() and not got[blob].any()
    assert res.vessel_voxels_grown == int(expected.sum() - kept.sum()) > 0
    assert "hysteresis from 150 HU added" in res.report()["summary"]
    threshold_only = run_recipe(fill, sub16, SPACING, RecipeParams(min_vessel_component_mm3=5.0, **OFF))
    assert not (threshold_only.labels == VESSEL)[branch & ~artery].any()


def test_a_click_on_a_dim_branch_keeps_the_tree_it_grows_into(branching):
    """seeded_vessels_only with the click on a dim voxel (below the vessel threshold): with growing on, the
    tree the branch joins by hysteresis is kept; the unconnected blob stays out; without growing nothing is."""
    sub, artery, branch, blob = branching
    fill, sub16 = _volumes(sub)
    click = tuple(int(v) for v in np.argwhere(branch & ~artery)[-1])  # the branch's far end
    assert sub16[click] < 600
    grown = dict(vessel_low_threshold_hu=150.0, vessel_edge_fraction=None)
    res = run_recipe(
        fill, sub16, SPACING, RecipeParams(seeded_vessels_only=True, seed_points_zyx=(click,), **grown)
    )
    got = res.labels == VESSEL
    assert got[artery].all() and got[branch].all() and not got[blob].any()
    on_blob = tuple(int(v) for v in np.argwhere(blob)[0])
    res = run_recipe(
        fill, sub16, SPACING, RecipeParams(seeded_vessels_only=True, seed_points_zyx=(on_blob,), **grown)
    )
    assert not (res.labels == VESSEL).any()  # the blob reaches no tree above the threshold
    res = run_recipe(
        fill, sub16, SPACING, RecipeParams(seeded_vessels_only=True, seed_points_zyx=(click,), **OFF)
    )
    assert not (res.labels == VESSEL).any()


def test_edge_trims_a_blurred_lumen_to_its_half_maximum():
    """A lumen blurred by the scanner: 600 HU keeps only its core, hysteresis alone the whole blur halo; the
    local-peak edge gives back the lumen (Dice against the true cylinder)."""
    lumen = _tube(24, 16, 4.0) | _tube(12, 16, 1.6)
    rng = np.random.default_rng(2)
    sub = ndi.gaussian_filter(lumen * 1000.0, 1.2) + rng.normal(0, 15, SHAPE)
    fill, sub16 = _volumes(sub)

    def dice(params):
        got = run_recipe(fill, sub16, SPACING, params).labels == VESSEL
        return 2 * np.count_nonzero(got & lumen) / (got.sum() + lumen.sum()), got

    d_threshold, _ = dice(RecipeParams(min_vessel_component_mm3=1.0, **OFF))
    d_hyst, _ = dice(
        RecipeParams(min_vessel_component_mm3=1.0, vessel_low_threshold_hu=100.0, vessel_edge_fraction=None)
    )
    params = RecipeParams(
        min_vessel_component_mm3=1.0, vessel_low_threshold_hu=100.0, vessel_edge_fraction=0.5
    )
    d_edge, got = dice(params)
    assert d_edge > 0.9 and d_edge > d_threshold + 0.05 and d_edge > d_hyst + 0.05
    # independent: the grown set, kept where sub >= 0.5 x the maximum within 2 mm (a 9-voxel box here)
    grown = np.asarray(
        run_recipe(
            fill,
            sub16,
            SPACING,
            RecipeParams(
                min_vessel_component_mm3=1.0, vessel_low_threshold_hu=100.0, vessel_edge_fraction=None
            ),
        ).labels
        == VESSEL
    )
    peak = ndi.maximum_filter(sub16, size=9).astype(np.float32)
    np.testing.assert_array_equal(got, grown & (sub16 >= np.float32(0.5) * peak))


def test_vesselness_adds_a_faint_tube_near_the_tree_only():
    rng = np.random.default_rng(3)
    sub = rng.normal(0, 10, SHAPE)
    artery = _tube(16, 16, 3, x1=40)
    faint = _tube(16, 16, 1, x0=40, x1=60)  # continues the artery, 80 HU: below the 100 HU low threshold
    far = _tube(40, 6, 1, x0=10, x1=50)  # the same faint tube, far from any vessel
    sub[faint] = 80
    sub[far] = 80
    sub[artery] = 800
    fill, sub16 = _volumes(sub)
    base = {"min_vessel_component_mm3": 5.0, "vessel_low_threshold_hu": 100.0, "vessel_edge_fraction": None}
    without = run_recipe(fill, sub16, SPACING, RecipeParams(**base)).labels == VESSEL
    res = run_recipe(
        fill,
        sub16,
        SPACING,
        RecipeParams(
            **base, vesselness_sigmas_mm=(0.5, 1.0), vesselness_threshold=10.0, vesselness_reach_mm=12.0
        ),
    )
    got = res.labels == VESSEL
    assert without[faint].mean() < 0.2
    assert got[faint].mean() > 0.8  # the faint continuation is found
    assert not got[far].any()  # nothing away from the tree
    assert res.vessel_voxels_vesselness > 0 and "vesselness added" in res.report()["summary"]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"vessel_threshold_hu": 500, "vessel_low_threshold_hu": 500}, "must be below vessel_threshold_hu"),
        ({"vessel_low_threshold_hu": -5}, "outside the allowed range"),
        ({"vessel_edge_fraction": 0}, "vessel_edge_fraction"),
        ({"vessel_edge_radius_mm": 0}, "vessel_edge_radius_mm"),
        ({"vesselness_sigmas_mm": [0.5] * 5}, "at most 4 scales"),
        ({"vesselness_sigmas_mm": [9.0]}, "outside the allowed range"),
        ({"vesselness_sigmas_mm": "1"}, "list of at most"),
    ],
)
def test_bad_growing_parameters_are_refused_in_words(kwargs, words):
    with pytest.raises(RecipeError, match=words):
        RecipeParams.from_dict(kwargs)


def test_a_vesselness_scale_below_the_voxel_size_is_refused():
    fill, sub = _volumes(np.zeros(SHAPE))
    with pytest.raises(RecipeError, match="finer than half the voxel size"):
        run_recipe(fill, sub, (1.4, 1.4, 1.4), RecipeParams(vesselness_sigmas_mm=(0.3,)))


def test_recorded_recipes_replay_without_growing_and_new_ones_grow():
    recorded = RecipeParams.from_dict({"vessel_threshold_hu": 600}, recorded=True)
    assert recorded.vessel_low_threshold_hu is None and recorded.vessel_edge_fraction is None
    fresh = RecipeParams.from_dict({})
    assert fresh.vessel_low_threshold_hu == 100.0 and fresh.vessel_edge_fraction == 0.5
    assert RecipeParams.from_dict(fresh.to_dict(), recorded=True) == fresh
