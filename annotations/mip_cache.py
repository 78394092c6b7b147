"""The MIP cache: rendered MIP images (PNG bytes) in the volume store, keyed by the content they show.

A key names the voxels (the sha256 of a volume or of a label version), the view (angle, tilt), the window (or
the label class) and the image size, so cached bytes never go stale: the key doubles as an HTTP ETag and the
response can be marked immutable. Writes are atomic (temporary file + rename); two processes rendering the same
key write the same bytes. The cine task fills the cache for ``CINE_ANGLES`` angles after ingest and commits;
requests for other angles render on demand and store their result too.

Also here: per-process LRU caches of prepared (subsampled float32) volumes for the MIP renderer and of decoded
label versions, keyed by sha256 (content-addressed, so never stale).
"""

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from dla.render.mip import MipVolume, prepare_mip_volume
from dla.render.slices import Window

CINE_ANGLES = 36
CINE_SIZE = 256
CACHE_PREFIX = "mip_cache"


def cine_angles(n: int = CINE_ANGLES) -> list[float]:
    """``n`` evenly spaced angles in degrees from 0 (0, 10, ..., 350 for 36)."""
    return [round(360.0 * i / n, 1) for i in range(n)]


def normalize_angle(angle_deg: float) -> float:
    """Angle in [0, 360) rounded to 0.1 degree (the cache's resolution)."""
    return round(float(angle_deg) % 360.0, 1) % 360.0


def image_key(sha256: str, *, angle_deg: float, tilt_deg: float, window: Window, size: int) -> str:
    return (
        f"{sha256[:40]}-a{normalize_angle(angle_deg):.1f}-t{round(float(tilt_deg), 1):.1f}"
        f"-c{window.center_hu:g}-w{window.width_hu:g}-s{int(size)}"
    )


def label_key(sha256: str, *, angle_deg: float, tilt_deg: float, class_id: int, size: int) -> str:
    return (
        f"{sha256[:40]}-a{normalize_angle(angle_deg):.1f}-t{round(float(tilt_deg), 1):.1f}"
        f"-l{int(class_id)}-s{int(size)}"
    )


def _name(key: str) -> str:
    return f"{CACHE_PREFIX}/{key[:2]}/{key}.png"


def _local_root() -> Path | None:
    location = getattr(default_storage, "location", None)
    return Path(location) if location else None


def get(key: str) -> bytes | None:
    """Cached PNG bytes for ``key`` or None."""
    root = _local_root()
    try:
        if root is not None:
            return (root / _name(key)).read_bytes()
        with default_storage.open(_name(key), "rb") as handle:
            return handle.read()
    except (FileNotFoundError, OSError):
        return None


def put(key: str, data: bytes) -> None:
    """Store ``data`` under ``key`` (atomic; an existing entry is left as is, its bytes are the same)."""
    root = _local_root()
    if root is None:
        if not default_storage.exists(_name(key)):
            default_storage.save(_name(key), ContentFile(data))
        return
    final = root / _name(key)
    if final.exists():
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def has(key: str) -> bool:
    root = _local_root()
    if root is not None:
        return (root / _name(key)).exists()
    return default_storage.exists(_name(key))


class _Lru:
    """A tiny thread-safe LRU mapping (the web server may run threads)."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get_or_make(self, key, make):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


_prepared = _Lru(int(getattr(settings, "DLA_MIP_PREPARED_CACHE", 3)))
_decoded_labels = _Lru(int(getattr(settings, "DLA_LABEL_DECODE_CACHE", 4)))


def prepared_volume(sha256: str, load, spacing_mm, *, background: float = -1024.0) -> MipVolume:
    """The subsampled volume for MIPs (``load()`` gives the [z, y, x] array), cached per process."""
    return _prepared.get_or_make(
        (sha256, background), lambda: prepare_mip_volume(load(), spacing_mm, background=background)
    )


def decoded_labels(sha256: str, decode) -> np.ndarray:
    """A decoded label version (``decode()`` gives the uint8 [z, y, x] array), cached per process."""
    return _decoded_labels.get_or_make(sha256, decode)


# ------------------------------------------------------------------------------------------------ rendering


def volume_mip_png(
    sha256: str, load, spacing_mm, *, angle_deg: float, tilt_deg: float, window: Window, size: int
) -> tuple[str, bytes, bool]:
    """(key, PNG bytes, cache hit) of a windowed MIP of an image volume; renders and stores on a miss."""
    from dla.render.mip import rotated_mip
    from dla.render.slices import encode_png, window_to_uint8

    key = image_key(sha256, angle_deg=angle_deg, tilt_deg=tilt_deg, window=window, size=size)
    data = get(key)
    if data is not None:
        return key, data, True
    prepared = prepared_volume(sha256, load, spacing_mm)
    image = rotated_mip(prepared, angle_deg=normalize_angle(angle_deg), tilt_deg=tilt_deg, out_size=size)
    data = encode_png(window_to_uint8(image, window))
    put(key, data)
    return key, data, False


def label_mip_rgba(labels: np.ndarray, spacing_mm, *, class_id: int, angle_deg, tilt_deg, size) -> np.ndarray:
    """RGBA uint8 [size, size, 4] MIP of one class of a uint8 label map, in the class colour; alpha follows the
    projected (interpolated) class fraction so thin vessels fade rather than vanish."""
    import torch

    from dla.classes import CLASS_COLORS_RGBA
    from dla.render.mip import rotated_mip

    prepared = prepare_mip_volume(labels, spacing_mm, background=0.0)
    mask = MipVolume(
        tensor=(prepared.tensor == float(class_id)).to(torch.float32),
        spacing_mm=prepared.spacing_mm,
        background=0.0,
        stride=prepared.stride,
    )
    projected = rotated_mip(mask, angle_deg=normalize_angle(angle_deg), tilt_deg=tilt_deg, out_size=size)
    alpha = np.clip(projected * 2.0, 0.0, 1.0)
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = CLASS_COLORS_RGBA.get(class_id, (255, 255, 255, 255))[:3]
    rgba[..., 3] = np.round(alpha * 230).astype(np.uint8)
    return rgba
