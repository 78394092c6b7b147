"""dla.model.ddp end to end: two torchrun ranks on the CPU (gloo) train, relay rank 0's progress, stop together
on cancel and resume from rank 0's checkpoint, and re-raise a rank's error in the caller with its type. These
start subprocesses (several seconds each), so they live here rather than in tests/unit/model/test_train.py,
whose phantoms and configuration helpers they reuse. No Django, no database."""

import numpy as np
import pytest
import torch

from dla.classes import SOFT_TISSUE, VESSEL
from dla.model.ddp import train_distributed
from dla.model.network import preset_config
from dla.model.train import TrainingCancelled, TrainingDataError, load_checkpoint
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
    with pytest.raises(ValueError, match="at least 2 processes"):
        train_distributed(1, model_config={}, train_config={}, train_pairs=[], val_pairs=[])
