"""Tests for dla.model.dense: dense tiled inference == voxel-wise patch inference, candidates, DLA volume."""

import numpy as np
import pytest
import torch

from dla.classes import BONE, SOFT_TISSUE, VESSEL
from dla.model.base import tempered_priors
from dla.model.dense import (
    InferenceCancelled,
    InferenceError,
    InferenceMemoryError,
    InvalidVolumeError,
    class_priors_from_labels,
    dla_volume,
    intensity_candidates,
    pad_volume,
    predict_patches,
    predict_volume,
)
from dla.model.network import build_model


def _volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(100, 600, size=shape)
    return np.clip(v, -1024, 3000).astype(np.int16)


def _all_coords(shape):
    return np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)


# Every voxel is a separate 41x41 patch in the reference, so the volumes are small (the wider cpu preset gets
# the smaller one); the odd tiles force tile boundaries, partial edge tiles (19 = 8+8+3, 23 = 11+11+1;
# 12 = 5+5+2, 13 = 6+6+1) and several slice batches of 2.
@pytest.mark.parametrize(
    "preset, shape, tile_yx",
    [
        pytest.param("tiny", (5, 19, 23), (8, 11), id="tiny"),
        pytest.param("cpu", (3, 12, 13), (5, 6), id="cpu"),
    ],
)
def test_dense_equals_patches_at_every_voxel_with_tiling(preset, shape, tile_yx):
    torch.manual_seed(0)
    model = build_model(preset)
    vol = _volume(shape)
    coords = _all_coords(vol.shape)
    ref = predict_patches(model, vol, coords, batch=700)
    res = predict_volume(model, vol, tile_yx=tile_yx, slab_batch=2, prob_dtype=np.float32, return_probs=True)
    dense = res.probs.reshape(3, -1).T
    assert np.abs(dense - ref).max() <= 1e-4
    assert np.abs(res.vessel_prob.ravel() - ref[:, 0]).max() <= 1e-4
    assert np.allclose(ref.sum(1), 1, atol=1e-5)
    # class map: argmax + 1 wherever the top probability is not a near-tie
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4
    assert np.array_equal(res.class_map.ravel()[clear], ref.argmax(1)[clear] + VESSEL)
    # default tiling (whole slices) gives the same result; float16 output within float16 precision
    res2 = predict_volume(model, vol)
    assert res2.vessel_prob.dtype == np.float16
    assert np.abs(res2.vessel_prob.astype(np.float32).ravel() - ref[:, 0]).max() <= 1e-3
    assert res.voxels_per_s > 0 and res.network_voxels == vol.size


def test_padding_convention():
    vol = _volume((3, 4, 5))
    p = pad_volume(vol)
    assert p.shape == (7, 44, 45) and p.dtype == np.int16
    assert np.array_equal(p[0, 20:24, 20:25], vol[0]) and np.array_equal(p[1, 20:24, 20:25], vol[0])
    assert np.array_equal(p[6, 20:24, 20:25], vol[2])
    assert (p[:, :20] == -1000).all() and (p[:, :, -20:] == -1000).all()


def test_patch_matches_manual_crop():
    torch.manual_seed(1)
    model = build_model("tiny").eval()
    vol = _volume((7, 50, 45), seed=3)
    z, y, x = 3, 25, 22  # interior voxel: the patch is a plain crop of the volume
    crop = vol[z - 2 : z + 3, y - 20 : y + 21, x - 20 : x + 21].astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.clip(crop / 1000, -1, 3)[None]))[0, :, 0, 0]
    expected = torch.softmax(logits, 0).numpy()
    got = predict_patches(model, vol, np.array([[z, y, x]]))[0]
    assert np.abs(got - expected).max() < 1e-5


