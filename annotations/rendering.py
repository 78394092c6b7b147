"""Rendering of volumes for the browser: slices along the three axes, windowing to 8-bit, PNG encoding, and
maximum intensity projections (MIPs) along an axis or at any rotation about the head's vertical axis with an
optional tilt. Pure numpy/torch/PIL; inputs may be read-only memory maps and are never copied whole.

Conventions: volumes are ``[z, y, x]`` with ``spacing_mm = (dz, dy, dx)``; z is the head's vertical axis
(slice index grows towards the vertex), y runs anterior->posterior, x right->left (LPS). A rotated MIP at
``angle_deg = 0`` looks along +y (a frontal, AP view); 90 degrees is a lateral view. Output images have rows =
superior at the top.
"""

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

AXES = {"z": 0, "y": 1, "x": 2}
WINDOW_PRESETS_HU = {  # (center, width)
    "vessel": (300.0, 1200.0),
    "bone": (500.0, 2500.0),
    "soft_tissue": (40.0, 400.0),
    "dsa": (200.0, 1000.0),
}
CLASS_COLORS_RGBA = {1: (230, 50, 50, 255), 2: (240, 230, 140, 255), 3: (80, 160, 255, 255)}


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


def axis_mip(volume: np.ndarray, axis: str) -> np.ndarray:
    """Maximum along ``axis`` of ``volume`` [z, y, x] (reads the volume once, in slabs for memory maps)."""
    if axis not in AXES:
        raise RenderError(f"unknown axis {axis!r}; use z, y or x")
    return np.max(volume, axis=AXES[axis])


def _rotation_matrix(angle_deg: float, tilt_deg: float) -> np.ndarray:
    """3x3 rotation (in (x, y, z) mm space): about z by ``angle_deg``, then about x by ``tilt_deg``."""
    a, t = np.deg2rad(angle_deg), np.deg2rad(tilt_deg)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    return about_x @ about_z


def rotated_mip(
    volume: np.ndarray,
    spacing_mm,
    angle_deg: float,
    *,
    tilt_deg: float = 0.0,
    max_voxels: int = 12_000_000,
    out_size: int = 256,
    background: float = -1024.0,
) -> np.ndarray:
    """MIP of ``volume`` (int16 or float [z, y, x], any value units) viewed from ``angle_deg`` about the
    vertical (z) axis and tilted by ``tilt_deg`` about the horizontal (x) axis.

    The volume is first subsampled by an integer stride so at most ``max_voxels`` are resampled (keeps a new
    angle well under a second for a 512x512x400 head), then resampled (trilinear, torch grid_sample) on an
    isotropic ``out_size``^3 grid covering the volume's physical bounding sphere, and the maximum is taken along
    the viewing direction. Returns float32 [out_size, out_size], row 0 = superior.
    """
    if not (np.isfinite(angle_deg) and np.isfinite(tilt_deg)) or abs(tilt_deg) > 90:
        raise RenderError(
            f"angle must be finite and tilt within [-90, 90] degrees, got {angle_deg}/{tilt_deg}"
        )
    if not 16 <= out_size <= 1024:
        raise RenderError(f"MIP size must be within 16..1024 pixels, got {out_size}")
    shape = np.array(volume.shape)
    stride = max(1, int(np.ceil((shape.prod() / max_voxels) ** (1 / 3))))
    small = np.asarray(volume[::stride, ::stride, ::stride], dtype=np.float32)
    spacing = np.asarray(spacing_mm, dtype=np.float64) * stride  # (dz, dy, dx) of the subsampled grid
    extent_xyz = np.array(
        [small.shape[2] * spacing[2], small.shape[1] * spacing[1], small.shape[0] * spacing[0]]
    )
    radius = 0.5 * float(np.linalg.norm(extent_xyz))
    # Output grid: u (image columns) along rotated x, v (rows) along rotated -z, w (depth) along rotated y.
    lin = torch.linspace(-radius, radius, out_size, dtype=torch.float32)
    depth_n = max(out_size, 32)
    w_lin = torch.linspace(-radius, radius, depth_n, dtype=torch.float32)
    rot = torch.as_tensor(_rotation_matrix(angle_deg, tilt_deg), dtype=torch.float32)
    with torch.inference_mode():
        tensor = torch.from_numpy(small)[None, None]  # [1, 1, Z, Y, X]
        result = torch.full((out_size, out_size), float(background))
        half = torch.as_tensor(extent_xyz / 2.0, dtype=torch.float32)
        chunk = max(1, 4_000_000 // (out_size * out_size))
        for start in range(0, depth_n, chunk):
            w = w_lin[start : start + chunk]
            vv, uu = torch.meshgrid(-lin, lin, indexing="ij")  # row 0 = top = superior
            # view-space points (x=u, y=w (depth), z=v) -> volume mm via the rotation
            pts = torch.stack(
                [
                    uu[None].expand(len(w), -1, -1),
                    w[:, None, None].expand(-1, out_size, out_size),
                    vv[None].expand(len(w), -1, -1),
                ],
                dim=-1,
            )  # [D, H, W, 3] in (x, y, z)
            xyz = pts @ rot  # rows of pts times R = R^T applied: view -> volume
            grid = (
                xyz / half
            )  # normalized to [-1, 1] over the volume box, order (x, y, z) as grid_sample wants
            sampled = torch.nn.functional.grid_sample(
                tensor, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False
            )[0, 0]
            inside = (grid.abs() <= 1).all(dim=-1)
            sampled = torch.where(inside, sampled, torch.tensor(float(background)))
            result = torch.maximum(result, sampled.max(dim=0).values)
    return result.numpy()
