"""Polyline helpers of the phantom generator (internal to ``dla.phantoms``): Catmull-Rom smoothing through
control points, resampling at uniform arc length, and unit vectors (numpy and pure-Python float versions, the
latter for the hot random branch growth).  Points are template-frame millimetres ``(x, y, z)``; pure numpy.
"""

from __future__ import annotations

import math

import numpy as np


def catmull_rom(ctrl, n_sub):
    """Dense smooth polyline (M, 3) float64 mm through control points (N, 3) mm, ``n_sub`` samples per span."""
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


def resample(points, radii, step_mm):
    """Polyline (N, 3) mm with radii (N,) mm resampled at (about) uniform arc-length ``step_mm``; returns
    points (M, 3), radii (M,) float64 mm."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total = s[-1]
    n = max(1, int(math.ceil(total / step_mm)))
    st = np.linspace(0.0, total, n + 1)
    out = np.stack([np.interp(st, s, points[:, k]) for k in range(3)], axis=1)
    return out, np.interp(st, s, radii)


def unit(v):
    """``v`` (3,) as a float64 unit vector (a zero vector stays ~zero)."""
    v = np.asarray(v, dtype=np.float64)
    n = math.sqrt(float(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))
    return v / max(n, 1e-12)


def funit(v):
    """Pure-Python unit vector of a 3-tuple of floats."""
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    n = n if n > 1e-12 else 1e-12
    return (v[0] / n, v[1] / n, v[2] / n)
