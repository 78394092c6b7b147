"""Regions of interest as half-open voxel boxes ``[z0, z1, y0, y1, x0, x1]``: validation against a volume
shape, the bool mask of a union of boxes, the bounding box of a mask (as slices, or grown by a margin in mm).
The one place ROI boxes are read and written; labeling, evaluation and the pipeline command use it.
"""

from __future__ import annotations

import math

import numpy as np

AXES = ("z", "y", "x")


class RoiBoxError(ValueError):
    """A box that is not six integers inside the volume with lo < hi on every axis (the message says which)."""


def parse_box(value, shape_zyx, what: str = "ROI box") -> tuple[int, int, int, int, int, int]:
    """``value`` as a tuple of six ints, checked to lie inside ``shape_zyx`` and to be non-empty on every axis;
    raises RoiBoxError naming ``what`` and the offending axis."""
    if not isinstance(value, list | tuple) or len(value) != 6:
        raise RoiBoxError(f"{what} must be [z0, z1, y0, y1, x0, x1] (half-open), got {value!r}")
    box = []
    for c in value:
        if isinstance(c, bool) or not isinstance(c, int | float | np.integer) or not math.isfinite(c):
            raise RoiBoxError(f"{what} must hold integers, got {value!r}")
        if int(c) != c:
            raise RoiBoxError(f"{what} must hold integers, got {c!r}")
        box.append(int(c))
    for i, (axis, n) in enumerate(zip(AXES, shape_zyx, strict=True)):
        lo, hi = box[2 * i], box[2 * i + 1]
        if not (0 <= lo and hi <= n):
            raise RoiBoxError(f"{what} {box}: {axis} range [{lo}, {hi}) is outside the volume (valid 0..{n})")
        if lo >= hi:
            raise RoiBoxError(f"{what} {box} is empty along {axis} ({lo} >= {hi})")
    return tuple(box)


def box_mask(shape_zyx, boxes_zyx) -> np.ndarray:
    """Bool ``[z, y, x]`` of ``shape_zyx``: the union of the half-open ``boxes_zyx`` (an empty list gives an
    all-False mask)."""
    mask = np.zeros(tuple(int(n) for n in shape_zyx), dtype=bool)
    for z0, z1, y0, y1, x0, x1 in boxes_zyx:
        mask[int(z0) : int(z1), int(y0) : int(y1), int(x0) : int(x1)] = True
    return mask


def mask_bbox(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box slices of the True voxels of a bool [z, y, x] mask, or None if it is empty."""
    za = np.flatnonzero(mask.any(axis=(1, 2)))
    if za.size == 0:
        return None
    sub = mask[za[0] : za[-1] + 1]
    ya = np.flatnonzero(sub.any(axis=(0, 2)))
    xa = np.flatnonzero(sub.any(axis=(0, 1)))
    return slice(za[0], za[-1] + 1), slice(ya[0], ya[-1] + 1), slice(xa[0], xa[-1] + 1)


def box_around(mask: np.ndarray, margin_mm: float, spacing_mm) -> list[int]:
    """Half-open ``[z0, z1, y0, y1, x0, x1]`` bounding box of bool ``mask`` [z, y, x] grown by ``margin_mm`` on
    every side (``spacing_mm`` = (dz, dy, dx)), clipped to the volume; the whole volume when ``mask`` is empty."""
    slices = mask_bbox(mask)
    if slices is None:
        return [0, mask.shape[0], 0, mask.shape[1], 0, mask.shape[2]]
    box = []
    for axis, s in enumerate(slices):
        pad = int(np.ceil(margin_mm / float(spacing_mm[axis])))
        box += [max(0, int(s.start) - pad), min(mask.shape[axis], int(s.stop) + pad)]
    return box
