"""Validated, JSON-serializable and replayable edit operations on uint8 [z, y, x] label maps.

An operation is a plain dict with an ``"op"`` key (brush, remove_island, keep_connected, scissors, set_roi,
relabel, balance, recipe, and Slicer's vocabulary: keep_largest, remove_small, split_island, margin, smooth).
``parse_op`` validates it against the volume shape and spacing and returns a frozen dataclass (``op_to_dict``
gives the canonical JSON form back); ``apply_op`` modifies the label map in place, working inside the op's
bounding region where possible, and returns an ``OpResult`` (bounding box of the
changed voxels, number changed, per-class count deltas). Validation happens before any voxel is touched, so
a rejected op leaves the labels unchanged. ``replay`` applies a list of recorded ops to a copy of a base map
(undo = replay without the last op).

New ops and recorded ops: ``parse_op``/``apply_op`` take ``recorded=True`` for ops stored with a draft or label
version. A recorded recipe op keeps the meaning it had when it was stored (a floor in voxels, or none for the
old default of 500 voxels) and is not refused for a floor bigger than the volume; a new one gets today's
defaults and checks. ``canonical_op`` gives the form to record: a recipe op with all its parameters spelled out,
so that its replay never depends on defaults that may change.

Slicer's tools. Islands are 26-connected components of one class (``components.label_components``):
``keep_largest`` keeps a class's largest island, ``keep_connected`` with the clicked voxel as seed is "keep
selected", ``remove_small`` drops islands below ``min_volume_mm3``, and ``split_island`` is what "split islands"
can mean in a map with one class per voxel: the clicked island is moved to another class. ``margin`` grows or
shrinks a class by ``size_mm`` and ``smooth`` applies a median, opening or closing of diameter ``kernel_mm``,
both with a Euclidean ball in mm (an ellipsoid in voxels when the spacing is anisotropic; ``morphology``);
voxels a class loses become unlabeled, voxels it gains take it (only over ``only_class`` when given, as the
brush's "paint only over"). A whole brush drag is one op (``stroke_zyx``): one record, one undo step. Sizes
that are not positive, larger than the volume or smaller than a voxel are refused with a message saying so.
Pure numpy/scipy; no Django.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from dla.classes import CLASS_NAMES, LABELED_CLASSES, UNLABELED, VESSEL
from dla.labeling.components import component_sizes, label_components
from dla.labeling.morphology import ball_halfwidths, closing_mm, dilate_mm, erode_mm, median_mm, opening_mm
from dla.labeling.recipe import RecipeError, RecipeParams, balance_indices, run_recipe
from dla.labeling.roi import RoiBoxError, mask_bbox, parse_box

ALL_CLASSES = (UNLABELED, *LABELED_CLASSES)
MAX_RADIUS_MM = 50.0
MAX_STROKE_POINTS = 1_000_000
AXES = ("z", "y", "x")


class EditOpError(ValueError):
    """An edit operation is malformed or does not fit the volume; the message says what and why."""


# ----------------------------------------------------------------------------------------------- op types


@dataclass(frozen=True)
class BrushOp:
    center_zyx: tuple[int, int, int]
    radius_mm: float
    label: int
    shape: str = (
        "circle"  # "circle": disc in the plane normal to `axis` through the centre; "sphere": 3D ball
    )
    axis: str = "z"
    only_class: int | None = None  # paint only over voxels of this class
    # further centres of the same drag: one op, one undo step
    stroke_zyx: tuple[tuple[int, int, int], ...] = ()
    op: str = field(default="brush", init=False)


@dataclass(frozen=True)
class RemoveIslandOp:
    at_zyx: tuple[int, int, int]
    op: str = field(default="remove_island", init=False)


@dataclass(frozen=True)
class KeepConnectedOp:
    label: int
    seeds_zyx: tuple[tuple[int, int, int], ...]
    op: str = field(default="keep_connected", init=False)


@dataclass(frozen=True)
class ScissorsOp:
    axis: str
    slice: int
    polygon: tuple[tuple[float, float], ...]  # (row, col) in the plane: z->(y,x), y->(z,x), x->(z,y)
    mode: str = "inside"
    slab: tuple[int, int] | None = None  # half-open slice range along axis; None = just `slice`
    label: int | None = None  # cut only this class
    op: str = field(default="scissors", init=False)


@dataclass(frozen=True)
class SetRoiOp:
    box_zyx: tuple[int, int, int, int, int, int]
    op: str = field(default="set_roi", init=False)


@dataclass(frozen=True)
class RelabelOp:
    from_class: int
    to_class: int
    box_zyx: tuple[int, int, int, int, int, int] | None = None
    op: str = field(default="relabel", init=False)


@dataclass(frozen=True)
class BalanceOp:
    """Random undersampling: every labeled class reduced to the smallest labeled class's voxel count."""

    seed: int = 0
    op: str = field(default="balance", init=False)


@dataclass(frozen=True)
class RecipeOp:
    params: RecipeParams
    op: str = field(default="recipe", init=False)


@dataclass(frozen=True)
class KeepLargestOp:
    """Keep only the largest 26-connected island of class ``label`` (ties: the first in scan order); the other
    islands of that class become unlabeled."""

    label: int
    op: str = field(default="keep_largest", init=False)


@dataclass(frozen=True)
class RemoveSmallOp:
    """Islands (26-connected) of class ``label`` (None: of every labeled class) whose volume is below
    ``min_volume_mm3`` become unlabeled."""

    min_volume_mm3: float
    label: int | None = None
    op: str = field(default="remove_small", init=False)


@dataclass(frozen=True)
class SplitIslandOp:
    """Slicer's "split islands" in a one-class-per-voxel map: the 26-connected island of the class under
    ``at_zyx`` is split off its class and given ``to_class`` (e.g. a bone fragment the threshold took for a
    vessel); the rest of the class is untouched."""

    at_zyx: tuple[int, int, int]
    to_class: int
    op: str = field(default="split_island", init=False)


