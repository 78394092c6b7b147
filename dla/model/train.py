"""Pure-torch DLA training loop (no Django, no Celery): data sampling, SGD schedule, validation, checkpoints.

Follows the paper: SGD with momentum 0.9, batch 512, lr 1e-3 -> 1e-4 after 1 epoch -> 1e-5 after 1.5
epochs, class-balanced re-sampling (each class equally likely in a batch), validation error monitored and
early stopping on a plateau. Two sampling modes give the same per-voxel objective:

* ``"patch"`` (paper): a batch is 512 independent 5x41x41 patches whose centre voxels are drawn class by
  class with equal probability; loss = mean cross-entropy of the centre voxels.
* ``"dense"`` (default, measured faster per labelled voxel, see bench/bench_inference.py): a batch is a few
  5 x (P+40) x (P+40) slabs, each anchored on a random labelled voxel of a uniformly drawn class; the network
  outputs P x P logits and the loss is a masked per-voxel cross-entropy over the labelled output voxels with
  per-voxel weights 1 / (n_classes_present * n_voxels_of_that_class_in_batch), so every class contributes
  equally - the same objective as balanced patch training, on thousands of voxels per forward pass.

**Augmentation** (issue 14.4, off by default): ``TrainConfig.augment_hu_scale`` (HU multiplied by a factor drawn
uniformly per slab/patch, about 0 HU: contrast and bone brighter or dimmer, soft tissue almost unchanged),
``augment_blur_sigma_voxels`` (an extra 3-D gaussian blur, sigma drawn uniformly in [0, max] voxels) and
``augment_noise_hu`` (extra gaussian noise, SD drawn uniformly in [0, max] HU), in that order, each slab/patch
with probability ``augment_probability``; applied to training batches only (``augment_hu_batch``), never to
the validation voxels. With everything off no random number is drawn for it: training is bit-identical to
before.

**3D U-Net** (issue 18): when the model's config says ``architecture="unet3d"`` (dla/model/unet3d.py) a batch is
``dense_slabs_per_batch`` 3-D patches of the config's ``unet_patch_zyx`` voxels, each containing a labelled voxel of
a uniformly drawn class at a random position (padded like ``pad_volume`` where the patch leaves the volume, those
voxels unlabelled), with the same class-balanced masked loss ``balanced_dense_loss`` on every labelled voxel;
``mode`` is then ignored. Validation scores the same fixed validation voxels, read from the U-Net's
sliding-window prediction of the box around them in each validation volume (``evaluate_unet3d``). The voxel net's
path is unchanged.

An "epoch" is one pass worth of labelled training voxels (``epoch_voxels``, default: all labelled voxels).
``train`` supports checkpoint/resume (atomic), cancellation, divergence detection and torch.distributed
(DistributedDataParallel, gloo on CPU) when a process group is initialised; ``dla.model.ddp`` launches the
processes.

**Kept weights.** ``train`` keeps a copy of the weights at the best validation (lowest balanced validation
error, improving by at least ``early_stopping_min_delta``; the weights after the last iteration are validated at
the end and compete too) and, with ``keep_weights="best"`` (default), leaves the model holding them: a run
whose validation got worse after its best keeps the best, not the last. The copy travels in the checkpoint, so
a resumed run keeps the same best. The final checkpoint's ``model_state`` is the kept weights; when those are
not the last iteration's, ``resume_model_state`` holds the last ones, from which a resume continues. ``TrainResult``
says which iteration was kept and both validation errors, and warns when validation diverged (the last error well
above the best).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from scipy import ndimage

from dla.classes import CLASS_NAMES, LABELED_CLASSES, UNLABELED
from dla.model.base import HALO_YX, HALO_Z, PATCH_YX, IncompatibleWeightsError, normalize_hu
from dla.model.dense import extract_patches, pad_volume
from dla.model.network import atomic_torch_save, config_fingerprint, load_state_checked

CHECKPOINT_FORMAT = "dla-workbench/train-checkpoint"


class TrainingDataError(ValueError):
    """Training / validation data unusable (empty, class missing, shape mismatch)."""


class TrainingDivergedError(ValueError):
    """Loss became NaN/inf; the last checkpoint written before divergence is left intact."""


class TrainingCancelled(Exception):
    """``should_cancel()`` returned True; a checkpoint of the last completed iteration was written."""


class InvalidTrainConfigError(ValueError):
    """TrainConfig values are inconsistent."""


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults are the paper's (batch 512, SGD 0.9, 1e-3/1e-4/1e-5 at 1/1.5 ep).

    ``batch_size``: patches per iteration in patch mode (split across DDP ranks). Dense mode uses
    ``dense_slabs_per_batch`` slabs of ``dense_output_px``^2 output voxels instead.
    ``val_every``: iterations between validations; ``early_stopping_patience``: validations without an
    improvement of at least ``early_stopping_min_delta`` in balanced validation error before stopping.
    ``keep_weights``: which weights the model holds when ``train`` returns ("best" validation or "last").
    ``augment_*``: training-batch augmentation (module docstring; default off): ``augment_noise_hu`` max extra
    noise SD (HU, 0-500), ``augment_blur_sigma_voxels`` max extra blur sigma (voxels, 0-3), ``augment_hu_scale``
    (low, high) HU factor range (0.25-4; (1, 1) off), ``augment_probability`` per slab/patch (0-1).
    ``augment_mirror``: each slab/patch (input and target together) is mirrored left-right (x) with probability
    one half (heads are left-right symmetric; ``_mirrored``); independent of the HU augmentation.
    """

    preset: str = "cpu"
    mode: str = "dense"
    batch_size: int = 512
    dense_output_px: int = 24
    dense_slabs_per_batch: int = 8
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_values: tuple[float, ...] = (1e-3, 1e-4, 1e-5)
    lr_boundaries_epochs: tuple[float, ...] = (1.0, 1.5)
    epoch_voxels: int | None = None
    max_iterations: int = 200_000
    val_every: int = 1000
    val_samples_per_class: int = 2000
    early_stopping_patience: int = 10
    early_stopping_min_delta: float = 1e-4
    seed: int = 0
    amp: bool = True  # mixed precision where the device has it natively (``autocast_dtype``)
    keep_weights: str = "best"  # "best": the weights of the best validation; "last": of the last iteration
    augment_noise_hu: float = 0.0
    augment_blur_sigma_voxels: float = 0.0
    augment_hu_scale: tuple[float, float] = (1.0, 1.0)
    augment_probability: float = 1.0
    augment_mirror: bool = False

    def __post_init__(self) -> None:
        self._check_augmentation()
        if self.keep_weights not in ("best", "last"):
            raise InvalidTrainConfigError(f"keep_weights must be 'best' or 'last', got {self.keep_weights!r}")
        self.lr_values = tuple(float(v) for v in self.lr_values)
        self.lr_boundaries_epochs = tuple(float(v) for v in self.lr_boundaries_epochs)
        if self.mode not in ("dense", "patch"):
            raise InvalidTrainConfigError(f"mode must be 'dense' or 'patch', got {self.mode!r}")
        if len(self.lr_values) != len(self.lr_boundaries_epochs) + 1:
            raise InvalidTrainConfigError("lr_values needs exactly one more entry than lr_boundaries_epochs")
        if list(self.lr_boundaries_epochs) != sorted(self.lr_boundaries_epochs):
            raise InvalidTrainConfigError("lr_boundaries_epochs must be increasing")
        for name in ("batch_size", "dense_output_px", "dense_slabs_per_batch", "max_iterations", "val_every"):
            if getattr(self, name) < 1:
                raise InvalidTrainConfigError(f"{name} must be >= 1")

    def _check_augmentation(self) -> None:
        def number(name, low, high):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (low <= float(v) <= high):
                raise InvalidTrainConfigError(
                    f"{name} must be a number within [{low:g}, {high:g}], got {v!r}"
                )
            setattr(self, name, float(v))

        number("augment_noise_hu", 0.0, 500.0)
        number("augment_blur_sigma_voxels", 0.0, 3.0)
        number("augment_probability", 0.0, 1.0)
        scale = self.augment_hu_scale
        if (
            not isinstance(scale, list | tuple)
            or len(scale) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in scale)
            or not (0.25 <= float(scale[0]) <= float(scale[1]) <= 4.0)
        ):
            raise InvalidTrainConfigError(
                f"augment_hu_scale must be (low, high) with 0.25 <= low <= high <= 4, got {scale!r}"
            )
        self.augment_hu_scale = (float(scale[0]), float(scale[1]))

    @property
    def augments(self) -> bool:
        """True when any training-batch augmentation is on."""
        return self.augment_probability > 0 and (
            self.augment_noise_hu > 0
            or self.augment_blur_sigma_voxels > 0
            or self.augment_hu_scale != (1.0, 1.0)
        )

    def lr_at(self, epoch: float) -> float:
        """Learning rate at fractional epoch ``epoch`` (piecewise constant)."""
        for boundary, lr in zip(self.lr_boundaries_epochs, self.lr_values, strict=False):
            if epoch < boundary:
                return lr
        return self.lr_values[-1]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lr_values"] = list(self.lr_values)
        d["lr_boundaries_epochs"] = list(self.lr_boundaries_epochs)
        d["augment_hu_scale"] = list(self.augment_hu_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of ``to_dict``; keys it lacks take their defaults (a config saved before augmentation existed
        loads with augmentation off). Unknown keys raise InvalidTrainConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InvalidTrainConfigError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)


