"""Property-based tests (hypothesis) of the ingest parsers and the labeling core, against independent numpy and
filesystem checks:

- ``safe_archive.extract_zip`` with random member names (separators, ``..``, drive letters, NUL bytes, absolute
  paths), sizes, symlink flags and byte-level damage: it either extracts exactly the members' bytes inside the
  destination or raises ArchiveError leaving nothing behind, and never writes outside the destination.
- ``dicom_io.read_dicom_series`` and ``nifti_io.read_nifti`` on random bytes and on damaged real files: a volume or
  IngestError, never another exception.
- ``edit_ops.parse_op``/``apply_op`` on random op dicts over random label maps: EditOpError with the labels
  untouched, or an OpResult whose bbox is the tight box of the changed voxels and whose counts match
  ``np.bincount`` before/after; a parsed op survives ``op_to_dict`` unchanged.
- ``label_codec``: encode/decode round trip of random maps (sha256 and class counts kept), damaged blobs give
  LabelCodecError, ``diff_labels`` agrees with numpy.

Runs are derandomized (the same examples every time, so ``make test`` is reproducible) and sized for the unit
layer (a few seconds for the file on 2 cores; the slowest properties were halved from 150-600 to 80-250
examples); set ``DLA_HYPOTHESIS_EXPLORE=1`` to draw new random examples, ten times as many.
"""

import os
import stat
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from dla.io.archive import ArchiveError, extract_zip
from dla.io.dicom import IngestError, read_dicom_series
from dla.io.nifti import read_nifti
from dla.labeling.codec import (
    LabelCodecError,
    class_counts,
    decode_labels,
    diff_labels,
    encode_labels,
    labels_sha256,
)
from dla.labeling.edit_ops import OP_TYPES, EditOpError, VolumeContext, apply_op, op_to_dict, parse_op
from tests.dicom_support import write_series

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the damage it reads

EXPLORE = os.environ.get("DLA_HYPOTHESIS_EXPLORE") == "1"


