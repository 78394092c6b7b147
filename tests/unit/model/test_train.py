"""Tests for dla.model.train: data checks, schedule, balanced losses, overfitting, reproducibility,
checkpoint/resume, divergence, cancellation, early stopping, and the weights kept (best validation or last). The 2-process DDP runs (subprocesses) are in
tests/integration/test_ddp.py and reuse the phantoms and configuration helpers defined here."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.model.dense import predict_volume
from dla.model.network import build_model
from dla.model.train import (
    InvalidTrainConfigError,
    TrainConfig,
    TrainingCancelled,
    TrainingData,
    TrainingDataError,
    TrainingDivergedError,
    autocast_dtype,
    balanced_dense_loss,
    load_checkpoint,
    train,
)


def phantom(seed, shape=(6, 32, 32)):
    """Bright tubes along z (vessel, ~440 HU), a bright cylindrical shell (bone, ~1140 HU), rest soft (~40)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    cy, cx = rng.uniform(12, 20, 2)
    r = np.hypot(yy - cy, xx - cx)
    shell = (r >= 10) & (r <= 12.5)
    tube = np.zeros((y, x), bool)
    for _ in range(4):
        ty, tx = rng.uniform(3, y - 3, 2)
        tube |= np.hypot(yy - ty, xx - tx) <= rng.uniform(1.5, 3)
    lab = np.full(shape, SOFT_TISSUE, np.uint8)
    lab[:, shell] = BONE
    lab[:, tube] = VESSEL
    fill = rng.normal(40, 30, shape)
    fill[lab == BONE] += 1100
    fill[lab == VESSEL] += 400
    return fill.astype(np.int16), lab


TRAIN_PAIRS = [phantom(s) for s in (1, 2, 4, 5)]
VAL_PAIRS = [phantom(3)]


def small_config(**kw):
    base = dict(
        preset="tiny",
        lr_values=(0.01,),
        lr_boundaries_epochs=(),
        max_iterations=8,
        val_every=4,
        dense_output_px=16,
        dense_slabs_per_batch=4,
        batch_size=64,
        val_samples_per_class=100,
        early_stopping_patience=100,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return build_model("tiny")


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_paper_schedule_and_defaults():
    cfg = TrainConfig()
    assert cfg.batch_size == 512 and cfg.momentum == 0.9 and cfg.weight_decay == 0
    assert [cfg.lr_at(e) for e in (0, 0.5, 0.999, 1.0, 1.2, 1.499, 1.5, 3.0)] == [
        1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5,
    ]  # fmt: skip
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="voxel")
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"lr": 1})


def test_training_data_errors():
    fill, lab = phantom(1)
    with pytest.raises(TrainingDataError, match="no volumes"):
        TrainingData([])
    no_bone = lab.copy()
    no_bone[no_bone == BONE] = UNLABELED
    with pytest.raises(TrainingDataError, match="bone"):
        TrainingData([(fill, no_bone)])
    with pytest.raises(TrainingDataError, match="shape"):
        TrainingData([(fill, lab[:, :-1])])
    with pytest.raises(TrainingDataError, match="unknown label"):
        TrainingData([(fill, np.where(lab == BONE, 7, lab).astype(np.uint8))])


def test_balanced_sampling_and_dense_loss_equal_patch_loss():
    fill, lab = phantom(1)
    lab = lab.copy()
    lab[:, ::3] = UNLABELED
    data = TrainingData([(fill, lab)])
    rng = np.random.default_rng(0)
    _, cls = data.sample_class_voxels(rng, 3000)
    counts = np.bincount(cls, minlength=4)[1:]
    assert counts.min() > 900  # each class ~1/3 though soft tissue dominates the labels
    x, t = data.sample_dense_batch(rng, 3, 16)
    assert x.shape == (3, 5, 56, 56) and t.shape == (3, 16, 16) and (t == -1).any()
    torch.manual_seed(0)
    model = build_model("tiny")
    logits = model(x)
    loss, n = balanced_dense_loss(logits, t)
    assert n == int((t >= 0).sum())
    # independent: per-voxel CE from separately cut 41x41 patches, averaged per class, then over classes
    per_class = []
    for c in range(3):
        idx = torch.nonzero(t == c)
        patches = torch.stack([x[i, :, yy : yy + 41, xx : xx + 41] for i, yy, xx in idx.tolist()])
        ce = F.cross_entropy(model(patches)[:, :, 0, 0], torch.full((len(idx),), c))
        per_class.append(ce)
    present = [p for c, p in enumerate(per_class) if (t == c).any()]
    assert loss.item() == pytest.approx(torch.stack(present).mean().item(), rel=1e-4)


