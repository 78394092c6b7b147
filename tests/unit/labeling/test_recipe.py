"""Tests of dla.labeling.recipe against independent scipy computations on a small synthetic head."""

import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.labeling.morphology import ball_footprint, dilate_mm, erode_mm
from dla.labeling.recipe import (
    RecipeError,
    RecipeParams,
    run_recipe,
)

SPACING = (1.0, 0.8, 0.8)
SHAPE = (40, 64, 64)
TUBE_CENTER = (20, 30, 32)
BLOB_CENTER = (8, 50, 50)
FRAGMENT = (slice(12, 15), slice(40, 43), slice(24, 27))
ST26 = np.ones((3, 3, 3), bool)


def make_head(seed=0):
    """fill/subtracted int16 HU: soft-tissue ellipsoid, skull shell, mandible block, bone fragment,
    a contrast tube (+ branch), a small bright artifact blob in the subtracted volume, noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r = np.sqrt(((z - 20) / 17.0) ** 2 + ((y - 30) / 26.0) ** 2 + ((x - 32) / 28.0) ** 2)
    fill = np.full(SHAPE, -1000.0)
    fill[r < 1.0] = 40.0
    fill[(r < 1.0) & (r > 0.85)] = 1200.0  # skull shell
    fill[2:6, 52:60, 20:44] = 1100.0  # "mandible" (separate component, outside the head)
    fill[FRAGMENT] = 1000.0  # small bone fragment inside the head: third component -> dropped
    sub = rng.normal(0, 60, SHAPE)
    tube = ((y - TUBE_CENTER[1]) ** 2 + (z - TUBE_CENTER[0]) ** 2 <= 4) & (x >= 10) & (x < 54)
    branch = ((x - 32) ** 2 + (z - 20) ** 2 <= 2) & (y >= 18) & (y < 31)
    vessel = tube | branch
    sub[vessel] = 800.0
    fill[vessel] = 900.0  # contrast-filled vessel is bright in the fill scan too
    bz, by, bx = BLOB_CENTER
    sub[bz - 1 : bz + 2, by - 1 : by + 2, bx - 1 : bx + 2] = 900.0  # 27-voxel artifact
    fill += rng.normal(0, 15, SHAPE)
    return fill.astype(np.int16), sub.astype(np.int16), vessel


# The threshold part of the recipe (the paper's); hysteresis growing and the edge are tested in test_grow.py.
THRESHOLD_ONLY = {"vessel_low_threshold_hu": None, "vessel_edge_fraction": None}
PARAMS = RecipeParams(min_vessel_component_voxels=100, **THRESHOLD_ONLY)


@pytest.fixture(scope="module")
def head():
    return make_head()


@pytest.fixture(scope="module")
def result(head):
    fill, sub, _ = head
    return run_recipe(fill, sub, SPACING, PARAMS)


def expected_vessel(sub, params, seeds=()):
    lab, n = ndi.label(sub >= params.vessel_threshold_hu, ST26)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= params.min_vessel_component_voxels
    for s in seeds:
        keep[lab[s]] = True
    keep[0] = False
    return keep[lab]


def test_vessel_keeps_tube_drops_blob(head, result):
    fill, sub, vessel_truth = head
    labels = result.labels
    assert labels.dtype == np.uint8 and labels.shape == SHAPE
    np.testing.assert_array_equal(labels == VESSEL, expected_vessel(sub, PARAMS))
    assert (labels[vessel_truth] == VESSEL).all()
    assert labels[BLOB_CENTER] != VESSEL
    assert result.n_vessel_components_kept == 1
    assert result.n_vessel_components_removed >= 1


def test_seed_point_keeps_small_blob(head):
    fill, sub, _ = head
    params = RecipeParams(min_vessel_component_voxels=100, seed_points_zyx=((BLOB_CENTER),), **THRESHOLD_ONLY)
    res = run_recipe(fill, sub, SPACING, params)
    assert res.labels[BLOB_CENTER] == VESSEL
    np.testing.assert_array_equal(res.labels == VESSEL, expected_vessel(sub, params, [BLOB_CENTER]))
    assert res.n_vessel_components_kept == 2


def test_bone_components_and_vessel_dilation(head, result):
    fill, sub, _ = head
    labels = result.labels
    vessel = labels == VESSEL
    dil = ndi.binary_dilation(vessel, ball_footprint(PARAMS.vessel_dilation_mm, SPACING))
    cand = (fill >= PARAMS.bone_threshold_hu) & ~dil
    lab, n = ndi.label(cand, ST26)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    largest = np.argsort(sizes)[::-1][:2]
    np.testing.assert_array_equal(labels == BONE, np.isin(lab, largest))
    assert (labels[FRAGMENT] != BONE).all()  # third component dropped
    assert not (labels == BONE)[dil].any()


def test_soft_tissue_is_eroded_window(head, result):
    fill, _, _ = head
    labels = result.labels
    window = (fill >= -400) & (fill <= 500)
    eroded = ndi.binary_erosion(window, ball_footprint(1.0, SPACING))
    expected = eroded & (labels != VESSEL) & (labels != BONE)
    np.testing.assert_array_equal(labels == SOFT_TISSUE, expected)
    # no soft-tissue voxel is 6-adjacent to air
    air = fill < -400
    assert not (ndi.binary_dilation(air) & (labels == SOFT_TISSUE)).any()
    assert (labels == SOFT_TISSUE).sum() > 1000


def test_counts_match_labels(result):
    counts = np.bincount(result.labels.ravel(), minlength=4)
    assert result.counts == {c: int(counts[c]) for c in (UNLABELED, VESSEL, BONE, SOFT_TISSUE)}


def test_roi_restricts_labels(head, result):
    fill, sub, _ = head
    box = (10, 30, 20, 45, 5, 60)
    params = RecipeParams(min_vessel_component_voxels=100, roi_boxes_zyx=(box,), **THRESHOLD_ONLY)
    res = run_recipe(fill, sub, SPACING, params)
    inside = np.zeros(SHAPE, bool)
    inside[10:30, 20:45, 5:60] = True
    assert (res.labels[~inside] == 0).all()
    np.testing.assert_array_equal(res.labels[inside], result.labels[inside])
    roi = np.zeros(SHAPE, bool)
    roi[:, :, :32] = True
    res2 = run_recipe(fill, sub, SPACING, params, roi_mask=roi)
    np.testing.assert_array_equal(res2.labels, np.where(inside & roi, result.labels, 0))


def test_balance_equal_counts_subset_and_seeded(head, result):
    fill, sub, _ = head
    params = RecipeParams(min_vessel_component_voxels=100, balance=True, seed=3, **THRESHOLD_ONLY)
    a = run_recipe(fill, sub, SPACING, params).labels
    n = [int((a == c).sum()) for c in (VESSEL, BONE, SOFT_TISSUE)]
    full = [int((result.labels == c).sum()) for c in (VESSEL, BONE, SOFT_TISSUE)]
    assert n[0] == n[1] == n[2] == min(full)
    lab = a != 0
    np.testing.assert_array_equal(a[lab], result.labels[lab])  # subset of the unbalanced map
    b = run_recipe(fill, sub, SPACING, params).labels
    np.testing.assert_array_equal(a, b)
    c = run_recipe(
        fill,
        sub,
        SPACING,
        RecipeParams(min_vessel_component_voxels=100, balance=True, seed=4, **THRESHOLD_ONLY),
    ).labels
    assert not np.array_equal(a, c)


def test_progress_called(head):
    fill, sub, _ = head
    calls = []
    run_recipe(fill, sub, SPACING, PARAMS, progress=lambda f, m: calls.append((f, m)))
    fr = [f for f, _ in calls]
    assert (
        len(calls) >= 3 and fr == sorted(fr) and fr[-1] == 1.0 and all(isinstance(m, str) for _, m in calls)
    )


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"vessel_threshold_hu": 200}, "vessel_threshold_hu"),
        ({"vessel_threshold_hu": 1500}, "[300.0, 1000.0]"),
        ({"bone_threshold_hu": 100}, "bone_threshold_hu"),
        ({"min_vessel_component_voxels": -1}, "min_vessel_component_voxels"),
        ({"min_vessel_component_voxels": 2.5}, "integer"),
        ({"min_vessel_component_mm3": -1}, "min_vessel_component_mm3"),
        ({"min_vessel_component_mm3": "20"}, "number"),
        ({"min_vessel_component_mm3": 5, "min_vessel_component_voxels": 5}, "not both"),
        ({"seeded_vessels_only": "yes"}, "seeded_vessels_only"),
        ({"keep_bone_components": 0}, "keep_bone_components"),
        ({"soft_min_hu": 600.0}, "soft_min_hu"),
        ({"soft_erosion_mm": 50}, "soft_erosion_mm"),
        ({"vessel_dilation_mm": -1}, "vessel_dilation_mm"),
        ({"roi_boxes_zyx": [[5, 5, 0, 10, 0, 10]]}, "empty"),
        ({"roi_boxes_zyx": [[0, 5, 0]]}, "roi_boxes_zyx"),
        ({"seed_points_zyx": [[1, 2]]}, "seed_points_zyx"),
        ({"balance": "yes"}, "balance"),
        ({"vessel_threshold_hu": "600"}, "number"),
        ({"bogus": 1}, "unknown recipe parameter"),
    ],
)
def test_bad_params_refused(kwargs, fragment):
    with pytest.raises(RecipeError) as e:
        RecipeParams.from_dict(kwargs)
    assert fragment in str(e.value)


def test_bad_inputs_refused(head):
    fill, sub, _ = head
    with pytest.raises(RecipeError, match=r"\(40, 64, 64\).*\(40, 64, 63\)"):
        run_recipe(fill, sub[:, :, :63], SPACING, PARAMS)
    with pytest.raises(RecipeError, match="spacing_mm"):
        run_recipe(fill, sub, (1, 0, 1), PARAMS)
    with pytest.raises(RecipeError, match="outside the volume"):
        run_recipe(fill, sub, SPACING, RecipeParams(seed_points_zyx=((40, 0, 0),)))
    with pytest.raises(RecipeError, match="exceeds the volume"):
        run_recipe(fill, sub, SPACING, RecipeParams(roi_boxes_zyx=((0, 10, 0, 65, 0, 10),)))
    with pytest.raises(RecipeError, match="roi_mask"):
        run_recipe(fill, sub, SPACING, PARAMS, roi_mask=np.ones((2, 2, 2), bool))


def test_params_json_roundtrip():
    p = RecipeParams(seed_points_zyx=((1, 2, 3),), roi_boxes_zyx=((0, 1, 0, 2, 0, 3),), balance=True, seed=7)
    d = json.loads(json.dumps(p.to_dict()))
    assert RecipeParams.from_dict(d) == p
    assert RecipeParams.from_dict({}) == RecipeParams()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 0.5), (0.8, 0.5, 0.4), (2.0, 0.5, 0.5)])
@pytest.mark.parametrize("radius", [0.3, 1.0, 1.5])
def test_morphology_matches_scipy(spacing, radius):
    rng = np.random.default_rng(int(radius * 10) + int(spacing[2] * 100))
    st = ball_footprint(radius, spacing)
    dense = rng.random((14, 17, 19)) > 0.25
    sparse = rng.random((14, 17, 19)) > 0.97
    np.testing.assert_array_equal(
        erode_mm(dense, radius, spacing, border_value=False), ndi.binary_erosion(dense, st)
    )
    np.testing.assert_array_equal(dilate_mm(sparse, radius, spacing), ndi.binary_dilation(sparse, st))
    # the structuring element is the set of offsets within radius (mm)
    c = np.array(st.shape) // 2
    g = np.indices(st.shape) - c[:, None, None, None]
    d = np.sqrt(sum((g[i] * spacing[i]) ** 2 for i in range(3)))
    np.testing.assert_array_equal(st, d <= radius + 1e-9)


# ----------------------------------------------------------------------------------------- physical floors


def balls_volume(spacing, radii_mm=(2.0, 1.2), size_mm=40.0):
    """A subtracted volume (int16 HU) of ``size_mm`` cubed at ``spacing`` with one 800 HU ball per radius (mm),
    rasterized as the voxels whose centre lies within the radius; plus a fill with a bone slab."""
    shape = tuple(int(round(size_mm / s)) for s in spacing)
    grid = np.indices(shape).astype(float)
    sub = np.zeros(shape, np.int16)
    balls = []
    for i, r in enumerate(radii_mm):
        centre = [n // 2 for n in shape]
        centre[2] = int((i + 1) * shape[2] / (len(radii_mm) + 1))
        d2 = sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3))
        ball = d2 <= r * r
        sub[ball] = 800
        balls.append(ball)
    fill = np.full(shape, 40, np.int16)
    fill[:2] = 1200
    return fill, sub, balls


@pytest.mark.parametrize("spacing", [(0.46, 0.46, 0.46), (1.4, 1.4, 1.4), (1.0, 0.5, 0.8)])
def test_default_floor_is_physical_same_decision_at_any_voxel_size(spacing):
    """A 2 mm ball (33.5 mm^3) is kept and a 1.2 mm ball (7.2 mm^3) dropped under the default 20 mm^3 floor,
    whatever the voxel size; the report's numbers are the independently counted voxels times the voxel
    volume."""
    fill, sub, (big, small) = balls_volume(spacing)
    res = run_recipe(fill, sub, spacing, RecipeParams())
    vessel = res.labels == VESSEL
    np.testing.assert_array_equal(vessel, big)
    voxel_mm3 = float(np.prod(spacing))
    assert res.vessel_floor_voxels == math.ceil(20.0 / voxel_mm3 - 1e-9)
    report = json.loads(json.dumps(res.report()))
    assert report["vessel"]["voxels"] == int(big.sum())
    assert report["vessel"]["mm3"] == pytest.approx(big.sum() * voxel_mm3)
    assert (report["vessel"]["components_kept"], report["vessel"]["components_dropped"]) == (1, 1)
    assert report["vessel"]["dropped_voxels"] == int(small.sum())
    assert report["vessel"]["dropped_mm3"] == pytest.approx(small.sum() * voxel_mm3)
    assert report["vessel"]["floor_mm3"] == 20.0 and report["warnings"] == []
    assert report["classes"]["1"] == {
        "name": "vessel",
        "voxels": int(big.sum()),
        "mm3": pytest.approx(big.sum() * voxel_mm3),
    }
    assert f"Kept {int(big.sum()):,} vessel voxels" in report["summary"]


def test_report_matches_scipy_components(head):
    """Kept/dropped components and voxels of the report against scipy's own labelling."""
    fill, sub, _ = head
    params = RecipeParams(min_vessel_component_mm3=20.0, **THRESHOLD_ONLY)
    res = run_recipe(fill, sub, SPACING, params)
    lab, n = ndi.label(sub >= params.vessel_threshold_hu, ST26)
    sizes = np.bincount(lab.ravel())[1:]
    keep = sizes * np.prod(SPACING) >= 20.0
    assert keep.any() and not keep.all()  # the tube is kept, the 27-voxel blob (17 mm^3) dropped
    np.testing.assert_array_equal(res.labels == VESSEL, np.isin(lab, np.flatnonzero(keep) + 1))
    vessel = res.report()["vessel"]
    assert (vessel["components_kept"], vessel["components_dropped"]) == (int(keep.sum()), int((~keep).sum()))
    assert vessel["dropped_voxels"] == int(sizes[~keep].sum())
    assert vessel["largest_dropped_mm3"] == pytest.approx(sizes[~keep].max() * np.prod(SPACING))
    assert vessel["above_threshold_voxels"] == int(sizes.sum())


