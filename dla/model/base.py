"""Shared ground of the two architectures: the voxel geometry, HU normalisation, NetworkConfig and the errors and result
type of training and inference.

Everything that the voxel classifier (``network``), its dense inference (``dense``) and the 3D U-Net (``unet3d``)
all need lives here, so imports run one way: ``base`` <- ``network`` / ``dense`` / ``unet3d`` <- ``train`` /
``ddp``. ``NetworkConfig`` describes either architecture (``architecture="voxel"`` or ``"unet3d"``);
``normalize_hu`` maps fill-volume HU to network input; ``PredictionResult`` is what whole-volume inference returns
for both (``dense.predict_volume``, ``unet3d.predict_volume_unet3d``); ``check_volume``, ``check_class_priors``,
``check_prior_strength``, ``tempered_priors``, ``is_oom`` and ``model_device`` are the input checks and helpers both inference paths use.
Pure numpy / torch, no model code: building, saving and loading networks is ``network``'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from dla.classes import NUM_NETWORK_CLASSES

PATCH_YX = 41  # in-plane patch size (voxels)
PATCH_Z = 5  # slices per patch (network input channels)
HALO_YX = PATCH_YX // 2  # 20 voxels of context on each in-plane side
HALO_Z = PATCH_Z // 2  # 2 slices of context above and below

# HU normalisation, shared by training, patch inference and dense inference.
HU_OFFSET = 0.0
HU_SCALE = 1000.0
NORM_MIN = -1.0
NORM_MAX = 3.0
NORMALIZATION_ID = "hu/1000:clip[-1,3]"  # part of the weight fingerprint: changing it invalidates weights


class IncompatibleWeightsError(ValueError):
    """Stored weights do not belong to the requested / expected network architecture."""


class InvalidNetworkConfigError(ValueError):
    """A NetworkConfig is malformed (e.g. its receptive field is not 41x41)."""


ARCHITECTURES = ("voxel", "unet3d")
UNET_FIELDS = ("unet_filters", "unet_kernels", "unet_strides", "unet_patch_zyx", "unet_spacing_mm")


def normalize_hu(x: torch.Tensor) -> torch.Tensor:
    """Map fill-volume HU (any numeric dtype tensor, any shape) to float32 network input.

    ``(hu - 0) / 1000`` clipped to ``[-1, 3]``: air -> -1, water -> 0, dense contrast / bone 1..3.
    """
    return ((x.to(torch.float32) - HU_OFFSET) / HU_SCALE).clamp_(NORM_MIN, NORM_MAX)


@dataclass
class NetworkConfig:
    """Architecture of a DLANet.

    ``input_kernel``/``input_dilation``: the input layer (5 slices -> ``width`` channels).
    ``blocks``: residual blocks; each block is a tuple of ``(kernel, dilation)`` convolutions (ReLU between
    them, skip = centre crop of the block input, ReLU after the addition). The final 1x1 conv maps ``width``
    to ``num_classes`` logits. ``residual_scale_init`` scales the He init of the last conv of every residual
    branch by 1/sqrt(#blocks) so activations do not grow with depth in the absence of batch norm.

    ``architecture``: "voxel" (this DLANet, the default) or "unet3d" (dla/model/unet3d.py, built from the
    ``unet_*`` fields: filters per stage, (kz, ky, kx) kernels and strides per stage (the first stride is
    (1, 1, 1)), the training / sliding-window patch (z, y, x voxels) and the voxel spacing (dz, dy, dx mm) it
    was planned for; use ``dla.model.unet3d.plan_unet3d`` to fill them). The voxel fields are unused by a U-Net.
    """

    width: int = 16
    input_kernel: int = 5
    input_dilation: int = 1
    blocks: tuple[tuple[tuple[int, int], ...], ...] = field(default_factory=tuple)
    in_slices: int = PATCH_Z
    num_classes: int = NUM_NETWORK_CLASSES
    residual_scale_init: bool = True
    architecture: str = "voxel"
    unet_filters: tuple[int, ...] = ()
    unet_kernels: tuple[tuple[int, int, int], ...] = ()
    unet_strides: tuple[tuple[int, int, int], ...] = ()
    unet_patch_zyx: tuple[int, ...] = ()
    unet_spacing_mm: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.blocks = tuple(tuple((int(k), int(d)) for k, d in block) for block in self.blocks)
        if self.architecture not in ARCHITECTURES:
            raise InvalidNetworkConfigError(
                f"unknown architecture {self.architecture!r}; choose one of {list(ARCHITECTURES)}"
            )
        self.unet_filters = tuple(int(f) for f in self.unet_filters)
        self.unet_kernels = tuple(tuple(int(k) for k in ks) for ks in self.unet_kernels)
        self.unet_strides = tuple(tuple(int(k) for k in ks) for ks in self.unet_strides)
        self.unet_patch_zyx = tuple(int(p) for p in self.unet_patch_zyx)
        self.unet_spacing_mm = tuple(float(v) for v in self.unet_spacing_mm)

    @property
    def is_unet(self) -> bool:
        return self.architecture == "unet3d"

    def to_dict(self) -> dict:
        """JSON-able dict; a voxel config's dict has no architecture / unet_* keys (as before the U-Net)."""
        d = dataclasses.asdict(self)
        d["blocks"] = [[[k, dil] for k, dil in block] for block in self.blocks]
        if self.architecture == "voxel":
            for name in ("architecture", *UNET_FIELDS):
                d.pop(name)
        else:
            d["unet_filters"] = list(self.unet_filters)
            d["unet_kernels"] = [list(k) for k in self.unet_kernels]
            d["unet_strides"] = [list(k) for k in self.unet_strides]
            d["unet_patch_zyx"] = list(self.unet_patch_zyx)
            d["unet_spacing_mm"] = list(self.unet_spacing_mm)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetworkConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InvalidNetworkConfigError(f"unknown NetworkConfig fields: {sorted(unknown)}")
        return cls(**d)

    def conv_layers(self) -> list[tuple[int, int]]:
        """All convolutions in order as (kernel, dilation), including input and final 1x1 layer."""
        layers = [(self.input_kernel, self.input_dilation)]
        for block in self.blocks:
            layers.extend(block)
        layers.append((1, 1))
        return layers

    @property
    def num_conv_layers(self) -> int:
        return len(self.conv_layers())

    @property
    def receptive_field(self) -> int:
        return 1 + sum((k - 1) * d for k, d in self.conv_layers())


AIR_HU = -1000  # outside the reconstructed field of view (y, x padding of both architectures)


class InferenceError(ValueError):
    """Base class of inference errors."""


class InferenceMemoryError(InferenceError):
    """Ran out of memory even at the smallest tile size."""


class InferenceCancelled(InferenceError):
    """``should_cancel()`` returned True during inference."""


class InvalidVolumeError(InferenceError):
    """Input volume / mask / coordinates have the wrong shape or dtype."""


@dataclass
class PredictionResult:
    """class_map uint8 [Z,Y,X] (class ids VESSEL/BONE/SOFT_TISSUE); vessel_prob float16 [Z,Y,X] in [0,1]
    (0 where the network was not run; float32 with prob_dtype=np.float32); voxels_per_s = all volume voxels / wall
    time; network_voxels = voxels the network actually classified (candidates)."""

    class_map: np.ndarray
    vessel_prob: np.ndarray
    voxels_per_s: float
    elapsed_s: float
    network_voxels: int
    tile_yx: tuple[int, int]
    slab_batch: int
    probs: np.ndarray | None = None  # float32 [3,Z,Y,X] softmax, only with return_probs=True


def check_volume(fill_hu: np.ndarray) -> np.ndarray:
    """``fill_hu`` as an array if it is a non-empty integer (HU) [Z,Y,X] volume, else InvalidVolumeError."""
    fill_hu = np.asarray(fill_hu)
    if fill_hu.ndim != 3:
        raise InvalidVolumeError(f"fill volume must be 3D [Z,Y,X], got shape {fill_hu.shape}")
    if not np.issubdtype(fill_hu.dtype, np.integer):
        raise InvalidVolumeError(f"fill volume must be integer HU (int16), got {fill_hu.dtype}")
    if min(fill_hu.shape) < 1:
        raise InvalidVolumeError(f"fill volume is empty: shape {fill_hu.shape}")
    return fill_hu


def check_class_priors(class_priors) -> torch.Tensor | None:
    """Vessel, bone, soft-tissue frequencies -> float32 [3] weights summing to 1 (None -> None); anything but
    three positive finite numbers raises InferenceError."""
    if class_priors is None:
        return None
    w = np.asarray(class_priors, dtype=np.float64)
    if w.shape != (3,) or not np.all(np.isfinite(w)) or (w <= 0).any():
        raise InferenceError(f"class_priors must be three positive frequencies, got {class_priors!r}")
    return torch.tensor(w / w.sum(), dtype=torch.float32)


DEFAULT_PRIOR_STRENGTH = 1.0
DEFAULT_BONE_PRIOR_STRENGTH = 0.6
"""Default strengths of the prior shift at inference (``tempered_priors``): ``DEFAULT_PRIOR_STRENGTH`` for the
vessel : soft-tissue pair, ``DEFAULT_BONE_PRIOR_STRENGTH`` for the vessel : bone pair. Chosen on the validation
cohort of the full phantom run with mirrored inference (docs/REPRODUCTION.md, "Two prior strengths"): the rim of
false vessel voxels around the lumen is soft tissue to the truth and wants the full shift, while a vessel in its
bony canal is lost to bone under it. Resolved-vessel Dice against the truth, validation (n=8): one strength 0.8
for both 89.2%, 1 for both 89.7%, 1 against soft tissue with 0.6 against bone 90.4%. (Until session 8 one
strength, 0.8; 0.7 before mirrored inference and longer training.)"""


DEFAULT_MIRROR = False
"""Default of mirrored test-time augmentation in the inference task (``dense.predict_volume(mirror=...)``, voxel
net): the mean of the predictions of the volume and of its left-right mirror image. On the full phantom run (8
validation / 62 test studies, docs/REPRODUCTION.md, "Mirrored inference") it raised the resolved vessels' Dice by
0.6-0.9 points and the whole-head Dice by 1.5-2.1 points at the same prior strength, but it doubles the network
time, and a whole 512x512x400 head would then miss the 30-second inference contract (BENCHMARKS.md), so the task
runs one pass unless asked; ``reproduce_paper`` (128^3 phantoms) mirrors by default."""


def check_prior_strength(strength) -> float:
    """``strength`` as a float when it is a number in [0, 1], else InferenceError naming the value."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise InferenceError(f"the prior strength must be a number from 0 to 1, got {strength!r}")
    return float(strength)


def tempered_priors(
    class_priors, strength: float, bone_strength: float | None = None
) -> tuple[float, float, float] | None:
    """The Bayes prior shift of the balanced-training softmax towards the training labels' class frequencies
    (vessel, bone, soft tissue): the weights (1, (bone / vessel)^bone_strength, (soft / vessel)^strength),
    normalised. ``strength`` and ``bone_strength`` (None: ``strength``) in [0, 1]; both 1 is the full shift (the
    accuracy-optimal rule), both 0 gives None (the softmax as trained); one strength for both pairs equals
    the frequencies raised to that power. Bad priors or strengths raise InferenceError."""
    strength = check_prior_strength(strength)
    bone_strength = strength if bone_strength is None else check_prior_strength(bone_strength)
    if check_class_priors(class_priors) is None or strength == bone_strength == 0.0:
        return None
    vessel, bone, soft = (float(v) for v in class_priors)
    w = np.array([1.0, (bone / vessel) ** bone_strength, (soft / vessel) ** strength])
    return tuple(float(v) for v in w / w.sum())


def is_oom(exc: BaseException) -> bool:
    """True for a host MemoryError or a torch (CUDA / CPU allocator) out-of-memory RuntimeError."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
