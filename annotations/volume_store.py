"""The volume store: int16 HU volumes and uint8 maps as ``.npy`` files in Django's default storage, read back
through memory maps so a request touches only the slices it needs.

Writes are atomic (temporary file, fsync, rename) and content-addressed by a fresh uuid, so a crash leaves no
half-written file under a name the database knows, and stored files are never rewritten. With S3 storage the
file is uploaded once and read through a local cache directory (``VOLUME_CACHE_DIR``).
"""

import hashlib
import os
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

CHUNK_BYTES = 8 * 1024 * 1024


def _local_root() -> Path | None:
    location = getattr(default_storage, "location", None)
    return Path(location) if location else None


def save_array(array: np.ndarray, *, prefix: str) -> tuple[str, str]:
    """Store ``array`` as ``<prefix>/<uuid>.npy``; return (storage name, sha256 of the file bytes)."""
    name = f"{prefix}/{uuid.uuid4().hex}.npy"
    root = _local_root()
    if root is not None:
        final = root / name
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            digest = sha256_of_path(Path(tmp))
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name, digest
    with tempfile.NamedTemporaryFile(suffix=".npy") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        handle.flush()
        digest = sha256_of_path(Path(handle.name))
        handle.seek(0)
        saved = default_storage.save(name, File(handle))
    return saved, digest


def local_path(name: str) -> Path:
    """A local filesystem path for a stored file (downloaded into the cache once for remote storage)."""
    root = _local_root()
    if root is not None:
        return root / name
    cached = Path(settings.VOLUME_CACHE_DIR) / name
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as out, default_storage.open(name, "rb") as src:
            for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                out.write(chunk)
        os.replace(tmp, cached)
    return cached


@lru_cache(maxsize=64)
def _open_memmap(path: str, mtime_ns: int) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def load_array(name: str) -> np.ndarray:
    """Read-only memory map of a stored array (cached per process; files are immutable)."""
    path = local_path(name)
    return _open_memmap(str(path), path.stat().st_mtime_ns)


def delete_file(name: str) -> None:
    if name and default_storage.exists(name):
        default_storage.delete(name)


def sha256_of_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(name: str, expected_sha256: str) -> bool:
    """True when the stored file exists and its bytes hash to ``expected_sha256``."""
    try:
        return sha256_of_path(local_path(name)) == expected_sha256
    except (FileNotFoundError, OSError):
        return False