def test_empty_classes_warn_and_say_why(head):
    fill, sub, _ = head
    res = run_recipe(fill, sub, SPACING, RecipeParams(min_vessel_component_mm3=50_000.0))
    assert res.counts[VESSEL] == 0
    (warning,) = res.warnings
    assert warning.startswith("No vessel voxels") and "50,000 mm^3" in warning
    assert "min_vessel_component_mm3" in warning and "seed point" in warning
    assert res.report()["warnings"] == [warning]
    none_bright = run_recipe(fill, np.zeros_like(sub), SPACING, RecipeParams(bone_threshold_hu=2000))
    assert any("reaches vessel_threshold_hu=600 HU" in w for w in none_bright.warnings)
    assert any(w.startswith("No bone voxels") and "2000 HU" in w for w in none_bright.warnings)
    legacy = run_recipe(fill, sub, SPACING, RecipeParams(min_vessel_component_voxels=100_000))
    assert "lower min_vessel_component_voxels" in legacy.warnings[0]
    assert run_recipe(fill, sub, SPACING, RecipeParams()).warnings == []


def test_floor_bigger_than_the_volume_is_refused(head):
    fill, sub, _ = head
    volume_mm3 = np.prod(SHAPE) * np.prod(SPACING)
    with pytest.raises(RecipeError, match=r"min_vessel_component_mm3=.* is more than the whole volume"):
        run_recipe(fill, sub, SPACING, RecipeParams(min_vessel_component_mm3=volume_mm3 * 1.01))
    run_recipe(fill, sub, SPACING, RecipeParams(min_vessel_component_mm3=volume_mm3))  # the largest allowed
    with pytest.raises(RecipeError, match="more than the whole volume"):
        RecipeParams(min_vessel_component_voxels=int(np.prod(SHAPE)) + 1).check_floor(SHAPE, SPACING)
    with pytest.raises(RecipeError, match="seed_points_zyx is empty"):
        RecipeParams(seeded_vessels_only=True).check_floor(SHAPE, SPACING)


