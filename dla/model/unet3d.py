"""3D U-Net, the workbench's second architecture: MONAI DynUNet planned like nnU-Net, sliding-window inference.

``plan_unet3d`` chooses kernels and strides for the training volumes' voxel spacing the way nnU-Net's planner does
(``get_pool_and_conv_props``): an axis is downsampled (stride 2) while its feature map stays at least
``2 * min_feature_px`` voxels and its current spacing is less than twice the finest current spacing; a kernel is 3
on axes whose spacing is within twice the finest, else 1 (an anisotropic z starts with 1x3x3 kernels); filters
double per stage up to ``max_filters``; the patch is rounded down to a multiple of the total stride. ``UNet3D``
wraps MONAI ``DynUNet`` (instance norm, leaky ReLU, no deep supervision): forward(x float32 [N, 1, D, H, W]
normalised HU, ``normalize_hu``) -> logits float32 [N, 3, D, H, W], channel c = class id c + 1 as in the voxel
net. Outside the volume the input is padded like ``pad_volume`` (z edge-replicated, y/x -1000 HU air) and its
labels are unlabelled. ``predict_volume_unet3d`` runs ``monai.inferers.sliding_window_inference`` with gaussian
blending over chunks of slices (memory bounded: each chunk plus a half-patch margin on both sides) and returns the
same ``PredictionResult`` as ``dla.model.dense.predict_volume``, so DLA volumes and reports work unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet
from torch import nn

from dla.classes import SOFT_TISSUE, VESSEL
from dla.model.base import (
    AIR_HU,
    InferenceCancelled,
    InferenceError,
    InferenceMemoryError,
    InvalidNetworkConfigError,
    InvalidVolumeError,
    NetworkConfig,
    PredictionResult,
    check_class_priors,
    check_volume,
    is_oom,
    model_device,
    normalize_hu,
)

SPACING_TOLERANCE = (
    1.25  # a volume whose spacing differs from the planned one by more than this factor is refused
)
DEFAULT_CHUNK_VOXELS = 24_000_000  # voxels per sliding-window chunk (~0.6 GB of float32 outputs + weights)


MAX_PATCH_OVER_VOLUME = 2.0  # a patch more than twice a volume's extent would be mostly padding in that axis


class SpacingMismatchError(InferenceError):
    """A U-Net is applied to a volume whose voxel spacing is not the one it was planned and trained for."""


class PatchDoesNotFitError(InferenceError):
    """A U-Net's patch is more than MAX_PATCH_OVER_VOLUME times a volume's extent along some axis."""


def patch_misfit(patch_zyx, shape_zyx) -> str | None:
    """None when a U-Net patch (z, y, x voxels) fits a volume of ``shape_zyx`` voxels, else the sentence that says
    why not: along some axis the patch exceeds MAX_PATCH_OVER_VOLUME times the volume, so more than half of every
    window there would be padding that holds no image (a smaller excess is padded like ``pad_volume``)."""
    axes = [
        name for name, p, n in zip("zyx", patch_zyx, shape_zyx, strict=True) if p > MAX_PATCH_OVER_VOLUME * n
    ]
    if not axes:
        return None
    patch = " x ".join(str(int(p)) for p in patch_zyx)
    shape = " x ".join(str(int(n)) for n in shape_zyx)
    least = " x ".join(str(math.ceil(int(p) / MAX_PATCH_OVER_VOLUME)) for p in patch_zyx)
    return (
        f"this 3D U-Net's patch of {patch} voxels (z, y, x) does not fit a volume of {shape} voxels: along "
        f"{' and '.join(axes)} more than half of every window would be padding. Use volumes of at least {least} "
        "voxels or plan the U-Net with a smaller patch"
    )


def plan_unet3d(
    spacing_mm: tuple[float, float, float],
    patch_zyx: tuple[int, int, int] = (64, 64, 64),
    *,
    base_filters: int = 16,
    max_filters: int = 256,
    min_feature_px: int = 4,
    max_stages: int = 6,
) -> NetworkConfig:
    """A U-Net NetworkConfig for volumes of ``spacing_mm`` (dz, dy, dx mm) and patch ``patch_zyx`` (voxels).

    See the module docstring for the rules (nnU-Net's). Raises InvalidNetworkConfigError for a non-positive
    spacing or a patch too small to downsample at all (every axis below ``2 * min_feature_px``)."""
    spacing = [float(s) for s in spacing_mm]
    patch = [int(p) for p in patch_zyx]
    if len(spacing) != 3 or len(patch) != 3 or min(spacing) <= 0 or min(patch) < 1:
        raise InvalidNetworkConfigError(
            f"a U-Net needs 3 positive spacings and patch sizes, got spacing {spacing_mm} and patch {patch_zyx}"
        )
    current_spacing, current_size = list(spacing), list(patch)
    kernel = [3 if s / min(spacing) < 2 else 1 for s in spacing]
    kernels, strides = [tuple(kernel)], [(1, 1, 1)]
    while len(strides) < max_stages:
        finest = min(current_spacing)
        stride = [
            2 if current_size[a] >= 2 * min_feature_px and current_spacing[a] / finest < 2 else 1
            for a in range(3)
        ]
        if not any(s == 2 for s in stride):
            break
        current_spacing = [s * st for s, st in zip(current_spacing, stride, strict=True)]
        current_size = [c // st for c, st in zip(current_size, stride, strict=True)]
        finest = min(current_spacing)
        kernel = [3 if kernel[a] == 3 or current_spacing[a] / finest < 2 else 1 for a in range(3)]
        kernels.append(tuple(kernel))
        strides.append(tuple(stride))
    if len(strides) < 2:
        raise InvalidNetworkConfigError(
            f"patch {tuple(patch)} is too small for a U-Net: no axis reaches {2 * min_feature_px} voxels"
        )
    total = [math.prod(s[a] for s in strides) for a in range(3)]
    patch = [max(t, (p // t) * t) for p, t in zip(patch, total, strict=True)]
    filters = [min(max_filters, base_filters * 2**i) for i in range(len(strides))]
    return NetworkConfig(
        architecture="unet3d",
        unet_filters=tuple(filters),
        unet_kernels=tuple(kernels),
        unet_strides=tuple(strides),
        unet_patch_zyx=tuple(patch),
        unet_spacing_mm=tuple(spacing),
    )


class UNet3D(nn.Module):
    """forward(x float32 [N, 1, D, H, W], normalised HU) -> logits float32 [N, 3, D, H, W]; D, H, W multiples of
    the total stride (``stride_zyx``)."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        if not config.is_unet:
            raise InvalidNetworkConfigError("UNet3D needs a NetworkConfig with architecture='unet3d'")
        n = len(config.unet_filters)
        if (
            n < 2
            or len(config.unet_kernels) != n
            or len(config.unet_strides) != n
            or len(config.unet_patch_zyx) != 3
        ):
            raise InvalidNetworkConfigError(
                "a unet3d config needs >= 2 stages with one kernel and one stride per filter count and a 3-D "
                f"patch (got filters {config.unet_filters}, kernels {config.unet_kernels}, strides "
                f"{config.unet_strides}, patch {config.unet_patch_zyx}); use plan_unet3d"
            )
        self.config = config
        self.stride_zyx = tuple(math.prod(s[a] for s in config.unet_strides) for a in range(3))
        bad = [p for p, t in zip(config.unet_patch_zyx, self.stride_zyx, strict=True) if p < t or p % t]
        if bad:
            raise InvalidNetworkConfigError(
                f"patch {config.unet_patch_zyx} is not a positive multiple of the total stride {self.stride_zyx} "
                "in every axis"
            )
        self.net = DynUNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=config.num_classes,
            kernel_size=[list(k) for k in config.unet_kernels],
            strides=[list(s) for s in config.unet_strides],
            upsample_kernel_size=[list(s) for s in config.unet_strides[1:]],
            filters=list(config.unet_filters),
            norm_name=("instance", {"affine": True}),
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
            deep_supervision=False,
            res_block=False,
        )

    @property
    def patch_zyx(self) -> tuple[int, int, int]:
        return tuple(self.config.unet_patch_zyx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def crop_padded(fill_hu: np.ndarray, start_zyx, size_zyx) -> np.ndarray:
    """Window of ``fill_hu`` (int16 [Z,Y,X]) starting at ``start_zyx`` (may be negative or run past the end) of
    ``size_zyx`` voxels, int16 HU: outside the volume z is edge-replicated and y/x are -1000 HU air."""
    shape = fill_hu.shape
    lo = [min(max(0, s), n - 1) for s, n in zip(start_zyx, shape, strict=True)]
    hi = [max(min(n, s + w), lo_ + 1) for n, s, w, lo_ in zip(shape, start_zyx, size_zyx, lo, strict=True)]
    core = fill_hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    pads = [(lo[a] - start_zyx[a], start_zyx[a] + size_zyx[a] - hi[a]) for a in range(3)]
    x = np.pad(core, (pads[0], (0, 0), (0, 0)), mode="edge") if any(pads[0]) else core
    if any(pads[1]) or any(pads[2]):
        x = np.pad(x, ((0, 0), pads[1], pads[2]), mode="constant", constant_values=AIR_HU)
    return x


def crop_labels(labels: np.ndarray, start_zyx, size_zyx) -> np.ndarray:
    """Window of ``labels`` (uint8 class ids [Z,Y,X]) like ``crop_padded``, as int64 class - 1 targets with -1
    (ignored) where unlabelled or outside the volume."""
    shape = labels.shape
    lo = [max(0, s) for s in start_zyx]
    hi = [min(n, s + w) for n, s, w in zip(shape, start_zyx, size_zyx, strict=True)]
    out = np.full(tuple(size_zyx), -1, dtype=np.int64)
    if all(h > low for h, low in zip(hi, lo, strict=True)):
        out[
            lo[0] - start_zyx[0] : hi[0] - start_zyx[0],
            lo[1] - start_zyx[1] : hi[1] - start_zyx[1],
            lo[2] - start_zyx[2] : hi[2] - start_zyx[2],
        ] = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.int64) - 1
    return out