def test_tiny_model_overfits_synthetic_problem():
    """Dense mode, 100 iterations of 4 slabs of 16x16 outputs; the 150-iteration patch-mode run is in
    tests/integration/test_train_convergence.py."""
    model = fresh_model(0)
    iters = 100
    cfg = small_config(
        mode="dense", max_iterations=iters, val_every=50, val_samples_per_class=200, lr_values=(0.05,)
    )
    result = train(model, TrainingData(TRAIN_PAIRS), TrainingData(VAL_PAIRS, name="validation"), cfg)
    assert result.iterations == iters and len(result.history) == iters // 50
    # the balanced loss starts near ln 3 (three classes, no information) and falls far below it
    assert result.final_metrics["loss"] < 0.1 * math.log(3)
    # independent check with dense inference over the training volumes
    for fill, lab in TRAIN_PAIRS[:2]:
        cm = predict_volume(model, fill).class_map
        for c in (VESSEL, BONE, SOFT_TISSUE):
            assert (cm[lab == c] == c).mean() > 0.9, c
    # and it generalises to a held-out phantom (validation metrics computed by train())
    for name in ("vessel", "bone", "soft_tissue"):
        assert result.final_metrics[f"val_acc_{name}"] > 0.85, name


BF16_CPU = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_mixed_precision_on_a_cpu_trains_as_well_as_float32():
    """``amp`` on a CPU autocasts the forward pass to bfloat16 where oneDNN has native bf16 (this machine type),
    plain float32 elsewhere and with ``amp=False``; the result says which. Both learn the synthetic problem, and
    the bf16 run's weights stay float32 but differ from the float32 run's (the forward pass really ran in bf16)."""
    assert autocast_dtype("cpu", amp=False) is None
    assert autocast_dtype("cpu", amp=True) == (torch.bfloat16 if BF16_CPU else None)
    data, val = TrainingData(TRAIN_PAIRS), TrainingData(VAL_PAIRS, name="validation")
    cfg = dict(mode="dense", max_iterations=100, val_every=50, val_samples_per_class=200, lr_values=(0.05,))
    results, models = {}, {}
    for amp in (True, False):
        models[amp] = fresh_model(0)
        results[amp] = train(models[amp], data, val, small_config(amp=amp, **cfg))
    assert results[False].precision == "float32"
    assert results[True].precision == ("bfloat16" if BF16_CPU else "float32")
    for amp, result in results.items():
        assert all(p.dtype == torch.float32 for p in models[amp].parameters())
        for name in ("vessel", "bone", "soft_tissue"):
            assert result.final_metrics[f"val_acc_{name}"] > 0.85, (amp, name)
    assert same_weights(models[True], models[False]) == (not BF16_CPU)


def test_same_seed_same_weights_different_seed_differs():
    data, val = TrainingData(TRAIN_PAIRS[:2]), TrainingData(VAL_PAIRS, name="validation")
    a, b, c = fresh_model(0), fresh_model(0), fresh_model(0)
    train(a, data, val, small_config())
    train(b, data, val, small_config())
    train(c, data, val, small_config(seed=4))
    assert same_weights(a, b) and not same_weights(a, c)
    assert not same_weights(a, fresh_model(0))


