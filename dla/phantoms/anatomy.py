"""Static head anatomy of a phantom subject (internal to ``dla.phantoms``): the random anatomy numbers of a
subject (``sample_anatomy``) and their rasterization (``build_anatomy``) into a non-contrast HU volume, a truth
map and the anatomical region masks where the paper reports residual errors.

The anatomy is analytic, in the template frame (mm, see ``dla.phantoms.grid``): scalp and face ellipsoids with
a neck cylinder (soft tissue), a skull vault shell of varying thickness with outer and inner tables, the brain
(grey/white matter, CSF rim, lateral ventricles), a tilted skull-base plate with the foramen magnum, petrous
ridges with the dense otic capsules, the nasal cavity and paranasal sinuses (air with thin bony walls and a
septum), cervical vertebral bodies and the mandible.  Regions (bool masks): ``otic_capsule`` (capsules + 3 mm),
``nasal_cavity`` (sinuses + walls + 2 mm), ``skull_base`` (plate and petrous ridges +- 3 mm) and ``vault``
(skull shell + 3 mm above the base).  ``build_anatomy(..., with_hu=False)`` skips every HU-only step (brain,
tables, cortices) and gives the same truth and regions.  The dense objects are also returned as streak sources
for ``dla.phantoms.physics``.  Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dla.classes import BONE, SOFT_TISSUE, UNLABELED
from dla.phantoms.curves import catmull_rom
from dla.phantoms.grid import HEAD_CENTER, Grid, ellipsoid_box, ellipsoid_r2, segment_distance

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
ANATOMY_REGION_NAMES = ("otic_capsule", "nasal_cavity", "skull_base", "vault")


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def sample_anatomy(rng) -> dict[str, Any]:
    """All random anatomy numbers of a subject (template frame mm, HU), drawn from ``rng`` in a fixed order."""
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


# ----------------------------------------------------------------------------------------------------------
# Geometry shared with the vessel tree
# ----------------------------------------------------------------------------------------------------------


def skull_semi(a):
    """Outer skull semi-axes (x, y, z) mm: the skin ellipsoid less the scalp."""
    return np.array(a["skin_semi_mm"]) - a["scalp_mm"]


def plate_z(a, x, y):
    """Top surface z (template mm) of the skull-base plate at (x, y); works on numpy arrays (broadcasting)."""
    ax = skull_semi(a)[0]
    droop = a["skull_base_droop_mm"] * (x / ax) ** 2 * np.exp(-((y / 35.0) ** 2))
    return a["skull_base_z0_mm"] + a["skull_base_slope"] * y - droop


def sinus_geometry(a):
    """(center, semi) of nasal cavity, maxillary sinuses and sphenoid sinus (template mm)."""
    sc = a["sinus_scale"]
    tb = a["skull_base_thickness_mm"]
    out = [
        ((0.0, -55.0, -42.0), np.array([11.0, 20.0, 20.0]) * sc[0]),
        ((25.0, -50.0, -48.0), np.array([11.0, 14.0, 13.0]) * sc[1]),
        ((-25.0, -50.0, -48.0), np.array([11.0, 14.0, 13.0]) * sc[2]),
    ]
    zs = float(plate_z(a, 0.0, -24.0)) - tb - 3.0
    out.append(((0.0, -24.0, zs), np.array([10.0, 8.0, 7.0]) * sc[3]))
    return out


def otic_geometry(a):
    """Per side (sgn=+1 patient left, -1 right): petrous ridge (center, axis unit xy, semi) and otic centre."""
    tb = a["skull_base_thickness_mm"]
    out = []
    for sgn in (1.0, -1.0):
        cx, cy = 28.0 * sgn, 14.0
        cz = float(plate_z(a, cx, cy)) - tb / 2 + 2.0
        axis = np.array([-sgn, -1.0]) / math.sqrt(2.0)
        otic = np.array([33.0 * sgn, 17.0, cz + 1.0])
        out.append({"center": np.array([cx, cy, cz]), "axis": axis, "semi": (20.0, 7.0, 7.5), "otic": otic})
    return out


# ----------------------------------------------------------------------------------------------------------
# Rasterization (static = no contrast)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Anatomy:
    """The rasterized anatomy without vessels; arrays ``[z, y, x]`` on the grid.

    static_hu: float32 HU before blur/noise (None when built ``with_hu=False``); truth: uint8 class ids (vessel
    lumens and metal are not cut out yet); regions: ANATOMY_REGION_NAMES -> bool masks; streak_sources: dense
    objects (template-mm centre, kind, amplitude HU, radius mm) for the streak artefacts.
    """

    static_hu: np.ndarray | None
    truth: np.ndarray
    regions: dict[str, np.ndarray]
    streak_sources: list[dict[str, Any]]


class _Layers:
    """The HU volume (absent when only labels are wanted) and the truth map being painted, in painting order."""

    def __init__(self, shape, with_hu):
        self.hu = np.full(shape, AIR_HU, dtype=np.float32) if with_hu else None
        self.truth = np.zeros(shape, dtype=np.uint8)

    def set_hu(self, mask, value, box=None):
        if self.hu is not None:
            (self.hu if box is None else self.hu[box])[mask] = value

    def set_label(self, mask, label, box=None):
        (self.truth if box is None else self.truth[box])[mask] = label


def build_anatomy(grid: Grid, a: dict[str, Any], *, with_hu: bool = True) -> Anatomy:
    """Rasterize the anatomy numbers ``a`` (``sample_anatomy``) on ``grid`` (see the module docstring)."""
    layers = _Layers(grid.shape, with_hu)
    regions: dict[str, np.ndarray] = {}
    _soft_tissue(grid, a, layers)
    _vault_brain_and_skull_base(grid, a, layers, regions)
    sources = _petrous_ridges_and_otic_capsules(grid, a, layers, regions)
    _sinuses(grid, a, layers, regions)
    _vertebrae(grid, a, layers)
    if a["mandible"]:
        _mandible(grid, a, layers)
    return Anatomy(static_hu=layers.hu, truth=layers.truth, regions=regions, streak_sources=sources)


def _soft_tissue(grid, a, layers):
    """Body: head ellipsoid + face ellipsoid + neck cylinder."""
    full = grid.full()
    _, Y, X = grid.coords(full)
    skin_semi = np.array(a["skin_semi_mm"])
    body = ellipsoid_r2(grid, full, HEAD_CENTER, skin_semi) < 1.0
    body |= ellipsoid_r2(grid, full, (0.0, -10.0, -55.0), (58.0, 72.0, 45.0)) < 1.0
    neck2d = ((X[0] / 50.0) ** 2 + ((Y[0] - 15.0) / 52.0) ** 2) < 1.0  # (ny, nx)
    zneck = grid.z < -55.0
    if zneck.any():
        body[zneck] |= neck2d[None]
    layers.set_hu(body, a["soft_tissue_hu"])
    layers.set_label(body, SOFT_TISSUE)


def _vault_brain_and_skull_base(grid, a, layers, regions):
    """Skull vault shell of varying thickness, the brain in the cranial cavity, the skull-base plate; regions
    ``skull_base`` and ``vault``."""
    full = grid.full()
    Z, Y, X = grid.coords(full)
    semi = skull_semi(a)
    a_mean = float(np.mean(semi))
    r2 = ellipsoid_r2(grid, full, HEAD_CENTER, semi)
    inside_skull = r2 < 1.0
    depth = np.sqrt(r2)
    np.subtract(1.0, depth, out=depth)
    depth *= np.float32(a_mean)  # mm below the outer skull surface (negative outside)
    c = a["skull_thickness_coeffs"]
    qx = (grid.x - HEAD_CENTER[0]) / semi[0]
    qy = (grid.y - HEAD_CENTER[1]) / semi[1]
    qz = (grid.z - HEAD_CENTER[2]) / semi[2]
    fx = (-c[0] * qx**2 + c[1] * qx).astype(np.float32)
    fy = (c[2] * qy + c[3] * qy**2).astype(np.float32)
    fz = (c[4] * qz + a["skull_thickness_mm"]).astype(np.float32)
    thick = (fz[:, None, None] + fy[None, :, None]) + fx[None, None, :]
    lo_mm, hi_mm = a.get("skull_thickness_clip_mm", (2.5, 11.0))  # scaled by a shifted cohort only
    np.clip(thick, lo_mm, hi_mm, out=thick)

    zp2d = plate_z(a, X[0], Y[0]).astype(np.float32)  # (ny, nx) plate top
    zrel = Z - zp2d[None]  # mm above the plate top
    tb = np.float32(a["skull_base_thickness_mm"])
    above_base_bottom = zrel > -tb

    vault = inside_skull & (depth < thick) & above_base_bottom
    if layers.hu is not None:
        cortical = vault & ((depth < a["outer_table_mm"]) | (depth > thick - a["inner_table_mm"]))
        layers.hu[vault] = a["diploe_hu"]
        layers.hu[cortical] = a["cortical_bone_hu"]
        del cortical
    layers.set_label(vault, BONE)
    if layers.hu is not None:
        _brain(grid, a, layers.hu, inside_skull & (depth >= thick) & (zrel > 0), r2, depth, thick)

    foramen2d = (X[0] ** 2 + (Y[0] - 35.0) ** 2) < a["foramen_magnum_radius_mm"] ** 2
    plate = inside_skull & (zrel <= 0) & above_base_bottom & ~foramen2d[None]
    if layers.hu is not None:
        layers.hu[plate] = a["skull_base_hu"]
        plate_cortex = plate & ((zrel > -a["outer_table_mm"]) | (zrel < -tb + a["outer_table_mm"]))
        layers.hu[plate_cortex] = a["cortical_bone_hu"]
        del plate_cortex
    layers.set_label(plate, BONE)

    near_skull = r2 < (1.0 + 3.0 / a_mean) ** 2
    regions["skull_base"] = near_skull & (zrel > -tb - 3.0) & (zrel < 3.0)
    regions["vault"] = near_skull & (depth < thick + 3.0) & (zrel >= 3.0)


def _brain(grid, a, static, cavity, r2, depth, thick):
    """Brain HU in the cranial cavity (bool [z, y, x]): grey matter, white matter core, CSF rim, ventricles."""
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
        box = ellipsoid_box(grid, vc, vsemi)
        if box is not None:
            m = (ellipsoid_r2(grid, box, vc, vsemi) < 1.0) & cavity[box]
            static[box][m] = a["csf_hu"]


def _petrous_ridges_and_otic_capsules(grid, a, layers, regions):
    """Petrous ridges (added to ``skull_base``) with the dense otic capsules (region ``otic_capsule``); returns
    the capsules as streak sources."""
    streak_sources = []
    otic_region = np.zeros(grid.shape, dtype=bool)
    for side in otic_geometry(a):
        cen, axis, semi = side["center"], side["axis"], side["semi"]
        box = grid.box(cen - semi[0], cen + semi[0])
        if box is not None:
            z, y, x = grid.coords(box)
            along = (x - cen[0]) * axis[0] + (y - cen[1]) * axis[1]
            across = -(x - cen[0]) * axis[1] + (y - cen[1]) * axis[0]
            rr = (along / semi[0]) ** 2 + (across / semi[1]) ** 2 + ((z - cen[2]) / semi[2]) ** 2
            m = rr < 1.0
            layers.set_hu(m, a["petrous_hu"], box)
            layers.set_label(m, BONE, box)
            regions["skull_base"][box] |= rr < 1.3
        oc, orad = side["otic"], a["otic_radius_mm"]
        box = ellipsoid_box(grid, oc, (orad, orad, orad), margin=3.0)
        if box is not None:
            rr = ellipsoid_r2(grid, box, oc, (orad, orad, orad))
            m = rr < 1.0
            layers.set_hu(m, a["otic_capsule_hu"], box)
            layers.set_label(m, BONE, box)
            otic_region[box] |= rr < ((orad + 3.0) / orad) ** 2
        streak_sources.append(
            {"center": oc, "kind": "otic", "amp_hu": a["otic_streak_hu"], "radius_mm": orad}
        )
    regions["otic_capsule"] = otic_region
    return streak_sources


def _sinuses(grid, a, layers, regions):
    """Nasal cavity and paranasal sinuses: air pockets with thin bony walls (walls first, then all air) and the
    nasal septum; region ``nasal_cavity``."""
    wall = max(a["sinus_wall_mm"], grid.voxel_mm)
    nasal_region = np.zeros(grid.shape, dtype=bool)
    sinuses = sinus_geometry(a)
    air_parts = []
    for cen, semi in sinuses:
        box = ellipsoid_box(grid, cen, semi, margin=wall + 2.5)
        if box is None:
            continue
        rr = ellipsoid_r2(grid, box, cen, semi)
        lim = (1.0 + wall / float(np.min(semi))) ** 2
        m = (rr >= 1.0) & (rr < lim)
        layers.set_hu(m, a["sinus_wall_hu"], box)
        layers.set_label(m, BONE, box)
        nasal_region[box] |= rr < (1.0 + (wall + 2.0) / float(np.min(semi))) ** 2
        air_parts.append((box, rr < 1.0))
    for box, m in air_parts:
        layers.set_hu(m, AIR_HU, box)
        layers.set_label(m, UNLABELED, box)
    cen, semi = sinuses[0]
    box = ellipsoid_box(grid, cen, semi)
    if box is not None:  # nasal septum
        z, y, x = grid.coords(box)
        m = (ellipsoid_r2(grid, box, cen, semi) < 1.0) & (np.abs(x) < max(0.5, 0.5 * grid.voxel_mm))
        m &= z > cen[2] - 0.8 * semi[2]
        layers.set_hu(m, a["sinus_wall_hu"], box)
        layers.set_label(m, BONE, box)
    regions["nasal_cavity"] = nasal_region


def _vertebrae(grid, a, layers):
    """Cervical vertebral bodies (cancellous core, cortical shell) below the foramen magnum."""
    top = float(plate_z(a, 0.0, 18.0)) - a["skull_base_thickness_mm"] - 8.0
    box = grid.box((-10.0, 8.0, -1e4), (10.0, 28.0, top))
    if box is None:
        return
    z, y, x = grid.coords(box)
    e2 = (x / 10.0) ** 2 + ((y - 18.0) / 8.5) ** 2  # (1, ny, nx)
    phase = np.mod(top - z, 16.0)  # (nz, 1, 1)
    body = (e2 < 1.0) & (phase < 13.0)
    layers.set_hu(body, a["vertebra_cancellous_hu"], box)
    if layers.hu is not None:
        shell = body & ((e2 > (1.0 - 1.5 / 8.5) ** 2) | (phase < 1.2) | (phase > 11.8))
        layers.hu[box][shell] = a["vertebra_cortical_hu"]
    layers.set_label(body, BONE, box)


def _mandible(grid, a, layers):
    """Mandible: a U-shaped bony tube with cortical rim."""
    half = np.array([[48, 6, -30], [47, 0, -50], [45, -6, -70], [34, -34, -78], [18, -52, -80]], float)
    pts = np.vstack([half, [[0.0, -58.0, -81.0]], (half * [-1, 1, 1])[::-1]])
    pts = catmull_rom(pts, 6)
    rad = np.full(len(pts), a["mandible_radius_mm"])
    for p0, p1, r0, r1 in zip(pts[:-1], pts[1:], rad[:-1], rad[1:], strict=True):
        seg = segment_distance(grid, p0, p1, r0, r1, margin=grid.voxel_mm)
        if seg is None:
            continue
        box, d, r = seg
        m = d <= r
        layers.set_hu(m, a["diploe_hu"], box)
        if layers.hu is not None:
            layers.hu[box][m & (d > r - 1.8)] = a["cortical_bone_hu"]
        layers.set_label(m, BONE, box)
