"""Whole-volume DLA inference: tiled dense prediction, the paper's voxel-wise patch reference, 3D-DLA output.

A DLANet (dla/model/network.py) has an exact 41x41x5 receptive field built from valid convolutions, so
running it on a slab of 5 slices x (h+40) x (w+40) yields the same per-voxel probabilities as running it on
the h*w individual 41x41x5 patches, at a tiny fraction of the cost. ``predict_volume`` tiles the volume in
(slice batch, y, x) so memory stays bounded; ``predict_patches`` is the paper's voxel-wise mode used as the
reference in tests and benchmarks. Both see the volume through ``pad_volume``: 2 slices of edge replication
in z (beyond the scanned range the nearest slice is the best guess) and 20 voxels of constant -1000 HU air in
y and x (outside the reconstructed field of view is air). ``dla_volume`` builds the 3D-DLA angiogram.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from dla.classes import SOFT_TISSUE, VESSEL

# the inference errors, PredictionResult and AIR_HU are re-exported: code imports them from here
from dla.model.base import (  # noqa: F401
    AIR_HU,
    HALO_YX,
    HALO_Z,
    PATCH_YX,
    PATCH_Z,
    InferenceCancelled,
    InferenceError,
    InferenceMemoryError,
    InvalidVolumeError,
    PredictionResult,
    check_class_priors,
    check_volume,
    is_oom,
    model_device,
    normalize_hu,
)

DLA_BACKGROUND_HU = 0  # like a subtracted DSA: readers must not tell the methods apart by background
DEFAULT_CANDIDATE_MIN_HU = 100
MIN_TILE = 32


def pad_volume(fill_hu: np.ndarray) -> np.ndarray:
    """int16 [Z,Y,X] HU -> int16 [Z+4, Y+40, X+40]: z edge-replicated by 2, y/x constant -1000 HU by 20."""
    fill_hu = check_volume(fill_hu).astype(np.int16, copy=False)
    p = np.pad(fill_hu, ((HALO_Z, HALO_Z), (0, 0), (0, 0)), mode="edge")
    return np.pad(
        p, ((0, 0), (HALO_YX, HALO_YX), (HALO_YX, HALO_YX)), mode="constant", constant_values=AIR_HU
    )


def extract_patches(padded_hu: np.ndarray, coords_zyx: np.ndarray) -> np.ndarray:
    """Patches [n, 5, 41, 41] (padded dtype) around voxels ``coords_zyx`` (int [n,3], unpadded indices)."""
    coords = np.asarray(coords_zyx, dtype=np.int64).reshape(-1, 3)
    windows = np.lib.stride_tricks.sliding_window_view(padded_hu, (PATCH_Z, PATCH_YX, PATCH_YX))
    return windows[coords[:, 0], coords[:, 1], coords[:, 2]]


def predict_patches(
    model: torch.nn.Module, fill_hu: np.ndarray, coords_zyx: np.ndarray, batch: int = 512
) -> np.ndarray:
    """Paper's voxel-wise inference: float32 softmax probs [n, 3] for voxels ``coords_zyx`` (int [n,3] z,y,x).

    Each voxel's 5x41x41 patch is cut from ``pad_volume(fill_hu)`` and classified on its own.
    """
    fill_hu = check_volume(fill_hu)
    coords = np.asarray(coords_zyx, dtype=np.int64).reshape(-1, 3)
    if len(coords) and ((coords < 0).any() or (coords >= np.array(fill_hu.shape)).any()):
        raise InvalidVolumeError(f"coordinates outside the volume of shape {fill_hu.shape}")
    padded = pad_volume(fill_hu)
    device = model_device(model)
    model.eval()
    out = np.empty((len(coords), 3), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(coords), batch):
            patches = extract_patches(padded, coords[s : s + batch])
            x = normalize_hu(torch.from_numpy(np.ascontiguousarray(patches)).to(device))
            logits = model(x)[:, :, 0, 0]
            out[s : s + batch] = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return out


def intensity_candidates(
    fill_hu: np.ndarray, min_hu: int | None = DEFAULT_CANDIDATE_MIN_HU, dilate_vox: int = 1
) -> np.ndarray:
    """bool [Z,Y,X]: voxels that could be vessel or bone by intensity (fill >= ``min_hu`` HU, dilated by
    ``dilate_vox`` voxels in 3D to keep partial-volume vessel walls). Opacified vessels and bone are bright
    in the fill scan; everything else (soft tissue, CSF, fat, air) is labelled SOFT_TISSUE without running
    the network (there is no separate air class). ``min_hu=None`` -> every voxel is a candidate.
    """
    fill_hu = check_volume(fill_hu)
    if min_hu is None:
        return np.ones(fill_hu.shape, dtype=bool)
    mask = fill_hu >= min_hu
    if dilate_vox > 0 and mask.any():
        mask = ndimage.binary_dilation(
            mask, structure=ndimage.generate_binary_structure(3, 1), iterations=dilate_vox
        )
    return mask


def class_priors_from_labels(
    pairs, candidate_min_hu: int | None = DEFAULT_CANDIDATE_MIN_HU
) -> tuple[float, float, float]:
    """Frequencies of vessel, bone and soft tissue among the labelled voxels of ``pairs`` ((fill_hu int16, labels
    uint8) [Z,Y,X] each) that inference would send through the network (``intensity_candidates`` of the fill);
    the priors for ``predict_volume(class_priors=...)``. A class never labelled there gets one voxel."""
    counts = np.zeros(3, dtype=np.float64)
    for fill_hu, labels in pairs:
        cand = intensity_candidates(fill_hu, candidate_min_hu)
        hist = np.bincount(np.asarray(labels)[cand].ravel(), minlength=4)[VESSEL : SOFT_TISSUE + 1]
        counts += hist
    counts = np.maximum(counts, 1.0)
    return tuple(float(v) for v in counts / counts.sum())


def dla_volume(
    fill_hu: np.ndarray, class_map: np.ndarray, background_hu: int = DLA_BACKGROUND_HU
) -> np.ndarray:
    """3D-DLA angiogram int16 [Z,Y,X]: fill HU where ``class_map == VESSEL``, else ``background_hu``.

    Default background 0 HU, the background of a subtracted 3D-DSA, so both angiograms share one window and a
    blinded reader cannot tell DLA from DSA by its background alone.
    """
    fill_hu = check_volume(fill_hu)
    if class_map.shape != fill_hu.shape:
        raise InvalidVolumeError(f"class_map shape {class_map.shape} != fill shape {fill_hu.shape}")
    return np.where(class_map == VESSEL, fill_hu, np.int16(background_hu)).astype(np.int16)


def auto_tile(shape_zyx: tuple[int, int, int]) -> tuple[tuple[int, int], int]:
    """Default (tile_yx, slab_batch): 256x256 tiles (measured fastest on 2 CPU cores with channels_last),
    slice batch so that one forward covers ~2 * 256 * 256 output voxels."""
    _, y, x = shape_zyx
    ty, tx = min(256, y), min(256, x)
    return (ty, tx), max(1, min(16, (2 * 256 * 256) // (ty * tx)))


def predict_volume(
    model: torch.nn.Module,
    fill_hu: np.ndarray,
    *,
    tile_yx: tuple[int, int] | None = None,
    slab_batch: int | None = None,
    candidate_mask: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    channels_last: bool = True,
    min_tile: int = MIN_TILE,
    prob_dtype: type = np.float16,
    return_probs: bool = False,
    class_priors: tuple[float, float, float] | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    mirror: bool = False,
) -> PredictionResult:
    """Dense tiled inference over int16 HU ``fill_hu`` [Z,Y,X].

    A 3D U-Net (config architecture "unet3d") goes to ``dla.model.unet3d.predict_volume_unet3d`` (sliding
    window, same result type; ``spacing_mm`` (dz, dy, dx) is checked against the spacing it was planned for; the
    tile, slab and channels_last arguments do not apply). The voxel net ignores ``spacing_mm``.

    Slices are processed in batches of ``slab_batch`` (each output slice gets its own 5 input slices),
    in-plane in tiles of ``tile_yx`` output voxels whose inputs overlap by the 20-voxel halo. Where
    ``candidate_mask`` (bool [Z,Y,X]) is False the class is SOFT_TISSUE and vessel_prob 0; tiles and slices
    without candidates are skipped. On out-of-memory the tile size (then slab batch) is halved and the batch
    retried; below ``min_tile`` InferenceMemoryError is raised. ``should_cancel`` is polled between tiles
    (InferenceCancelled); ``progress(fraction, message)`` is called after each slice batch.
    ``prob_dtype`` float16 (default, half the memory; abs error <= 5e-4) or float32; ``return_probs`` also
    returns all three class probabilities as float32 [3,Z,Y,X] (tests / analysis; 12 bytes per voxel).
    The model is moved to channels_last memory format in place when ``channels_last`` (measured ~1.5x faster
    on CPU). ``class_priors`` (vessel, bone, soft-tissue frequencies, e.g. ``class_priors_from_labels`` of the
    training labels): the network was trained on balanced classes, so its softmax assumes equal priors; with
    ``class_priors`` the probabilities are re-weighted to them (Bayes prior shift) before the argmax and the
    stored vessel probability. None: as trained. ``mirror`` (test-time augmentation, voxel net only): every tile
    also goes through the network mirrored left-right (x) and the two softmaxes are averaged, i.e. the mean of
    the predictions of the volume and of its mirror image (the valid convolutions make the mirrored tile's
    output exactly the mirrored volume's there); twice the network cost.
    """
    if getattr(getattr(model, "config", None), "is_unet", False):
        from dla.model.unet3d import predict_volume_unet3d

        if mirror:
            raise InferenceError(
                "mirrored test-time augmentation is for the voxel classifier, not the 3D U-Net"
            )
        return predict_volume_unet3d(
            model,
            fill_hu,
            candidate_mask=candidate_mask,
            progress=progress,
            should_cancel=should_cancel,
            prob_dtype=prob_dtype,
            return_probs=return_probs,
            class_priors=class_priors,
            spacing_mm=spacing_mm,
        )
    fill_hu = check_volume(fill_hu)
    prior_weights = check_class_priors(class_priors)
    if prior_weights is not None:
        prior_weights = prior_weights.view(1, 3, 1, 1)
    Z, Y, X = fill_hu.shape
    if candidate_mask is not None:
        candidate_mask = np.asarray(candidate_mask, dtype=bool)
        if candidate_mask.shape != fill_hu.shape:
            raise InvalidVolumeError(
                f"candidate_mask shape {candidate_mask.shape} != fill shape {fill_hu.shape}"
            )
    auto_t, auto_b = auto_tile(fill_hu.shape)
    ty, tx = (min(tile_yx[0], Y), min(tile_yx[1], X)) if tile_yx else auto_t
    nb = slab_batch or auto_b
    if ty < 1 or tx < 1 or nb < 1:
        raise InvalidVolumeError(f"tile_yx {tile_yx} / slab_batch {slab_batch} must be positive")

    t0 = time.perf_counter()
    device = model_device(model)
    model.eval()
    run_model = model
    if channels_last and device.type == "cpu":
        run_model = model.to(memory_format=torch.channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    padded = pad_volume(fill_hu)
    class_map = np.full((Z, Y, X), SOFT_TISSUE, dtype=np.uint8)
    vessel_prob = np.zeros((Z, Y, X), dtype=prob_dtype)
    all_probs = np.zeros((3, Z, Y, X), dtype=np.float32) if return_probs else None
    if candidate_mask is None:
        z_todo = np.arange(Z)
    else:
        z_todo = np.flatnonzero(candidate_mask.reshape(Z, -1).any(axis=1))
    network_voxels = 0
    slice_offsets = np.arange(PATCH_Z)

    if prior_weights is not None:
        prior_weights = prior_weights.to(device)

    def run_batch(zs: np.ndarray, ty: int, tx: int) -> int:
        # [B, 5, Y+40, X+40] int16 -> float32 normalised
        slab = normalize_hu(torch.from_numpy(padded[zs[:, None] + slice_offsets[None, :]]))
        n = 0
        for ty0 in range(0, Y, ty):
            for tx0 in range(0, X, tx):
                y0, y1, x0, x1 = ty0, min(Y, ty0 + ty), tx0, min(X, tx0 + tx)
                if should_cancel is not None and should_cancel():
                    raise InferenceCancelled("inference cancelled")
                if candidate_mask is not None:
                    m = candidate_mask[zs, y0:y1, x0:x1]
                    rows = np.flatnonzero(m.any(axis=(0, 2)))
                    if not len(rows):
                        continue
                    cols = np.flatnonzero(m.any(axis=(0, 1)))
                    # only the candidates' bounding box in the tile goes through the network: outside it every
                    # voxel stays SOFT_TISSUE / 0 anyway (about a third of a head's tile area; same outputs)
                    y0, y1, x0, x1 = y0 + rows[0], y0 + rows[-1] + 1, x0 + cols[0], x0 + cols[-1] + 1
                    m = m[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
                x = slab[:, :, y0 : y1 + 2 * HALO_YX, x0 : x1 + 2 * HALO_YX]
                x = x.to(device).contiguous(memory_format=memory_format)
                probs = torch.softmax(run_model(x).float(), dim=1)
                if mirror:
                    flipped = x.flip(-1).contiguous(memory_format=memory_format)
                    probs = (probs + torch.softmax(run_model(flipped).float(), dim=1).flip(-1)) / 2
                if prior_weights is not None:  # Bayes prior shift: balanced training -> the training priors
                    probs = probs * prior_weights
                    probs = probs / probs.sum(dim=1, keepdim=True)
                cls = (probs.argmax(dim=1) + VESSEL).to(torch.uint8).cpu().numpy()
                pr = probs.cpu().numpy()
                pv = pr[:, VESSEL - 1].astype(prob_dtype)
                if candidate_mask is None:
                    class_map[zs, y0:y1, x0:x1] = cls
                    vessel_prob[zs, y0:y1, x0:x1] = pv
                    if all_probs is not None:
                        all_probs[:, zs, y0:y1, x0:x1] = pr.transpose(1, 0, 2, 3)
                    n += cls.size
                else:
                    class_map[zs, y0:y1, x0:x1] = np.where(m, cls, np.uint8(SOFT_TISSUE))
                    vessel_prob[zs, y0:y1, x0:x1] = np.where(m, pv, 0).astype(prob_dtype)
                    if all_probs is not None:
                        all_probs[:, zs, y0:y1, x0:x1] = np.where(m[:, None], pr, 0).transpose(1, 0, 2, 3)
                    n += int(m.sum())
        return n

    with torch.inference_mode():
        i = 0
        while i < len(z_todo):
            zs = z_todo[i : i + nb]
            try:
                network_voxels += run_batch(zs, ty, tx)
            except (RuntimeError, MemoryError) as exc:
                if not is_oom(exc):
                    raise
                if max(ty, tx) > min_tile:
                    ty, tx = max(min_tile, ty // 2), max(min_tile, tx // 2)
                elif nb > 1:
                    nb = max(1, nb // 2)
                else:
                    raise InferenceMemoryError(
                        f"out of memory even with {ty}x{tx} tiles and 1 slice per batch "
                        f"(volume {Z}x{Y}x{X}); free memory or use a smaller network"
                    ) from exc
                continue  # retry this batch with smaller tiles; earlier batches are complete
            i += len(zs)
            if progress is not None:
                progress(i / len(z_todo), f"classified {i}/{len(z_todo)} slices")
    if progress is not None and len(z_todo) == 0:
        progress(1.0, "no candidate voxels")
    elapsed = time.perf_counter() - t0
    return PredictionResult(
        class_map=class_map,
        vessel_prob=vessel_prob,
        voxels_per_s=Z * Y * X / max(elapsed, 1e-9),
        elapsed_s=elapsed,
        network_voxels=network_voxels,
        tile_yx=(ty, tx),
        slab_batch=nb,
        probs=all_probs,
    )
