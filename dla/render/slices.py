"""2-D views of volumes for the browser: slices along the three axes, HU windows mapped to 8-bit, class-map
overlays and PNG encoding. Pure numpy/PIL; inputs may be read-only memory maps and are never copied whole.
Also the shared display transform of blinded comparisons: a window floor above the background noise of a
subtracted angiogram's MIPs (``noise_floor_hu``, ``floor_window``), applied alike to every image compared.

Conventions: volumes are ``[z, y, x]`` with ``spacing_mm = (dz, dy, dx)``; z is the head's vertical axis
(slice index grows towards the vertex), y runs anterior->posterior, x right->left (LPS).
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dla.classes import CLASS_COLORS_RGBA

AXES = {"z": 0, "y": 1, "x": 2}
WINDOW_PRESETS_HU = {  # (center, width)
    "vessel": (300.0, 1200.0),
    "bone": (500.0, 2500.0),
    "soft_tissue": (40.0, 400.0),
    "dsa": (200.0, 1000.0),
}


# Window floor of blinded comparisons (see ``noise_floor_hu``): the floor sits this many lower spreads
# (p25 - p10 of the in-volume pixels) above the 25th percentile. On the project's phantoms (24^3..64^3, noise
# sigma 10..30 HU, with and without motion) the brightest pure-noise pixel of any frame lay 6..10.5 spreads
# above p25, so 12 leaves every background black; vessels and artifacts above the noise stay visible.
NOISE_FLOOR_SPREADS = 12.0
NOISE_FLOOR_INSIDE_HU = -100.0  # pixels at or below this are outside the volume (or its partial edge)


class RenderError(ValueError):
    """A rendering request that cannot be served (index out of range, bad window, ...)."""


@dataclass(frozen=True)
class Window:
    center_hu: float
    width_hu: float

    @classmethod
    def parse(cls, center, width, preset: str | None = None) -> "Window":
        if preset:
            if preset not in WINDOW_PRESETS_HU:
                raise RenderError(
                    f"unknown window preset {preset!r}; use one of {', '.join(WINDOW_PRESETS_HU)}"
                )
            return cls(*WINDOW_PRESETS_HU[preset])
        try:
            c, w = float(center), float(width)
        except (TypeError, ValueError):
            raise RenderError(f"window center and width must be numbers, got {center!r} and {width!r}")
        if not (np.isfinite(c) and np.isfinite(w)) or w <= 0 or w > 10000 or abs(c) > 10000:
            raise RenderError(f"window width must be in (0, 10000] HU and |center| <= 10000 HU, got {c}/{w}")
        return cls(c, w)


def slice_2d(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """A 2-D view of ``volume`` ([z, y, x]) at ``index`` along ``axis`` ('z', 'y' or 'x'); shape is
    (y, x) for z, (z, x) for y and (z, y) for x. Raises RenderError for an unknown axis or index."""
    if axis not in AXES:
        raise RenderError(f"unknown axis {axis!r}; use z, y or x")
    n = volume.shape[AXES[axis]]
    if not isinstance(index, int | np.integer) or not 0 <= index < n:
        raise RenderError(f"slice index {index} is outside 0..{n - 1} along {axis}")
    return np.take(volume, int(index), axis=AXES[axis])


def window_to_uint8(values: np.ndarray, window: Window) -> np.ndarray:
    """Map HU values to 0..255 with a linear window (float32 math; any shape)."""
    low = window.center_hu - window.width_hu / 2.0
    scaled = (np.asarray(values, dtype=np.float32) - low) * (255.0 / window.width_hu)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def noise_floor_hu(frames_hu: np.ndarray, *, spreads: float = NOISE_FLOOR_SPREADS) -> float:
    """The HU level that the background noise of a subtracted angiogram's MIP frames does not reach.

    ``frames_hu``: MIP frames of one subtracted (DSA) volume in HU, any shape (e.g. ``[n_angles, h, w]``).
    Pixels above ``NOISE_FLOOR_INSIDE_HU`` count as inside the volume. The maximum of noise along a ray has a
    light upper tail, while vessels and artifacts are sparse bright outliers, so the lower part of the pixel
    distribution measures the noise alone: floor = p25 + ``spreads`` x (p25 - p10), robust to vessels and
    artifacts covering up to about half of the pixels. Never below 0 HU, so a 0 HU background is always at or
    below it. Returns 0.0 when no pixel lies inside the volume. Raises RenderError for non-finite frames or a
    negative ``spreads``."""
    values = np.asarray(frames_hu, dtype=np.float32)
    if not np.isfinite(spreads) or spreads < 0:
        raise RenderError(f"spreads must be a non-negative number, got {spreads!r}")
    if not np.all(np.isfinite(values)):
        raise RenderError("noise floor: the frames contain non-finite values")
    inside = values[values > NOISE_FLOOR_INSIDE_HU]
    if inside.size == 0:
        return 0.0
    p10, p25 = np.percentile(inside, [10, 25])
    return float(max(0.0, p25 + spreads * (p25 - p10)))


def floor_window(window: Window, floor_hu: float) -> Window:
    """``window`` with its lower end raised to ``floor_hu`` (its upper end kept): HU at or below the floor
    map to black, the range above it to the full grey scale. A floor at or above the upper end leaves a
    1 HU wide window just below it. Raises RenderError for a non-finite floor."""
    if not np.isfinite(floor_hu):
        raise RenderError(f"window floor must be finite, got {floor_hu!r}")
    low = window.center_hu - window.width_hu / 2.0
    high = window.center_hu + window.width_hu / 2.0
    low = min(max(low, float(floor_hu)), high - 1.0)
    return Window((low + high) / 2.0, high - low)


def encode_png(image: np.ndarray, *, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 image [h, w] (gray) or [h, w, 4] (RGBA). Compression level 1: fast, small enough."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise RenderError(f"PNG needs a uint8 [h, w] or [h, w, 4] image, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def label_overlay_rgba(labels_2d: np.ndarray, *, opacity: float = 0.5, visible=(1, 2, 3)) -> np.ndarray:
    """RGBA uint8 [h, w, 4] overlay of a uint8 class map; unlabeled and hidden classes are transparent."""
    out = np.zeros((*labels_2d.shape, 4), dtype=np.uint8)
    for class_id, rgba in CLASS_COLORS_RGBA.items():
        if class_id in visible:
            out[labels_2d == class_id] = (*rgba[:3], int(255 * opacity))
    return out
