"""One synthetic head cone-beam CT angiography subject with exact truth: ``make_subject`` and its arguments,
``make_anatomy`` / ``anatomy_from_params``, which rebuild only a subject's static anatomy (truth without vessels
and the anatomical region masks) without vessels, image physics or motion, and ``vessel_radii_from_params``,
which rebuilds only its opacified vessels with the radius (mm) of the vessel at every truth-vessel voxel.

``make_subject`` draws the anatomy (``dla.phantoms.anatomy``), the vessel tree and the aneurysm with its coil or
clip (``dla.phantoms.vessels``), and forms two acquisitions (``dla.phantoms.physics``): a contrast-enhanced fill
and a non-contrast mask, the latter after an optional rigid inter-sweep motion (``dla.phantoms.motion``), plus
their subtraction (a 3D-DSA-like volume with residual bone edges where the patient moved).  Only the injected
territory is opacified: ``"ica"`` the ipsilateral ICA/MCA/ACA, ``"vertebral"`` both vertebral arteries, the
basilar and both PCAs; non-opacified lumens are blood and labelled soft tissue.  Every random stream is derived
from the seed (anatomy, vessels, choices, streaks, each acquisition's noise), so the anatomy depends on the seed
and the grid only.  Arrays are ``[z, y, x]``; ``affine_lps`` maps ``(x, y, z, 1)`` voxel indices to patient LPS
millimetres (x to patient left, y to posterior, z to superior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.phantoms.anatomy import ANATOMY_REGION_NAMES, build_anatomy, sample_anatomy
from dla.phantoms.grid import (
    VIEW_CENTER_LPS,
    Grid,
    PhantomParameterError,
    check_seed,
    check_shape,
    check_spacing,
    grid_frame,
)
from dla.phantoms.motion import MOTION_MAX_ROTATION_DEG, MOTION_MAX_TRANSLATION_MM, move_static
from dla.phantoms.physics import (
    BLUR_SIGMA_VOXELS,
    HU_CLIP,
    compose_fill,
    finish_acquisition,
    streak_params,
    to_int16,
)
from dla.phantoms.shift import UNSHIFTED_ANATOMY, check_shift, shift_anatomy, shift_blur
from dla.phantoms.vessels import (
    ANEURYSM_SITES,
    TERRITORIES,
    add_aneurysm,
    opacified_territories,
    rasterize_tree,
    vessel_tree,
)

MOTION_PROBABILITY = 0.4
ICA_INJECTION_PROBABILITY = 89 / 105
ANEURYSM_PROBABILITY = 0.3
COIL_PROBABILITY_GIVEN_ANEURYSM = 0.3
REGION_NAMES = (*ANATOMY_REGION_NAMES, *(f"vessels_{t}" for t in TERRITORIES), "aneurysm", "metal")


@dataclass
class PhantomSubject:
    """One synthetic subject; every array is ``[z, y, x]`` on the same grid (the fill acquisition's frame).

    fill_hu, mask_hu, subtracted_hu: int16 HU.  ``subtracted_hu == fill_hu - mask_hu`` exactly (both carry
    independent noise); the mask was acquired after the rigid ``motion``.  truth: uint8 class ids
    (0 air/metal/unlabeled, VESSEL opacified lumen, BONE, SOFT_TISSUE).  regions: name -> bool mask.
    """

    fill_hu: np.ndarray
    mask_hu: np.ndarray
    subtracted_hu: np.ndarray
    truth: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine_lps: np.ndarray
    motion: dict[str, Any]
    injection: str
    regions: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.fill_hu.shape)


@dataclass
class PhantomAnatomy:
    """The static anatomy of a subject, without vessels; arrays ``[z, y, x]`` on the subject's grid.

    truth: uint8 class ids of the anatomy alone (the subject's truth is this with vessel lumens relabelled
    VESSEL / SOFT_TISSUE and metal UNLABELED, so the subject's BONE voxels are a subset of these).
    regions: ``otic_capsule``, ``nasal_cavity``, ``skull_base``, ``vault`` -> bool masks, equal to the
    subject's ``regions`` of the same names.
    """

    truth: np.ndarray
    regions: dict[str, np.ndarray]
    spacing_mm: tuple[float, float, float]
    affine_lps: np.ndarray
    seed: int
    anatomy: dict[str, Any]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.truth.shape)


@dataclass
class PhantomVesselRadii:
    """The opacified vessels of a subject with their radii; arrays ``[z, y, x]`` on the subject's grid.

    radius_mm: float32 mm, the radius of the opacified vessel covering the voxel (the vessel segment's
    interpolated centreline radius, not a distance to the wall; the largest where vessels overlap; an aneurysm
    sac's radius inside it), 0 elsewhere.  vessel: bool, the subject's truth-vessel voxels rebuilt
    (``truth == VESSEL`` of ``make_subject``: opacified lumens minus metal); ``radius_mm > 0`` exactly there.
    """

    radius_mm: np.ndarray
    vessel: np.ndarray
    spacing_mm: tuple[float, float, float]
    seed: int


def _subject_rngs(seed: int):
    """The eight independent generators of a subject: anatomy, vessels, choices, streaks, fill noise, mask
    noise, streak jitter, and a spare (a forced coil's aneurysm draw) returned as its SeedSequence."""
    seeds = np.random.SeedSequence([int(seed), 0x5EED]).spawn(8)
    return [np.random.default_rng(s) for s in seeds[:7]], seeds[7]


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def make_subject(
    shape_zyx=(64, 64, 64),
    spacing_mm=None,
    seed: int = 0,
    *,
    motion=None,
    injection=None,
    aneurysm=None,
    coil=None,
    shift=None,
) -> PhantomSubject:
    """Build one synthetic head angiography subject (see the module docstring).

    shape_zyx: grid size (each >= 8).  spacing_mm: None (0.46 mm isotropic for grids >= 256 per axis, else
    180 mm / min(shape) isotropic), a scalar or (dz, dy, dx) mm.  seed: int; the same arguments give identical
    arrays.  motion: None (random from the seed, present with probability 0.4, up to 1.5 deg per axis and 1.5 mm
    per axis), False (none), True (random, forced) or {"rotation_deg": (z, y, x), "translation_mm": (z, y, x)}.
    The mask is displaced by p -> R (p - c) + c + t about the grid centre c, in LPS mm with (z, y, x) order.
    injection: None (ICA with probability 89/105, else vertebral; side from the seed), "ica", "ica_left",
    "ica_right", "vertebral".  aneurysm: None (random, p=0.3), False, True or {"site": one of ANEURYSM_SITES,
    "radius_mm": r}.  coil: None (random, p=0.3 when there is an aneurysm), False, True, "coil" (metal-packed
    sac), "clip" (metal bar across the neck, sac not opacified) or {"kind": ...}.
    shift: None / {} (no shift) or a dict of named overrides of the drawn settings
    (``dla.phantoms.shift.SHIFT_OPTIONS``: noise, blur, contrast, skull thickness, bone density, vessel
    tortuosity), applied after every random draw; a shifted subject's ``params`` record ``shift`` and the drawn
    values it replaced (``shift_drawn``), an unshifted one's have neither key and its arrays are those of a call
    without the argument.

    Returns a PhantomSubject with int16 HU volumes ([z, y, x]), uint8 truth, bool region masks and JSON-ready
    ``params``.  Raises PhantomParameterError (a ValueError) on bad arguments.
    """
    shape = check_shape(shape_zyx)
    spacing = check_spacing(spacing_mm, shape)
    seed = check_seed(seed)
    shift_d = check_shift(shift)
    rngs, spare_seed = _subject_rngs(seed)
    rng_anat, rng_vessel, rng_choice, rng_streak, rng_fill, rng_mask, rng_jit = rngs

    drawn = sample_anatomy(rng_anat)
    a = shift_anatomy(drawn, shift_d)  # after the draws: the rng order does not depend on the shift
    motion_d = _parse_motion(motion, rng_choice)
    inj, inj_side = _parse_injection(injection, rng_choice)
    aneurysm_d = _parse_aneurysm(aneurysm, rng_choice)
    coil_mode, coil_kind = _parse_coil(coil, rng_choice, aneurysm is False)
    if coil_mode == "forced" and aneurysm_d is None:
        aneurysm_d = _parse_aneurysm(True, np.random.default_rng(spare_seed))
    if aneurysm_d is None:
        coil_kind = None
    drawn_blur = float(rng_choice.uniform(*BLUR_SIGMA_VOXELS))
    blur_sigma = shift_blur(drawn_blur, shift_d)

    origin_lps, affine = grid_frame(shape, spacing)
    grid = Grid(shape, spacing, origin_lps, a["head_scale"])
    anatomy = build_anatomy(grid, a)
    static, truth, regions, sources = (
        anatomy.static_hu,
        anatomy.truth,
        anatomy.regions,
        anatomy.streak_sources,
    )

    vessels, marks = vessel_tree(rng_vessel, a)
    opacified = opacified_territories(inj, inj_side)
    canvas = rasterize_tree(grid, vessels, a, inj, inj_side, opacified)
    if aneurysm_d is not None:
        metal, center_lps_mm, source = add_aneurysm(canvas, grid, a, marks, aneurysm_d, coil_kind, opacified)
        aneurysm_d["center_lps_mm"] = center_lps_mm
        if source is not None:
            sources.append(source)
    else:
        metal = np.zeros(shape, dtype=bool)

    fill = compose_fill(static, truth, canvas, metal, a)
    for t in TERRITORIES:
        regions[f"vessels_{t}"] = canvas.territory[t]
    regions["aneurysm"] = canvas.aneurysm
    regions["metal"] = metal
    n_segments = canvas.n_segments
    del canvas

    streaks = streak_params(rng_streak, sources, a["metal_streak_hu"])
    noise_sigma = a["noise_sigma_hu"]
    fill = finish_acquisition(fill, grid, streaks, rng_jit, blur_sigma, noise_sigma, rng_fill)
    fill_hu = to_int16(fill)
    del fill

    move = None
    if motion_d["enabled"]:
        static, move = move_static(
            static, motion_d["rotation_deg"], motion_d["translation_mm"], spacing, origin_lps, a["head_scale"]
        )
    mask = finish_acquisition(static, grid, streaks, rng_jit, blur_sigma, noise_sigma, rng_mask, move)
    mask_hu = to_int16(mask)
    del mask, static
    subtracted_hu = np.subtract(fill_hu, mask_hu, dtype=np.int16)  # bounded by HU_CLIP: no overflow

    motion_out = {
        "enabled": bool(motion_d["enabled"]),
        "rotation_deg": np.asarray(motion_d["rotation_deg"], dtype=np.float64),
        "translation_mm": np.asarray(motion_d["translation_mm"], dtype=np.float64),
        "axis_order": "zyx",
        "center_lps_mm": VIEW_CENTER_LPS.copy(),
    }
    params = {
        "seed": seed,
        "shape_zyx": list(shape),
        "spacing_mm": list(spacing),
        "view_center_lps_mm": VIEW_CENTER_LPS,
        "anatomy": a,
        "injection": inj,
        "injected_side": inj_side,
        "opacified_territories": sorted(opacified),
        "motion": motion_out,
        "aneurysm": aneurysm_d,
        "coil": coil_kind,
        "blur_sigma_voxels": blur_sigma,
        "noise_sigma_hu": noise_sigma,
        "streaks": [{k: v for k, v in s.items()} for s in streaks],
        "n_vessel_centerlines": len(vessels),
        "n_vessel_segments_rasterized": n_segments,
        "hu_clip": list(HU_CLIP),
        "class_ids": {"unlabeled": UNLABELED, "vessel": VESSEL, "bone": BONE, "soft_tissue": SOFT_TISSUE},
    }
    if shift_d:
        params["shift"] = dict(shift_d)
        replaced = {
            k: drawn.get(k, UNSHIFTED_ANATOMY.get(k)) for k in a if k not in drawn or a[k] != drawn[k]
        }
        if blur_sigma != drawn_blur:
            replaced["blur_sigma_voxels"] = drawn_blur
        params["shift_drawn"] = replaced
    return PhantomSubject(
        fill_hu=fill_hu,
        mask_hu=mask_hu,
        subtracted_hu=subtracted_hu,
        truth=truth,
        spacing_mm=tuple(float(s) for s in spacing),
        affine_lps=affine,
        motion=motion_out,
        injection=inj,
        regions=regions,
        params=_jsonable(params),
    )


def make_anatomy(shape_zyx=(64, 64, 64), spacing_mm=None, seed: int = 0, *, shift=None) -> PhantomAnatomy:
    """The static anatomy of ``make_subject(shape_zyx, spacing_mm, seed, ..., shift=shift)`` (whatever its
    other arguments): anatomy-only uint8 truth and the four anatomical region masks, without vessels, image
    physics or motion.  Arguments as for ``make_subject``; raises PhantomParameterError on bad ones."""
    shape = check_shape(shape_zyx)
    spacing = check_spacing(spacing_mm, shape)
    seed = check_seed(seed)
    shift_d = check_shift(shift)
    rngs, _ = _subject_rngs(seed)
    a = shift_anatomy(sample_anatomy(rngs[0]), shift_d)
    origin_lps, affine = grid_frame(shape, spacing)
    anatomy = build_anatomy(Grid(shape, spacing, origin_lps, a["head_scale"]), a, with_hu=False)
    return PhantomAnatomy(
        truth=anatomy.truth,
        regions=anatomy.regions,
        spacing_mm=spacing,
        affine_lps=affine,
        seed=seed,
        anatomy=_jsonable(a),
    )


def anatomy_from_params(params: dict[str, Any]) -> PhantomAnatomy:
    """``make_anatomy`` for a subject's stored ``params`` (``PhantomSubject.params``, also after a JSON round
    trip): uses its ``seed``, ``shape_zyx``, ``spacing_mm`` and ``shift`` (when present).  When ``params["anatomy"]`` is present it must
    equal the anatomy numbers redrawn from the seed (to 1e-9 relative), else the subject came from another
    generator version or other parameters: PhantomParameterError, as for missing or bad keys."""
    if not isinstance(params, dict):
        raise PhantomParameterError(f"phantom params must be a dict, got {type(params).__name__}")
    missing = [k for k in ("seed", "shape_zyx", "spacing_mm") if k not in params]
    if missing:
        raise PhantomParameterError(f"phantom params lack {missing}")
    spacing = params["spacing_mm"]
    if not isinstance(spacing, list | tuple) or len(spacing) != 3:
        raise PhantomParameterError(f"phantom params spacing_mm must be (dz, dy, dx), got {spacing!r}")
    anatomy = make_anatomy(params["shape_zyx"], tuple(spacing), params["seed"], shift=params.get("shift"))
    stored = params.get("anatomy")
    if stored is not None and not _same_numbers(stored, anatomy.anatomy):
        raise PhantomParameterError(
            "phantom params' anatomy numbers differ from those drawn from their seed "
            "(made by another generator version?)"
        )
    return anatomy


def vessel_radii_from_params(params: dict[str, Any]) -> PhantomVesselRadii:
    """Rebuild the opacified vessels of the subject with stored ``params`` (``PhantomSubject.params``, also
    after a JSON round trip) and their radii, without anatomy volumes, image physics or motion.

    Uses ``seed``, ``shape_zyx``, ``spacing_mm``, ``injection``, ``injected_side``, ``aneurysm``, ``coil`` and
    ``shift`` (when present);
    the vessel tree is redrawn from the seed exactly as ``make_subject`` draws it, so ``vessel`` equals that
    subject's ``truth == VESSEL`` voxel for voxel (callers holding the truth should check it: a subject made by
    another generator version differs).  Raises PhantomParameterError for missing or bad keys, or when
    ``params["anatomy"]`` differs from the anatomy numbers drawn from the seed.
    """
    if not isinstance(params, dict):
        raise PhantomParameterError(f"phantom params must be a dict, got {type(params).__name__}")
    missing = [
        k for k in ("seed", "shape_zyx", "spacing_mm", "injection", "injected_side") if k not in params
    ]
    if missing:
        raise PhantomParameterError(f"phantom params lack {missing}")
    shape = check_shape(params["shape_zyx"])
    spacing_in = params["spacing_mm"]
    if not isinstance(spacing_in, list | tuple) or len(spacing_in) != 3:
        raise PhantomParameterError(f"phantom params spacing_mm must be (dz, dy, dx), got {spacing_in!r}")
    spacing = check_spacing(tuple(spacing_in), shape)
    seed = check_seed(params["seed"])
    injection, side = params["injection"], params["injected_side"]
    if injection not in ("ica", "vertebral") or side not in ("left", "right"):
        raise PhantomParameterError(
            f"phantom params injection/injected_side must be ica|vertebral and left|right, got "
            f"{injection!r}/{side!r}"
        )
    shift_d = check_shift(params.get("shift"))
    rngs, _ = _subject_rngs(seed)
    a = shift_anatomy(sample_anatomy(rngs[0]), shift_d)
    stored = params.get("anatomy")
    if stored is not None and not _same_numbers(stored, _jsonable(a)):
        raise PhantomParameterError(
            "phantom params' anatomy numbers differ from those drawn from their seed "
            "(made by another generator version?)"
        )
    aneurysm = params.get("aneurysm")
    coil = params.get("coil")
    if aneurysm is not None and (
        not isinstance(aneurysm, dict)
        or aneurysm.get("site") not in ANEURYSM_SITES
        or "radius_mm" not in aneurysm
    ):
        raise PhantomParameterError(
            f"phantom params aneurysm must be null or {{site, radius_mm}}, got {aneurysm!r}"
        )
    if coil not in (None, "coil", "clip"):
        raise PhantomParameterError(f"phantom params coil must be null, 'coil' or 'clip', got {coil!r}")
    origin_lps, _ = grid_frame(shape, spacing)
    grid = Grid(shape, spacing, origin_lps, a["head_scale"])
    vessels, marks = vessel_tree(rngs[1], a)
    opacified = opacified_territories(injection, side)
    canvas = rasterize_tree(grid, vessels, a, injection, side, opacified, record_radius=True)
    metal = np.zeros(shape, dtype=bool)
    if aneurysm is not None:
        sac = {"site": aneurysm["site"], "radius_mm": float(aneurysm["radius_mm"])}
        metal, _, _ = add_aneurysm(canvas, grid, a, marks, sac, coil, opacified)
    vessel = canvas.opacified & ~metal
    radius = canvas.radius_mm
    radius[~vessel] = 0.0
    return PhantomVesselRadii(
        radius_mm=radius, vessel=vessel, spacing_mm=tuple(float(v) for v in spacing), seed=seed
    )


def _same_numbers(x, y) -> bool:
    """Equal JSON-like structures, floats to 1e-9 relative (JSON storage may not round-trip every digit)."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same_numbers(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple) and isinstance(y, list | tuple):
        return len(x) == len(y) and all(_same_numbers(p, q) for p, q in zip(x, y, strict=True))
    if isinstance(x, bool) or isinstance(y, bool):
        return x is y
    if isinstance(x, int | float) and isinstance(y, int | float):
        return math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)
    return x == y


# ----------------------------------------------------------------------------------------------------------
# Argument parsing (each parser draws its random defaults first, in a fixed order, whatever the argument)
# ----------------------------------------------------------------------------------------------------------


def _parse_motion(motion, rng):
    draw_present = rng.uniform() < MOTION_PROBABILITY
    draw_rot = rng.uniform(-MOTION_MAX_ROTATION_DEG, MOTION_MAX_ROTATION_DEG, 3)
    draw_tr = rng.uniform(-MOTION_MAX_TRANSLATION_MM, MOTION_MAX_TRANSLATION_MM, 3)
    if motion is None:
        present = draw_present
    elif motion is True or motion is False:
        present = bool(motion)
    elif isinstance(motion, dict):
        unknown = set(motion) - {"rotation_deg", "translation_mm", "enabled", "axis_order", "center_lps_mm"}
        if unknown:
            raise PhantomParameterError(f"motion has unknown keys {sorted(unknown)}")
        rot = np.asarray(motion.get("rotation_deg", (0.0, 0.0, 0.0)), dtype=np.float64)
        tr = np.asarray(motion.get("translation_mm", (0.0, 0.0, 0.0)), dtype=np.float64)
        if (
            rot.shape != (3,)
            or tr.shape != (3,)
            or not (np.all(np.isfinite(rot)) and np.all(np.isfinite(tr)))
        ):
            raise PhantomParameterError(
                "motion rotation_deg and translation_mm must be 3 finite numbers (z, y, x)"
            )
        enabled = bool(motion.get("enabled", bool(np.any(rot) or np.any(tr))))
        if not enabled:
            rot, tr = np.zeros(3), np.zeros(3)
        return {"enabled": enabled, "rotation_deg": rot, "translation_mm": tr, "axis_order": "zyx"}
    else:
        raise PhantomParameterError(f"motion must be None, a bool or a dict, got {motion!r}")
    if not present:
        return {
            "enabled": False,
            "rotation_deg": np.zeros(3),
            "translation_mm": np.zeros(3),
            "axis_order": "zyx",
        }
    return {"enabled": True, "rotation_deg": draw_rot, "translation_mm": draw_tr, "axis_order": "zyx"}


def _parse_injection(injection, rng):
    is_ica = rng.uniform() < ICA_INJECTION_PROBABILITY
    side = "left" if rng.uniform() < 0.5 else "right"
    if injection is None:
        return ("ica" if is_ica else "vertebral"), side
    valid = {
        "ica": None,
        "ica_left": "left",
        "ica_right": "right",
        "vertebral": None,
        "vertebral_left": "left",
        "vertebral_right": "right",
    }
    if not isinstance(injection, str) or injection.lower() not in valid:
        raise PhantomParameterError(f"injection must be one of {sorted(valid)}, got {injection!r}")
    key = injection.lower()
    return key.split("_")[0], valid[key] or side


def _parse_aneurysm(aneurysm, rng):
    draw_present = rng.uniform() < ANEURYSM_PROBABILITY
    draw_site = ANEURYSM_SITES[int(rng.integers(0, len(ANEURYSM_SITES)))]
    draw_radius = float(rng.uniform(2.0, 5.0))
    if aneurysm is None:
        return {"site": draw_site, "radius_mm": draw_radius} if draw_present else None
    if aneurysm is False:
        return None
    if aneurysm is True:
        return {"site": draw_site, "radius_mm": draw_radius}
    if isinstance(aneurysm, dict):
        site = aneurysm.get("site", draw_site)
        radius = float(aneurysm.get("radius_mm", draw_radius))
        if site not in ANEURYSM_SITES:
            raise PhantomParameterError(f"aneurysm site must be one of {ANEURYSM_SITES}, got {site!r}")
        if not (0.5 <= radius <= 15.0):
            raise PhantomParameterError(f"aneurysm radius_mm must be within [0.5, 15], got {radius}")
        return {"site": site, "radius_mm": radius}
    raise PhantomParameterError(f"aneurysm must be None, a bool or a dict, got {aneurysm!r}")


def _parse_coil(coil, rng, aneurysm_given_false):
    draw_present = rng.uniform() < COIL_PROBABILITY_GIVEN_ANEURYSM
    draw_kind = "coil" if rng.uniform() < 0.7 else "clip"
    if coil is None:
        return "auto", draw_kind if draw_present else None
    if coil is False:
        return "off", None
    if coil is True:
        kind = draw_kind
    elif coil in ("coil", "clip"):
        kind = coil
    elif isinstance(coil, dict) and coil.get("kind", draw_kind) in ("coil", "clip"):
        kind = coil.get("kind", draw_kind)
    else:
        raise PhantomParameterError(
            f"coil must be None, a bool, 'coil', 'clip' or {{'kind': ...}}, got {coil!r}"
        )
    if aneurysm_given_false:
        raise PhantomParameterError("coil requested but aneurysm=False: a coil/clip needs an aneurysm")
    return "forced", kind


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v