@dataclass(frozen=True)
class MarginOp:
    """Grow or shrink class ``label`` by ``size_mm`` (a Euclidean ball in mm: an ellipsoid in voxels on an
    anisotropic grid). Grown voxels take ``label`` (only over voxels of ``only_class`` when given); shrunk
    voxels become unlabeled."""

    label: int
    mode: str  # "grow" | "shrink"
    size_mm: float
    only_class: int | None = None
    op: str = field(default="margin", init=False)


@dataclass(frozen=True)
class SmoothOp:
    """Smooth class ``label`` with a ball of diameter ``kernel_mm``: ``median`` (majority vote), ``opening``
    (removes protrusions and specks) or ``closing`` (fills holes and gaps). Added voxels take ``label`` (only
    over ``only_class`` when given); removed voxels become unlabeled."""

    label: int
    method: str  # "median" | "opening" | "closing"
    kernel_mm: float
    only_class: int | None = None
    op: str = field(default="smooth", init=False)


@dataclass(frozen=True)
class ModelVesselsOp:
    """Model-assisted labeling, "accept the model's vessels here": voxels that the predicted class map
    ``volume_id`` (a stored model output on this grid) calls vessel become vessel, inside ``box_zyx`` (the whole
    volume when None) and only over voxels of ``only_class`` when given. The prediction is named by its volume
    id, so a replay reads the same voxels; the annotator reviews the result like any other edit."""

    volume_id: int
    box_zyx: tuple[int, int, int, int, int, int] | None = None
    only_class: int | None = None
    op: str = field(default="model_vessels", init=False)


Op = (
    BrushOp
    | RemoveIslandOp
    | KeepConnectedOp
    | ScissorsOp
    | SetRoiOp
    | RelabelOp
    | BalanceOp
    | RecipeOp
    | KeepLargestOp
    | RemoveSmallOp
    | SplitIslandOp
    | MarginOp
    | SmoothOp
    | ModelVesselsOp
)
OP_CLASSES = (
    BrushOp,
    RemoveIslandOp,
    KeepConnectedOp,
    ScissorsOp,
    SetRoiOp,
    RelabelOp,
    BalanceOp,
    RecipeOp,
    KeepLargestOp,
    RemoveSmallOp,
    SplitIslandOp,
    MarginOp,
    SmoothOp,
    ModelVesselsOp,
)
OP_TYPES = (
    "brush",
    "remove_island",
    "keep_connected",
    "scissors",
    "set_roi",
    "relabel",
    "balance",
    "recipe",
    "keep_largest",
    "remove_small",
    "split_island",
    "margin",
    "smooth",
    "model_vessels",
)
SMOOTH_METHODS = ("median", "opening", "closing")
MARGIN_MODES = ("grow", "shrink")


@dataclass
class OpResult:
    """``bbox_zyx`` (z0, z1, y0, y1, x0, x1) half-open of changed voxels or None; ``delta_counts`` per class 0..3;
    ``previous``: uint8 copy of the labels inside ``bbox_zyx`` before the op (the undo patch; not serialized);
    ``report``: what a recipe op kept (``RecipeResult.report()``, with its ``warnings``), else None."""

    bbox_zyx: tuple[int, int, int, int, int, int] | None
    changed_voxels: int
    delta_counts: dict[int, int]
    previous: np.ndarray | None = field(default=None, repr=False, compare=False)
    report: dict | None = field(default=None, compare=False)

    @property
    def warnings(self) -> list[str]:
        return list((self.report or {}).get("warnings", []))

    def to_dict(self) -> dict:
        d = {
            "bbox_zyx": list(self.bbox_zyx) if self.bbox_zyx is not None else None,
            "changed_voxels": self.changed_voxels,
            "delta_counts": {str(k): v for k, v in self.delta_counts.items()},
        }
        if self.report is not None:
            d["report"] = self.report
            d["warnings"] = self.warnings
        return d


class VolumeContext:
    """Spacing plus lazily loaded fill/subtracted HU volumes (int16 [z, y, x]) for ops that need images.

    ``loader`` is a callable returning ``(fill_hu, subtracted_hu)``; it is called at most once.
    ``prediction_loader(volume_id)`` returns a stored predicted class map (uint8 [z, y, x]) for model-assisted
    ops, raising EditOpError (or a subclass of ValueError) with the reason when there is none.
    """

    def __init__(
        self,
        spacing_mm,
        *,
        fill_hu=None,
        subtracted_hu=None,
        loader: Callable | None = None,
        prediction_loader: Callable[[int], np.ndarray] | None = None,
    ):
        self.spacing_mm = tuple(float(v) for v in spacing_mm)
        self._fill, self._sub, self._loader = fill_hu, subtracted_hu, loader
        self._prediction_loader = prediction_loader

    def predicted_class_map(self, volume_id: int) -> np.ndarray:
        if self._prediction_loader is None:
            raise EditOpError("model_vessels needs a model prediction but this context has none")
        return np.asarray(self._prediction_loader(volume_id))

    def _load(self):
        if self._fill is None or self._sub is None:
            if self._loader is None:
                raise EditOpError("this op needs the fill and subtracted volumes but the context has none")
            self._fill, self._sub = self._loader()
            self._loader = None

    @property
    def fill_hu(self) -> np.ndarray:
        self._load()
        return self._fill

    @property
    def subtracted_hu(self) -> np.ndarray:
        self._load()
        return self._sub


# ----------------------------------------------------------------------------------------------- parsing


def _field(d: dict, name: str, op: str, default=...):
    if name not in d:
        if default is ...:
            raise EditOpError(f"{op}: missing field '{name}'")
        return default
    return d[name]


