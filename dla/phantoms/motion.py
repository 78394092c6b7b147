"""Rigid inter-sweep patient motion of the phantom's mask acquisition (internal to ``dla.phantoms``).

The mask is acquired after a rigid displacement p -> R (p - c) + c + t of the patient, in LPS mm with
``(z, y, x)`` component order, about the grid centre c = ``VIEW_CENTER_LPS``; R rotates about the z, y and x
axes (degrees, applied x first).  ``move_static`` resamples the static ``[z, y, x]`` float32 HU volume
(trilinear, edges repeated) and returns the same displacement for template-frame points (to move the streak
sources).  The random draws of a motion are bounded by ``MOTION_MAX_ROTATION_DEG`` / ``MOTION_MAX_TRANSLATION_MM``
per axis.  Pure numpy/scipy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from dla.phantoms.grid import HEAD_CENTER, VIEW_CENTER_LPS

MOTION_MAX_ROTATION_DEG = 1.5
MOTION_MAX_TRANSLATION_MM = 1.5


def rotation_zyx(rotation_deg_zyx) -> np.ndarray:
    """3x3 rotation acting on (z, y, x) mm vectors: rotations about the z, y and x axes (degrees), applied x first."""
    az, ay, ax = (math.radians(float(v)) for v in rotation_deg_zyx)
    rz = np.array([[1, 0, 0], [0, math.cos(az), math.sin(az)], [0, -math.sin(az), math.cos(az)]])
    ry = np.array([[math.cos(ay), 0, -math.sin(ay)], [0, 1, 0], [math.sin(ay), 0, math.cos(ay)]])
    rx = np.array([[math.cos(ax), math.sin(ax), 0], [-math.sin(ax), math.cos(ax), 0], [0, 0, 1]])
    return rz @ ry @ rx


def move_static(static, rotation_deg, translation_mm, spacing_mm, origin_lps, head_scale):
    """The static volume as seen after the motion, and the motion as a map of template-frame points.

    static: float32 HU [z, y, x]; rotation_deg, translation_mm: (z, y, x); spacing_mm: (dz, dy, dx);
    origin_lps: LPS mm (x, y, z) of voxel (0, 0, 0); head_scale: the template frame's scale.  Returns
    (moved float32 HU [z, y, x], move(p_xyz template mm) -> displaced p_xyz template mm).
    """
    rot = rotation_zyx(rotation_deg)
    t_zyx = np.asarray(translation_mm, dtype=np.float64)
    sp = np.asarray(spacing_mm, dtype=np.float64)
    o = origin_lps[::-1]
    c = VIEW_CENTER_LPS[::-1]
    # output voxel v (zyx) samples input at S^-1 (R^T (o + S v - c - t) + c - o)
    matrix = (rot.T * sp[None, :]) / sp[:, None]
    offset = (rot.T @ (o - c - t_zyx) + c - o) / sp
    moved = ndimage.affine_transform(
        static, matrix, offset=offset, order=1, mode="nearest", output=np.float32
    )

    def move(p_xyz):
        p_lps = HEAD_CENTER + (np.asarray(p_xyz) - HEAD_CENTER) * head_scale
        q = rot @ (p_lps[::-1] - c) + c + t_zyx
        return HEAD_CENTER + (q[::-1] - HEAD_CENTER) / head_scale

    return moved, move
