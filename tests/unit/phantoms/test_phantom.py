"""Behaviour tests of dla.phantoms (synthetic head angiography phantoms), on <= 64^3 grids."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.phantoms import (
    PhantomParameterError,
    cohort_plan,
    default_spacing_mm,
    make_subject,
    subject_from_plan,
)

NO_MOTION = False
STRONG_MOTION = {"rotation_deg": (1.0, -1.0, 1.0), "translation_mm": (1.5, -1.5, 1.5)}


@cache
def subject(shape=(64, 64, 64), seed=7, motion=NO_MOTION, injection="ica_left", aneurysm=False, coil=False):
    """Cached make_subject; dict arguments are passed as tuples of (key, value) pairs to stay hashable."""
    motion_arg = dict(motion) if isinstance(motion, tuple) else motion
    aneurysm_arg = dict(aneurysm) if isinstance(aneurysm, tuple) else aneurysm
    return make_subject(
        shape, seed=seed, motion=motion_arg, injection=injection, aneurysm=aneurysm_arg, coil=coil
    )


def strong_motion_key():
    return tuple(sorted(STRONG_MOTION.items()))


def lps_coordinates(subj, mask):
    """LPS mm (N, 3) of the voxels in a [z, y, x] mask, via the affine (independent of the generator)."""
    z, y, x = np.nonzero(mask)
    ijk1 = np.stack([x, y, z, np.ones_like(x)]).astype(np.float64)
    return (subj.affine_lps @ ijk1)[:3].T


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
    for name in ("otic_capsule", "nasal_cavity", "skull_base", "vault"):
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


def test_all_truth_classes_present_and_hu_consistent_with_labels():
    s = subject()
    counts = {c: int((s.truth == c).sum()) for c in (UNLABELED, VESSEL, BONE, SOFT_TISSUE)}
    assert all(n > 0 for n in counts.values()), counts
    assert counts[SOFT_TISSUE] > counts[BONE] > counts[VESSEL]
    fill = s.fill_hu.astype(np.float64)
    assert np.median(fill[s.truth == UNLABELED]) < -800  # air
    assert -100 < np.median(fill[s.truth == SOFT_TISSUE]) < 150
    assert np.median(fill[s.truth == BONE]) > 400
    # anatomical regions are non-empty and lie where their names say (LPS: -y anterior, +z superior)
    for name in ("otic_capsule", "nasal_cavity", "skull_base", "vault"):
        assert s.regions[name].any(), name
    nasal = lps_coordinates(s, s.regions["nasal_cavity"]).mean(axis=0)
    otic = lps_coordinates(s, s.regions["otic_capsule"])
    vault = lps_coordinates(s, s.regions["vault"]).mean(axis=0)
    assert nasal[1] < -20 and nasal[2] < vault[2]
    assert (otic[:, 0] > 15).any() and (otic[:, 0] < -15).any()  # one capsule on each side
    assert abs(otic[:, 0].mean()) < 5
    # otic capsules are the densest bone
    assert np.median(fill[s.regions["otic_capsule"] & (s.truth == BONE)]) > np.median(fill[s.truth == BONE])


def test_vessel_hu_overlaps_bone_so_a_fill_threshold_cannot_separate_them():
    s = subject()
    fill = s.fill_hu.astype(np.float64)
    vessel_hu = fill[s.truth == VESSEL]
    bone_hu = fill[s.truth == BONE]
    # the large opacified vessels reach bone densities and beyond ...
    assert np.percentile(vessel_hu, 95) > np.percentile(bone_hu, 25)
    # ... and a threshold low enough to keep even half of the vessel voxels also keeps most bone
    thr = np.median(vessel_hu)
    assert (bone_hu >= thr).mean() > 0.3
    # the DSA separates them: bone away from vessels subtracts out
    far = ndimage.distance_transform_edt(s.truth != VESSEL) > 3
    assert np.median(np.abs(s.subtracted_hu[(s.truth == BONE) & far])) < 0.2 * np.median(
        s.subtracted_hu[s.truth == VESSEL]
    )


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
    flags = [make_subject((16, 16, 16), seed=k).motion["enabled"] for k in range(30)]
    assert 0 < sum(flags) < 30  # some subjects move, some don't
    for k in range(30):
        if flags[k]:
            s = make_subject((16, 16, 16), seed=k, motion=False)
            assert not s.motion["enabled"]
            assert np.all(s.motion["rotation_deg"] == 0) and np.all(s.motion["translation_mm"] == 0)
            m = make_subject((16, 16, 16), seed=k).motion
            assert np.all(np.abs(m["rotation_deg"]) <= 1.5) and np.all(np.abs(m["translation_mm"]) <= 1.5)
            break


def test_vertebral_injection_opacifies_only_posterior_territory():
    vert = subject(injection="vertebral")
    ica = subject(injection="ica_left")
    assert vert.injection == "vertebral" and ica.injection == "ica"
    vessel = vert.truth == VESSEL
    assert vessel.sum() > 50
    assert not (vessel & ~vert.regions["vessels_posterior"]).any()
    anterior_only = (
        vert.regions["vessels_anterior_left"] | vert.regions["vessels_anterior_right"]
    ) & ~vert.regions["vessels_posterior"]
    assert anterior_only.sum() > 50
    assert np.all(vert.truth[anterior_only] == SOFT_TISSUE)
    # non-opacified anterior arteries look like blood/soft tissue, opacified posterior ones are bright
    assert np.median(vert.subtracted_hu[anterior_only]) < 60
    assert np.median(vert.subtracted_hu[vessel]) > 120
    # independent geometry: the opacified tree is posterior (LPS +y) to the ICA-injected tree of the same head
    y_vert = lps_coordinates(vert, vessel)[:, 1].mean()
    y_ica = lps_coordinates(ica, ica.truth == VESSEL)[:, 1].mean()
    assert y_vert > y_ica + 10


@pytest.mark.parametrize("side, sign", [("left", 1.0), ("right", -1.0)])
def test_ica_injection_opacifies_only_the_injected_anterior_territory(side, sign):
    s = subject(injection=f"ica_{side}")
    other = "right" if side == "left" else "left"
    vessel = s.truth == VESSEL
    assert vessel.sum() > 50
    assert not (vessel & ~s.regions[f"vessels_anterior_{side}"]).any()
    not_injected = (s.regions["vessels_posterior"] | s.regions[f"vessels_anterior_{other}"]) & ~s.regions[
        f"vessels_anterior_{side}"
    ]
    assert np.all(s.truth[not_injected] == SOFT_TISSUE)
    x = lps_coordinates(s, vessel)[:, 0]  # LPS +x is patient left
    assert sign * x.mean() > 10 and (sign * x > 0).mean() > 0.8
    assert s.params["injected_side"] == side


def test_aneurysm_and_coil():
    base = subject(aneurysm=(("radius_mm", 4.0), ("site", "mca_left")))
    coiled = subject(aneurysm=(("radius_mm", 5.0), ("site", "mca_left")), coil="coil")
    sac = base.regions["aneurysm"]
    assert sac.sum() >= 5
    assert np.all(base.truth[sac] == VESSEL)  # opacified: same side as the left ICA injection
    metal = coiled.regions["metal"]
    assert metal.any() and np.all(coiled.truth[metal] == UNLABELED)
    # metal is the densest material (blurred by partial volume on this coarse grid)
    assert coiled.fill_hu[metal].max() > 2000
    assert np.median(coiled.fill_hu[metal]) > np.median(coiled.fill_hu[coiled.truth == BONE])
    # streaks: in the axial plane through the metal, soft tissue away from the coil is noisier than without it
    zc = int(np.round(np.nonzero(metal)[0].mean()))
    dist = ndimage.distance_transform_edt(~metal[zc])
    ring = (dist > 3) & (dist < 12) & (coiled.truth[zc] == SOFT_TISSUE) & (base.truth[zc] == SOFT_TISSUE)
    assert ring.sum() > 20
    assert coiled.fill_hu[zc][ring].std() > 1.5 * base.fill_hu[zc][ring].std()
    vertebral = subject(injection="vertebral", aneurysm=(("radius_mm", 4.0), ("site", "mca_left")))
    assert not (vertebral.truth[vertebral.regions["aneurysm"]] == VESSEL).any()


def test_spacing_rule_and_affine():
    assert default_spacing_mm((64, 64, 64)) == pytest.approx((180 / 64,) * 3)
    assert default_spacing_mm((256, 256, 256)) == pytest.approx((0.46,) * 3)
    assert default_spacing_mm((300, 256, 512)) == pytest.approx((0.46,) * 3)
    assert default_spacing_mm((255, 300, 300)) == pytest.approx((180 / 255,) * 3)
    s = make_subject((16, 20, 24), seed=1)
    assert s.spacing_mm == pytest.approx((180 / 16,) * 3)
    t = make_subject((16, 20, 24), spacing_mm=(2.0, 3.0, 4.0), seed=1)
    assert t.spacing_mm == (2.0, 3.0, 4.0)
    assert make_subject((16, 16, 16), spacing_mm=5.0, seed=1).spacing_mm == (5.0, 5.0, 5.0)
    # affine: (i=x, j=y, k=z) index -> LPS mm; column steps equal the spacing, voxel (0,0,0) maps to the origin
    a = t.affine_lps
    assert np.allclose(a[:3, :3], np.diag([4.0, 3.0, 2.0]))
    assert np.allclose(a[3], [0, 0, 0, 1])
    assert np.allclose(a @ [0, 0, 0, 1], np.r_[a[:3, 3], 1])
    far = a @ [23, 19, 15, 1] - a @ [0, 0, 0, 1]
    assert np.allclose(far[:3], [23 * 4.0, 19 * 3.0, 15 * 2.0])
    # the head is centred left-right in the field of view
    body = lps_coordinates(s, s.truth != UNLABELED)
    assert abs(body[:, 0].mean()) < 5


def test_invalid_arguments_raise_specific_errors():
    with pytest.raises(PhantomParameterError, match="shape_zyx"):
        make_subject((4, 64, 64))
    with pytest.raises(PhantomParameterError, match="spacing_mm"):
        make_subject((16, 16, 16), spacing_mm=(-1, 1, 1))
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


def test_cohort_plan_counts_and_determinism():
    plan = cohort_plan()
    assert len(plan) == 105
    assert [p["subject_id"] for p in plan] == [f"PH-{i:03d}" for i in range(1, 106)]
    splits = [p["split"] for p in plan]
    assert (splits.count("train"), splits.count("validation"), splits.count("test")) == (35, 8, 62)
    injections = [p["injection"] for p in plan]
    assert (injections.count("ica"), injections.count("vertebral")) == (89, 16)
    n_motion = sum(p["motion"] for p in plan)
    assert n_motion == 42  # 40 % of 105
    assert len({p["seed"] for p in plan}) == 105
    for p in plan:
        kw = p["make_subject_kwargs"]
        assert (kw["motion"] is not False) == p["motion"]
        assert kw["injection"].startswith(p["injection"])
    assert json.dumps(plan) == json.dumps(cohort_plan())
    assert json.dumps(plan) != json.dumps(cohort_plan(seed=1))
    assert sum(p["motion"] for p in cohort_plan(50, motion_fraction=0.2)) == 10
    small = cohort_plan(10)
    assert len(small) == 10 and {p["split"] for p in small} <= {"train", "validation", "test"}


def test_subject_from_plan_follows_the_plan():
    plan = cohort_plan()
    entry = next(p for p in plan if p["injection"] == "vertebral" and p["motion"])
    s = subject_from_plan(entry, shape_zyx=(24, 24, 24))
    assert s.injection == "vertebral" and s.motion["enabled"]
    assert np.allclose(s.motion["rotation_deg"], entry["make_subject_kwargs"]["motion"]["rotation_deg"])
    assert s.params["seed"] == entry["seed"]
