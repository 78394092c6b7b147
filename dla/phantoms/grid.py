"""The phantom's voxel grid, its frame and the argument checks of the generator (internal to ``dla.phantoms``).

Anatomy and vessels are defined in a *template frame*: LPS millimetres divided by the subject's head scale about
``HEAD_CENTER`` (x to patient left, y to posterior, z to superior).  ``Grid`` holds the template-frame
coordinates of the voxel centres of a ``[z, y, x]`` grid, and the distance primitives every rasterizer uses
(ellipsoid normalized radius, distance to a tapered segment) work on boxes of it.  ``grid_frame`` places a grid
of a given shape and spacing (mm, ``(dz, dy, dx)``) so that ``VIEW_CENTER_LPS`` lies at its centre and returns
the 4x4 ``affine_lps`` (voxel ``(x, y, z, 1)`` -> LPS mm).  The checks raise ``PhantomParameterError`` (a
ValueError) naming the bad argument.  Pure numpy.
"""

from __future__ import annotations

import numpy as np

PAPER_SPACING_MM = 0.46
HEAD_FOV_MM = 180.0
FULL_RESOLUTION_MIN_SHAPE = 256
MIN_SHAPE = 8
HEAD_CENTER = np.array([0.0, 2.0, 0.0])  # template frame (x, y, z) mm == LPS at scale 1
VIEW_CENTER_LPS = np.array([0.0, 0.0, -8.0])  # LPS point at the centre of the voxel grid


class PhantomParameterError(ValueError):
    """A make_subject / cohort_plan argument is invalid; the message names the argument."""


class Grid:
    """Voxel-centre coordinates of the grid in the template frame; ``x, y, z`` are 1-D float32 mm arrays.

    shape_zyx: grid size; spacing_zyx: (dz, dy, dx) mm; origin_lps: LPS mm (x, y, z) of voxel (0, 0, 0);
    scale: the subject's head scale (template mm = LPS mm / scale about HEAD_CENTER).
    """

    def __init__(self, shape_zyx, spacing_zyx, origin_lps, scale):
        self.shape = tuple(int(n) for n in shape_zyx)
        self.scale = float(scale)
        sp_xyz = np.asarray(spacing_zyx, dtype=np.float64)[::-1]
        self.origin = HEAD_CENTER + (np.asarray(origin_lps, dtype=np.float64) - HEAD_CENTER) / scale
        self.spacing = sp_xyz / scale  # template mm per voxel, (x, y, z)
        nz, ny, nx = self.shape
        self.x = (self.origin[0] + self.spacing[0] * np.arange(nx)).astype(np.float32)
        self.y = (self.origin[1] + self.spacing[1] * np.arange(ny)).astype(np.float32)
        self.z = (self.origin[2] + self.spacing[2] * np.arange(nz)).astype(np.float32)
        self.voxel_mm = float(np.cbrt(np.prod(self.spacing)))
        self.min_voxel_mm = float(np.min(self.spacing))

    def box(self, lo_xyz, hi_xyz):
        """Index slices ``(sz, sy, sx)`` covering the template-mm box, or None when it misses the grid."""
        lo = np.floor((np.asarray(lo_xyz) - self.origin) / self.spacing).astype(int)
        hi = np.ceil((np.asarray(hi_xyz) - self.origin) / self.spacing).astype(int) + 1
        n = np.array(self.shape[::-1])
        lo = np.clip(lo, 0, n)
        hi = np.clip(hi, 0, n)
        if np.any(hi <= lo):
            return None
        return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))

    def full(self):
        return (slice(None), slice(None), slice(None))

    def coords(self, box):
        """Open-grid coordinates (Z (n,1,1), Y (1,n,1), X (1,1,n)) of a box, float32 template mm."""
        sz, sy, sx = box
        return self.z[sz][:, None, None], self.y[sy][None, :, None], self.x[sx][None, None, :]


def grid_frame(shape_zyx, spacing_mm) -> tuple[np.ndarray, np.ndarray]:
    """(origin_lps (3,) float64 mm of voxel (0, 0, 0) as x, y, z; affine_lps (4, 4) float64) of a grid whose
    centre is ``VIEW_CENTER_LPS``; spacing_mm is (dz, dy, dx)."""
    sp_xyz = np.array(spacing_mm[::-1])
    n_xyz = np.array(shape_zyx[::-1], dtype=np.float64)
    origin_lps = VIEW_CENTER_LPS - (n_xyz - 1) / 2 * sp_xyz
    affine = np.eye(4)
    affine[:3, :3] = np.diag(sp_xyz)
    affine[:3, 3] = origin_lps
    return origin_lps, affine


