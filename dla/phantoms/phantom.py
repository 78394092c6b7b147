"""Synthetic head cone-beam CT angiography phantoms with ground-truth tissue labels (pure numpy/scipy).

``make_subject`` builds one subject: a contrast-enhanced "fill" volume, a non-contrast "mask" volume (acquired
with an optional random rigid inter-sweep motion), their subtraction (a 3D-DSA-like volume that shows residual
bone edges when the patient moved), a voxel truth map (classes from ``dla.classes``) and masks naming the
anatomical locations where the paper reports residual errors (otic capsule, nasal cavity/sinuses, skull base,
vault).  The anatomy is analytic (ellipsoids, shells, tilted plates, tubes) and randomized per subject; the vessel
tree (ICA with carotid siphon through the skull base next to the otic capsules, MCA, ACA, vertebral, basilar,
PCA and random distal branches) is rasterized from polyline centerlines with tapering radii.  Only the injected
territory is opacified: ``"ica"`` opacifies the ipsilateral ICA/MCA/ACA (one side), ``"vertebral"`` both vertebral
arteries, the basilar and both PCAs; non-opacified lumens are blood (~40 HU) and labelled soft tissue.  Image
physics: partial-volume occupancy of vessels, gaussian blur, radial streaks through dense bone/metal and
independent gaussian noise per acquisition.  ``cohort_plan`` draws the paper's cohort (35 train / 8 validation /
62 test; 89 ICA / 16 vertebral injections).  Arrays are ``[z, y, x]``; ``affine_lps`` maps ``(x, y, z, 1)``
voxel indices to patient LPS millimetres (x to patient left, y to posterior, z to superior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL

PAPER_SPACING_MM = 0.46
HEAD_FOV_MM = 180.0
FULL_RESOLUTION_MIN_SHAPE = 256
MIN_SHAPE = 8
HU_CLIP = (-1024, 3071)  # stored fill/mask range (12-bit CT convention)
AIR_HU = -1000.0

# Per-subject HU values are drawn uniformly from these ranges (documented, also echoed in ``params``).
HU_RANGES: dict[str, tuple[float, float]] = {
    "soft_tissue_hu": (35.0, 50.0),
    "brain_hu": (30.0, 40.0),
    "white_matter_drop_hu": (4.0, 8.0),
    "csf_hu": (2.0, 15.0),
    "blood_hu": (35.0, 50.0),
    "cortical_bone_hu": (1200.0, 1800.0),
    "diploe_hu": (400.0, 700.0),
    "skull_base_hu": (600.0, 900.0),
    "petrous_hu": (1100.0, 1500.0),
    "otic_capsule_hu": (1800.0, 2200.0),
    "sinus_wall_hu": (500.0, 900.0),
    "vertebra_cortical_hu": (800.0, 1100.0),
    "vertebra_cancellous_hu": (250.0, 400.0),
    "contrast_hu": (1100.0, 2000.0),  # undiluted lumen of large vessels (before partial volume); keeps
    # blurred mid-size vessels above the paper's 500-700 HU thresholds while overlapping cortical bone HU
    "metal_hu": (2900.0, 3071.0),
    "noise_sigma_hu": (10.0, 30.0),
    "otic_streak_hu": (40.0, 100.0),
    "metal_streak_hu": (400.0, 900.0),
}
BLUR_SIGMA_VOXELS = (0.5, 0.8)
MOTION_MAX_ROTATION_DEG = 1.5
MOTION_MAX_TRANSLATION_MM = 1.5
MOTION_PROBABILITY = 0.4
ICA_INJECTION_PROBABILITY = 89 / 105
ANEURYSM_PROBABILITY = 0.3
COIL_PROBABILITY_GIVEN_ANEURYSM = 0.3
ANEURYSM_SITES = ("mca_left", "mca_right", "aca_left", "aca_right")
TERRITORIES = ("anterior_left", "anterior_right", "posterior")
REGION_NAMES = (
    "otic_capsule",
    "nasal_cavity",
    "skull_base",
    "vault",
    "vessels_anterior_left",
    "vessels_anterior_right",
    "vessels_posterior",
    "aneurysm",
    "metal",
)

HEAD_CENTER = np.array([0.0, 2.0, 0.0])  # template frame (x, y, z) mm == LPS at scale 1
VIEW_CENTER_LPS = np.array([0.0, 0.0, -8.0])  # LPS point at the centre of the voxel grid
MIN_VESSEL_RADIUS_MM = 0.25
UNRESOLVED_RADIUS_VOXELS = (
    0.3  # vessels thinner than this (radius, in voxels) are omitted from image and truth
)


class PhantomParameterError(ValueError):
    """A make_subject / cohort_plan argument is invalid; the message names the argument."""


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


# ----------------------------------------------------------------------------------------------------------
# Grid helpers (template frame: LPS mm divided by the subject's head scale about HEAD_CENTER)
# ----------------------------------------------------------------------------------------------------------


class _Grid:
    """Voxel-centre coordinates of the grid in the template frame; ``x, y, z`` are 1-D float32 mm arrays."""

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
        """Open-grid coordinates (Z (n,1,1), Y (1,n,1), X (1,1,n)) of a box."""
        sz, sy, sx = box
        return self.z[sz][:, None, None], self.y[sy][None, :, None], self.x[sx][None, None, :]


def _ellipsoid_r2(grid, box, center, semi):
    """Normalized squared radius ((p-c)/semi)^2 summed, float32 array of the box shape."""
    z, y, x = grid.coords(box)
    zz = ((z - np.float32(center[2])) / np.float32(semi[2])) ** 2
    yy = ((y - np.float32(center[1])) / np.float32(semi[1])) ** 2
    xx = ((x - np.float32(center[0])) / np.float32(semi[0])) ** 2
    return (zz + yy) + xx


def _ellipsoid_box(grid, center, semi, margin=0.0):
    c = np.asarray(center, dtype=np.float64)
    s = np.asarray(semi, dtype=np.float64) + margin
    return grid.box(c - s, c + s)


# ----------------------------------------------------------------------------------------------------------
# Anatomy parameters
# ----------------------------------------------------------------------------------------------------------


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _sample_anatomy(rng) -> dict[str, Any]:
    """All random anatomy numbers of a subject (template frame mm, HU)."""
    a: dict[str, Any] = {}
    a["head_scale"] = _u(rng, 0.93, 1.03)
    for key, (lo, hi) in HU_RANGES.items():
        a[key] = _u(rng, lo, hi)
    a["skin_semi_mm"] = [74.0 * _u(rng, 0.97, 1.03), 88.0 * _u(rng, 0.97, 1.02), 82.0]
    a["scalp_mm"] = _u(rng, 4.0, 6.0)
    a["skull_thickness_mm"] = _u(rng, 5.0, 7.0)
    a["skull_thickness_coeffs"] = [
        _u(rng, 1.5, 3.0),  # lateral (temporal squama) thinning, * qx^2
        _u(rng, -0.8, 0.8),  # left/right asymmetry, * qx
        _u(rng, -1.0, 1.0),  # anterior/posterior, * qy
        _u(rng, 0.5, 1.5),  # frontal/occipital thickening, * qy^2
        _u(rng, -0.8, 0.8),  # vertical, * qz
    ]
    a["outer_table_mm"] = _u(rng, 1.5, 2.0)
    a["inner_table_mm"] = _u(rng, 1.0, 1.5)
    a["csf_rim_mm"] = _u(rng, 1.0, 2.5)
    a["skull_base_z0_mm"] = _u(rng, -24.0, -20.0)
    a["skull_base_slope"] = _u(rng, -0.22, -0.15)
    a["skull_base_droop_mm"] = _u(rng, 4.0, 8.0)
    a["skull_base_thickness_mm"] = _u(rng, 6.0, 10.0)
    a["foramen_magnum_radius_mm"] = _u(rng, 13.0, 16.0)
    a["otic_radius_mm"] = _u(rng, 3.5, 4.5)
    a["sinus_scale"] = [_u(rng, 0.85, 1.15) for _ in range(4)]
    a["sinus_wall_mm"] = _u(rng, 0.8, 1.5)
    a["mandible"] = bool(rng.uniform() < 0.85)
    a["mandible_radius_mm"] = _u(rng, 4.5, 6.0)
    a["ventricle_scale"] = _u(rng, 0.7, 1.3)
    return a


def _skull_semi(a):
    return np.array(a["skin_semi_mm"]) - a["scalp_mm"]


def _plate_z(a, x, y):
    """Top surface z (template mm) of the skull-base plate at (x, y); works on numpy arrays (broadcasting)."""
    ax = _skull_semi(a)[0]
    droop = a["skull_base_droop_mm"] * (x / ax) ** 2 * np.exp(-((y / 35.0) ** 2))
    return a["skull_base_z0_mm"] + a["skull_base_slope"] * y - droop


def _sinus_geometry(a):
    """(center, semi) of nasal cavity, maxillary sinuses and sphenoid sinus (template mm)."""
    sc = a["sinus_scale"]
    tb = a["skull_base_thickness_mm"]
    out = [
        ((0.0, -55.0, -42.0), np.array([11.0, 20.0, 20.0]) * sc[0]),
        ((25.0, -50.0, -48.0), np.array([11.0, 14.0, 13.0]) * sc[1]),
        ((-25.0, -50.0, -48.0), np.array([11.0, 14.0, 13.0]) * sc[2]),
    ]
    zs = float(_plate_z(a, 0.0, -24.0)) - tb - 3.0
    out.append(((0.0, -24.0, zs), np.array([10.0, 8.0, 7.0]) * sc[3]))
    return out


def _otic_geometry(a):
    """Per side (sgn=+1 patient left, -1 right): petrous ridge (center, axis unit xy, semi) and otic centre."""
    tb = a["skull_base_thickness_mm"]
    out = []
    for sgn in (1.0, -1.0):
        cx, cy = 28.0 * sgn, 14.0
        cz = float(_plate_z(a, cx, cy)) - tb / 2 + 2.0
        axis = np.array([-sgn, -1.0]) / math.sqrt(2.0)
        otic = np.array([33.0 * sgn, 17.0, cz + 1.0])
        out.append({"center": np.array([cx, cy, cz]), "axis": axis, "semi": (20.0, 7.0, 7.5), "otic": otic})
    return out


# ----------------------------------------------------------------------------------------------------------
# Anatomy rasterization (static = no contrast)
# ----------------------------------------------------------------------------------------------------------


def _build_anatomy(grid: _Grid, a: dict[str, Any]):
    """Static (non-contrast) HU volume float32, truth uint8 and region masks for the anatomy without vessels."""
    shape = grid.shape
    static = np.full(shape, AIR_HU, dtype=np.float32)
    truth = np.zeros(shape, dtype=np.uint8)
    full = grid.full()
    Z, Y, X = grid.coords(full)
    vox = grid.voxel_mm

    # Body: head ellipsoid + face ellipsoid + neck cylinder.
    skin_semi = np.array(a["skin_semi_mm"])
    body = _ellipsoid_r2(grid, full, HEAD_CENTER, skin_semi) < 1.0
    body |= _ellipsoid_r2(grid, full, (0.0, -10.0, -55.0), (58.0, 72.0, 45.0)) < 1.0
    neck2d = ((X[0] / 50.0) ** 2 + ((Y[0] - 15.0) / 52.0) ** 2) < 1.0  # (ny, nx)
    zneck = grid.z < -55.0
    if zneck.any():
        body[zneck] |= neck2d[None]
    static[body] = a["soft_tissue_hu"]
    truth[body] = SOFT_TISSUE
    del body

    # Skull vault shell of varying thickness, skull-base plate, cranial cavity.
    skull_semi = _skull_semi(a)
    a_mean = float(np.mean(skull_semi))
    r2 = _ellipsoid_r2(grid, full, HEAD_CENTER, skull_semi)
    inside_skull = r2 < 1.0
    depth = np.sqrt(r2)
    np.subtract(1.0, depth, out=depth)
    depth *= np.float32(a_mean)  # mm below the outer skull surface (negative outside)
    c = a["skull_thickness_coeffs"]
    qx = (grid.x - HEAD_CENTER[0]) / skull_semi[0]
    qy = (grid.y - HEAD_CENTER[1]) / skull_semi[1]
    qz = (grid.z - HEAD_CENTER[2]) / skull_semi[2]
    fx = (-c[0] * qx**2 + c[1] * qx).astype(np.float32)
    fy = (c[2] * qy + c[3] * qy**2).astype(np.float32)
    fz = (c[4] * qz + a["skull_thickness_mm"]).astype(np.float32)
    thick = (fz[:, None, None] + fy[None, :, None]) + fx[None, None, :]
    np.clip(thick, 2.5, 11.0, out=thick)

    zp2d = _plate_z(a, X[0], Y[0]).astype(np.float32)  # (ny, nx) plate top
    zrel = Z - zp2d[None]  # mm above the plate top
    tb = np.float32(a["skull_base_thickness_mm"])
    above_base_bottom = zrel > -tb

    vault = inside_skull & (depth < thick) & above_base_bottom
    cortical = vault & ((depth < a["outer_table_mm"]) | (depth > thick - a["inner_table_mm"]))
    static[vault] = a["diploe_hu"]
    static[cortical] = a["cortical_bone_hu"]
    truth[vault] = BONE
    del cortical

    cavity = inside_skull & (depth >= thick) & (zrel > 0)
    static[cavity] = a["brain_hu"]
    white = cavity & (r2 < 0.45)
    static[white] = a["brain_hu"] - a["white_matter_drop_hu"]
    del white
    rim = cavity & (depth < thick + a["csf_rim_mm"])
    static[rim] = a["csf_hu"]
    del rim
    vs = a["ventricle_scale"]
    for sgn in (1.0, -1.0):
        vc, vsemi = (8.0 * sgn, -2.0, 14.0), (5.0 * vs, 24.0, 7.0 * vs)
        box = _ellipsoid_box(grid, vc, vsemi)
        if box is not None:
            m = (_ellipsoid_r2(grid, box, vc, vsemi) < 1.0) & cavity[box]
            static[box][m] = a["csf_hu"]

    foramen2d = (X[0] ** 2 + (Y[0] - 35.0) ** 2) < a["foramen_magnum_radius_mm"] ** 2
    plate = inside_skull & (zrel <= 0) & above_base_bottom & ~foramen2d[None]
    static[plate] = a["skull_base_hu"]
    plate_cortex = plate & ((zrel > -a["outer_table_mm"]) | (zrel < -tb + a["outer_table_mm"]))
    static[plate_cortex] = a["cortical_bone_hu"]
    truth[plate] = BONE
    del plate_cortex

    regions: dict[str, np.ndarray] = {}
    near_skull = r2 < (1.0 + 3.0 / a_mean) ** 2
    regions["skull_base"] = near_skull & (zrel > -tb - 3.0) & (zrel < 3.0)
    regions["vault"] = near_skull & (depth < thick + 3.0) & (zrel >= 3.0)
    del near_skull, depth, thick, cavity, plate, above_base_bottom

    # Petrous ridges with the dense otic capsules.
    streak_sources = []
    otic_region = np.zeros(shape, dtype=bool)
    for side in _otic_geometry(a):
        cen, axis, semi = side["center"], side["axis"], side["semi"]
        box = grid.box(cen - semi[0], cen + semi[0])
        if box is not None:
            z, y, x = grid.coords(box)
            along = (x - cen[0]) * axis[0] + (y - cen[1]) * axis[1]
            across = -(x - cen[0]) * axis[1] + (y - cen[1]) * axis[0]
            rr = (along / semi[0]) ** 2 + (across / semi[1]) ** 2 + ((z - cen[2]) / semi[2]) ** 2
            m = rr < 1.0
            static[box][m] = a["petrous_hu"]
            truth[box][m] = BONE
            regions["skull_base"][box] |= rr < 1.3
        oc, orad = side["otic"], a["otic_radius_mm"]
        box = _ellipsoid_box(grid, oc, (orad, orad, orad), margin=3.0)
        if box is not None:
            rr = _ellipsoid_r2(grid, box, oc, (orad, orad, orad))
            m = rr < 1.0
            static[box][m] = a["otic_capsule_hu"]
            truth[box][m] = BONE
            otic_region[box] |= rr < ((orad + 3.0) / orad) ** 2
        streak_sources.append(
            {"center": oc, "kind": "otic", "amp_hu": a["otic_streak_hu"], "radius_mm": orad}
        )
    regions["otic_capsule"] = otic_region

    # Nasal cavity and paranasal sinuses: air pockets with thin bony walls (walls first, then all air).
    wall = max(a["sinus_wall_mm"], vox)
    nasal_region = np.zeros(shape, dtype=bool)
    sinuses = _sinus_geometry(a)
    air_parts = []
    for cen, semi in sinuses:
        box = _ellipsoid_box(grid, cen, semi, margin=wall + 2.5)
        if box is None:
            continue
        rr = _ellipsoid_r2(grid, box, cen, semi)
        lim = (1.0 + wall / float(np.min(semi))) ** 2
        m = (rr >= 1.0) & (rr < lim)
        static[box][m] = a["sinus_wall_hu"]
        truth[box][m] = BONE
        nasal_region[box] |= rr < (1.0 + (wall + 2.0) / float(np.min(semi))) ** 2
        air_parts.append((box, rr < 1.0))
    for box, m in air_parts:
        static[box][m] = AIR_HU
        truth[box][m] = UNLABELED
    cen, semi = sinuses[0]
    box = _ellipsoid_box(grid, cen, semi)
    if box is not None:  # nasal septum
        z, y, x = grid.coords(box)
        m = (_ellipsoid_r2(grid, box, cen, semi) < 1.0) & (np.abs(x) < max(0.5, 0.5 * vox))
        m &= z > cen[2] - 0.8 * semi[2]
        static[box][m] = a["sinus_wall_hu"]
        truth[box][m] = BONE
    regions["nasal_cavity"] = nasal_region

    # Cervical vertebral bodies below the foramen magnum.
    top = float(_plate_z(a, 0.0, 18.0)) - a["skull_base_thickness_mm"] - 8.0
    box = grid.box((-10.0, 8.0, -1e4), (10.0, 28.0, top))
    if box is not None:
        z, y, x = grid.coords(box)
        e2 = (x / 10.0) ** 2 + ((y - 18.0) / 8.5) ** 2  # (1, ny, nx)
        phase = np.mod(top - z, 16.0)  # (nz, 1, 1)
        body = (e2 < 1.0) & (phase < 13.0)
        shell = body & ((e2 > (1.0 - 1.5 / 8.5) ** 2) | (phase < 1.2) | (phase > 11.8))
        static[box][body] = a["vertebra_cancellous_hu"]
        static[box][shell] = a["vertebra_cortical_hu"]
        truth[box][body] = BONE

    # Mandible: a U-shaped bony tube with cortical rim.
    if a["mandible"]:
        half = np.array([[48, 6, -30], [47, 0, -50], [45, -6, -70], [34, -34, -78], [18, -52, -80]], float)
        pts = np.vstack([half, [[0.0, -58.0, -81.0]], (half * [-1, 1, 1])[::-1]])
        pts = _catmull_rom(pts, 6)
        rad = np.full(len(pts), a["mandible_radius_mm"])
        for p0, p1, r0, r1 in zip(pts[:-1], pts[1:], rad[:-1], rad[1:], strict=True):
            seg = _segment_distance(grid, p0, p1, r0, r1, margin=vox)
            if seg is None:
                continue
            box, d, r = seg
            m = d <= r
            cort = m & (d > r - 1.8)
            static[box][m] = a["diploe_hu"]
            static[box][cort] = a["cortical_bone_hu"]
            truth[box][m] = BONE

    return static, truth, regions, streak_sources


# ----------------------------------------------------------------------------------------------------------
# Vessels
# ----------------------------------------------------------------------------------------------------------


def _catmull_rom(ctrl, n_sub):
    """Dense smooth polyline (M, 3) through control points (N, 3), ``n_sub`` samples per span."""
    ctrl = np.asarray(ctrl, dtype=np.float64)
    if len(ctrl) < 3:
        t = np.linspace(0.0, 1.0, n_sub + 1)[:, None]
        return ctrl[0] + t * (ctrl[-1] - ctrl[0])
    p = np.vstack([2 * ctrl[0] - ctrl[1], ctrl, 2 * ctrl[-1] - ctrl[-2]])
    t = np.linspace(0.0, 1.0, n_sub, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3
            )
        )
    out.append(ctrl[-1:])
    return np.vstack(out)


def _resample(points, radii, step_mm):
    """Polyline resampled at (about) uniform arc-length ``step_mm``; returns points (M, 3), radii (M,)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total = s[-1]
    n = max(1, int(math.ceil(total / step_mm)))
    st = np.linspace(0.0, total, n + 1)
    out = np.stack([np.interp(st, s, points[:, k]) for k in range(3)], axis=1)
    return out, np.interp(st, s, radii)


