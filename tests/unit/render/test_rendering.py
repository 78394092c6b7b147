"""Tests for dla.render.rendering: slices, windowing, PNG, overlays and MIPs, each checked against an
independent numpy computation (pixel-centre geometry for the rotated MIPs)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from dla.classes import BONE, CLASS_COLORS_RGBA, SOFT_TISSUE, VESSEL
from dla.render.mip import axis_mip, prepare_mip_volume, rotated_mip
from dla.render.slices import (
    WINDOW_PRESETS_HU,
    RenderError,
    Window,
    encode_png,
    label_overlay_rgba,
    slice_2d,
    window_to_uint8,
)


@pytest.fixture
def volume():
    return np.random.default_rng(0).integers(-1024, 3000, size=(5, 6, 7)).astype(np.int16)


@pytest.mark.parametrize("axis,index", [("z", 0), ("z", 4), ("y", 3), ("x", 6)])
def test_slice_matches_numpy_indexing(volume, axis, index):
    expected = np.take(volume.copy(), index, axis="zyx".index(axis))
    got = slice_2d(volume, axis, index)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)


def test_slice_of_memory_map_is_a_view(tmp_path, volume):
    np.save(tmp_path / "v.npy", volume)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    got = slice_2d(mapped, "z", 2)
    assert isinstance(got, np.memmap) or got.base is not None  # no copy of the whole volume
    np.testing.assert_array_equal(got, volume[2])


@pytest.mark.parametrize(
    "axis,index,fragment",
    [
        ("q", 0, "unknown axis 'q'"),
        ("z", 5, "outside 0..4 along z"),
        ("x", -1, "outside 0..6"),
        ("y", 1.5, "1.5"),
    ],
)
def test_slice_errors_name_the_problem(volume, axis, index, fragment):
    with pytest.raises(RenderError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        slice_2d(volume, axis, index)


def test_window_parse_presets_numbers_and_errors():
    assert Window.parse(None, None, "vessel") == Window(*WINDOW_PRESETS_HU["vessel"])
    assert Window.parse("40", "400") == Window(40.0, 400.0)
    for center, width, preset, fragment in [
        ("a", "400", None, "must be numbers"),
        ("40", "0", None, "width must be in"),
        ("nan", "100", None, "width must be in"),
        ("40", "20000", None, "width must be in"),
        (None, None, "lung", "unknown window preset 'lung'"),
    ]:
        with pytest.raises(RenderError, match=fragment):
            Window.parse(center, width, preset)


def test_window_to_uint8_is_the_linear_ramp():
    window = Window(100.0, 200.0)  # 0..200 HU -> 0..255
    hu = np.array([-500, 0, 1, 50, 100, 199, 200, 3000], dtype=np.int16)
    expected = np.clip(np.floor((hu.astype(np.float64) - 0.0) * 255.0 / 200.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(window_to_uint8(hu, window), expected)
    assert window_to_uint8(hu, window)[0] == 0 and window_to_uint8(hu, window)[-1] == 255


def test_png_round_trip_gray_and_rgba():
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(gray))))
    np.testing.assert_array_equal(decoded, gray)
    rgba = np.random.default_rng(1).integers(0, 256, (4, 5, 4)).astype(np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(rgba)))
    assert decoded.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(decoded), rgba)
    with pytest.raises(RenderError, match="uint8"):
        encode_png(gray.astype(np.float32))


def test_overlay_colours_opacity_and_visibility():
    labels = np.array([[0, VESSEL, BONE, SOFT_TISSUE]], dtype=np.uint8)
    out = label_overlay_rgba(labels, opacity=0.4, visible=(VESSEL, SOFT_TISSUE))
    assert out.shape == (1, 4, 4) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (0, 0, 0, 0)
    assert tuple(out[0, 1]) == (*CLASS_COLORS_RGBA[VESSEL][:3], int(255 * 0.4))
    assert tuple(out[0, 2]) == (0, 0, 0, 0), "hidden bone must be transparent"
    assert tuple(out[0, 3]) == (*CLASS_COLORS_RGBA[SOFT_TISSUE][:3], int(255 * 0.4))


def test_axis_mip_is_numpy_max(volume):
    for axis, index in (("z", 0), ("y", 1), ("x", 2)):
        np.testing.assert_array_equal(axis_mip(volume, axis), volume.max(axis=index))
    with pytest.raises(RenderError, match="unknown axis"):
        axis_mip(volume, "w")


def _blocky_volume(shape=(24, 32, 40), block=8):
    """Values constant in (z, x) blocks of ``block`` voxels, highest for y in 14..18, falling off along y: the
    max along y is the block value, known exactly."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    base = 100.0 * ((z // block) * 7 + (x // block) * 3 + 1)
    return (base - 20.0 * np.maximum(np.abs(y - 16) - 2, 0)).astype(np.float32)