@pytest.mark.parametrize("mode", ["dense", "patch"])
def test_checkpoint_resume_equals_uninterrupted(tmp_path, mode):
    data, val = TrainingData(TRAIN_PAIRS[:2]), TrainingData(VAL_PAIRS, name="validation")

    def cfg(max_iterations):  # small batches and validations: equality, not learning, is the point here
        return small_config(mode=mode, max_iterations=max_iterations, batch_size=16, val_samples_per_class=40)

    full = fresh_model(0)
    r_full = train(
        full,
        data,
        val,
        cfg(10),
        checkpoint_path=tmp_path / "a.ckpt",
        checkpoint_every=5,
    )
    ckpt = tmp_path / "b.ckpt"
    part = fresh_model(0)
    train(part, data, val, cfg(6), checkpoint_path=ckpt, checkpoint_every=3)
    assert load_checkpoint(ckpt)["state"]["iteration"] == 6
    resumed = fresh_model(99)  # different init: everything must come from the checkpoint
    r_res = train(
        resumed,
        data,
        val,
        cfg(10),
        checkpoint_path=ckpt,
        checkpoint_every=3,
    )
    assert r_res.iterations == 10
    assert same_weights(full, resumed)
    assert [h["val_error"] for h in r_full.history] == [h["val_error"] for h in r_res.history]
    # resume=False starts over (and ends equal to the uninterrupted run too)
    again = fresh_model(0)
    train(again, data, val, cfg(10), checkpoint_path=ckpt, resume=False)
    assert same_weights(full, again)


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    data, val = TrainingData(TRAIN_PAIRS[:2]), TrainingData(VAL_PAIRS, name="validation")
    ckpt = tmp_path / "c.ckpt"
    seen = []
    with pytest.raises(TrainingDivergedError, match="last good checkpoint is iteration") as err:
        train(
            fresh_model(0), data, val, small_config(lr_values=(1e12,), max_iterations=50),
            checkpoint_path=ckpt, checkpoint_every=1, on_progress=lambda i, m: seen.append(i),
        )  # fmt: skip
    blob = load_checkpoint(ckpt)
    last = blob["state"]["iteration"]
    assert last == seen[-1] and f"iteration {last}" in str(err.value)
    assert all(torch.isfinite(v).all() for v in blob["model_state"].values())
    assert list(tmp_path.iterdir()) == [ckpt]  # no temp files left behind


def test_cancel_within_one_iteration(tmp_path):
    data, val = TrainingData(TRAIN_PAIRS[:2]), TrainingData(VAL_PAIRS, name="validation")
    done = []
    ckpt = tmp_path / "d.ckpt"
    with pytest.raises(TrainingCancelled):
        train(
            fresh_model(0), data, val, small_config(max_iterations=100),
            on_progress=lambda i, m: done.append(i), should_cancel=lambda: len(done) >= 3,
            checkpoint_path=ckpt, checkpoint_every=1000,
        )  # fmt: skip
    assert done == [1, 2, 3]
    assert load_checkpoint(ckpt)["state"]["iteration"] == 3


def test_early_stopping_on_plateau():
    data, val = TrainingData(TRAIN_PAIRS[:2]), TrainingData(VAL_PAIRS, name="validation")
    cfg = small_config(
        max_iterations=100, val_every=2, early_stopping_patience=2, early_stopping_min_delta=1.0
    )
    result = train(fresh_model(0), data, val, cfg)
    # first validation sets the best; no later one can improve by 1.0 -> stop at the 3rd validation
    assert result.stopped_reason == "early_stopping" and result.iterations == 6
    assert result.best_iteration == 2 and math.isfinite(result.best_val_error)


# ------------------------------------------------------------------------------------------------ kept weights


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def equal_to(model, snap):
    state = model.state_dict()
    return state.keys() == snap.keys() and all(torch.equal(state[k], snap[k]) for k in state)


def sabotaged_run(keep_weights="best", *, at=21, max_iterations=30, **kw):
    """Train 30 iterations (validation every 10); right after iteration ``at`` the weights are wrecked (all zero:
    a constant prediction, like a run whose validation collapsed), so the last validation is the worst.
    Returns (model, result, {iteration: weights after it})."""
    data, val = TrainingData(TRAIN_PAIRS[:2]), TrainingData(VAL_PAIRS, name="validation")
    model = fresh_model(0)
    snaps = {}

    def on_progress(it, metrics):
        if it == at:
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
        snaps[it] = snapshot(model)

    cfg = small_config(
        mode="dense",
        max_iterations=max_iterations,
        val_every=10,
        lr_values=(0.05,),
        keep_weights=keep_weights,
    )
    result = train(model, data, val, cfg, on_progress=on_progress, **kw)
    return model, result, snaps