class TrainingData:
    """In-memory labelled volumes: list of (fill_hu int16 [Z,Y,X], labels uint8 [Z,Y,X]) pairs.

    Labels use dla.classes ids (0 = unlabeled, ignored). Volumes are kept padded (``pad_volume``)
    as int16; per-class voxel indices allow class-balanced sampling. Raises TrainingDataError on no data,
    shape mismatch, unknown label values, or a labelled class missing from all volumes.
    """

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, name: str = "training"):
        self.name = name
        if pairs is None or len(pairs) == 0:
            raise TrainingDataError(f"{name} data: no volumes given")
        self.padded: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        per_class: dict[int, list[np.ndarray]] = {c: [] for c in LABELED_CLASSES}
        for i, (fill, lab) in enumerate(pairs):
            fill, lab = np.asarray(fill), np.asarray(lab)
            if fill.ndim != 3 or fill.shape != lab.shape:
                raise TrainingDataError(
                    f"{name} data: volume {i} fill shape {fill.shape} and labels shape {lab.shape} must be equal 3D"
                )
            if not np.issubdtype(fill.dtype, np.integer):
                raise TrainingDataError(f"{name} data: volume {i} fill must be integer HU, got {fill.dtype}")
            bad = np.setdiff1d(np.unique(lab), [UNLABELED, *LABELED_CLASSES])
            if bad.size:
                raise TrainingDataError(f"{name} data: volume {i} has unknown label values {bad.tolist()}")
            lab = lab.astype(np.uint8, copy=False)
            self.padded.append(pad_volume(fill.astype(np.int16, copy=False)))
            self.labels.append(lab)
            for c in LABELED_CLASSES:
                z, y, x = np.nonzero(lab == c)
                if z.size:
                    per_class[c].append(np.stack([np.full_like(z, i), z, y, x], axis=1).astype(np.int32))
        missing = [CLASS_NAMES[c] for c in LABELED_CLASSES if not per_class[c]]
        if missing:
            raise TrainingDataError(f"{name} data: no labelled voxels of class {', '.join(missing)}")
        self.class_index = {c: np.concatenate(per_class[c]) for c in LABELED_CLASSES}
        self.class_counts = {c: len(v) for c, v in self.class_index.items()}
        self.n_labeled = sum(self.class_counts.values())

    def sample_class_voxels(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n voxels (int [n,4] = vol,z,y,x) with class drawn uniformly per sample, then voxel uniformly."""
        classes = rng.integers(0, len(LABELED_CLASSES), size=n)
        out = np.empty((n, 4), dtype=np.int64)
        for k, c in enumerate(LABELED_CLASSES):
            sel = np.flatnonzero(classes == k)
            if sel.size:
                idx = rng.integers(0, self.class_counts[c], size=sel.size)
                out[sel] = self.class_index[c][idx]
        return out, np.asarray(LABELED_CLASSES)[classes]

    def patches(self, vox: np.ndarray) -> np.ndarray:
        """int16 [n,5,41,41] patches for voxels int [n,4] (vol, z, y, x)."""
        out = np.empty((len(vox), 5, PATCH_YX, PATCH_YX), dtype=np.int16)
        for v in np.unique(vox[:, 0]):
            sel = np.flatnonzero(vox[:, 0] == v)
            out[sel] = extract_patches(self.padded[v], vox[sel, 1:])
        return out

    def sample_patch_batch(
        self, rng: np.random.Generator, n: int, augment: TrainConfig | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced patch batch: x float32 [n,5,41,41] normalised, target int64 [n] (channel = class - 1).
        ``augment``: a TrainConfig whose augmentation is applied to the patches (``augment_hu_batch``)."""
        vox, cls = self.sample_class_voxels(rng, n)
        x = _augmented(_mirrored(self.patches(vox), None, rng, augment)[0], rng, augment)
        return normalize_hu(torch.from_numpy(x)), torch.from_numpy(cls.astype(np.int64) - 1)

    def sample_dense_batch(
        self, rng: np.random.Generator, n_slabs: int, out_px: int, augment: TrainConfig | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Slab batch: x float32 [n, 5, P+40, P+40], target int64 [n, P, P] (class - 1, -1 = unlabelled).

        Each slab's P x P output window contains a voxel of a uniformly drawn class at a random position.
        Windows are clipped to the volume, so P is reduced to the smallest in-plane size if needed.
        ``augment``: a TrainConfig whose augmentation is applied to the slabs (``augment_hu_batch``).
        """
        p = min(out_px, *(lab.shape[1] for lab in self.labels), *(lab.shape[2] for lab in self.labels))
        vox, _ = self.sample_class_voxels(rng, n_slabs)
        offs = rng.integers(0, p, size=(n_slabs, 2))
        xs = np.empty((n_slabs, 5, p + 2 * HALO_YX, p + 2 * HALO_YX), dtype=np.int16)
        ts = np.empty((n_slabs, p, p), dtype=np.int64)
        for i, (v, z, y, x) in enumerate(vox):
            lab = self.labels[v]
            y0 = int(np.clip(y - offs[i, 0], 0, lab.shape[1] - p))
            x0 = int(np.clip(x - offs[i, 1], 0, lab.shape[2] - p))
            # padded z index z .. z+4 covers original slices z-2 .. z+2
            xs[i] = self.padded[v][
                z : z + 2 * HALO_Z + 1, y0 : y0 + p + 2 * HALO_YX, x0 : x0 + p + 2 * HALO_YX
            ]
            ts[i] = lab[z, y0 : y0 + p, x0 : x0 + p].astype(np.int64) - 1
        xs, ts = _mirrored(xs, ts, rng, augment)
        return normalize_hu(torch.from_numpy(_augmented(xs, rng, augment))), torch.from_numpy(ts)

    def crop3d(self, v: int, start_zyx, size_zyx) -> tuple[np.ndarray, np.ndarray]:
        """(int16 HU [D,H,W], int64 target [D,H,W] class - 1, -1 unlabelled) window of volume ``v`` at
        ``start_zyx`` (unpadded coordinates, may leave the volume: padded like ``pad_volume``)."""
        from dla.model.unet3d import crop_labels, crop_padded

        start = [int(s) for s in start_zyx]
        x = crop_padded(self.padded[v], (start[0] + HALO_Z, start[1] + HALO_YX, start[2] + HALO_YX), size_zyx)
        return x, crop_labels(self.labels[v], start, size_zyx)

    def sample_patch3d_batch(
        self, rng: np.random.Generator, n: int, patch_zyx, augment: TrainConfig | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """3D U-Net batch: x float32 [n, 1, D, H, W] normalised, target int64 [n, D, H, W] (class - 1, -1 =
        unlabelled or outside the volume). Each patch contains a voxel of a uniformly drawn class at a random
        position; patches stay inside the volume along axes where it is at least the patch, else are centred."""
        d = [int(p) for p in patch_zyx]
        vox, _ = self.sample_class_voxels(rng, n)
        offs = rng.integers(0, d, size=(n, 3))
        xs = np.empty((n, *d), dtype=np.int16)
        ts = np.empty((n, *d), dtype=np.int64)
        for i, (v, *c) in enumerate(vox):
            shape = self.labels[v].shape
            start = [
                int(np.clip(c[a] - offs[i, a], 0, shape[a] - d[a]))
                if shape[a] >= d[a]
                else -((d[a] - shape[a]) // 2)
                for a in range(3)
            ]
            xs[i], ts[i] = self.crop3d(v, start, d)
        xs, ts = _mirrored(xs, ts, rng, augment)
        x = normalize_hu(torch.from_numpy(_augmented(xs, rng, augment)))
        return x[:, None], torch.from_numpy(ts)

    def fixed_validation_sample(self, n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic (seeded) sample of up to n_per_class voxels per class: (vox int [m,4], class ids [m])."""
        rng = np.random.default_rng(seed)
        voxs, classes = [], []
        for c in LABELED_CLASSES:
            idx = self.class_index[c]
            take = (
                idx
                if len(idx) <= n_per_class
                else idx[np.sort(rng.choice(len(idx), n_per_class, replace=False))]
            )
            voxs.append(take.astype(np.int64))
            classes.append(np.full(len(take), c))
        return np.concatenate(voxs), np.concatenate(classes)


def augment_hu_batch(
    x_hu: np.ndarray, rng: np.random.Generator, config: TrainConfig
) -> tuple[np.ndarray, list[dict]]:
    """Augment a batch of HU slabs/patches ``x_hu`` (float32 [n, Z, Y, X], modified in place and returned) as
    ``config``'s ``augment_*`` fields say (module docstring): per item, with probability
    ``augment_probability``, HU times a factor uniform in ``augment_hu_scale`` (about 0 HU), then a 3-D
    gaussian blur of sigma uniform in [0, ``augment_blur_sigma_voxels``] voxels (edges replicated), then
    gaussian noise of SD uniform in [0, ``augment_noise_hu``] HU. Draws from ``rng`` only for the parts that are
    on. Returns (x_hu, per item {"augmented", "hu_scale", "blur_sigma_voxels", "noise_sd_hu"})."""
    lo, hi = config.augment_hu_scale
    drawn = []
    for i in range(len(x_hu)):
        rec = {"augmented": False, "hu_scale": 1.0, "blur_sigma_voxels": 0.0, "noise_sd_hu": 0.0}
        drawn.append(rec)
        if config.augment_probability < 1.0 and rng.uniform() >= config.augment_probability:
            continue
        rec["augmented"] = True
        if (lo, hi) != (1.0, 1.0):
            rec["hu_scale"] = float(rng.uniform(lo, hi))
            x_hu[i] *= np.float32(rec["hu_scale"])
        if config.augment_blur_sigma_voxels > 0:
            rec["blur_sigma_voxels"] = float(rng.uniform(0.0, config.augment_blur_sigma_voxels))
            if rec["blur_sigma_voxels"] > 0:
                ndimage.gaussian_filter(
                    x_hu[i], rec["blur_sigma_voxels"], output=x_hu[i], mode="nearest", truncate=3.0
                )
        if config.augment_noise_hu > 0:
            rec["noise_sd_hu"] = float(rng.uniform(0.0, config.augment_noise_hu))
            x_hu[i] += rng.standard_normal(x_hu[i].shape, dtype=np.float32) * np.float32(rec["noise_sd_hu"])
    return x_hu, drawn


def _mirrored(x: np.ndarray, target: np.ndarray | None, rng: np.random.Generator, config: TrainConfig | None):
    """(x, target) with each item (first axis) mirrored along its last (x) axis with probability one half when
    ``config.augment_mirror``, else both unchanged (no draw from ``rng``). x: HU [n, ..., X]; target: [n, ..., X]
    (slabs, 3-D patches) or None (a patch's single class, which mirroring does not change)."""
    if config is None or not config.augment_mirror:
        return x, target
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip][..., ::-1]
    if target is not None:
        target[flip] = target[flip][..., ::-1]
    return x, target


def _augmented(x: np.ndarray, rng: np.random.Generator, config: TrainConfig | None) -> np.ndarray:
    """``x`` (int16 HU) itself when ``config`` augments nothing, else its augmented float32 copy."""
    if config is None or not config.augments:
        return x
    return augment_hu_batch(x.astype(np.float32), rng, config)[0]


def balanced_dense_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Class-balanced masked cross-entropy. logits [n,3,P,P], target int64 [n,P,P] (-1 ignored); the same for 3-D
    logits [n,3,D,H,W] and targets [n,D,H,W].

    Returns (loss, number of labelled voxels). Each class present gets total weight 1/(#classes present).
    """
    ce = F.cross_entropy(logits.float(), target.clamp(min=0), reduction="none")
    valid = target >= 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        return logits.sum() * 0.0, 0
    counts = torch.bincount(target[valid], minlength=logits.shape[1]).to(ce.dtype)
    present = (counts > 0).sum()
    w_class = torch.where(counts > 0, 1.0 / (counts.clamp(min=1) * present), torch.zeros_like(counts))
    w = torch.where(valid, w_class[target.clamp(min=0)], torch.zeros_like(ce))
    return (ce * w).sum(), n_valid


DIVERGENCE_RATIO = 1.5
"""Validation is reported as diverged when the last validation error exceeds the best by this factor (and by
more than 0.02 absolute)."""


@dataclass
class TrainResult:
    """What ``train`` did. final_metrics: the last iteration's metrics (its validation included); best_*: the
    best validation; kept_*: the weights the model holds ("best" or "last", their iteration and validation error);
    last_val_error: validation error of the last iteration's weights; validation_warning: a sentence when
    validation diverged after its best, else ""."""

    iterations: int
    stopped_reason: str  # "max_iterations" | "early_stopping"
    best_val_error: float
    best_iteration: int
    final_metrics: dict
    history: list[dict] = field(default_factory=list)  # one entry per validation
    elapsed_s: float = 0.0
    voxels_per_s: float = 0.0  # labelled training voxels per second (all ranks)
    kept_weights: str = "last"
    kept_iteration: int = 0
    kept_val_error: float = math.nan
    last_val_error: float = math.nan
    validation_warning: str = ""
    precision: str = "float32"  # "float32" or the autocast dtype of the forward pass ("bfloat16", "float16")


def autocast_dtype(device: str | torch.device, amp: bool = True) -> torch.dtype | None:
    """The dtype ``train`` autocasts the forward pass to on ``device`` (weights, loss and optimizer stay float32),
    or None for plain float32: with ``amp``, bfloat16 on a GPU that has it (same range as float32, no loss
    scaling), else float16; bfloat16 on a CPU whose oneDNN has native bf16 instructions (AVX512-BF16 / AMX;
    on a 2-core EPYC 1.12x per iteration in bench/bench_training_precision.py and 1.33x in the full
    ``reproduce_paper`` runs, docs/REPRODUCTION.md); None on other CPUs, where bf16 is emulated and slower, and
    without ``amp``."""
    device = torch.device(device)
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    ):
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """How ``TrainResult.precision`` and the training log name an ``autocast_dtype``: "float32" for None, else
    the dtype's name ("bfloat16", "float16")."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: TrainingData,
    vox: np.ndarray,
    classes: np.ndarray,
    *,
    device,
    batch: int = 512,
) -> dict:
    """Per-class accuracy / error on fixed voxels (patch mode, eval). Returns metrics dict with
    ``val_acc_<class>``, ``val_err_<class>`` and ``val_error`` = mean per-class error (balanced)."""
    was_training = model.training
    model.eval()
    pred = np.empty(len(vox), dtype=np.int64)
    for s in range(0, len(vox), batch):
        x = normalize_hu(torch.from_numpy(data.patches(vox[s : s + batch]))).to(device)
        pred[s : s + batch] = (model(x)[:, :, 0, 0].argmax(1) + 1).cpu().numpy()
    model.train(was_training)
    return class_metrics(pred, classes)


def class_metrics(pred: np.ndarray, classes: np.ndarray) -> dict:
    """``val_acc_<class>`` / ``val_err_<class>`` of predicted class ids ``pred`` against ``classes`` (int [m]),
    and ``val_error``, the mean per-class error (balanced; a class without voxels is NaN and left out)."""
    metrics = {}
    errs = []
    for c in LABELED_CLASSES:
        sel = classes == c
        acc = float((pred[sel] == c).mean()) if sel.any() else float("nan")
        metrics[f"val_acc_{CLASS_NAMES[c]}"] = acc
        metrics[f"val_err_{CLASS_NAMES[c]}"] = 1.0 - acc
        errs.append(1.0 - acc)
    metrics["val_error"] = float(np.nanmean(errs))
    return metrics


UNET_VAL_OVERLAP = 0.25


@torch.no_grad()
def evaluate_unet3d(
    model: torch.nn.Module,
    data: TrainingData,
    vox: np.ndarray,
    classes: np.ndarray,
    *,
    device,
    overlap: float = UNET_VAL_OVERLAP,
) -> dict:
    """``evaluate`` for a 3D U-Net: the fixed validation voxels are read from the U-Net's sliding-window
    prediction (``predict_volume_unet3d``, gaussian blend, ``overlap``) of each validation volume's box around
    them (their bounding box plus half a patch, within the volume), i.e. as inference will classify them. Same
    metrics as ``evaluate``, plus ``val_scored`` (every voxel)."""
    from dla.model.unet3d import predict_volume_unet3d

    net = getattr(model, "module", model)
    half = np.asarray(net.config.unet_patch_zyx) // 2
    was_training = model.training
    model.eval()
    pred = np.zeros(len(vox), dtype=np.int64)
    for v in np.unique(vox[:, 0]):
        sel = np.flatnonzero(vox[:, 0] == v)
        shape = np.asarray(data.labels[v].shape)
        lo = np.maximum(vox[sel, 1:].min(0) - half, 0)
        hi = np.minimum(vox[sel, 1:].max(0) + 1 + half, shape)
        fill = data.padded[v][HALO_Z:-HALO_Z, HALO_YX:-HALO_YX, HALO_YX:-HALO_YX]
        box = np.ascontiguousarray(fill[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
        cls = predict_volume_unet3d(net, box, overlap=overlap).class_map
        rel = vox[sel, 1:] - lo
        pred[sel] = cls[rel[:, 0], rel[:, 1], rel[:, 2]]
    model.train(was_training)
    return {**class_metrics(pred, classes), "val_scored": len(vox)}


def _rng_state(rng: np.random.Generator) -> dict:
    return copy.deepcopy(rng.bit_generator.state)


def _gather_objects(obj):
    rank, world = _dist_info()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _save_checkpoint(
    path,
    model,
    optimizer,
    state: dict,
    config: TrainConfig,
    rng: np.random.Generator,
    best_state=None,
    resume_state=None,
) -> None:
    """Write a checkpoint (rank 0; every rank takes part in gathering the RNG states). ``model_state``: the
    model's weights; ``resume_state``: the weights to continue training from when the model holds others (the
    kept best weights at the end of a run), else None; ``best_state``: the best validation's weights."""
    rank, _ = _dist_info()
    rng_states = _gather_objects({"numpy": _rng_state(rng), "torch": torch.get_rng_state()})
    if rank != 0:
        return
    net = getattr(model, "module", model)
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": config_fingerprint(net.config),
            "model_config": net.config.to_dict(),
            "train_config": config.to_dict(),
            "model_state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer_state": optimizer.state_dict(),
            "state": state,
            "rng_states": rng_states,
            "best_model_state": best_state,
            "resume_model_state": resume_state,
        },
        path,
    )


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint written by ``train`` (CPU tensors)."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise IncompatibleWeightsError(f"{path}: not a DLA training checkpoint")
    return blob


def train(
    model: torch.nn.Module,
    train_data: TrainingData,
    val_data: TrainingData,
    config: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    on_progress: Callable[[int, dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` (a DLANet or a UNet3D) in place; see module docstring. Returns TrainResult.

    ``on_progress(iteration, metrics)`` after every iteration (metrics: iteration, epoch, lr, loss,
    voxels_per_s, on CUDA gpu_mem_peak_gb (``torch.cuda.max_memory_allocated``, GB), plus validation metrics on
    validation iterations). Checkpoints every ``checkpoint_every``
    iterations, at the end and on cancel (rank 0 writes). With ``resume`` and an existing checkpoint,
    training continues from it bit-identically on CPU. On return the model holds the weights of the best
    validation (``config.keep_weights="best"``, the default) or of the last iteration ("last"); see the module
    docstring and ``TrainResult``.
    """
    device = torch.device(device)
    _check_unet_patch(getattr(model, "module", model), (train_data, val_data))
    rank, world = _dist_info()
    distributed = (
        dist.is_available() and dist.is_initialized()
    )  # DDP from one rank up (torchrun, dla.model.ddp)
    # the trainer's own all-reduces: NCCL reduces CUDA tensors only, gloo CPU ones
    comm_device = device if distributed and dist.get_backend() == "nccl" else torch.device("cpu")
    net = getattr(model, "module", model)
    net.to(device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, rank])
    optimizer = torch.optim.SGD(
        net.parameters(), lr=config.lr_values[0], momentum=config.momentum, weight_decay=config.weight_decay
    )
    state = {
        "iteration": 0,
        "voxels_seen": 0,
        "best_val_error": math.inf,
        "best_iteration": 0,
        "bad_validations": 0,
        "history": [],
        "last_checkpoint_iteration": 0,
    }
    best_state: dict | None = None  # CPU copy of the weights at the best validation
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if ckpt is not None and resume and ckpt.exists():
        blob = load_checkpoint(ckpt)
        if blob["fingerprint"] != config_fingerprint(net.config):
            raise IncompatibleWeightsError(
                f"checkpoint {ckpt} is for {blob['fingerprint']}, model is {config_fingerprint(net.config)}"
            )
        weights = blob.get("resume_model_state") or blob["model_state"]
        load_state_checked(net, weights, source=f"checkpoint {ckpt}")
        optimizer.load_state_dict(blob["optimizer_state"])
        state = blob["state"]
        rs = blob["rng_states"][rank] if rank < len(blob["rng_states"]) else blob["rng_states"][0]
        rng.bit_generator.state = rs["numpy"]
        torch.set_rng_state(rs["torch"])
        best_state = blob.get("best_model_state")
    train_model = model
    if distributed and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        train_model = torch.nn.parallel.DistributedDataParallel(net, device_ids=None)
    epoch_voxels = config.epoch_voxels or train_data.n_labeled
    val_vox, val_cls = val_data.fixed_validation_sample(config.val_samples_per_class, config.seed + 7919)
    amp_dtype = autocast_dtype(device, config.amp)
    use_amp = amp_dtype is not None
    unet = bool(getattr(net.config, "is_unet", False))
    validate = evaluate_unet3d if unet else evaluate
    local_batch = max(1, config.batch_size // world)
    local_slabs = max(1, config.dense_slabs_per_batch // world)

    def save():
        if ckpt is not None:
            state["last_checkpoint_iteration"] = state["iteration"]
            _save_checkpoint(ckpt, train_model, optimizer, state, config, rng, best_state)

    def any_rank(flag: bool) -> bool:
        if not distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    net.train()
    t_start = time.perf_counter()
    voxels_this_run = 0
    stopped_reason = "max_iterations"
    metrics: dict = {}
    while state["iteration"] < config.max_iterations:
        if any_rank(bool(should_cancel is not None and should_cancel())):
            save()
            raise TrainingCancelled(f"training cancelled at iteration {state['iteration']}")
        epoch = state["voxels_seen"] / epoch_voxels
        lr = config.lr_at(epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        if unet:
            x, target = train_data.sample_patch3d_batch(
                rng, local_slabs, net.config.unet_patch_zyx, augment=config
            )
        elif config.mode == "patch":
            x, target = train_data.sample_patch_batch(rng, local_batch, augment=config)
        else:
            x, target = train_data.sample_dense_batch(
                rng, local_slabs, config.dense_output_px, augment=config
            )
        x, target = x.to(device), target.to(device)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
            logits = train_model(x)
        if config.mode == "patch" and not unet:
            loss = F.cross_entropy(logits[:, :, 0, 0].float(), target)
            n_vox = len(target)
        else:
            loss, n_vox = balanced_dense_loss(logits, target)
        loss_value = float(loss.detach())
        if distributed:
            t = torch.tensor([loss_value, float(n_vox)], dtype=torch.float64, device=comm_device)
            dist.all_reduce(t)
            loss_value, n_vox = float(t[0]) / world, int(t[1])
        if not math.isfinite(loss_value):
            raise TrainingDivergedError(
                f"loss is {loss_value} at iteration {state['iteration'] + 1} (lr {lr:g}); "
                f"last good checkpoint is iteration {state['last_checkpoint_iteration']}"
                + (f" in {ckpt}" if ckpt else " (no checkpoint path given)")
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
            raise TrainingDivergedError(
                f"weights became NaN/inf at iteration {state['iteration'] + 1} (lr {lr:g}, loss {loss_value:g}); "
                f"last good checkpoint is iteration {state['last_checkpoint_iteration']}"
                + (f" in {ckpt}" if ckpt else " (no checkpoint path given)")
            )
        state["iteration"] += 1
        state["voxels_seen"] += n_vox
        voxels_this_run += n_vox
        it = state["iteration"]
        elapsed = time.perf_counter() - t_start
        metrics = {
            "iteration": it,
            "epoch": state["voxels_seen"] / epoch_voxels,
            "lr": lr,
            "loss": loss_value,
            "voxels_per_s": voxels_this_run / max(elapsed, 1e-9),
        }
        if device.type == "cuda":  # this process's peak since it started (or since a reset of the peak stats)
            metrics["gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        stop = False
        if it % config.val_every == 0:
            metrics.update(validate(net, val_data, val_vox, val_cls, device=device))
            state["history"].append(dict(metrics))
            if metrics["val_error"] < state["best_val_error"] - config.early_stopping_min_delta:
                state["best_val_error"] = metrics["val_error"]
                state["best_iteration"] = it
                state["bad_validations"] = 0
                best_state = _cpu_copy(net)
            else:
                state["bad_validations"] += 1
                if state["bad_validations"] >= config.early_stopping_patience:
                    stop = True
                    stopped_reason = "early_stopping"
        if on_progress is not None:
            on_progress(it, metrics)
        if ckpt is not None and it % checkpoint_every == 0:
            save()
        if stop:
            break
    if "val_error" not in metrics:
        metrics = {**metrics, **validate(net, val_data, val_vox, val_cls, device=device)}
        # the last iteration's weights were not validated in the loop: they compete for the best here
        if metrics["val_error"] < state["best_val_error"] - config.early_stopping_min_delta:
            state["best_val_error"] = metrics["val_error"]
            state["best_iteration"] = state["iteration"]
            best_state = _cpu_copy(net)
    last_error = float(metrics["val_error"])
    elapsed = time.perf_counter() - t_start
    best = state["best_val_error"]
    best_iteration = state["best_iteration"]
    if not math.isfinite(best):
        best, best_iteration = last_error, state["iteration"]
    kept, kept_iteration, kept_error = "last", state["iteration"], last_error
    last_state = None  # the last iteration's weights, when the model is given others: resume from these
    if config.keep_weights == "best" and best_iteration != state["iteration"] and best_state is not None:
        last_state = _cpu_copy(net)
        net.load_state_dict({k: v.to(next(net.parameters()).device) for k, v in best_state.items()})
        kept, kept_iteration, kept_error = "best", best_iteration, best
    elif best_iteration == state["iteration"]:
        kept = "best"
    if ckpt is not None and (
        last_state is not None or state["last_checkpoint_iteration"] != state["iteration"]
    ):
        # the final checkpoint's model_state is the kept weights; a resume continues from the last ones
        state["last_checkpoint_iteration"] = state["iteration"]
        _save_checkpoint(
            ckpt, train_model, optimizer, state, config, rng, best_state, resume_state=last_state
        )
    warning = ""
    if last_error > DIVERGENCE_RATIO * best and last_error - best > 0.02:
        warning = (
            f"validation diverged: the error rose from {best:.4f} at iteration {best_iteration} to "
            f"{last_error:.4f} at iteration {state['iteration']}; "
            + (
                f"the weights of iteration {kept_iteration} are kept"
                if kept == "best"
                else "the last iteration's weights are kept (keep_weights='last')"
            )
        )
    return TrainResult(
        iterations=state["iteration"],
        stopped_reason=stopped_reason,
        best_val_error=best,
        best_iteration=best_iteration,
        final_metrics=metrics,
        history=list(state["history"]),
        elapsed_s=elapsed,
        voxels_per_s=voxels_this_run / max(elapsed, 1e-9),
        kept_weights=kept,
        kept_iteration=kept_iteration,
        kept_val_error=kept_error,
        last_val_error=last_error,
        validation_warning=warning,
        precision=precision_name(amp_dtype),
    )


def _check_unet_patch(net: torch.nn.Module, datasets: Sequence[TrainingData]) -> None:
    """TrainingDataError when ``net`` is a 3D U-Net whose patch does not fit a training or validation volume
    (``dla.model.unet3d.patch_misfit``); nothing for the voxel net."""
    if not getattr(getattr(net, "config", None), "is_unet", False):
        return
    from dla.model.unet3d import patch_misfit

    for data in datasets:
        for i, labels in enumerate(data.labels):
            misfit = patch_misfit(net.config.unet_patch_zyx, labels.shape)
            if misfit:
                raise TrainingDataError(f"{data.name} data, volume {i}: {misfit}")


def _cpu_copy(net: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
