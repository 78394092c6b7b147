"""Tests of dla.labeling.edit_ops: each op against an independent numpy/scipy computation, validation, replay."""

import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.labeling.edit_ops import (
    OP_TYPES,
    EditOpError,
    VolumeContext,
    apply_op,
    canonical_op,
    op_to_dict,
    parse_op,
    polygon_mask,
    replay,
)
from dla.labeling.recipe import RecipeParams, run_recipe

SHAPE = (32, 48, 56)
SPACING = (1.0, 0.8, 0.6)
ST26 = np.ones((3, 3, 3), bool)


def make_labels(seed=0):
    """Label map with a soft-tissue slab, a bone shell, a long snake-like vessel and small vessel islands."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(SHAPE, np.uint8)
    lab[4:28, 6:42, 6:50] = SOFT_TISSUE
    lab[4:28, 6:9, 6:50] = BONE
    lab[4:28, 39:42, 6:50] = BONE
    z = 16
    lab[z, 12:14, 2:54] = VESSEL  # long vessel across the volume (exceeds the initial window)
    lab[2:30, 20:22, 30:32] = VESSEL  # connected descending branch
    for _ in range(6):
        c = rng.integers([2, 2, 2], [SHAPE[0] - 3, SHAPE[1] - 3, SHAPE[2] - 3])
        lab[c[0] : c[0] + 2, c[1] : c[1] + 2, c[2] : c[2] + 2] = VESSEL
    return lab


def ctx():
    return VolumeContext(SPACING)


def check_result(before, after, res):
    """OpResult must match an independent comparison of the maps."""
    changed = before != after
    assert res.changed_voxels == int(changed.sum())
    cb = np.bincount(before.ravel(), minlength=4)
    ca = np.bincount(after.ravel(), minlength=4)
    assert res.delta_counts == {c: int(ca[c] - cb[c]) for c in range(4)}
    if res.changed_voxels == 0:
        assert res.bbox_zyx is None
        return
    idx = np.argwhere(changed)
    lo, hi = idx.min(0), idx.max(0) + 1
    assert res.bbox_zyx == (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
    assert json.loads(json.dumps(res.to_dict()))["changed_voxels"] == res.changed_voxels


def run(labels, op):
    before = labels.copy()
    res = apply_op(labels, op, ctx())
    check_result(before, labels, res)
    return res


def test_brush_sphere_volume_and_shape():
    lab = np.zeros(SHAPE, np.uint8)
    r = 6.0
    c = (15, 24, 28)
    run(lab, {"op": "brush", "center_zyx": list(c), "radius_mm": r, "label": VESSEL, "shape": "sphere"})
    g = np.indices(SHAPE)
    d = np.sqrt(sum(((g[i] - c[i]) * SPACING[i]) ** 2 for i in range(3)))
    np.testing.assert_array_equal(lab == VESSEL, d <= r)
    expected = 4 / 3 * math.pi * r**3 / np.prod(SPACING)
    assert abs((lab == VESSEL).sum() - expected) / expected < 0.05


@pytest.mark.parametrize("axis", ["z", "y", "x"])
def test_brush_circle_is_planar(axis):
    lab = np.zeros(SHAPE, np.uint8)
    c = (15, 24, 28)
    run(lab, {"op": "brush", "center_zyx": list(c), "radius_mm": 3.0, "label": BONE, "axis": axis})
    ax = "zyx".index(axis)
    g = np.indices(SHAPE)
    d = np.sqrt(sum(((g[i] - c[i]) * SPACING[i]) ** 2 for i in range(3) if i != ax))
    expected = (d <= 3.0) & (g[ax] == c[ax])
    np.testing.assert_array_equal(lab == BONE, expected)


def test_brush_only_class_and_erase():
    lab = make_labels()
    before = lab.copy()
    op = {
        "op": "brush",
        "center_zyx": [16, 12, 20],
        "radius_mm": 4.0,
        "label": 0,
        "shape": "sphere",
        "only_class": VESSEL,
    }
    res = run(lab, op)
    assert res.changed_voxels > 0
    changed = before != lab
    assert (before[changed] == VESSEL).all() and (lab[changed] == UNLABELED).all()
    g = np.indices(SHAPE)
    d = np.sqrt(sum(((g[i] - op["center_zyx"][i]) * SPACING[i]) ** 2 for i in range(3)))
    np.testing.assert_array_equal(changed, (d <= 4.0) & (before == VESSEL))


@pytest.mark.parametrize("shape, axis", [("sphere", "z"), ("circle", "y")])
def test_brush_stroke_is_the_union_of_its_dabs_in_one_op(shape, axis):
    """A drag sent as one op (centre + stroke points) paints exactly what one op per dab paints."""
    points = [[16, 12, 20], [16, 14, 22], [17, 16, 25], [31, 47, 55], [0, 0, 0]]  # incl. two corners
    common = {"op": "brush", "radius_mm": 2.5, "label": 0, "only_class": VESSEL, "shape": shape, "axis": axis}
    one_by_one = make_labels()
    for p in points:
        run(one_by_one, {**common, "center_zyx": p})
    stroke = make_labels()
    res = run(stroke, {**common, "center_zyx": points[0], "stroke_zyx": points[1:]})
    np.testing.assert_array_equal(stroke, one_by_one)
    assert res.changed_voxels == int((make_labels() != stroke).sum()) > 0


def test_balance_undersamples_every_class_to_the_smallest():
    lab = make_labels()
    before = lab.copy()
    counts = {c: int((before == c).sum()) for c in (VESSEL, BONE, SOFT_TISSUE)}
    res = run(lab, {"op": "balance", "seed": 3})
    n = min(counts.values())
    assert {c: int((lab == c).sum()) for c in counts} == dict.fromkeys(counts, n)
    kept = lab != UNLABELED
    np.testing.assert_array_equal(lab[kept], before[kept])  # only unlabels, never changes a class
    assert res.changed_voxels == sum(counts.values()) - 3 * n
    again = before.copy()
    run(again, {"op": "balance", "seed": 3})
    np.testing.assert_array_equal(again, lab)  # seeded: replay gives the same map


def test_remove_island_exact_component():
    for at in ([16, 12, 30], [5, 20, 30]):  # on the long vessel; on the branch (same component)
        lab = make_labels()
        before = lab.copy()
        comp_lab, _ = ndi.label(before == before[tuple(at)], ST26)
        comp = comp_lab == comp_lab[tuple(at)]
        run(lab, {"op": "remove_island", "at_zyx": at})
        np.testing.assert_array_equal(lab[comp], 0)
        np.testing.assert_array_equal(lab[~comp], before[~comp])
    lab = make_labels()
    with pytest.raises(EditOpError, match="no labeled island at"):
        apply_op(lab, {"op": "remove_island", "at_zyx": [0, 0, 0]}, ctx())


def test_keep_connected_matches_scipy():
    lab = make_labels()
    before = lab.copy()
    seed = [16, 12, 30]
    run(lab, {"op": "keep_connected", "label": VESSEL, "seeds_zyx": [seed]})
    cl, _ = ndi.label(before == VESSEL, ST26)
    keep = cl == cl[tuple(seed)]
    np.testing.assert_array_equal(lab == VESSEL, keep)
    drop = (before == VESSEL) & ~keep
    assert drop.any()
    np.testing.assert_array_equal(lab[drop], 0)
    np.testing.assert_array_equal(lab[before != VESSEL], before[before != VESSEL])


def pnpoly(poly, r, c):
    inside = False
    n = len(poly)
    for i in range(n):
        ri, ci = poly[i]
        rj, cj = poly[(i + 1) % n]
        if (ri > r) != (rj > r) and c < (cj - ci) * (r - ri) / (rj - ri) + ci:
            inside = not inside
    return inside


@pytest.mark.parametrize("seed", range(6))
def test_polygon_mask_matches_point_in_polygon(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 9))
    poly = [(float(rng.uniform(-5, 35)), float(rng.uniform(-5, 45))) for _ in range(n)]
    if seed == 0:
        poly = [(2, 2), (2, 20), (12, 20), (12, 2)]  # integer vertices: edges through pixel centres
    m = polygon_mask(poly, (30, 40))
    ref = np.array([[pnpoly(poly, r, c) for c in range(40)] for r in range(30)])
    np.testing.assert_array_equal(m, ref)


@pytest.mark.parametrize("mode", ["inside", "outside"])
def test_scissors_slab(mode):
    lab = make_labels()
    before = lab.copy()
    poly = [[10.5, 10.5], [30.2, 12.0], [25.0, 40.7]]
    op = {"op": "scissors", "axis": "x", "slice": 20, "polygon": poly, "mode": mode, "slab": [18, 25]}
    run(lab, op)
    plane = np.array([[pnpoly(poly, r, c) for c in range(SHAPE[1])] for r in range(SHAPE[0])])  # (z, y)
    if mode == "outside":
        plane = ~plane
    cut = np.zeros(SHAPE, bool)
    cut[:, :, 18:25] = plane[:, :, None]
    np.testing.assert_array_equal(lab[cut], 0)
    np.testing.assert_array_equal(lab[~cut], before[~cut])


def test_scissors_single_slice_only_class():
    lab = make_labels()
    before = lab.copy()
    poly = [[0, 0], [0, 47], [47, 47], [47, 0]]
    run(lab, {"op": "scissors", "axis": "z", "slice": 16, "polygon": poly, "label": VESSEL})
    changed = before != lab
    assert changed.any()
    assert (np.argwhere(changed)[:, 0] == 16).all()
    assert (before[changed] == VESSEL).all()


def test_set_roi_and_relabel():
    lab = make_labels()
    before = lab.copy()
    run(lab, {"op": "set_roi", "box_zyx": [5, 20, 10, 30, 0, 56]})
    inside = np.zeros(SHAPE, bool)
    inside[5:20, 10:30, :] = True
    np.testing.assert_array_equal(lab[inside], before[inside])
    assert (lab[~inside] == 0).all()
    lab = before.copy()
    run(lab, {"op": "relabel", "from": SOFT_TISSUE, "to": BONE, "box_zyx": [0, 10, 0, 48, 0, 56]})
    box = np.zeros(SHAPE, bool)
    box[0:10] = True
    np.testing.assert_array_equal(lab, np.where(box & (before == SOFT_TISSUE), BONE, before))
    lab = before.copy()
    run(lab, {"op": "relabel", "from": VESSEL, "to": UNLABELED})
    assert not (lab == VESSEL).any()


def test_recipe_op_with_lazy_context():
    rng = np.random.default_rng(1)
    fill = rng.normal(40, 10, SHAPE).astype(np.int16)
    sub = rng.normal(0, 30, SHAPE).astype(np.int16)
    sub[10:20, 20:23, 5:50] = 800
    fill[0:3] = 1200
    calls = []

    def loader():
        calls.append(1)
        return fill, sub

    context = VolumeContext(SPACING, loader=loader)
    params = {"min_vessel_component_voxels": 50}
    lab = np.zeros(SHAPE, np.uint8)
    before = lab.copy()
    res = apply_op(lab, {"op": "recipe", "params": params}, context)
    check_result(before, lab, res)
    np.testing.assert_array_equal(lab, run_recipe(fill, sub, SPACING, RecipeParams(**params)).labels)
    apply_op(lab, {"op": "recipe", "params": params}, context)
    assert calls == [1]
    with pytest.raises(EditOpError, match="needs the fill"):
        apply_op(lab, {"op": "recipe", "params": {}}, VolumeContext(SPACING))


OPS = [
    {"op": "brush", "center_zyx": [16, 24, 28], "radius_mm": 5.0, "label": VESSEL, "shape": "sphere"},
    {"op": "remove_island", "at_zyx": [16, 12, 30]},
    {"op": "scissors", "axis": "z", "slice": 10, "polygon": [[0, 0], [40, 5], [10, 50]], "slab": [8, 14]},
    {"op": "relabel", "from": SOFT_TISSUE, "to": BONE, "box_zyx": [0, 8, 0, 48, 0, 56]},
    {"op": "brush", "center_zyx": [20, 30, 30], "radius_mm": 2.0, "label": 0},
]


def test_replay_deterministic_and_undo():
    base = make_labels()
    base_copy = base.copy()
    a = replay(base, OPS, ctx())
    b = replay(base, json.loads(json.dumps(OPS)), ctx())
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(base, base_copy)
    step = base.copy()
    for op in OPS[:-1]:
        apply_op(step, op, ctx())
    np.testing.assert_array_equal(replay(base, OPS[:-1], ctx()), step)
    apply_op(step, OPS[-1], ctx())
    np.testing.assert_array_equal(step, a)


def test_op_dict_roundtrip():
    for d in OPS + [
        {"op": "keep_connected", "label": 1, "seeds_zyx": [[1, 2, 3]]},
        {"op": "set_roi", "box_zyx": [0, 4, 0, 4, 0, 4]},
        {"op": "recipe", "params": {"vessel_threshold_hu": 550}},
        {"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": 1, "label": 0, "only_class": 1, "axis": "y"},
        {
            "op": "brush",
            "center_zyx": [1, 1, 1],
            "radius_mm": 1,
            "label": 2,
            "stroke_zyx": [[2, 2, 2], [3, 3, 3]],
        },
    ]:
        op = parse_op(d, SHAPE, SPACING)
        again = parse_op(json.loads(json.dumps(op_to_dict(op))), SHAPE, SPACING)
        assert again == op


BAD = [
    ({"op": "paint"}, "valid op types"),
    ({"nop": 1}, "unknown op type"),
    ("brush", "must be a dict"),
    (
        {"op": "brush", "center_zyx": [40, 1, 1], "radius_mm": 2, "label": 1},
        "z=40 is outside the volume (valid z 0..31)",
    ),
    ({"op": "brush", "center_zyx": [1, -1, 1], "radius_mm": 2, "label": 1}, "y=-1"),
    ({"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": 0, "label": 1}, "radius_mm=0.0 must be > 0"),
    ({"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": 80, "label": 1}, "<= 50"),
    ({"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": 2, "label": 7}, "not a class id"),
    ({"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": "2", "label": 1}, "must be a finite number"),
    ({"op": "brush", "center_zyx": [1, 1], "radius_mm": 2, "label": 1}, "must be [z, y, x]"),
    (
        {"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": 2, "label": 1, "shape": "cube"},
        "'circle' or 'sphere'",
    ),
    ({"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": 2}, "missing field 'label'"),
    ({"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": 2, "label": 1, "colour": 3}, "unknown field"),
    (
        {
            "op": "brush",
            "center_zyx": [1, 1, 1],
            "radius_mm": 2,
            "label": 1,
            "stroke_zyx": [[1, 1, 1], [1, 60, 1]],
        },
        "brush stroke_zyx point [1, 60, 1]: y=60 is outside the volume",
    ),
    (
        {"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": 2, "label": 1, "stroke_zyx": 5},
        "list of at most",
    ),
    ({"op": "balance", "seed": -1}, "balance seed must be in"),
    ({"op": "balance", "seed": 1.5}, "must be an integer"),
    ({"op": "remove_island", "at_zyx": [0, 0, 99]}, "x=99"),
    ({"op": "remove_island", "at_zyx": [0, 0, 0]}, "no labeled island"),
    ({"op": "keep_connected", "label": 1, "seeds_zyx": []}, "non-empty"),
    ({"op": "keep_connected", "label": 0, "seeds_zyx": [[1, 1, 1]]}, "labeled class"),
    ({"op": "scissors", "axis": "z", "slice": 3, "polygon": []}, "empty polygon"),
    ({"op": "scissors", "axis": "z", "slice": 3, "polygon": [[0, 0], [1, 1], [2, 2]]}, "zero area"),
    ({"op": "scissors", "axis": "q", "slice": 3, "polygon": [[0, 0], [0, 5], [5, 0]]}, "axis must be one of"),
    ({"op": "scissors", "axis": "y", "slice": 48, "polygon": [[0, 0], [0, 5], [5, 0]]}, "valid y 0..47"),
    (
        {"op": "scissors", "axis": "z", "slice": 3, "polygon": [[0, 0], [0, 5], [5, 0]], "slab": [5, 2]},
        "slab",
    ),
    ({"op": "set_roi", "box_zyx": [5, 5, 0, 10, 0, 10]}, "empty along z"),
    ({"op": "set_roi", "box_zyx": [0, 5, 0, 49, 0, 10]}, "outside the volume"),
    ({"op": "relabel", "from": 1, "to": 1}, "same class"),
    ({"op": "recipe", "params": {"vessel_threshold_hu": 100}}, "vessel_threshold_hu"),
]


@pytest.mark.parametrize("op, fragment", BAD)
def test_bad_ops_raise_and_leave_labels_unchanged(op, fragment):
    lab = make_labels()
    before = lab.copy()
    with pytest.raises(EditOpError) as e:
        apply_op(lab, op, ctx())
    assert fragment in str(e.value)
    np.testing.assert_array_equal(lab, before)


def test_unknown_op_lists_valid_types():
    with pytest.raises(EditOpError) as e:
        parse_op({"op": "lasso"}, SHAPE, SPACING)
    assert all(t in str(e.value) for t in OP_TYPES)


def test_bad_labels_array():
    with pytest.raises(EditOpError, match="uint8"):
        apply_op(np.zeros(SHAPE, np.int32), OPS[0], ctx())
    with pytest.raises(EditOpError, match="op #1"):
        replay(make_labels(), [OPS[0], {"op": "nope"}], ctx())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_component_labelling_matches_scipy(seed):
    """dla.labeling.components (cc3d) gives scipy's 26-connected partition, component for component."""
    from dla.labeling.components import label_components

    rng = np.random.default_rng(seed)
    mask = ndi.binary_opening(rng.random((30, 40, 50)) < 0.45)
    ours, n = label_components(mask)
    ref, n_ref = ndi.label(mask, ST26)
    assert n == n_ref > 1
    pairs = np.unique(np.stack([ours[mask], ref[mask]]), axis=1)
    assert pairs.shape[1] == n, "each of our components is exactly one scipy component"
    assert not ours[~mask].any()


