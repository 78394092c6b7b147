"""Maximum intensity projections (MIPs) of volumes ``[z, y, x]``: along an axis, or at any rotation about the
head's vertical axis with an optional tilt, resampled with torch on a grid whose size is bounded by the volume's
own resolution. Upright views take the max of actual voxel values along densely sampled rays, so a noisy
background has the same statistics under every ray (no bands or ring-like moire locked to the angle). A rotated MIP at ``angle_deg = 0`` looks along +y (a frontal, AP view); 90 degrees is a lateral
view. Output images have rows = superior at the top. Inputs may be read-only memory maps.

Bounded work (the server renders MIPs on request, so no parameter may make one unbounded): the volume is
subsampled to at most ``MAX_PREPARED_VOXELS`` float32 voxels (48 MB), images are at most ``MAX_MIP_SIZE_PX``
pixels square, the tilted path samples at most ``MAX_TILTED_SAMPLES`` points per image (about one per voxel
along each ray; an image wider than that is bilinearly upsampled from it) and walks the depth in slabs of at
most ``SLAB_BYTES``. One MIP thus needs at most about 48 MB + 3 x 32 MB + a few ``out_size``^2 float images
beyond its input: well under 256 MB (tests/unit/render/test_render_budget.py measures it).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dla.render.slices import AXES, RenderError

MAX_MIP_SIZE_PX = 512
MIN_MIP_SIZE_PX = 16
MAX_PREPARED_VOXELS = 12_000_000
MAX_TILTED_SAMPLES = 2**24  # points sampled trilinearly per tilted image (16.7 M: ~1 s on 2 cores)
SLAB_BYTES = 32 * 2**20  # grid plus samples of one depth slab of the tilted path
_UPRIGHT_CHUNK_VALUES = 2_000_000  # rotated planes held at once by the upright path (8 MB)
RAY_SAMPLES_PER_VOXEL = 4  # upright path: samples per finest in-plane voxel along each ray
COLUMNS_PER_VOXEL = (
    2  # upright path: rays per finest in-plane voxel across the image (then resampled linearly)
)
MAX_UPRIGHT_COLUMNS = 2048
MAX_UPRIGHT_DEPTH = 4096
# Changes whenever the same volume and view render to different pixels (a frame cache may key on it).
MIP_RENDERER_VERSION = 2


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

    @property
    def diameter_voxels(self) -> float:
        """The bounding sphere's diameter in units of the finest (subsampled) voxel spacing."""
        return 2.0 * self.radius_mm / min(self.spacing_mm)

    @property
    def nbytes(self) -> int:
        return int(self.tensor.numel() * self.tensor.element_size())