def ellipsoid_r2(grid: Grid, box, center, semi):
    """Normalized squared radius ((p-c)/semi)^2 summed (center, semi: template mm x/y/z), float32, box shape."""
    z, y, x = grid.coords(box)
    zz = ((z - np.float32(center[2])) / np.float32(semi[2])) ** 2
    yy = ((y - np.float32(center[1])) / np.float32(semi[1])) ** 2
    xx = ((x - np.float32(center[0])) / np.float32(semi[0])) ** 2
    return (zz + yy) + xx


def ellipsoid_box(grid: Grid, center, semi, margin=0.0):
    """Index box of an ellipsoid (template mm) grown by ``margin`` mm, or None off-grid."""
    c = np.asarray(center, dtype=np.float64)
    s = np.asarray(semi, dtype=np.float64) + margin
    return grid.box(c - s, c + s)


def segment_distance(grid: Grid, a, b, ra, rb, margin):
    """Distance (mm) of box voxel centres to segment a-b and the interpolated radius there; None if off-grid.

    a, b: (3,) template mm (x, y, z); ra, rb: radii mm at a and b; margin: mm added around the box.  Returns
    (box, distance float32 [box], radius float32 [box]).
    """
    rmax = max(ra, rb) + margin
    box = grid.box(np.minimum(a, b) - rmax, np.maximum(a, b) + rmax)
    if box is None:
        return None
    z, y, x = grid.coords(box)
    ab = (b - a).astype(np.float32)
    l2 = max(float(ab @ ab), 1e-9)
    dx0, dy0, dz0 = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
    t = (dz0 * (ab[2] / l2) + dy0 * (ab[1] / l2)) + dx0 * (ab[0] / l2)
    np.clip(t, 0.0, 1.0, out=t)
    d2 = (dx0 - t * ab[0]) ** 2
    d2 += (dy0 - t * ab[1]) ** 2
    d2 += (dz0 - t * ab[2]) ** 2
    r = np.float32(ra) + t * np.float32(rb - ra)
    return box, np.sqrt(d2), r


# ----------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------


def default_spacing_mm(shape_zyx) -> tuple[float, float, float]:
    """Isotropic spacing (dz, dy, dx) mm: the paper's 0.46 mm when every axis has >= 256 voxels, else
    ``180 mm / min(shape)`` so the whole head fits the field of view."""
    n = min(int(v) for v in shape_zyx)
    s = PAPER_SPACING_MM if n >= FULL_RESOLUTION_MIN_SHAPE else HEAD_FOV_MM / n
    return (float(s), float(s), float(s))


def check_shape(shape_zyx) -> tuple[int, int, int]:
    """``shape_zyx`` as three ints >= MIN_SHAPE."""
    try:
        shape = tuple(int(v) for v in shape_zyx)
    except (TypeError, ValueError):
        raise PhantomParameterError(f"shape_zyx must be three integers, got {shape_zyx!r}")
    if len(shape) != 3 or any(v < MIN_SHAPE for v in shape):
        raise PhantomParameterError(f"shape_zyx must be three integers >= {MIN_SHAPE}, got {shape_zyx!r}")
    return shape


def check_spacing(spacing_mm, shape) -> tuple[float, float, float]:
    """(dz, dy, dx) mm from None (``default_spacing_mm``), a positive scalar or three positive numbers."""
    if spacing_mm is None:
        return default_spacing_mm(shape)
    try:
        sp = np.atleast_1d(np.asarray(spacing_mm, dtype=np.float64))
    except (TypeError, ValueError):
        raise PhantomParameterError(
            f"spacing_mm must be a positive number or (dz, dy, dx), got {spacing_mm!r}"
        )
    if sp.size == 1:
        sp = np.repeat(sp, 3)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise PhantomParameterError(
            f"spacing_mm must be a positive number or (dz, dy, dx), got {spacing_mm!r}"
        )
    return tuple(float(v) for v in sp)


def check_seed(seed) -> int:
    """A non-negative int seed (bools refused)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise PhantomParameterError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)
