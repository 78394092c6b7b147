"""Tests of dla.labeling.recipe against independent scipy computations on a small synthetic head."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.labeling.recipe import (
    RecipeError,
    RecipeParams,
    binary_dilate_mm,
    binary_erode_mm,
    ellipsoid_structure,
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


PARAMS = RecipeParams(min_vessel_component_voxels=100)


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
    params = RecipeParams(min_vessel_component_voxels=100, seed_points_zyx=((BLOB_CENTER),))
    res = run_recipe(fill, sub, SPACING, params)
    assert res.labels[BLOB_CENTER] == VESSEL
    np.testing.assert_array_equal(res.labels == VESSEL, expected_vessel(sub, params, [BLOB_CENTER]))
    assert res.n_vessel_components_kept == 2


def test_bone_components_and_vessel_dilation(head, result):
    fill, sub, _ = head
    labels = result.labels
    vessel = labels == VESSEL
    dil = ndi.binary_dilation(vessel, ellipsoid_structure(PARAMS.vessel_dilation_mm, SPACING))
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
    eroded = ndi.binary_erosion(window, ellipsoid_structure(1.0, SPACING))
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
    params = RecipeParams(min_vessel_component_voxels=100, roi_boxes_zyx=(box,))
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
    params = RecipeParams(min_vessel_component_voxels=100, balance=True, seed=3)
    a = run_recipe(fill, sub, SPACING, params).labels
    n = [int((a == c).sum()) for c in (VESSEL, BONE, SOFT_TISSUE)]
    full = [int((result.labels == c).sum()) for c in (VESSEL, BONE, SOFT_TISSUE)]
    assert n[0] == n[1] == n[2] == min(full)
    lab = a != 0
    np.testing.assert_array_equal(a[lab], result.labels[lab])  # subset of the unbalanced map
    b = run_recipe(fill, sub, SPACING, params).labels
    np.testing.assert_array_equal(a, b)
    c = run_recipe(
        fill, sub, SPACING, RecipeParams(min_vessel_component_voxels=100, balance=True, seed=4)
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
    st = ellipsoid_structure(radius, spacing)
    dense = rng.random((14, 17, 19)) > 0.25
    sparse = rng.random((14, 17, 19)) > 0.97
    np.testing.assert_array_equal(binary_erode_mm(dense, radius, spacing), ndi.binary_erosion(dense, st))
    np.testing.assert_array_equal(binary_dilate_mm(sparse, radius, spacing), ndi.binary_dilation(sparse, st))
    # the structuring element is the set of offsets within radius (mm)
    c = np.array(st.shape) // 2
    g = np.indices(st.shape) - c[:, None, None, None]
    d = np.sqrt(sum((g[i] * spacing[i]) ** 2 for i in range(3)))
    np.testing.assert_array_equal(st, d <= radius + 1e-9)
