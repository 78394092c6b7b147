"""Training-batch augmentation of dla.model.train (issue 14.4): config checks and round trip (old configs load
with augmentation off), the stated statistics of the HU scale, blur and noise on training batches, off means
bit-identical training, and validation inputs are never augmented."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from dla.model.network import HU_SCALE, build_model, normalize_hu
from dla.model.train import (
    InvalidTrainConfigError,
    TrainConfig,
    TrainingData,
    augment_hu_batch,
    train,
)

from .test_train import TRAIN_PAIRS, VAL_PAIRS, same_weights, small_config

AUG = {"augment_noise_hu": 40.0, "augment_blur_sigma_voxels": 1.0, "augment_hu_scale": (0.8, 1.2)}


def test_config_round_trip_defaults_off_and_bad_values():
    off = TrainConfig()
    assert not off.augments
    cfg = TrainConfig(**AUG, augment_probability=0.5)
    assert cfg.augments
    d = cfg.to_dict()
    assert d["augment_hu_scale"] == [0.8, 1.2]
    assert TrainConfig.from_dict(d) == cfg
    old = {k: v for k, v in off.to_dict().items() if not k.startswith("augment_")}  # a config saved before
    loaded = TrainConfig.from_dict(old)
    assert loaded == off and not loaded.augments
    for bad in (
        {"augment_noise_hu": -1.0},
        {"augment_noise_hu": True},
        {"augment_blur_sigma_voxels": 3.5},
        {"augment_hu_scale": (1.2, 0.8)},
        {"augment_hu_scale": (0.1, 1.0)},
        {"augment_hu_scale": 1.1},
        {"augment_probability": 1.5},
    ):
        with pytest.raises(InvalidTrainConfigError, match=next(iter(bad))):
            TrainConfig(**bad)


def _batches(cfg, seed=11, n=48, mode="dense"):
    """The same training batch drawn without and with ``cfg``'s augmentation (same rng seed), in HU."""
    data = TrainingData(TRAIN_PAIRS)
    if mode == "dense":
        x0, t0 = data.sample_dense_batch(np.random.default_rng(seed), n, 16)
        x1, t1 = data.sample_dense_batch(np.random.default_rng(seed), n, 16, augment=cfg)
    else:
        x0, t0 = data.sample_patch_batch(np.random.default_rng(seed), n)
        x1, t1 = data.sample_patch_batch(np.random.default_rng(seed), n, augment=cfg)
    assert torch.equal(t0, t1)  # the augmentation draws after the batch: the same voxels and targets
    return x0.numpy().astype(np.float64) * HU_SCALE, x1.numpy().astype(np.float64) * HU_SCALE


def test_noise_augmentation_adds_zero_mean_noise_with_sd_uniform_up_to_the_maximum():
    cfg = TrainConfig(augment_noise_hu=60.0)
    x0, x1 = _batches(cfg, n=64)
    inside = (x0 > -900) & (x0 < 2900)  # away from the input clamp at -1000 / 3000 HU
    sds, means = [], []
    for i in range(len(x0)):
        d = (x1[i] - x0[i])[inside[i]]
        sds.append(d.std())
        means.append(d.mean())
    sds = np.array(sds)
    assert sds.max() <= 60.0 * 1.03 and sds.min() >= 0.0
    assert sds.mean() == pytest.approx(30.0, abs=6.0)  # uniform on [0, 60]: mean 30, SE of 64 draws 2.2
    assert np.std(sds) == pytest.approx(60.0 / np.sqrt(12.0), abs=5.0)
    assert abs(np.mean(means)) < 1.0


def test_hu_scale_and_blur_augmentations_follow_the_drawn_values():
    cfg = TrainConfig(augment_hu_scale=(0.7, 1.3), augment_blur_sigma_voxels=1.2)
    data = TrainingData(TRAIN_PAIRS)
    raw, _ = data.sample_dense_batch(np.random.default_rng(5), 32, 16)
    raw_hu = raw.numpy() * np.float32(HU_SCALE)
    out, drawn = augment_hu_batch(raw_hu.copy(), np.random.default_rng(9), cfg)
    scales = np.array([d["hu_scale"] for d in drawn])
    sigmas = np.array([d["blur_sigma_voxels"] for d in drawn])
    assert scales.min() >= 0.7 and scales.max() <= 1.3 and np.ptp(scales) > 0.3
    assert sigmas.min() >= 0.0 and sigmas.max() <= 1.2 and np.ptp(sigmas) > 0.5
    for i in range(len(raw_hu)):
        # independent: scale, then a separable 1-D gaussian per axis, edges replicated
        ref = raw_hu[i].astype(np.float64) * scales[i]
        for axis in range(3):
            ref = ndimage.gaussian_filter1d(ref, sigmas[i], axis=axis, mode="nearest", truncate=3.0)
        assert np.allclose(out[i], ref, atol=0.05 * scales[i] + 1e-3), i
    # only the scale: the ratio to the raw batch is one constant per slab, within the range
    x0, x1 = _batches(TrainConfig(augment_hu_scale=(0.7, 1.3)), n=32, mode="patch")
    inside = (np.abs(x0) > 100) & (x0 * 1.3 < 2900) & (x0 > -760)
    for i in range(len(x0)):
        r = x1[i][inside[i]] / x0[i][inside[i]]
        assert np.ptp(r) < 1e-3 and 0.7 <= r.mean() <= 1.3


