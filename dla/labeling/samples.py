"""Training-sample coordinates as in the DLA paper: every vessel voxel plus an equal number of randomly drawn
bone and soft-tissue voxels (random undersampling; fewer if a class has fewer voxels).

``training_samples`` returns an int32 [n, 4] array of (z, y, x, class id) rows: vessel rows first, then bone,
then soft tissue, each block in C (z, y, x) order. The draw is a pure function of the label map, the optional
ROI and ``seed`` (numpy PCG64 ``default_rng``), so it is reproducible. ``save_samples_npz`` /
``load_samples_npz`` store the array with a small JSON-able metadata dict. No Django.
"""

from __future__ import annotations

import json

import numpy as np

from dla.classes import BONE, SOFT_TISSUE, VESSEL


class SamplesError(ValueError):
    """Label map or ROI unusable for drawing training samples (e.g. no vessel voxels)."""


def training_samples(labels: np.ndarray, *, seed: int, roi_mask: np.ndarray | None = None) -> np.ndarray:
    """Draw paper-style training samples from a uint8 [z, y, x] label map.

    roi_mask: optional bool [z, y, x]; only voxels inside it are used. Returns int32 [n, 4] (z, y, x, class).
    Raises SamplesError if there is no vessel voxel (inside the ROI).
    """
    if not isinstance(labels, np.ndarray) or labels.ndim != 3:
        raise SamplesError(
            f"labels must be a 3D [z, y, x] array, got {getattr(labels, 'shape', type(labels))}"
        )
    if max(labels.shape) >= 2**31:
        raise SamplesError("volume too large for int32 coordinates")
    if roi_mask is not None and (not isinstance(roi_mask, np.ndarray) or roi_mask.shape != labels.shape):
        raise SamplesError(
            f"roi_mask shape {getattr(roi_mask, 'shape', None)} must equal the labels shape {labels.shape}"
        )
    rng = np.random.default_rng(seed)
    flat = np.ascontiguousarray(labels).ravel()
    roi = None if roi_mask is None else np.ascontiguousarray(roi_mask, dtype=bool).ravel()

    def indices(c):
        m = flat == c
        if roi is not None:
            m &= roi
        return np.flatnonzero(m)

    vessel = indices(VESSEL)
    if vessel.size == 0:
        raise SamplesError("no vessel voxels" + (" inside the ROI" if roi is not None else "") + " to sample")
    n = vessel.size
    blocks = [(vessel, VESSEL)]
    for c in (BONE, SOFT_TISSUE):
        idx = indices(c)
        if idx.size > n:
            idx = np.sort(idx[rng.choice(idx.size, size=n, replace=False)])
        blocks.append((idx, c))
    total = sum(b.size for b, _ in blocks)
    out = np.empty((total, 4), dtype=np.int32)
    row = 0
    for idx, c in blocks:
        z, y, x = np.unravel_index(idx, labels.shape)
        out[row : row + idx.size, 0] = z
        out[row : row + idx.size, 1] = y
        out[row : row + idx.size, 2] = x
        out[row : row + idx.size, 3] = c
        row += idx.size
    return out


def save_samples_npz(path, samples: np.ndarray, meta: dict | None = None) -> None:
    """Save int32 [n, 4] samples and a JSON-serializable ``meta`` dict to a compressed .npz file."""
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] != 4:
        raise SamplesError(f"samples must be [n, 4] (z, y, x, class), got shape {samples.shape}")
    np.savez_compressed(path, samples=samples.astype(np.int32), meta=np.array(json.dumps(meta or {})))


def load_samples_npz(path) -> tuple[np.ndarray, dict]:
    """Load (samples int32 [n, 4], meta dict) written by ``save_samples_npz``."""
    with np.load(path, allow_pickle=False) as z:
        if "samples" not in z:
            raise SamplesError(f"{path}: no 'samples' array")
        samples = z["samples"].astype(np.int32)
        meta = json.loads(str(z["meta"])) if "meta" in z else {}
    if samples.ndim != 2 or samples.shape[1] != 4:
        raise SamplesError(f"{path}: samples must be [n, 4], got {samples.shape}")
    return samples, meta
