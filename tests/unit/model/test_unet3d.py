"""Tests for the 3D U-Net architecture (dla/model/unet3d.py): nnU-Net-style planning, the registry (config,
fingerprint, save/load, refusing the other architecture's weights), training through ``train`` on the synthetic
phantoms of test_train.py, and sliding-window inference checked against direct forward passes."""

import numpy as np
import pytest
import torch

from dla.classes import LABELED_CLASSES, SOFT_TISSUE, VESSEL
from dla.model.dense import predict_volume
from dla.model.network import (
    IncompatibleWeightsError,
    InvalidNetworkConfigError,
    NetworkConfig,
    build_model,
    config_fingerprint,
    load_weights,
    normalize_hu,
    preset_config,
    save_weights,
)
from dla.model.train import TrainConfig, TrainingData, TrainingDataError, balanced_dense_loss, train
from dla.model.unet3d import (
    PatchDoesNotFitError,
    SpacingMismatchError,
    UNet3D,
    crop_padded,
    plan_unet3d,
    predict_volume_unet3d,
)
from tests.unit.model.test_train import TRAIN_PAIRS, VAL_PAIRS

PATCH = (8, 16, 16)


def tiny_unet(seed=0, spacing=(1.0, 1.0, 1.0), patch=PATCH):
    torch.manual_seed(seed)
    return build_model(plan_unet3d(spacing, patch, base_filters=8))


def test_planner_follows_the_spacing_like_nnunet():
    iso = plan_unet3d((1.0, 1.0, 1.0), (32, 32, 32), base_filters=8)
    assert iso.unet_strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))  # 32 -> 4 voxels, min feature 4
    assert all(k == (3, 3, 3) for k in iso.unet_kernels)
    assert iso.unet_filters == (8, 16, 32, 64)
    # z four times coarser: in-plane is pooled first, z only once the spacings are within a factor 2
    aniso = plan_unet3d((2.0, 0.5, 0.5), (16, 64, 64))
    assert aniso.unet_kernels[0] == (1, 3, 3) and aniso.unet_strides[1] == (1, 2, 2)
    assert aniso.unet_strides[2] == (1, 2, 2) and aniso.unet_strides[3] == (2, 2, 2)
    assert aniso.unet_kernels[3] == (3, 3, 3)
    # the patch is rounded down to a multiple of the total stride
    odd = plan_unet3d((1.0, 1.0, 1.0), (20, 20, 20))
    total = np.prod(np.asarray(odd.unet_strides), axis=0)
    assert all(p % t == 0 and p <= 20 for p, t in zip(odd.unet_patch_zyx, total, strict=True))
    with pytest.raises(InvalidNetworkConfigError, match="too small"):
        plan_unet3d((1.0, 1.0, 1.0), (4, 4, 4))
    with pytest.raises(InvalidNetworkConfigError, match="unknown architecture"):
        NetworkConfig(architecture="transformer")


def test_registry_round_trip_and_the_other_architecture_refused(tmp_path):
    model = tiny_unet(seed=1)
    assert isinstance(model, UNet3D)
    cfg = model.config
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
    fp = config_fingerprint(cfg)
    assert fp.startswith("unet3d-") and fp != config_fingerprint(
        plan_unet3d((1.0, 1.0, 2.0), PATCH, base_filters=8)
    )
    path = tmp_path / "unet.pt"
    save_weights(model, path)
    loaded = load_weights(path, expected_config=cfg)
    assert isinstance(loaded, UNet3D) and config_fingerprint(loaded.config) == fp
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # U-Net weights are not voxel weights and vice versa
    with pytest.raises(IncompatibleWeightsError, match="unet3d-"):
        load_weights(path, expected_config=preset_config("tiny"))
    voxel_path = tmp_path / "voxel.pt"
    save_weights(build_model("tiny"), voxel_path)
    with pytest.raises(IncompatibleWeightsError, match="dlanet-"):
        load_weights(voxel_path, expected_config=cfg)
    # a voxel config's dict is unchanged by the new architecture: no architecture or unet keys, loads as voxel
    d = preset_config("cpu").to_dict()
    assert "architecture" not in d and not any(k.startswith("unet_") for k in d)
    assert NetworkConfig.from_dict(d).architecture == "voxel"


