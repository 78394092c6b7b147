"""Automatic training-label recipe of the DLA paper (fill scan + subtracted volume -> uint8 class map).

Vessel: threshold the subtracted volume (paper: 500-700 HU) and keep 26-connected components that are large
(>= ``min_vessel_component_mm3``, a physical volume converted with ``spacing_mm``, so one default works on any
grid) or touch an annotator seed point; small isolated regions are assumed to be artifacts. Beyond the paper's
one threshold (issue 14), the kept tree is then grown by **hysteresis** (voxels above
``vessel_low_threshold_hu`` 26-connected to it) and trimmed at a **local half-maximum edge** (a voxel stays
when it reaches ``vessel_edge_fraction`` of the brightest subtracted voxel within ``vessel_edge_radius_mm``),
which finds thin and partial-volume vessels a 600 HU threshold misses; an optional multi-scale **vesselness**
(Sato) filter adds tube-like voxels near the tree. The thresholds were chosen on the phantom train/validation
cohorts (``bench/bench_label_options.py``). Bone: threshold the fill scan after removing the (dilated) vessel mask and keep the
``keep_bone_components`` largest 26-connected components (skull + mandible). Soft tissue: fill scan within
[-400, 500] HU, eroded with an ellipsoid of ``soft_erosion_mm``, minus vessel and bone. Labels can be
restricted to ROI boxes and balanced to equal per-class voxel counts (validation/testing datasets of the
paper). ``RecipeResult.report()`` says what was kept (per class voxels and mm^3, vessel components kept and
dropped) and warns, naming the class and the parameter to change, when a class came out empty. Label versions
recorded before floors were physical name theirs in voxels (``min_vessel_component_voxels``, or nothing for
the old default of 500 voxels: ``RecipeParams.from_dict(d, recorded=True)``); they replay unchanged. Pure
numpy/scipy, no Django. Morphology is ``dla.labeling.morphology`` (balls in mm, identical to ``scipy.ndimage``
with the same footprint), and the soft-tissue branch runs in a worker thread because numpy releases the GIL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from scipy import ndimage as ndi

from dla.classes import BONE, CLASS_NAMES, LABELED_CLASSES, SOFT_TISSUE, UNLABELED, VESSEL
from dla.labeling.components import label_components
from dla.labeling.morphology import dilate_mm, erode_mm
from dla.labeling.roi import box_mask, mask_bbox

VESSEL_THRESHOLD_RANGE_HU = (300.0, 1000.0)
BONE_THRESHOLD_RANGE_HU = (200.0, 2000.0)
SOFT_HU_RANGE = (-1024.0, 3071.0)
MORPH_RANGE_MM = (0.0, 10.0)
MAX_COMPONENT_VOXELS = 100_000_000
MAX_COMPONENT_MM3 = 1e9
KEEP_BONE_RANGE = (1, 100)
# Smallest vessel component kept without a seed point. 20 mm^3 is a 1.6 mm wide vessel over 10 mm: measured on
# the phantoms (600 HU), every separate threshold component of that size overlaps the truth vessels, specks of
# noise and partial-volume fragments are below 5 mm^3 at 0.46 mm voxels, and the main vessel trees are
# 500-2000 mm^3 on the 1.4 mm demo grid and on the paper's 0.46 mm grid alike (7.3 and 205 voxels).
DEFAULT_MIN_VESSEL_COMPONENT_MM3 = 20.0
# The floor of label versions recorded before floors were physical and without a floor of their own (voxels).
LEGACY_MIN_VESSEL_COMPONENT_VOXELS = 500
# Hysteresis growing and the local edge, chosen on the 10 motion-free train/validation phantoms of
# bench/bench_label_options.py at 1.41 mm (labels vs truth: Dice 0.55 -> 0.88, sensitivity 0.40 -> 0.93,
# centreline sensitivity 0.25 -> 0.92): 100 HU is 3-5 noise SDs of the subtracted soft tissue, and half the
# local peak within 2 mm is the half-maximum edge of a blurred lumen (0.55 gave Dice 0.89 but sensitivity 0.89).
DEFAULT_VESSEL_LOW_THRESHOLD_HU = 100.0
DEFAULT_VESSEL_EDGE_FRACTION = 0.5
DEFAULT_VESSEL_EDGE_RADIUS_MM = 2.0
LOW_THRESHOLD_RANGE_HU = (0.0, 1000.0)
EDGE_FRACTION_RANGE = (0.05, 1.0)
EDGE_RADIUS_RANGE_MM = (0.1, 10.0)
VESSELNESS_MAX_SCALES = 4
VESSELNESS_MAX_SIGMA_MM = 5.0
VESSELNESS_THRESHOLD_RANGE = (0.0, 10_000.0)
REACH_RANGE_MM = (0.0, 20.0)
# Recorded recipe ops written before these options existed name none of them, and replay without them.
_RECORDED_OFF = {"vessel_low_threshold_hu": None, "vessel_edge_fraction": None}


class RecipeError(ValueError):
    """Invalid recipe parameters or input volumes; the message names the parameter and its allowed range."""


def _check_number(name: str, value, lo: float, hi: float, *, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        kind = "an integer" if integer else "a number"
        raise RecipeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    if integer and not float(value).is_integer():
        raise RecipeError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(float(value)) or not (lo <= value <= hi):
        raise RecipeError(f"{name}={value!r} is outside the allowed range [{lo}, {hi}]")
    return int(value) if integer else float(value)


def _int_tuple(name: str, value, length: int) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise RecipeError(f"{name} must be a list of {length} integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise RecipeError(f"{name} must contain non-negative integers, got {value!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class RecipeParams:
    """Recipe parameters (JSON round-trip via ``to_dict``/``from_dict``; validated on construction).

    Defaults: ``vessel_threshold_hu=600`` is the middle of the paper's typical 500-700 HU.
    ``min_vessel_component_mm3=20`` (``DEFAULT_MIN_VESSEL_COMPONENT_MM3``) keeps every vessel component of at
    least 20 mm^3, whatever the voxel size; seeds rescue smaller true vessels, and ``seeded_vessels_only`` keeps
    only the components holding a seed point (the paper's "large connected vessels" picked by a click; with
    hysteresis growing on, a click on a dim voxel below the threshold keeps the trees it reaches by growing). The
    older ``min_vessel_component_voxels`` (a floor in voxels, exclusive with the mm^3 floor) is still accepted
    so that recorded label versions replay identically. ``bone_threshold_hu=700`` keeps a 200 HU margin above the soft-tissue upper bound (500) so partial-volume
    edges and contrast-filled vessels missed by the dilation are not called bone. ``vessel_dilation_mm=1``
    removes the contrast-filled vessel wall rim from the bone mask. ``soft_erosion_mm=1`` removes the
    soft-tissue/air and soft/bone boundary voxels (the paper's "morphologic erosion").

    Beyond the threshold: ``vessel_low_threshold_hu=100`` grows the kept tree by hysteresis (None: off; must be
    below ``vessel_threshold_hu``); ``vessel_edge_fraction=0.5`` trims the grown tree at that fraction of the
    local peak within ``vessel_edge_radius_mm=2`` (None: off). ``vesselness_sigmas_mm`` (empty: off; up to 4
    scales in mm, each at least half the finest voxel spacing) adds voxels whose Sato vesselness reaches
    ``vesselness_threshold`` (HU-scaled) within ``vesselness_reach_mm`` of the grown tree and connected to it.
    """

    vessel_threshold_hu: float = 600.0
    min_vessel_component_voxels: int | None = None
    seed_points_zyx: tuple[tuple[int, int, int], ...] = ()
    vessel_dilation_mm: float = 1.0
    bone_threshold_hu: float = 700.0
    keep_bone_components: int = 2
    soft_min_hu: float = -400.0
    soft_max_hu: float = 500.0
    soft_erosion_mm: float = 1.0
    roi_boxes_zyx: tuple[tuple[int, int, int, int, int, int], ...] = ()
    balance: bool = False
    seed: int = 0
    min_vessel_component_mm3: float | None = None
    seeded_vessels_only: bool = False
    vessel_low_threshold_hu: float | None = DEFAULT_VESSEL_LOW_THRESHOLD_HU
    vessel_edge_fraction: float | None = DEFAULT_VESSEL_EDGE_FRACTION
    vessel_edge_radius_mm: float = DEFAULT_VESSEL_EDGE_RADIUS_MM
    vesselness_sigmas_mm: tuple[float, ...] = ()
    vesselness_threshold: float = 80.0
    vesselness_reach_mm: float = 3.0

    def __post_init__(self):
        s = object.__setattr__
        s(
            self,
            "vessel_threshold_hu",
            _check_number("vessel_threshold_hu", self.vessel_threshold_hu, *VESSEL_THRESHOLD_RANGE_HU),
        )
        if self.min_vessel_component_voxels is not None:
            if self.min_vessel_component_mm3 is not None:
                raise RecipeError(
                    "give the vessel component floor once: min_vessel_component_mm3 (mm^3) or the older "
                    "min_vessel_component_voxels (voxels), not both"
                )
            s(
                self,
                "min_vessel_component_voxels",
                _check_number(
                    "min_vessel_component_voxels",
                    self.min_vessel_component_voxels,
                    0,
                    MAX_COMPONENT_VOXELS,
                    integer=True,
                ),
            )
        else:
            mm3 = self.min_vessel_component_mm3
            s(
                self,
                "min_vessel_component_mm3",
                DEFAULT_MIN_VESSEL_COMPONENT_MM3
                if mm3 is None
                else _check_number("min_vessel_component_mm3", mm3, 0, MAX_COMPONENT_MM3),
            )
        if not isinstance(self.seeded_vessels_only, (bool, np.bool_)):
            raise RecipeError(f"seeded_vessels_only must be true or false, got {self.seeded_vessels_only!r}")
        s(self, "seeded_vessels_only", bool(self.seeded_vessels_only))
        if not isinstance(self.seed_points_zyx, (list, tuple)):
            raise RecipeError(
                f"seed_points_zyx must be a list of [z, y, x] points, got {self.seed_points_zyx!r}"
            )
        s(self, "seed_points_zyx", tuple(_int_tuple("seed_points_zyx", p, 3) for p in self.seed_points_zyx))
        s(
            self,
            "vessel_dilation_mm",
            _check_number("vessel_dilation_mm", self.vessel_dilation_mm, *MORPH_RANGE_MM),
        )
        s(
            self,
            "bone_threshold_hu",
            _check_number("bone_threshold_hu", self.bone_threshold_hu, *BONE_THRESHOLD_RANGE_HU),
        )
        s(
            self,
            "keep_bone_components",
            _check_number("keep_bone_components", self.keep_bone_components, *KEEP_BONE_RANGE, integer=True),
        )
        s(self, "soft_min_hu", _check_number("soft_min_hu", self.soft_min_hu, *SOFT_HU_RANGE))
        s(self, "soft_max_hu", _check_number("soft_max_hu", self.soft_max_hu, *SOFT_HU_RANGE))
        if self.soft_min_hu >= self.soft_max_hu:
            raise RecipeError(
                f"soft_min_hu ({self.soft_min_hu}) must be below soft_max_hu ({self.soft_max_hu})"
            )
        s(self, "soft_erosion_mm", _check_number("soft_erosion_mm", self.soft_erosion_mm, *MORPH_RANGE_MM))
        if not isinstance(self.roi_boxes_zyx, (list, tuple)):
            raise RecipeError(
                f"roi_boxes_zyx must be a list of [z0, z1, y0, y1, x0, x1] boxes, got {self.roi_boxes_zyx!r}"
            )
        boxes = tuple(_int_tuple("roi_boxes_zyx", b, 6) for b in self.roi_boxes_zyx)
        for b in boxes:
            if not (b[0] < b[1] and b[2] < b[3] and b[4] < b[5]):
                raise RecipeError(
                    f"roi_boxes_zyx box {list(b)} is empty: need z0<z1, y0<y1, x0<x1 (half-open)"
                )
        s(self, "roi_boxes_zyx", boxes)
        if not isinstance(self.balance, (bool, np.bool_)):
            raise RecipeError(f"balance must be true or false, got {self.balance!r}")
        s(self, "balance", bool(self.balance))
        s(self, "seed", _check_number("seed", self.seed, 0, 2**63 - 1, integer=True))
        self._check_growing()

    def _check_growing(self) -> None:
        s = object.__setattr__
        low = self.vessel_low_threshold_hu
        if low is not None:
            low = _check_number("vessel_low_threshold_hu", low, *LOW_THRESHOLD_RANGE_HU)
            high = self.vessel_threshold_hu
            if low >= high:
                raise RecipeError(
                    f"vessel_low_threshold_hu ({low:g} HU) must be below vessel_threshold_hu ({high:g} HU): "
                    "hysteresis grows the vessel tree into voxels darker than the threshold"
                )
            s(self, "vessel_low_threshold_hu", low)
        if self.vessel_edge_fraction is not None:
            s(
                self,
                "vessel_edge_fraction",
                _check_number("vessel_edge_fraction", self.vessel_edge_fraction, *EDGE_FRACTION_RANGE),
            )
        s(
            self,
            "vessel_edge_radius_mm",
            _check_number("vessel_edge_radius_mm", self.vessel_edge_radius_mm, *EDGE_RADIUS_RANGE_MM),
        )
        sig = self.vesselness_sigmas_mm
        if not isinstance(sig, (list, tuple)) or len(sig) > VESSELNESS_MAX_SCALES:
            raise RecipeError(
                f"vesselness_sigmas_mm must be a list of at most {VESSELNESS_MAX_SCALES} scales in mm, got {sig!r}"
            )
        s(
            self,
            "vesselness_sigmas_mm",
            tuple(_check_number("vesselness_sigmas_mm", v, 1e-3, VESSELNESS_MAX_SIGMA_MM) for v in sig),
        )
        s(
            self,
            "vesselness_threshold",
            _check_number("vesselness_threshold", self.vesselness_threshold, *VESSELNESS_THRESHOLD_RANGE),
        )
        s(
            self,
            "vesselness_reach_mm",
            _check_number("vesselness_reach_mm", self.vesselness_reach_mm, *REACH_RANGE_MM),
        )

    def check_scales(self, spacing_mm) -> None:
        """Raise RecipeError when a vesselness scale is finer than half the finest voxel spacing (mm)."""
        finest = min(float(v) for v in spacing_mm)
        for v in self.vesselness_sigmas_mm:
            if v < finest / 2:
                raise RecipeError(
                    f"vesselness scale {v:g} mm is finer than half the voxel size ({finest:g} mm): the filter "
                    f"cannot see it; use scales of at least {finest / 2:.3g} mm"
                )

    def to_dict(self) -> dict:
        """JSON-serializable dict (tuples become lists)."""
        d = asdict(self)
        d["vesselness_sigmas_mm"] = list(self.vesselness_sigmas_mm)
        d["seed_points_zyx"] = [list(p) for p in self.seed_points_zyx]
        d["roi_boxes_zyx"] = [list(b) for b in self.roi_boxes_zyx]
        return d

    @classmethod
    def from_dict(cls, d: dict, *, recorded: bool = False) -> RecipeParams:
        """Build from a (JSON) dict; missing keys take defaults, unknown keys raise RecipeError.

        ``recorded=True``: ``d`` was stored with a label version or draft op. One recorded before vessel floors
        were physical and naming no floor used the old default of ``LEGACY_MIN_VESSEL_COMPONENT_VOXELS`` voxels,
        and gets it back, so that its replay does not change; one naming no hysteresis or edge option was recorded
        before they existed and replays with them off."""
        if not isinstance(d, dict):
            raise RecipeError(f"recipe params must be a dict, got {type(d).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise RecipeError(f"unknown recipe parameter(s) {unknown}; valid: {valid}")
        floors = ("min_vessel_component_voxels", "min_vessel_component_mm3")
        if recorded and all(d.get(k) is None for k in floors):
            d = {**d, "min_vessel_component_voxels": LEGACY_MIN_VESSEL_COMPONENT_VOXELS}
        if recorded:
            d = {**_RECORDED_OFF, **d}
        return cls(**d)

    def voxel_mm3(self, spacing_mm) -> float:
        sz, sy, sx = (float(v) for v in spacing_mm)
        return sz * sy * sx

    def min_component_voxels(self, spacing_mm) -> int:
        """The vessel floor in voxels at ``spacing_mm`` (dz, dy, dx): components of at least this many voxels
        (i.e. of at least ``min_vessel_component_mm3``) are kept."""
        if self.min_vessel_component_voxels is not None:
            return self.min_vessel_component_voxels
        return max(0, math.ceil(self.min_vessel_component_mm3 / self.voxel_mm3(spacing_mm) - 1e-9))

    def min_component_mm3(self, spacing_mm) -> float:
        """The vessel floor in mm^3 at ``spacing_mm``."""
        if self.min_vessel_component_voxels is not None:
            return self.min_vessel_component_voxels * self.voxel_mm3(spacing_mm)
        return self.min_vessel_component_mm3

    def check_floor(self, shape_zyx, spacing_mm) -> None:
        """Raise RecipeError when the vessel floor is bigger than the whole volume (no vessel could be kept),
        or when ``seeded_vessels_only`` has no seed point."""
        if self.seeded_vessels_only:
            if not self.seed_points_zyx:
                raise RecipeError(
                    "seeded_vessels_only keeps only the vessel components holding a seed point, but "
                    "seed_points_zyx is empty: click a vessel or switch seeded_vessels_only off"
                )
            return
        n = int(np.prod([int(v) for v in shape_zyx]))
        total_mm3 = n * self.voxel_mm3(spacing_mm)
        grid = "x".join(str(int(v)) for v in shape_zyx)
        if self.min_vessel_component_voxels is not None and self.min_vessel_component_voxels > n:
            raise RecipeError(
                f"min_vessel_component_voxels={self.min_vessel_component_voxels:,} is more than the whole volume "
                f"({grid} = {n:,} voxels): every vessel would be dropped; give a smaller floor, e.g. "
                f"min_vessel_component_mm3={DEFAULT_MIN_VESSEL_COMPONENT_MM3:g}"
            )
        if self.min_vessel_component_mm3 is not None and self.min_vessel_component_mm3 > total_mm3:
            raise RecipeError(
                f"min_vessel_component_mm3={self.min_vessel_component_mm3:,.6g} is more than the whole volume "
                f"({grid} voxels of {self.voxel_mm3(spacing_mm):.4g} mm^3 = {total_mm3:,.0f} mm^3): every vessel "
                f"would be dropped; give a smaller floor (default {DEFAULT_MIN_VESSEL_COMPONENT_MM3:g} mm^3)"
            )

    def check_against_shape(self, shape_zyx: tuple[int, int, int]) -> None:
        """Raise RecipeError if a seed point or ROI box lies outside a volume of ``shape_zyx``."""
        for p in self.seed_points_zyx:
            for axis, v, n in zip("zyx", p, shape_zyx, strict=True):
                if v >= n:
                    raise RecipeError(
                        f"seed point {list(p)}: {axis}={v} outside the volume (valid 0..{n - 1})"
                    )
        for b in self.roi_boxes_zyx:
            for axis, hi, n in zip("zyx", b[1::2], shape_zyx, strict=True):
                if hi > n:
                    raise RecipeError(f"ROI box {list(b)}: {axis} end {hi} exceeds the volume size {n}")


@dataclass
class RecipeResult:
    """Output of ``run_recipe``: ``labels`` uint8 [z, y, x]; ``counts`` {class id: voxels} for 0..3.

    ``vessel_voxels_dropped``: voxels above the threshold in the vessel components dropped (below the floor, no
    seed); ``vessel_floor_voxels`` / ``vessel_floor_mm3`` the floor used; ``voxel_mm3`` one voxel's volume;
    ``warnings``: one sentence per class that came out empty, saying why and what to change.
    ``vessel_voxels_grown`` / ``_trimmed`` / ``_vesselness``: voxels added by hysteresis, removed by the local
    edge and added by the vesselness filter (0 where the option is off)."""

    labels: np.ndarray
    counts: dict[int, int]
    params: dict
    n_vessel_components_kept: int
    n_vessel_components_removed: int
    n_bone_components_found: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    voxel_mm3: float = 0.0
    vessel_voxels_above_threshold: int = 0
    vessel_voxels_dropped: int = 0
    largest_dropped_vessel_voxels: int = 0
    vessel_floor_voxels: int = 0
    vessel_floor_mm3: float = 0.0
    warnings: list[str] = field(default_factory=list)
    vessel_voxels_grown: int = 0
    vessel_voxels_trimmed: int = 0
    vessel_voxels_vesselness: int = 0

    def report(self) -> dict:
        """JSON summary: what was kept and dropped, per class voxels and mm^3, warnings and a one-line summary."""
        v = self.voxel_mm3
        vessel = self.counts.get(VESSEL, 0)
        dropped = self.vessel_voxels_dropped
        floor = f"{_mm3(self.vessel_floor_mm3)} mm^3 ({self.vessel_floor_voxels:,} voxels)"
        if self.params.get("seeded_vessels_only"):
            floor = "the seed points (seeded_vessels_only)"
        summary = (
            f"Kept {vessel:,} vessel voxels ({vessel * v:,.0f} mm^3) in {self.n_vessel_components_kept} "
            f"component(s); dropped {self.n_vessel_components_removed} component(s) ({dropped:,} voxels, "
            f"{dropped * v:,.0f} mm^3) not reaching {floor}; {self.counts.get(BONE, 0):,} bone and "
            f"{self.counts.get(SOFT_TISSUE, 0):,} soft-tissue voxels."
        )
        grew = []
        if self.params.get("vessel_low_threshold_hu") is not None:
            grew.append(
                f"hysteresis from {self.params['vessel_low_threshold_hu']:g} HU added {self.vessel_voxels_grown:,}"
            )
        if self.params.get("vessel_edge_fraction") is not None:
            grew.append(
                f"the edge at {self.params['vessel_edge_fraction']:g} of the local peak trimmed "
                f"{self.vessel_voxels_trimmed:,}"
            )
        if self.params.get("vesselness_sigmas_mm"):
            grew.append(f"vesselness added {self.vessel_voxels_vesselness:,}")
        if grew:
            summary += " Vessel tree: " + ", ".join(grew) + " voxels."
        return {
            "summary": summary,
            "warnings": list(self.warnings),
            "voxel_mm3": v,
            "vessel": {
                "threshold_hu": self.params.get("vessel_threshold_hu"),
                "voxels": vessel,
                "mm3": vessel * v,
                "components_kept": self.n_vessel_components_kept,
                "components_dropped": self.n_vessel_components_removed,
                "dropped_voxels": dropped,
                "dropped_mm3": dropped * v,
                "largest_dropped_mm3": self.largest_dropped_vessel_voxels * v,
                "above_threshold_voxels": self.vessel_voxels_above_threshold,
                "floor_mm3": self.vessel_floor_mm3,
                "floor_voxels": self.vessel_floor_voxels,
                "grown_voxels": self.vessel_voxels_grown,
                "trimmed_voxels": self.vessel_voxels_trimmed,
                "vesselness_voxels": self.vessel_voxels_vesselness,
            },
            "bone_components_found": self.n_bone_components_found,
            "classes": {
                str(c): {"name": CLASS_NAMES[c], "voxels": int(n), "mm3": int(n) * v}
                for c, n in sorted(self.counts.items())
            },
        }


# ----------------------------------------------------------------------------------------------- morphology


def _components(mask: np.ndarray):
    """26-connected components of a bool mask, sparse: (flat indices, component id per index, sizes, crop, lab)."""
    bb = mask_bbox(mask)
    if bb is None:
        return None
    crop = mask[bb]
    lab, n = label_components(crop)
    idx = np.flatnonzero(crop)
    comp = lab.ravel()[idx]
    sizes = np.bincount(comp, minlength=n + 1)
    return bb, crop.shape, idx, comp, sizes, lab


def _scatter(shape, bb, crop_shape, idx) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    sub = np.zeros(crop_shape, dtype=bool)
    sub.ravel()[idx] = True
    out[bb] = sub
    return out


# ----------------------------------------------------------------------------------------------- recipe


@dataclass
class _VesselStats:
    kept: int = 0
    removed: int = 0
    above_threshold: int = 0
    dropped_voxels: int = 0
    largest_dropped: int = 0
    grown: int = 0
    trimmed: int = 0
    vesselness_added: int = 0


def _pad_bbox(mask: np.ndarray, radius_mm: float, spacing_mm) -> tuple[slice, slice, slice] | None:
    """The bounding box of ``mask`` widened by ``radius_mm`` on every side (clipped to the volume)."""
    bb = mask_bbox(mask)
    if bb is None:
        return None
    pad = [math.ceil(radius_mm / float(v)) for v in spacing_mm]
    return tuple(
        slice(max(0, b.start - r), min(n, b.stop + r)) for b, r, n in zip(bb, pad, mask.shape, strict=True)
    )


def _connected_to(candidates: np.ndarray, tree: np.ndarray) -> np.ndarray:
    """The 26-connected components of bool ``candidates | tree`` that hold a ``tree`` voxel (bool [z,y,x])."""
    both = candidates | tree
    comps = _components(both)
    if comps is None:
        return both
    bb, cshape, idx, comp, sizes, lab = comps
    keep = np.zeros(len(sizes), dtype=bool)
    keep[np.unique(lab[tree[bb]])] = True
    keep[0] = False
    return _scatter(both.shape, bb, cshape, idx[keep[comp]])


def _grow_vessels(sub: np.ndarray, tree: np.ndarray, p: RecipeParams, spacing_mm, stats: _VesselStats):
    """Hysteresis growing, local-edge trimming and vesselness of the kept vessel ``tree`` (bool [z,y,x]).

    sub: subtracted HU [z,y,x]. Returns the new bool vessel mask; fills the grown/trimmed/added counts."""
    out = tree
    if p.vessel_low_threshold_hu is not None and tree.any():
        out = _connected_to(sub >= p.vessel_low_threshold_hu, tree)
        stats.grown = int(np.count_nonzero(out)) - int(np.count_nonzero(tree))
    if p.vessel_edge_fraction is not None and out.any():
        bb = _pad_bbox(out, p.vessel_edge_radius_mm, spacing_mm)
        size = [2 * int(p.vessel_edge_radius_mm / float(v) + 1e-9) + 1 for v in spacing_mm]
        peak = ndi.maximum_filter(sub[bb], size=size).astype(np.float32)
        peak *= np.float32(p.vessel_edge_fraction)
        before = int(np.count_nonzero(out))
        out = out.copy()
        out[bb] &= sub[bb] >= peak
        stats.trimmed = before - int(np.count_nonzero(out))
    if p.vesselness_sigmas_mm and out.any():
        from skimage.filters import sato

        bb = _pad_bbox(out, p.vesselness_reach_mm, spacing_mm)
        voxel_mm = float(np.prod([float(v) for v in spacing_mm])) ** (1 / 3)
        sigmas = [v / voxel_mm for v in p.vesselness_sigmas_mm]
        tube = sato(sub[bb].astype(np.float32), sigmas=sigmas, black_ridges=False)
        near = dilate_mm(out[bb], p.vesselness_reach_mm, spacing_mm)
        cand = np.zeros(out.shape, dtype=bool)
        cand[bb] = (tube >= p.vesselness_threshold) & near & (sub[bb] > 0)
        before = int(np.count_nonzero(out))
        out = _connected_to(cand, out)
        stats.vesselness_added = int(np.count_nonzero(out)) - before
    return out


def _vessel_mask(sub: np.ndarray, p: RecipeParams, spacing_mm):
    """Bool vessel mask and what was kept/dropped (``_VesselStats``)."""
    m = sub >= p.vessel_threshold_hu
    comps = _components(m)
    if comps is None:
        return m, _VesselStats()
    bb, cshape, idx, comp, sizes, lab = comps
    if p.seeded_vessels_only:
        keep = np.zeros(len(sizes), dtype=bool)
    else:
        keep = sizes >= p.min_component_voxels(spacing_mm)
    keep[0] = False
    missed = []
    for pt in p.seed_points_zyx:
        local = tuple(v - s.start for v, s in zip(pt, bb, strict=True))
        inside = all(0 <= v < n for v, n in zip(local, cshape, strict=True))
        if inside and lab[local]:
            keep[lab[local]] = True
        else:
            missed.append(pt)
    if missed and p.vessel_low_threshold_hu is not None:
        keep[_trees_reached(sub, missed, p.vessel_low_threshold_hu, bb, lab)] = True
    keep[0] = False
    del lab
    n_total = len(sizes) - 1
    n_kept = int(np.count_nonzero(keep))
    dropped = sizes[1:][~keep[1:]]
    stats = _VesselStats(
        kept=n_kept,
        removed=n_total - n_kept,
        above_threshold=int(sizes[1:].sum()),
        dropped_voxels=int(dropped.sum()),
        largest_dropped=int(dropped.max()) if dropped.size else 0,
    )
    tree = _scatter(m.shape, bb, cshape, idx[keep[comp]])
    return _grow_vessels(sub, tree, p, spacing_mm, stats), stats


def _trees_reached(sub: np.ndarray, points, low_hu: float, bb, lab: np.ndarray) -> np.ndarray:
    """Ids (in ``lab``, the threshold components inside crop ``bb``) of the components that a seed point below
    the vessel threshold reaches through voxels >= ``low_hu`` (26-connected): a click on a faint vessel voxel
    that hysteresis growing would join to a tree keeps that tree."""
    low_lab, _ = label_components(sub >= low_hu)
    ids = {int(low_lab[tuple(pt)]) for pt in points} - {0}
    if not ids:
        return np.zeros(0, dtype=np.int64)
    reached = np.isin(low_lab[bb], list(ids))
    return np.unique(lab[reached])


def _bone_mask(fill: np.ndarray, vessel: np.ndarray, spacing_mm, p: RecipeParams):
    m = fill >= p.bone_threshold_hu
    bb = _pad_bbox(vessel, p.vessel_dilation_mm, spacing_mm)
    if bb is not None:
        m[bb] &= ~dilate_mm(vessel[bb], p.vessel_dilation_mm, spacing_mm)
    comps = _components(m)
    if comps is None:
        return m, 0
    bb, cshape, idx, comp, sizes, lab = comps
    del lab
    n = len(sizes) - 1
    order = np.argsort(-sizes[1:], kind="stable")[: p.keep_bone_components] + 1
    keep = np.zeros(n + 1, dtype=bool)
    keep[order] = True
    return _scatter(m.shape, bb, cshape, idx[keep[comp]]), n


def _soft_mask(fill: np.ndarray, spacing_mm, p: RecipeParams) -> np.ndarray:
    s = fill >= p.soft_min_hu
    s &= fill <= p.soft_max_hu
    return erode_mm(s, p.soft_erosion_mm, spacing_mm, border_value=False)


def balance_indices(class_indices: dict[int, np.ndarray], rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Random undersampling: every non-empty class reduced to the smallest non-empty class count (sorted)."""
    present = [len(v) for v in class_indices.values() if len(v) > 0]
    if not present:
        return class_indices
    n = min(present)
    out = {}
    for c in sorted(class_indices):
        idx = class_indices[c]
        if len(idx) > n:
            idx = np.sort(idx[rng.choice(len(idx), size=n, replace=False)])
        out[c] = idx
    return out


def _check_inputs(fill_hu, subtracted_hu, spacing_mm, roi_mask):
    for name, a in (("fill_hu", fill_hu), ("subtracted_hu", subtracted_hu)):
        if not isinstance(a, np.ndarray) or a.ndim != 3:
            raise RecipeError(
                f"{name} must be a 3D [z, y, x] numpy array, got {getattr(a, 'shape', type(a))}"
            )
        if a.dtype.kind not in "iuf":
            raise RecipeError(f"{name} must be a numeric HU array (int16), got dtype {a.dtype}")
    if fill_hu.shape != subtracted_hu.shape:
        raise RecipeError(
            f"fill_hu shape {fill_hu.shape} and subtracted_hu shape {subtracted_hu.shape} must be equal"
        )
    try:
        sp = tuple(float(v) for v in spacing_mm)
    except (TypeError, ValueError):
        raise RecipeError(f"spacing_mm must be 3 positive numbers (dz, dy, dx), got {spacing_mm!r}")
    if len(sp) != 3 or not all(math.isfinite(v) and v > 0 for v in sp):
        raise RecipeError(f"spacing_mm must be 3 positive numbers (dz, dy, dx), got {spacing_mm!r}")
    if roi_mask is not None and (not isinstance(roi_mask, np.ndarray) or roi_mask.shape != fill_hu.shape):
        raise RecipeError(
            f"roi_mask shape {getattr(roi_mask, 'shape', None)} must equal the volume shape {fill_hu.shape}"
        )
    return sp


def run_recipe(
    fill_hu: np.ndarray,
    subtracted_hu: np.ndarray,
    spacing_mm,
    params: RecipeParams | dict | None = None,
    *,
    roi_mask: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> RecipeResult:
    """Auto-label a volume pair.

    fill_hu, subtracted_hu: int16 HU [z, y, x], same shape. spacing_mm: (dz, dy, dx) in mm.
    roi_mask: optional bool [z, y, x]; intersected with the union of ``params.roi_boxes_zyx`` (if any).
    Components are computed on the whole volume; the ROI then restricts the labels (outside -> 0).
    Returns RecipeResult with ``labels`` uint8 [z, y, x] (class ids from dla.classes).
    """
    import time

    if params is None:
        params = RecipeParams()
    elif isinstance(params, dict):
        params = RecipeParams.from_dict(params)
    elif not isinstance(params, RecipeParams):
        raise RecipeError(f"params must be RecipeParams or dict, got {type(params).__name__}")
    sp = _check_inputs(fill_hu, subtracted_hu, spacing_mm, roi_mask)
    params.check_against_shape(fill_hu.shape)
    params.check_scales(sp)
    if params.min_vessel_component_voxels is None or params.seeded_vessels_only:
        # A floor in voxels is the recorded legacy unit: label versions made with a floor above any component
        # (the old "seed points only" idiom) must still replay, so only floors in mm^3 are checked here.
        params.check_floor(fill_hu.shape, sp)

    def report(f: float, msg: str):
        if progress is not None:
            progress(f, msg)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report(0.0, "thresholding")
    with ThreadPoolExecutor(max_workers=1) as ex:
        # numpy-only soft-tissue branch releases the GIL, runs beside scipy labelling
        soft_future = ex.submit(_soft_mask, fill_hu, sp, params)
        vessel, vstats = _vessel_mask(subtracted_hu, params, sp)
        timings["vessel"] = time.perf_counter() - t0
        report(0.3, "vessel components")
        bone, n_bone = _bone_mask(fill_hu, vessel, sp, params)
        timings["bone"] = time.perf_counter() - t0 - timings["vessel"]
        report(0.6, "bone components")
        soft = soft_future.result()
    t1 = time.perf_counter()
    report(0.8, "soft tissue")
    bone &= ~vessel
    soft &= ~vessel
    soft &= ~bone
    roi = None
    if params.roi_boxes_zyx:
        roi = box_mask(fill_hu.shape, params.roi_boxes_zyx)
    if roi_mask is not None:
        roi = roi_mask.astype(bool, copy=True) if roi is None else (roi & roi_mask.astype(bool))
    masks = {VESSEL: vessel, BONE: bone, SOFT_TISSUE: soft}
    if roi is not None:
        for m in masks.values():
            m &= roi
    labels = np.zeros(fill_hu.shape, dtype=np.uint8)
    counts = {}
    if params.balance:
        rng = np.random.default_rng(params.seed)
        idx = balance_indices({c: np.flatnonzero(m) for c, m in masks.items()}, rng)
        for c in LABELED_CLASSES:
            labels.ravel()[idx[c]] = c
            counts[c] = int(len(idx[c]))
    else:
        for c in LABELED_CLASSES:
            np.copyto(labels, np.uint8(c), where=masks[c])
            counts[c] = int(np.count_nonzero(masks[c]))
    counts = {UNLABELED: int(labels.size - sum(counts.values())), **counts}
    timings["combine"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    report(1.0, "done")
    return RecipeResult(
        labels=labels,
        counts=counts,
        params=params.to_dict(),
        n_vessel_components_kept=vstats.kept,
        n_vessel_components_removed=vstats.removed,
        n_bone_components_found=n_bone,
        timings_s=timings,
        voxel_mm3=params.voxel_mm3(sp),
        vessel_voxels_above_threshold=vstats.above_threshold,
        vessel_voxels_dropped=vstats.dropped_voxels,
        largest_dropped_vessel_voxels=vstats.largest_dropped,
        vessel_floor_voxels=params.min_component_voxels(sp),
        vessel_floor_mm3=params.min_component_mm3(sp),
        warnings=_empty_class_warnings(params, sp, counts, vstats, roi is not None),
        vessel_voxels_grown=vstats.grown,
        vessel_voxels_trimmed=vstats.trimmed,
        vessel_voxels_vesselness=vstats.vesselness_added,
    )


def _mm3(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _empty_class_warnings(
    p: RecipeParams, spacing_mm, counts, vstats: _VesselStats, has_roi: bool
) -> list[str]:
    """One sentence per labeled class with no voxel: why, and which parameter to change."""
    out = []
    where = " inside the ROI box(es)" if has_roi else ""
    if counts[VESSEL] == 0:
        if vstats.above_threshold == 0:
            out.append(
                f"No vessel voxels: no voxel of the subtracted volume reaches vessel_threshold_hu="
                f"{p.vessel_threshold_hu:g} HU; lower the threshold (the paper used 500-700 HU)."
            )
        elif vstats.kept == 0 and p.seeded_vessels_only:
            out.append(
                f"No vessel voxels: none of the {vstats.removed} components above {p.vessel_threshold_hu:g} HU "
                "holds a seed point (seeded_vessels_only); click on a vessel."
            )
        elif vstats.kept == 0:
            v = p.voxel_mm3(spacing_mm)
            name = (
                "min_vessel_component_mm3"
                if p.min_vessel_component_voxels is None
                else "min_vessel_component_voxels"
            )
            out.append(
                f"No vessel voxels: all {vstats.removed} components above {p.vessel_threshold_hu:g} HU are smaller "
                f"than the floor of {_mm3(p.min_component_mm3(spacing_mm))} mm^3 "
                f"({p.min_component_voxels(spacing_mm):,} voxels; the largest is {_mm3(vstats.largest_dropped * v)} "
                f"mm^3 = {vstats.largest_dropped:,} voxels); lower {name} or click a seed point on a vessel."
            )
        else:
            out.append(f"No vessel voxels{where}: the kept vessel components lie outside it.")
    if counts[BONE] == 0:
        out.append(
            f"No bone voxels{where}: no fill voxel outside the dilated vessels reaches bone_threshold_hu="
            f"{p.bone_threshold_hu:g} HU; lower the threshold."
        )
    if counts[SOFT_TISSUE] == 0:
        out.append(
            f"No soft-tissue voxels{where}: no fill voxel within [{p.soft_min_hu:g}, {p.soft_max_hu:g}] HU "
            f"survives the {p.soft_erosion_mm:g} mm erosion (outside vessel and bone); widen the window or "
            "reduce soft_erosion_mm."
        )
    return out