def _pixel_to_index(pixel, out_size, radius_mm, spacing, n, flip=False):
    """Voxel index (float) along one axis under output pixel ``pixel`` (pixel centres span the diameter)."""
    mm = (-1 + (2 * pixel + 1) / out_size) * radius_mm
    if flip:
        mm = -mm
    return mm / spacing + n / 2 - 0.5


def _interior(index, n, block):
    """True where a float voxel index lies >= 1.5 voxels inside a block and inside the volume."""
    rounded = np.floor(index + 0.5)
    inside = (index >= 1.5) & (index <= n - 2.5)
    pos = rounded % block
    return inside & (pos >= 2) & (pos <= block - 3)


def test_mip_at_angle_0_is_the_max_along_y():
    vol = _blocky_volume()
    nz, ny, nx = vol.shape
    out = 64
    image = rotated_mip(vol, (1.0, 1.0, 1.0), 0.0, out_size=out, background=-2000.0)
    expected_2d = vol.max(axis=1)  # [z, x]
    radius = 0.5 * np.linalg.norm([nx, ny, nz])
    rows, cols = np.arange(out), np.arange(out)
    z_idx = _pixel_to_index(rows, out, radius, 1.0, nz, flip=True)  # row 0 = superior = high z
    x_idx = _pixel_to_index(cols, out, radius, 1.0, nx)
    rz, cx = np.where(_interior(z_idx, nz, 8))[0], np.where(_interior(x_idx, nx, 8))[0]
    assert len(rz) > 5 and len(cx) > 5
    got = image[np.ix_(rz, cx)]
    want = expected_2d[np.ix_(np.round(z_idx[rz]).astype(int), np.round(x_idx[cx]).astype(int))]
    np.testing.assert_allclose(got, want, atol=1e-2)
    # outside the volume the image is background
    assert image[0, 0] == pytest.approx(-2000.0)


def test_mip_at_90_degrees_is_the_max_along_x():
    vol = np.transpose(_blocky_volume((24, 40, 32)), (0, 2, 1)).copy()  # blocks in (z, y); peak at x = 16
    nz, ny, nx = vol.shape
    out = 64
    image = rotated_mip(vol, (1.0, 1.0, 1.0), 90.0, out_size=out, background=-2000.0)
    expected_2d = vol.max(axis=2)  # [z, y]
    radius = 0.5 * np.linalg.norm([nx, ny, nz])
    z_idx = _pixel_to_index(np.arange(out), out, radius, 1.0, nz, flip=True)
    # rotating the view by +90 degrees about z puts -y along the image columns
    y_idx = _pixel_to_index(np.arange(out), out, radius, 1.0, ny, flip=True)
    rz, cy = np.where(_interior(z_idx, nz, 8))[0], np.where(_interior(y_idx, ny, 8))[0]
    got = image[np.ix_(rz, cy)]
    want = expected_2d[np.ix_(np.round(z_idx[rz]).astype(int), np.round(y_idx[cy]).astype(int))]
    np.testing.assert_allclose(got, want, atol=1e-2)


def test_tilted_path_agrees_with_upright_path_near_zero_tilt():
    vol = _blocky_volume((16, 24, 24))
    upright = rotated_mip(vol, (1.0, 1.0, 1.0), 30.0, out_size=32, background=-2000.0)
    tilted = rotated_mip(vol, (1.0, 1.0, 1.0), 30.0, tilt_deg=1e-4, out_size=32, background=-2000.0)
    inside = upright > -1000
    assert inside.sum() > 100
    # same geometry; the upright path takes the max of nearest voxels, the tilted one of trilinear samples, so
    # they may differ within a voxel of a block edge only: compare where the upright image is flat along the row
    pad = np.pad(upright, ((0, 0), (1, 1)), mode="edge")
    flat = inside & (np.ptp(np.stack([pad[:, :-2], pad[:, 1:-1], pad[:, 2:]]), axis=0) < 1e-3)
    assert flat.sum() > 50
    assert np.median(np.abs(upright[flat] - tilted[flat])) < 1.0


def test_tilt_90_looks_down_the_vertical_axis():
    vol = np.full((20, 20, 20), -1000.0, dtype=np.float32)
    vol[3:6, 2:5, 14:17] = 500.0  # one bright spot, far from the centre in y and x
    image = rotated_mip(vol, (1.0, 1.0, 1.0), 0.0, tilt_deg=90.0, out_size=40, background=-1000.0)
    r, c = np.unravel_index(np.argmax(image), image.shape)
    radius = 0.5 * np.linalg.norm([20, 20, 20])
    x_idx = _pixel_to_index(c, 40, radius, 1.0, 20)
    assert 13 <= x_idx <= 17, "columns still follow x"
    assert image.max() == pytest.approx(500.0, abs=50)


