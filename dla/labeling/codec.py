"""Compact storage, hashing, counting and diffing of uint8 [z, y, x] label maps.

Format (version 1): 32-byte header ``b"DLAL" | u8 version | u8 method | 2 pad | 3 x u64 shape (z, y, x)``
followed by a zlib (level 6) stream of the run-length encoding of the C-order voxels: ``n`` run values
(uint8) then ``n`` run lengths (uint32 little endian). Measured on a 512x512x400 recipe output: RLE+zlib6 is
~0.4% of the raw size in ~0.15 s, versus zlib6 on raw bytes ~1% in ~0.7 s and zlib1 ~1.7% in 0.23 s; lzma on
the RLE stream is smaller still but its time grows badly on noisy maps, so zlib was kept (see
bench/bench_labeling.py). ``decode_labels`` validates magic, version, shape and the decoded size.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"DLAL"
VERSION = 1
METHOD_RLE_ZLIB = 1
_HEADER = struct.Struct("<4sBB2xQQQ")
ZLIB_LEVEL = 6
MAX_LABEL = 3


class LabelCodecError(ValueError):
    """A label map or an encoded blob is invalid (wrong dtype, shape, size, header or class ids)."""


def _check_labels(labels) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.ndim != 3:
        raise LabelCodecError(
            f"labels must be a uint8 [z, y, x] array, got {getattr(labels, 'dtype', type(labels).__name__)} "
            f"with shape {getattr(labels, 'shape', None)}"
        )
    return labels


def _runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run values (uint8) and lengths (uint32) of a 1D uint8 array (non-empty)."""
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([np.zeros(1, dtype=np.int64), change])
    lengths = np.diff(np.concatenate([starts, np.array([flat.size], dtype=np.int64)]))
    return flat[starts], lengths.astype("<u4")


def encode_labels(labels: np.ndarray) -> bytes:
    """Encode a uint8 [z, y, x] label map (class ids 0..3) to a self-describing compressed blob."""
    labels = _check_labels(labels)
    if labels.size >= 2**32:
        raise LabelCodecError(f"label map too large ({labels.size} voxels, max 2^32 - 1)")
    if labels.size and int(labels.max()) > MAX_LABEL:
        raise LabelCodecError(f"labels contain class id {int(labels.max())} > {MAX_LABEL}")
    header = _HEADER.pack(MAGIC, VERSION, METHOD_RLE_ZLIB, *labels.shape)
    if labels.size == 0:
        return header + zlib.compress(b"", ZLIB_LEVEL)
    vals, lens = _runs(np.ascontiguousarray(labels).ravel())
    return header + zlib.compress(vals.tobytes() + lens.tobytes(), ZLIB_LEVEL)


def decode_labels(blob: bytes, shape_zyx) -> np.ndarray:
    """Decode a blob from ``encode_labels``; ``shape_zyx`` must match the stored shape. Returns uint8 [z,y,x]."""
    shape = tuple(int(n) for n in shape_zyx)
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) < _HEADER.size:
        raise LabelCodecError("blob is too short to hold a label-map header")
    magic, version, method, *stored = _HEADER.unpack_from(blob, 0)
    if magic != MAGIC:
        raise LabelCodecError("blob is not an encoded label map (bad magic)")
    if version != VERSION or method != METHOD_RLE_ZLIB:
        raise LabelCodecError(f"unsupported label codec version {version} / method {method}")
    if tuple(stored) != shape:
        raise LabelCodecError(f"stored shape {tuple(stored)} does not match the expected shape {shape}")
    try:
        payload = zlib.decompress(bytes(blob[_HEADER.size :]))
    except zlib.error as e:
        raise LabelCodecError(f"corrupt label blob: {e}")
    n_vox = int(np.prod(shape))
    if len(payload) % 5 != 0:
        raise LabelCodecError(f"corrupt label blob: payload of {len(payload)} bytes is not n runs x 5 bytes")
    n = len(payload) // 5
    vals = np.frombuffer(payload, dtype=np.uint8, count=n)
    lens = np.frombuffer(payload, dtype="<u4", count=n, offset=n)
    total = int(lens.sum(dtype=np.int64))
    if total != n_vox:
        raise LabelCodecError(f"decoded size {total} voxels does not match shape {shape} ({n_vox} voxels)")
    return np.repeat(vals, lens.astype(np.intp)).reshape(shape)


