"""Slicer's vocabulary in dla.labeling.edit_ops (islands: keep largest / remove small / split; margin; smoothing)
and dla.labeling.morphology, each against an independent scipy.ndimage computation on constructed masks with an
anisotropic spacing; validation of sizes in words; replay and undo patches."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.labeling import morphology
from dla.labeling.edit_ops import EditOpError, VolumeContext, apply_op, op_to_dict, parse_op, replay

SHAPE = (24, 36, 40)
SPACING = (1.5, 0.8, 0.6)  # dz, dy, dx: anisotropic
VOXEL_MM3 = 1.5 * 0.8 * 0.6
ST26 = np.ones((3, 3, 3), bool)


def ellipsoid(radius_mm, spacing=SPACING):
    """The ball of radius_mm in voxel offsets, built here independently of dla.labeling.morphology."""
    half = [int(radius_mm // s) for s in spacing]
    zz, yy, xx = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    d2 = (zz * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2
    return d2 <= radius_mm**2 + 1e-9


def make_labels(seed=0):
    """Soft tissue block, a bone slab, a big vessel blob with noisy edges, small vessel specks of known sizes."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:22, 4:32, 4:36] = SOFT_TISSUE
    lab[2:22, 4:7, 4:36] = BONE
    blob = (ndi.gaussian_filter(rng.random(SHAPE), 1.5) > 0.5) & (np.indices(SHAPE)[0] > 5)
    blob[:, :10] = False
    blob[:, :, :12] = False
    lab[blob] = VESSEL
    lab[3, 10, 5] = VESSEL  # 1-voxel speck
    lab[3:5, 12:14, 5:7] = VESSEL  # 8-voxel speck (isolated from the blob: x < 12)
    lab[8:11, 12:15, 5:8] = VESSEL  # 27-voxel speck
    return lab


def ctx():
    return VolumeContext(SPACING)