def test_probability_leaves_that_fraction_unaugmented():
    cfg = TrainConfig(augment_noise_hu=30.0, augment_probability=0.25)
    x = np.zeros((400, 1, 4, 4), dtype=np.float32)
    _, drawn = augment_hu_batch(x, np.random.default_rng(1), cfg)
    flags = np.array([d["augmented"] for d in drawn])
    assert flags.mean() == pytest.approx(0.25, abs=0.07)
    assert np.all(x[~flags] == 0) and np.all(np.abs(x[flags]).sum(axis=(1, 2, 3)) > 0)


def _run(cfg, capture):
    """Train a tiny model; records every network input (training flag, x) through a forward pre-hook."""
    torch.manual_seed(0)
    model = build_model("tiny")
    model.register_forward_pre_hook(lambda m, args: capture.append((m.training, args[0].detach().clone())))
    train(model, TrainingData(TRAIN_PAIRS), TrainingData(VAL_PAIRS, name="validation"), cfg)
    return model


def test_validation_is_never_augmented_and_off_is_bit_identical():
    base = dict(max_iterations=4, val_every=2)
    val = TrainingData(VAL_PAIRS, name="validation")
    cfg = small_config(**base, **AUG)
    seen: list = []
    _run(cfg, seen)
    vox, _ = val.fixed_validation_sample(cfg.val_samples_per_class, cfg.seed + 7919)
    expected = normalize_hu(torch.from_numpy(val.patches(vox)))
    evals = [x for training, x in seen if not training]
    assert len(evals) == 2  # two validations, each one batch of the fixed validation voxels
    assert all(torch.equal(x, expected) for x in evals)
    plain_seen: list = []
    _run(small_config(**base), plain_seen)
    first_aug = next(x for training, x in seen if training)
    first_plain = next(x for training, x in plain_seen if training)
    assert first_aug.shape == first_plain.shape and not torch.equal(first_aug, first_plain)
    # augmentation off (explicit zeros) draws nothing: the same training as without the fields
    a = _run(small_config(**base), [])
    b = _run(small_config(**base, augment_noise_hu=0.0, augment_hu_scale=(1.0, 1.0)), [])
    assert same_weights(a, b)


@pytest.mark.parametrize("kind", ["dense", "patch3d"])
def test_mirror_augmentation_flips_input_and_target_together(kind):
    """With ``augment_mirror`` about half the items of a batch are the left-right mirror image of the same draw
    without it (input and target alike; the rest are unchanged), and a mirrored item's target still labels
    its own input voxels: the check is against the volume itself, not against the sampler."""
    data = TrainingData(TRAIN_PAIRS, name="train")

    def draw(mirror: bool):
        rng = np.random.default_rng(5)
        cfg = TrainConfig(augment_mirror=mirror)
        if kind == "dense":
            x, t = data.sample_dense_batch(rng, 64, 8, augment=cfg)
            return x[:, 2:3, 20:-20, 20:-20], t  # the centre slice of each slab's output window
        x, t = data.sample_patch3d_batch(rng, 64, (8, 16, 16), augment=cfg)
        return x, t

    x0, t0 = draw(False)
    x1, t1 = draw(True)
    same = [torch.equal(x1[i], x0[i]) and torch.equal(t1[i], t0[i]) for i in range(len(x0))]
    mirrored = [
        torch.equal(x1[i], torch.flip(x0[i], dims=[-1])) and torch.equal(t1[i], torch.flip(t0[i], dims=[-1]))
        for i in range(len(x0))
    ]
    assert all(a or b for a, b in zip(same, mirrored, strict=True))
    assert 16 <= sum(m and not s for m, s in zip(mirrored, same, strict=True)) <= 48
    assert TrainConfig.from_dict(TrainConfig(augment_mirror=True).to_dict()).augment_mirror
    assert not TrainConfig.from_dict(
        {k: v for k, v in TrainConfig().to_dict().items() if k != "augment_mirror"}
    ).augment_mirror