def examples(n: int):
    return settings(
        max_examples=n * (10 if EXPLORE else 1),
        derandomize=not EXPLORE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def mostly(valid, anything, odds: int = 4):
    """``valid`` values ``odds`` times out of ``odds + 1``, ``anything`` otherwise (``st.one_of`` with repeated
    branches does not weight them)."""
    return st.sampled_from([False] * odds + [True]).flatmap(lambda other: anything if other else valid)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (relative, posix) -> file bytes (None for directories)."""
    return {
        p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
        if not p.is_symlink()
    } | {p.relative_to(root).as_posix(): b"<symlink>" for p in root.rglob("*") if p.is_symlink()}


# ------------------------------------------------------------------------------------------------ archives

NAME_PARTS = st.sampled_from(
    ["a", "b.dcm", "DIR", "dir", "..", ".", "", "c:", "C:", "x\\y", "\\", "/", "~", " ", "é", "\x00", "..."]
)
SAFE_NAMES = st.lists(
    st.sampled_from(["a", "b.dcm", "dir", "sub", "c.nii.gz", "é"]), min_size=1, max_size=3
).map("/".join)
MEMBER_NAMES = mostly(
    SAFE_NAMES,
    st.one_of(
        st.lists(NAME_PARTS, min_size=1, max_size=4).map("/".join),
        st.lists(NAME_PARTS, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
        st.text(alphabet="ab./\\:\x00", min_size=1, max_size=8),
    ),
    odds=1,
)
MEMBERS = st.lists(
    st.tuples(
        MEMBER_NAMES,
        mostly(st.binary(max_size=64), st.integers(0, 200_000).map(lambda n: b"\x00" * n)),
        st.sampled_from(["file"] * 6 + ["dir", "symlink"]),
    ),
    min_size=1,
    max_size=6,
)


def write_zip(path: Path, members, compression=zipfile.ZIP_DEFLATED) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are part of the input space
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data, kind in members:
                info = zipfile.ZipInfo(name + "/" if kind == "dir" and not name.endswith("/") else name)
                info.compress_type = compression
                if kind == "symlink":
                    info.create_system = 3
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, b"" if kind == "dir" else data)


def check_extraction(archive: Path, sandbox: Path, cap: int) -> None:
    """Extract into sandbox/dest (holding a sentinel file) and check the all-or-nothing, stay-inside rules."""
    dest = sandbox / "dest"
    dest.mkdir()
    (dest / "sentinel").write_bytes(b"keep")
    before = tree(sandbox)
    try:
        written = extract_zip(archive, dest, max_total_bytes=cap)
    except ArchiveError:
        event("refused")
        assert tree(sandbox) == before, "a refused archive left files behind"
        return
    event("extracted")
    after = tree(sandbox)
    outside = {k for k in after if not (k == "dest" or k.startswith("dest/"))}
    assert outside == {k for k in before if not (k == "dest" or k.startswith("dest/"))}, "wrote outside dest"
    root = dest.resolve()
    for path in written:
        assert path.resolve().is_relative_to(root)
        assert not path.is_symlink()
    new_files = {k for k, v in after.items() if v is not None and k not in before}
    assert new_files == {p.resolve().relative_to(sandbox.resolve()).as_posix() for p in written}
    assert after["dest/sentinel"] == b"keep"
    # every extracted file holds exactly the bytes of its member, and the cap held
    with zipfile.ZipFile(archive) as zf:
        by_name = {}
        for info in zf.infolist():
            if not info.is_dir():
                by_name[
                    tuple(p for p in info.filename.replace("\\", "/").split("/") if p not in ("", "."))
                ] = zf.read(info)
                assert ".." not in info.filename.replace("\\", "/").split("/")
                assert not info.filename.startswith(("/", "\\"))
    total = 0
    for path in written:
        parts = path.resolve().relative_to(root).parts
        assert path.read_bytes() == by_name[parts]
        total += len(by_name[parts])
    assert total <= cap


@examples(100)
@given(members=MEMBERS, cap=mostly(st.integers(5_000, 300_000), st.integers(0, 5_000)))
def test_extract_zip_never_writes_outside_and_is_all_or_nothing(members, cap):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        archive = folder / "upload.zip"
        write_zip(archive, members)
        sandbox = folder / "sandbox"
        sandbox.mkdir()
        check_extraction(archive, sandbox, cap)


@examples(80)
@given(
    data=st.data(),
    members=st.lists(
        st.tuples(st.sampled_from(["a.dcm", "d/b.dcm", "d/e/c.nii"]), st.binary(max_size=300)),
        min_size=1,
        max_size=3,
        unique_by=lambda m: m[0],
    ),
)
def test_damaged_zip_is_refused_cleanly_or_extracted_exactly(data, members):
    compression = data.draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_LZMA]))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        archive = folder / "upload.zip"
        write_zip(archive, [(name, payload, "file") for name, payload in members], compression)
        raw = bytearray(archive.read_bytes())
        flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=6))
        for offset, value in flips:
            raw[offset] = value
        cut = data.draw(st.one_of(st.just(len(raw)), st.integers(0, len(raw))))
        archive.write_bytes(bytes(raw[:cut]))
        sandbox = folder / "sandbox"
        sandbox.mkdir()
        check_extraction(archive, sandbox, cap=10_000)


def _one_member_zip(folder: Path, compression) -> bytearray:
    archive = folder / "upload.zip"
    write_zip(archive, [("d/a.dcm", bytes(range(256)) * 4, "file")], compression)
    return bytearray(archive.read_bytes())


def _future_version(raw: bytearray) -> bytearray:
    at = raw.index(b"PK\x01\x02")  # central directory entry: "version needed to extract" at +6
    raw[at + 6 : at + 8] = (240).to_bytes(2, "little")
    return raw


def _broken_deflate(raw: bytearray) -> bytearray:
    at = raw.index(b"PK\x03\x04")  # local header (30 bytes) + name; the deflate stream follows
    start = (
        at
        + 30
        + int.from_bytes(raw[at + 26 : at + 28], "little")
        + int.from_bytes(raw[at + 28 : at + 30], "little")
    )
    raw[start] = 0xFF  # block type 3 is reserved -> "invalid block type"
    return raw


@pytest.mark.parametrize(
    "damage", [_future_version, _broken_deflate], ids=["zip-version-24.0", "invalid-deflate-block"]
)
def test_damaged_archive_is_an_archive_error(tmp_path, damage):
    raw = damage(_one_member_zip(tmp_path, zipfile.ZIP_DEFLATED))
    (tmp_path / "upload.zip").write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="upload.zip|member"):
        extract_zip(tmp_path / "upload.zip", tmp_path / "out", max_total_bytes=10_000)
    assert not (tmp_path / "out").exists(), "a damaged archive left files behind"


# ---------------------------------------------------------------------------------------------- DICOM/NIfTI


@pytest.fixture(scope="module")
def two_slices(tmp_path_factory):
    """Two slices of a real CT series written by the project's writer: [(name, bytes)]."""
    volume = np.arange(2 * 6 * 5, dtype=np.int16).reshape(2, 6, 5) * 7 - 100
    written = write_series(
        tmp_path_factory.mktemp("dicom"), volume, spacing_mm=(2.0, 0.6, 0.5), origin_lps=(0.0, 0.0, 0.0)
    )
    return [(p.name, p.read_bytes()) for p in written.paths]


def read_series(files: list[tuple[str, bytes]]):
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for name, payload in files:
            path = Path(folder) / name
            path.write_bytes(payload)
            paths.append(path)
        return read_dicom_series(paths)


@examples(100)
@given(payload=st.binary(max_size=2048), dicm=st.booleans())
def test_random_bytes_are_an_ingest_error(payload, dicm):
    if dicm:  # a DICOM preamble + prefix so that the parser goes further
        payload = b"\x00" * 128 + b"DICM" + payload
    with pytest.raises(IngestError):
        read_series([("x.dcm", payload)])


@examples(100)
@given(data=st.data())
def test_damaged_dicom_files_give_a_volume_or_an_ingest_error(two_slices, data):
    (name, first), second = two_slices
    raw = bytearray(first)
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=8))
    for offset, value in flips:
        raw[offset] = value
    cut = data.draw(st.one_of(st.just(len(raw)), st.integers(0, len(raw))))
    try:
        volumes = read_series([(name, bytes(raw[:cut])), second])
    except IngestError:
        event("IngestError")
        return
    event("read")
    for volume in volumes:  # what comes back is a well-formed volume
        assert volume.volume_hu.dtype == np.int16 and volume.volume_hu.ndim == 3
        assert np.all(np.isfinite(volume.spacing_mm)) and np.all(np.asarray(volume.spacing_mm) > 0)


