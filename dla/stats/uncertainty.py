"""How unsure a model is about a study's vessels: the binary entropy of its vessel probability, used to rank
unlabeled studies so an annotator labels first where the model knows least (active learning, issue 14.2).

The workbench stores the vessel probability as uint8 (probability x 255), so the whole volume reduces to a
256-bin histogram (``probability_histogram``) from which every summary follows exactly (``vessel_uncertainty``).
The mean is taken over the voxels the model did not rule out (probability >= ``min_probability``, default 0.02):
outside the candidates the probability is 0 and the entropy 0, so a mean over the whole head would only measure
how much vessel a head holds. Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

PROBABILITY_LEVELS = 256
DEFAULT_MIN_PROBABILITY = 0.02
UNCERTAIN_RANGE = (0.2, 0.8)


class UncertaintyError(ValueError):
    """The input is not a uint8 probability volume or a 256-bin histogram; the message says which."""


def probability_histogram(vessel_prob_u8: np.ndarray) -> np.ndarray:
    """int64 [256]: voxel counts per stored probability level of a uint8 ``vessel_prob_u8`` (any shape)."""
    a = np.asarray(vessel_prob_u8)
    if a.dtype != np.uint8:
        raise UncertaintyError(
            f"vessel probability must be stored as uint8 (probability x 255), got {a.dtype}"
        )
    return np.bincount(a.ravel(), minlength=PROBABILITY_LEVELS).astype(np.int64)


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    h = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    return np.where((p <= 0) | (p >= 1), 0.0, h)


@dataclass(frozen=True)
class VesselUncertainty:
    """Summary of one vessel probability volume.

    mean_entropy_bits: mean binary entropy (bits, 0..1) over the candidate voxels (probability >=
    ``min_probability``); None when there is none. candidate_voxels: their number. uncertain_voxels: voxels with a
    probability inside ``UNCERTAIN_RANGE`` (0.2-0.8). vessel_voxels: voxels with probability >= 0.5."""

    mean_entropy_bits: float | None
    candidate_voxels: int
    uncertain_voxels: int
    vessel_voxels: int
    min_probability: float

    def to_dict(self) -> dict:
        return asdict(self)


def vessel_uncertainty(
    histogram: np.ndarray, *, min_probability: float = DEFAULT_MIN_PROBABILITY
) -> VesselUncertainty:
    """Summarise a 256-bin histogram of uint8 probabilities (``probability_histogram``)."""
    h = np.asarray(histogram)
    if h.shape != (PROBABILITY_LEVELS,) or h.dtype.kind not in "iu" or (h < 0).any():
        raise UncertaintyError(f"expected 256 non-negative voxel counts, got {h.dtype} {h.shape}")
    if not (isinstance(min_probability, (int, float)) and math.isfinite(min_probability)) or not (
        0 < min_probability <= 1
    ):
        raise UncertaintyError(f"min_probability must be in (0, 1], got {min_probability!r}")
    p = np.arange(PROBABILITY_LEVELS) / (PROBABILITY_LEVELS - 1)
    cand = p >= min_probability - 1e-12
    n = int(h[cand].sum())
    mean = float((h[cand] * _entropy_bits(p[cand])).sum() / n) if n else None
    lo, hi = UNCERTAIN_RANGE
    return VesselUncertainty(
        mean_entropy_bits=mean,
        candidate_voxels=n,
        uncertain_voxels=int(h[(p > lo) & (p < hi)].sum()),
        vessel_voxels=int(h[p >= 0.5].sum()),
        min_probability=float(min_probability),
    )
