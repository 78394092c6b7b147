"""Image physics of the phantom acquisitions (internal to ``dla.phantoms``): from the noiseless static anatomy
and the rasterized vessels to the stored int16 fill and mask volumes.

``compose_fill`` blends the vessel lumens into the static volume by partial volume (lumens are blood, about
40 HU, in both acquisitions; opacified lumens add the contrast excess in the fill only), writes the metal HU and
labels lumens and metal in the truth map.  ``finish_acquisition`` then applies, per acquisition and in place, a
gaussian blur (sigma in voxels), radial streak artefacts in the axial planes through each dense object (otic
capsules, coils and clips; ``streak_params`` draws them once per subject, the amplitude jitters per
acquisition) and independent gaussian noise (sigma in HU); ``to_int16`` rounds and clips to the 12-bit CT range
``HU_CLIP``.  Volumes are float32 HU ``[z, y, x]``; pure numpy/scipy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from dla.classes import SOFT_TISSUE, UNLABELED, VESSEL
from dla.phantoms.grid import Grid

HU_CLIP = (-1024, 3071)  # stored fill/mask range (12-bit CT convention)
BLUR_SIGMA_VOXELS = (0.5, 0.8)


def compose_fill(static, truth, canvas, metal, a) -> np.ndarray:
    """Blend the vessels of ``canvas`` (a ``VesselCanvas``) and the ``metal`` bool mask into ``static`` (float32
    HU, becomes the mask acquisition, in place) and ``truth`` (uint8, in place: lumens SOFT_TISSUE, opacified
    lumens VESSEL, metal UNLABELED); returns the fill acquisition (float32 HU, static + contrast)."""
    static += canvas.lumen_occ * (np.float32(a["blood_hu"]) - static)  # lumens are blood in both acquisitions
    truth[canvas.lumen] = SOFT_TISSUE
    truth[canvas.opacified] = VESSEL
    static[metal] = a["metal_hu"]
    truth[metal] = UNLABELED
    canvas.contrast[metal] = 0.0
    return static + canvas.contrast


def streak_params(rng, sources, metal_amp):
    """Per dense source (template-mm centre, kind "otic"/"metal", amplitude HU, radius mm): its streaks' angles
    (rad), signs, width, decay and half height (mm) and the core radius (mm) inside which they fade out."""
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


def add_streaks(vol, grid: Grid, streaks, jitter_rng, move=None):
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


def finish_acquisition(vol, grid: Grid, streaks, jitter_rng, blur_sigma, noise_sigma, noise_rng, move=None):
    """Blur (``blur_sigma`` voxels), streaks and gaussian noise (``noise_sigma`` HU) on ``vol`` (float32 HU,
    in place; returned)."""
    ndimage.gaussian_filter(vol, blur_sigma, output=vol, truncate=3.0)
    add_streaks(vol, grid, streaks, jitter_rng, move)
    noise = noise_rng.standard_normal(vol.shape, dtype=np.float32)
    noise *= np.float32(noise_sigma)
    vol += noise
    return vol


def to_int16(vol) -> np.ndarray:
    """Round and clip float32 HU (in place) to ``HU_CLIP``; returns an int16 copy."""
    np.rint(vol, out=vol)
    np.clip(vol, HU_CLIP[0], HU_CLIP[1], out=vol)
    return vol.astype(np.int16)
