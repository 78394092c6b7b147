"""Binary morphology in millimetres on anisotropic [z, y, x] grids, for the margin and smoothing edit ops.

The structuring element is the Euclidean ball of ``radius_mm`` in patient space, which on a grid of
``spacing_mm = (dz, dy, dx)`` is an ellipsoid of voxel offsets ``o`` with ``sum((o * spacing)^2) <= r^2``
(``ball_footprint``). Dilation and erosion are computed exactly through Euclidean distance transforms
(``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing_mm``) in slabs of axial slices with a halo of
``floor(r / dz)`` slices, so their cost does not grow with the radius and their memory stays bounded; small balls
(at most ``MAX_RUNS`` rows of voxels) go faster as the union of their x-runs: a 1-D maximum filter per run
width, OR-ed in at each row's (dz, dy) shift (erosion = not the dilation of the complement). The tests
check them against ``scipy.ndimage.binary_dilation``/``binary_erosion`` with ``ball_footprint``. At the volume's
faces the outside does not count as background: erosion does not eat into a mask from the faces
(``border_value=1``), dilation adds nothing outside. ``median_mm`` is the binary median (majority vote) in the
ball, extending the volume by its nearest face voxel (``mode="nearest"``). Pure numpy/scipy; no Django.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

SLAB_VOXELS = 4_000_000  # voxels per distance-transform slab (about 80 MB of scipy's work arrays)
MAX_RUNS = 1500  # balls of at most this many x-runs dilate by shifted 1-D maxima, bigger ones by distance
_TOL = 1e-9


def ball_halfwidths(radius_mm: float, spacing_mm) -> tuple[int, int, int]:
    """Half-widths in voxels (hz, hy, hx) of the ball of ``radius_mm`` on a grid of ``spacing_mm``."""
    return tuple(int(math.floor(radius_mm / float(s) + _TOL)) for s in spacing_mm)


def ball_footprint(radius_mm: float, spacing_mm) -> np.ndarray:
    """Bool [2hz+1, 2hy+1, 2hx+1] footprint: voxel offsets within ``radius_mm`` (mm) of the centre."""
    half = ball_halfwidths(radius_mm, spacing_mm)
    g = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((o * float(s)) ** 2 for o, s in zip(g, spacing_mm, strict=True)) <= radius_mm**2 + _TOL


def _slabs(nz: int, plane: int, halo: int):
    """(z0, z1, lo, hi): core slices [z0, z1) processed with the halo slices [lo, hi)."""
    core = max(1, SLAB_VOXELS // max(1, plane) - 2 * halo)
    for z0 in range(0, nz, core):
        z1 = min(nz, z0 + core)
        yield z0, z1, max(0, z0 - halo), min(nz, z1 + halo)


def _ball_runs(radius_mm: float, spacing_mm) -> list[tuple[int, int, int]]:
    """The ball as x-runs: (dz, dy, w) for each (dz, dy) row of the footprint, covering dx in [-w, w]."""
    foot = ball_footprint(radius_mm, spacing_mm)
    hz, hy, hx = (n // 2 for n in foot.shape)
    widths = foot.sum(axis=2)  # runs are centred and contiguous: width = 2w + 1
    return [
        (iz - hz, iy - hy, int(n) // 2)
        for iz, iy in zip(*np.nonzero(widths), strict=True)
        for n in [widths[iz, iy]]
    ]


def _dilate_by_runs(mask: np.ndarray, runs) -> np.ndarray:
    """Dilation of bool ``mask`` by the union of x-runs (``_ball_runs``): a 1-D maximum filter per run width,
    OR-ed in at each run's (dz, dy) shift. Cost: voxels x rows of the ball (not x its voxels)."""
    nz, ny, _ = mask.shape
    out = np.zeros(mask.shape, dtype=bool)
    src, src_w = None, None
    for dz, dy, w in sorted(runs, key=lambda run: run[2]):
        if w != src_w:  # one filtered array at a time
            src_w = w
            src = (
                mask
                if w == 0
                else ndi.maximum_filter1d(mask.view(np.uint8), 2 * w + 1, axis=2, mode="constant").view(bool)
            )
        z0, z1 = max(0, -dz), min(nz, nz - dz)
        y0, y1 = max(0, -dy), min(ny, ny - dy)
        if z0 < z1 and y0 < y1:
            out[z0 + dz : z1 + dz, y0 + dy : y1 + dy] |= src[z0:z1, y0:y1]
    return out


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing_mm) -> np.ndarray:
    """Bool [z, y, x]: voxels within ``radius_mm`` of a True voxel of the bool [z, y, x] ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    runs = _ball_runs(radius_mm, spacing_mm)
    if len(runs) <= MAX_RUNS:
        return _dilate_by_runs(mask, runs)
    out = np.zeros(mask.shape, dtype=bool)
    halo = ball_halfwidths(radius_mm, spacing_mm)[0]
    plane = mask.shape[1] * mask.shape[2]
    r2 = radius_mm**2 + _TOL
    for z0, z1, lo, hi in _slabs(mask.shape[0], plane, halo):
        sub = mask[lo:hi]
        if not sub.any():
            continue
        d = ndi.distance_transform_edt(~sub, sampling=spacing_mm)[z0 - lo : z1 - lo]
        out[z0:z1] = d * d <= r2
    return out


def erode_mm(mask: np.ndarray, radius_mm: float, spacing_mm, *, border_value: bool = True) -> np.ndarray:
    """Bool [z, y, x]: True voxels of ``mask`` with no False voxel of the volume within ``radius_mm``.

    ``border_value=False`` counts the outside of the volume as False too (scipy's ``border_value=0``): the ball
    reaches outside exactly when a voxel lies within its half-width of a face, so those voxels are removed."""
    out = _erode(np.asarray(mask, dtype=bool), radius_mm, spacing_mm)
    if not border_value:
        for axis, h in enumerate(ball_halfwidths(radius_mm, spacing_mm)):
            if h:
                index = [slice(None)] * 3
                index[axis] = slice(0, h)
                out[tuple(index)] = False
                index[axis] = slice(-h, None)
                out[tuple(index)] = False
    return out


def _erode(mask: np.ndarray, radius_mm: float, spacing_mm) -> np.ndarray:
    runs = _ball_runs(radius_mm, spacing_mm)
    if len(runs) <= MAX_RUNS:  # the ball is symmetric: erosion = not (dilation of the complement)
        return ~_dilate_by_runs(~mask, runs)
    out = np.zeros(mask.shape, dtype=bool)
    halo = ball_halfwidths(radius_mm, spacing_mm)[0]
    plane = mask.shape[1] * mask.shape[2]
    r2 = radius_mm**2 + _TOL
    for z0, z1, lo, hi in _slabs(mask.shape[0], plane, halo):
        sub = mask[lo:hi]
        if not sub.any():
            continue
        if sub.all():
            out[z0:z1] = True
            continue
        d = ndi.distance_transform_edt(sub, sampling=spacing_mm)[z0 - lo : z1 - lo]
        out[z0:z1] = mask[z0:z1] & (d * d > r2)
    return out


def opening_mm(mask: np.ndarray, radius_mm: float, spacing_mm) -> np.ndarray:
    """Erosion then dilation by the ball: removes protrusions and specks thinner than the ball."""
    return dilate_mm(erode_mm(mask, radius_mm, spacing_mm), radius_mm, spacing_mm)


def closing_mm(mask: np.ndarray, radius_mm: float, spacing_mm) -> np.ndarray:
    """Dilation then erosion by the ball: fills holes and gaps narrower than the ball."""
    return erode_mm(dilate_mm(mask, radius_mm, spacing_mm), radius_mm, spacing_mm)


def median_mm(mask: np.ndarray, radius_mm: float, spacing_mm) -> np.ndarray:
    """Binary median in the ball: a voxel is True when more than half of the ball around it is True (the
    volume is extended by its nearest face voxel, scipy's ``mode="nearest"``). The ball's voxels are counted
    as the sum of its x-runs: 1-D box sums from one cumulative sum along x, added at each row's (dz, dy)
    shift. Cost: voxels x rows of the ball."""
    mask = np.asarray(mask, dtype=bool)
    n = int(ball_footprint(radius_mm, spacing_mm).sum())
    hz, hy, hx = ball_halfwidths(radius_mm, spacing_mm)
    nz, ny, nx = mask.shape
    padded = np.pad(mask, ((hz, hz), (hy, hy), (hx, hx)), mode="edge")
    # uint16 sums wrap around consistently: a difference of two is right while a run counts < 2^16 voxels
    cums = np.zeros(padded.shape[:2] + (padded.shape[2] + 1,), dtype=np.uint16)
    np.cumsum(padded, axis=2, dtype=np.uint16, out=cums[..., 1:])
    del padded
    counts = np.zeros(mask.shape, dtype=np.uint16 if n < 2**16 else np.uint32)
    box, box_w = None, None
    for dz, dy, w in sorted(_ball_runs(radius_mm, spacing_mm), key=lambda run: run[2]):
        if w != box_w:  # one box-sum array at a time
            box, box_w = cums[..., hx + w + 1 : hx + w + 1 + nx] - cums[..., hx - w : hx - w + nx], w
        counts += box[hz + dz : hz + dz + nz, hy + dy : hy + dy + ny]
    return counts > n // 2


__all__ = [
    "ball_footprint",
    "ball_halfwidths",
    "closing_mm",
    "dilate_mm",
    "erode_mm",
    "median_mm",
    "opening_mm",
]