def test_anisotropic_spacing_scales_the_projection():
    vol = np.full((10, 40, 40), -1000.0, dtype=np.float32)
    vol[:, 20, :] = 300.0  # a sheet spanning all z and x
    image = rotated_mip(vol, (4.0, 1.0, 1.0), 0.0, out_size=64, background=-1000.0)
    bright_rows = np.where((image > -350).any(axis=1))[0]  # half way between background and sheet
    radius = 0.5 * np.linalg.norm([40, 40, 40])  # z extent 10 slices * 4 mm = 40 mm
    pixel_mm = 2 * radius / 64
    assert (bright_rows.max() - bright_rows.min() + 1) * pixel_mm == pytest.approx(40, abs=1.5 * pixel_mm)


def test_prepare_mip_volume_stride_and_cache_reuse():
    vol = np.zeros((40, 40, 40), dtype=np.int16)
    prepared = prepare_mip_volume(vol, (1.0, 1.0, 1.0), max_voxels=8000)
    assert prepared.stride == 2 and tuple(prepared.tensor.shape) == (20, 20, 20)
    assert prepared.spacing_mm == (2.0, 2.0, 2.0)
    a = rotated_mip(prepared, angle_deg=10.0, out_size=32)
    b = rotated_mip(vol, (1.0, 1.0, 1.0), 10.0, out_size=32, max_voxels=8000)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"angle_deg": float("nan")}, "angle must be finite"),
        ({"tilt_deg": 95.0}, "tilt within"),
        ({"out_size": 8}, "MIP size"),
    ],
)
def test_mip_errors(kwargs, fragment):
    vol = np.zeros((8, 8, 8), dtype=np.int16)
    with pytest.raises(RenderError, match=fragment):
        rotated_mip(vol, (1.0, 1.0, 1.0), **kwargs)


def test_mip_input_errors():
    with pytest.raises(RenderError, match="3-D"):
        prepare_mip_volume(np.zeros((8, 8)), (1.0, 1.0, 1.0))
    with pytest.raises(RenderError, match="spacing_mm"):
        prepare_mip_volume(np.zeros((8, 8, 8)), (1.0, 0.0, 1.0))
    with pytest.raises(RenderError, match="spacing_mm is required"):
        rotated_mip(np.zeros((8, 8, 8)), None, 0.0)


def _brute_force_tilted(vol, spacing, angle_deg, tilt_deg, pixels, depth, background):
    """Independent tilted MIP: trilinear samples (scipy, zero-padded beyond the box like the renderer) at pixel
    centres spanning the bounding sphere's diameter, ``depth`` samples per ray, rotation from scipy."""
    from scipy.ndimage import map_coordinates
    from scipy.spatial.transform import Rotation

    nz, ny, nx = vol.shape
    dz, dy, dx = spacing
    radius = 0.5 * np.linalg.norm([nx * dx, ny * dy, nz * dz])
    centres = (2 * np.arange(pixels) + 1) / pixels - 1
    depths = (2 * np.arange(depth) + 1) / depth - 1
    d, r, c = np.meshgrid(depths, centres, centres, indexing="ij")
    view = np.stack([c, d, -r], axis=-1).reshape(-1, 3) * radius  # (u, w, v): columns, depth, up
    # the view rotates the head about z by the angle, then about x by the tilt
    xyz = Rotation.from_euler("zx", [angle_deg, tilt_deg], degrees=True).inv().apply(view)
    index = [xyz[:, 2] / dz + nz / 2 - 0.5, xyz[:, 1] / dy + ny / 2 - 0.5, xyz[:, 0] / dx + nx / 2 - 0.5]
    shifted = vol.astype(np.float64) - background
    samples = map_coordinates(shifted, index, order=1, mode="grid-constant", cval=0.0)
    return samples.reshape(depth, pixels, pixels).max(axis=0) + background