def _segment_distance(grid, a, b, ra, rb, margin):
    """Distance (mm) of box voxel centres to segment a-b and the interpolated radius there; None if off-grid."""
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


class _VesselCanvas:
    """Accumulates vessel lumens: all-lumen occupancy, contrast excess (HU), truth and territory masks."""

    def __init__(self, grid: _Grid):
        self.grid = grid
        shape = grid.shape
        self.lumen_occ = np.zeros(shape, dtype=np.float32)
        self.contrast = np.zeros(shape, dtype=np.float32)
        self.opacified = np.zeros(shape, dtype=bool)
        self.lumen = np.zeros(shape, dtype=bool)
        self.territory = {t: np.zeros(shape, dtype=bool) for t in TERRITORIES}
        self.aneurysm = np.zeros(shape, dtype=bool)
        self.vox = grid.voxel_mm
        self.step = float(np.clip(1.5 * self.vox, 1.0, 4.0))
        self.n_segments = 0

    def _pv(self, r):
        return np.minimum(1.0, (math.pi / self.vox**2) * r * r)

    def _occupancy(self, d, r):
        occ = (r - d) * np.float32(1.0 / self.vox) + np.float32(0.5)
        np.clip(occ, 0.0, 1.0, out=occ)
        occ *= self._pv(r)
        return occ

    def _paint(self, box, occ, inside, territory, excess_hu, extra_mask=None):
        np.maximum(self.lumen_occ[box], occ, out=self.lumen_occ[box])
        self.lumen[box] |= inside
        self.territory[territory][box] |= inside
        if extra_mask is not None:
            extra_mask[box] |= inside
        if excess_hu > 0:
            np.maximum(self.contrast[box], occ * np.float32(excess_hu), out=self.contrast[box])
            self.opacified[box] |= inside

    def add_polyline(self, points, radii, territory, excess_hu):
        """Rasterize a centerline (template mm, (N, 3) x/y/z) with radii (N,) mm.

        Radii >= half a voxel: voxels whose centre is within the radius (anti-aliased occupancy for the image).
        Thinner: only the voxels the centreline passes through, with the partial-volume fraction pi r^2 / voxel^2.
        Parts thinner than ``UNRESOLVED_RADIUS_VOXELS`` voxel are below the resolution: left out of image and truth.
        """
        cut = UNRESOLVED_RADIUS_VOXELS * self.grid.min_voxel_mm
        if float(np.max(radii)) < cut:
            return
        thin = 0.5 * self.grid.min_voxel_mm  # below this radius only the centreline voxels are lumen
        if float(np.max(radii)) >= thin:
            pts, rad = _resample(points, radii, self.step)
            for i in range(len(pts) - 1):
                if max(rad[i], rad[i + 1]) < thin:
                    continue
                seg = _segment_distance(self.grid, pts[i], pts[i + 1], rad[i], rad[i + 1], self.vox)
                if seg is None:
                    continue
                box, d, r = seg
                self._paint(box, self._occupancy(d, r), d <= r, territory, excess_hu)
                self.n_segments += 1
        # Keep at least the centreline voxel of sub-voxel vessels.
        fine, frad = _resample(points, radii, 0.4 * self.grid.min_voxel_mm)
        idx = np.rint((fine - self.grid.origin) / self.grid.spacing).astype(np.int64)
        n = np.array(self.grid.shape[::-1])
        ok = np.all((idx >= 0) & (idx < n), axis=1) & (frad >= cut)
        if not ok.any():
            return
        ix, iy, iz = idx[ok].T
        flat = np.ravel_multi_index((iz, iy, ix), self.grid.shape)
        pv = self._pv(frad[ok]).astype(np.float32)
        np.maximum.at(self.lumen_occ.reshape(-1), flat, pv)
        self.lumen.reshape(-1)[flat] = True
        self.territory[territory].reshape(-1)[flat] = True
        if excess_hu > 0:
            np.maximum.at(self.contrast.reshape(-1), flat, pv * np.float32(excess_hu))
            self.opacified.reshape(-1)[flat] = True

    def add_sphere(self, center, radius, territory, excess_hu):
        c = np.asarray(center, dtype=np.float64)
        box = self.grid.box(c - radius - self.vox, c + radius + self.vox)
        if box is None:
            return
        z, y, x = self.grid.coords(box)
        d = np.sqrt((x - np.float32(c[0])) ** 2 + (y - np.float32(c[1])) ** 2 + (z - np.float32(c[2])) ** 2)
        r = np.full(d.shape, radius, dtype=np.float32)
        inside = d <= radius
        if not inside.any():  # keep the nearest voxel of a sub-voxel sphere
            inside = d <= d.min()
        self._paint(box, self._occupancy(d, r), inside, territory, excess_hu, extra_mask=self.aneurysm)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    n = math.sqrt(float(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))
    return v / max(n, 1e-12)


