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
weights keep their fingerprints and old configs load as voxel configs. ``NetworkConfig``, the HU normalisation and
the errors are defined in dla/model/base.py (shared with the U-Net) and importable from here as well.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

# ARCHITECTURES, HALO_*, HU_SCALE, PATCH_Z, UNET_FIELDS and normalize_hu are re-exported: code that imports them
# from here (as before dla/model/base.py) keeps working
from dla.model.base import (  # noqa: F401
    ARCHITECTURES,
    HALO_YX,
    HALO_Z,
    HU_SCALE,
    NORMALIZATION_ID,
    PATCH_YX,
    PATCH_Z,
    UNET_FIELDS,
    IncompatibleWeightsError,
    InvalidNetworkConfigError,
    NetworkConfig,
    normalize_hu,
)


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


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
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


def load_state_checked(model: nn.Module, state_dict: dict, *, source: str = "weights") -> None:
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