def recipe_volumes():
    """Fill/subtracted int16 with a long bright tube (kept by any floor here) and small bright specks."""
    rng = np.random.default_rng(5)
    fill = rng.normal(40, 10, SHAPE).astype(np.int16)
    fill[0:3] = 1200
    sub = rng.normal(0, 30, SHAPE).astype(np.int16)
    sub[10:14, 20:24, 5:50] = 800  # 720 voxels = 346 mm^3
    sub[25:28, 5:8, 5:8] = 800  # 27 voxels = 13 mm^3
    sub[25:30, 40:45, 40:45] = 800  # 125 voxels = 60 mm^3
    return fill, sub


def kept_by_voxel_count(sub, floor_voxels):
    """Vessel mask of the pre-physical recipe: 600 HU components of at least ``floor_voxels`` voxels (scipy)."""
    lab, _ = ndi.label(sub >= 600, ST26)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= floor_voxels
    keep[0] = False
    return keep[lab]


def test_recorded_recipe_ops_replay_as_they_were_stored():
    """Stored label versions' ops keep their meaning: no floor = the old default of 500 voxels, a floor in
    voxels stays in voxels (also one above the volume: the old "seed points only" idiom); a new op without a
    floor gets the 20 mm^3 default. Each compared with an independent scipy computation."""
    fill, sub = recipe_volumes()
    context = VolumeContext(SPACING, fill_hu=fill, subtracted_hu=sub)
    base = np.zeros(SHAPE, np.uint8)
    legacy = {"op": "recipe", "params": {"vessel_threshold_hu": 600}}
    np.testing.assert_array_equal(replay(base, [legacy], context) == VESSEL, kept_by_voxel_count(sub, 500))
    np.testing.assert_array_equal(
        replay(base, [{"op": "recipe", "params": {"min_vessel_component_voxels": 30}}], context) == VESSEL,
        kept_by_voxel_count(sub, 30),
    )
    seeded = {
        "op": "recipe",
        "params": {"seed_points_zyx": [[26, 6, 6]], "min_vessel_component_voxels": 10**8},
    }
    lab, _ = ndi.label(sub >= 600, ST26)
    np.testing.assert_array_equal(replay(base, [seeded], context) == VESSEL, lab == lab[26, 6, 6])
    with pytest.raises(EditOpError, match="more than the whole volume"):
        apply_op(base.copy(), seeded, context)  # as a new edit that floor is refused
    fresh = base.copy()
    res = apply_op(fresh, legacy, context)
    floor_voxels = math.ceil(20.0 / np.prod(SPACING))  # 42 voxels of 0.48 mm^3
    np.testing.assert_array_equal(fresh == VESSEL, kept_by_voxel_count(sub, floor_voxels))
    assert (
        res.report["vessel"]["components_kept"] == 2 and res.report["vessel"]["floor_voxels"] == floor_voxels
    )
    assert json.loads(json.dumps(res.to_dict()))["report"]["vessel"]["dropped_voxels"] >= 27