def test_best_validation_weights_are_kept_when_validation_gets_worse(tmp_path):
    ckpt = tmp_path / "end.ckpt"
    model, result, snaps = sabotaged_run(checkpoint_path=ckpt, checkpoint_every=1000)
    errors = {h["iteration"]: h["val_error"] for h in result.history}
    assert sorted(errors) == [10, 20, 30]
    best_it = min(errors, key=errors.get)
    assert best_it in (10, 20) and errors[30] > errors[best_it]
    assert result.best_iteration == best_it and result.best_val_error == errors[best_it]
    assert result.kept_weights == "best" and result.kept_iteration == best_it
    assert result.kept_val_error == errors[best_it] and result.last_val_error == errors[30]
    assert equal_to(model, snaps[best_it]) and not equal_to(model, snaps[30])
    assert result.final_metrics["val_error"] == errors[30]  # the last iteration's numbers are still reported
    assert "validation diverged" in result.validation_warning
    assert f"weights of iteration {best_it} are kept" in result.validation_warning
    # the final checkpoint: the kept weights, and the last ones to resume from
    blob = load_checkpoint(ckpt)
    assert all(torch.equal(blob["model_state"][k], v) for k, v in snaps[best_it].items())
    assert all(torch.equal(blob["resume_model_state"][k], v) for k, v in snaps[30].items())
    assert all(torch.equal(blob["best_model_state"][k], v) for k, v in snaps[best_it].items())


def test_keep_last_weights_on_request():
    model, result, snaps = sabotaged_run("last")
    assert result.kept_weights == "last" and result.kept_iteration == 30
    assert equal_to(model, snaps[30]) and result.kept_val_error == result.last_val_error
    assert "keep_weights='last'" in result.validation_warning
    with pytest.raises(InvalidTrainConfigError, match="keep_weights"):
        small_config(keep_weights="newest")


def test_resumed_run_keeps_the_best_of_before_the_interruption(tmp_path):
    ckpt = tmp_path / "best.ckpt"
    count = []

    def cancel_after_25():
        return len(count) >= 25

    data, val = TrainingData(TRAIN_PAIRS[:2]), TrainingData(VAL_PAIRS, name="validation")
    model = fresh_model(0)
    snaps = {}

    def on_progress(it, metrics):
        count.append(it)
        if it == 21:
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
        snaps[it] = snapshot(model)

    cfg = small_config(mode="dense", max_iterations=30, val_every=10, lr_values=(0.05,))
    with pytest.raises(TrainingCancelled):
        train(
            model,
            data,
            val,
            cfg,
            on_progress=on_progress,
            should_cancel=cancel_after_25,
            checkpoint_path=ckpt,
        )
    assert load_checkpoint(ckpt)["state"]["iteration"] == 25
    assert load_checkpoint(ckpt)["best_model_state"] is not None
    resumed = fresh_model(7)
    result = train(resumed, data, val, cfg, checkpoint_path=ckpt)
    assert result.iterations == 30 and result.kept_weights == "best" and result.kept_iteration in (10, 20)
    assert equal_to(resumed, snaps[result.kept_iteration])


def test_last_weights_validated_at_the_end_compete_for_the_best():
    data, val = TrainingData(TRAIN_PAIRS[:2]), TrainingData(VAL_PAIRS, name="validation")
    model = fresh_model(0)
    result = train(model, data, val, small_config(max_iterations=8, val_every=100))
    assert result.history == [] and result.best_iteration == 8 and result.kept_iteration == 8
    assert (
        result.kept_weights == "best"
        and result.kept_val_error == result.last_val_error == result.best_val_error
    )
    assert result.validation_warning == ""