def test_seeded_vessels_only_keeps_just_the_clicked_components(head):
    fill, sub, _ = head
    params = RecipeParams(seeded_vessels_only=True, seed_points_zyx=(BLOB_CENTER,), **THRESHOLD_ONLY)
    res = run_recipe(fill, sub, SPACING, params)
    lab, _ = ndi.label(sub >= 600, ST26)
    np.testing.assert_array_equal(res.labels == VESSEL, lab == lab[BLOB_CENTER])
    assert res.n_vessel_components_kept == 1 and "seed points" in res.report()["summary"]


def test_recorded_params_keep_their_floor_in_voxels():
    """Label versions recorded before floors were physical: a floor in voxels stays one, and recipe params
    naming no floor meant the old default of 500 voxels, which they keep; new params get the mm^3 default."""
    assert RecipeParams.from_dict({}, recorded=True) == RecipeParams(
        min_vessel_component_voxels=500, **THRESHOLD_ONLY
    )
    assert (
        RecipeParams.from_dict({"vessel_threshold_hu": 550}, recorded=True).min_vessel_component_voxels == 500
    )
    assert RecipeParams.from_dict({"min_vessel_component_voxels": 30}, recorded=True) == RecipeParams(
        min_vessel_component_voxels=30, **THRESHOLD_ONLY
    )
    fresh = RecipeParams.from_dict({})
    assert fresh.min_vessel_component_voxels is None and fresh.min_vessel_component_mm3 == 20.0
    for p in (fresh, RecipeParams(min_vessel_component_voxels=30), RecipeParams(seeded_vessels_only=True)):
        assert RecipeParams.from_dict(json.loads(json.dumps(p.to_dict())), recorded=True) == p
    with pytest.raises(RecipeError, match="not both"):
        RecipeParams(min_vessel_component_voxels=30, min_vessel_component_mm3=10.0)


def test_voxel_floor_keeps_its_old_meaning(head):
    """A floor in voxels selects components by voxel count, exactly as before (independent scipy count)."""
    fill, sub, _ = head
    for floor in (27, 28, 500):
        params = RecipeParams(min_vessel_component_voxels=floor, **THRESHOLD_ONLY)
        np.testing.assert_array_equal(
            run_recipe(fill, sub, SPACING, params).labels == VESSEL, expected_vessel(sub, params)
        )