def damaged_element(two_slices, tag_and_vr: bytes, replace) -> list[tuple[str, bytes]]:
    (name, first), second = two_slices
    assert tag_and_vr in first, "the writer no longer writes this element as expected"
    at = first.index(tag_and_vr)
    return [(name, replace(first, at)), second]


@pytest.mark.parametrize(
    "tag_and_vr, replace",
    [
        # BitsAllocated (0028,0100) with an unknown VR "U\0" -> NotImplementedError from pydicom
        (b"\x28\x00\x00\x01US", lambda raw, at: raw[: at + 4] + b"U\x00" + raw[at + 6 :]),
        # RescaleSlope (0028,1053) "1" -> "?" -> ValueError from float()
        (b"\x28\x00\x53\x10DS", lambda raw, at: raw[: at + 8] + b"?" + raw[at + 9 :]),
    ],
    ids=["unknown-VR", "non-numeric-DS"],
)
def test_damaged_header_values_are_an_ingest_error(two_slices, tag_and_vr, replace):
    with pytest.raises(IngestError, match="damaged|not a DICOM|missing|truncated"):
        read_series(damaged_element(two_slices, tag_and_vr, replace))


@examples(60)
@given(payload=st.binary(max_size=1024), gz=st.booleans())
def test_random_bytes_are_not_a_nifti_volume(payload, gz):
    import gzip

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("x.nii.gz" if gz else "x.nii")
        path.write_bytes(gzip.compress(payload) if gz else payload)
        with pytest.raises(IngestError):
            read_nifti(path)


# ------------------------------------------------------------------------------------------------ edit ops

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(-3, 20), max_size=7),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