def window_start(center: int, size: int, extent: int) -> int:
    """Start of a ``size``-voxel window around ``center`` kept inside ``extent`` voxels (centred if larger)."""
    if size >= extent:
        return -((size - extent) // 2)
    return int(np.clip(center - size // 2, 0, extent - size))


def _check_spacing(config: NetworkConfig, spacing_mm) -> None:
    if spacing_mm is None or not config.unet_spacing_mm:
        return
    ratios = [float(s) / p for s, p in zip(spacing_mm, config.unet_spacing_mm, strict=True)]
    if any(r > SPACING_TOLERANCE or r < 1 / SPACING_TOLERANCE for r in ratios):
        planned = ", ".join(f"{v:g}" for v in config.unet_spacing_mm)
        given = ", ".join(f"{float(v):g}" for v in spacing_mm)
        raise SpacingMismatchError(
            f"this 3D U-Net was planned and trained for voxels of ({planned}) mm (dz, dy, dx); the volume has "
            f"({given}) mm. Resample the volume to the model's spacing or train a U-Net for this spacing"
        )


def predict_volume_unet3d(
    model: UNet3D,
    fill_hu: np.ndarray,
    *,
    candidate_mask: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    prob_dtype: type = np.float16,
    return_probs: bool = False,
    class_priors: tuple[float, float, float] | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    chunk_voxels: int = DEFAULT_CHUNK_VOXELS,
) -> PredictionResult:
    """Sliding-window (gaussian-blended, ``overlap`` of the patch) inference of a UNet3D over int16 HU ``fill_hu``
    [Z,Y,X]; the result is like ``predict_volume``'s (class_map uint8 ids, vessel_prob ``prob_dtype`` [Z,Y,X]).

    The network runs on every voxel; where ``candidate_mask`` (bool [Z,Y,X]) is False the class is set to
    SOFT_TISSUE and vessel_prob to 0 afterwards, as the voxel net does. Slices go in chunks of about
    ``chunk_voxels`` voxels, each run with half a patch of neighbouring slices on both sides (kept only for
    context), so memory does not grow with the number of slices. ``spacing_mm`` (dz, dy, dx): refused with
    SpacingMismatchError when it differs from the planned spacing by more than SPACING_TOLERANCE. A volume that the
    patch does not fit (``patch_misfit``: more than twice the volume along an axis) is refused with
    PatchDoesNotFitError; a smaller volume than the patch is padded.
    ``should_cancel`` is polled before each window batch (InferenceCancelled); ``progress(fraction, message)``
    after each chunk, with voxels/s. ``class_priors``: Bayes prior shift of the balanced-training softmax as in
    ``predict_volume``. Out of memory -> InferenceMemoryError."""
    fill_hu = check_volume(fill_hu)
    Z, Y, X = fill_hu.shape
    config = model.config
    _check_spacing(config, spacing_mm)
    misfit = patch_misfit(config.unet_patch_zyx, fill_hu.shape)
    if misfit:
        raise PatchDoesNotFitError(misfit)
    if candidate_mask is not None:
        candidate_mask = np.asarray(candidate_mask, dtype=bool)
        if candidate_mask.shape != fill_hu.shape:
            raise InvalidVolumeError(
                f"candidate_mask shape {candidate_mask.shape} != fill shape {fill_hu.shape}"
            )
    if not 0.0 <= overlap < 1.0 or sw_batch_size < 1:
        raise InvalidVolumeError(
            f"overlap {overlap} must be in [0, 1) and sw_batch_size {sw_batch_size} >= 1"
        )
    prior_weights = check_class_priors(class_priors)
    if prior_weights is not None:
        prior_weights = prior_weights.view(3, 1, 1, 1)
    roi = tuple(config.unet_patch_zyx)
    t0 = time.perf_counter()
    device = model_device(model)
    model.eval()
    class_map = np.empty((Z, Y, X), dtype=np.uint8)
    vessel_prob = np.empty((Z, Y, X), dtype=prob_dtype)
    all_probs = np.zeros((3, Z, Y, X), dtype=np.float32) if return_probs else None
    core_z = max(roi[0], (max(1, chunk_voxels // max(1, Y * X)) // roi[0]) * roi[0])
    margin = roi[0] // 2

    def predictor(x: torch.Tensor) -> torch.Tensor:
        if should_cancel is not None and should_cancel():
            raise InferenceCancelled("inference cancelled")
        return model(x)

    with torch.inference_mode():
        for z0 in range(0, Z, core_z):
            z1 = min(Z, z0 + core_z)
            a, b = max(0, z0 - margin), min(Z, z1 + margin)
            # at least one patch in every axis (padded like training windows), then cropped back
            size = (max(b - a, roi[0]), max(Y, roi[1]), max(X, roi[2]))
            start = (a - (size[0] - (b - a)) // 2, -((size[1] - Y) // 2), -((size[2] - X) // 2))
            block = crop_padded(fill_hu, start, size)
            x = normalize_hu(torch.from_numpy(np.require(block, requirements=["C", "W"]))[None, None]).to(
                device
            )
            try:
                logits = sliding_window_inference(
                    x,
                    roi,
                    sw_batch_size,
                    predictor,
                    overlap=overlap,
                    mode="gaussian",
                    padding_mode="replicate",
                )
            except (RuntimeError, MemoryError) as exc:
                if not is_oom(exc):
                    raise
                raise InferenceMemoryError(
                    f"out of memory in 3D U-Net sliding-window inference (patch {roi}, volume {Z}x{Y}x{X}); "
                    "free memory or plan a smaller patch"
                ) from exc
            probs = torch.softmax(logits.float(), dim=1)[0]
            if prior_weights is not None:  # Bayes prior shift: balanced training -> the training priors
                probs = probs * prior_weights.to(probs.device)
                probs = probs / probs.sum(dim=0, keepdim=True)
            oz, oy, ox = z0 - start[0], -start[1], -start[2]
            probs = probs[:, oz : oz + (z1 - z0), oy : oy + Y, ox : ox + X].cpu().numpy()
            cls = (probs.argmax(axis=0) + VESSEL).astype(np.uint8)
            pv = probs[VESSEL - 1]
            if candidate_mask is not None:
                m = candidate_mask[z0:z1]
                cls = np.where(m, cls, np.uint8(SOFT_TISSUE))
                pv = np.where(m, pv, 0)
                if all_probs is not None:
                    probs = np.where(m[None], probs, 0)
            class_map[z0:z1] = cls
            vessel_prob[z0:z1] = pv.astype(prob_dtype)
            if all_probs is not None:
                all_probs[:, z0:z1] = probs
            if progress is not None:
                rate = z1 * Y * X / max(time.perf_counter() - t0, 1e-9)
                progress(z1 / Z, f"3D U-Net: {z1}/{Z} slices, {rate:,.0f} voxels/s")
    elapsed = time.perf_counter() - t0
    return PredictionResult(
        class_map=class_map,
        vessel_prob=vessel_prob,
        voxels_per_s=Z * Y * X / max(elapsed, 1e-9),
        elapsed_s=elapsed,
        network_voxels=Z * Y * X,
        tile_yx=(roi[1], roi[2]),
        slab_batch=sw_batch_size,
        probs=all_probs,
    )
