"""Shifted cohorts (issue 14.4): named overrides of a phantom subject's acquisition and anatomy settings,
applied after every random draw of ``make_subject`` so that a shifted subject keeps its seed's anatomy, vessel
tree topology and noise streams and differs only in the overridden settings.

``SHIFT_OPTIONS`` documents every key (meaning, unit, allowed range); ``check_shift`` validates a shift dict
(``None`` or ``{}``: no shift) and raises ``PhantomParameterError`` naming a bad key and its allowed range;
``shift_anatomy`` returns the anatomy numbers (``sample_anatomy``) with the anatomy keys of a shift applied
(contrast, skull thickness, bone density, vessel tortuosity, noise); ``shift_blur`` the blur sigma.  An
absolute key (``noise_sigma_hu``) replaces the drawn value, a ``*_scale`` key multiplies it; giving both of a
pair is an error.  A thicker skull (``skull_thickness_scale`` > 1, ``skull_thickness_mm`` > 7) also moves the
9 mm margin that keeps cortical branches out of the bone inward by as much, and ``tortuosity_scale`` bends the
vessels, so both redraw parts of the vessel tree (the truth vessels differ, as they should).  Unshifted
subjects are untouched: no new key in their anatomy dict or ``params``, the same arrays bit for bit.  Another
voxel size is not a shift key: it is ``make_subject``'s ``spacing_mm`` argument (the blur sigma is in voxels,
so it shrinks in mm with the voxel).  Pure Python.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from dla.phantoms.grid import PhantomParameterError

BONE_HU_KEYS = (
    "cortical_bone_hu",
    "diploe_hu",
    "skull_base_hu",
    "petrous_hu",
    "otic_capsule_hu",
    "sinus_wall_hu",
    "vertebra_cortical_hu",
    "vertebra_cancellous_hu",
)
"""The anatomy HU values ``bone_density_scale`` multiplies (every bone; metal and the otic streaks unchanged)."""

SKULL_THICKNESS_CLIP_MM = (2.5, 11.0)
"""The local vault thickness (template mm) is clipped to this range; ``skull_thickness_scale`` scales it."""

BRAIN_MARGIN_MM = 9.0
"""Cortical branches stay this far (mm) inside the outer skull surface; a thicker skull moves it inward."""


@dataclass(frozen=True)
class ShiftOption:
    """One shift key: what it changes, its unit, the allowed closed range and what applies without it."""

    key: str
    meaning: str
    unit: str
    low: float
    high: float
    default: str
    exclusive_with: str | None = None


SHIFT_OPTIONS: dict[str, ShiftOption] = {
    o.key: o
    for o in (
        ShiftOption(
            "noise_sigma_hu",
            "gaussian noise SD of each acquisition (fill and mask)",
            "HU",
            0.0,
            200.0,
            "drawn per subject, uniform 10-30 HU",
            "noise_scale",
        ),
        ShiftOption(
            "noise_scale",
            "multiplies the drawn noise SD",
            "factor",
            0.0,
            10.0,
            "1",
            "noise_sigma_hu",
        ),
        ShiftOption(
            "blur_sigma_voxels",
            "gaussian blur sigma of each acquisition (the scanner's resolution)",
            "voxels",
            0.0,
            4.0,
            "drawn per subject, uniform 0.5-0.8 voxels",
            "blur_scale",
        ),
        ShiftOption(
            "blur_scale",
            "multiplies the drawn blur sigma",
            "factor",
            0.0,
            5.0,
            "1",
            "blur_sigma_voxels",
        ),
        ShiftOption(
            "contrast_hu",
            "undiluted contrast HU of large opacified vessels (before partial volume and blur)",
            "HU",
            200.0,
            3000.0,
            "drawn per subject, uniform 1100-2000 HU",
            "contrast_scale",
        ),
        ShiftOption(
            "contrast_scale",
            "multiplies the drawn contrast HU (other contrast timing: < 1 an early or late, weaker fill)",
            "factor",
            0.1,
            2.0,
            "1",
            "contrast_hu",
        ),
        ShiftOption(
            "skull_thickness_mm",
            "mean skull-vault thickness (the regional variation is kept)",
            "mm",
            2.0,
            12.0,
            "drawn per subject, uniform 5-7 mm",
            "skull_thickness_scale",
        ),
        ShiftOption(
            "skull_thickness_scale",
            "multiplies the vault thickness everywhere (mean, regional variation and its 2.5-11 mm clip)",
            "factor",
            0.5,
            1.6,
            "1",
            "skull_thickness_mm",
        ),
        ShiftOption(
            "bone_density_scale",
            "multiplies every bone HU (cortical, diploe, skull base, petrous, otic capsule, sinus walls, "
            "vertebrae)",
            "factor",
            0.3,
            1.6,
            "1",
        ),
        ShiftOption(
            "tortuosity_scale",
            "vessel tortuosity: multiplies the trunks' control-point jitter SD (0.5-1.2 mm) and the cortical "
            "branches' turn angles (0-15 deg per step)",
            "factor",
            0.0,
            3.0,
            "1",
        ),
    )
}


def check_shift(shift) -> dict[str, float]:
    """The validated shift: a new dict ``key -> float`` (empty for ``None`` / ``{}``).

    Raises PhantomParameterError for a non-dict, an unknown key (naming the allowed keys), a non-number or a
    value outside its range (naming the key and the range), or both keys of an absolute/scale pair."""
    if shift is None:
        return {}
    if not isinstance(shift, dict):
        raise PhantomParameterError(f"shift must be None or a dict of overrides, got {type(shift).__name__}")
    out: dict[str, float] = {}
    for key, value in shift.items():
        opt = SHIFT_OPTIONS.get(key)
        if opt is None:
            raise PhantomParameterError(
                f"unknown shift key {key!r}; allowed keys: {', '.join(SHIFT_OPTIONS)}"
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise PhantomParameterError(
                f"shift {key} must be a number within [{opt.low:g}, {opt.high:g}] {opt.unit}, got {value!r}"
            )
        v = float(value)
        if not math.isfinite(v) or not (opt.low <= v <= opt.high):
            raise PhantomParameterError(
                f"shift {key} must be within [{opt.low:g}, {opt.high:g}] {opt.unit}, got {value!r}"
            )
        out[key] = v
    for key in out:
        other = SHIFT_OPTIONS[key].exclusive_with
        if other is not None and other in out:
            raise PhantomParameterError(f"shift {key} and {other} change the same setting: give one of them")
    return out


UNSHIFTED_ANATOMY = {
    "skull_thickness_clip_mm": list(SKULL_THICKNESS_CLIP_MM),
    "brain_margin_mm": BRAIN_MARGIN_MM,
    "vessel_tortuosity_scale": 1.0,
}
"""What the anatomy keys only a shift adds mean when absent (recorded as the drawn values they replace)."""


def shift_anatomy(a: dict[str, Any], shift: dict[str, float]) -> dict[str, Any]:
    """The anatomy numbers ``a`` (``sample_anatomy``; not modified) with the anatomy keys of the validated
    ``shift`` applied; ``a`` itself when the shift has none.  Adds ``skull_thickness_clip_mm``,
    ``brain_margin_mm`` (thickness scale) and ``vessel_tortuosity_scale`` keys only when shifted."""
    keys = set(shift) - {"blur_sigma_voxels", "blur_scale"}
    if not keys:
        return a
    a = dict(a)
    if "noise_sigma_hu" in shift:
        a["noise_sigma_hu"] = shift["noise_sigma_hu"]
    if "noise_scale" in shift:
        a["noise_sigma_hu"] = a["noise_sigma_hu"] * shift["noise_scale"]
    if "contrast_hu" in shift:
        a["contrast_hu"] = shift["contrast_hu"]
    if "contrast_scale" in shift:
        a["contrast_hu"] = a["contrast_hu"] * shift["contrast_scale"]
    if "skull_thickness_mm" in shift:
        a["skull_thickness_mm"] = shift["skull_thickness_mm"]
        a["brain_margin_mm"] = BRAIN_MARGIN_MM + max(0.0, shift["skull_thickness_mm"] - 7.0)
    if "skull_thickness_scale" in shift:
        s = shift["skull_thickness_scale"]
        a["skull_thickness_mm"] = a["skull_thickness_mm"] * s
        a["skull_thickness_coeffs"] = [c * s for c in a["skull_thickness_coeffs"]]
        a["skull_thickness_clip_mm"] = [v * s for v in SKULL_THICKNESS_CLIP_MM]
        a["brain_margin_mm"] = BRAIN_MARGIN_MM * max(1.0, s)
    if "bone_density_scale" in shift:
        for k in BONE_HU_KEYS:
            a[k] = a[k] * shift["bone_density_scale"]
    if "tortuosity_scale" in shift:
        a["vessel_tortuosity_scale"] = shift["tortuosity_scale"]
    return a


def shift_blur(blur_sigma_voxels: float, shift: dict[str, float]) -> float:
    """The blur sigma (voxels) after the validated ``shift``."""
    if "blur_sigma_voxels" in shift:
        return shift["blur_sigma_voxels"]
    if "blur_scale" in shift:
        return blur_sigma_voxels * shift["blur_scale"]
    return blur_sigma_voxels


def parse_shift_items(items) -> dict[str, float]:
    """``["noise_scale=2", "contrast_scale=0.7"]`` (command-line KEY=VALUE words) -> validated shift dict."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise PhantomParameterError(f"shift {item!r} must be KEY=VALUE, e.g. noise_scale=2")
        if key in out:
            raise PhantomParameterError(f"shift {key} given twice")
        try:
            out[key] = float(value)
        except ValueError:
            raise PhantomParameterError(f"shift {key} must be a number, got {value!r}") from None
    return check_shift(out)


def shift_options_table() -> str:
    """The shift keys as a Markdown table (key, meaning, unit, allowed range, default)."""
    rows = ["| key | meaning | unit | allowed range | default (no shift) |", "|---|---|---|---|---|"]
    for o in SHIFT_OPTIONS.values():
        rows.append(f"| `{o.key}` | {o.meaning} | {o.unit} | {o.low:g} - {o.high:g} | {o.default} |")
    return "\n".join(rows)