def test_candidate_mask_skips_and_labels_soft_tissue():
    torch.manual_seed(2)
    model = build_model("tiny")
    vol = _volume((5, 24, 24), seed=4)
    vol[:, :, :12] = 0  # left half soft tissue
    cand = intensity_candidates(vol, min_hu=300, dilate_vox=1)
    raw = vol >= 300
    assert (cand >= raw).all() and cand.sum() > raw.sum()  # dilation only adds voxels
    assert not cand[:, :, :11].any()  # voxels 2+ away from any bright voxel are not candidates
    full = predict_volume(model, vol, prob_dtype=np.float32)
    masked = predict_volume(model, vol, candidate_mask=cand, prob_dtype=np.float32, tile_yx=(8, 8))
    assert (masked.class_map[~cand] == SOFT_TISSUE).all() and (masked.vessel_prob[~cand] == 0).all()
    assert np.array_equal(masked.class_map[cand], full.class_map[cand])
    assert np.abs(masked.vessel_prob[cand] - full.vessel_prob[cand]).max() <= 1e-5
    assert masked.network_voxels == int(cand.sum())
    assert intensity_candidates(vol, min_hu=None).all()
    nothing = predict_volume(model, vol, candidate_mask=np.zeros(vol.shape, bool))
    assert (nothing.class_map == SOFT_TISSUE).all() and nothing.network_voxels == 0


def test_progress_and_cancel():
    torch.manual_seed(3)
    model = build_model("tiny")
    vol = _volume((6, 16, 16))
    seen = []
    predict_volume(model, vol, slab_batch=2, progress=lambda f, msg: seen.append(f))
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(InferenceCancelled):
        predict_volume(model, vol, tile_yx=(8, 8), slab_batch=1, should_cancel=cancel)
    assert len(calls) == 3


class _OomAbove(torch.nn.Module):
    """Wraps a model; raises a CUDA-style OOM RuntimeError when the input tile exceeds a size."""

    def __init__(self, model, max_side, exc=None):
        super().__init__()
        exc = exc if exc is not None else RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        self.model, self.max_side, self.exc, self.sizes = model, max_side, exc, []

    def forward(self, x):
        self.sizes.append(x.shape[-1] - 40)
        if x.shape[-1] - 40 > self.max_side:
            raise self.exc
        return self.model(x)


def test_out_of_memory_halves_tile_then_gives_up():
    torch.manual_seed(4)
    model = build_model("tiny")
    vol = _volume((3, 64, 64))
    ref = predict_volume(model, vol, prob_dtype=np.float32)
    wrapped = _OomAbove(model, max_side=32)
    res = predict_volume(wrapped, vol, tile_yx=(64, 64), prob_dtype=np.float32)
    assert res.tile_yx == (32, 32) and 64 in wrapped.sizes
    assert np.abs(res.vessel_prob - ref.vessel_prob).max() <= 1e-5
    with pytest.raises(InferenceMemoryError, match="out of memory"):
        predict_volume(_OomAbove(model, max_side=8, exc=MemoryError()), vol, tile_yx=(64, 64), min_tile=16)
    with pytest.raises(RuntimeError, match="other failure"):
        predict_volume(_OomAbove(model, 8, exc=RuntimeError("other failure")), vol, tile_yx=(64, 64))


def test_dla_volume_and_input_checks():
    vol = _volume((2, 3, 4))
    cls = np.full(vol.shape, SOFT_TISSUE, np.uint8)
    cls[0, 1, :2] = VESSEL
    cls[1, 2, 3] = BONE
    out = dla_volume(vol, cls)
    assert out.dtype == np.int16
    assert np.array_equal(out[cls == VESSEL], vol[cls == VESSEL]) and (out[cls != VESSEL] == 0).all()
    assert (dla_volume(vol, cls, background_hu=-1000)[cls != VESSEL] == -1000).all()
    with pytest.raises(InvalidVolumeError, match="shape"):
        dla_volume(vol, cls[:1])
    with pytest.raises(InvalidVolumeError, match="3D"):
        predict_volume(build_model("tiny"), vol[0])
    with pytest.raises(InvalidVolumeError, match="integer"):
        pad_volume(vol.astype(np.float32))
    with pytest.raises(InvalidVolumeError, match="outside"):
        predict_patches(build_model("tiny"), vol, np.array([[0, 3, 0]]))