def run(labels, op):
    """Apply op; check its OpResult against a direct comparison of the maps; return (result, before)."""
    before = labels.copy()
    res = apply_op(labels, op, ctx())
    changed = before != labels
    assert res.changed_voxels == int(changed.sum())
    cb, ca = np.bincount(before.ravel(), minlength=4), np.bincount(labels.ravel(), minlength=4)
    assert res.delta_counts == {c: int(ca[c] - cb[c]) for c in range(4)}
    if res.changed_voxels:
        idx = np.argwhere(changed)
        lo, hi = idx.min(0), idx.max(0) + 1
        assert res.bbox_zyx == (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
        z0, z1, y0, y1, x0, x1 = res.bbox_zyx
        np.testing.assert_array_equal(res.previous, before[z0:z1, y0:y1, x0:x1])  # the undo patch
    else:
        assert res.bbox_zyx is None
    assert json.loads(json.dumps(res.to_dict()))["changed_voxels"] == res.changed_voxels
    return res, before


# ----------------------------------------------------------------------------------------------- morphology


@pytest.mark.parametrize("radius_mm", [0.8, 1.7, 3.1])
@pytest.mark.parametrize("path", ["runs", "distance", "distance-in-slabs"])
def test_morphology_matches_scipy_with_an_ellipsoid(radius_mm, path, monkeypatch):
    """Both ways of computing (x-runs of the ball; distance transforms, in one slab or in slabs of a few
    slices with their halo) give scipy's binary morphology with the ellipsoid."""
    monkeypatch.setattr(morphology, "MAX_RUNS", 10**6 if path == "runs" else 0)
    if path == "distance-in-slabs":
        monkeypatch.setattr(morphology, "SLAB_VOXELS", 36 * 40 * 3)
    mask = make_labels(1) == VESSEL
    mask[0:4, 0:5, 0:5] = True  # touches three faces of the volume
    ball = ellipsoid(radius_mm)
    np.testing.assert_array_equal(morphology.ball_footprint(radius_mm, SPACING), ball)
    np.testing.assert_array_equal(
        morphology.dilate_mm(mask, radius_mm, SPACING), ndi.binary_dilation(mask, ball)
    )
    eroded = ndi.binary_erosion(mask, ball, border_value=1)  # the volume's faces do not erode
    np.testing.assert_array_equal(morphology.erode_mm(mask, radius_mm, SPACING), eroded)
    np.testing.assert_array_equal(
        morphology.opening_mm(mask, radius_mm, SPACING), ndi.binary_dilation(eroded, ball)
    )
    closed = ndi.binary_erosion(ndi.binary_dilation(mask, ball), ball, border_value=1)
    np.testing.assert_array_equal(morphology.closing_mm(mask, radius_mm, SPACING), closed)
    median = ndi.median_filter(mask.astype(np.uint8), footprint=ball, mode="nearest").astype(bool)
    np.testing.assert_array_equal(morphology.median_mm(mask, radius_mm, SPACING), median)


# ----------------------------------------------------------------------------------------------- islands


def components(mask):
    lab, n = ndi.label(mask, ST26)
    return lab, np.bincount(lab.ravel(), minlength=n + 1)


@pytest.mark.parametrize("label", [VESSEL, BONE])
def test_keep_largest_keeps_only_the_largest_island(label):
    lab = make_labels()
    lab[20, 30, 30:34] = BONE  # a second bone island
    res, before = run(lab, {"op": "keep_largest", "label": label})
    comp, sizes = components(before == label)
    sizes[0] = 0
    largest = comp == np.argmax(sizes)
    np.testing.assert_array_equal(lab == label, largest)
    np.testing.assert_array_equal(lab[~(before == label)], before[~(before == label)])
    assert (lab[(before == label) & ~largest] == UNLABELED).all()
    assert res.changed_voxels == int((before == label).sum() - largest.sum()) > 0


def test_keep_largest_of_an_absent_class_changes_nothing():
    lab = np.zeros(SHAPE, np.uint8)
    assert run(lab, {"op": "keep_largest", "label": VESSEL})[0].changed_voxels == 0


@pytest.mark.parametrize("label", [VESSEL, None])
@pytest.mark.parametrize("min_mm3", [6.0, 20.0])
def test_remove_small_drops_islands_below_the_volume(label, min_mm3):
    lab = make_labels()
    lab[20, 30, 30:32] = BONE  # a 2-voxel bone island
    op = {"op": "remove_small", "min_volume_mm3": min_mm3}
    if label is not None:
        op["label"] = label
    res, before = run(lab, op)
    expected = before.copy()
    for c in (VESSEL, BONE, SOFT_TISSUE) if label is None else (label,):
        comp, sizes = components(before == c)
        small = sizes * VOXEL_MM3 < min_mm3
        small[0] = False
        expected[small[comp]] = UNLABELED
    np.testing.assert_array_equal(lab, expected)
    assert res.changed_voxels > 0
    # specks of 1 and 8 voxels (0.72, 5.76 mm^3) go at 6 mm^3; the 27-voxel one (19.44 mm^3) only at 20
    assert (lab[8:11, 12:15, 5:8] == VESSEL).all() == (min_mm3 < 27 * VOXEL_MM3)
    assert lab[3, 10, 5] == UNLABELED and (lab[3:5, 12:14, 5:7] == UNLABELED).all()


def test_keep_selected_is_keep_connected_at_the_click():
    lab = make_labels()
    res, before = run(lab, {"op": "keep_connected", "label": VESSEL, "seeds_zyx": [[9, 13, 6]]})
    comp, _ = components(before == VESSEL)
    np.testing.assert_array_equal(lab == VESSEL, comp == comp[9, 13, 6])


def test_split_island_moves_the_clicked_island_to_another_class():
    lab = make_labels()
    res, before = run(lab, {"op": "split_island", "at_zyx": [9, 13, 6], "to_class": BONE})
    comp, _ = components(before == VESSEL)
    island = comp == comp[9, 13, 6]
    assert island.sum() == 27 and res.changed_voxels == 27
    assert (lab[island] == BONE).all()
    np.testing.assert_array_equal(lab[~island], before[~island])
    assert res.delta_counts[VESSEL] == -27 and res.delta_counts[BONE] == 27


def test_split_island_refusals_name_the_problem():
    lab = make_labels()
    with pytest.raises(EditOpError, match="vessel already"):
        apply_op(lab, {"op": "split_island", "at_zyx": [9, 13, 6], "to_class": VESSEL}, ctx())
    with pytest.raises(EditOpError, match="no labeled island"):
        apply_op(lab, {"op": "split_island", "at_zyx": [0, 0, 0], "to_class": BONE}, ctx())
    np.testing.assert_array_equal(lab, make_labels())


# ----------------------------------------------------------------------------------------------- margin, smooth


@pytest.mark.parametrize("size_mm", [0.9, 2.0])
@pytest.mark.parametrize("only_class", [None, SOFT_TISSUE])
def test_margin_grow_is_a_dilation_by_the_ellipsoid(size_mm, only_class):
    lab = make_labels()
    op = {"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": size_mm}
    if only_class is not None:
        op["only_class"] = only_class
    res, before = run(lab, op)
    m = before == VESSEL
    grown = ndi.binary_dilation(m, ellipsoid(size_mm))
    allowed = np.ones(SHAPE, bool) if only_class is None else before == only_class
    expected = before.copy()
    expected[grown & ~m & allowed] = VESSEL
    np.testing.assert_array_equal(lab, expected)
    assert res.changed_voxels > 0


@pytest.mark.parametrize("size_mm", [0.9, 1.6])
def test_margin_shrink_is_an_erosion_and_frees_voxels(size_mm):
    lab = make_labels()
    res, before = run(lab, {"op": "margin", "label": BONE, "mode": "shrink", "size_mm": size_mm})
    m = before == BONE
    kept = ndi.binary_erosion(m, ellipsoid(size_mm), border_value=1)
    expected = before.copy()
    expected[m & ~kept] = UNLABELED
    np.testing.assert_array_equal(lab, expected)
    assert res.changed_voxels > 0


@pytest.mark.parametrize("method", ["median", "opening", "closing"])
@pytest.mark.parametrize("kernel_mm", [1.7, 3.4])
def test_smooth_matches_scipy(method, kernel_mm):
    lab = make_labels(2)
    holes = (lab == VESSEL) & (np.random.default_rng(5).random(SHAPE) < 0.08)
    lab[holes] = SOFT_TISSUE  # pepper holes for the closing to fill
    res, before = run(lab, {"op": "smooth", "label": VESSEL, "method": method, "kernel_mm": kernel_mm})
    m = before == VESSEL
    ball = ellipsoid(kernel_mm / 2)
    if method == "median":
        new = ndi.median_filter(m.astype(np.uint8), footprint=ball, mode="nearest").astype(bool)
    elif method == "opening":
        new = ndi.binary_dilation(ndi.binary_erosion(m, ball, border_value=1), ball)
    else:
        new = ndi.binary_erosion(ndi.binary_dilation(m, ball), ball, border_value=1)
    expected = before.copy()
    expected[m & ~new] = UNLABELED
    expected[new & ~m] = VESSEL
    np.testing.assert_array_equal(lab, expected)
    assert res.changed_voxels > 0


def test_closing_only_over_unlabeled_keeps_other_classes():
    lab = make_labels(2)
    lab[lab == SOFT_TISSUE] = UNLABELED
    lab[12, 20:24, 20:24] = BONE  # a bone plate inside a vessel gap
    op = {"op": "smooth", "label": VESSEL, "method": "closing", "kernel_mm": 3.4, "only_class": UNLABELED}
    _, before = run(lab, op)
    assert ((lab != before) <= (before == UNLABELED)).all()
    np.testing.assert_array_equal(lab[before == BONE], BONE)


# ----------------------------------------------------------------------------------------------- record, replay


NEW_OPS = [
    {"op": "keep_largest", "label": VESSEL},
    {"op": "remove_small", "min_volume_mm3": 6.0},
    {"op": "remove_small", "label": BONE, "min_volume_mm3": 3.5},
    {"op": "split_island", "at_zyx": [9, 13, 6], "to_class": SOFT_TISSUE},
    {"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": 1.5, "only_class": SOFT_TISSUE},
    {"op": "margin", "label": BONE, "mode": "shrink", "size_mm": 0.8},
    {"op": "smooth", "label": VESSEL, "method": "median", "kernel_mm": 2.0},
    {"op": "smooth", "label": BONE, "method": "closing", "kernel_mm": 2.5, "only_class": UNLABELED},
]


def test_new_ops_roundtrip_and_replay_exactly():
    for d in NEW_OPS:
        op = parse_op(d, SHAPE, SPACING)
        assert parse_op(json.loads(json.dumps(op_to_dict(op))), SHAPE, SPACING) == op
    ops = [NEW_OPS[3], NEW_OPS[4], NEW_OPS[0], NEW_OPS[1], NEW_OPS[5], NEW_OPS[7], NEW_OPS[2], NEW_OPS[6]]
    base = make_labels()
    live = base.copy()
    patches = []
    for d in ops:
        patches.append(apply_op(live, d, ctx()))
    np.testing.assert_array_equal(replay(base, ops, ctx()), live)
    stored = [json.loads(json.dumps(op_to_dict(parse_op(d, SHAPE, SPACING)))) for d in ops]
    np.testing.assert_array_equal(replay(base, stored, ctx()), live)
    # undo = the op's patch written back, equal to replaying without the last op
    z0, z1, y0, y1, x0, x1 = patches[-1].bbox_zyx
    undone = live.copy()
    undone[z0:z1, y0:y1, x0:x1] = patches[-1].previous
    np.testing.assert_array_equal(undone, replay(base, ops[:-1], ctx()))


EXTENT_MM = 24 * 1.5  # the volume's longest side: 36 mm
BAD = [
    ({"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": 0}, "it must be more than 0 mm"),
    ({"op": "margin", "label": VESSEL, "mode": "shrink", "size_mm": -2}, "it must be more than 0 mm"),
    (
        {"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": 40},
        "larger than the whole volume (36.0 mm",
    ),
    ({"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": 0.3}, "less than one voxel (0.6 mm)"),
    ({"op": "margin", "label": VESSEL, "mode": "inflate", "size_mm": 1}, "'grow' or 'shrink'"),
    ({"op": "margin", "label": 0, "mode": "grow", "size_mm": 1}, "must be a labeled class"),
    ({"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": "2"}, "must be a finite number"),
    (
        {"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": 1, "only_class": VESSEL},
        "the class being edited itself",
    ),
    ({"op": "smooth", "label": VESSEL, "method": "median", "kernel_mm": 0}, "it must be more than 0 mm"),
    ({"op": "smooth", "label": VESSEL, "method": "median", "kernel_mm": 1e6}, "larger than the whole volume"),
    ({"op": "smooth", "label": VESSEL, "method": "opening", "kernel_mm": 1.0}, "use at least 1.2 mm"),
    ({"op": "smooth", "label": VESSEL, "method": "gaussian", "kernel_mm": 2}, "median"),
    ({"op": "smooth", "label": VESSEL, "method": "median", "kernel_mm": float("nan")}, "finite number"),
    ({"op": "remove_small", "min_volume_mm3": 0}, "more than 0 mm³"),
    ({"op": "remove_small", "min_volume_mm3": 1e9}, "more than the whole volume"),
    ({"op": "remove_small", "min_volume_mm3": 0.5}, "not more than one voxel"),
    ({"op": "remove_small", "label": 0, "min_volume_mm3": 5}, "must be a labeled class"),
    ({"op": "keep_largest", "label": 5}, "not a class id"),
    ({"op": "keep_largest"}, "missing field 'label'"),
    ({"op": "split_island", "at_zyx": [9, 13, 6], "to_class": 0}, "must be a labeled class"),
    ({"op": "split_island", "at_zyx": [99, 13, 6], "to_class": 2}, "z=99 is outside the volume"),
]


@pytest.mark.parametrize("op, fragment", BAD)
def test_bad_sizes_and_fields_are_refused_in_words(op, fragment):
    lab = make_labels()
    with pytest.raises(EditOpError) as e:
        apply_op(lab, op, ctx())
    assert fragment in str(e.value), str(e.value)
    np.testing.assert_array_equal(lab, make_labels())


def test_component_sizes_match_scipy():
    from dla.labeling.components import component_sizes, label_components

    mask = make_labels(3) == VESSEL
    ours, n = label_components(mask)
    sizes = component_sizes(ours, n)
    ref, n_ref = ndi.label(mask, ST26)
    assert n == n_ref and sizes[0] == int((~mask).sum())
    assert sorted(sizes[1:]) == sorted(np.bincount(ref.ravel())[1:])