COORD = mostly(
    st.integers(0, 2), st.one_of(st.integers(-2, 14), st.floats(-2, 14).map(lambda v: float(round(v))))
)
POINT = st.lists(COORD, min_size=3, max_size=3)
CLASS = mostly(st.integers(0, 3), st.integers(-1, 5))
BOX = mostly(
    st.tuples(*[st.tuples(st.integers(0, 1), st.integers(2, 3))] * 3).map(
        lambda t: [v for pair in t for v in pair]
    ),
    st.lists(st.integers(-1, 14), min_size=6, max_size=6),
)
FIELDS = {
    "center_zyx": POINT,
    "at_zyx": POINT,
    "radius_mm": mostly(st.floats(0.3, 6), st.floats(-5, 60)),
    "label": CLASS,
    "shape": st.sampled_from(["circle", "sphere", "sphere", "cube"]),
    "axis": st.sampled_from(["z", "y", "x", "z", "w"]),
    "only_class": st.one_of(st.none(), CLASS),
    "seeds_zyx": st.lists(POINT, max_size=3),
    "stroke_zyx": mostly(st.lists(POINT, max_size=4), JUNK),
    "seed": mostly(st.integers(0, 2**32 - 1), st.integers(-5, 2**33)),
    "slice": mostly(st.integers(0, 2), st.integers(-2, 14)),
    "polygon": st.lists(
        st.lists(st.floats(-3, 16, allow_nan=False), min_size=2, max_size=2), min_size=2, max_size=6
    ),
    "mode": st.sampled_from(["inside", "outside", "both"]),
    "slab": st.one_of(
        st.none(), mostly(st.just([0, 2]), st.lists(st.integers(-2, 14), min_size=2, max_size=2))
    ),
    "box_zyx": st.one_of(st.none(), BOX),
    "from": CLASS,
    "to": CLASS,
    "params": st.one_of(
        st.just({}), st.dictionaries(st.sampled_from(["seed", "balance", "x"]), JUNK, max_size=2)
    ),
    "min_volume_mm3": mostly(st.floats(0.5, 80), st.floats(-5, 1e6)),
    "to_class": CLASS,
    "size_mm": mostly(st.floats(0.3, 6), st.floats(-5, 60)),
    "kernel_mm": mostly(st.floats(0.6, 8), st.floats(-5, 60)),
    "method": st.sampled_from(["median", "opening", "closing", "gaussian"]),
    "margin_mode": st.sampled_from(["grow", "shrink", "grow", "inflate"]),
    "volume_id": mostly(st.integers(1, 10**6), st.one_of(st.integers(-5, 0), JUNK)),
}
REQUIRED = {
    "brush": ("center_zyx", "radius_mm", "label"),
    "remove_island": ("at_zyx",),
    "keep_connected": ("label", "seeds_zyx"),
    "scissors": ("axis", "slice", "polygon"),
    "set_roi": ("box_zyx",),
    "relabel": ("from", "to"),
    "balance": (),
    "recipe": (),
    "keep_largest": ("label",),
    "remove_small": ("min_volume_mm3",),
    "split_island": ("at_zyx", "to_class"),
    "margin": ("label", "margin_mode", "size_mm"),
    "smooth": ("label", "method", "kernel_mm"),
    "model_vessels": ("volume_id",),
}
OPTIONAL = {
    "brush": ("shape", "axis", "only_class", "stroke_zyx"),
    "balance": ("seed",),
    "keep_connected": (),
    "scissors": ("mode", "slab", "label"),
    "relabel": ("box_zyx",),
    "recipe": ("params",),
    "remove_small": ("label",),
    "margin": ("only_class",),
    "smooth": ("only_class",),
    "model_vessels": ("box_zyx", "only_class"),
}


def _value(name: str):
    return mostly(FIELDS[name], JUNK, odds=7)  # one value in eight is junk


def _well_formed(kind: str):
    """An op of ``kind`` with its required fields and some optional ones."""
    key = {"margin_mode": "mode"}.get  # the margin's "mode" draws from its own values
    return st.fixed_dictionaries(
        {"op": st.just(kind), **{key(name, name): _value(name) for name in REQUIRED[kind]}},
        optional={key(name, name): _value(name) for name in OPTIONAL.get(kind, ())},
    )


OP_DICTS = mostly(
    st.one_of(*[_well_formed(kind) for kind in OP_TYPES]),
    st.one_of(
        st.fixed_dictionaries(  # any mix of fields under any op name
            {"op": st.sampled_from([*OP_TYPES, "erase", ""])},
            optional={name: mostly(values, JUNK) for name, values in FIELDS.items()},
        ),
        JUNK,
    ),
)


