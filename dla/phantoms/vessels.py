"""The cerebral arteries of a phantom subject (internal to ``dla.phantoms``): the random vessel tree as
centerlines, its rasterization, and the aneurysm with an optional coil or clip.

``vessel_tree`` draws the centerlines (template-frame mm polylines with tapering radii) territory by territory:
per side the ICA (cervical, carotid canal through the skull-base plate next to the otic capsule, cavernous
segment, siphon, terminus), the MCA (M1, two M2 trunks, lenticulostriate perforators) and the ACA (A1 to the
anterior communicating region, pericallosal A2); then the posterior circulation (vertebral arteries with PICAs
through the foramen magnum, basilar, PCAs and SCAs).  Every trunk ends and sprouts random cortical branches
(wiggly polylines that bifurcate, side-branch and turn along the skull).  ``VesselCanvas`` rasterizes them:
anti-aliased lumen occupancy (float32 0..1), contrast excess over blood (float32 HU) for the opacified
(injected) territories, lumen / opacified / per-territory / aneurysm bool masks, all ``[z, y, x]``, and on
request (``record_radius=True``) the radius in mm of the opacified vessel covering each voxel (its segment's
interpolated radius, the largest where several overlap; the sac radius in an aneurysm), which the
truth-referenced evaluation stratifies by.  Vessels thinner than ``UNRESOLVED_RADIUS_VOXELS`` are left out of
image and truth.  ``add_aneurysm`` puts a saccular aneurysm at an MCA bifurcation or A1/A2 junction and rasterizes its metal (a packed coil or a clip bar).  Pure
numpy; the random numbers are drawn in a fixed order, so a seed gives the same tree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dla.phantoms.anatomy import plate_z, skull_semi
from dla.phantoms.curves import catmull_rom, funit, resample, unit
from dla.phantoms.grid import HEAD_CENTER, Grid, segment_distance

MIN_VESSEL_RADIUS_MM = 0.25
UNRESOLVED_RADIUS_VOXELS = (
    0.3  # vessels thinner than this (radius, in voxels) are omitted from image and truth
)
TERRITORIES = ("anterior_left", "anterior_right", "posterior")
ANEURYSM_SITES = ("mca_left", "mca_right", "aca_left", "aca_right")


# ----------------------------------------------------------------------------------------------------------
# Rasterization
# ----------------------------------------------------------------------------------------------------------


class VesselCanvas:
    """Accumulates vessel lumens: all-lumen occupancy, contrast excess (HU), truth and territory masks.

    ``record_radius``: also keep ``radius_mm`` (float32 [z, y, x], mm, 0 outside opacified lumens): the radius
    of the opacified vessel whose lumen covers the voxel (max over overlapping vessels). It only adds an array;
    every other array is the same with or without it."""

    def __init__(self, grid: Grid, record_radius: bool = False):
        self.grid = grid
        shape = grid.shape
        self.radius_mm = np.zeros(shape, dtype=np.float32) if record_radius else None
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

    def _paint(self, box, occ, inside, territory, excess_hu, extra_mask=None, radius=None):
        np.maximum(self.lumen_occ[box], occ, out=self.lumen_occ[box])
        self.lumen[box] |= inside
        self.territory[territory][box] |= inside
        if extra_mask is not None:
            extra_mask[box] |= inside
        if excess_hu > 0:
            np.maximum(self.contrast[box], occ * np.float32(excess_hu), out=self.contrast[box])
            self.opacified[box] |= inside
            if self.radius_mm is not None and radius is not None:
                np.maximum(self.radius_mm[box], np.where(inside, radius, 0.0), out=self.radius_mm[box])

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
            pts, rad = resample(points, radii, self.step)
            for i in range(len(pts) - 1):
                if max(rad[i], rad[i + 1]) < thin:
                    continue
                seg = segment_distance(self.grid, pts[i], pts[i + 1], rad[i], rad[i + 1], self.vox)
                if seg is None:
                    continue
                box, d, r = seg
                self._paint(box, self._occupancy(d, r), d <= r, territory, excess_hu, radius=r)
                self.n_segments += 1
        # Keep at least the centreline voxel of sub-voxel vessels.
        fine, frad = resample(points, radii, 0.4 * self.grid.min_voxel_mm)
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
            if self.radius_mm is not None:
                np.maximum.at(self.radius_mm.reshape(-1), flat, frad[ok].astype(np.float32))

    def add_sphere(self, center, radius, territory, excess_hu):
        """Rasterize a sphere (template mm centre and radius) into the lumen, territory and aneurysm masks."""
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
        self._paint(
            box, self._occupancy(d, r), inside, territory, excess_hu, extra_mask=self.aneurysm, radius=r
        )


def opacified_territories(injection: str, injected_side: str) -> set[str]:
    """Territories that carry contrast: the ipsilateral anterior one for "ica", the posterior for "vertebral"."""
    return {f"anterior_{injected_side}"} if injection == "ica" else {"posterior"}


def rasterize_tree(
    grid: Grid, vessels, a, injection, injected_side, opacified, record_radius: bool = False
) -> VesselCanvas:
    """A canvas with every centerline of ``vessel_tree``; opacified lumens get the contrast excess
    ``contrast_hu * factor * 0.93^depth - blood_hu`` (HU), the contralateral vertebral artery 60 % of it.
    ``record_radius``: keep the canvas's per-voxel ``radius_mm`` map (see ``VesselCanvas``)."""
    canvas = VesselCanvas(grid, record_radius=record_radius)
    contrast_hu = a["contrast_hu"]
    blood = a["blood_hu"]
    for v in vessels:
        excess = 0.0
        if v["territory"] in opacified:
            f = v["factor"] * 0.93 ** v["depth"]
            if (
                injection == "vertebral"
                and v["name"].startswith("va_")
                and not v["name"].endswith(injected_side)
            ):
                f *= 0.6  # contralateral vertebral artery fills by reflux only
            excess = contrast_hu * f - blood
        canvas.add_polyline(v["points"], v["radii"], v["territory"], excess)
    return canvas


