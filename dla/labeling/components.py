"""26-connected component labelling for the labeling engine (the one place it is done).

``label_components(mask)`` labels a bool [z, y, x] mask with the ``connected-components-3d`` package (cc3d):
the same partition as ``scipy.ndimage.label`` with a 3x3x3 structure (the tests check this against scipy),
3-6x faster on whole 400x512x512 class masks (0.15-0.2 s instead of 0.5-1.2 s on this machine), which keeps
"remove island" on a whole skull or all soft tissue near the 300 ms edit budget. ``component_sizes`` counts the
voxels of each component. Pure numpy/cc3d, no Django.
"""

from __future__ import annotations

import cc3d
import numpy as np


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels, n): labels is an unsigned integer array of ``mask``'s shape, 0 outside the mask and 1..n for
    the 26-connected components of the bool [z, y, x] ``mask`` (numbered in scan order)."""
    labels, n = cc3d.connected_components(
        np.asarray(mask, dtype=bool), connectivity=26, binary_image=True, return_N=True
    )
    return labels, int(n)


def component_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """int64 [n + 1]: voxels per component of ``label_components``'s ``labels`` (index 0: outside the mask).
    Unsigned labels are counted through a signed view of the same bits (component ids are far below 2^31):
    ``np.bincount`` would otherwise first copy a uint32 map to int64, 10x slower."""
    flat = np.ascontiguousarray(labels).ravel()
    signed = {np.dtype(np.uint32): np.int32, np.dtype(np.uint64): np.int64}.get(flat.dtype)
    if signed is not None:
        flat = flat.view(signed)
    return np.bincount(flat, minlength=n + 1)
