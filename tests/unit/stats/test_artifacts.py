"""Tests for dla.stats.artifacts: counts on synthetic masks recomputed independently (numpy shifts, BFS, brute-force
distances); the truth-referenced detector on constructed cases: a truth vessel drawn too thick through its bony
canal, and a skull shifted between the two sweeps."""

from __future__ import annotations

from collections import deque
from itertools import product

import numpy as np
import pytest
from scipy import ndimage

from dla.classes import BONE
from dla.phantoms import make_subject
from dla.stats.artifacts import (
    ArtifactError,
    ResidualBone,
    cohort_artifact_rate,
    residual_bone,
    residual_bone_clusters,
    subtraction_motion,
)


def erode_6(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Independent 6-connected erosion; the volume border counts as inside (padding with True)."""
    out = mask.copy()
    for _ in range(iterations):
        p = np.pad(out, 1, constant_values=True)
        c = p[1:-1, 1:-1, 1:-1]
        out = (
            c
            & p[:-2, 1:-1, 1:-1]
            & p[2:, 1:-1, 1:-1]
            & p[1:-1, :-2, 1:-1]
            & p[1:-1, 2:, 1:-1]
            & p[1:-1, 1:-1, :-2]
            & p[1:-1, 1:-1, 2:]
        )
    return out


def largest_cluster_26(mask: np.ndarray) -> int:
    """Independent breadth-first 26-connected component sizes."""
    seen = np.zeros(mask.shape, bool)
    offsets = [o for o in product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]
    best = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue = deque([start])
        size = 0
        while queue:
            z, y, x = queue.popleft()
            size += 1
            for dz, dy, dx in offsets:
                q = (z + dz, y + dy, x + dx)
                if all(0 <= q[i] < mask.shape[i] for i in range(3)) and mask[q] and not seen[q]:
                    seen[q] = True
                    queue.append(q)
        best = max(best, size)
    return best


def test_hand_built_block():
    # a 5x5x5 bone cube inside a 9^3 volume; erosion by one voxel leaves the central 3x3x3 = 27 voxels
    hu = np.zeros((9, 9, 9), np.int16)
    bone = np.zeros(hu.shape, bool)
    bone[2:7, 2:7, 2:7] = True
    hu[2:7, 2:7, 2:7] = 1000  # every bone voxel bright, including the edge layer
    hu[0, 0, 0] = 2000  # bright but outside bone
    r = residual_bone(hu, bone, bright_hu=300, min_cluster_voxels=27)
    assert r.n_bone_voxels == 27
    assert r.n_bright_voxels == 27
    assert r.fraction_of_bone == pytest.approx(1.0)
    assert r.largest_cluster_voxels == 27 and r.present
    assert residual_bone(hu, bone, min_cluster_voxels=28).present is False
    no_erosion = residual_bone(hu, bone, erode_voxels=0)
    assert no_erosion.n_bone_voxels == 125 and no_erosion.n_bright_voxels == 125
    # threshold is inclusive
    hu2 = np.where(bone, 300, 0).astype(np.int16)
    assert residual_bone(hu2, bone, bright_hu=300).n_bright_voxels == 27
    assert residual_bone(hu2, bone, bright_hu=301).n_bright_voxels == 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("erode", [0, 1, 2])
def test_random_volumes_against_independent_counts(seed, erode):
    rng = np.random.default_rng(seed)
    shape = (14, 16, 12)
    labels = rng.choice([1, BONE, 3], size=shape, p=[0.1, 0.6, 0.3]).astype(np.uint8)
    # smooth the bone mask a bit so erosion leaves something: a thick slab is always bone
    labels[3:11, 4:12, 2:10] = BONE
    bone = labels == BONE
    hu = rng.integers(-200, 600, size=shape).astype(np.int16)
    regions = {
        "otic_capsule": np.zeros(shape, bool),
        "skull_base": np.zeros(shape, bool),
        "vault": rng.random(shape) < 0.5,
    }
    regions["otic_capsule"][:7] = True
    regions["skull_base"][5:] = True  # overlaps the otic capsule region on purpose
    r = residual_bone(hu, bone, bright_hu=250, min_cluster_voxels=15, erode_voxels=erode, regions=regions)

    evaluated = erode_6(bone, erode)
    bright = evaluated & (hu >= 250)
    assert r.n_bone_voxels == int(evaluated.sum())
    assert r.n_bright_voxels == int(bright.sum())
    assert r.fraction_of_bone == pytest.approx(bright.sum() / evaluated.sum())
    largest = largest_cluster_26(bright)
    assert r.largest_cluster_voxels == largest
    assert r.present == (largest >= 15)
    assert r.by_region == {name: int((bright & m).sum()) for name, m in regions.items()}


def test_empty_bone_gives_none_fraction_with_reason():
    hu = np.full((5, 5, 5), 1000, np.int16)
    r = residual_bone(hu, np.zeros(hu.shape, bool))
    assert r.fraction_of_bone is None and r.reason == "bone mask is empty"
    assert r.n_bright_voxels == 0 and not r.present
    thin = np.zeros(hu.shape, bool)
    thin[2, :, :] = True  # a one-voxel plate vanishes under erosion
    r = residual_bone(hu, thin)
    assert r.fraction_of_bone is None and "erosion" in r.reason
    assert residual_bone(hu, thin, erode_voxels=0, min_cluster_voxels=25).present


def test_bad_inputs_raise_with_message():
    hu = np.zeros((4, 4, 4), np.int16)
    bone = np.ones((4, 4, 4), bool)
    with pytest.raises(ArtifactError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        residual_bone(hu, np.ones((4, 4, 5), bool))
    with pytest.raises(ArtifactError, match="bone_mask must be boolean"):
        residual_bone(hu, bone.astype(np.uint8))
    with pytest.raises(ArtifactError, match="3-D"):
        residual_bone(hu[0], bone[0])
    with pytest.raises(ArtifactError, match="erode_voxels"):
        residual_bone(hu, bone, erode_voxels=-1)
    with pytest.raises(ArtifactError, match="min_cluster_voxels"):
        residual_bone(hu, bone, min_cluster_voxels=0)
    with pytest.raises(ArtifactError, match="region 'vault'"):
        residual_bone(hu, bone, regions={"vault": np.ones((4, 4, 3), bool)})


def _result(present: bool) -> ResidualBone:
    return ResidualBone(
        n_bright_voxels=int(present) * 50,
        n_bone_voxels=100,
        fraction_of_bone=0.5 * present,
        largest_cluster_voxels=int(present) * 50,
        present=present,
    )


def test_cohort_artifact_rate_paper_numbers():
    results = [_result(True)] * 23 + [_result(False)] * 39
    n_present, n_total, pct, text = cohort_artifact_rate(results)
    assert (n_present, n_total) == (23, 62)
    assert pct == pytest.approx(100 * 23 / 62)
    assert round(pct) == 37  # the paper's "37% (23/62)"
    assert text == "23/62 (37.1%)"
    with pytest.raises(ArtifactError, match="no studies"):
        cohort_artifact_rate([])
    with pytest.raises(ArtifactError, match="ResidualBone"):
        cohort_artifact_rate([True])


# ------------------------------------------------------------------------------------ truth-referenced clusters


def brute_distance_mm(points_zyx: np.ndarray, targets_zyx: np.ndarray, spacing) -> np.ndarray:
    """Distance of every point to its nearest target (all pairs; small inputs only)."""
    sp = np.asarray(spacing, dtype=float)
    diff = (points_zyx[:, None, :] - targets_zyx[None, :, :]) * sp
    return np.sqrt((diff**2).sum(axis=2)).min(axis=1)


def canal_case():
    """A bone block with a vessel of radius 2 voxels running through it along x (its bony canal)."""
    shape = (30, 30, 24)
    z, y, x = np.indices(shape)
    vessel = (z - 15) ** 2 + (y - 15) ** 2 <= 4
    block = (z >= 5) & (z < 25) & (y >= 5) & (y < 25)
    bone = block & ~vessel
    fill = np.where(vessel, 1800, np.where(bone, 1500, 40)).astype(np.int16)
    return shape, vessel, bone, fill


def test_vessel_drawn_too_thick_is_not_bone():
    shape, vessel, bone, fill = canal_case()
    six = ndimage.generate_binary_structure(3, 1)
    thick = ndimage.binary_dilation(vessel, six, iterations=2)  # two voxels too thick all round
    dla = np.where(thick, fill, 0).astype(np.int16)
    # the voxel-count detector calls the rim of the thick vessel residual bone ...
    assert residual_bone(dla, bone, min_cluster_voxels=20).present
    # ... the truth-referenced one attributes it to the vessel: every bright bone voxel is within 2 mm of it
    r = residual_bone_clusters(dla, bone, vessel, (1.0, 1.0, 1.0), min_cluster_mm3=20)
    bright = erode_6(bone, 1) & (dla >= 300)
    assert r.n_bright_voxels == int(bright.sum()) > 100
    d = brute_distance_mm(np.argwhere(bright), np.argwhere(vessel), (1, 1, 1))
    assert d.max() <= 2.0
    assert r.n_near_vessel_voxels == r.n_bright_voxels and r.n_clusters == 0
    assert not r.present and r.largest_cluster_mm3 == 0.0 and r.clusters == ()
    # with no margin the same rim is a cluster right next to the vessel
    r0 = residual_bone_clusters(dla, bone, vessel, (1.0, 1.0, 1.0), min_cluster_mm3=20, vessel_margin_mm=0)
    assert r0.present and r0.clusters[0].distance_mm == pytest.approx(d.min())


def shifted_skull(shift_z: int, vessel_z: int):
    """A skull plate z in [10, 20) (full y, x); the mask sweep sees it ``shift_z`` slices lower; a vessel line
    along x at (vessel_z, 12). Spacing (2, 1, 1) mm."""
    shape = (40, 24, 24)
    z = np.indices(shape)[0]
    plate = (z >= 10) & (z < 20)
    vessel = np.zeros(shape, bool)
    vessel[vessel_z, 12, :] = True
    fill = np.where(plate, 1500, 0) + np.where(vessel, 600, 0)
    moved = (z >= 10 + shift_z) & (z < 20 + shift_z)
    mask = np.where(moved, 1500, 0)
    dsa = (fill - mask).astype(np.int16)
    return shape, plate & ~vessel, vessel, dsa


def test_shifted_skull_is_residual_bone_with_size_and_distance():
    spacing = (2.0, 1.0, 1.0)
    shape, bone, vessel, dsa = shifted_skull(3, vessel_z=35)
    r = residual_bone_clusters(dsa, bone, vessel, spacing, min_cluster_mm3=55)
    # bright band: slices 10-12 (fill has bone, mask not); the eroded plate starts at slice 11
    band = np.zeros(shape, bool)
    band[11:13] = True
    assert r.n_bright_voxels == int(band.sum()) == 2 * 24 * 24
    assert r.n_clusters == 1 and r.present and r.n_present_clusters == 1
    c = r.clusters[0]
    assert c.voxels == 2 * 24 * 24 and c.mm3 == pytest.approx(2 * 24 * 24 * 2.0)
    assert c.distance_mm == pytest.approx((35 - 12) * 2.0)
    assert c.centroid_zyx == pytest.approx((11.5, 11.5, 11.5))
    assert r.largest_cluster_mm3 == pytest.approx(c.mm3)
    assert not residual_bone_clusters(dsa, bone, vessel, spacing, min_cluster_mm3=c.mm3 + 1).present
    # no motion: nothing bright in bone
    _, bone0, vessel0, dsa0 = shifted_skull(0, vessel_z=35)
    still = residual_bone_clusters(dsa0, bone0, vessel0, spacing)
    assert still.n_bright_voxels == 0 and not still.present


def test_band_touching_a_vessel_loses_only_the_voxels_near_it():
    spacing = (2.0, 1.0, 1.0)
    shape, bone, vessel, dsa = shifted_skull(3, vessel_z=14)
    left = np.zeros(shape, bool)
    left[:, :6] = True
    r = residual_bone_clusters(
        dsa, bone, vessel, spacing, regions={"left": left, "none": np.zeros(shape, bool)}
    )
    bright = erode_6(bone, 1) & (dsa >= 300)
    d = brute_distance_mm(np.argwhere(bright), np.argwhere(vessel), spacing)
    margin = 2 * max(spacing)
    assert r.vessel_margin_mm == margin
    assert r.n_near_vessel_voxels == int((d <= margin).sum()) > 0
    far = np.zeros(shape, bool)
    far[tuple(np.argwhere(bright)[d > margin].T)] = True
    assert r.n_clusters == 1 and r.clusters[0].voxels == largest_cluster_26(far) == int(far.sum())
    assert r.clusters[0].distance_mm == pytest.approx(d[d > margin].min())
    assert r.clusters[0].regions == ("left",)
    as_dict = r.to_dict()
    assert as_dict["clusters"][0]["regions"] == ["left"] and as_dict["present"] is True


def test_clusters_listed_largest_first_and_capped():
    shape = (20, 20, 20)
    bone = np.ones(shape, bool)
    hu = np.zeros(shape, np.int16)
    sizes = [2, 9, 4]
    for i, n in enumerate(sizes):
        hu[3 + 5 * i, 5, 3 : 3 + n] = 1000
    vessel = np.zeros(shape, bool)
    r = residual_bone_clusters(hu, bone, vessel, (1, 1, 1), min_cluster_mm3=4, max_listed=2)
    assert r.n_clusters == 3 and [c.voxels for c in r.clusters] == [9, 4]
    assert r.n_present_clusters == 2 and r.present
    assert r.clusters[0].distance_mm is None and "no truth vessel" in r.reason


def test_cluster_bad_inputs():
    hu = np.zeros((6, 6, 6), np.int16)
    bone = np.ones(hu.shape, bool)
    vessel = np.zeros(hu.shape, bool)
    with pytest.raises(ArtifactError, match="truth_vessel must be a boolean mask"):
        residual_bone_clusters(hu, bone, vessel.astype(np.uint8), (1, 1, 1))
    with pytest.raises(ArtifactError, match="spacing_mm"):
        residual_bone_clusters(hu, bone, vessel, (1, -1, 1))
    with pytest.raises(ArtifactError, match="vessel_margin_mm"):
        residual_bone_clusters(hu, bone, vessel, (1, 1, 1), vessel_margin_mm=-1)
    with pytest.raises(ArtifactError, match="min_cluster_mm3"):
        residual_bone_clusters(hu, bone, vessel, (1, 1, 1), min_cluster_mm3=0)


@pytest.mark.parametrize(("shape", "spacing_mm"), [((64, 96, 96), 1.40625), ((24, 40, 40), 2.0)])
@pytest.mark.parametrize("seed", [3, 61])
def test_subtraction_motion_separates_moved_from_aligned_sweeps(seed, shape, spacing_mm):
    """Phantom heads from the generator: the same head once with aligned sweeps, once with the mask scan moved
    1.5 mm in z and y (the generator's largest translation); the check reads only the scans. The coarse grid is
    where bone left bright by vessels reaches 4% of the bone (the first version of the check flagged it)."""
    kw = dict(spacing_mm=spacing_mm, seed=seed)
    still = make_subject(shape, motion=False, **kw)
    moved = make_subject(shape, motion={"translation_mm": (1.5, 1.5, 0.0)}, **kw)
    aligned = subtraction_motion(still.fill_hu, still.subtracted_hu)
    shifted = subtraction_motion(moved.fill_hu, moved.subtracted_hu)
    assert not aligned.motion_suspected and aligned.moved_bone_fraction < aligned.max_moved_bone_fraction
    assert shifted.motion_suspected and shifted.moved_bone_fraction > 5 * shifted.max_moved_bone_fraction
    assert "sweeps moved" in shifted.summary and "aligned" in aligned.summary


def test_subtraction_motion_counts_mask_bone_missing_from_the_fill():
    fill = np.full((30, 24, 24), 40, np.int16)
    fill[10:20] = 1200  # a 10-slice plate of bone
    fill[5, 10:14, 10:14] = 400  # an opacified vessel: positive in the subtraction, never counted
    mask = np.full_like(fill, 40)
    mask[12:22] = 1200  # the mask scan's plate two slices lower
    check = subtraction_motion(fill, fill - mask)
    # negative where the mask has bone and the fill soft tissue: slices 20 and 21; bone of the fill: 10 slices
    assert check.moved_bone_fraction == pytest.approx(2 / 10)
    assert check.motion_suspected
    aligned = subtraction_motion(fill, fill - np.where(fill == 400, 40, fill).astype(np.int16))
    assert aligned.moved_bone_fraction == 0 and not aligned.motion_suspected
    assert not subtraction_motion(fill, fill - mask, max_moved_bone_fraction=0.25).motion_suspected


def test_subtraction_motion_bad_input_and_no_bone():
    fill = np.zeros((8, 8, 8), np.int16)
    none = subtraction_motion(fill, fill)
    assert none.moved_bone_fraction is None and not none.motion_suspected and "no bone" in none.summary
    with pytest.raises(ArtifactError, match="shape mismatch"):
        subtraction_motion(fill, np.zeros((8, 8, 9), np.int16))
    with pytest.raises(ArtifactError, match="max_moved_bone_fraction"):
        subtraction_motion(fill, fill, max_moved_bone_fraction=1.5)
    with pytest.raises(ArtifactError, match="fill_hu"):
        subtraction_motion(fill > 0, fill)
    with pytest.raises(ArtifactError, match="negative_hu"):
        subtraction_motion(fill, fill, negative_hu=float("nan"))
