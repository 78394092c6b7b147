"""Residual bone artifact analysis for 3D-DSA / 3D-DLA angiograms (paper: "Results", 37% (23/62) of 3D-DSA).

An angiogram should contain only opacified vessels; bright signal inside the reference bone class is a
residual bone (mis-registration) artifact. ``residual_bone`` counts voxels at or above a HU threshold inside
the reference bone mask after a small erosion, flags the study when a connected bright cluster is large
enough, and optionally breaks the count down by named anatomical regions (otic capsule, nasal cavity, skull
base, vault). ``cohort_artifact_rate`` turns per-study flags into the paper's frequency ("23/62 (37.1%)").
Pure numpy/scipy, no Django.

Decisions:
* The bone mask is eroded by ``erode_voxels`` (default 1, 6-connected) before counting. The outermost layer of
  the reference bone label is where partial-volume voxels and vessels abutting bone (carotid canal, sigmoid
  sinus, dural sinuses along the vault) sit; counting it would flag almost every study because of real
  vessels. Mis-registration from inter-sweep motion of more than a voxel leaves bright bone well inside the
  mask and survives the erosion; sub-voxel edge ripples are deliberately not counted. The volume border is
  not treated as a bone edge (erosion uses border value 1). ``erode_voxels=0`` disables the erosion.
* ``present`` uses the largest 26-connected cluster of bright voxels (>= ``min_cluster_voxels``), not the
  total count, so scattered noise voxels above the threshold inside large bone volumes do not add up to a
  false artifact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from dla.stats.metrics import format_frequency

__all__ = ["ArtifactError", "ResidualBone", "cohort_artifact_rate", "residual_bone"]


class ArtifactError(ValueError):
    """Bad input to the artifact analysis; the message names the problem."""


@dataclass(frozen=True)
class ResidualBone:
    """Residual bone result for one angiogram.

    n_bright_voxels: voxels >= bright_hu inside the evaluated (eroded) bone mask.
    n_bone_voxels: voxels of the evaluated (eroded) bone mask.
    fraction_of_bone: n_bright_voxels / n_bone_voxels, None when the eroded mask is empty (see ``reason``).
    largest_cluster_voxels: size of the largest 26-connected bright cluster (0 when none).
    present: largest_cluster_voxels >= min_cluster_voxels.
    by_region: bright-voxel count inside each region mask (regions may overlap; counts need not sum to the
    total), empty when no regions were given.
    """

    n_bright_voxels: int
    n_bone_voxels: int
    fraction_of_bone: float | None
    largest_cluster_voxels: int
    present: bool
    by_region: dict[str, int] = field(default_factory=dict)
    reason: str = ""


def residual_bone(
    angiogram_hu: np.ndarray,
    bone_mask: np.ndarray,
    *,
    bright_hu: float = 300.0,
    min_cluster_voxels: int = 20,
    erode_voxels: int = 1,
    regions: Mapping[str, np.ndarray] | None = None,
) -> ResidualBone:
    """Count bright (residual bone) voxels of an angiogram inside the reference bone class.

    angiogram_hu: int16 (any integer or float dtype accepted) HU volume [z, y, x], e.g. a 3D-DSA or 3D-DLA.
    bone_mask: bool [z, y, x], reference bone class (e.g. ``labels == BONE``).
    bright_hu: HU threshold; voxels with value >= bright_hu count as bright.
    min_cluster_voxels: smallest 26-connected bright cluster that makes the artifact ``present``.
    erode_voxels: 6-connected erosion iterations applied to bone_mask first (0 = none); see module docstring.
    regions: optional {name: bool mask [z, y, x]} for the location breakdown (evaluated inside the eroded
    bone mask as well).
    Raises ArtifactError on shape/dtype problems or invalid parameters.
    """
    angiogram_hu = np.asarray(angiogram_hu)
    bone_mask = np.asarray(bone_mask)
    if angiogram_hu.ndim != 3:
        raise ArtifactError(f"angiogram_hu must be 3-D [z, y, x], got shape {angiogram_hu.shape}")
    if not (np.issubdtype(angiogram_hu.dtype, np.integer) or np.issubdtype(angiogram_hu.dtype, np.floating)):
        raise ArtifactError(f"angiogram_hu must be numeric HU, got dtype {angiogram_hu.dtype}")
    if angiogram_hu.dtype == np.bool_:
        raise ArtifactError("angiogram_hu must be numeric HU, got dtype bool")
    if bone_mask.shape != angiogram_hu.shape:
        raise ArtifactError(
            f"shape mismatch: angiogram_hu {angiogram_hu.shape} vs bone_mask {bone_mask.shape}"
        )
    if bone_mask.dtype != np.bool_:
        raise ArtifactError(f"bone_mask must be boolean, got dtype {bone_mask.dtype}")
    if isinstance(erode_voxels, bool) or int(erode_voxels) != erode_voxels or erode_voxels < 0:
        raise ArtifactError(f"erode_voxels must be a non-negative integer, got {erode_voxels!r}")
    if isinstance(min_cluster_voxels, bool) or int(min_cluster_voxels) != min_cluster_voxels:
        raise ArtifactError(f"min_cluster_voxels must be a positive integer, got {min_cluster_voxels!r}")
    if min_cluster_voxels < 1:
        raise ArtifactError(f"min_cluster_voxels must be a positive integer, got {min_cluster_voxels!r}")
    if not np.isfinite(bright_hu):
        raise ArtifactError(f"bright_hu must be finite, got {bright_hu!r}")
    region_masks: dict[str, np.ndarray] = {}
    for name, mask in (regions or {}).items():
        mask = np.asarray(mask)
        if mask.shape != angiogram_hu.shape:
            raise ArtifactError(
                f"shape mismatch: region {name!r} {mask.shape} vs angiogram_hu {angiogram_hu.shape}"
            )
        if mask.dtype != np.bool_:
            raise ArtifactError(f"region {name!r} must be a boolean mask, got dtype {mask.dtype}")
        region_masks[str(name)] = mask

    evaluated = bone_mask
    if erode_voxels > 0 and bone_mask.any():
        evaluated = ndimage.binary_erosion(
            bone_mask,
            structure=ndimage.generate_binary_structure(3, 1),
            iterations=int(erode_voxels),
            border_value=1,
        )
    n_bone = int(np.count_nonzero(evaluated))
    bright = evaluated & (angiogram_hu >= bright_hu)
    n_bright = int(np.count_nonzero(bright))
    largest = 0
    if n_bright:
        labels, n_labels = ndimage.label(bright, structure=np.ones((3, 3, 3), dtype=bool))
        largest = int(np.bincount(labels.ravel())[1:].max()) if n_labels else 0
    reason = ""
    fraction: float | None
    if n_bone == 0:
        fraction = None
        reason = "bone mask is empty"
        if bone_mask.any():
            reason = f"bone mask is empty after {erode_voxels}-voxel erosion"
    else:
        fraction = n_bright / n_bone
    by_region = {name: int(np.count_nonzero(bright & mask)) for name, mask in region_masks.items()}
    return ResidualBone(
        n_bright_voxels=n_bright,
        n_bone_voxels=n_bone,
        fraction_of_bone=fraction,
        largest_cluster_voxels=largest,
        present=bool(largest >= min_cluster_voxels),
        by_region=by_region,
        reason=reason,
    )


def cohort_artifact_rate(results: Sequence[ResidualBone]) -> tuple[int, int, float, str]:
    """Frequency of studies with a residual bone artifact.

    Returns (n_present, n_total, pct in percent, text like "23/62 (37.1%)"). Raises ArtifactError for an
    empty cohort or non-ResidualBone items.
    """
    results = list(results)
    if not results:
        raise ArtifactError("no studies: cannot compute an artifact rate")
    for r in results:
        if not isinstance(r, ResidualBone):
            raise ArtifactError(f"expected ResidualBone results, got {type(r).__name__}")
    n_present = sum(1 for r in results if r.present)
    n_total = len(results)
    return n_present, n_total, 100.0 * n_present / n_total, format_frequency(n_present, n_total)