def labels_sha256(labels: np.ndarray) -> str:
    """Hex sha256 of shape + C-order bytes of a uint8 [z, y, x] label map (stable across platforms)."""
    labels = _check_labels(labels)
    h = hashlib.sha256()
    h.update(struct.pack("<QQQ", *labels.shape))
    h.update(np.ascontiguousarray(labels).data)
    return h.hexdigest()


def class_counts(labels: np.ndarray) -> dict[int, int]:
    """Voxel count per class id {0: n, 1: n, 2: n, 3: n} of a uint8 label map (ids > 3 raise)."""
    labels = _check_labels(labels)
    counts = {c: int(np.count_nonzero(labels == c)) for c in (1, 2, 3)}
    counts[0] = int(np.count_nonzero(labels == 0))
    if sum(counts.values()) != labels.size:
        raise LabelCodecError(f"labels contain class ids > {MAX_LABEL}")
    return {c: counts[c] for c in (0, 1, 2, 3)}


@dataclass
class LabelDiff:
    """Difference a -> b: ``changed_mask`` bool [z,y,x]; ``transitions`` {(from, to): n} with from != to;
    ``gained``/``lost`` per class; ``bbox_zyx`` half-open (z0, z1, y0, y1, x0, x1) or None; ``changed_voxels``."""

    changed_mask: np.ndarray
    changed_voxels: int
    transitions: dict[tuple[int, int], int]
    gained: dict[int, int]
    lost: dict[int, int]
    bbox_zyx: tuple[int, int, int, int, int, int] | None

    def to_dict(self) -> dict:
        """JSON-serializable summary (without the mask)."""
        return {
            "changed_voxels": self.changed_voxels,
            "transitions": [[a, b, n] for (a, b), n in sorted(self.transitions.items())],
            "gained": {str(k): v for k, v in self.gained.items()},
            "lost": {str(k): v for k, v in self.lost.items()},
            "bbox_zyx": list(self.bbox_zyx) if self.bbox_zyx else None,
        }


def diff_labels(a: np.ndarray, b: np.ndarray) -> LabelDiff:
    """Compare two uint8 [z, y, x] label maps of equal shape."""
    a, b = _check_labels(a), _check_labels(b)
    if a.shape != b.shape:
        raise LabelCodecError(f"cannot diff label maps of shapes {a.shape} and {b.shape}")
    changed = a != b
    n = int(np.count_nonzero(changed))
    classes = (0, 1, 2, 3)
    if n == 0:
        zero = dict.fromkeys(classes, 0)
        return LabelDiff(changed, 0, {}, dict(zero), dict(zero), None)
    pair = a[changed].astype(np.uint16) * 256 + b[changed]
    cnt = np.bincount(pair, minlength=65536)
    nz = np.flatnonzero(cnt)
    transitions = {(int(p // 256), int(p % 256)): int(cnt[p]) for p in nz}
    gained = dict.fromkeys(classes, 0)
    lost = dict.fromkeys(classes, 0)
    for (f, t), k in transitions.items():
        lost[f] = lost.get(f, 0) + k
        gained[t] = gained.get(t, 0) + k
    za = np.flatnonzero(changed.any(axis=(1, 2)))
    ya = np.flatnonzero(changed.any(axis=(0, 2)))
    xa = np.flatnonzero(changed.any(axis=(0, 1)))
    bbox = tuple(int(v) for v in (za[0], za[-1] + 1, ya[0], ya[-1] + 1, xa[0], xa[-1] + 1))
    return LabelDiff(changed, n, transitions, gained, lost, bbox)