def test_balanced_loss_is_the_same_objective_in_3d():
    """The 3-D loss equals the independent weighted mean: each present class's labelled voxels weigh equally."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6, generator=g)
    target = torch.randint(-1, 3, (2, 4, 5, 6), generator=g)
    target[target == 1] = 0  # class 1 absent
    loss, n = balanced_dense_loss(logits, target)
    logp = torch.log_softmax(logits, 1)
    per_class = [
        -logp.permute(0, 2, 3, 4, 1)[target == c][:, c].mean() for c in range(3) if (target == c).any()
    ]
    assert n == int((target >= 0).sum())
    assert float(loss) == pytest.approx(float(sum(per_class) / len(per_class)), rel=1e-5)


def test_unet_trains_on_the_phantoms_and_keeps_the_best_weights():
    train_data = TrainingData(TRAIN_PAIRS)
    val_data = TrainingData(VAL_PAIRS, name="validation")
    x, t = train_data.sample_patch3d_batch(np.random.default_rng(0), 3, PATCH)
    assert x.shape == (3, 1, *PATCH) and x.dtype == torch.float32 and t.shape == (3, *PATCH)
    # the 6-slice volume is centred in the 8-slice patch: one padded, unlabelled slice on each side
    assert (t[:, [0, 7]] == -1).all() and (t[:, 1:7] >= 0).all()
    assert torch.equal(x[:, 0, 0], x[:, 0, 1]), "z padding replicates the edge slice"
    model = tiny_unet(seed=0)
    cfg = TrainConfig(
        preset="unet3d",
        lr_values=(0.05,),
        lr_boundaries_epochs=(),
        max_iterations=60,
        val_every=20,
        dense_slabs_per_batch=4,
        val_samples_per_class=300,
        early_stopping_patience=100,
        seed=0,
    )
    losses = []
    result = train(model, train_data, val_data, cfg, on_progress=lambda it, m: losses.append(m["loss"]))
    assert result.iterations == 60 and len(result.history) == 3
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), (losses[:5], losses[-10:])
    n_val = sum(min(300, val_data.class_counts[c]) for c in LABELED_CLASSES)
    assert result.final_metrics["val_scored"] == n_val, "every validation voxel is scored"
    assert result.kept_val_error == min(h["val_error"] for h in result.history)
    # independent check: whole-volume sliding-window inference on the validation phantom
    fill, lab = VAL_PAIRS[0]
    pred = predict_volume(model, fill)
    for c in LABELED_CLASSES:
        acc = float((pred.class_map[lab == c] == c).mean())
        assert acc > 0.9, (c, acc)


def _direct(model, window_hu):
    with torch.no_grad():
        x = normalize_hu(torch.from_numpy(np.ascontiguousarray(window_hu)))[None, None]
        return torch.softmax(model(x), 1)[0].numpy()


def test_sliding_window_equals_direct_forward_passes():
    model = tiny_unet(seed=2).eval()
    rng = np.random.default_rng(5)
    # 2 x 2 x 2 roi: with no overlap every voxel lies in exactly one window, so the gaussian blend is that window
    fill = rng.normal(100, 400, (16, 32, 32)).astype(np.int16)
    res = predict_volume_unet3d(model, fill, overlap=0.0, return_probs=True, prob_dtype=np.float32)
    expected = np.empty((3, 16, 32, 32), np.float32)
    for z in (0, 8):
        for y in (0, 16):
            for x in (0, 16):
                expected[:, z : z + 8, y : y + 16, x : x + 16] = _direct(
                    model, fill[z : z + 8, y : y + 16, x : x + 16]
                )
    np.testing.assert_allclose(res.probs, expected, atol=1e-5)
    assert np.array_equal(res.class_map, expected.argmax(0) + VESSEL)
    # a volume smaller than the roi: one window, padded like training windows (z edge, y/x air), cropped back
    small = fill[:5, :12, :16]
    res_small = predict_volume_unet3d(model, small, return_probs=True, prob_dtype=np.float32)
    window = crop_padded(small, (-1, -2, 0), PATCH)
    assert window.shape == PATCH and (window[:, :2] == -1000).all() and (window[:, 14:] == -1000).all()
    assert np.array_equal(window[0, 2:14], small[0]) and np.array_equal(window[1:6, 2:14], small)
    np.testing.assert_allclose(res_small.probs, _direct(model, window)[:, 1:6, 2:14, :], atol=1e-5)
    # with the default 50 % overlap the blend stays a probability distribution and matches the argmax of probs
    blended = predict_volume_unet3d(model, fill, return_probs=True, prob_dtype=np.float32)
    np.testing.assert_allclose(blended.probs.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(blended.class_map, blended.probs.argmax(0) + VESSEL)


def test_result_matches_predict_volume_and_refuses_other_spacing():
    unet = tiny_unet(seed=3, spacing=(2.0, 1.0, 1.0))
    voxel = build_model("tiny")
    fill = np.random.default_rng(1).normal(100, 400, (12, 24, 20)).astype(np.int16)
    cand = fill >= 100
    ours = predict_volume(unet, fill, candidate_mask=cand, spacing_mm=(2.0, 1.0, 1.0))
    theirs = predict_volume(voxel, fill, candidate_mask=cand)
    for name in ("class_map", "vessel_prob"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a.shape == b.shape == fill.shape and a.dtype == b.dtype
    assert (ours.class_map[~cand] == SOFT_TISSUE).all() and (ours.vessel_prob[~cand] == 0).all()
    assert ours.voxels_per_s > 0 and ours.network_voxels == fill.size
    # chunks of slices (memory bound) give the same result as one pass up to the blend at the chunk edges
    full = predict_volume_unet3d(unet, fill, return_probs=True, prob_dtype=np.float32)
    chunked = predict_volume_unet3d(
        unet, fill, return_probs=True, prob_dtype=np.float32, chunk_voxels=8 * 24 * 20
    )
    assert chunked.probs.shape == full.probs.shape
    assert np.abs(full.probs - chunked.probs).max() < 0.05
    assert (full.class_map == chunked.class_map).mean() > 0.99
    with pytest.raises(SpacingMismatchError, match="planned and trained for voxels of"):
        predict_volume(unet, fill, spacing_mm=(0.5, 0.5, 0.5))


def test_another_spacing_is_refused_in_words_naming_both_spacings():
    """The inference task shows a failed task's error through dla_web.api.readable_error: the message alone."""
    from dla_web.api import readable_error

    unet = tiny_unet(seed=4, spacing=(0.5, 0.46, 0.46))
    fill = np.random.default_rng(2).normal(100, 400, (8, 16, 16)).astype(np.int16)
    with pytest.raises(SpacingMismatchError) as refused:
        predict_volume(unet, fill, spacing_mm=(1.0, 0.92, 0.92))
    text = readable_error(refused.value)
    assert "(0.5, 0.46, 0.46) mm" in text and "(1, 0.92, 0.92) mm" in text, text
    assert "SpacingMismatchError" not in text and "Error" not in text and text == str(refused.value)
    # within the tolerance (a factor 1.25) the volume is accepted
    assert predict_volume(unet, fill, spacing_mm=(0.55, 0.5, 0.5)).class_map.shape == fill.shape


