"""dla.model.ddp end to end: two torchrun ranks on the CPU (gloo) train, relay rank 0's progress, stop together
on cancel and resume from rank 0's checkpoint, and re-raise a rank's error in the caller with its type; a 3D U-Net
trains through the same launcher (one rank: the same weights as in-process training; two ranks: weights that load
and predict). These
start subprocesses (several seconds each), so they live here rather than in tests/unit/model/test_train.py,
whose phantoms and configuration helpers they reuse. No Django, no database."""

import numpy as np
import pytest
import torch

from dla.classes import LABELED_CLASSES, SOFT_TISSUE, VESSEL
from dla.model.ddp import train_distributed
from dla.model.dense import predict_volume
from dla.model.network import build_model, config_fingerprint, load_weights, preset_config, save_weights
from dla.model.train import (
    TrainConfig,
    TrainingCancelled,
    TrainingData,
    TrainingDataError,
    load_checkpoint,
    train,
)
from dla.model.unet3d import UNet3D, plan_unet3d
from tests.unit.model.test_train import TRAIN_PAIRS, VAL_PAIRS, fresh_model, same_weights, small_config


def test_ddp_two_processes_gloo_trains_and_relays_progress(tmp_path):
    cfg = small_config(max_iterations=4, val_every=2, dense_slabs_per_batch=4)
    seen = []
    result, model = train_distributed(
        2,
        model_config=preset_config("tiny").to_dict(),
        train_config=cfg.to_dict(),
        train_pairs=TRAIN_PAIRS[:2],
        val_pairs=VAL_PAIRS,
        on_progress=lambda it, m: seen.append((it, "val_error" in m)),
        checkpoint_path=tmp_path / "ckpt.pt",
        checkpoint_every=2,
    )
    assert result.iterations == 4 and result.stopped_reason == "max_iterations"
    assert seen == [(1, False), (2, True), (3, False), (4, True)], "rank 0's progress reaches the caller"
    assert not same_weights(model, fresh_model(cfg.seed)), "it trained"
    blob = load_checkpoint(tmp_path / "ckpt.pt")
    assert blob["state"]["iteration"] == 4 and len(blob["rng_states"]) == 2, "one RNG state per rank"
    final = model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in blob["model_state"].items()), (
        "rank 0 checkpointed its weights"
    )


def test_ddp_cancel_stops_all_ranks_and_resumes_from_the_checkpoint(tmp_path):
    """A run far too long to finish before the caller's cancel arrives; the next launch resumes from the
    checkpoint that rank 0 wrote when all ranks stopped (a longer run may continue a shorter one's checkpoint)."""

    def common(max_iterations):
        return dict(
            model_config=preset_config("tiny").to_dict(),
            train_config=small_config(
                max_iterations=max_iterations, val_every=10**6, dense_slabs_per_batch=2
            ).to_dict(),
            train_pairs=TRAIN_PAIRS[:2],
            val_pairs=VAL_PAIRS,
            checkpoint_path=tmp_path / "ckpt.pt",
            checkpoint_every=10**6,
        )

    seen = []
    with pytest.raises(TrainingCancelled, match="cancelled at iteration"):
        train_distributed(
            2, on_progress=lambda it, m: seen.append(it), should_cancel=lambda: bool(seen), **common(10**7)
        )
    stopped_at = load_checkpoint(tmp_path / "ckpt.pt")["state"]["iteration"]
    assert 1 <= stopped_at < 10**7 and stopped_at >= seen[-1]
    result, _ = train_distributed(2, **common(stopped_at + 2))
    assert result.iterations == stopped_at + 2, (
        "the second launch continued from the cancelled run's checkpoint"
    )


def test_ddp_rank_errors_reach_the_caller_with_their_type_and_message():
    no_vessel = [(f, np.where(lab == VESSEL, SOFT_TISSUE, lab).astype(np.uint8)) for f, lab in VAL_PAIRS]
    with pytest.raises(TrainingDataError, match="validation cohort"):
        train_distributed(
            2,
            model_config=preset_config("tiny").to_dict(),
            train_config=small_config().to_dict(),
            train_pairs=TRAIN_PAIRS[:2],
            val_pairs=no_vessel,
            val_name="validation cohort",
        )
    with pytest.raises(ValueError, match="at least 1 process"):
        train_distributed(0, model_config={}, train_config={}, train_pairs=[], val_pairs=[])


