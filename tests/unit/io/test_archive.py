"""Tests for dla.io.archive: traversal, absolute paths, symlinks, bombs, size caps, lying sizes."""

import stat
import zipfile

import pytest

from dla.io.archive import ArchiveError, extract_zip


def _zip(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members:
            if isinstance(name, zipfile.ZipInfo):
                zf.writestr(name, data)
            else:
                zf.writestr(name, data)
    return path


def _listing(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_extracts_nested_members(tmp_path):
    z = _zip(tmp_path / "a.zip", [("dir/one.dcm", b"1" * 10), ("dir/sub/two.dcm", b"22"), ("three.txt", b"")])
    out = tmp_path / "out"
    files = extract_zip(z, out, max_total_bytes=1000)
    assert sorted(p.relative_to(out).as_posix() for p in files) == [
        "dir/one.dcm",
        "dir/sub/two.dcm",
        "three.txt",
    ]
    assert (out / "dir/sub/two.dcm").read_bytes() == b"22"


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "..\\evil.txt"])
def test_refuses_traversal(tmp_path, name):
    z = _zip(tmp_path / "a.zip", [("ok.txt", b"x"), (name, b"x")])
    with pytest.raises(ArchiveError, match=r"path traversal \('\.\.'\) not allowed"):
        extract_zip(z, tmp_path / "out", max_total_bytes=1000)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["/etc/evil.txt", "C:/evil.txt", "\\abs\\evil.txt"])
def test_refuses_absolute_paths(tmp_path, name):
    z = _zip(tmp_path / "a.zip", [(name, b"x")])
    with pytest.raises(ArchiveError, match="absolute path") as exc:
        extract_zip(z, tmp_path / "out", max_total_bytes=1000)
    assert repr(name) in str(exc.value)


def test_refuses_symlink(tmp_path):
    info = zipfile.ZipInfo("link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(tmp_path / "a.zip", [(info, "/etc/passwd")])
    with pytest.raises(ArchiveError, match="'link'.*symbolic link"):
        extract_zip(z, tmp_path / "out", max_total_bytes=1000)


def test_refuses_zip_bomb_ratio(tmp_path):
    z = _zip(tmp_path / "bomb.zip", [("small.txt", b"hello"), ("zeros.bin", b"\0" * (8 << 20))])
    info = zipfile.ZipFile(z).getinfo("zeros.bin")
    assert info.file_size / info.compress_size > 100  # independent check that the member is a bomb
    with pytest.raises(ArchiveError, match=r"'zeros.bin'.*compression ratio \d+:1 exceeds 100:1"):
        extract_zip(z, tmp_path / "out", max_total_bytes=1 << 30)
    assert not (tmp_path / "out").exists()


def test_tiny_highly_compressible_member_is_fine(tmp_path):
    z = _zip(tmp_path / "a.zip", [("pad.bin", b"\0" * 4096)])
    assert len(extract_zip(z, tmp_path / "out", max_total_bytes=1 << 20)) == 1


def test_refuses_total_size_over_cap(tmp_path):
    z = _zip(tmp_path / "a.zip", [("a.bin", bytes(range(256)) * 4), ("b.bin", bytes(range(256)) * 4)])
    with pytest.raises(
        ArchiveError, match=r"'b.bin'.*total uncompressed size 2048 bytes exceeds the limit of 1500"
    ):
        extract_zip(z, tmp_path / "out", max_total_bytes=1500)


def test_refuses_too_many_members(tmp_path):
    z = _zip(tmp_path / "a.zip", [(f"f{i}.txt", b"x") for i in range(11)])
    with pytest.raises(ArchiveError, match="11 members, more than the limit of 10"):
        extract_zip(z, tmp_path / "out", max_total_bytes=1000, max_members=10)


def _patch_declared_size(path, member_data_len, fake_size):
    """Rewrite the uncompressed size in the local and central headers of a single-member zip."""
    raw = bytearray(path.read_bytes())
    real = member_data_len.to_bytes(4, "little")
    fake = fake_size.to_bytes(4, "little")
    local = raw.index(b"PK\x03\x04")
    assert raw[local + 22 : local + 26] == real
    raw[local + 22 : local + 26] = fake
    central = raw.index(b"PK\x01\x02")
    assert raw[central + 24 : central + 28] == real
    raw[central + 24 : central + 28] = fake
    path.write_bytes(bytes(raw))


def test_lying_declared_size_is_caught_and_cleaned_up(tmp_path):
    import random

    data = random.Random(0).randbytes(200_000)
    z = tmp_path / "lie.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.txt", b"fine")
    with zipfile.ZipFile(z, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("liar.bin", data)
    # patch only the second member: find its headers after the first one
    raw = bytearray(z.read_bytes())
    fake = (1000).to_bytes(4, "little")
    idx_local = raw.index(b"PK\x03\x04", raw.index(b"PK\x03\x04") + 4)
    raw[idx_local + 22 : idx_local + 26] = fake
    idx_central = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 4)
    raw[idx_central + 24 : idx_central + 28] = fake
    z.write_bytes(bytes(raw))
    assert zipfile.ZipFile(z).getinfo("liar.bin").file_size == 1000
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.me").write_bytes(b"pre-existing")
    with pytest.raises(ArchiveError, match="'liar.bin'"):
        extract_zip(z, out, max_total_bytes=1 << 20)
    assert _listing(out) == ["keep.me"]  # good.txt extracted first, then removed


def test_counts_actual_bytes_against_cap(tmp_path):
    z = _zip(tmp_path / "a.zip", [("data.bin", bytes(range(256)) * 400)], compression=zipfile.ZIP_STORED)
    _patch_declared_size(z, 256 * 400, 100)
    with pytest.raises(ArchiveError, match="'data.bin'"):
        extract_zip(z, tmp_path / "out", max_total_bytes=1000)
    assert not (tmp_path / "out").exists()


def test_refuses_overwrite_and_duplicates(tmp_path):
    z = _zip(tmp_path / "a.zip", [("a.txt", b"new")])
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_bytes(b"old")
    with pytest.raises(ArchiveError, match="already exists"):
        extract_zip(z, out, max_total_bytes=1000)
    assert (out / "a.txt").read_bytes() == b"old"
    with pytest.warns(UserWarning):
        z2 = _zip(tmp_path / "b.zip", [("x.txt", b"1"), ("x.txt", b"2")])
    with pytest.raises(ArchiveError, match="duplicate"):
        extract_zip(z2, tmp_path / "out2", max_total_bytes=1000)


def test_not_a_zip(tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveError, match="not a valid zip"):
        extract_zip(p, tmp_path / "out", max_total_bytes=1000)