def add_aneurysm(canvas: VesselCanvas, grid: Grid, a, marks, aneurysm, coil_kind, opacified):
    """Paint the aneurysm sac ``aneurysm`` ({"site", "radius_mm"}) on ``canvas`` and rasterize its metal.

    The sac sits on the MCA bifurcation (along the M1 direction) or the A1/A2 junction of its side; it is
    opacified when its territory is, except behind a clip.  coil_kind: None, "coil" (metal filling 90 % of the
    sac) or "clip" (a metal bar across the neck).  Returns (metal bool [z, y, x], sac centre LPS mm (x, y, z)
    list, streak source dict or None).
    """
    metal = np.zeros(grid.shape, dtype=bool)
    site_kind, side = aneurysm["site"].split("_")
    terr = f"anterior_{side}"
    ra = aneurysm["radius_mm"]
    if site_kind == "mca":
        base = marks[f"mca_bifurcation_{side}"]
        direction = marks[f"mca_direction_{side}"]
    else:
        base = marks[f"aca_junction_{side}"]
        direction = unit([0.0, -1.0, 0.6])
    center = base + direction * (0.7 * ra + 0.8)
    center_lps_mm = (HEAD_CENTER + (center - HEAD_CENTER) * a["head_scale"]).tolist()
    sac_excess = a["contrast_hu"] * 0.9 - a["blood_hu"] if terr in opacified and coil_kind != "clip" else 0.0
    canvas.add_sphere(center, ra, terr, sac_excess)
    if coil_kind is None:
        return metal, center_lps_mm, None
    if coil_kind == "coil":
        seg = (center, center, ra * 0.9, ra * 0.9)
    else:
        neck = base + direction * 0.8
        perp = unit(np.cross(direction, [0.0, 0.0, 1.0]) + [1e-3, 0, 0])
        seg = (neck - perp * (ra + 2.0), neck + perp * (ra + 2.0), 0.8, 0.8)
    res = segment_distance(grid, seg[0], seg[1], seg[2], seg[3], margin=grid.voxel_mm)
    if res is not None:
        box, d, r = res
        m = d <= r
        if not m.any():
            m = d <= d.min()
        metal[box] |= m
    source = {
        "center": np.asarray(center if coil_kind == "coil" else base),
        "kind": "metal",
        "amp_hu": a["metal_streak_hu"],
        "radius_mm": ra if coil_kind == "coil" else 1.0,
    }
    return metal, center_lps_mm, source


# ----------------------------------------------------------------------------------------------------------
# The tree
# ----------------------------------------------------------------------------------------------------------


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