def _int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise EditOpError(f"{what} must be an integer, got {type(v).__name__} {v!r}")
    return int(v)


def _number(v, what: str) -> float:
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float, np.integer, np.floating))
        or not math.isfinite(v)
    ):
        raise EditOpError(f"{what} must be a finite number, got {type(v).__name__} {v!r}")
    return float(v)


def _class(v, what: str, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    c = _int(v, what)
    if c not in ALL_CLASSES:
        raise EditOpError(f"{what}={c} is not a class id (valid: {list(ALL_CLASSES)}, 0 = unlabeled)")
    return c


def _point(v, shape, what: str) -> tuple[int, int, int]:
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise EditOpError(f"{what} must be [z, y, x], got {v!r}")
    p = tuple(_int(c, what) for c in v)
    for axis, c, n in zip(AXES, p, shape, strict=True):
        if not 0 <= c < n:
            raise EditOpError(f"{what} {list(p)}: {axis}={c} is outside the volume (valid {axis} 0..{n - 1})")
    return p


def _box(v, shape, what: str) -> tuple[int, int, int, int, int, int]:
    try:
        return parse_box(v, shape, what)
    except RoiBoxError as exc:
        raise EditOpError(str(exc)) from None


def _axis(v, op: str) -> str:
    if v not in AXES:
        raise EditOpError(f"{op}: axis must be one of {list(AXES)}, got {v!r}")
    return v


def parse_op(d: dict, shape_zyx, spacing_mm, *, recorded: bool = False) -> Op:
    """Validate an op dict against a volume of ``shape_zyx`` and ``spacing_mm`` (dz, dy, dx); return the Op.
    ``recorded``: ``d`` was stored with a draft or label version (see the module docstring)."""
    if not isinstance(d, dict):
        raise EditOpError(f"an op must be a dict with an 'op' key, got {type(d).__name__}")
    kind = d.get("op")
    if kind not in OP_TYPES:
        raise EditOpError(f"unknown op type {kind!r}; valid op types: {list(OP_TYPES)}")
    shape = tuple(int(n) for n in shape_zyx)
    known = _KNOWN_FIELDS[kind]
    extra = sorted(set(d) - known - {"op"})
    if extra:
        raise EditOpError(f"{kind}: unknown field(s) {extra}; valid: {sorted(known)}")
    if kind == "brush":
        r = _number(_field(d, "radius_mm", kind), "brush radius_mm")
        if r <= 0 or r > MAX_RADIUS_MM:
            raise EditOpError(f"brush radius_mm={r} must be > 0 and <= {MAX_RADIUS_MM} mm")
        shp = _field(d, "shape", kind, "circle")
        if shp not in ("circle", "sphere"):
            raise EditOpError(f"brush shape must be 'circle' or 'sphere', got {shp!r}")
        stroke = _field(d, "stroke_zyx", kind, [])
        if not isinstance(stroke, (list, tuple)) or len(stroke) > MAX_STROKE_POINTS:
            raise EditOpError(
                f"brush stroke_zyx must be a list of at most {MAX_STROKE_POINTS:,} [z, y, x] points"
            )
        return BrushOp(
            center_zyx=_point(_field(d, "center_zyx", kind), shape, "brush center_zyx"),
            radius_mm=r,
            label=_class(_field(d, "label", kind), "brush label"),
            shape=shp,
            axis=_axis(_field(d, "axis", kind, "z"), kind),
            only_class=_class(_field(d, "only_class", kind, None), "brush only_class", allow_none=True),
            stroke_zyx=tuple(_point(p, shape, "brush stroke_zyx point") for p in stroke),
        )
    if kind == "remove_island":
        return RemoveIslandOp(at_zyx=_point(_field(d, "at_zyx", kind), shape, "remove_island at_zyx"))
    if kind == "keep_connected":
        label = _class(_field(d, "label", kind), "keep_connected label")
        if label == UNLABELED:
            raise EditOpError("keep_connected label must be a labeled class (1, 2 or 3), got 0")
        seeds = _field(d, "seeds_zyx", kind)
        if not isinstance(seeds, (list, tuple)) or len(seeds) == 0:
            raise EditOpError("keep_connected seeds_zyx must be a non-empty list of [z, y, x] points")
        return KeepConnectedOp(
            label=label, seeds_zyx=tuple(_point(s, shape, "keep_connected seed") for s in seeds)
        )
    if kind == "scissors":
        axis = _axis(_field(d, "axis", kind), kind)
        ax = AXES.index(axis)
        k = _int(_field(d, "slice", kind), "scissors slice")
        if not 0 <= k < shape[ax]:
            raise EditOpError(f"scissors slice {k} is outside the volume (valid {axis} 0..{shape[ax] - 1})")
        poly = _field(d, "polygon", kind)
        if not isinstance(poly, (list, tuple)) or len(poly) < 3:
            raise EditOpError("scissors polygon must have at least 3 [row, col] vertices (empty polygon)")
        verts = []
        for v in poly:
            if not isinstance(v, (list, tuple)) or len(v) != 2:
                raise EditOpError(f"scissors polygon vertices must be [row, col], got {v!r}")
            verts.append((_number(v[0], "scissors polygon row"), _number(v[1], "scissors polygon col")))
        a = np.asarray(verts)
        area = 0.5 * abs(np.dot(a[:, 0], np.roll(a[:, 1], 1)) - np.dot(a[:, 1], np.roll(a[:, 0], 1)))
        if area <= 0:
            raise EditOpError("scissors polygon is empty (zero area)")
        mode = _field(d, "mode", kind, "inside")
        if mode not in ("inside", "outside"):
            raise EditOpError(f"scissors mode must be 'inside' or 'outside', got {mode!r}")
        slab = _field(d, "slab", kind, None)
        if slab is not None:
            if not isinstance(slab, (list, tuple)) or len(slab) != 2:
                raise EditOpError(f"scissors slab must be [k0, k1] (half-open), got {slab!r}")
            s0, s1 = _int(slab[0], "scissors slab"), _int(slab[1], "scissors slab")
            if not (0 <= s0 < s1 <= shape[ax]):
                raise EditOpError(
                    f"scissors slab [{s0}, {s1}) must be non-empty and inside the volume (valid {axis} 0..{shape[ax]})"
                )
            slab = (s0, s1)
        return ScissorsOp(
            axis=axis,
            slice=k,
            polygon=tuple(verts),
            mode=mode,
            slab=slab,
            label=_class(_field(d, "label", kind, None), "scissors label", allow_none=True),
        )
    if kind == "set_roi":
        return SetRoiOp(box_zyx=_box(_field(d, "box_zyx", kind), shape, "set_roi box_zyx"))
    if kind == "relabel":
        a = _class(_field(d, "from", kind), "relabel from")
        b = _class(_field(d, "to", kind), "relabel to")
        if a == b:
            raise EditOpError(f"relabel from and to are the same class ({a})")
        box = _field(d, "box_zyx", kind, None)
        return RelabelOp(
            from_class=a, to_class=b, box_zyx=None if box is None else _box(box, shape, "relabel box_zyx")
        )
    if kind in _PARSERS:
        return _PARSERS[kind](d, shape, tuple(float(v) for v in spacing_mm))
    if kind == "balance":
        seed = _int(_field(d, "seed", kind, 0), "balance seed")
        if not 0 <= seed < 2**32:
            raise EditOpError(f"balance seed must be in [0, 2^32), got {seed}")
        return BalanceOp(seed=seed)
    # recipe
    try:
        params = RecipeParams.from_dict(_field(d, "params", kind, {}), recorded=recorded)
        params.check_against_shape(shape)
        if not recorded:
            params.check_floor(shape, tuple(float(v) for v in spacing_mm))
    except RecipeError as e:
        raise EditOpError(f"recipe: {e}") from e
    return RecipeOp(params=params)


# ----------------------------------------------------------------------------------------------- islands, margin,
# smoothing: validation (sizes in mm / mm^3 against the volume's extent and voxel size)


def _class_name(c: int) -> str:
    return CLASS_NAMES[c].replace("_", " ")


def _labeled(v, what: str) -> int:
    c = _class(v, what)
    if c == UNLABELED:
        raise EditOpError(f"{what} must be a labeled class (vessel, bone or soft tissue), not 0 (unlabeled)")
    return c


def _size_mm(v, what: str, shape, spacing, *, per_voxel: float) -> float:
    """A size in mm that is > 0, not larger than the volume, and at least ``per_voxel`` x the smallest
    voxel spacing (smaller would change nothing)."""
    x = _number(v, what)
    if x <= 0:
        raise EditOpError(f"{what} is {x:g} mm; it must be more than 0 mm")
    extent = max(n * s for n, s in zip(shape, spacing, strict=True))
    if x > extent:
        raise EditOpError(
            f"{what} is {x:g} mm, larger than the whole volume ({extent:.1f} mm across); choose a smaller size"
        )
    least = per_voxel * min(spacing)
    if x < least - 1e-9:
        raise EditOpError(
            f"{what} is {x:g} mm, less than one voxel ({min(spacing):g} mm) reaches: it would change nothing; "
            f"use at least {least:g} mm"
        )
    return x


def _only_over(d: dict, kind: str, label: int) -> int | None:
    only = _class(_field(d, "only_class", kind, None), f"{kind} only_class", allow_none=True)
    if only is not None and only == label:
        raise EditOpError(
            f"{kind}: 'only over' is {_class_name(only)}, the class being edited itself; choose another class "
            "or none"
        )
    return only


def _parse_keep_largest(d, shape, spacing):
    return KeepLargestOp(label=_labeled(_field(d, "label", "keep_largest"), "keep_largest label"))


def _parse_remove_small(d, shape, spacing):
    label = _field(d, "label", "remove_small", None)
    label = None if label is None else _labeled(label, "remove_small label")
    v = _number(_field(d, "min_volume_mm3", "remove_small"), "remove_small min_volume_mm3")
    voxel_mm3 = float(np.prod(spacing))
    total_mm3 = voxel_mm3 * float(np.prod(shape))
    if v <= 0:
        raise EditOpError(f"remove_small min_volume_mm3 is {v:g} mm³; it must be more than 0 mm³")
    if v > total_mm3:
        raise EditOpError(
            f"remove_small min_volume_mm3 is {v:g} mm³, more than the whole volume ({total_mm3:.0f} mm³); "
            "choose a smaller size"
        )
    if v <= voxel_mm3 + 1e-12:
        raise EditOpError(
            f"remove_small min_volume_mm3 is {v:g} mm³, not more than one voxel ({voxel_mm3:.3g} mm³): no island "
            "is smaller, so nothing would be removed"
        )
    return RemoveSmallOp(min_volume_mm3=v, label=label)


def _parse_split_island(d, shape, spacing):
    return SplitIslandOp(
        at_zyx=_point(_field(d, "at_zyx", "split_island"), shape, "split_island at_zyx"),
        to_class=_labeled(_field(d, "to_class", "split_island"), "split_island to_class"),
    )


def _parse_margin(d, shape, spacing):
    label = _labeled(_field(d, "label", "margin"), "margin label")
    mode = _field(d, "mode", "margin")
    if mode not in MARGIN_MODES:
        raise EditOpError(f"margin mode must be 'grow' or 'shrink', got {mode!r}")
    size = _size_mm(_field(d, "size_mm", "margin"), "margin size_mm", shape, spacing, per_voxel=1.0)
    return MarginOp(label=label, mode=mode, size_mm=size, only_class=_only_over(d, "margin", label))


def _parse_smooth(d, shape, spacing):
    label = _labeled(_field(d, "label", "smooth"), "smooth label")
    method = _field(d, "method", "smooth")
    if method not in SMOOTH_METHODS:
        raise EditOpError(f"smooth method must be one of {list(SMOOTH_METHODS)}, got {method!r}")
    # the kernel is the ball's diameter: it reaches a neighbour once it is two voxels across
    kernel = _size_mm(_field(d, "kernel_mm", "smooth"), "smooth kernel_mm", shape, spacing, per_voxel=2.0)
    return SmoothOp(label=label, method=method, kernel_mm=kernel, only_class=_only_over(d, "smooth", label))


def _parse_model_vessels(d: dict, shape) -> ModelVesselsOp:
    volume_id = _int(_field(d, "volume_id", "model_vessels"), "model_vessels volume_id")
    if volume_id < 1:
        raise EditOpError(f"model_vessels volume_id must be a positive volume id, got {volume_id}")
    box = d.get("box_zyx")
    return ModelVesselsOp(
        volume_id=volume_id,
        box_zyx=None if box is None else _box(box, shape, "model_vessels box_zyx"),
        only_class=_class(d.get("only_class"), "model_vessels only_class", allow_none=True),
    )


_PARSERS = {
    "keep_largest": _parse_keep_largest,
    "remove_small": _parse_remove_small,
    "split_island": _parse_split_island,
    "margin": _parse_margin,
    "smooth": _parse_smooth,
    "model_vessels": lambda d, shape, spacing: _parse_model_vessels(d, shape),
}


_KNOWN_FIELDS = {
    "brush": {"center_zyx", "radius_mm", "label", "shape", "axis", "only_class", "stroke_zyx"},
    "remove_island": {"at_zyx"},
    "keep_connected": {"label", "seeds_zyx"},
    "scissors": {"axis", "slice", "polygon", "mode", "slab", "label"},
    "set_roi": {"box_zyx"},
    "relabel": {"from", "to", "box_zyx"},
    "balance": {"seed"},
    "recipe": {"params"},
    "keep_largest": {"label"},
    "remove_small": {"label", "min_volume_mm3"},
    "split_island": {"at_zyx", "to_class"},
    "margin": {"label", "mode", "size_mm", "only_class"},
    "smooth": {"label", "method", "kernel_mm", "only_class"},
    "model_vessels": {"volume_id", "box_zyx", "only_class"},
}


def op_to_dict(op: Op) -> dict:
    """Canonical JSON-serializable dict of a parsed op (``parse_op(op_to_dict(op)) == op``)."""
    if isinstance(op, RecipeOp):
        return {"op": "recipe", "params": op.params.to_dict()}
    if isinstance(op, RelabelOp):
        d = {"op": "relabel", "from": op.from_class, "to": op.to_class}
        if op.box_zyx is not None:
            d["box_zyx"] = list(op.box_zyx)
        return d
    d = asdict(op)

    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return {
        k: conv(v)
        for k, v in d.items()
        if not (v is None and k in ("only_class", "slab", "label", "box_zyx"))
        and not (k == "stroke_zyx" and not v)
    }


def canonical_op(d: dict, shape_zyx, spacing_mm, *, recorded: bool = False) -> dict:
    """The form of op ``d`` to record with a draft: a recipe op with every parameter spelled out (the floor it
    used included), any other op as given. Raises EditOpError like ``parse_op``."""
    parsed = parse_op(d, shape_zyx, spacing_mm, recorded=recorded)
    return op_to_dict(parsed) if isinstance(parsed, RecipeOp) else d


# ----------------------------------------------------------------------------------------------- apply


def _finish(labels: np.ndarray, region: tuple[slice, slice, slice], old: np.ndarray) -> OpResult:
    """Compare the region of ``labels`` with its copy ``old`` and summarise the change."""
    new = labels[region]
    changed = old != new
    n = int(np.count_nonzero(changed))
    delta = dict.fromkeys(ALL_CLASSES, 0)
    if n == 0:
        return OpResult(None, 0, delta)
    before = np.bincount(old[changed], minlength=256)
    after = np.bincount(new[changed], minlength=256)
    for c in ALL_CLASSES:
        delta[c] = int(after[c] - before[c])
    local = mask_bbox(changed)
    return OpResult(_global_bbox(region, local), n, delta, np.ascontiguousarray(old[local]))


def _global_bbox(region, local) -> tuple[int, int, int, int, int, int]:
    """(z0, z1, y0, y1, x0, x1) in volume coordinates of ``local`` slices taken inside ``region`` slices."""
    return tuple(
        int(v)
        for r, b in zip(region, local, strict=True)
        for v in ((r.start or 0) + b.start, (r.start or 0) + b.stop)
    )


def _full(shape) -> tuple[slice, slice, slice]:
    return (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))


