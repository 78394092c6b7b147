"""Safe extraction of uploaded zip archives (pure standard library).

:func:`extract_zip` validates the whole archive before writing anything - member count, member names
(no absolute paths, drive letters, ``..`` components, NUL bytes or duplicates), no symlinks, no encrypted
members, declared total uncompressed size and per-member / whole-archive compression ratios (zip bombs) -
then extracts while counting the bytes actually produced (declared sizes can lie) and checking CRCs. Any
failure raises :class:`ArchiveError` naming the member, and everything extracted so far is removed, so an
archive is either fully extracted or leaves nothing behind. Existing files are never overwritten.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

__all__ = ["ArchiveError", "extract_zip", "RATIO_MIN_BYTES"]

#: Compression ratios are only checked for members (and archives) at least this large when uncompressed:
#: tiny files (e.g. a few hundred zero bytes) legitimately compress more than 100:1.
RATIO_MIN_BYTES = 64 * 1024
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive is unsafe or damaged; the message names the member."""


def _safe_parts(name: str) -> tuple[str, ...]:
    """Validated relative path components of a member name, or ArchiveError."""
    if "\x00" in name:
        raise ArchiveError(f"member {name!r}: NUL byte in name")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) >= 2 and norm[1] == ":"):
        raise ArchiveError(f"member {name!r}: absolute path not allowed")
    parts = tuple(p for p in PurePosixPath(norm).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise ArchiveError(f"member {name!r}: path traversal ('..') not allowed")
    if not parts:
        raise ArchiveError(f"member {name!r}: empty path")
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def extract_zip(
    zip_path: Path | str,
    dest_dir: Path | str,
    *,
    max_total_bytes: int,
    max_ratio: float = 100,
    max_members: int = 100_000,
) -> list[Path]:
    """Extract ``zip_path`` into ``dest_dir`` (created if needed) and return the extracted file paths.

    Refuses (ArchiveError) too many members (> ``max_members``), unsafe names, symlinks, encrypted members,
    a declared or actual total uncompressed size above ``max_total_bytes``, a compression ratio above
    ``max_ratio`` (per member and overall, for sizes >= RATIO_MIN_BYTES), members producing more bytes than
    declared, CRC errors and targets that already exist. On any error, files and directories created by this
    call are removed.
    """
    zip_path, dest = Path(zip_path), Path(dest_dir)
    try:
        zf = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise ArchiveError(f"{zip_path}: file not found")
    except Exception as exc:  # BadZipFile, OSError, undecodable names, unsupported features...
        raise ArchiveError(f"{zip_path.name}: not a valid zip archive ({type(exc).__name__}: {exc})")

    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise ArchiveError(f"{zip_path.name}: {len(infos)} members, more than the limit of {max_members}")
        seen: set[tuple[str, ...]] = set()
        plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        total = 0
        total_compressed = 0
        for info in infos:
            parts = _safe_parts(info.filename)
            if _is_symlink(info):
                raise ArchiveError(f"member {info.filename!r}: symbolic links are not allowed")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"member {info.filename!r}: encrypted members are not supported")
            key = tuple(p.lower() for p in parts)
            if key in seen:
                raise ArchiveError(f"member {info.filename!r}: duplicate name")
            seen.add(key)
            if info.is_dir():
                plan.append((info, parts))
                continue
            total += info.file_size
            total_compressed += info.compress_size
            if total > max_total_bytes:
                raise ArchiveError(
                    f"member {info.filename!r}: total uncompressed size {total} bytes exceeds the limit "
                    f"of {max_total_bytes} bytes"
                )
            if info.file_size >= RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
                ratio = info.file_size / max(info.compress_size, 1)
                raise ArchiveError(
                    f"member {info.filename!r}: compression ratio {ratio:.0f}:1 exceeds {max_ratio:g}:1 "
                    "(possible zip bomb)"
                )
            plan.append((info, parts))
        if total >= RATIO_MIN_BYTES and total > max_ratio * max(total_compressed, 1):
            raise ArchiveError(
                f"{zip_path.name}: overall compression ratio {total / max(total_compressed, 1):.0f}:1 exceeds "
                f"{max_ratio:g}:1 (possible zip bomb)"
            )

        dest_existed = dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        created_files: list[Path] = []
        created_dirs: list[Path] = []
        written = 0
        try:
            for info, parts in plan:
                target = root.joinpath(*parts)
                # guard against symlinks already present inside dest_dir
                parent = target.parent
                missing = []
                while not parent.exists():
                    missing.append(parent)
                    parent = parent.parent
                if not (parent.resolve() == root or parent.resolve().is_relative_to(root)):
                    raise ArchiveError(f"member {info.filename!r}: resolves outside the destination")
                for d in reversed(missing):
                    d.mkdir()
                    created_dirs.append(d)
                if info.is_dir():
                    if not target.exists():
                        target.mkdir()
                        created_dirs.append(target)
                    elif not target.is_dir() or target.is_symlink():
                        raise ArchiveError(f"member {info.filename!r}: target exists and is not a directory")
                    continue
                if target.exists() or target.is_symlink():
                    raise ArchiveError(f"member {info.filename!r}: target {target} already exists")
                produced = 0
                fd = os.open(
                    target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644
                )
                created_files.append(target)
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    while True:
                        chunk = src.read(_CHUNK)
                        if not chunk:
                            break
                        produced += len(chunk)
                        written += len(chunk)
                        if produced > info.file_size:
                            raise ArchiveError(
                                f"member {info.filename!r}: produces more than its declared {info.file_size} bytes"
                            )
                        if written > max_total_bytes:
                            raise ArchiveError(
                                f"member {info.filename!r}: extracted size exceeds the limit of "
                                f"{max_total_bytes} bytes"
                            )
                        out.write(chunk)
                if produced != info.file_size:
                    raise ArchiveError(
                        f"member {info.filename!r}: produced {produced} bytes, declared {info.file_size}"
                    )
        except ArchiveError:
            _cleanup(created_files, created_dirs, dest if not dest_existed else None)
            raise
        except Exception as exc:  # damaged data: zlib/lzma errors, unsupported zip versions, CRC, EOF...
            _cleanup(created_files, created_dirs, dest if not dest_existed else None)
            name = info.filename if "info" in locals() else "?"
            raise ArchiveError(f"member {name!r}: damaged or unreadable ({type(exc).__name__}: {exc})")
        except BaseException:
            _cleanup(created_files, created_dirs, dest if not dest_existed else None)
            raise
    return created_files


def _cleanup(files: list[Path], dirs: list[Path], created_dest: Path | None) -> None:
    for f in files:
        try:
            f.unlink()
        except FileNotFoundError:
            pass
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            pass
    if created_dest is not None:
        shutil.rmtree(created_dest, ignore_errors=True)
