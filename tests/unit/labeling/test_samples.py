"""Tests of dla.labeling.samples: paper-style undersampling counts, correctness and reproducibility."""

import numpy as np
import pytest

from dla.classes import BONE, SOFT_TISSUE, VESSEL
from dla.labeling.samples import SamplesError, load_samples_npz, save_samples_npz, training_samples


def make_labels(n_vessel=300, n_bone=5000, n_soft=9000, shape=(24, 40, 40), seed=0):
    rng = np.random.default_rng(seed)
    lab = np.zeros(int(np.prod(shape)), np.uint8)
    perm = rng.permutation(lab.size)
    lab[perm[:n_vessel]] = VESSEL
    lab[perm[n_vessel : n_vessel + n_bone]] = BONE
    lab[perm[n_vessel + n_bone : n_vessel + n_bone + n_soft]] = SOFT_TISSUE
    return lab.reshape(shape)


def test_counts_and_classes():
    lab = make_labels()
    s = training_samples(lab, seed=1)
    assert s.dtype == np.int32 and s.shape == (900, 4)
    assert [int((s[:, 3] == c).sum()) for c in (VESSEL, BONE, SOFT_TISSUE)] == [300, 300, 300]
    np.testing.assert_array_equal(lab[s[:, 0], s[:, 1], s[:, 2]], s[:, 3])
    assert len({tuple(r) for r in s[:, :3]}) == len(s)  # no duplicates
    v = s[s[:, 3] == VESSEL, :3]
    np.testing.assert_array_equal(
        np.sort(np.ravel_multi_index(v.T, lab.shape)), np.flatnonzero(lab == VESSEL)
    )


def test_fewer_if_class_has_fewer():
    lab = make_labels(n_vessel=400, n_bone=150, n_soft=9000)
    s = training_samples(lab, seed=0)
    assert [int((s[:, 3] == c).sum()) for c in (VESSEL, BONE, SOFT_TISSUE)] == [400, 150, 400]


def test_reproducible_and_seeded():
    lab = make_labels()
    a = training_samples(lab, seed=5)
    np.testing.assert_array_equal(a, training_samples(lab.copy(), seed=5))
    b = training_samples(lab, seed=6)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a[a[:, 3] == VESSEL], b[b[:, 3] == VESSEL])  # all vessels always


def test_roi_restricts():
    lab = make_labels()
    roi = np.zeros(lab.shape, bool)
    roi[:12] = True
    s = training_samples(lab, seed=0, roi_mask=roi)
    assert (s[:, 0] < 12).all()
    assert (s[:, 3] == VESSEL).sum() == ((lab == VESSEL) & roi).sum()
    with pytest.raises(SamplesError, match="roi_mask shape"):
        training_samples(lab, seed=0, roi_mask=roi[:, :, :3])


def test_no_vessel_raises():
    lab = make_labels(n_vessel=0)
    with pytest.raises(SamplesError, match="no vessel voxels"):
        training_samples(lab, seed=0)
    lab = make_labels()
    roi = np.zeros(lab.shape, bool)
    with pytest.raises(SamplesError, match="inside the ROI"):
        training_samples(lab, seed=0, roi_mask=roi)


def test_npz_roundtrip(tmp_path):
    s = training_samples(make_labels(), seed=2)
    p = tmp_path / "s.npz"
    save_samples_npz(p, s, {"seed": 2, "labels_sha256": "ab"})
    s2, meta = load_samples_npz(p)
    np.testing.assert_array_equal(s, s2)
    assert meta == {"seed": 2, "labels_sha256": "ab"}
    with pytest.raises(SamplesError):
        save_samples_npz(p, np.zeros((3, 3)))