def _funit(v):
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    n = n if n > 1e-12 else 1e-12
    return (v[0] / n, v[1] / n, v[2] / n)


class _RandomBuffer:
    """Uniform/normal draws served from pre-generated blocks of ``rng`` (cheap per call, deterministic)."""

    def __init__(self, rng, block=8192):
        self.rng, self.block = rng, block
        self.u, self.g = [], []

    def uniform(self, lo, hi):
        if not self.u:
            self.u = self.rng.random(self.block).tolist()[::-1]
        return lo + (hi - lo) * self.u.pop()

    def normal(self):
        if not self.g:
            self.g = self.rng.standard_normal(self.block).tolist()[::-1]
        return self.g.pop()


def _vessel_tree(rng, a) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Centerlines of the cerebral arteries (template mm, x/y/z) and named landmark points."""
    tb = a["skull_base_thickness_mm"]
    skull_semi = _skull_semi(a)
    a_mean = float(np.mean(skull_semi))
    vessels: list[dict[str, Any]] = []
    marks: dict[str, np.ndarray] = {}

    def zp(x, y):
        return float(_plate_z(a, x, y))

    def jit(pts, sd=1.2, fixed_first=True):
        pts = np.asarray(pts, dtype=np.float64)
        noise = rng.normal(0.0, sd, size=pts.shape)
        if fixed_first:
            noise[0] = 0.0
        return pts + noise

    def add(name, territory, ctrl, r_ctrl, factor=1.0, depth=0, smooth=True):
        ctrl = np.asarray(ctrl, dtype=np.float64)
        if smooth:
            pts = _catmull_rom(ctrl, 8)
            u = np.linspace(0.0, len(ctrl) - 1, len(pts))
            rad = np.interp(u, np.linspace(0.0, len(ctrl) - 1, len(r_ctrl)), r_ctrl)
        else:  # linear taper from r_ctrl[0] to r_ctrl[-1]
            pts = ctrl
            rad = np.linspace(r_ctrl[0], r_ctrl[-1], len(pts))
        vessels.append(
            {
                "name": name,
                "territory": territory,
                "points": pts,
                "radii": rad,
                "factor": factor,
                "depth": depth,
            }
        )
        return pts

    # Random distal branches: pure-Python float math with buffered random numbers (fast, deterministic).
    buf = _RandomBuffer(rng)
    hcx, hcy, hcz = (float(v) for v in HEAD_CENTER)
    sx, sy, sz = (float(v) for v in skull_semi)
    lim2 = (1.0 - 9.0 / a_mean) ** 2
    z0, slope, droop = a["skull_base_z0_mm"], a["skull_base_slope"], a["skull_base_droop_mm"]

    def in_brain(p):
        x, y, z = p
        if ((x - hcx) / sx) ** 2 + ((y - hcy) / sy) ** 2 + ((z - hcz) / sz) ** 2 >= lim2:
            return False
        return z > z0 + slope * y - droop * (x / sx) ** 2 * math.exp(-((y / 35.0) ** 2)) + 3.0

    def perp(d):
        gx, gy, gz = buf.normal(), buf.normal(), buf.normal()
        dot = gx * d[0] + gy * d[1] + gz * d[2]
        return _funit((gx - dot * d[0], gy - dot * d[1], gz - dot * d[2]))

    def rot(v, k, ang):  # Rodrigues, k a unit vector perpendicular to v
        c, s_ = math.cos(ang), math.sin(ang)
        cx_, cy_, cz_ = k[1] * v[2] - k[2] * v[1], k[2] * v[0] - k[0] * v[2], k[0] * v[1] - k[1] * v[0]
        return _funit((v[0] * c + cx_ * s_, v[1] * c + cy_ * s_, v[2] * c + cz_ * s_))

    def grow(root, direction, radius, territory, factor, depth, name):
        """Random cortical branch: a wiggly polyline, two end children and sometimes a side branch."""
        if radius < MIN_VESSEL_RADIUS_MM or depth > 8:
            return
        d = _funit(tuple(float(v) for v in direction))
        length = buf.uniform(10.0, 18.0) * min(max(radius / 0.8, 0.5), 1.4)
        step = length / 5
        pts = [tuple(float(v) for v in root)]
        for _ in range(5):
            d = rot(d, perp(d), math.radians(buf.uniform(0.0, 15.0)))
            p = pts[-1]
            nxt = (p[0] + d[0] * step, p[1] + d[1] * step, p[2] + d[2] * step)
            if not in_brain(nxt):  # near the cortex: turn tangential to the skull and slightly inward
                n = _funit(((p[0] - hcx) / sx**2, (p[1] - hcy) / sy**2, (p[2] - hcz) / sz**2))
                dn = d[0] * n[0] + d[1] * n[1] + d[2] * n[2] + 0.35
                d = _funit((d[0] - dn * n[0], d[1] - dn * n[1], d[2] - dn * n[2]))
                nxt = (p[0] + d[0] * step, p[1] + d[1] * step, p[2] + d[2] * step)
                if not in_brain(nxt):
                    break
            pts.append(nxt)
        if len(pts) < 2:
            return
        r_end = radius * 0.9
        add(name, territory, pts, [radius, r_end], factor, depth, smooth=False)
        for sign in (1.0, -1.0):
            child_r = r_end * buf.uniform(0.74, 0.88)
            child_d = rot(d, perp(d), sign * math.radians(buf.uniform(20.0, 45.0)))
            grow(pts[-1], child_d, child_r, territory, factor * 0.97, depth + 1, name)
        if len(pts) > 3 and buf.uniform(0.0, 1.0) < 0.6:
            side_d = rot(d, perp(d), math.radians(buf.uniform(40.0, 80.0)))
            grow(
                pts[len(pts) // 2],
                side_d,
                radius * buf.uniform(0.5, 0.7),
                territory,
                factor * 0.97,
                depth + 1,
                name,
            )

    def sprout(pts, territory, factor, name, every_mm=12.0, r_range=(0.55, 0.8)):
        """Cortical/perforating branches every ``every_mm`` along a trunk, heading away from the head centre."""
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        for st in np.arange(every_mm * rng.uniform(0.5, 1.0), s[-1] - 2.0, every_mm):
            i = int(np.searchsorted(s, st))
            p = pts[min(i, len(pts) - 1)]
            tangent = _unit(pts[min(i + 1, len(pts) - 1)] - pts[max(i - 1, 0)])
            away = _unit(p - (HEAD_CENTER + [0, 0, 10.0]))
            d = _unit(away - (away @ tangent) * tangent + 0.3 * rng.normal(size=3))
            grow(p, d, rng.uniform(*r_range), territory, factor, 2, name)

    big = rng.uniform(0.9, 1.1)
    for sgn, side in ((1.0, "left"), (-1.0, "right")):
        terr = f"anterior_{side}"
        f_side = rng.uniform(0.9, 1.05)
        # ICA: cervical -> carotid canal (vertical then petrous, inside the skull-base plate, next to the otic
        # capsule) -> cavernous -> siphon genu -> supraclinoid -> terminus.
        cx, cy = 27.0 * sgn, 12.0
        z_mid = zp(cx, cy) - tb / 2
        ica = [
            (22 * sgn, 14, -115),
            (23 * sgn, 15, -75),
            (cx, 13, zp(cx, 13) - tb - 5),
            (cx, cy, z_mid),
            (22 * sgn, 2, zp(22 * sgn, 2) - tb / 2),
            (17 * sgn, -6, zp(17 * sgn, -6) - tb / 2 + 1),
            (15 * sgn, -12, zp(15 * sgn, -12) + 3),
            (15 * sgn, -20, zp(15 * sgn, -20) + 4),
            (14 * sgn, -27, zp(14 * sgn, -27) + 9),
            (13 * sgn, -22, zp(13 * sgn, -22) + 15),
            (13 * sgn, -14, zp(13 * sgn, -14) + 17),
        ]
        ica = jit(ica, sd=0.7)
        pts = add(
            f"ica_{side}",
            terr,
            ica,
            np.array([2.6, 2.5, 2.4, 2.3, 2.2, 2.1, 2.1, 2.0, 2.0, 1.9, 1.8]) * big,
            f_side,
        )
        t_end = pts[-1]
        marks[f"ica_terminus_{side}"] = t_end
        marks[f"ica_canal_{side}"] = ica[3]
        zt = t_end[2]
        # MCA M1 -> bifurcation -> two M2 trunks -> random distal branches.
        m1 = jit([t_end, (22 * sgn, -13, zt + 1), (32 * sgn, -10, zt + 2), (42 * sgn, -6, zt + 4)])
        pts = add(f"mca_{side}", terr, m1, np.array([1.5, 1.45, 1.35, 1.25]) * big, f_side)
        bif, m1_pts = pts[-1], pts
        marks[f"mca_bifurcation_{side}"] = bif
        marks[f"mca_direction_{side}"] = _unit(pts[-1] - pts[-4])
        sup = jit(
            [
                bif,
                (48 * sgn, -10, zt + 14),
                (51 * sgn, -8, zt + 28),
                (49 * sgn, -2, zt + 42),
                (43 * sgn, 8, zt + 52),
            ]
        )
        inf = jit(
            [
                bif,
                (48 * sgn, 0, zt + 4),
                (51 * sgn, 12, zt + 8),
                (51 * sgn, 25, zt + 14),
                (46 * sgn, 40, zt + 20),
            ]
        )
        for nm, ctrl, tip_dir in (("sup", sup, (0.3 * sgn, 0.2, 1.0)), ("inf", inf, (0.2 * sgn, 1.0, 0.3))):
            pts = add(
                f"mca_m2{nm}_{side}",
                terr,
                ctrl,
                np.array([1.05, 0.95, 0.85, 0.8, 0.7]) * big,
                f_side * 0.95,
                1,
            )
            grow(pts[-1], tip_dir, 0.7, terr, f_side * 0.9, 2, f"mca_branch_{side}")
            sprout(pts, terr, f_side * 0.9, f"mca_branch_{side}", every_mm=8.0, r_range=(0.55, 0.85))
        # Lenticulostriate perforators from M1.
        for _ in range(int(rng.integers(3, 6))):
            p = m1_pts[int(rng.integers(len(m1_pts) // 4, len(m1_pts)))]
            grow(
                p,
                (rng.normal(0, 0.3), rng.normal(0, 0.3), 1.0),
                rng.uniform(0.3, 0.45),
                terr,
                f_side * 0.9,
                3,
                f"lenticulostriate_{side}",
            )
        # ACA: A1 -> A1/A2 junction (anterior communicating region) -> pericallosal arc -> branches.
        a1 = jit([t_end, (7 * sgn, -19, zt + 2), (2.5 * sgn, -24, zt + 4)], sd=0.5)
        pts = add(f"aca_a1_{side}", terr, a1, np.array([1.15, 1.05, 1.0]) * big, f_side)
        junction = pts[-1]
        marks[f"aca_junction_{side}"] = junction
        a2 = [
            junction,
            (2.5 * sgn, -34, zt + 15),
            (3 * sgn, -40, zt + 30),
            (3 * sgn, -34, zt + 45),
            (3 * sgn, -18, zt + 55),
            (3 * sgn, 5, zt + 60),
            (3 * sgn, 25, zt + 56),
        ]
        a2 = jit(a2, sd=1.0)
        a2[1:, 0] = np.clip(a2[1:, 0] * sgn, 1.5, 5.0) * sgn  # stay on its own side of the midline
        pts = add(
            f"aca_a2_{side}",
            terr,
            a2,
            np.array([1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6]) * big,
            f_side * 0.95,
            1,
        )
        grow(pts[-1], (0.2 * sgn, 1.0, -0.1), 0.55, terr, f_side * 0.9, 2, f"aca_branch_{side}")
        sprout(pts, terr, f_side * 0.9, f"aca_branch_{side}", every_mm=10.0, r_range=(0.5, 0.75))

    # Posterior circulation: vertebral arteries through the foramen magnum -> basilar -> PCAs.
    zt = 0.5 * (marks["ica_terminus_left"][2] + marks["ica_terminus_right"][2])
    z_fm = zp(0.0, 35.0) - tb / 2
    z_vb = zp(0.0, 16.0) + 4.0
    vb = np.array([0.0, 16.0, z_vb]) + rng.normal(0, 0.5, 3)
    for sgn, side in ((1.0, "left"), (-1.0, "right")):
        dom = rng.uniform(0.8, 1.15)
        va = jit(
            [
                (20 * sgn, 20, -115),
                (21 * sgn, 20, -72),
                (27 * sgn, 28, -60),
                (24 * sgn, 38, z_fm - 8),
                (11 * sgn, 34, z_fm),
                (6 * sgn, 24, z_fm + 6),
            ],
            sd=0.8,
        )
        va = np.vstack([va, vb])
        add(f"va_{side}", "posterior", va, np.array([1.8, 1.8, 1.75, 1.7, 1.6, 1.55, 1.5]) * dom, 1.0)
        pica = jit([va[4], (15 * sgn, 48, z_fm + 8), (18 * sgn, 58, z_fm + 14)], sd=0.8)
        pts = add(f"pica_{side}", "posterior", pica, [0.7, 0.6, 0.55], 0.9, 1)
        grow(pts[-1], (0.3 * sgn, 1.0, 0.2), 0.45, "posterior", 0.85, 2, f"pica_branch_{side}")
    basilar = jit([vb, (0.0, 10.0, z_vb + 10), (0.0, 4.0, zt + 1)], sd=0.5)
    pts = add("basilar", "posterior", basilar, np.array([1.65, 1.55, 1.45]) * big, 1.0)
    tip = pts[-1]
    marks["basilar_tip"] = tip
    for sgn, side in ((1.0, "left"), (-1.0, "right")):
        pca = jit(
            [
                tip,
                (9 * sgn, 4, zt + 2),
                (20 * sgn, 14, zt + 4),
                (28 * sgn, 30, zt + 6),
                (26 * sgn, 50, zt + 10),
                (18 * sgn, 66, zt + 14),
            ],
            sd=1.0,
        )
        pts = add(f"pca_{side}", "posterior", pca, np.array([1.2, 1.1, 1.0, 0.9, 0.8, 0.7]) * big, 0.95, 1)
        grow(pts[-1], (0.0, 1.0, 0.3), 0.6, "posterior", 0.9, 2, f"pca_branch_{side}")
        sprout(
            pts[len(pts) // 4 :], "posterior", 0.9, f"pca_branch_{side}", every_mm=10.0, r_range=(0.5, 0.75)
        )
        sca = jit([basilar[-1] + [0, 1.0, -3.0], (10 * sgn, 10, zt - 3), (18 * sgn, 22, zt - 5)], sd=0.6)
        pts = add(f"sca_{side}", "posterior", sca, [0.7, 0.6, 0.55], 0.9, 1)
        grow(pts[-1], (0.3 * sgn, 1.0, -0.2), 0.45, "posterior", 0.85, 2, f"sca_branch_{side}")
    return vessels, marks


# ----------------------------------------------------------------------------------------------------------
# Image physics
# ----------------------------------------------------------------------------------------------------------


def _streak_params(rng, sources, metal_amp):
    out = []
    for s in sources:
        n = int(rng.integers(5, 9)) if s["kind"] == "otic" else int(rng.integers(10, 17))
        out.append(
            {
                "center": np.asarray(s["center"], dtype=np.float64),
                "kind": s["kind"],
                "amp_hu": float(s["amp_hu"] if s["kind"] == "otic" else metal_amp),
                "angles_rad": rng.uniform(0, math.pi, n),
                "signs": rng.choice([-1.0, 1.0], n),
                "width_mm": float(rng.uniform(0.6, 1.2)),
                "decay_mm": float(rng.uniform(25.0, 45.0)),
                "half_height_mm": float(rng.uniform(2.0, 4.0)),
                "core_mm": float(s["radius_mm"] + 1.0),
            }
        )
    return out


def _add_streaks(vol, grid, streaks, jitter_rng, move=None):
    """Add radial line artefacts in the axial planes through each dense source (in place, float32 HU).

    ``move`` maps a template-frame point to its displaced position (mask acquisition with motion).
    """
    for s in streaks:
        c = s["center"] if move is None else move(s["center"])
        h = s["half_height_mm"]
        zsel = np.nonzero(np.abs(grid.z - c[2]) < 2.5 * h)[0]
        if zsel.size == 0:
            continue
        w_z = np.exp(-(((grid.z[zsel] - c[2]) / h) ** 2)).astype(np.float32)
        ys, xs = grid.y - np.float32(c[1]), grid.x - np.float32(c[0])
        rho = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
        # streaks start at the edge of the dense object and fade with distance
        env = (np.exp(-rho / s["decay_mm"]) * (1.0 - np.exp(-((rho / s["core_mm"]) ** 2)))).astype(np.float32)
        pattern = np.zeros((grid.shape[1], grid.shape[2]), dtype=np.float32)
        amp = s["amp_hu"] * float(jitter_rng.uniform(0.85, 1.15))
        for ang, sign in zip(s["angles_rad"], s["signs"], strict=True):
            perp = xs[None, :] * math.sin(ang) - ys[:, None] * math.cos(ang)
            pattern += np.float32(sign * amp) * np.exp(-((perp / s["width_mm"]) ** 2))
        pattern *= env
        vol[zsel[0] : zsel[-1] + 1] += w_z[:, None, None] * pattern[None]


def _rotation_zyx(rotation_deg_zyx):
    """3x3 rotation acting on (z, y, x) mm vectors: rotations about the z, y and x axes (degrees), applied x first."""
    az, ay, ax = (math.radians(float(v)) for v in rotation_deg_zyx)
    rz = np.array([[1, 0, 0], [0, math.cos(az), math.sin(az)], [0, -math.sin(az), math.cos(az)]])
    ry = np.array([[math.cos(ay), 0, -math.sin(ay)], [0, 1, 0], [math.sin(ay), 0, math.cos(ay)]])
    rx = np.array([[math.cos(ax), math.sin(ax), 0], [-math.sin(ax), math.cos(ax), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _to_int16(vol):
    np.rint(vol, out=vol)
    np.clip(vol, HU_CLIP[0], HU_CLIP[1], out=vol)
    return vol.astype(np.int16)


# ----------------------------------------------------------------------------------------------------------
# Argument parsing
# ----------------------------------------------------------------------------------------------------------


def default_spacing_mm(shape_zyx) -> tuple[float, float, float]:
    """Isotropic spacing (dz, dy, dx) mm: the paper's 0.46 mm when every axis has >= 256 voxels, else
    ``180 mm / min(shape)`` so the whole head fits the field of view."""
    n = min(int(v) for v in shape_zyx)
    s = PAPER_SPACING_MM if n >= FULL_RESOLUTION_MIN_SHAPE else HEAD_FOV_MM / n
    return (float(s), float(s), float(s))


def _check_shape(shape_zyx):
    try:
        shape = tuple(int(v) for v in shape_zyx)
    except (TypeError, ValueError):
        raise PhantomParameterError(f"shape_zyx must be three integers, got {shape_zyx!r}")
    if len(shape) != 3 or any(v < MIN_SHAPE for v in shape):
        raise PhantomParameterError(f"shape_zyx must be three integers >= {MIN_SHAPE}, got {shape_zyx!r}")
    return shape


def _check_spacing(spacing_mm, shape):
    if spacing_mm is None:
        return default_spacing_mm(shape)
    sp = np.atleast_1d(np.asarray(spacing_mm, dtype=np.float64))
    if sp.size == 1:
        sp = np.repeat(sp, 3)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise PhantomParameterError(
            f"spacing_mm must be a positive number or (dz, dy, dx), got {spacing_mm!r}"
        )
    return tuple(float(v) for v in sp)


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

    Returns a PhantomSubject with int16 HU volumes ([z, y, x]), uint8 truth, bool region masks and JSON-ready
    ``params``.  Raises PhantomParameterError (a ValueError) on bad arguments.
    """
    shape = _check_shape(shape_zyx)
    spacing = _check_spacing(spacing_mm, shape)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise PhantomParameterError(f"seed must be a non-negative int, got {seed!r}")
    seeds = np.random.SeedSequence([int(seed), 0x5EED]).spawn(8)
    rng_anat, rng_vessel, rng_choice, rng_streak, rng_fill, rng_mask, rng_jit, _ = (
        np.random.default_rng(s) for s in seeds
    )

    a = _sample_anatomy(rng_anat)
    motion_d = _parse_motion(motion, rng_choice)
    inj, inj_side = _parse_injection(injection, rng_choice)
    aneurysm_d = _parse_aneurysm(aneurysm, rng_choice)
    coil_mode, coil_kind = _parse_coil(coil, rng_choice, aneurysm is False)
    if coil_mode == "forced" and aneurysm_d is None:
        aneurysm_d = _parse_aneurysm(True, np.random.default_rng(seeds[7]))
    if aneurysm_d is None:
        coil_kind = None
    blur_sigma = _u(rng_choice, *BLUR_SIGMA_VOXELS)

    sp_xyz = np.array(spacing[::-1])
    n_xyz = np.array(shape[::-1], dtype=np.float64)
    origin_lps = VIEW_CENTER_LPS - (n_xyz - 1) / 2 * sp_xyz
    affine = np.eye(4)
    affine[:3, :3] = np.diag(sp_xyz)
    affine[:3, 3] = origin_lps
    grid = _Grid(shape, spacing, origin_lps, a["head_scale"])

    static, truth, regions, sources = _build_anatomy(grid, a)

    # Vessels.
    vessels, marks = _vessel_tree(rng_vessel, a)
    if inj == "ica":
        opacified = {f"anterior_{inj_side}"}
    else:
        opacified = {"posterior"}
    canvas = _VesselCanvas(grid)
    contrast_hu = a["contrast_hu"]
    blood = a["blood_hu"]
    for v in vessels:
        excess = 0.0
        if v["territory"] in opacified:
            f = v["factor"] * 0.93 ** v["depth"]
            if inj == "vertebral" and v["name"].startswith("va_") and not v["name"].endswith(inj_side):
                f *= 0.6  # contralateral vertebral artery fills by reflux only
            excess = contrast_hu * f - blood
        canvas.add_polyline(v["points"], v["radii"], v["territory"], excess)

    metal = np.zeros(shape, dtype=bool)
    if aneurysm_d is not None:
        site_kind, side = aneurysm_d["site"].split("_")
        terr = f"anterior_{side}"
        ra = aneurysm_d["radius_mm"]
        if site_kind == "mca":
            base = marks[f"mca_bifurcation_{side}"]
            direction = marks[f"mca_direction_{side}"]
        else:
            base = marks[f"aca_junction_{side}"]
            direction = _unit([0.0, -1.0, 0.6])
        center = base + direction * (0.7 * ra + 0.8)
        aneurysm_d["center_lps_mm"] = (HEAD_CENTER + (center - HEAD_CENTER) * a["head_scale"]).tolist()
        sac_excess = contrast_hu * 0.9 - blood if terr in opacified and coil_kind != "clip" else 0.0
        canvas.add_sphere(center, ra, terr, sac_excess)
        if coil_kind is not None:
            if coil_kind == "coil":
                seg = (center, center, ra * 0.9, ra * 0.9)
            else:
                neck = base + direction * 0.8
                perp = _unit(np.cross(direction, [0.0, 0.0, 1.0]) + [1e-3, 0, 0])
                seg = (neck - perp * (ra + 2.0), neck + perp * (ra + 2.0), 0.8, 0.8)
            res = _segment_distance(grid, seg[0], seg[1], seg[2], seg[3], margin=grid.voxel_mm)
            if res is not None:
                box, d, r = res
                m = d <= r
                if not m.any():
                    m = d <= d.min()
                metal[box] |= m
            sources.append(
                {
                    "center": np.asarray(center if coil_kind == "coil" else base),
                    "kind": "metal",
                    "amp_hu": a["metal_streak_hu"],
                    "radius_mm": ra if coil_kind == "coil" else 1.0,
                }
            )

    # Compose static (mask) and fill.
    occ = canvas.lumen_occ
    static += occ * (np.float32(blood) - static)  # lumens are blood in both acquisitions
    truth[canvas.lumen] = SOFT_TISSUE
    truth[canvas.opacified] = VESSEL
    static[metal] = a["metal_hu"]
    truth[metal] = UNLABELED
    canvas.contrast[metal] = 0.0
    fill = static + canvas.contrast
    for t in TERRITORIES:
        regions[f"vessels_{t}"] = canvas.territory[t]
    regions["aneurysm"] = canvas.aneurysm
    regions["metal"] = metal
    n_segments = canvas.n_segments
    del canvas, occ

    streaks = _streak_params(rng_streak, sources, a["metal_streak_hu"])
    noise_sigma = a["noise_sigma_hu"]

    fill = _finish_with_streaks(fill, grid, streaks, rng_jit, blur_sigma, noise_sigma, rng_fill, None)
    fill_hu = _to_int16(fill)
    del fill

    move = None
    if motion_d["enabled"]:
        rot = _rotation_zyx(motion_d["rotation_deg"])
        t_zyx = np.asarray(motion_d["translation_mm"], dtype=np.float64)
        sp = np.asarray(spacing, dtype=np.float64)
        o = origin_lps[::-1]
        c = VIEW_CENTER_LPS[::-1]
        # output voxel v (zyx) samples input at S^-1 (R^T (o + S v - c - t) + c - o)
        matrix = (rot.T * sp[None, :]) / sp[:, None]
        offset = (rot.T @ (o - c - t_zyx) + c - o) / sp
        static = ndimage.affine_transform(
            static, matrix, offset=offset, order=1, mode="nearest", output=np.float32
        )
        scale = a["head_scale"]

        def move(p_xyz):
            p_lps = HEAD_CENTER + (np.asarray(p_xyz) - HEAD_CENTER) * scale
            q = rot @ (p_lps[::-1] - c) + c + t_zyx
            return HEAD_CENTER + (q[::-1] - HEAD_CENTER) / scale

    mask = _finish_with_streaks(static, grid, streaks, rng_jit, blur_sigma, noise_sigma, rng_mask, move)
    mask_hu = _to_int16(mask)
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
        "seed": int(seed),
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


