"""DLA voxel classifier: a fully convolutional residual CNN with an exact 41x41x5 receptive field.

The paper classifies the centre voxel of a 41x41x5 fill-volume patch (5 axial slices x 41 x 41) as vessel,
bone or soft tissue with a 30-layer ResNet. Here the 5 slices are the input channels of a 2D network built
only from VALID (unpadded) convolutions, ReLU, centre-cropped residual skips and a final 1x1 "fully
connected" 3-way layer: no pooling and no batch norm, so every output pixel depends on exactly the 41x41
input window around it. Applied to one 41x41 patch the network returns 1x1 logits (the paper's voxel-wise
mode); applied to a (H+40)x(W+40) slab it returns HxW logits, identical per voxel up to float rounding
(dense mode, see dla/model/dense.py). Output channel c is class id c + 1 (dla/classes.py).
Receptive field = 1 + sum over convolutions of (kernel - 1) * dilation, which every preset keeps at 41.

A second architecture lives in the same registry: ``NetworkConfig(architecture="unet3d", ...)`` is a MONAI 3D
U-Net (DynUNet planned like nnU-Net for the training volumes' spacing, dla/model/unet3d.py). ``build_model``,
``config_fingerprint``, ``save_weights`` and ``load_weights`` handle both; a voxel config's dict and fingerprint
are exactly what they were before the U-Net existed (its ``unet_*`` fields are left out), so stored voxel
weights keep their fingerprints and old configs load as voxel configs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

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


def _block(*convs: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple(convs)


# Presets. Depth is counted as the number of convolution layers, including the input layer and the final
# 1x1 "fully connected" layer.
PRESETS: dict[str, NetworkConfig] = {
    # paper: 30 conv layers = 3x3 input layer + 14 residual blocks (5 x [3x3, 3x3] + 9 x [3x3, 1x1]) + 1x1 FC.
    # 19 3x3 convs in blocks + the 3x3 input layer: 1 + 20 * 2 = 41. The 9 1x1 convs keep the paper's depth
    # without growing the receptive field beyond 41.
    "paper": NetworkConfig(
        width=32,
        input_kernel=3,
        blocks=tuple([_block((3, 1), (3, 1))] * 5 + [_block((3, 1), (1, 1))] * 9),
    ),
    # cpu: 10 conv layers, width 16: 5x5 input layer + 4 blocks of two dilated 3x3 convs
    # (dilations 1,2 | 2,3 | 3,3 | 2,2): 1 + 4 + 2 * 18 = 41.
    "cpu": NetworkConfig(
        width=16,
        input_kernel=5,
        blocks=(
            _block((3, 1), (3, 2)),
            _block((3, 2), (3, 3)),
            _block((3, 3), (3, 3)),
            _block((3, 2), (3, 2)),
        ),
    ),
    # tiny: 6 conv layers, width 8, for tests: 1 + 4 + 2 * (4 + 4 + 4 + 6) = 41.
    "tiny": NetworkConfig(
        width=8,
        input_kernel=5,
        blocks=(_block((3, 4), (3, 4)), _block((3, 4), (3, 6))),
    ),
}


def preset_config(name: str) -> NetworkConfig:
    """A fresh copy of a preset NetworkConfig; unknown names raise InvalidNetworkConfigError."""
    if name not in PRESETS:
        raise InvalidNetworkConfigError(f"unknown network preset {name!r}; choose one of {sorted(PRESETS)}")
    return NetworkConfig.from_dict(PRESETS[name].to_dict())


def _crop(x: torch.Tensor, shrink: int) -> torch.Tensor:
    if shrink == 0:
        return x
    c = shrink // 2
    return x[:, :, c : x.shape[2] - c, c : x.shape[3] - c]


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, convs: tuple[tuple[int, int], ...]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(width, width, k, dilation=d) for k, d in convs)
        self.shrink = sum((k - 1) * d for k, d in convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return torch.relu(h + _crop(x, self.shrink))


class DLANet(nn.Module):
    """forward(x float32 [N, 5, H+40, W+40], normalised HU) -> logits float32 [N, 3, H, W]."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        rf = config.receptive_field
        if rf != PATCH_YX:
            raise InvalidNetworkConfigError(
                f"receptive field is {rf}, must be {PATCH_YX}: sum of (kernel-1)*dilation must be 40"
            )
        for k, d in config.conv_layers():
            if k < 1 or d < 1 or (k - 1) * d % 2:
                raise InvalidNetworkConfigError(f"conv (kernel={k}, dilation={d}) must shrink evenly")
        self.config = config
        self.input_conv = nn.Conv2d(
            config.in_slices, config.width, config.input_kernel, dilation=config.input_dilation
        )
        self.blocks = nn.ModuleList(_ResidualBlock(config.width, b) for b in config.blocks)
        self.fc = nn.Conv2d(config.width, config.num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_in", nonlinearity="linear")
        if self.config.residual_scale_init and len(self.blocks):
            scale = 1.0 / math.sqrt(len(self.blocks))
            with torch.no_grad():
                for b in self.blocks:
                    b.convs[-1].weight.mul_(scale)

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    @property
    def num_conv_layers(self) -> int:
        return sum(1 for m in self.modules() if isinstance(m, nn.Conv2d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.input_conv(x))
        for block in self.blocks:
            h = block(h)
        return self.fc(h)


def build_model(config: NetworkConfig | str) -> nn.Module:
    """The network of a NetworkConfig or a preset name: a DLANet, or a UNet3D for architecture "unet3d"."""
    if isinstance(config, str):
        config = preset_config(config)
    if config.is_unet:
        from dla.model.unet3d import UNet3D  # monai is imported only when a U-Net is built

        return UNet3D(config)
    return DLANet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_fingerprint(config: NetworkConfig) -> str:
    """Stable identifier of architecture + input normalisation; weights only load into a matching model."""
    payload = json.dumps({"config": config.to_dict(), "norm": NORMALIZATION_ID}, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    if config.is_unet:
        patch = "x".join(str(p) for p in config.unet_patch_zyx)
        return f"unet3d-f{config.unet_filters[0] if config.unet_filters else 0}-S{len(config.unet_filters)}-p{patch}-{digest}"
    return f"dlanet-w{config.width}-L{config.num_conv_layers}-rf{config.receptive_field}-{digest}"


WEIGHTS_FORMAT = "dla-workbench/dlanet-weights"
WEIGHTS_VERSION = 1


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same directory, then os.replace (never leaves a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_weights(model: DLANet, path: str | os.PathLike) -> None:
    """Write config + fingerprint + state_dict (CPU tensors) atomically to ``path``."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {
            "format": WEIGHTS_FORMAT,
            "version": WEIGHTS_VERSION,
            "config": model.config.to_dict(),
            "fingerprint": config_fingerprint(model.config),
            "norm": NORMALIZATION_ID,
            "state_dict": state,
        },
        path,
    )


def state_dict_differences(expected: dict, got: dict, limit: int = 8) -> str:
    """Human-readable summary of missing / unexpected / mis-shaped keys between two state dicts."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(got[k].shape)}"
        for k in expected
        if k in got and tuple(expected[k].shape) != tuple(got[k].shape)
    ]
    parts = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    ):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{title}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts) if parts else "no key/shape differences"


def load_state_checked(model: DLANet, state_dict: dict, *, source: str = "weights") -> None:
    """Load ``state_dict`` into ``model``; any key/shape difference raises IncompatibleWeightsError."""
    model = getattr(model, "module", model)
    expected = model.state_dict()
    if set(expected) != set(state_dict) or any(
        tuple(expected[k].shape) != tuple(state_dict[k].shape) for k in expected
    ):
        raise IncompatibleWeightsError(
            f"{source} do not fit this network ({config_fingerprint(model.config)}): "
            + state_dict_differences(expected, state_dict)
        )
    model.load_state_dict(state_dict)


def load_weights(path: str | os.PathLike, expected_config: NetworkConfig | None = None) -> nn.Module:
    """Build the model stored in ``path`` (a DLANet or a UNet3D, as its config says) and load its weights.

    With ``expected_config``, weights of any other architecture (or normalisation) are refused with an
    IncompatibleWeightsError naming the differing keys/shapes and both fingerprints.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # corrupt / foreign file
        raise IncompatibleWeightsError(f"{path}: not a readable DLANet weights file ({exc})") from exc
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise IncompatibleWeightsError(
            f"{path}: not a DLANet weights file (format {WEIGHTS_FORMAT!r} expected)"
        )
    if blob.get("norm") != NORMALIZATION_ID:
        raise IncompatibleWeightsError(
            f"{path}: trained with input normalisation {blob.get('norm')!r}, this code uses {NORMALIZATION_ID!r}"
        )
    stored_config = NetworkConfig.from_dict(blob["config"])
    if expected_config is not None:
        fp_expected, fp_stored = config_fingerprint(expected_config), config_fingerprint(stored_config)
        if fp_expected != fp_stored:
            diff = state_dict_differences(build_model(expected_config).state_dict(), blob["state_dict"])
            raise IncompatibleWeightsError(
                f"{path}: weights are for architecture {fp_stored}, expected {fp_expected}: {diff}"
            )
    model = build_model(stored_config)
    load_state_checked(model, blob["state_dict"], source=str(path))
    model.eval()
    return model
