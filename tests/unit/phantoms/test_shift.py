"""Shifted cohorts (dla.phantoms.shift, issue 14.4): no shift changes nothing; each shift key does what it says,
measured on the generated volumes (noise SD, blur sigma, contrast and bone HU, skull thickness, vessel
tortuosity); bad shifts raise PhantomParameterError naming the key and its range; the cohort plan passes it on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from dla.classes import BONE, SOFT_TISSUE, VESSEL
from dla.phantoms import (
    SHIFT_OPTIONS,
    PhantomParameterError,
    anatomy_from_params,
    cohort_plan,
    make_anatomy,
    make_subject,
    parse_shift_items,
    subject_from_plan,
    vessel_radii_from_params,
)
from dla.phantoms.anatomy import build_anatomy, sample_anatomy
from dla.phantoms.grid import Grid, grid_frame
from dla.phantoms.shift import shift_anatomy
from dla.phantoms.subject import _subject_rngs
from dla.phantoms.vessels import vessel_tree

ARRAYS = ("fill_hu", "mask_hu", "subtracted_hu", "truth")
QUIET = {"motion": False, "aneurysm": False, "coil": False, "injection": "ica_left"}


def _z_lps(subj_or_anatomy, shape):
    """LPS z (mm) of every slice, from the affine."""
    aff = subj_or_anatomy.affine_lps
    return aff[2, 3] + aff[2, 2] * np.arange(shape[0])


def _same(a, b):
    for name in ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.regions.keys() == b.regions.keys()
    assert all(np.array_equal(a.regions[k], b.regions[k]) for k in a.regions)
    assert json.dumps(a.params, sort_keys=True) == json.dumps(b.params, sort_keys=True)


# ------------------------------------------------------------------------------------------- no shift


@pytest.mark.parametrize("seed", [3, 8])
def test_no_shift_is_the_unshifted_subject_bit_for_bit(seed):
    plain = make_subject((32, 32, 32), seed=seed)
    _same(plain, make_subject((32, 32, 32), seed=seed, shift=None))
    _same(plain, make_subject((32, 32, 32), seed=seed, shift={}))
    assert "shift" not in plain.params and "shift_drawn" not in plain.params
    rng = _subject_rngs(seed)[0][0]
    assert set(plain.params["anatomy"]) == set(sample_anatomy(rng))  # no shift-only anatomy keys


def test_cohort_plan_without_shift_unchanged_and_with_shift_passes_it_on():
    plain = cohort_plan(6, seed=2)
    assert cohort_plan(6, seed=2, shift=None) == plain == cohort_plan(6, seed=2, shift={})
    assert all("shift" not in e["make_subject_kwargs"] for e in plain)
    shifted = cohort_plan(6, seed=2, shift={"noise_scale": 2})
    for p, s in zip(plain, shifted, strict=True):
        assert s["make_subject_kwargs"].pop("shift") == {"noise_scale": 2.0}
        assert s == p  # same subjects, split and choices
    subj = subject_from_plan(plain[0], (24, 24, 24), shift={"contrast_scale": 0.7})
    assert subj.params["shift"] == {"contrast_scale": 0.7}
    ref = subject_from_plan(plain[0], (24, 24, 24))
    assert np.array_equal(subj.mask_hu, ref.mask_hu)  # contrast only changes the fill
    assert not np.array_equal(subj.fill_hu, ref.fill_hu)


# --------------------------------------------------------------------------------------- measurements


def _upper_soft_tissue(subj):
    """Soft-tissue truth voxels 2 voxels from any other class, above LPS z = +10 mm (away from the otic
    capsules' streaks, whose amplitude differs between the acquisitions)."""
    soft = ndimage.binary_erosion(subj.truth == SOFT_TISSUE, iterations=2)
    soft[_z_lps(subj, subj.truth.shape) < 10.0] = False
    return soft


def test_noise_shift_sets_the_measured_noise_sd():
    shape = (48, 48, 48)
    absolute = make_subject(shape, seed=4, shift={"noise_sigma_hu": 60.0}, **QUIET)
    scaled = make_subject(shape, seed=4, shift={"noise_scale": 2.0}, **QUIET)
    drawn = scaled.params["shift_drawn"]["noise_sigma_hu"]
    assert 10.0 <= drawn <= 30.0
    assert scaled.params["noise_sigma_hu"] == pytest.approx(2.0 * drawn)
    for subj, want in ((absolute, 60.0), (scaled, 2.0 * drawn)):
        sel = _upper_soft_tissue(subj)
        assert sel.sum() > 2000
        # fill and mask carry independent noise (and int16 rounding, variance 1/12 each): SD(sub) = sqrt(2) SD
        sd = float(np.std(subj.subtracted_hu[sel].astype(np.float64)))
        measured = np.sqrt(max(sd**2 / 2.0 - 1.0 / 12.0, 0.0))
        assert measured == pytest.approx(want, rel=0.03)


def _fitted_blur(subj):
    """The blur sigma (voxels) that best maps the unblurred anatomy (rebuilt from the params) onto the
    noiseless mask acquisition, by least squares on a 0.05-voxel grid, above LPS z = +10 mm."""
    a = subj.params["anatomy"]
    origin, _ = grid_frame(subj.shape_zyx, subj.spacing_mm)
    static = build_anatomy(Grid(subj.shape_zyx, subj.spacing_mm, origin, a["head_scale"]), a).static_hu
    upper = _z_lps(subj, subj.shape_zyx) >= 10.0
    mask = subj.mask_hu.astype(np.float32)[upper]
    sigmas = np.arange(0.3, 2.51, 0.05)
    err = [
        float(np.mean((ndimage.gaussian_filter(static, s, truncate=3.0)[upper] - mask) ** 2)) for s in sigmas
    ]
    return float(sigmas[int(np.argmin(err))])


def test_blur_shift_sets_the_measured_blur():
    shape = (40, 40, 40)
    plain = make_subject(shape, seed=6, shift={"noise_sigma_hu": 0.0}, **QUIET)
    assert _fitted_blur(plain) == pytest.approx(plain.params["blur_sigma_voxels"], abs=0.051)
    wide = make_subject(shape, seed=6, shift={"noise_sigma_hu": 0.0, "blur_sigma_voxels": 1.6}, **QUIET)
    assert wide.params["blur_sigma_voxels"] == 1.6
    assert wide.params["shift_drawn"]["blur_sigma_voxels"] == plain.params["blur_sigma_voxels"]
    assert _fitted_blur(wide) == pytest.approx(1.6, abs=0.051)
    scaled = make_subject(shape, seed=6, shift={"noise_sigma_hu": 0.0, "blur_scale": 1.5}, **QUIET)
    assert _fitted_blur(scaled) == pytest.approx(1.5 * plain.params["blur_sigma_voxels"], abs=0.051)


def _large_vessel_ratio(shifted, plain):
    """Median over large-vessel voxels (radius >= 2 mm, brightest half) of (sub + blood) shifted / plain: the
    ratio of the lumens' contrast HU (the subtraction holds the contrast excess over blood)."""
    radii = vessel_radii_from_params(json.loads(json.dumps(shifted.params)))
    assert np.array_equal(radii.vessel, shifted.truth == VESSEL)
    big = radii.radius_mm >= 2.0
    ref = plain.subtracted_hu.astype(np.float64)
    big &= ref >= np.median(ref[big])
    assert big.sum() >= 20
    blood = plain.params["anatomy"]["blood_hu"]
    return float(np.median((shifted.subtracted_hu[big] + blood) / (ref[big] + blood)))


def test_contrast_shift_scales_the_measured_large_vessel_hu():
    kw = dict(shape_zyx=(64, 64, 64), spacing_mm=1.5, seed=9, **QUIET)
    plain = make_subject(**kw, shift={"noise_sigma_hu": 0.0})
    drawn = plain.params["anatomy"]["contrast_hu"]
    later = make_subject(**kw, shift={"noise_sigma_hu": 0.0, "contrast_scale": 0.7})
    assert later.params["anatomy"]["contrast_hu"] == pytest.approx(0.7 * drawn)
    assert later.params["shift_drawn"]["contrast_hu"] == drawn
    assert _large_vessel_ratio(later, plain) == pytest.approx(0.7, abs=0.02)
    fixed = make_subject(**kw, shift={"noise_sigma_hu": 0.0, "contrast_hu": 900.0})
    assert _large_vessel_ratio(fixed, plain) == pytest.approx(900.0 / drawn, abs=0.02)
    assert np.array_equal(fixed.mask_hu, plain.mask_hu) and np.array_equal(fixed.truth, plain.truth)


def test_bone_density_shift_scales_the_measured_bone_hu_only():
    kw = dict(shape_zyx=(64, 64, 64), spacing_mm=1.5, seed=10, **QUIET)
    plain = make_subject(**kw, shift={"noise_sigma_hu": 0.0})
    dense = make_subject(**kw, shift={"noise_sigma_hu": 0.0, "bone_density_scale": 1.3})
    assert np.array_equal(dense.truth, plain.truth)
    bone = ndimage.binary_erosion(plain.truth == BONE)
    bone &= plain.mask_hu < 2300  # dense voxels that the 1.3x scaling leaves below the 3071 HU clip
    assert bone.sum() > 500
    ratio = dense.mask_hu[bone].astype(np.float64) / plain.mask_hu[bone]
    assert float(np.median(ratio)) == pytest.approx(1.3, abs=0.03)
    soft = _upper_soft_tissue(plain)
    # soft tissue keeps its HU (but for the blurred reach of a thin bone wall here and there)
    assert np.percentile(np.abs(dense.mask_hu[soft].astype(int) - plain.mask_hu[soft]), 99) <= 1


def _vertex_thickness_mm(anatomy):
    """Mean over the columns of a narrow vertical grid of the bone length (mm) above LPS z = +30 mm."""
    z = _z_lps(anatomy, anatomy.truth.shape)
    bone = anatomy.truth[z > 30.0] == BONE
    return float(bone.sum(axis=0).mean() * anatomy.spacing_mm[0])


def test_skull_thickness_shift_sets_the_measured_vault_thickness():
    kw = dict(shape_zyx=(744, 8, 8), spacing_mm=(0.25, 2.0, 2.0), seed=12)  # z from -101 to +85 mm
    plain = make_anatomy(**kw)
    t0 = _vertex_thickness_mm(plain)
    assert 3.0 < t0 < 12.0
    for s in (0.7, 1.3):
        shifted = make_anatomy(**kw, shift={"skull_thickness_scale": s})
        assert _vertex_thickness_mm(shifted) / t0 == pytest.approx(s, rel=0.05)
    drawn = plain.anatomy["skull_thickness_mm"]
    thick = make_anatomy(**kw, shift={"skull_thickness_mm": drawn + 3.0})
    # the vault thickness in z at the vertex: +3 template mm times the head scale (within a voxel or two)
    assert _vertex_thickness_mm(thick) - t0 == pytest.approx(3.0 * plain.anatomy["head_scale"], abs=0.6)
    # make_subject draws the same shifted anatomy (the truth's bone, as make_anatomy's)
    subj = make_subject((48, 48, 48), seed=12, shift={"skull_thickness_scale": 1.3})
    anat = make_anatomy((48, 48, 48), seed=12, shift={"skull_thickness_scale": 1.3})
    assert all(np.array_equal(subj.regions[k], anat.regions[k]) for k in anat.regions)
    assert not np.any((subj.truth == BONE) & (anat.truth != BONE))  # the lumens are cut out of the bone only
    assert np.array_equal(anatomy_from_params(json.loads(json.dumps(subj.params))).truth, anat.truth)


def _trees(seed, scales):
    out = {}
    for s in scales:
        rngs, _ = _subject_rngs(seed)
        a = shift_anatomy(sample_anatomy(rngs[0]), {"tortuosity_scale": s})
        vessels, _ = vessel_tree(rngs[1], a)
        out[s] = {v["name"]: v for v in vessels}
    return out


def _turn_deg(points):
    d = np.diff(points, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip((d[1:] * d[:-1]).sum(axis=1), -1.0, 1.0)))


