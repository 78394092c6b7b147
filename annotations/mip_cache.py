"""The one MIP cache: rotated MIP frames of image volumes and of label classes, computed once, stored in the
volume store and shared by the annotator's viewer (``render_views``) and the reader study
(``reader_study.services``).

A frame is the projection itself, before any display transform: int16 HU for an image volume, uint8 projected
class fraction x 255 for one class of a label map. Its key names the voxels (the sha256 of the volume or of the
label version), the view (angle and tilt to 0.1 degree), what is projected (HU or a class) and the size, so a
stored frame never goes stale: the key doubles as an HTTP ETag. Display is per request and cheap: a window and a
PNG for the viewer (``image_png``, ``label_png``); the reader study windows the same frames into its fixed-size
PNGs. Storage layout: ``mip_cache/<key[:2]>/<key>.npy``, written atomically (temporary file + rename), so two
processes computing one frame write the same bytes.

One way to compute a missing frame: ``frame(source, view)`` (load from the cache, else render and store). One
way to precompute: ``fill_cine(source)`` renders the ``CINE_ANGLES`` upright angles at ``CINE_SIZE``; the
``compute_cine`` task (after ingest, inference and commits) and the reader-study task call it. The reader
study's frames are the viewer's cine frames (same size, same angles), so a study whose volumes were ingested or
inferred has its frames ready before it opens. Requests store only upright ``CINE_SIZE`` frames (at most 3,600
angles per source, 128 kB each) and the cine task its own; other sizes and tilts are rendered per request
(their ETag still lets the browser keep them), so no request pattern can fill the disk.

Bounded work per request: ``dla.render.mip`` caps the size and the sampling grid of one frame (well under
256 MB). Per process at most ``DLA_RENDER_CONCURRENCY`` frames (default 1) render at once, each with
``DLA_RENDER_THREADS`` torch threads (default 1, so renders leave cores to everything else); a request waits at
most ``DLA_RENDER_WAIT_S`` seconds (default 30) for a slot, and at most ``DLA_RENDER_QUEUE`` requests (default 2)
for views outside the cine may wait at all: beyond that they get a 503 at once (``RenderBusy``), so renders
can hold only a few of a server's threads and slices stay fast. Cine frames always wait their turn (each is
rendered once, then served from the cache). Also here: per-process LRU caches of prepared (subsampled float32)
volumes and class masks, and of decoded label versions, keyed by content (never stale).
"""

import io
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from rest_framework import exceptions, status

from dla.classes import CLASS_COLORS_RGBA
from dla.render.mip import MIP_RENDERER_VERSION, MipVolume, check_view, prepare_mip_volume, rotated_mip
from dla.render.slices import Window, encode_png, window_to_uint8

CINE_ANGLES = 36
CINE_SIZE = 256
CACHE_PREFIX = "mip_cache"
IMAGE_BACKGROUND_HU = -1024.0


