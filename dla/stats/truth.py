"""Truth-referenced angiogram metrics for phantoms with an exact truth: vessel overlap over the whole head and by
vessel radius, centreline sensitivity and clDice, and the 3D-DSA baseline's vessel mask (the subtracted volume
thresholded as the labeling recipe does), so that a 3D-DLA angiogram is judged against the truth and against
what the clinic has today. Pure numpy/scipy/scikit-image, no Django.

Decisions:
* **Whole head** means every voxel of the volume: a predicted vessel voxel anywhere (bone, air, metal) that is
  not a truth-vessel voxel is a false positive. (Table 1 scores labeled voxels only; this is stricter.)
* **Radius strata.** Every truth-vessel voxel carries the radius of the vessel it belongs to (a phantom's own
  radii, ``dla.phantoms.vessel_radii_from_params``; otherwise ``estimate_radius_mm`` from the mask). TP and FN
  are counted per stratum directly. A false-positive voxel is attributed to the stratum of its nearest
  truth-vessel voxel when it lies within ``near_mm`` of it (a vessel drawn too thick or shifted); farther ones
  are *remote* (bone, noise, artifacts) and count only in the whole-head figures. Per-stratum Dice is then
  2TP / (2TP + FP_near + FN): how well vessels of that size are drawn.
* **Voxel size** is the cube root of the voxel volume. A stratum is "below one voxel" when its upper radius edge
  is at most the voxel size, "straddles one voxel" when the voxel size lies inside it, else "at least one
  voxel". The *resolved* group (radius >= one voxel) is reported on its own: it is the design target's group.
* **Centreline** (Shit et al. 2021, clDice): skeletons by ``skimage.morphology.skeletonize`` (3-D, Lee 1994);
  centreline sensitivity = |S(truth) & prediction| / |S(truth)|, topology precision = |S(prediction) & truth| /
  |S(prediction)|, clDice their harmonic mean. Truth skeleton voxels keep the radius of the truth voxel they
  lie in, so centreline sensitivity is stratified too: thin vessels count by length, not by voxel count.
* Undefined ratios (zero denominators) are ``None``, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from dla.labeling.components import label_components
from dla.labeling.recipe import DEFAULT_MIN_VESSEL_COMPONENT_MM3, RecipeParams

__all__ = [
    "DEFAULT_RADIUS_EDGES_MM",
    "Centreline",
    "Overlap",
    "RadiusStratum",
    "TruthError",
    "TruthReference",
    "TruthVesselMetrics",
    "centreline_mask",
    "dsa_baseline_vessels",
    "estimate_radius_mm",
    "voxel_size_mm",
]

DEFAULT_RADIUS_EDGES_MM = (0.0, 0.5, 1.0, 1.5, 2.0, math.inf)
"""Radius strata edges in mm (half-open bins [low, high)); the phantoms' arteries have radii 0.25-2.9 mm
(cortical branches 0.25-0.85, ICA up to 2.9), aneurysm sacs 2-5 mm."""


class TruthError(ValueError):
    """Bad input to a truth-referenced metric; the message names the problem."""


# --------------------------------------------------------------------------------------------- checks


def _spacing(spacing_mm) -> tuple[float, float, float]:
    try:
        sp = tuple(float(v) for v in spacing_mm)
    except (TypeError, ValueError):
        raise TruthError(f"spacing_mm must be 3 positive numbers (dz, dy, dx), got {spacing_mm!r}")
    if len(sp) != 3 or not all(math.isfinite(v) and v > 0 for v in sp):
        raise TruthError(f"spacing_mm must be 3 positive numbers (dz, dy, dx), got {spacing_mm!r}")
    return sp


def _bool3(name: str, mask, shape=None) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise TruthError(f"{name} must be a 3-D [z, y, x] mask, got shape {mask.shape}")
    if mask.dtype != np.bool_:
        raise TruthError(f"{name} must be boolean, got dtype {mask.dtype}")
    if shape is not None and mask.shape != tuple(shape):
        raise TruthError(f"shape mismatch: {name} {mask.shape} vs truth {tuple(shape)}")
    return mask


def voxel_size_mm(spacing_mm) -> float:
    """The voxel size in mm: cube root of the voxel volume dz*dy*dx (the spacing itself when isotropic)."""
    sz, sy, sx = _spacing(spacing_mm)
    return float(np.cbrt(sz * sy * sx))


def _edges(radius_edges_mm) -> tuple[float, ...]:
    try:
        edges = tuple(float(v) for v in radius_edges_mm)
    except (TypeError, ValueError):
        raise TruthError(f"radius_edges_mm must be numbers, got {radius_edges_mm!r}")
    if len(edges) < 2:
        raise TruthError(f"radius_edges_mm needs at least two edges, got {list(edges)}")
    if edges[0] < 0 or any(math.isnan(v) for v in edges) or any(math.isinf(v) for v in edges[:-1]):
        raise TruthError(f"radius_edges_mm must be finite and >= 0 (the last may be inf), got {list(edges)}")
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise TruthError(f"radius_edges_mm must increase strictly, got {list(edges)}")
    return edges


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(0, int(idx[0]) - pad), min(mask.shape[axis], int(idx[-1]) + 1 + pad)))
    return tuple(out)


# --------------------------------------------------------------------------------------------- results


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


@dataclass(frozen=True)
class Overlap:
    """Voxel counts of a predicted vessel mask against truth vessels (true negatives are not needed here)."""

    tp: int
    fp: int
    fn: int

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def ppv(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def dice(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def to_dict(self) -> dict:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "sensitivity": self.sensitivity,
            "ppv": self.ppv,
            "dice": self.dice,
        }


@dataclass(frozen=True)
class RadiusStratum:
    """One radius group: truth-vessel voxels with radius in [low_mm, high_mm) (high_mm may be inf).

    overlap.fp counts only the false positives attributed to this group (nearest truth vessel in the group,
    within ``near_mm``). centreline_voxels: truth skeleton voxels in the group; centreline_hits: those predicted
    vessel. relation: "below one voxel", "straddles one voxel" or "at least one voxel" (see module docstring).
    """

    label: str
    low_mm: float
    high_mm: float
    relation: str
    overlap: Overlap
    centreline_voxels: int
    centreline_hits: int

    @property
    def centreline_sensitivity(self) -> float | None:
        return _ratio(self.centreline_hits, self.centreline_voxels)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "low_mm": self.low_mm,
            "high_mm": None if math.isinf(self.high_mm) else self.high_mm,
            "relation": self.relation,
            "below_voxel": self.relation == "below one voxel",
            "truth_voxels": self.overlap.tp + self.overlap.fn,
            **self.overlap.to_dict(),
            "centreline_voxels": self.centreline_voxels,
            "centreline_hits": self.centreline_hits,
            "centreline_sensitivity": self.centreline_sensitivity,
        }


@dataclass(frozen=True)
class Centreline:
    """Skeleton counts: truth skeleton voxels and those predicted; prediction skeleton voxels and those true."""

    truth_voxels: int
    truth_hits: int
    predicted_voxels: int
    predicted_hits: int

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.truth_hits, self.truth_voxels)

    @property
    def precision(self) -> float | None:
        return _ratio(self.predicted_hits, self.predicted_voxels)

    @property
    def cldice(self) -> float | None:
        s, p = self.sensitivity, self.precision
        if s is None or p is None:
            return None
        return 0.0 if s + p == 0 else 2.0 * s * p / (s + p)

    def to_dict(self) -> dict:
        return {
            "truth_voxels": self.truth_voxels,
            "truth_hits": self.truth_hits,
            "predicted_voxels": self.predicted_voxels,
            "predicted_hits": self.predicted_hits,
            "sensitivity": self.sensitivity,
            "precision": self.precision,
            "cldice": self.cldice,
        }


@dataclass(frozen=True)
class TruthVesselMetrics:
    """All truth-referenced vessel numbers of one predicted vessel mask.

    whole_head: overlap over every voxel. remote_fp: false positives farther than ``near_mm`` from any truth
    vessel (in whole_head.fp, in no stratum). strata: one RadiusStratum per radius bin; resolved: the group of
    radius >= one voxel (``voxel_mm``). centreline: skeleton counts (clDice). Units: mm; counts in voxels.
    """

    whole_head: Overlap
    remote_fp: int
    strata: tuple[RadiusStratum, ...]
    resolved: RadiusStratum
    centreline: Centreline
    voxel_mm: float
    near_mm: float

    def headline(self) -> dict:
        """The flat figures benches and tables quote: whole-head Dice / sensitivity / PPV, Dice and sensitivity
        of the vessels of radius >= one voxel, centreline sensitivity (fractions; None where undefined)."""
        return {
            "dice": self.whole_head.dice,
            "sensitivity": self.whole_head.sensitivity,
            "ppv": self.whole_head.ppv,
            "resolved_dice": self.resolved.overlap.dice,
            "resolved_sensitivity": self.resolved.overlap.sensitivity,
            "centreline_sensitivity": self.centreline.sensitivity,
        }

    def to_dict(self) -> dict:
        return {
            "whole_head": self.whole_head.to_dict(),
            "remote_fp": self.remote_fp,
            "by_radius": [s.to_dict() for s in self.strata],
            "resolved": self.resolved.to_dict(),
            "centreline": self.centreline.to_dict(),
            "voxel_mm": self.voxel_mm,
            "near_mm": self.near_mm,
        }


# --------------------------------------------------------------------------------------------- helpers


def centreline_mask(mask: np.ndarray) -> np.ndarray:
    """Skeleton (bool [z, y, x]) of a bool [z, y, x] mask: ``skimage.morphology.skeletonize`` (3-D, Lee's
    method) on the mask's bounding box (padded by one voxel), so the cost follows the vessels, not the grid."""
    from skimage.morphology import skeletonize

    mask = _bool3("mask", mask)
    out = np.zeros(mask.shape, dtype=bool)
    box = _bbox(mask, 1)
    if box is None:
        return out
    out[box] = skeletonize(mask[box]).astype(bool)
    return out


