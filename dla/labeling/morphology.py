"""Binary morphology in millimetres on anisotropic [z, y, x] grids, for the margin and smoothing edit ops.

The structuring element is the Euclidean ball of ``radius_mm`` in patient space, which on a grid of
``spacing_mm = (dz, dy, dx)`` is an ellipsoid of voxel offsets ``o`` with ``sum((o * spacing)^2) <= r^2``
(``ball_footprint``). Dilation and erosion are computed exactly through Euclidean distance transforms
(``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing_mm``) in slabs of axial slices with a halo of
``floor(r / dz)`` slices, so their cost does not grow with the radius and their memory stays bounded; the tests
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


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing_mm) -> np.ndarray:
    """Bool [z, y, x]: voxels within ``radius_mm`` of a True voxel of the bool [z, y, x] ``mask``."""
    mask = np.asarray(mask, dtype=bool)
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


def erode_mm(mask: np.ndarray, radius_mm: float, spacing_mm) -> np.ndarray:
    """Bool [z, y, x]: True voxels of ``mask`` with no False voxel of the volume within ``radius_mm``."""
    mask = np.asarray(mask, dtype=bool)
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
    volume is extended by its nearest face voxel). Cost: voxels x ball voxels."""
    mask = np.asarray(mask, dtype=bool)
    foot = ball_footprint(radius_mm, spacing_mm)
    n = int(foot.sum())
    dtype = np.uint16 if n < 2**16 else np.uint32
    counts = ndi.correlate(mask.astype(dtype), foot.astype(dtype), mode="nearest")
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