def mip_stride(shape, max_voxels: int = MAX_PREPARED_VOXELS) -> int:
    """The smallest integer stride that leaves at most ``max_voxels`` of a volume of ``shape`` (z, y, x)."""
    if max_voxels < 1:
        raise RenderError(f"max_voxels must be positive, got {max_voxels}")
    stride = max(1, int(np.ceil((float(np.prod(shape)) / max_voxels) ** (1 / 3) - 1e-9)))
    while float(np.prod([-(-n // stride) for n in shape])) > max_voxels:  # ceil division per axis
        stride += 1
    return stride


def prepare_mip_volume(
    volume: np.ndarray,
    spacing_mm,
    *,
    max_voxels: int = MAX_PREPARED_VOXELS,
    background: float = -1024.0,
    class_id: int | None = None,
) -> MipVolume:
    """Subsample ``volume`` ([z, y, x], any numeric dtype, may be a memory map) by the smallest integer stride
    that keeps at most ``max_voxels`` voxels, as float32 minus ``background``. Reads only the strided voxels.

    With ``class_id`` the volume is a class map (uint8 ids) and the result is its indicator ``volume ==
    class_id`` (1.0 / 0.0, background 0): its MIP is the projected class fraction in [0, 1]."""
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise RenderError(f"a MIP needs a non-empty 3-D [z, y, x] volume, got shape {volume.shape}")
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise RenderError(f"spacing_mm must be three positive numbers (dz, dy, dx), got {spacing_mm!r}")
    stride = mip_stride(volume.shape, max_voxels)
    strided = volume[::stride, ::stride, ::stride]
    if class_id is None:
        small = np.array(strided, dtype=np.float32)  # always a copy: shifted in place
        small -= np.float32(background)
    else:
        small = (np.asarray(strided) == class_id).astype(np.float32)
        background = 0.0
    return MipVolume(
        tensor=torch.from_numpy(small),
        spacing_mm=tuple(float(s) * stride for s in spacing),
        background=float(background),
        stride=stride,
    )


def check_view(angle_deg: float, tilt_deg: float, out_size: int) -> None:
    """Raise ``RenderError`` naming the problem unless the angle is finite, |tilt| <= 90 degrees and the size a
    whole number of pixels in ``MIN_MIP_SIZE_PX``..``MAX_MIP_SIZE_PX``."""
    if not (np.isfinite(angle_deg) and np.isfinite(tilt_deg)) or abs(tilt_deg) > 90:
        raise RenderError(
            f"angle must be finite and tilt within [-90, 90] degrees, got {angle_deg}/{tilt_deg}"
        )
    if isinstance(out_size, bool) or not isinstance(out_size, int | np.integer):
        raise RenderError(f"MIP size must be a whole number of pixels, got {out_size!r}")
    if not MIN_MIP_SIZE_PX <= out_size <= MAX_MIP_SIZE_PX:
        raise RenderError(
            f"MIP size must be within {MIN_MIP_SIZE_PX}..{MAX_MIP_SIZE_PX} pixels, got {out_size}"
        )


def _centres(n: int) -> torch.Tensor:
    """Normalized pixel centres of ``n`` samples spanning (-1, 1) (``align_corners=False`` convention)."""
    return (torch.arange(n, dtype=torch.float32) * 2 + 1) / n - 1


def tilted_grid(prepared: MipVolume, out_size: int) -> tuple[int, int]:
    """(image pixels, depth samples) the tilted path samples for an ``out_size`` image: about one sample per
    finest voxel along each ray (at least 16, at most 2048), and at most ``out_size`` pixels square such that
    pixels^2 x depth <= ``MAX_TILTED_SAMPLES`` (and never more pixels than voxels across the diameter)."""
    diameter = prepared.diameter_voxels
    depth = int(min(2048, max(MIN_MIP_SIZE_PX, np.ceil(diameter))))
    pixels = min(out_size, max(MIN_MIP_SIZE_PX, int(np.ceil(diameter))))
    pixels = min(pixels, max(MIN_MIP_SIZE_PX, int(np.sqrt(MAX_TILTED_SAMPLES / depth))))
    return pixels, depth


def upright_grid(prepared: MipVolume, out_size: int) -> tuple[int, int]:
    """(columns, depth samples) of the upright path's sampling grid in each axial plane, both spanning the
    bounding sphere's diameter: ``COLUMNS_PER_VOXEL`` columns per finest in-plane voxel (the image is then
    resampled linearly to ``out_size``, so a small volume is not drawn as blocks of nearest voxels) and
    ``RAY_SAMPLES_PER_VOXEL`` samples per finest in-plane voxel along each ray, so no voxel is skipped
    (at least ``MIN_MIP_SIZE_PX``, at most ``MAX_UPRIGHT_COLUMNS`` / ``MAX_UPRIGHT_DEPTH``). ``out_size`` is
    accepted for symmetry with ``tilted_grid``; the grid depends on the volume only."""
    diameter = 2.0 * prepared.radius_mm / min(prepared.spacing_mm[1:])
    columns = int(min(MAX_UPRIGHT_COLUMNS, max(MIN_MIP_SIZE_PX, np.ceil(COLUMNS_PER_VOXEL * diameter))))
    depth = int(min(MAX_UPRIGHT_DEPTH, max(MIN_MIP_SIZE_PX, np.ceil(RAY_SAMPLES_PER_VOXEL * diameter))))
    return columns, depth


def _mip_upright(prepared: MipVolume, angle_deg: float, out_size: int) -> torch.Tensor:
    """Tilt 0: every output row lies in one axial plane, so each plane is sampled on a rotated (columns x
    depth) grid (``upright_grid``) with nearest-voxel lookups, the max taken along the depth direction, and the
    [z, columns] image resampled onto the output pixels (linear in z and across columns).

    Why nearest voxels, not bilinear samples: a bilinear sample of noise has a variance that depends on where
    it falls between voxel centres (full at a centre, a quarter half-way between four), so the max along a
    ray depended on how the rays met the voxel lattice. The background of a noisy volume then showed bands
    and ring-like moire that followed the angle (strongest at 0, 45 and 90 degrees). The max of actual voxel
    values along a densely sampled ray has the same statistics for every ray; the linear resampling that
    follows mixes finished maxima, which keeps their mean (tests/unit/render/test_mip_background.py)."""
    vol = prepared.tensor
    nz = vol.shape[0]
    ext = prepared.extent_xyz_mm
    radius = prepared.radius_mm
    columns, depth = upright_grid(prepared, out_size)
    a = np.deg2rad(angle_deg)
    rot2 = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    # grid (columns u, depth w) in [-1, 1] * radius -> volume (x, y) mm = R^T (u, w) -> normalized
    theta = np.concatenate([(rot2.T * radius) / (ext[:2] / 2.0)[:, None], np.zeros((2, 1))], axis=1)
    grid = F.affine_grid(
        torch.tensor(theta, dtype=torch.float32)[None], [1, 1, depth, columns], align_corners=False
    )  # [1, depth, columns, 2]
    # written in place: small allocations between the big per-chunk buffers would fragment the heap (glibc
    # then grows it by a whole volume's worth of samples instead of reusing the freed chunk)
    by_z = torch.empty((nz, columns), dtype=torch.float32)  # [nz, columns], z ascending
    chunk = max(1, _UPRIGHT_CHUNK_VALUES // (columns * depth))
    for start in range(0, nz, chunk):
        planes = vol[start : start + chunk, None]  # [n, 1, y, x]
        sampled = F.grid_sample(
            planes,
            grid.expand(len(planes), -1, -1, -1),
            mode="nearest",
            padding_mode="zeros",
            align_corners=False,
        )
        torch.amax(sampled[:, 0], dim=1, out=by_z[start : start + len(planes)])
        del sampled
    z_norm = -_centres(out_size) * radius / (ext[2] / 2.0)  # row 0 = top = superior = high z
    u_norm = _centres(out_size)  # the columns span the same diameter as the output pixels
    out_grid = torch.stack(torch.broadcast_tensors(u_norm[None, :], z_norm[:, None]), dim=-1)[None]
    image = F.grid_sample(
        by_z[None, None], out_grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # [1, 1, rows, columns]
    return image[0, 0]


def _mip_tilted(prepared: MipVolume, angle_deg: float, tilt_deg: float, out_size: int) -> torch.Tensor:
    """Any tilt: trilinear samples on a (pixels x pixels x depth) grid over the bounding sphere (see
    ``tilted_grid``), generated and reduced one depth slab at a time, max along depth; upsampled bilinearly to
    ``out_size`` when the grid is coarser than the image."""
    ext = prepared.extent_xyz_mm
    radius = prepared.radius_mm
    pixels, depth = tilted_grid(prepared, out_size)
    rot = _rotation_matrix(angle_deg, tilt_deg)
    # grid coords (column c, row r, depth d) -> view (x=u=c, y=w=d, z=v=-r) * radius -> volume mm = R^T view
    to_view = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]) * radius
    theta = torch.tensor((rot.T @ to_view) / (ext / 2.0)[:, None], dtype=torch.float32)  # [xyz, (c, r, d)]
    centres = _centres(pixels)
    plane = centres[None, :, None] * theta[:, 0] + centres[:, None, None] * theta[:, 1]  # [rows, cols, 3]
    depths = _centres(depth)
    slab = max(1, SLAB_BYTES // (pixels * pixels * 4 * 4))  # 3 grid coordinates + 1 sample per point
    tensor = prepared.tensor[None, None]
    result = torch.full((pixels, pixels), -torch.inf, dtype=torch.float32)
    best = torch.empty_like(result)
    for start in range(0, depth, slab):
        offsets = depths[start : start + slab, None, None, None] * theta[:, 2]
        grid = plane[None] + offsets  # [k, rows, cols, 3]
        sampled = F.grid_sample(
            tensor, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False
        )
        del grid
        torch.amax(sampled[0, 0], dim=0, out=best)
        del sampled
        torch.maximum(result, best, out=result)  # in place (see _mip_upright)
    if pixels != out_size:
        result = F.interpolate(
            result[None, None], size=(out_size, out_size), mode="bilinear", align_corners=False
        )[0, 0]
    return result


def rotated_mip(
    volume,
    spacing_mm=None,
    angle_deg: float = 0.0,
    *,
    tilt_deg: float = 0.0,
    max_voxels: int = MAX_PREPARED_VOXELS,
    out_size: int = 256,
    background: float = -1024.0,
) -> np.ndarray:
    """MIP of ``volume`` (int16 or float [z, y, x], any value units, or a ``MipVolume`` from
    ``prepare_mip_volume``) viewed from ``angle_deg`` about the vertical (z) axis and tilted by ``tilt_deg``
    about the horizontal (x) axis.

    The image covers the diameter of the volume's physical bounding sphere at every angle (isotropic pixels of
    ``2 * radius_mm / out_size`` mm), so a cine of angles keeps the head the same size. Samples outside the
    volume count as ``background``. At tilt 0 each axial plane is sampled on a rotated grid, nearest voxels on
    rays of ``RAY_SAMPLES_PER_VOXEL`` samples per voxel (fast path, ~0.1 s for a 512x512x400 head on one core;
    see ``_mip_upright`` for why not bilinear); other tilts sample trilinearly on the bounded grid of
    ``tilted_grid``.
    ``out_size`` is 16..``MAX_MIP_SIZE_PX``. Returns float32 [out_size, out_size] in the volume's units, row 0 =
    superior.
    """
    check_view(angle_deg, tilt_deg, out_size)
    out_size = int(out_size)
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