def _coords_mm(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    return np.argwhere(mask).astype(np.float64) * np.asarray(spacing, dtype=np.float64)


def estimate_radius_mm(vessel: np.ndarray, spacing_mm) -> np.ndarray:
    """Estimated vessel radius (float32 mm, [z, y, x], 0 outside ``vessel``) for a truth mask without known radii.

    vessel: bool [z, y, x]; spacing_mm: (dz, dy, dx). Each vessel voxel takes the radius at its nearest
    centreline voxel, estimated there as the Euclidean distance to the nearest non-vessel voxel centre minus half
    a voxel (a one-voxel line gets half a voxel), at least a quarter voxel. A phantom's own radii
    (``dla.phantoms.vessel_radii_from_params``) are exact and preferred.
    """
    vessel = _bool3("vessel", vessel)
    sp = _spacing(spacing_mm)
    out = np.zeros(vessel.shape, dtype=np.float32)
    box = _bbox(vessel, 1)
    if box is None:
        return out
    crop = vessel[box]
    inside = ndimage.distance_transform_edt(crop, sampling=sp)
    skel = centreline_mask(crop)
    if not skel.any():  # skeletonize keeps at least a point of every component; guard anyway
        skel = crop.copy()
    vox = voxel_size_mm(sp)
    radius_at_skel = np.maximum(inside[skel] - 0.5 * vox, 0.25 * vox)
    _, nearest = cKDTree(_coords_mm(skel, sp)).query(_coords_mm(crop, sp))
    sub = np.zeros(crop.shape, dtype=np.float32)
    sub[crop] = radius_at_skel[nearest]
    out[box] = sub
    return out


def dsa_baseline_vessels(
    subtracted_hu: np.ndarray,
    spacing_mm,
    *,
    vessel_threshold_hu: float = 600.0,
    min_vessel_component_mm3: float = DEFAULT_MIN_VESSEL_COMPONENT_MM3,
) -> np.ndarray:
    """The 3D-DSA baseline's vessel mask: the subtracted volume thresholded as the labeling recipe does.

    subtracted_hu: int16 (any numeric) HU [z, y, x]; spacing_mm: (dz, dy, dx). Voxels >= vessel_threshold_hu
    (the recipe's default 600 HU) in 26-connected components of at least ``min_vessel_component_mm3`` (the
    recipe's default floor, converted to voxels exactly as ``RecipeParams.min_component_voxels``) are vessel; no
    seed point, no manual clean-up. Returns bool [z, y, x]. Parameters outside the recipe's ranges raise
    TruthError.
    """
    sub = np.asarray(subtracted_hu)
    if sub.ndim != 3 or sub.dtype.kind not in "iuf":
        raise TruthError(
            f"subtracted_hu must be a numeric 3-D [z, y, x] HU array, got {sub.dtype} {sub.shape}"
        )
    sp = _spacing(spacing_mm)
    try:
        params = RecipeParams(
            vessel_threshold_hu=vessel_threshold_hu, min_vessel_component_mm3=min_vessel_component_mm3
        )
    except ValueError as exc:
        raise TruthError(f"DSA baseline: {exc}")
    above = sub >= params.vessel_threshold_hu
    floor = params.min_component_voxels(sp)
    labels, n = label_components(above)
    if n == 0:
        return above
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= floor
    keep[0] = False
    return keep[labels]


# --------------------------------------------------------------------------------------------- reference


def _relation(low: float, high: float, voxel: float) -> str:
    if high <= voxel:
        return "below one voxel"
    if low < voxel:
        return "straddles one voxel"
    return "at least one voxel"


def _label(low: float, high: float) -> str:
    return f">= {low:g} mm" if math.isinf(high) else f"{low:g}-{high:g} mm"


class TruthReference:
    """A truth-vessel mask prepared for scoring several predictions (DLA, DSA) against it.

    truth_vessel: bool [z, y, x]; radius_mm: float [z, y, x] mm, > 0 and finite at every truth-vessel voxel
    (ignored elsewhere); spacing_mm: (dz, dy, dx); radius_edges_mm: strictly increasing bin edges (mm, the last
    may be inf; truth voxels outside every bin raise TruthError); near_mm: how far (mm) a false positive may lie
    from a truth vessel to be attributed to its radius group (default two voxels of the largest spacing).
    The truth skeleton and a k-d tree of the truth voxels (mm coordinates) are built once here.
    """

    def __init__(
        self,
        truth_vessel: np.ndarray,
        radius_mm: np.ndarray,
        spacing_mm,
        *,
        radius_edges_mm: Sequence[float] = DEFAULT_RADIUS_EDGES_MM,
        near_mm: float | None = None,
    ):
        self.truth = _bool3("truth_vessel", truth_vessel)
        radius = np.asarray(radius_mm)
        if radius.shape != self.truth.shape:
            raise TruthError(f"shape mismatch: radius_mm {radius.shape} vs truth {self.truth.shape}")
        if radius.dtype.kind not in "iuf":
            raise TruthError(f"radius_mm must be numeric (mm), got dtype {radius.dtype}")
        self.spacing = _spacing(spacing_mm)
        self.edges = _edges(radius_edges_mm)
        self.voxel_mm = voxel_size_mm(self.spacing)
        if near_mm is None:
            near_mm = 2.0 * max(self.spacing)
        if isinstance(near_mm, bool) or not math.isfinite(float(near_mm)) or float(near_mm) < 0:
            raise TruthError(f"near_mm must be a finite distance >= 0 mm, got {near_mm!r}")
        self.near_mm = float(near_mm)
        r = radius[self.truth].astype(np.float64)
        if r.size and (not np.all(np.isfinite(r)) or r.min() <= 0):
            raise TruthError("radius_mm must be finite and > 0 at every truth-vessel voxel")
        if r.size and (r.min() < self.edges[0] or r.max() >= self.edges[-1]):
            raise TruthError(
                f"truth radii {r.min():.3g}-{r.max():.3g} mm fall outside the radius bins "
                f"[{self.edges[0]:g}, {self.edges[-1]:g}) mm"
            )
        self._flat = np.flatnonzero(self.truth)
        self._bin = np.searchsorted(np.asarray(self.edges), r, side="right") - 1  # bin of each truth voxel
        self._resolved = r >= self.voxel_mm
        self._tree = cKDTree(_coords_mm(self.truth, self.spacing)) if r.size else None
        skel = centreline_mask(self.truth)
        self._skel_flat = np.flatnonzero(skel)
        pos = np.searchsorted(self._flat, self._skel_flat)  # skeleton voxels are truth voxels
        self._skel_bin = self._bin[pos]
        self._skel_resolved = self._resolved[pos]

    def score(self, predicted_vessel: np.ndarray) -> TruthVesselMetrics:
        """Score a predicted vessel mask (bool [z, y, x], the truth's shape); see the module docstring."""
        pred = _bool3("predicted_vessel", predicted_vessel, self.truth.shape)
        pred_flat = pred.reshape(-1)
        hit = pred_flat[self._flat]  # per truth voxel: predicted?
        fp_mask = pred & ~self.truth
        n_fp = int(np.count_nonzero(fp_mask))
        n_bins = len(self.edges) - 1
        fp_bin = np.zeros(n_bins, dtype=np.int64)
        fp_resolved = np.zeros(2, dtype=np.int64)  # [below one voxel, resolved]
        remote = n_fp
        if n_fp and self._tree is not None:
            dist, nearest = self._tree.query(
                _coords_mm(fp_mask, self.spacing), distance_upper_bound=self.near_mm * (1 + 1e-9)
            )
            near = np.isfinite(dist)
            remote = int(np.count_nonzero(~near))
            fp_bin = np.bincount(self._bin[nearest[near]], minlength=n_bins)
            fp_resolved = np.bincount(self._resolved[nearest[near]].astype(np.int64), minlength=2)
        tp_bin = np.bincount(self._bin[hit], minlength=n_bins)
        all_bin = np.bincount(self._bin, minlength=n_bins)
        skel_hit = pred_flat[self._skel_flat]
        skel_bin_hits = np.bincount(self._skel_bin[skel_hit], minlength=n_bins)
        skel_bin_all = np.bincount(self._skel_bin, minlength=n_bins)
        strata = []
        for b in range(n_bins):
            low, high = self.edges[b], self.edges[b + 1]
            tp = int(tp_bin[b])
            strata.append(
                RadiusStratum(
                    label=_label(low, high),
                    low_mm=low,
                    high_mm=high,
                    relation=_relation(low, high, self.voxel_mm),
                    overlap=Overlap(tp=tp, fp=int(fp_bin[b]), fn=int(all_bin[b]) - tp),
                    centreline_voxels=int(skel_bin_all[b]),
                    centreline_hits=int(skel_bin_hits[b]),
                )
            )
        tp_res = int(np.count_nonzero(hit & self._resolved))
        resolved = RadiusStratum(
            label=f">= 1 voxel ({self.voxel_mm:.3g} mm)",
            low_mm=self.voxel_mm,
            high_mm=math.inf,
            relation="at least one voxel",
            overlap=Overlap(
                tp=tp_res, fp=int(fp_resolved[1]), fn=int(np.count_nonzero(self._resolved)) - tp_res
            ),
            centreline_voxels=int(np.count_nonzero(self._skel_resolved)),
            centreline_hits=int(np.count_nonzero(skel_hit & self._skel_resolved)),
        )
        tp = int(np.count_nonzero(hit))
        pred_skel = centreline_mask(pred)
        centreline = Centreline(
            truth_voxels=int(self._skel_flat.size),
            truth_hits=int(np.count_nonzero(skel_hit)),
            predicted_voxels=int(np.count_nonzero(pred_skel)),
            predicted_hits=int(np.count_nonzero(pred_skel & self.truth)),
        )
        return TruthVesselMetrics(
            whole_head=Overlap(tp=tp, fp=n_fp, fn=int(self._flat.size) - tp),
            remote_fp=remote,
            strata=tuple(strata),
            resolved=resolved,
            centreline=centreline,
            voxel_mm=self.voxel_mm,
            near_mm=self.near_mm,
        )

    def distance_mm(self, mask: np.ndarray) -> np.ndarray:
        """Euclidean distance (float64 mm) of each voxel of the bool [z, y, x] ``mask`` (in ``np.argwhere``
        order) to the nearest truth-vessel voxel centre; inf when the truth has no vessel."""
        mask = _bool3("mask", mask, self.truth.shape)
        if self._tree is None:
            return np.full(int(np.count_nonzero(mask)), np.inf)
        dist, _ = self._tree.query(_coords_mm(mask, self.spacing))
        return dist