def _finish_with_streaks(vol, grid, streaks, jitter_rng, blur_sigma, noise_sigma, noise_rng, move):
    ndimage.gaussian_filter(vol, blur_sigma, output=vol, truncate=3.0)
    _add_streaks(vol, grid, streaks, jitter_rng, move)
    noise = noise_rng.standard_normal(vol.shape, dtype=np.float32)
    noise *= np.float32(noise_sigma)
    vol += noise
    return vol


def cohort_plan(
    n_subjects: int = 105, seed: int = 0, *, motion_fraction: float = 0.4
) -> list[dict[str, Any]]:
    """Per-subject parameters of a synthetic cohort mirroring the paper's split.

    For 105 subjects: 35 train / 8 validation / 62 test, 89 ICA / 16 vertebral injections; other sizes scale
    these proportions (rounded, test takes the remainder).  Exactly ``round(motion_fraction * n)`` subjects
    get inter-sweep motion (explicit rotation/translation values), the others none.  Returns a list of dicts
    with subject_id ("PH-001", ...), split, seed, injection ("ica"/"vertebral"), injected_side, motion (bool),
    aneurysm, coil and ``make_subject_kwargs`` (pass to ``make_subject`` together with a shape).
    Deterministic in (n_subjects, seed, motion_fraction).
    """
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int | np.integer) or n_subjects < 1:
        raise PhantomParameterError(f"n_subjects must be a positive int, got {n_subjects!r}")
    if not (0.0 <= float(motion_fraction) <= 1.0):
        raise PhantomParameterError(f"motion_fraction must be within [0, 1], got {motion_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise PhantomParameterError(f"seed must be a non-negative int, got {seed!r}")
    n = int(n_subjects)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0407]))
    n_train = round(n * 35 / 105)
    n_val = round(n * 8 / 105)
    n_test = n - n_train - n_val
    n_vert = round(n * 16 / 105)
    n_motion = round(float(motion_fraction) * n)
    split = np.array(["train"] * n_train + ["validation"] * n_val + ["test"] * n_test)[rng.permutation(n)]
    vertebral = np.zeros(n, dtype=bool)
    vertebral[rng.permutation(n)[:n_vert]] = True
    moving = np.zeros(n, dtype=bool)
    moving[rng.permutation(n)[:n_motion]] = True
    plan = []
    for i in range(n):
        sub_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0] & 0x7FFFFFFF)
        side = "left" if rng.uniform() < 0.5 else "right"
        rot = rng.uniform(-MOTION_MAX_ROTATION_DEG, MOTION_MAX_ROTATION_DEG, 3)
        tr = rng.uniform(-MOTION_MAX_TRANSLATION_MM, MOTION_MAX_TRANSLATION_MM, 3)
        has_aneurysm = bool(rng.uniform() < ANEURYSM_PROBABILITY)
        site = ANEURYSM_SITES[int(rng.integers(0, len(ANEURYSM_SITES)))]
        radius = float(rng.uniform(2.0, 5.0))
        coil_kind = ("coil" if rng.uniform() < 0.7 else "clip") if rng.uniform() < 0.3 else False
        injection = "vertebral" if vertebral[i] else "ica"
        motion = {"rotation_deg": rot.tolist(), "translation_mm": tr.tolist()} if moving[i] else False
        aneurysm = {"site": site, "radius_mm": radius} if has_aneurysm else False
        coil = coil_kind if has_aneurysm else False
        kwargs = {
            "seed": sub_seed,
            "injection": f"ica_{side}" if injection == "ica" else f"vertebral_{side}",
            "motion": motion,
            "aneurysm": aneurysm,
            "coil": coil,
        }
        plan.append(
            {
                "subject_id": f"PH-{i + 1:03d}",
                "split": str(split[i]),
                "seed": sub_seed,
                "injection": injection,
                "injected_side": side,
                "motion": bool(moving[i]),
                "aneurysm": aneurysm,
                "coil": coil,
                "make_subject_kwargs": kwargs,
            }
        )
    return plan


def subject_from_plan(entry: dict[str, Any], shape_zyx=(64, 64, 64), spacing_mm=None) -> PhantomSubject:
    """``make_subject`` for one ``cohort_plan`` entry."""
    return make_subject(shape_zyx, spacing_mm, **entry["make_subject_kwargs"])
