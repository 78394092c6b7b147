"""Shared phantom subjects of the tests in this folder (cached per process) and an affine-based coordinate helper."""

from __future__ import annotations

from functools import cache

import numpy as np

from dla.phantoms import make_subject

NO_MOTION = False
STRONG_MOTION = {"rotation_deg": (1.0, -1.0, 1.0), "translation_mm": (1.5, -1.5, 1.5)}


@cache
def subject(shape=(64, 64, 64), seed=7, motion=NO_MOTION, injection="ica_left", aneurysm=False, coil=False):
    """Cached make_subject; dict arguments are passed as tuples of (key, value) pairs to stay hashable."""
    motion_arg = dict(motion) if isinstance(motion, tuple) else motion
    aneurysm_arg = dict(aneurysm) if isinstance(aneurysm, tuple) else aneurysm
    return make_subject(
        shape, seed=seed, motion=motion_arg, injection=injection, aneurysm=aneurysm_arg, coil=coil
    )


def strong_motion_key():
    return tuple(sorted(STRONG_MOTION.items()))


def lps_coordinates(subj, mask):
    """LPS mm (N, 3) of the voxels in a [z, y, x] mask, via the affine (independent of the generator)."""
    z, y, x = np.nonzero(mask)
    ijk1 = np.stack([x, y, z, np.ones_like(x)]).astype(np.float64)
    return (subj.affine_lps @ ijk1)[:3].T
