"""Tests for dla.stats.artifacts: counts on synthetic masks recomputed independently (numpy shifts, BFS)."""

from __future__ import annotations

from collections import deque
from itertools import product

import numpy as np
import pytest

from dla.classes import BONE
from dla.stats.artifacts import ArtifactError, ResidualBone, cohort_artifact_rate, residual_bone


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