def test_canonical_op_records_the_recipe_in_full():
    canonical = canonical_op({"op": "recipe", "params": {"vessel_threshold_hu": 550}}, SHAPE, SPACING)
    assert canonical["params"] == RecipeParams(vessel_threshold_hu=550).to_dict()
    assert canonical["params"]["min_vessel_component_mm3"] == 20.0
    recorded = canonical_op({"op": "recipe", "params": {}}, SHAPE, SPACING, recorded=True)
    assert recorded["params"]["min_vessel_component_voxels"] == 500
    assert recorded["params"]["min_vessel_component_mm3"] is None
    fill, sub = recipe_volumes()
    context = VolumeContext(SPACING, fill_hu=fill, subtracted_hu=sub)
    for op, was_recorded in (({"op": "recipe", "params": {}}, False), ({"op": "recipe", "params": {}}, True)):
        a, b = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
        apply_op(a, op, context, recorded=was_recorded)
        apply_op(b, canonical_op(op, SHAPE, SPACING, recorded=was_recorded), context)  # either way, same map
        np.testing.assert_array_equal(a, b)
    brush = {"op": "brush", "center_zyx": [1, 1, 1], "radius_mm": 1, "label": 1}
    assert canonical_op(brush, SHAPE, SPACING) is brush


def test_recipe_op_without_any_class_warns():
    fill, sub = recipe_volumes()
    context = VolumeContext(SPACING, fill_hu=fill, subtracted_hu=np.zeros_like(sub))
    res = apply_op(np.zeros(SHAPE, np.uint8), {"op": "recipe", "params": {}}, context)
    assert res.warnings and res.warnings[0].startswith("No vessel voxels")
    assert res.to_dict()["warnings"] == res.warnings
    assert (
        "report"
        not in apply_op(make_labels(), {"op": "remove_island", "at_zyx": [16, 12, 30]}, ctx()).to_dict()
    )