def test_a_patch_that_does_not_fit_the_volume_is_refused_in_words():
    from dla_web.api import readable_error

    unet = tiny_unet(seed=5)  # patch 8 x 16 x 16
    # more than twice the volume along y and x: refused, naming the patch, the volume and the axes
    tiny = np.zeros((8, 7, 6), np.int16)
    with pytest.raises(PatchDoesNotFitError) as refused:
        predict_volume(unet, tiny)
    text = readable_error(refused.value)
    assert "patch of 8 x 16 x 16 voxels" in text and "volume of 8 x 7 x 6 voxels" in text, text
    assert "along y and x" in text and "at least 4 x 8 x 8 voxels" in text and "Error" not in text
    # exactly half the patch still fits (padded, as before)
    assert predict_volume(unet, np.zeros((4, 8, 8), np.int16)).class_map.shape == (4, 8, 8)
    # training refuses volumes the patch does not fit, before any iteration
    small_labels = np.full((6, 7, 7), SOFT_TISSUE, np.uint8)
    small_labels[0, 0, : len(LABELED_CLASSES)] = (
        LABELED_CLASSES  # every class present: only the size is wrong
    )
    small = [(np.zeros((6, 7, 7), np.int16), small_labels)]
    cfg = TrainConfig(preset="unet3d", max_iterations=2, val_every=1, dense_slabs_per_batch=2)
    with pytest.raises(TrainingDataError, match=r"validation data, volume 0: this 3D U-Net's patch"):
        train(unet, TrainingData(TRAIN_PAIRS[:1]), TrainingData(small, name="validation"), cfg)
    # a patch that is not a positive multiple of the network's stride is no U-Net config
    bad = plan_unet3d((1.0, 1.0, 1.0), PATCH, base_filters=8)
    bad.unet_patch_zyx = (0, 16, 16)
    with pytest.raises(InvalidNetworkConfigError, match="positive multiple of the total stride"):
        build_model(bad)