def test_prior_correction_reweights_the_balanced_probabilities():
    """Bayes prior shift: p(c|x) proportional to p_balanced(c|x) * prior_c; equal priors change nothing."""
    torch.manual_seed(0)
    model = build_model("tiny")
    fill = _volume((4, 14, 15), seed=3)
    plain = predict_volume(model, fill, prob_dtype=np.float32, return_probs=True)
    same = predict_volume(model, fill, prob_dtype=np.float32, class_priors=(1, 1, 1))
    np.testing.assert_array_equal(same.class_map, plain.class_map)
    priors = np.array([0.004, 0.4, 0.596])
    shifted = predict_volume(
        model, fill, prob_dtype=np.float32, return_probs=True, class_priors=tuple(priors)
    )
    expected = plain.probs * priors[:, None, None, None]
    expected /= expected.sum(axis=0, keepdims=True)
    np.testing.assert_allclose(shifted.probs, expected, atol=1e-5)
    np.testing.assert_array_equal(shifted.class_map, expected.argmax(axis=0).astype(np.uint8) + VESSEL)
    assert (shifted.class_map == VESSEL).sum() < (plain.class_map == VESSEL).sum()
    for bad in ((1, 1), (0, 1, 1), (np.nan, 1, 1)):
        with pytest.raises(InferenceError, match="three positive frequencies"):
            predict_volume(model, fill, class_priors=bad)


def test_a_partial_prior_shift_lies_between_none_and_the_full_one():
    """tempered_priors: strength 1 is the full shift, 0 none (None: the balanced softmax as trained), 0.5 the
    square roots normalised; the vessel voxels called shrink monotonically with the strength."""
    priors = (0.004, 0.4, 0.596)
    assert tempered_priors(priors, 1.0) == pytest.approx(np.array(priors) / sum(priors))
    assert tempered_priors(priors, 0.0) is None and tempered_priors(None, 0.7) is None
    half = np.sqrt(priors)
    assert tempered_priors(priors, 0.5) == pytest.approx(half / half.sum())
    assert tempered_priors(priors, 0.5, 0.5) == tempered_priors(priors, 0.5)
    assert tempered_priors(priors, 0.0, 0.0) is None
    # its own strength for the vessel : bone pair moves only the bone weight relative to vessel
    w = np.array(tempered_priors(priors, 1.0, 0.6))
    assert w[2] / w[0] == pytest.approx(priors[2] / priors[0])
    assert w[1] / w[0] == pytest.approx((priors[1] / priors[0]) ** 0.6)
    for bad in (1.2, -0.1, True):
        with pytest.raises(InferenceError, match="prior strength must be a number from 0 to 1"):
            tempered_priors(priors, 1.0, bad)
    torch.manual_seed(0)
    model = build_model("tiny")
    fill = _volume((4, 14, 15), seed=3)
    called = [
        int(
            (
                predict_volume(model, fill, class_priors=tempered_priors(priors, strength)).class_map
                == VESSEL
            ).sum()
        )
        for strength in (0.0, 0.5, 1.0)
    ]
    assert called[0] >= called[1] >= called[2] and called[0] > called[2]
    for bad in (-0.1, 1.5, True, "1", float("nan")):
        with pytest.raises(InferenceError, match="prior strength must be a number from 0 to 1"):
            tempered_priors(priors, bad)


def test_class_priors_count_the_labelled_candidate_voxels():
    fill = np.full((3, 8, 8), -500, np.int16)
    fill[:, :4] = 800  # candidates (>= 100 HU; dilated by one voxel)
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[:, :2] = VESSEL
    labels[:, 2:4] = BONE
    labels[:, 4:] = SOFT_TISSUE  # only row 4 lies in the dilated candidates
    cand = intensity_candidates(fill, 100)
    counts = [np.count_nonzero(cand & (labels == c)) for c in (VESSEL, BONE, SOFT_TISSUE)]
    assert class_priors_from_labels([(fill, labels)]) == pytest.approx(np.array(counts) / sum(counts))


