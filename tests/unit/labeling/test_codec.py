"""Tests of dla.labeling.codec: exact round trips, stable hashes, size, counts and diffs."""

import hashlib
import struct

import numpy as np
import pytest
from scipy import ndimage as ndi

from dla.labeling.codec import (
    LabelCodecError,
    class_counts,
    decode_labels,
    diff_labels,
    encode_labels,
    labels_sha256,
)


def structured_map(shape=(48, 64, 64), seed=0):
    """Recipe-like map: smooth blobs of soft tissue/bone/vessel from thresholded smoothed noise."""
    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.normal(size=shape), 4)
    lab = np.zeros(shape, np.uint8)
    lab[f > -0.02] = 3
    lab[f > 0.03] = 2
    lab[np.abs(f) < 0.002] = 1
    return lab


@pytest.mark.parametrize(
    "lab",
    [
        structured_map(),
        np.random.default_rng(1).integers(0, 4, (17, 13, 11), dtype=np.uint8),
        np.zeros((1, 1, 1), np.uint8),
        np.full((3, 4, 5), 3, np.uint8),
        np.zeros((0, 4, 5), np.uint8),
    ],
)
def test_roundtrip_exact(lab):
    blob = encode_labels(lab)
    out = decode_labels(blob, lab.shape)
    assert out.dtype == np.uint8 and out.shape == lab.shape
    np.testing.assert_array_equal(out, lab)


def test_roundtrip_non_contiguous():
    lab = structured_map()[:, ::2, 1:]
    np.testing.assert_array_equal(decode_labels(encode_labels(lab), lab.shape), lab)


def test_size_well_below_raw_on_recipe_like_map():
    z, y, x = np.ogrid[:64, :64, :64]
    r = np.sqrt(((z - 32) / 28) ** 2 + ((y - 32) / 30) ** 2 + ((x - 32) / 29) ** 2)
    lab = np.zeros((64, 64, 64), np.uint8)
    lab[r < 0.85] = 3
    lab[(r >= 0.85) & (r < 1.0)] = 2
    lab[((y - 30) ** 2 + (z - 30) ** 2 <= 4) & (r < 0.8)] = 1
    assert len(encode_labels(lab)) < 0.03 * lab.nbytes


def test_size_bounded_by_runs():
    lab = structured_map()
    flat = lab.ravel()
    runs = 1 + int(np.count_nonzero(flat[1:] != flat[:-1]))
    assert (
        len(encode_labels(lab)) <= 32 + 5 * runs + 64
    )  # never worse than the raw run list (+ zlib overhead)


def test_decode_validates():
    lab = structured_map()
    blob = encode_labels(lab)
    with pytest.raises(LabelCodecError, match="does not match the expected shape"):
        decode_labels(blob, (48, 64, 63))
    with pytest.raises(LabelCodecError, match="bad magic"):
        decode_labels(b"XXXX" + blob[4:], lab.shape)
    with pytest.raises(LabelCodecError, match="too short"):
        decode_labels(blob[:10], lab.shape)
    with pytest.raises(LabelCodecError, match="corrupt"):
        decode_labels(blob[:-7], lab.shape)
    # consistent header but payload of another size
    other = encode_labels(np.zeros((48, 64, 32), np.uint8))
    forged = struct.pack("<4sBB2xQQQ", b"DLAL", 1, 1, 48, 64, 64) + other[32:]
    with pytest.raises(LabelCodecError, match="decoded size"):
        decode_labels(forged, lab.shape)


def test_encode_validates():
    with pytest.raises(LabelCodecError, match="uint8"):
        encode_labels(np.zeros((2, 2, 2), np.int16))
    with pytest.raises(LabelCodecError, match="uint8"):
        encode_labels(np.zeros((2, 2), np.uint8))
    with pytest.raises(LabelCodecError, match="class id 9"):
        encode_labels(np.full((2, 2, 2), 9, np.uint8))


def test_sha256_stable_and_sensitive():
    lab = structured_map()
    h = labels_sha256(lab)
    ref = hashlib.sha256(struct.pack("<QQQ", *lab.shape) + lab.tobytes()).hexdigest()
    assert h == ref
    assert labels_sha256(lab.copy()) == h
    assert labels_sha256(decode_labels(encode_labels(lab), lab.shape)) == h
    other = lab.copy()
    other[5, 5, 5] = (other[5, 5, 5] + 1) % 4
    assert labels_sha256(other) != h
    assert labels_sha256(lab.reshape(64, 48, 64)) != h  # shape is part of the hash


def test_class_counts():
    lab = structured_map()
    ref = np.bincount(lab.ravel(), minlength=4)
    assert class_counts(lab) == {c: int(ref[c]) for c in range(4)}
    with pytest.raises(LabelCodecError):
        class_counts(np.full((2, 2, 2), 5, np.uint8))


def test_diff_transitions():
    a = structured_map(seed=2)
    b = a.copy()
    rng = np.random.default_rng(3)
    b[10:20, 5:30, 7:9] = rng.integers(0, 4, (10, 25, 2))
    b[30, 40, 50] = (a[30, 40, 50] + 1) % 4
    d = diff_labels(a, b)
    changed = a != b
    np.testing.assert_array_equal(d.changed_mask, changed)
    assert d.changed_voxels == changed.sum() == sum(d.transitions.values())
    for (f, t), n in d.transitions.items():
        assert f != t and n == int(((a == f) & (b == t)).sum())
    ca, cb = class_counts(a), class_counts(b)
    for c in range(4):
        assert d.gained[c] - d.lost[c] == cb[c] - ca[c]
    idx = np.argwhere(changed)
    lo, hi = idx.min(0), idx.max(0) + 1
    assert d.bbox_zyx == (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
    assert d.to_dict()["changed_voxels"] == d.changed_voxels
    same = diff_labels(a, a.copy())
    assert same.changed_voxels == 0 and same.bbox_zyx is None and same.transitions == {}
    with pytest.raises(LabelCodecError, match="shapes"):
        diff_labels(a, a[:, :, :3])
