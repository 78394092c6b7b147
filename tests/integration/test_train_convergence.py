"""Patch-mode training (the paper's voxel-wise patches) converges on the synthetic problem of
tests/unit/model/test_train.py: 300 iterations of 32 patches (paper: 512), checked by dense inference over the
training volumes and by train()'s validation metrics on a held-out phantom. The unit layer keeps the shorter
dense-mode run; this one takes several seconds, so it lives here. No Django, no database."""

import pytest
import torch

from dla.classes import BONE, SOFT_TISSUE, VESSEL
from dla.model.dense import predict_volume
from dla.model.train import TrainingData, train
from tests.unit.model.test_train import TRAIN_PAIRS, VAL_PAIRS, fresh_model, small_config


@pytest.fixture(autouse=True)
def one_torch_thread():
    """As in tests/unit/model/conftest.py: a second torch thread only waits for a core on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_model_overfits_synthetic_problem_in_patch_mode():
    model = fresh_model(0)
    iters = 300
    cfg = small_config(
        mode="patch",
        max_iterations=iters,
        val_every=50,
        val_samples_per_class=200,
        batch_size=32,
        lr_values=(0.03,),
    )
    result = train(model, TrainingData(TRAIN_PAIRS), TrainingData(VAL_PAIRS, name="validation"), cfg)
    assert result.iterations == iters and len(result.history) == iters // 50
    for fill, lab in TRAIN_PAIRS[:2]:
        cm = predict_volume(model, fill).class_map
        for c in (VESSEL, BONE, SOFT_TISSUE):
            assert (cm[lab == c] == c).mean() > 0.9, c
    for name in ("vessel", "bone", "soft_tissue"):
        assert result.final_metrics[f"val_acc_{name}"] > 0.85, name
