"""Tests for the shared display transform of blinded comparisons (dla.render.slices.noise_floor_hu and
floor_window): the floor lies above every pure-noise pixel of real rotated MIPs of noise volumes, moves little
when vessels and artifacts cover part of the image, and the floored window maps the floor to black and keeps
the window's upper end (checked against the linear map written out here)."""

import numpy as np
import pytest

from dla.render.mip import prepare_mip_volume, rotated_mip
from dla.render.slices import (
    WINDOW_PRESETS_HU,
    RenderError,
    Window,
    floor_window,
    noise_floor_hu,
    window_to_uint8,
)

ANGLES = [float(a) for a in range(0, 360, 30)]


def mip_frames(volume, spacing_mm=(4.0, 4.0, 4.0), size=128):
    prepared = prepare_mip_volume(volume, spacing_mm, background=-1024.0)
    return np.stack([np.round(rotated_mip(prepared, angle_deg=a, out_size=size)) for a in ANGLES])


@pytest.mark.parametrize("sigma_hu,seed", [(14.0, 0), (30.0, 1), (42.0, 2)])
def test_pure_noise_never_reaches_the_floor(sigma_hu, seed):
    rng = np.random.default_rng(seed)
    noise = np.rint(rng.normal(0.0, sigma_hu, (24, 32, 32))).astype(np.int16)
    frames = mip_frames(noise)
    floor = noise_floor_hu(frames)
    inside = frames[frames > -100]
    assert inside.max() < floor  # every pure-noise pixel below the floor
    assert floor < 12 * sigma_hu  # and the floor not absurdly high: ~3-4 sigma above the MIP's typical value
    shown = window_to_uint8(frames, floor_window(Window(*WINDOW_PRESETS_HU["vessel"]), floor))
    assert shown.max() == 0  # the background is black in every frame


def test_vessels_and_artifacts_barely_move_the_floor_and_stay_visible():
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 25.0, (24, 32, 32))
    clean = noise_floor_hu(mip_frames(np.rint(noise).astype(np.int16)))
    busy = noise.copy()
    busy[:, 14:17, 14:17] += 400.0  # a vertical vessel seen in every frame
    busy[4:10, 4:28, 4:28] += rng.normal(0.0, 25.0, (6, 24, 24)) + 80.0  # a slab of "misregistration"
    frames = mip_frames(np.rint(busy).astype(np.int16))
    floor = noise_floor_hu(frames)
    assert abs(floor - clean) < 0.25 * clean
    shown = window_to_uint8(frames, floor_window(Window(*WINDOW_PRESETS_HU["vessel"]), floor))
    assert (shown > 0).any(axis=(1, 2)).all()  # the vessel shows in every frame


def test_floor_of_empty_or_zero_frames_is_zero_and_bad_input_is_refused():
    assert noise_floor_hu(np.full((2, 8, 8), -1024.0)) == 0.0  # nothing inside the volume
    assert noise_floor_hu(np.zeros((2, 8, 8))) == 0.0  # a flat 0 HU background: floor 0, shown black
    assert noise_floor_hu(np.full((2, 8, 8), -50.0)) == 0.0  # never below 0 HU
    with pytest.raises(RenderError, match="non-finite"):
        noise_floor_hu(np.array([1.0, np.nan]))
    with pytest.raises(RenderError, match="spreads"):
        noise_floor_hu(np.zeros(4), spreads=-1)


def test_floor_window_maps_the_floor_to_black_and_keeps_the_top():
    vessel = Window(*WINDOW_PRESETS_HU["vessel"])  # -300 .. 900 HU
    floored = floor_window(vessel, 150.0)
    assert floored.center_hu - floored.width_hu / 2 == pytest.approx(150.0)
    assert floored.center_hu + floored.width_hu / 2 == pytest.approx(900.0)
    hu = np.array([-1024.0, 0.0, 150.0, 151.0, 525.0, 900.0, 3000.0])
    expected = np.clip(np.floor((hu - 150.0) * 255.0 / 750.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(window_to_uint8(hu, floored), expected)
    assert floor_window(vessel, -500.0) == vessel  # a floor below the window changes nothing
    top = floor_window(vessel, 5000.0)  # a floor above the window: a 1 HU window at its top
    assert (top.center_hu, top.width_hu) == (899.5, 1.0)
    with pytest.raises(RenderError, match="finite"):
        floor_window(vessel, float("inf"))