UNET_SPACING_MM = (1.0, 1.0, 1.0)  # the phantoms of test_train carry no spacing: planned as isotropic 1 mm


def unet_configs(max_iterations=6):
    net_cfg = plan_unet3d(UNET_SPACING_MM, (8, 16, 16), base_filters=8)
    train_cfg = TrainConfig(
        preset="unet3d",
        lr_values=(0.05,),
        lr_boundaries_epochs=(),
        max_iterations=max_iterations,
        val_every=3,
        dense_slabs_per_batch=4,
        val_samples_per_class=100,
        early_stopping_patience=100,
        keep_weights="last",
        seed=0,
    )
    return net_cfg, train_cfg


def test_ddp_one_rank_trains_a_unet3d_like_in_process_training(tmp_path):
    """One torchrun rank (DistributedDataParallel over a process group of one) takes the same steps as ``train``
    in this process: same seed, same patches, same averaged gradient."""
    net_cfg, train_cfg = unet_configs()
    result, model = train_distributed(
        1,
        model_config=net_cfg.to_dict(),
        train_config=train_cfg.to_dict(),
        train_pairs=TRAIN_PAIRS[:2],
        val_pairs=VAL_PAIRS,
    )
    assert isinstance(model, UNet3D) and config_fingerprint(model.config) == config_fingerprint(net_cfg)
    torch.manual_seed(train_cfg.seed)  # as each rank does before it builds the network
    here = build_model(net_cfg)
    start = {k: v.clone() for k, v in here.state_dict().items()}
    expected = train(
        here, TrainingData(TRAIN_PAIRS[:2]), TrainingData(VAL_PAIRS, name="validation"), train_cfg
    )
    assert result.iterations == expected.iterations == 6
    assert [h["iteration"] for h in result.history] == [3, 6]
    got, want = model.state_dict(), here.state_dict()
    assert got.keys() == want.keys()
    assert any(not torch.equal(want[k], start[k]) for k in want), "in-process training moved the weights"
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=f"{k} differs")
    assert result.final_metrics["val_error"] == pytest.approx(expected.final_metrics["val_error"], abs=0.02)


def test_ddp_two_ranks_train_a_unet3d_whose_weights_load_and_predict(tmp_path):
    net_cfg, train_cfg = unet_configs()
    seen = []
    result, model = train_distributed(
        2,
        model_config=net_cfg.to_dict(),
        train_config=train_cfg.to_dict(),
        train_pairs=TRAIN_PAIRS,
        val_pairs=VAL_PAIRS,
        on_progress=lambda it, m: seen.append(it),
        checkpoint_path=tmp_path / "ckpt.pt",
        checkpoint_every=3,
    )
    assert result.iterations == 6 and result.stopped_reason == "max_iterations" and seen == [1, 2, 3, 4, 5, 6]
    n_val = sum(min(100, TrainingData(VAL_PAIRS).class_counts[c]) for c in LABELED_CLASSES)
    assert result.final_metrics["val_scored"] == n_val, (
        "validation read the U-Net's sliding-window prediction"
    )
    torch.manual_seed(train_cfg.seed)
    start = build_model(net_cfg).state_dict()
    assert not all(torch.equal(v, start[k]) for k, v in model.state_dict().items()), "it trained"
    blob = load_checkpoint(tmp_path / "ckpt.pt")
    assert blob["fingerprint"].startswith("unet3d-") and len(blob["rng_states"]) == 2
    assert all(torch.equal(model.state_dict()[k], v) for k, v in blob["model_state"].items())
    # the weights load as the planned U-Net (and as nothing else) and predict a whole volume
    save_weights(model, tmp_path / "unet.pt")
    loaded = load_weights(tmp_path / "unet.pt", expected_config=net_cfg)
    fill, _ = VAL_PAIRS[0]
    pred = predict_volume(loaded, fill, spacing_mm=UNET_SPACING_MM)
    assert pred.class_map.shape == fill.shape and set(np.unique(pred.class_map)) <= set(LABELED_CLASSES)
    assert np.isfinite(pred.vessel_prob.astype(np.float32)).all() and pred.network_voxels == fill.size
    again = predict_volume(model, fill, spacing_mm=UNET_SPACING_MM)
    assert np.array_equal(again.class_map, pred.class_map), "the loaded weights are the trained ones"