@pytest.mark.parametrize("tile_yx", [(16, 16), (7, 30), None], ids=["16x16", "7x30", "auto"])
def test_sparse_candidates_give_the_full_prediction_at_every_candidate(tile_yx):
    """Only each tile's candidate bounding box goes through the network: scattered candidate islands (boxes at
    tile corners, one-voxel boxes, a box cut by a tile edge) still get exactly the full prediction's outputs,
    and every other voxel is soft tissue with zero probabilities."""
    torch.manual_seed(3)
    model = build_model("tiny")
    vol = _volume((6, 40, 45), seed=5)
    cand = np.zeros(vol.shape, bool)
    rng = np.random.default_rng(6)
    for z, y, x in rng.integers(0, (6, 40, 45), size=(9, 3)):
        cand[z, y : y + 3, x : x + 2] = True
    cand[2, 15, 15] = cand[4, 0, 44] = cand[1, 39, 0] = True
    full = predict_volume(model, vol, prob_dtype=np.float32, return_probs=True)
    sparse = predict_volume(
        model,
        vol,
        candidate_mask=cand,
        tile_yx=tile_yx,
        slab_batch=2,
        prob_dtype=np.float32,
        return_probs=True,
    )
    assert np.array_equal(sparse.class_map[cand], full.class_map[cand])
    assert np.abs(sparse.probs[:, cand] - full.probs[:, cand]).max() <= 1e-5
    assert (sparse.class_map[~cand] == SOFT_TISSUE).all() and (sparse.vessel_prob[~cand] == 0).all()
    assert not sparse.probs[:, ~cand].any() and sparse.network_voxels == int(cand.sum())


@pytest.mark.parametrize("tile_yx", [None, (7, 9)], ids=["whole-slices", "tiles"])
def test_mirror_averages_the_volume_and_its_mirror_image(tile_yx):
    """``mirror=True`` is the mean of the prediction of the volume and the mirrored prediction of its left-right
    mirror image, at every voxel and across tile edges (a tile's halo is mirrored with it); with candidates and
    a prior shift the class map is the argmax of the shifted mean. A U-Net refuses the option."""
    torch.manual_seed(4)
    model = build_model("tiny")
    vol = _volume((5, 17, 22), seed=8)
    vol[:, :, :6] += 900  # not mirror-symmetric: the two passes differ
    plain = predict_volume(model, vol, tile_yx=tile_yx, prob_dtype=np.float32, return_probs=True)
    flipped = predict_volume(
        model,
        np.ascontiguousarray(vol[:, :, ::-1]),
        tile_yx=tile_yx,
        prob_dtype=np.float32,
        return_probs=True,
    )
    expected = (plain.probs + flipped.probs[:, :, :, ::-1]) / 2
    assert np.abs(plain.probs - flipped.probs[:, :, :, ::-1]).max() > 1e-3
    both = predict_volume(model, vol, tile_yx=tile_yx, prob_dtype=np.float32, return_probs=True, mirror=True)
    assert np.abs(both.probs - expected).max() <= 1e-5
    priors = (0.01, 0.3, 0.69)
    cand = intensity_candidates(vol, 300)
    shifted = predict_volume(
        model, vol, tile_yx=tile_yx, candidate_mask=cand, class_priors=priors, return_probs=True, mirror=True
    )
    w = np.asarray(priors)[:, None] * expected[:, cand]
    clear = np.sort(w / w.sum(0), axis=0)
    clear = clear[-1] - clear[-2] > 1e-4
    assert np.array_equal(shifted.class_map[cand][clear], (w.argmax(0) + VESSEL)[clear])
    assert (shifted.class_map[~cand] == SOFT_TISSUE).all()


def test_a_unet_refuses_mirrored_inference():
    from dla.model.unet3d import plan_unet3d

    model = build_model(plan_unet3d((1.0, 1.0, 1.0), (16, 32, 32)))
    with pytest.raises(InferenceError, match="voxel classifier"):
        predict_volume(model, _volume((16, 32, 32)), mirror=True)