def _rotate(v, k, ang):
    """Rodrigues rotation of unit 3-tuple ``v`` by ``ang`` rad about unit ``k`` perpendicular to it."""
    c, s_ = math.cos(ang), math.sin(ang)
    cx_, cy_, cz_ = k[1] * v[2] - k[2] * v[1], k[2] * v[0] - k[0] * v[2], k[0] * v[1] - k[1] * v[0]
    return funit((v[0] * c + cx_ * s_, v[1] * c + cy_ * s_, v[2] * c + cz_ * s_))


class _Tree:
    """The centerlines drawn so far, landmarks, and the drawing tools (jitter, add, grow, sprout).

    Trunks use ``rng`` directly; the many small random cortical branches use a ``_RandomBuffer`` of the same
    generator (pure-Python float math, fast).  The order of calls fixes the tree for a seed.
    """

    def __init__(self, rng, a):
        self.rng = rng
        self.a = a
        self.tb = a["skull_base_thickness_mm"]
        semi = skull_semi(a)
        self.vessels: list[dict[str, Any]] = []
        self.marks: dict[str, np.ndarray] = {}
        self.buf = _RandomBuffer(rng)
        self.head_center = tuple(float(v) for v in HEAD_CENTER)
        self.semi = tuple(float(v) for v in semi)
        # a shifted cohort (dla.phantoms.shift) may set the margin and scale the tortuosity; absent: 9 mm, 1
        self.brain_lim2 = (1.0 - a.get("brain_margin_mm", 9.0) / float(np.mean(semi))) ** 2
        self.tortuosity = float(a.get("vessel_tortuosity_scale", 1.0))
        self.plate = (a["skull_base_z0_mm"], a["skull_base_slope"], a["skull_base_droop_mm"])

    def zp(self, x, y):
        """Skull-base plate top z (mm) at (x, y)."""
        return float(plate_z(self.a, x, y))

    def jit(self, pts, sd=1.2, fixed_first=True):
        """Control points (N, 3) mm plus gaussian noise of ``sd`` mm times the tortuosity scale (the first kept
        fixed)."""
        pts = np.asarray(pts, dtype=np.float64)
        noise = self.rng.normal(0.0, sd, size=pts.shape)
        if self.tortuosity != 1.0:
            noise *= self.tortuosity
        if fixed_first:
            noise[0] = 0.0
        return pts + noise

    def add(self, name, territory, ctrl, r_ctrl, factor=1.0, depth=0, smooth=True):
        """Record a centerline through ``ctrl`` (Catmull-Rom, radii interpolated from ``r_ctrl``) or, unsmoothed,
        the polyline itself with a linear taper; returns its points (M, 3)."""
        ctrl = np.asarray(ctrl, dtype=np.float64)
        if smooth:
            pts = catmull_rom(ctrl, 8)
            u = np.linspace(0.0, len(ctrl) - 1, len(pts))
            rad = np.interp(u, np.linspace(0.0, len(ctrl) - 1, len(r_ctrl)), r_ctrl)
        else:  # linear taper from r_ctrl[0] to r_ctrl[-1]
            pts = ctrl
            rad = np.linspace(r_ctrl[0], r_ctrl[-1], len(pts))
        self.vessels.append(
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

    def in_brain(self, p):
        """True when point ``p`` lies inside the brain: 9 mm within the skull and 3 mm above the plate."""
        x, y, z = p
        hcx, hcy, hcz = self.head_center
        sx, sy, sz = self.semi
        if ((x - hcx) / sx) ** 2 + ((y - hcy) / sy) ** 2 + ((z - hcz) / sz) ** 2 >= self.brain_lim2:
            return False
        z0, slope, droop = self.plate
        return z > z0 + slope * y - droop * (x / sx) ** 2 * math.exp(-((y / 35.0) ** 2)) + 3.0

    def perp(self, d):
        """A random unit vector perpendicular to unit ``d``."""
        buf = self.buf
        gx, gy, gz = buf.normal(), buf.normal(), buf.normal()
        dot = gx * d[0] + gy * d[1] + gz * d[2]
        return funit((gx - dot * d[0], gy - dot * d[1], gz - dot * d[2]))

    def grow(self, root, direction, radius, territory, factor, depth, name):
        """Random cortical branch: a wiggly polyline, two end children and sometimes a side branch."""
        if radius < MIN_VESSEL_RADIUS_MM or depth > 8:
            return
        buf = self.buf
        hcx, hcy, hcz = self.head_center
        sx, sy, sz = self.semi
        d = funit(tuple(float(v) for v in direction))
        length = buf.uniform(10.0, 18.0) * min(max(radius / 0.8, 0.5), 1.4)
        step = length / 5
        pts = [tuple(float(v) for v in root)]
        for _ in range(5):
            axis = self.perp(d)  # drawn before the angle, as ever (the rng order fixes the tree)
            turn_deg = buf.uniform(0.0, 15.0)
            if self.tortuosity != 1.0:
                turn_deg *= self.tortuosity
            d = _rotate(d, axis, math.radians(turn_deg))
            p = pts[-1]
            nxt = (p[0] + d[0] * step, p[1] + d[1] * step, p[2] + d[2] * step)
            if not self.in_brain(nxt):  # near the cortex: turn tangential to the skull and slightly inward
                n = funit(((p[0] - hcx) / sx**2, (p[1] - hcy) / sy**2, (p[2] - hcz) / sz**2))
                dn = d[0] * n[0] + d[1] * n[1] + d[2] * n[2] + 0.35
                d = funit((d[0] - dn * n[0], d[1] - dn * n[1], d[2] - dn * n[2]))
                nxt = (p[0] + d[0] * step, p[1] + d[1] * step, p[2] + d[2] * step)
                if not self.in_brain(nxt):
                    break
            pts.append(nxt)
        if len(pts) < 2:
            return
        r_end = radius * 0.9
        self.add(name, territory, pts, [radius, r_end], factor, depth, smooth=False)
        for sign in (1.0, -1.0):
            child_r = r_end * buf.uniform(0.74, 0.88)
            child_d = _rotate(d, self.perp(d), sign * math.radians(buf.uniform(20.0, 45.0)))
            self.grow(pts[-1], child_d, child_r, territory, factor * 0.97, depth + 1, name)
        if len(pts) > 3 and buf.uniform(0.0, 1.0) < 0.6:
            side_d = _rotate(d, self.perp(d), math.radians(buf.uniform(40.0, 80.0)))
            self.grow(
                pts[len(pts) // 2],
                side_d,
                radius * buf.uniform(0.5, 0.7),
                territory,
                factor * 0.97,
                depth + 1,
                name,
            )

    def sprout(self, pts, territory, factor, name, every_mm=12.0, r_range=(0.55, 0.8)):
        """Cortical/perforating branches every ``every_mm`` along a trunk, heading away from the head centre."""
        rng = self.rng
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        for st in np.arange(every_mm * rng.uniform(0.5, 1.0), s[-1] - 2.0, every_mm):
            i = int(np.searchsorted(s, st))
            p = pts[min(i, len(pts) - 1)]
            tangent = unit(pts[min(i + 1, len(pts) - 1)] - pts[max(i - 1, 0)])
            away = unit(p - (HEAD_CENTER + [0, 0, 10.0]))
            d = unit(away - (away @ tangent) * tangent + 0.3 * rng.normal(size=3))
            self.grow(p, d, rng.uniform(*r_range), territory, factor, 2, name)


def vessel_tree(rng, a) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Centerlines of the cerebral arteries and named landmark points (template mm, x/y/z).

    Each centerline is {"name", "territory" (one of TERRITORIES), "points" (N, 3) mm, "radii" (N,) mm,
    "factor" (contrast fraction), "depth" (branching generation)}.  Landmarks: ica_terminus_*, ica_canal_*,
    mca_bifurcation_*, mca_direction_* (unit), aca_junction_*, basilar_tip.
    """
    tree = _Tree(rng, a)
    big = rng.uniform(0.9, 1.1)
    for sgn, side in ((1.0, "left"), (-1.0, "right")):
        _anterior_circulation(tree, sgn, side, big)
    _posterior_circulation(tree, big)
    return tree.vessels, tree.marks


def _anterior_circulation(tree: _Tree, sgn, side, big):
    """ICA, MCA with perforators and ACA of one side (sgn = +1 patient left, -1 right)."""
    terr = f"anterior_{side}"
    f_side = tree.rng.uniform(0.9, 1.05)
    terminus = _ica(tree, sgn, side, terr, f_side, big)
    m1_pts = _mca(tree, sgn, side, terr, f_side, big, terminus)
    _lenticulostriates(tree, side, terr, f_side, m1_pts)
    _aca(tree, sgn, side, terr, f_side, big, terminus)


def _ica(tree: _Tree, sgn, side, terr, f_side, big):
    """ICA: cervical -> carotid canal (vertical then petrous, inside the skull-base plate, next to the otic
    capsule) -> cavernous -> siphon genu -> supraclinoid -> terminus (returned, (3,) mm)."""
    zp, tb = tree.zp, tree.tb
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
    ica = tree.jit(ica, sd=0.7)
    radii = np.array([2.6, 2.5, 2.4, 2.3, 2.2, 2.1, 2.1, 2.0, 2.0, 1.9, 1.8]) * big
    pts = tree.add(f"ica_{side}", terr, ica, radii, f_side)
    t_end = pts[-1]
    tree.marks[f"ica_terminus_{side}"] = t_end
    tree.marks[f"ica_canal_{side}"] = ica[3]
    return t_end


def _mca(tree: _Tree, sgn, side, terr, f_side, big, t_end):
    """MCA M1 -> bifurcation -> two M2 trunks -> random distal branches; returns the M1 points (M, 3)."""
    zt = t_end[2]
    m1 = tree.jit([t_end, (22 * sgn, -13, zt + 1), (32 * sgn, -10, zt + 2), (42 * sgn, -6, zt + 4)])
    pts = tree.add(f"mca_{side}", terr, m1, np.array([1.5, 1.45, 1.35, 1.25]) * big, f_side)
    bif, m1_pts = pts[-1], pts
    tree.marks[f"mca_bifurcation_{side}"] = bif
    tree.marks[f"mca_direction_{side}"] = unit(pts[-1] - pts[-4])
    sup = tree.jit(
        [
            bif,
            (48 * sgn, -10, zt + 14),
            (51 * sgn, -8, zt + 28),
            (49 * sgn, -2, zt + 42),
            (43 * sgn, 8, zt + 52),
        ]
    )
    inf = tree.jit(
        [bif, (48 * sgn, 0, zt + 4), (51 * sgn, 12, zt + 8), (51 * sgn, 25, zt + 14), (46 * sgn, 40, zt + 20)]
    )
    for nm, ctrl, tip_dir in (("sup", sup, (0.3 * sgn, 0.2, 1.0)), ("inf", inf, (0.2 * sgn, 1.0, 0.3))):
        radii = np.array([1.05, 0.95, 0.85, 0.8, 0.7]) * big
        pts = tree.add(f"mca_m2{nm}_{side}", terr, ctrl, radii, f_side * 0.95, 1)
        tree.grow(pts[-1], tip_dir, 0.7, terr, f_side * 0.9, 2, f"mca_branch_{side}")
        tree.sprout(pts, terr, f_side * 0.9, f"mca_branch_{side}", every_mm=8.0, r_range=(0.55, 0.85))
    return m1_pts


def _lenticulostriates(tree: _Tree, side, terr, f_side, m1_pts):
    """Lenticulostriate perforators rising from the distal three quarters of M1."""
    rng = tree.rng
    for _ in range(int(rng.integers(3, 6))):
        p = m1_pts[int(rng.integers(len(m1_pts) // 4, len(m1_pts)))]
        tree.grow(
            p,
            (rng.normal(0, 0.3), rng.normal(0, 0.3), 1.0),
            rng.uniform(0.3, 0.45),
            terr,
            f_side * 0.9,
            3,
            f"lenticulostriate_{side}",
        )


def _aca(tree: _Tree, sgn, side, terr, f_side, big, t_end):
    """ACA: A1 -> A1/A2 junction (anterior communicating region) -> pericallosal arc -> branches."""
    zt = t_end[2]
    a1 = tree.jit([t_end, (7 * sgn, -19, zt + 2), (2.5 * sgn, -24, zt + 4)], sd=0.5)
    pts = tree.add(f"aca_a1_{side}", terr, a1, np.array([1.15, 1.05, 1.0]) * big, f_side)
    junction = pts[-1]
    tree.marks[f"aca_junction_{side}"] = junction
    a2 = [
        junction,
        (2.5 * sgn, -34, zt + 15),
        (3 * sgn, -40, zt + 30),
        (3 * sgn, -34, zt + 45),
        (3 * sgn, -18, zt + 55),
        (3 * sgn, 5, zt + 60),
        (3 * sgn, 25, zt + 56),
    ]
    a2 = tree.jit(a2, sd=1.0)
    a2[1:, 0] = np.clip(a2[1:, 0] * sgn, 1.5, 5.0) * sgn  # stay on its own side of the midline
    radii = np.array([1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6]) * big
    pts = tree.add(f"aca_a2_{side}", terr, a2, radii, f_side * 0.95, 1)
    tree.grow(pts[-1], (0.2 * sgn, 1.0, -0.1), 0.55, terr, f_side * 0.9, 2, f"aca_branch_{side}")
    tree.sprout(pts, terr, f_side * 0.9, f"aca_branch_{side}", every_mm=10.0, r_range=(0.5, 0.75))


def _posterior_circulation(tree: _Tree, big):
    """Vertebral arteries through the foramen magnum -> basilar -> PCAs and SCAs (territory "posterior")."""
    zp, tb = tree.zp, tree.tb
    zt = 0.5 * (tree.marks["ica_terminus_left"][2] + tree.marks["ica_terminus_right"][2])
    z_fm = zp(0.0, 35.0) - tb / 2
    z_vb = zp(0.0, 16.0) + 4.0
    vb = np.array([0.0, 16.0, z_vb]) + tree.rng.normal(0, 0.5, 3)  # vertebrobasilar junction
    for sgn, side in ((1.0, "left"), (-1.0, "right")):
        _vertebral(tree, sgn, side, z_fm, vb)
    basilar = tree.jit([vb, (0.0, 10.0, z_vb + 10), (0.0, 4.0, zt + 1)], sd=0.5)
    pts = tree.add("basilar", "posterior", basilar, np.array([1.65, 1.55, 1.45]) * big, 1.0)
    tip = pts[-1]
    tree.marks["basilar_tip"] = tip
    for sgn, side in ((1.0, "left"), (-1.0, "right")):
        _pca(tree, sgn, side, zt, big, tip)
        _sca(tree, sgn, side, zt, basilar[-1])


def _vertebral(tree: _Tree, sgn, side, z_fm, vb):
    """Vertebral artery (dominance drawn per side) up to the vertebrobasilar junction ``vb``, and its PICA."""
    dom = tree.rng.uniform(0.8, 1.15)
    va = tree.jit(
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
    tree.add(f"va_{side}", "posterior", va, np.array([1.8, 1.8, 1.75, 1.7, 1.6, 1.55, 1.5]) * dom, 1.0)
    pica = tree.jit([va[4], (15 * sgn, 48, z_fm + 8), (18 * sgn, 58, z_fm + 14)], sd=0.8)
    pts = tree.add(f"pica_{side}", "posterior", pica, [0.7, 0.6, 0.55], 0.9, 1)
    tree.grow(pts[-1], (0.3 * sgn, 1.0, 0.2), 0.45, "posterior", 0.85, 2, f"pica_branch_{side}")


def _pca(tree: _Tree, sgn, side, zt, big, tip):
    """Posterior cerebral artery from the basilar tip, with its cortical branches."""
    pca = tree.jit(
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
    radii = np.array([1.2, 1.1, 1.0, 0.9, 0.8, 0.7]) * big
    pts = tree.add(f"pca_{side}", "posterior", pca, radii, 0.95, 1)
    tree.grow(pts[-1], (0.0, 1.0, 0.3), 0.6, "posterior", 0.9, 2, f"pca_branch_{side}")
    tree.sprout(
        pts[len(pts) // 4 :], "posterior", 0.9, f"pca_branch_{side}", every_mm=10.0, r_range=(0.5, 0.75)
    )


def _sca(tree: _Tree, sgn, side, zt, basilar_end):
    """Superior cerebellar artery from just below the basilar tip (control point ``basilar_end``)."""
    sca = tree.jit([basilar_end + [0, 1.0, -3.0], (10 * sgn, 10, zt - 3), (18 * sgn, 22, zt - 5)], sd=0.6)
    pts = tree.add(f"sca_{side}", "posterior", sca, [0.7, 0.6, 0.55], 0.9, 1)
    tree.grow(pts[-1], (0.3 * sgn, 1.0, -0.2), 0.45, "posterior", 0.85, 2, f"sca_branch_{side}")
