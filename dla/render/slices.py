"""2-D views of volumes for the browser: slices along the three axes, HU windows mapped to 8-bit, class-map
overlays and PNG encoding. Pure numpy/PIL; inputs may be read-only memory maps and are never copied whole.

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