def _apply_brush(labels, op: BrushOp, spacing):
    """Paint a ball (sphere) or disc (circle, in the plane normal to ``axis``) of ``radius_mm`` around the
    centre and every stroke point, inside the points' bounding region."""
    r = op.radius_mm
    dims = (0, 1, 2) if op.shape == "sphere" else tuple(i for i in range(3) if AXES[i] != op.axis)
    half = [int(math.floor(r / spacing[i] + 1e-9)) if i in dims else 0 for i in range(3)]
    points = np.asarray((op.center_zyx, *op.stroke_zyx), dtype=np.int64)  # [n, 3]
    region = tuple(
        slice(
            max(0, int(points[:, i].min()) - half[i]),
            min(labels.shape[i], int(points[:, i].max()) + half[i] + 1),
        )
        for i in range(3)
    )
    offsets = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    ball = sum((g * s) ** 2 for g, s in zip(offsets, spacing, strict=True)) <= r * r + 1e-9
    paint = np.zeros(tuple(s.stop - s.start for s in region), dtype=bool)
    local = points - np.array([s.start for s in region])
    if ball.size == 1:
        paint[tuple(local.T)] = True
    else:  # union of balls, clipped at the region's faces (cost: points x ball voxels)
        for p in local:
            lo = [max(0, int(p[i]) - half[i]) for i in range(3)]
            hi = [min(paint.shape[i], int(p[i]) + half[i] + 1) for i in range(3)]
            cut = tuple(slice(lo[i] - (p[i] - half[i]), hi[i] - (p[i] - half[i])) for i in range(3))
            paint[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= ball[cut]
    old = labels[region].copy()
    sub = labels[region]
    if op.only_class is not None:
        paint &= sub == op.only_class
    sub[paint] = op.label
    return _finish(labels, region, old)


def _component_at(mask_fn: Callable, shape, point, start_half: int = 24):
    """Bool component (26-connected) of the mask containing ``point`` using a growing window.

    ``mask_fn(region)`` returns the bool class mask of a region. Returns (region, bool component crop).
    The window doubles until the component no longer touches an interior window face.
    """
    half = start_half
    while True:
        region = tuple(
            slice(max(0, p - half), min(n, p + half + 1)) for p, n in zip(point, shape, strict=True)
        )
        m = mask_fn(region)
        lab, _ = label_components(m)
        local = tuple(p - s.start for p, s in zip(point, region, strict=True))
        comp = lab == lab[local]
        full = all(s.start == 0 and s.stop == n for s, n in zip(region, shape, strict=True))
        if full:
            return region, comp
        touches = False
        for ax, (s, n) in enumerate(zip(region, shape, strict=True)):
            idx_lo = [slice(None)] * 3
            idx_lo[ax] = 0
            idx_hi = [slice(None)] * 3
            idx_hi[ax] = -1
            if (s.start > 0 and comp[tuple(idx_lo)].any()) or (s.stop < n and comp[tuple(idx_hi)].any()):
                touches = True
                break
        if not touches:
            return region, comp
        half *= 4


def _apply_remove_island(labels, op: RemoveIslandOp):
    c = int(labels[op.at_zyx])
    if c == UNLABELED:
        raise EditOpError(f"no labeled island at {list(op.at_zyx)} (voxel is unlabeled)")
    region, comp = _component_at(lambda reg: labels[reg] == c, labels.shape, op.at_zyx)
    # the change is exactly ``comp`` (class c -> unlabeled): no copy and compare of the whole region
    local = mask_bbox(comp)
    target = labels[region][local]
    previous = target.copy()
    changed = comp[local]
    n = int(np.count_nonzero(changed))
    target[changed] = UNLABELED
    delta = {**dict.fromkeys(ALL_CLASSES, 0), c: -n, UNLABELED: n}
    return OpResult(_global_bbox(region, local), n, delta, previous)


def _class_bbox(labels, c):
    m = labels == c
    region = mask_bbox(m)
    return (None, None) if region is None else (region, m[region])


def _apply_keep_connected(labels, op: KeepConnectedOp):
    region, m = _class_bbox(labels, op.label)
    if region is None:
        return OpResult(None, 0, dict.fromkeys(ALL_CLASSES, 0))
    lab, n = label_components(m)
    keep = np.zeros(n + 1, dtype=bool)
    for s in op.seeds_zyx:
        local = tuple(p - r.start for p, r in zip(s, region, strict=True))
        if all(0 <= v < k for v, k in zip(local, m.shape, strict=True)):
            keep[lab[local]] = True
    keep[0] = False
    idx = np.flatnonzero(m)
    drop = idx[~keep[lab.ravel()[idx]]]
    old = labels[region].copy()
    sub = labels[region]
    if sub.flags.c_contiguous:
        sub.ravel()[drop] = UNLABELED
    else:
        tmp = sub.copy()
        tmp.ravel()[drop] = UNLABELED
        sub[...] = tmp
    return _finish(labels, region, old)


def polygon_mask(polygon_rc, shape_rc) -> np.ndarray:
    """Bool [rows, cols] mask of pixels whose centre (row, col) is inside the polygon (even-odd rule).

    Same decision as the classic PNPOLY ray-crossing test: a vertex edge counts when
    ``min(r0, r1) <= row < max(r0, r1)`` and ``col < crossing column``.
    """
    nr, nc = shape_rc
    p = np.asarray(polygon_rc, dtype=np.float64)
    out = np.zeros((nr, nc), dtype=bool)
    r_lo = max(0, int(math.floor(p[:, 0].min())))
    r_hi = min(nr, int(math.ceil(p[:, 0].max())) + 1)
    if r_lo >= r_hi:
        return out
    rows = np.arange(r_lo, r_hi, dtype=np.float64)[:, None]
    r0, c0 = p[:, 0][None, :], p[:, 1][None, :]
    r1, c1 = np.roll(p[:, 0], -1)[None, :], np.roll(p[:, 1], -1)[None, :]
    crosses = (r0 > rows) != (r1 > rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = (c1 - c0) * (rows - r0) / (r1 - r0) + c0
    # pixel col px toggles for each crossing with px < xc  <=>  px <= ceil(xc) - 1
    start = np.where(crosses, np.clip(np.ceil(xc), 0, nc), 0).astype(np.int64)
    toggles = np.zeros((r_hi - r_lo, nc + 1), dtype=np.int32)
    rr = np.broadcast_to(np.arange(r_hi - r_lo)[:, None], start.shape)
    np.add.at(toggles, (rr[crosses], np.zeros(int(crosses.sum()), dtype=np.int64)), 1)
    np.add.at(toggles, (rr[crosses], start[crosses]), -1)
    out[r_lo:r_hi] = (np.cumsum(toggles[:, :nc], axis=1) % 2).astype(bool)
    return out


def _apply_scissors(labels, op: ScissorsOp):
    ax = AXES.index(op.axis)
    plane_shape = tuple(n for i, n in enumerate(labels.shape) if i != ax)
    pm = polygon_mask(op.polygon, plane_shape)
    if op.mode == "outside":
        pm = ~pm
    k0, k1 = op.slab if op.slab is not None else (op.slice, op.slice + 1)
    # crop the plane to the bounding box of the cut pixels
    ra = np.flatnonzero(pm.any(axis=1))
    ca = np.flatnonzero(pm.any(axis=0))
    if ra.size == 0:
        return OpResult(None, 0, dict.fromkeys(ALL_CLASSES, 0))
    rs, cs = slice(ra[0], ra[-1] + 1), slice(ca[0], ca[-1] + 1)
    pm = pm[rs, cs]
    region = [rs, cs]
    region.insert(ax, slice(k0, k1))
    region = tuple(region)
    old = labels[region].copy()
    sub = labels[region]
    m3 = np.expand_dims(pm, ax)
    m3 = np.broadcast_to(m3, sub.shape)
    if op.label is not None:
        m3 = m3 & (sub == op.label)
    sub[m3] = UNLABELED
    return _finish(labels, region, old)


def _apply_set_roi(labels, op: SetRoiOp):
    z0, z1, y0, y1, x0, x1 = op.box_zyx
    region = _full(labels.shape)
    old = labels.copy()
    keep = labels[z0:z1, y0:y1, x0:x1].copy()
    labels[...] = UNLABELED
    labels[z0:z1, y0:y1, x0:x1] = keep
    return _finish(labels, region, old)


def _box_region(box_zyx, shape) -> tuple[slice, slice, slice]:
    """The slices of a half-open (z0, z1, y0, y1, x0, x1) box; the whole volume when ``box_zyx`` is None."""
    if box_zyx is None:
        return _full(shape)
    z0, z1, y0, y1, x0, x1 = box_zyx
    return (slice(z0, z1), slice(y0, y1), slice(x0, x1))


def _apply_relabel(labels, op: RelabelOp):
    region = _box_region(op.box_zyx, labels.shape)
    old = labels[region].copy()
    sub = labels[region]
    sub[old == op.from_class] = op.to_class
    return _finish(labels, region, old)


def _apply_balance(labels, op: BalanceOp):
    flat = labels.reshape(-1)
    rng = np.random.default_rng(op.seed)
    keep = balance_indices({c: np.flatnonzero(flat == c) for c in LABELED_CLASSES}, rng)
    old = labels.copy()
    flat[:] = UNLABELED
    for c, idx in keep.items():
        flat[idx] = c
    return _finish(labels, _full(labels.shape), old)


def _apply_recipe(labels, op: RecipeOp, ctx: VolumeContext):
    fill, sub = ctx.fill_hu, ctx.subtracted_hu
    if fill.shape != labels.shape:
        raise EditOpError(
            f"recipe: volume shape {fill.shape} does not match the label map shape {labels.shape}"
        )
    try:
        res = run_recipe(fill, sub, ctx.spacing_mm, op.params)
    except RecipeError as e:
        raise EditOpError(f"recipe: {e}") from e
    old = labels.copy()
    labels[...] = res.labels
    result = _finish(labels, _full(labels.shape), old)
    result.report = res.report()
    return result


def _apply_model_vessels(labels, op: ModelVesselsOp, ctx: VolumeContext):
    predicted = ctx.predicted_class_map(op.volume_id)
    if predicted.shape != labels.shape:
        raise EditOpError(
            f"model_vessels: the prediction (volume {op.volume_id}) is on a {'x'.join(map(str, predicted.shape))} "
            f"grid, the labels on {'x'.join(map(str, labels.shape))}: run the model on this study's fill volume"
        )
    region = _box_region(op.box_zyx, labels.shape)
    old = labels[region].copy()
    take = predicted[region] == VESSEL
    if op.only_class is not None:
        take &= old == op.only_class
    labels[region][take] = VESSEL
    return _finish(labels, region, old)


def _no_change() -> OpResult:
    return OpResult(None, 0, dict.fromkeys(ALL_CLASSES, 0))


def _padded(region, pad, shape) -> tuple[slice, slice, slice]:
    return tuple(
        slice(max(0, r.start - p), min(n, r.stop + p)) for r, p, n in zip(region, pad, shape, strict=True)
    )


def _apply_keep_largest(labels, op: KeepLargestOp, spacing):
    region, m = _class_bbox(labels, op.label)
    if region is None:
        return _no_change()
    lab, n = label_components(m)
    if n <= 1:
        return _no_change()
    sizes = component_sizes(lab, n)
    sizes[0] = 0
    keep = int(np.argmax(sizes))
    old = labels[region].copy()
    labels[region][m & (lab != keep)] = UNLABELED
    return _finish(labels, region, old)


def _apply_remove_small(labels, op: RemoveSmallOp, spacing):
    classes = LABELED_CLASSES if op.label is None else (op.label,)
    region = mask_bbox(labels != UNLABELED if op.label is None else labels == op.label)
    if region is None:
        return _no_change()
    voxel_mm3 = float(np.prod(spacing))
    old = labels[region].copy()
    sub = labels[region]
    for c in classes:
        m = old == c
        lab, n = label_components(m)
        if n == 0:
            continue
        small = component_sizes(lab, n) * voxel_mm3 < op.min_volume_mm3
        small[0] = False
        sub[small[lab]] = UNLABELED
    return _finish(labels, region, old)


def _apply_split_island(labels, op: SplitIslandOp, spacing):
    c = int(labels[op.at_zyx])
    if c == UNLABELED:
        raise EditOpError(f"no labeled island at {list(op.at_zyx)} (the voxel is unlabeled)")
    if c == op.to_class:
        raise EditOpError(
            f"the island at {list(op.at_zyx)} is {_class_name(c)} already; choose another class to split it into"
        )
    region, comp = _component_at(lambda reg: labels[reg] == c, labels.shape, op.at_zyx)
    local = mask_bbox(comp)
    target = labels[region][local]
    previous = target.copy()
    changed = comp[local]
    n = int(np.count_nonzero(changed))
    target[changed] = op.to_class
    delta = {**dict.fromkeys(ALL_CLASSES, 0), c: -n, op.to_class: n}
    return OpResult(_global_bbox(region, local), n, delta, previous)


def _reshape_class(labels, label: int, only_class, pad, spacing, new_mask_fn) -> OpResult:
    """Replace class ``label``'s mask inside its bounding box grown by ``pad`` voxels by ``new_mask_fn(mask)``:
    voxels that leave the class become unlabeled, voxels that join take ``label`` (only over ``only_class``)."""
    region, _ = _class_bbox(labels, label)
    if region is None:
        return _no_change()
    region = _padded(region, pad, labels.shape)
    old = labels[region].copy()
    m = old == label
    new = new_mask_fn(m)
    add = new & ~m
    if only_class is not None:
        add &= old == only_class
    sub = labels[region]
    sub[m & ~new] = UNLABELED
    sub[add] = label
    return _finish(labels, region, old)


def _apply_margin(labels, op: MarginOp, spacing):
    half = ball_halfwidths(op.size_mm, spacing)
    if op.mode == "grow":
        return _reshape_class(
            labels,
            op.label,
            op.only_class,
            [h + 1 for h in half],
            spacing,
            lambda m: dilate_mm(m, op.size_mm, spacing),
        )
    return _reshape_class(
        labels, op.label, None, (1, 1, 1), spacing, lambda m: erode_mm(m, op.size_mm, spacing)
    )


_SMOOTHERS = {"median": median_mm, "opening": opening_mm, "closing": closing_mm}


def _apply_smooth(labels, op: SmoothOp, spacing):
    radius = op.kernel_mm / 2
    half = ball_halfwidths(radius, spacing)
    smoother = _SMOOTHERS[op.method]
    return _reshape_class(
        labels,
        op.label,
        op.only_class,
        [2 * h + 1 for h in half],
        spacing,
        lambda m: smoother(m, radius, spacing),
    )


_APPLIERS = {
    KeepLargestOp: _apply_keep_largest,
    RemoveSmallOp: _apply_remove_small,
    SplitIslandOp: _apply_split_island,
    MarginOp: _apply_margin,
    SmoothOp: _apply_smooth,
}


def apply_op(labels: np.ndarray, op: Op | dict, ctx: VolumeContext, *, recorded: bool = False) -> OpResult:
    """Apply one op to ``labels`` (uint8 [z, y, x], modified in place) and summarise the change.

    ``op`` may be a dict (validated with ``parse_op`` against ``labels.shape`` and ``ctx.spacing_mm``) or a
    parsed Op (re-validated the same way). ``recorded``: a dict stored with a draft or label version (see the
    module docstring). Raises EditOpError without modifying ``labels`` on bad input.
    """
    if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.ndim != 3:
        raise EditOpError(
            f"labels must be a uint8 [z, y, x] array, got {getattr(labels, 'dtype', type(labels))} "
            f"{getattr(labels, 'shape', '')}"
        )
    d = op_to_dict(op) if isinstance(op, OP_CLASSES) else op
    parsed = parse_op(d, labels.shape, ctx.spacing_mm, recorded=recorded)
    if isinstance(parsed, BrushOp):
        return _apply_brush(labels, parsed, ctx.spacing_mm)
    if isinstance(parsed, RemoveIslandOp):
        return _apply_remove_island(labels, parsed)
    if isinstance(parsed, KeepConnectedOp):
        return _apply_keep_connected(labels, parsed)
    if isinstance(parsed, ScissorsOp):
        return _apply_scissors(labels, parsed)
    if isinstance(parsed, SetRoiOp):
        return _apply_set_roi(labels, parsed)
    if isinstance(parsed, RelabelOp):
        return _apply_relabel(labels, parsed)
    if isinstance(parsed, BalanceOp):
        return _apply_balance(labels, parsed)
    if type(parsed) in _APPLIERS:
        return _APPLIERS[type(parsed)](labels, parsed, ctx.spacing_mm)
    if isinstance(parsed, ModelVesselsOp):
        return _apply_model_vessels(labels, parsed, ctx)
    return _apply_recipe(labels, parsed, ctx)


def replay(base_labels: np.ndarray, ops, ctx: VolumeContext, *, recorded: bool = True) -> np.ndarray:
    """Apply ``ops`` (dicts or Ops) in order to a copy of ``base_labels``; the base is not modified. The ops are
    taken as recorded (a draft's or label version's ``ops``) unless ``recorded=False``."""
    labels = np.array(base_labels, dtype=np.uint8, copy=True)
    for i, op in enumerate(ops):
        try:
            apply_op(labels, op, ctx, recorded=recorded)
        except EditOpError as e:
            raise EditOpError(f"op #{i}: {e}") from e
    return labels


__all__ = [
    "OP_TYPES",
    "BrushOp",
    "EditOpError",
    "KeepConnectedOp",
    "KeepLargestOp",
    "MarginOp",
    "OpResult",
    "RecipeOp",
    "RelabelOp",
    "RemoveIslandOp",
    "RemoveSmallOp",
    "ScissorsOp",
    "SetRoiOp",
    "SmoothOp",
    "SplitIslandOp",
    "VolumeContext",
    "apply_op",
    "canonical_op",
    "op_to_dict",
    "parse_op",
    "polygon_mask",
    "replay",
]
