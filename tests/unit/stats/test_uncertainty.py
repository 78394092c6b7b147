"""Vessel-probability uncertainty (the label-next ranking) against a direct per-voxel computation."""

import numpy as np
import pytest

from dla.stats.uncertainty import UncertaintyError, probability_histogram, vessel_uncertainty


def direct_mean_entropy(prob_u8, min_probability):
    p = prob_u8.astype(np.float64) / 255.0
    p = p[p >= min_probability]
    q = np.clip(p, 1e-12, 1 - 1e-12)
    h = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    h[(p <= 0) | (p >= 1)] = 0.0
    return float(h.mean())


def test_histogram_summary_equals_the_per_voxel_computation():
    rng = np.random.default_rng(0)
    prob = np.zeros((20, 30, 40), np.uint8)
    prob[5:10] = rng.integers(0, 256, (5, 30, 40), dtype=np.uint8)
    s = vessel_uncertainty(probability_histogram(prob))
    assert s.mean_entropy_bits == pytest.approx(direct_mean_entropy(prob, 0.02), rel=1e-12)
    assert s.candidate_voxels == int((prob / 255.0 >= 0.02).sum())
    assert s.uncertain_voxels == int(((prob / 255.0 > 0.2) & (prob / 255.0 < 0.8)).sum())
    assert s.vessel_voxels == int((prob / 255.0 >= 0.5).sum())


def test_a_confident_model_ranks_below_an_unsure_one():
    sure = np.zeros((10, 10, 10), np.uint8)
    sure[2:4] = 255
    sure[4:6] = 3  # nearly certain background, still a candidate at 0.02? 3/255 = 0.012: no
    unsure = sure.copy()
    unsure[6:8] = 128
    a = vessel_uncertainty(probability_histogram(sure))
    b = vessel_uncertainty(probability_histogram(unsure))
    assert a.mean_entropy_bits == 0.0 and b.mean_entropy_bits > 0.4
    assert vessel_uncertainty(probability_histogram(np.zeros((4, 4, 4), np.uint8))).mean_entropy_bits is None


def test_bad_inputs_are_named():
    with pytest.raises(UncertaintyError, match="uint8"):
        probability_histogram(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(UncertaintyError, match="256 non-negative"):
        vessel_uncertainty(np.zeros(10, np.int64))
    with pytest.raises(UncertaintyError, match="min_probability"):
        vessel_uncertainty(np.zeros(256, np.int64), min_probability=0)