class RenderBusy(exceptions.APIException):
    """Every render slot of this process stayed busy for ``DLA_RENDER_WAIT_S``: a 503 with ``Retry-After``
    (DRF's handler sends ``wait`` as that header), try again."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    wait = 2
    default_detail = "The server is busy rendering other images; try again in a few seconds."
    default_code = "render_busy"


# ------------------------------------------------------------------------------------------------ keys


def cine_angles(n: int = CINE_ANGLES) -> list[float]:
    """``n`` evenly spaced angles in degrees from 0 (0, 10, ..., 350 for 36)."""
    return [round(360.0 * i / n, 1) for i in range(n)]


_CINE_ANGLE_SET = frozenset(cine_angles())


def normalize_angle(angle_deg: float) -> float:
    """Angle in [0, 360) rounded to 0.1 degree (the cache's resolution)."""
    return round(float(angle_deg) % 360.0, 1) % 360.0


@dataclass(frozen=True)
class View:
    """Where a frame looks from: ``angle_deg`` in [0, 360) and ``tilt_deg`` in [-90, 90], both to 0.1 degree
    (the frame is rendered at exactly these values), and ``size`` pixels square. Build it with ``View.of``."""

    angle_deg: float
    tilt_deg: float
    size: int

    @classmethod
    def of(cls, angle_deg: float = 0.0, tilt_deg: float = 0.0, size: int = CINE_SIZE) -> "View":
        """A checked view (``RenderError`` names a bad angle, tilt or size)."""
        check_view(float(angle_deg), float(tilt_deg), size)
        return cls(normalize_angle(angle_deg), round(float(tilt_deg), 1) + 0.0, int(size))


@dataclass(frozen=True)
class Source:
    """What a frame projects: an image volume (``class_id`` None: HU) or one class of a label map.

    ``content`` names the voxels (a sha256; for a draft its revision tag), ``load()`` gives the [z, y, x] array
    (called only when a frame must be rendered and the prepared volume is not in this process's LRU), and
    ``stored`` says whether frames go to the shared cache (not for drafts, which change)."""

    content: str
    load: Callable[[], np.ndarray]
    spacing_mm: tuple[float, float, float]
    class_id: int | None = None
    stored: bool = True


def volume_source(volume) -> Source:
    """The HU frames of an ``annotations.Volume``."""
    return Source(volume.sha256, volume.array, tuple(volume.spacing_mm))


def version_source(version, class_id: int) -> Source:
    """The class-``class_id`` frames of a ``LabelVersion`` (immutable, so stored)."""
    from . import labels

    return Source(
        version.sha256,
        lambda: decoded_labels(version.sha256, lambda: labels.version_labels(version)),
        tuple(labels.label_grid(version.study).spacing_mm),
        class_id=int(class_id),
    )


def draft_source(draft, class_id: int) -> Source:
    """The class-``class_id`` frames of a draft at its current revision (rendered, never stored)."""
    from . import labels

    return Source(
        f"draft{draft.pk}-r{draft.revision}",
        lambda: labels.draft_array(draft),
        tuple(labels.label_grid(draft.study).spacing_mm),
        class_id=int(class_id),
        stored=False,
    )


def frame_key(source: Source, view: View) -> str:
    """The frame's cache key: the voxels, the view and the renderer's version (frames of an older renderer, e.g.
    with its ring artifact, are not served again; they are re-rendered)."""
    what = "hu" if source.class_id is None else f"l{source.class_id}"
    return (
        f"{source.content[:40]}-a{view.angle_deg:.1f}-t{view.tilt_deg:.1f}-{what}-s{view.size}"
        f"-r{MIP_RENDERER_VERSION}"
    )


# ------------------------------------------------------------------------------------------------ storage


def _name(key: str) -> str:
    return f"{CACHE_PREFIX}/{key[:2]}/{key}.npy"


def _local_root() -> Path | None:
    location = getattr(default_storage, "location", None)
    return Path(location) if location else None


def load_frame(key: str) -> np.ndarray | None:
    """The stored frame under ``key``, or None."""
    root = _local_root()
    try:
        if root is not None:
            data = (root / _name(key)).read_bytes()
        else:
            with default_storage.open(_name(key), "rb") as handle:
                data = handle.read()
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (FileNotFoundError, OSError, ValueError):
        return None


def store_frame(key: str, frame: np.ndarray) -> None:
    """Store ``frame`` under ``key`` (atomic; an existing entry is left as is, its bytes are the same)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(frame), allow_pickle=False)
    data = buffer.getvalue()
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


def has_frame(key: str) -> bool:
    root = _local_root()
    if root is not None:
        return (root / _name(key)).exists()
    return default_storage.exists(_name(key))


# ------------------------------------------------------------------------------------------------ per process


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


_prepared = _Lru(int(getattr(settings, "DLA_MIP_PREPARED_CACHE", 4)))
_decoded_labels = _Lru(int(getattr(settings, "DLA_LABEL_DECODE_CACHE", 4)))
_render_slots = threading.BoundedSemaphore(max(1, int(getattr(settings, "DLA_RENDER_CONCURRENCY", 1))))
_admission = threading.Lock()
_admitted = 0  # requests for views outside the cine that hold or wait for a render slot


def decoded_labels(sha256: str, decode) -> np.ndarray:
    """A decoded label version (``decode()`` gives the uint8 [z, y, x] array), cached per process."""
    return _decoded_labels.get_or_make(sha256, decode)


def prepared(source: Source) -> MipVolume:
    """The subsampled volume (or class mask) of ``source`` for the MIP renderer, cached per process."""

    def make():
        if source.class_id is None:
            return prepare_mip_volume(source.load(), source.spacing_mm, background=IMAGE_BACKGROUND_HU)
        return prepare_mip_volume(source.load(), source.spacing_mm, class_id=source.class_id)

    return _prepared.get_or_make((source.content, source.class_id), make)


@contextmanager
def render_slot(*, cine: bool = False):
    """Hold one of this process's render slots. ``RenderBusy`` when the slot stays taken for
    ``DLA_RENDER_WAIT_S`` seconds, or at once for a view outside the cine (``cine`` False) when
    ``DLA_RENDER_CONCURRENCY + DLA_RENDER_QUEUE`` such requests already render or wait."""
    global _admitted
    if not cine:
        limit = max(1, int(getattr(settings, "DLA_RENDER_CONCURRENCY", 1)))
        limit += max(0, int(getattr(settings, "DLA_RENDER_QUEUE", 2)))
        with _admission:
            if _admitted >= limit:
                raise RenderBusy()
            _admitted += 1
    try:
        if not _render_slots.acquire(timeout=float(getattr(settings, "DLA_RENDER_WAIT_S", 30.0))):
            raise RenderBusy()
        try:
            yield
        finally:
            _render_slots.release()
    finally:
        if not cine:
            with _admission:
                _admitted -= 1


@contextmanager
def _render_threads():
    """Render with ``DLA_RENDER_THREADS`` torch threads (default 1: on a small machine a render using every
    core would starve the slices and pages served beside it), restored afterwards."""
    import torch

    wanted = max(1, int(getattr(settings, "DLA_RENDER_THREADS", 1)))
    previous = torch.get_num_threads()
    if wanted == previous:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------------ frames


@dataclass(frozen=True)
class Frame:
    key: str
    array: np.ndarray  # int16 HU, or uint8 class fraction x 255; [size, size]
    hit: bool  # True when it came from the cache


def render_frame(source: Source, view: View) -> np.ndarray:
    """Render one frame of ``source`` now (no cache lookup, no store): int16 HU [size, size] for an image, uint8
    round(255 x projected class fraction) for a class."""
    image = rotated_mip(
        prepared(source), angle_deg=view.angle_deg, tilt_deg=view.tilt_deg, out_size=view.size
    )
    if source.class_id is None:
        return np.clip(np.round(image), -32768, 32767).astype(np.int16)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def is_cine_view(view: View) -> bool:
    """True for the views ``fill_cine`` precomputes (upright, ``CINE_SIZE``, a ``CINE_ANGLES`` angle)."""
    return view.tilt_deg == 0 and view.size == CINE_SIZE and view.angle_deg in _CINE_ANGLE_SET


def is_stored_view(view: View) -> bool:
    """True for the views whose frames go to the cache: upright at ``CINE_SIZE`` (any 0.1-degree angle)."""
    return view.tilt_deg == 0 and view.size == CINE_SIZE


def frame(source: Source, view: View, *, store: bool = False) -> Frame:
    """The frame of ``source`` at ``view``: from the cache, else rendered under a render slot. A rendered frame
    is stored when the source is storable and the view is (``is_stored_view``) or ``store`` says so (the cine
    task's frames of any size)."""
    key = frame_key(source, view)
    if source.stored:
        cached = load_frame(key)
        if cached is not None:
            return Frame(key, cached, True)
    keep = source.stored and (store or is_stored_view(view))
    with render_slot(cine=is_cine_view(view)), _render_threads():
        if keep:  # rendered by another request while this one waited for the slot
            cached = load_frame(key)
            if cached is not None:
                return Frame(key, cached, True)
        array = render_frame(source, view)
        if keep:
            store_frame(key, array)
    return Frame(key, array, False)


def cine_views(size: int = CINE_SIZE, n_angles: int = CINE_ANGLES) -> list[View]:
    return [View.of(angle, 0.0, size) for angle in cine_angles(n_angles)]


def cached_angles(source: Source, *, size: int = CINE_SIZE, n_angles: int = CINE_ANGLES) -> list[float]:
    """The cine angles of ``source`` whose frames are in the cache."""
    return [v.angle_deg for v in cine_views(size, n_angles) if has_frame(frame_key(source, v))]


def fill_cine(source: Source, *, size: int = CINE_SIZE, n_angles: int = CINE_ANGLES, progress=None) -> int:
    """Render and store the missing upright cine frames of ``source``; returns how many were rendered.
    ``progress(fraction, angle_deg)`` is called after each angle. Idempotent."""
    views = cine_views(size, n_angles)
    computed = 0
    for index, view in enumerate(views):
        if not has_frame(frame_key(source, view)):
            computed += not frame(source, view, store=True).hit
        if progress is not None:
            progress((index + 1) / len(views), view.angle_deg)
    return computed


# ------------------------------------------------------------------------------------------------ display


def image_etag(key: str, window: Window) -> str:
    return f"{key}-c{window.center_hu:g}-w{window.width_hu:g}"


def image_png(frame_hu: np.ndarray, window: Window) -> bytes:
    """The viewer's PNG of an image frame: the HU windowed to 8-bit gray."""
    return encode_png(window_to_uint8(frame_hu, window))


def label_rgba(frame_fraction: np.ndarray, class_id: int) -> np.ndarray:
    """RGBA uint8 [h, w, 4] of a class frame in the class colour; alpha follows the projected (interpolated)
    class fraction (twice it, capped, at most 230) so thin vessels fade rather than vanish."""
    fraction = frame_fraction.astype(np.float32) / 255.0
    rgba = np.zeros((*frame_fraction.shape, 4), dtype=np.uint8)
    rgba[..., :3] = CLASS_COLORS_RGBA.get(class_id, (255, 255, 255, 255))[:3]
    rgba[..., 3] = np.round(np.clip(fraction * 2.0, 0.0, 1.0) * 230).astype(np.uint8)
    return rgba


def label_png(frame_fraction: np.ndarray, class_id: int) -> bytes:
    return encode_png(label_rgba(frame_fraction, class_id))
