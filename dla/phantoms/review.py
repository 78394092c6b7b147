"""Simulated manual artifact removal for phantom studies: the paper's expert clean-up step as eraser strokes.

The paper's labels came from a threshold of the subtracted volume plus connected components, "subject to manual
artifact removal" of inter-sweep motion and streak artifacts (Methods, "Training Dataset"); the validation and
testing labels were made "with the same procedure". On a phantom the exact vessel truth stands in for the
expert's eye: every recipe-vessel voxel farther than ``tolerance_voxels`` (26-connected steps) from any truth
vessel voxel is an artifact, and the simulated annotator erases it (vessel -> unlabeled) with brush strokes
over every artifact voxel, through the same edit-op API as the browser's eraser. The clean-up only
removes labels: it never adds a vessel voxel, moves a boundary inside the tolerance, or relabels anything, so
the result is still the recipe's label (thin vessels the threshold missed stay missed). Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from dla.classes import UNLABELED, VESSEL
from dla.labeling.components import label_components
from dla.labeling.edit_ops import MAX_STROKE_POINTS

STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def artifact_mask(labels: np.ndarray, truth: np.ndarray, tolerance_voxels: int = 1) -> np.ndarray:
    """Bool [z, y, x]: voxels labelled vessel in ``labels`` (uint8 [z, y, x]) that are more than
    ``tolerance_voxels`` 26-connected steps away from every vessel voxel of ``truth`` (uint8, same shape)."""
    if labels.shape != truth.shape:
        raise ValueError(f"labels shape {labels.shape} differs from truth shape {truth.shape}")
    if tolerance_voxels < 0:
        raise ValueError(f"tolerance_voxels must be >= 0, got {tolerance_voxels}")
    near = truth == VESSEL
    if tolerance_voxels:
        near = ndi.binary_dilation(near, STRUCTURE_26, iterations=tolerance_voxels)
    return (labels == VESSEL) & ~near


def eraser_strokes(mask: np.ndarray, spacing_mm, max_points: int = MAX_STROKE_POINTS) -> list[dict]:
    """Brush ops erasing exactly the vessel voxels of ``mask`` (bool [z, y, x]): a one-voxel brush (radius half
    the smallest spacing) dragged over every voxel, painting unlabeled over the vessel class only. The brush
    paints at each stroke point and nothing between them, so one drag covers every 26-connected cluster
    (largest cluster first, voxels in scan order within one); a new op starts only after ``max_points`` points.
    One op instead of one per cluster keeps the draft's op record short: a motion case has hundreds of
    clusters, and every op appended re-reads and re-writes the whole record."""
    components, n = label_components(mask)
    if n == 0:
        return []
    radius_mm = 0.5 * float(min(spacing_mm))
    points = np.argwhere(components)  # [k, 3] int64, row-major order
    ids = components[tuple(points.T)]
    sizes = np.bincount(ids, minlength=n + 1)
    rank = np.empty(n + 1, dtype=np.int64)
    rank[1 + np.argsort(-sizes[1:], kind="stable")] = np.arange(n)
    points = points[np.argsort(rank[ids], kind="stable")].tolist()
    return [
        {
            "op": "brush",
            "center_zyx": points[start],
            "stroke_zyx": points[start + 1 : start + max_points],
            "radius_mm": radius_mm,
            "shape": "sphere",
            "label": UNLABELED,
            "only_class": VESSEL,
        }
        for start in range(0, len(points), max_points)
    ]
