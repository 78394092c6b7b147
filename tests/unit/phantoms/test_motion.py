"""Inter-sweep motion of the mask acquisition (dla.phantoms.motion), seen through make_subject."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dla.classes import BONE, VESSEL
from dla.phantoms import make_subject

from .cases import NO_MOTION, STRONG_MOTION, strong_motion_key, subject


def test_motion_free_subtraction_cancels_bone_and_motion_leaves_bone_edges():
    still = subject(motion=NO_MOTION)
    moved = subject(motion=strong_motion_key())
    assert not still.motion["enabled"] and np.allclose(still.motion["rotation_deg"], 0)
    assert moved.motion["enabled"] and np.allclose(
        moved.motion["translation_mm"], STRONG_MOTION["translation_mm"]
    )
    assert np.array_equal(still.truth, moved.truth) and np.array_equal(still.fill_hu, moved.fill_hu)

    bone = still.truth == BONE
    far_from_vessels = ndimage.distance_transform_edt(still.truth != VESSEL) > 3
    interior = ndimage.binary_erosion(bone) & far_from_vessels
    edge = bone & ~ndimage.binary_erosion(bone) & far_from_vessels
    noise = still.params["noise_sigma_hu"]
    sub_still = np.abs(still.subtracted_hu.astype(np.float64))
    sub_moved = np.abs(moved.subtracted_hu.astype(np.float64))
    assert interior.sum() > 100 and edge.sum() > 100
    assert sub_still[interior].mean() < 2.0 * noise
    assert np.abs(still.fill_hu[interior]).mean() > 10 * sub_still[interior].mean()
    p95_still, p95_moved = np.percentile(sub_still[edge], 95), np.percentile(sub_moved[edge], 95)
    assert p95_moved > 300 and p95_moved > 3 * p95_still
    # the displaced mask really differs from the motion-free mask
    assert np.abs(moved.mask_hu.astype(np.int32) - still.mask_hu).mean() > 2 * noise


def test_motion_none_follows_seed_and_false_disables():
    flags = {}
    for k in range(30):  # draw seeds until some subject moves and some doesn't
        flags[k] = make_subject((16, 16, 16), seed=k).motion
        if len({m["enabled"] for m in flags.values()}) == 2:
            break
    assert {m["enabled"] for m in flags.values()} == {True, False}
    k, m = next((k, m) for k, m in flags.items() if m["enabled"])
    assert np.all(np.abs(m["rotation_deg"]) <= 1.5) and np.all(np.abs(m["translation_mm"]) <= 1.5)
    assert np.any(m["rotation_deg"] != 0) or np.any(m["translation_mm"] != 0)
    s = make_subject((16, 16, 16), seed=k, motion=False)
    assert not s.motion["enabled"]
    assert np.all(s.motion["rotation_deg"] == 0) and np.all(s.motion["translation_mm"] == 0)