def label_map(seed: int, shape) -> np.ndarray:
    """A blocky uint8 class map (so that islands and components exist) with some noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, size=tuple(max(1, n // 3) for n in shape), dtype=np.uint8)
    labels = np.kron(coarse, np.ones((3, 3, 3), dtype=np.uint8))[: shape[0], : shape[1], : shape[2]]
    labels = np.pad(labels, [(0, n - m) for n, m in zip(shape, labels.shape, strict=True)])
    noise = rng.random(shape) < 0.05
    labels[noise] = rng.integers(0, 4, size=int(noise.sum()), dtype=np.uint8)
    return np.ascontiguousarray(labels)


SHAPES = st.tuples(st.integers(3, 10), st.integers(3, 12), st.integers(3, 12))
SPACINGS = st.tuples(st.floats(0.3, 3), st.floats(0.3, 3), st.floats(0.3, 3))


@examples(250)
@given(op=OP_DICTS, shape=SHAPES, spacing=SPACINGS, seed=st.integers(0, 2**16))
def test_edit_ops_refuse_cleanly_or_report_exactly_what_changed(op, shape, spacing, seed):
    labels = label_map(seed, shape)
    before = labels.copy()
    rng = np.random.default_rng(seed)
    fill = rng.integers(-1000, 2000, size=shape).astype(np.int16)
    ctx = VolumeContext(spacing, fill_hu=fill, subtracted_hu=(fill // 2).astype(np.int16))
    try:
        result = apply_op(labels, op, ctx)
    except EditOpError:
        event("refused")
        np.testing.assert_array_equal(labels, before)  # a refused op touches nothing
        return
    event(f"applied {op['op']}")
    parsed = parse_op(op, shape, spacing)
    assert parse_op(op_to_dict(parsed), shape, spacing) == parsed  # canonical form round-trips
    assert labels.dtype == np.uint8 and labels.shape == before.shape and int(labels.max(initial=0)) <= 3
    changed = labels != before
    assert result.changed_voxels == int(changed.sum())
    if not changed.any():
        assert result.bbox_zyx is None
    else:
        where = np.argwhere(changed)
        lo, hi = where.min(axis=0), where.max(axis=0) + 1
        assert result.bbox_zyx == (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
        z0, z1, y0, y1, x0, x1 = result.bbox_zyx
        assert changed[z0:z1, y0:y1, x0:x1].sum() == changed.sum()  # the box covers every changed voxel
        np.testing.assert_array_equal(result.previous, before[z0:z1, y0:y1, x0:x1])  # the undo patch
    delta = (
        np.bincount(labels.ravel(), minlength=4)[:4].astype(int)
        - np.bincount(before.ravel(), minlength=4)[:4]
    )
    assert result.delta_counts == {c: int(delta[c]) for c in range(4)}
    assert sum(result.delta_counts.values()) == 0


@examples(200)
@given(op=OP_DICTS, shape=SHAPES, spacing=SPACINGS)
def test_parse_op_accepts_or_raises_edit_op_error(op, shape, spacing):
    try:
        parsed = parse_op(op, shape, spacing)
    except EditOpError as exc:
        assert str(exc)  # the message names the problem
        return
    assert op_to_dict(parsed)["op"] == op["op"]


# --------------------------------------------------------------------------------------------- label codec


@examples(100)
@given(
    shape=st.tuples(st.integers(0, 9), st.integers(0, 12), st.integers(0, 12)),
    seed=st.integers(0, 2**16),
    noise=st.floats(0, 1),
)
def test_label_codec_round_trip(shape, seed, noise):
    labels = label_map(seed, shape) if 0 not in shape else np.zeros(shape, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    flip = rng.random(shape) < noise
    labels[flip] = rng.integers(0, 4, size=int(flip.sum()), dtype=np.uint8)
    blob = encode_labels(labels)
    decoded = decode_labels(blob, shape)
    assert decoded.dtype == np.uint8 and decoded.shape == labels.shape
    np.testing.assert_array_equal(decoded, labels)
    assert labels_sha256(decoded) == labels_sha256(labels)
    counts = np.bincount(labels.ravel(), minlength=4)
    assert class_counts(decoded) == {c: int(counts[c]) for c in range(4)}
    # a strided view encodes the same as its contiguous copy
    if labels.shape[2] > 1:
        view = labels[:, :, ::2]
        np.testing.assert_array_equal(decode_labels(encode_labels(view), view.shape), view)


@examples(100)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_damaged_label_blobs_are_a_codec_error(data, seed):
    shape = (4, 5, 6)
    blob = bytearray(encode_labels(label_map(seed, shape)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)), min_size=1, max_size=4)
    )
    for offset, value in flips:
        blob[offset] = value
    cut = data.draw(st.integers(0, len(blob)))
    try:
        decoded = decode_labels(bytes(blob[:cut]), shape)
    except LabelCodecError:
        event("LabelCodecError")
        return
    event("decoded")
    assert decoded.shape == shape and decoded.dtype == np.uint8


@examples(150)
@given(shape=SHAPES, seeds=st.tuples(st.integers(0, 2**16), st.integers(0, 2**16)))
def test_diff_labels_agrees_with_numpy(shape, seeds):
    a, b = label_map(seeds[0], shape), label_map(seeds[1], shape)
    assume(a.shape == b.shape)
    diff = diff_labels(a, b)
    changed = a != b
    assert diff.changed_voxels == int(changed.sum())
    np.testing.assert_array_equal(diff.changed_mask, changed)
    for (src, dst), n in diff.transitions.items():
        assert src != dst and n == int(np.sum((a == src) & (b == dst)))
    assert sum(diff.transitions.values()) == diff.changed_voxels
    for c in range(4):
        assert diff.gained[c] - diff.lost[c] == int(np.sum(b == c)) - int(np.sum(a == c))