def test_tortuosity_shift_scales_the_trunk_jitter_and_branch_turns():
    trees = _trees(5, (0.0, 1.0, 2.0))
    trunks = [n for n in trees[1.0] if "branch" not in n and n in trees[0.0] and n in trees[2.0]]
    assert {"ica_left", "mca_left", "basilar", "va_right"} <= set(trunks)
    dev = {
        s: np.concatenate([trees[s][n]["points"] - trees[0.0][n]["points"] for n in trunks]) for s in (1, 2)
    }
    rms1, rms2 = (float(np.sqrt(np.mean(dev[s] ** 2))) for s in (1, 2))
    assert rms1 > 0.3  # mm: the trunks' jitter is 0.5-1.2 mm per control point
    assert rms2 / rms1 == pytest.approx(2.0, rel=0.1)  # splines are linear in their control points
    turns = {
        s: np.concatenate([_turn_deg(v["points"]) for n, v in trees[s].items() if "branch" in n])
        for s in (1, 2)
    }
    assert np.median(turns[2.0]) / np.median(turns[1.0]) == pytest.approx(2.0, rel=0.2)
    # in the image: another vessel truth, the same skull; the radii rebuilt from the params match the truth
    plain = make_subject((40, 40, 40), seed=5, **QUIET)
    tort = make_subject((40, 40, 40), seed=5, shift={"tortuosity_scale": 2.0}, **QUIET)
    assert not np.array_equal(tort.truth == VESSEL, plain.truth == VESSEL)
    assert all(
        np.array_equal(tort.regions[k], plain.regions[k]) for k in ("vault", "skull_base", "otic_capsule")
    )
    assert np.array_equal(vessel_radii_from_params(tort.params).vessel, tort.truth == VESSEL)


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "shift, words",
    [
        ({"noise": 2.0}, ["'noise'", "allowed keys", "noise_scale"]),
        ({"noise_scale": 11.0}, ["noise_scale", "[0, 10]"]),
        ({"contrast_scale": -1}, ["contrast_scale", "[0.1, 2]"]),
        ({"skull_thickness_scale": float("nan")}, ["skull_thickness_scale", "[0.5, 1.6]"]),
        ({"blur_sigma_voxels": True}, ["blur_sigma_voxels", "number"]),
        ({"tortuosity_scale": "2"}, ["tortuosity_scale", "number"]),
        ({"noise_scale": 2.0, "noise_sigma_hu": 20.0}, ["noise_scale", "noise_sigma_hu"]),
        ([("noise_scale", 2.0)], ["dict"]),
    ],
)
def test_bad_shift_raises_naming_the_key_and_range(shift, words):
    for call in (
        lambda: make_subject((16, 16, 16), seed=1, shift=shift),
        lambda: make_anatomy((16, 16, 16), seed=1, shift=shift),
        lambda: cohort_plan(4, shift=shift),
    ):
        with pytest.raises(PhantomParameterError) as err:
            call()
        assert all(w in str(err.value) for w in words), str(err.value)


def test_every_option_documented_and_command_line_items_parse():
    for key, opt in SHIFT_OPTIONS.items():
        assert opt.key == key and opt.meaning and opt.unit and opt.low < opt.high and opt.default
        if opt.exclusive_with:
            assert SHIFT_OPTIONS[opt.exclusive_with].exclusive_with == key
    assert parse_shift_items(["noise_scale=2", "contrast_scale=0.7"]) == {
        "noise_scale": 2.0,
        "contrast_scale": 0.7,
    }
    assert parse_shift_items([]) == {}
    for bad in (["noise_scale"], ["noise_scale=x"], ["noise_scale=2", "noise_scale=3"], ["nope=1"]):
        with pytest.raises(PhantomParameterError):
            parse_shift_items(bad)


def test_shifted_params_without_their_shift_are_refused():
    subj = make_subject((24, 24, 24), seed=2, shift={"contrast_scale": 0.5})
    anatomy_from_params(subj.params)  # consistent with its shift
    params = {k: v for k, v in subj.params.items() if k != "shift"}
    with pytest.raises(PhantomParameterError, match="differ"):
        anatomy_from_params(params)
    with pytest.raises(PhantomParameterError, match="differ"):
        vessel_radii_from_params(params)
