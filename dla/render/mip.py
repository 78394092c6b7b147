"""Maximum intensity projections (MIPs) of volumes ``[z, y, x]``: along an axis, or at any rotation about the
head's vertical axis with an optional tilt, resampled on a bounded grid with torch. A rotated MIP at
``angle_deg = 0`` looks along +y (a frontal, AP view); 90 degrees is a lateral view. Output images have rows =
superior at the top. Inputs may be read-only memory maps.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dla.render.slices import AXES, RenderError


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


@dataclass(frozen=True)
class MipVolume:
    """A volume prepared for rotated MIPs: subsampled by an integer ``stride``, float32, shifted so that the
    ``background`` value is 0 (so zero padding outside the box equals the background). ``spacing_mm`` is the
    (dz, dy, dx) of the subsampled grid. Build it once with ``prepare_mip_volume`` and reuse it per angle."""

    tensor: torch.Tensor  # float32 [z, y, x], values - background
    spacing_mm: tuple[float, float, float]
    background: float
    stride: int

    @property
    def extent_xyz_mm(self) -> np.ndarray:
        z, y, x = self.tensor.shape
        dz, dy, dx = self.spacing_mm
        return np.array([x * dx, y * dy, z * dz], dtype=np.float64)

    @property
    def radius_mm(self) -> float:
        """Radius of the bounding sphere: the MIP image spans its diameter at every angle."""
        return 0.5 * float(np.linalg.norm(self.extent_xyz_mm))


def prepare_mip_volume(
    volume: np.ndarray, spacing_mm, *, max_voxels: int = 12_000_000, background: float = -1024.0
) -> MipVolume:
    """Subsample ``volume`` ([z, y, x], any numeric dtype, may be a memory map) by the smallest integer stride
    that keeps at most ``max_voxels`` voxels, as float32 minus ``background``. Reads only the strided voxels."""
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise RenderError(f"a MIP needs a non-empty 3-D [z, y, x] volume, got shape {volume.shape}")
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise RenderError(f"spacing_mm must be three positive numbers (dz, dy, dx), got {spacing_mm!r}")
    if max_voxels < 1:
        raise RenderError(f"max_voxels must be positive, got {max_voxels}")
    stride = max(1, int(np.ceil((float(np.prod(volume.shape)) / max_voxels) ** (1 / 3) - 1e-9)))
    small = np.array(
        volume[::stride, ::stride, ::stride], dtype=np.float32
    )  # always a copy: shifted in place
    small -= np.float32(background)
    return MipVolume(
        tensor=torch.from_numpy(small),
        spacing_mm=tuple(float(s) * stride for s in spacing),
        background=float(background),
        stride=stride,
    )


def _check_view(angle_deg: float, tilt_deg: float, out_size: int) -> None:
    if not (np.isfinite(angle_deg) and np.isfinite(tilt_deg)) or abs(tilt_deg) > 90:
        raise RenderError(
            f"angle must be finite and tilt within [-90, 90] degrees, got {angle_deg}/{tilt_deg}"
        )
    if not 16 <= out_size <= 1024:
        raise RenderError(f"MIP size must be within 16..1024 pixels, got {out_size}")


def _mip_upright(prepared: MipVolume, angle_deg: float, out_size: int) -> torch.Tensor:
    """Tilt 0: every output row lies in one axial plane, so rotate each plane in 2-D (bilinear), take the max
    along the depth direction, then resample the [z, columns] image onto the output rows (linear in z)."""
    vol = prepared.tensor
    nz = vol.shape[0]
    ext = prepared.extent_xyz_mm
    radius = prepared.radius_mm
    a = np.deg2rad(angle_deg)
    rot2 = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    # output grid (columns u, depth w) in [-1, 1] * radius -> volume (x, y) mm = R^T (u, w) -> normalized
    theta = np.concatenate([(rot2.T * radius) / (ext[:2] / 2.0)[:, None], np.zeros((2, 1))], axis=1)
    grid = F.affine_grid(
        torch.tensor(theta, dtype=torch.float32)[None], [1, 1, out_size, out_size], align_corners=False
    )  # [1, depth, columns, 2]
    rows = []
    chunk = max(1, 2_000_000 // (out_size * out_size))
    for start in range(0, nz, chunk):
        planes = vol[start : start + chunk, None]  # [n, 1, y, x]
        sampled = F.grid_sample(
            planes,
            grid.expand(len(planes), -1, -1, -1),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        rows.append(sampled[:, 0].amax(dim=1))  # [n, columns]
    by_z = torch.cat(rows)  # [nz, columns], z ascending
    centers = (torch.arange(out_size, dtype=torch.float32) * 2 + 1) / out_size - 1  # row centres in (-1, 1)
    z_norm = -centers * radius / (ext[2] / 2.0)  # row 0 = top = superior = high z
    zgrid = torch.stack([torch.zeros_like(z_norm), z_norm], dim=-1)[None, :, None, :]  # [1, rows, 1, 2]
    image = F.grid_sample(
        by_z.T.contiguous()[None, :, :, None],
        zgrid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # [1, columns, rows, 1]
    return image[0, :, :, 0].T


def _mip_tilted(prepared: MipVolume, angle_deg: float, tilt_deg: float, out_size: int) -> torch.Tensor:
    """Any tilt: trilinear resampling on an ``out_size``^3 grid over the bounding sphere, max along depth."""
    ext = prepared.extent_xyz_mm
    radius = prepared.radius_mm
    rot = _rotation_matrix(angle_deg, tilt_deg)
    # affine_grid's output coords (c, r, d) -> view (x=u=c, y=w=d, z=v=-r) * radius -> volume mm = R^T view
    to_view = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]) * radius
    theta = np.concatenate([(rot.T @ to_view) / (ext / 2.0)[:, None], np.zeros((3, 1))], axis=1)
    grid = F.affine_grid(
        torch.tensor(theta, dtype=torch.float32)[None],
        [1, 1, out_size, out_size, out_size],
        align_corners=False,
    )  # [1, depth, rows, columns, 3]
    tensor = prepared.tensor[None, None]
    result = None
    chunk = max(1, 4_000_000 // (out_size * out_size))
    for start in range(0, out_size, chunk):
        sampled = F.grid_sample(
            tensor, grid[:, start : start + chunk], mode="bilinear", padding_mode="zeros", align_corners=False
        )[0, 0].amax(dim=0)
        result = sampled if result is None else torch.maximum(result, sampled)
    return result


def rotated_mip(
    volume,
    spacing_mm=None,
    angle_deg: float = 0.0,
    *,
    tilt_deg: float = 0.0,
    max_voxels: int = 12_000_000,
    out_size: int = 256,
    background: float = -1024.0,
) -> np.ndarray:
    """MIP of ``volume`` (int16 or float [z, y, x], any value units, or a ``MipVolume`` from
    ``prepare_mip_volume``) viewed from ``angle_deg`` about the vertical (z) axis and tilted by ``tilt_deg``
    about the horizontal (x) axis.

    The image covers the diameter of the volume's physical bounding sphere at every angle (isotropic pixels of
    ``2 * radius_mm / out_size`` mm), so a cine of angles keeps the head the same size. Samples outside the
    volume count as ``background``. At tilt 0 each axial plane is rotated in 2-D (fast path, ~0.2 s for a
    512x512x400 head on 2 cores); other tilts resample trilinearly on an ``out_size``^3 grid. Returns float32
    [out_size, out_size] in the volume's units, row 0 = superior.
    """
    _check_view(angle_deg, tilt_deg, out_size)
    if isinstance(volume, MipVolume):
        prepared = volume
    else:
        if spacing_mm is None:
            raise RenderError("spacing_mm is required when rotated_mip gets a raw array")
        prepared = prepare_mip_volume(volume, spacing_mm, max_voxels=max_voxels, background=background)
    with torch.inference_mode():
        if tilt_deg == 0:
            image = _mip_upright(prepared, float(angle_deg), out_size)
        else:
            image = _mip_tilted(prepared, float(angle_deg), float(tilt_deg), out_size)
        image = image + prepared.background
    return image.numpy().astype(np.float32, copy=False)