@pytest.mark.parametrize("angle,tilt", [(30.0, 45.0), (200.0, -20.0), (0.0, 90.0)])
def test_tilted_mip_equals_independent_ray_sampling(monkeypatch, angle, tilt):
    import dla.render.mip as mip

    rng = np.random.default_rng(3)
    vol = rng.normal(0.0, 300.0, (10, 12, 14)).astype(np.float32)
    spacing = (1.5, 1.0, 0.8)
    prepared = prepare_mip_volume(vol, spacing, background=-1000.0)
    pixels, depth = mip.tilted_grid(prepared, 24)
    assert pixels == 24 and depth >= prepared.diameter_voxels  # >= 1 sample per finest voxel along a ray
    monkeypatch.setattr(mip, "SLAB_BYTES", 24 * 24 * 16 * 3)  # 3 depth samples per slab: many slabs
    image = rotated_mip(prepared, angle_deg=angle, tilt_deg=tilt, out_size=24)
    expected = _brute_force_tilted(vol, spacing, angle, tilt, 24, depth, -1000.0)
    np.testing.assert_allclose(image, expected, atol=0.05)


def test_tilted_mip_wider_than_its_grid_is_the_upsampled_grid_image():
    """Above the bounded grid (here: more pixels than voxels across) the image is the grid's MIP, bilinearly
    upsampled (pixel centres)."""
    from scipy.ndimage import map_coordinates

    import dla.render.mip as mip

    rng = np.random.default_rng(4)
    vol = rng.normal(0.0, 300.0, (8, 10, 12)).astype(np.float32)
    prepared = prepare_mip_volume(vol, (1.0, 1.0, 1.0), background=-1000.0)
    pixels, depth = mip.tilted_grid(prepared, 64)
    assert pixels == depth == int(np.ceil(prepared.diameter_voxels)) == 18
    image = rotated_mip(prepared, angle_deg=70.0, tilt_deg=30.0, out_size=64)
    coarse = _brute_force_tilted(vol, (1.0, 1.0, 1.0), 70.0, 30.0, pixels, depth, -1000.0)
    at = (np.arange(64) + 0.5) * pixels / 64 - 0.5  # output pixel centres in grid pixels
    rows, cols = np.meshgrid(at, at, indexing="ij")
    expected = map_coordinates(coarse, [rows, cols], order=1, mode="nearest")
    assert image.shape == (64, 64)
    np.testing.assert_allclose(image, expected, atol=0.05)


def test_tilted_grid_is_bounded_by_the_volume_and_the_sample_budget():
    import dla.render.mip as mip

    small = prepare_mip_volume(np.zeros((6, 8, 8), np.int16), (1.0, 1.0, 1.0))
    assert mip.tilted_grid(small, 512) == (16, 16)  # 12.8 voxels across: no 512^3 grid for a tiny volume
    tall = mip.MipVolume(
        tensor=torch.zeros((3000, 4, 4)), spacing_mm=(1.0, 1.0, 1.0), background=0.0, stride=1
    )
    pixels, depth = mip.tilted_grid(tall, 512)
    assert depth == 2048 and pixels == int(np.sqrt(mip.MAX_TILTED_SAMPLES / 2048))
    head = mip.MipVolume(  # the prepared grid of a 512x512x400 head (stride 3)
        tensor=torch.zeros((134, 171, 171)), spacing_mm=(1.5, 1.35, 1.35), background=0.0, stride=3
    )
    for out in (16, 100, 256, 512):
        for prep in (small, tall, head):
            pixels, depth = mip.tilted_grid(prep, out)
            assert 16 <= pixels <= out and depth <= 2048
            assert pixels**2 * depth <= mip.MAX_TILTED_SAMPLES


def test_class_mask_preparation_is_the_class_indicator():
    labels = np.random.default_rng(5).integers(0, 4, (30, 20, 20)).astype(np.uint8)
    prepared = prepare_mip_volume(labels, (1.0, 2.0, 2.0), max_voxels=2000, class_id=VESSEL)
    s = prepared.stride
    assert s == 2 and prepared.background == 0.0
    np.testing.assert_array_equal(
        prepared.tensor.numpy(), (labels[::s, ::s, ::s] == VESSEL).astype(np.float32)
    )
    image = rotated_mip(prepared, angle_deg=0.0, out_size=32)
    assert 0.0 <= image.min() and image.max() <= 1.0 + 1e-6


def test_mip_size_is_capped_with_a_message_naming_the_limit():
    from dla.render.mip import MAX_MIP_SIZE_PX

    vol = np.zeros((8, 8, 8), dtype=np.int16)
    with pytest.raises(RenderError, match=f"within 16..{MAX_MIP_SIZE_PX} pixels, got {MAX_MIP_SIZE_PX + 1}"):
        rotated_mip(vol, (1.0, 1.0, 1.0), 0.0, tilt_deg=45.0, out_size=MAX_MIP_SIZE_PX + 1)
    assert rotated_mip(vol, (1.0, 1.0, 1.0), 0.0, tilt_deg=45.0, out_size=MAX_MIP_SIZE_PX).shape == (512, 512)
