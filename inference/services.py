"""Load, lock, call, save: the Django side of training and inference.

Training data are the newest APPROVED label version of every study in a cohort (``training_plan`` checks the
cohorts before anything is queued: approved labels present, every class labelled, no patient in two cohorts,
fill volumes on the labels' grid). ``run_training`` feeds them to ``dla.model.train.train`` with a
checkpoint keyed by the TaskRun id (a redelivered run resumes from it), records the curves for the live page
and registers a ``ModelVersion``. ``run_inference`` turns fill volumes into class map, vessel probability and
3D-DLA volumes, idempotently per (run, study). Both take a ``ctx`` with ``progress(fraction, message)``,
``should_cancel()``, ``log(line)`` and ``run_id`` (a TaskContext, or the management commands' terminal one).

Stored outputs of inference (all on the fill's grid, ``model_version_id`` set, ``source = "infer-run-<id>"``):
``class_map`` uint8 class ids (dla.classes), ``vessel_prob`` uint8 = round(255 * P(vessel)) (0 where
the network was not run because the voxel cannot be vessel or bone by intensity), ``dla`` int16 HU (fill HU
where the class is vessel, 0 HU (a DSA-like background) elsewhere).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction

from annotations import volume_store
from annotations.labels import newest_approved, version_labels
from annotations.models import LabelVersion, Study, Volume
from dla.classes import CLASS_NAMES, LABELED_CLASSES
from dla.model.base import (
    DEFAULT_BONE_PRIOR_STRENGTH,
    DEFAULT_MIRROR,
    DEFAULT_PRIOR_STRENGTH,
    check_prior_strength,
    tempered_priors,
)
from dla.model.ddp import backend_and_devices, train_distributed
from dla.model.dense import (
    InferenceCancelled,
    class_priors_from_labels,
    dla_volume,
    intensity_candidates,
    predict_volume,
)
from dla.model.network import (
    PRESETS,
    DLANet,
    IncompatibleWeightsError,
    NetworkConfig,
    build_model,
    config_fingerprint,
    load_weights,
    preset_config,
    save_weights,
)
from dla.model.train import (
    TrainConfig,
    TrainingCancelled,
    TrainingData,
    TrainingDivergedError,
    autocast_dtype,
    load_checkpoint,
    precision_name,
    train,
)
from dla.stats.uncertainty import probability_histogram, vessel_uncertainty
from dla_web.memory import peak_rss_gb, reset_peak_rss
from dla_web.tasks import TaskCancelled

from .models import ModelVersion, TrainingRun, thin_curve

CURVE_WRITE_INTERVAL_S = 1.0
CANCEL_POLL_INTERVAL_S = 0.5
MAX_WEIGHTS_BYTES = 512 * 1024 * 1024


class TrainingInputError(ValueError):
    """The cohorts cannot be trained on (the message names the studies / classes / patients at fault)."""


class InferenceInputError(ValueError):
    """Inference cannot run on this input (no model, a study without a fill volume, ...)."""


class WeightsRejected(ValueError):
    """An uploaded or stored weights file is not a usable DLANet weights file (nothing was stored)."""


def device_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------ weights


def _storage_local_root() -> Path:
    location = getattr(default_storage, "location", None)
    return Path(location) if location else Path(settings.VOLUME_CACHE_DIR)


def checkpoint_path(run_id: int) -> Path:
    """Local path of a training run's checkpoint (in the storage root for filesystem storage)."""
    return _storage_local_root() / "checkpoints" / f"train-run-{run_id}.pt"


def inspect_weights(path: str | os.PathLike, *, expected: NetworkConfig | None = None) -> DLANet:
    """Load a weights file as a DLANet (eval mode); anything unusable raises WeightsRejected naming why."""
    try:
        return load_weights(path, expected_config=expected)
    except IncompatibleWeightsError as exc:
        raise WeightsRejected(str(exc).replace(str(path), "the file")) from exc
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise WeightsRejected(f"the file is not a usable DLANet weights file ({exc})") from exc


def store_weights(local: Path) -> tuple[str, str, int]:
    """Copy a weights file into the storage as ``models/<uuid>.pt``: (storage name, sha256, size in bytes)."""
    digest = volume_store.sha256_of_path(local)
    with open(local, "rb") as handle:
        name = default_storage.save(f"models/{uuid.uuid4().hex}.pt", File(handle))
    return name, digest, local.stat().st_size


def load_model(version: ModelVersion) -> DLANet:
    """The model of a registered version, checked against its sha256 and recorded architecture."""
    try:
        path = volume_store.local_path(version.weights_file)
    except (FileNotFoundError, OSError) as exc:
        raise InferenceInputError(f"weights file of model {version} is missing from the storage") from exc
    if not volume_store.verify_file(version.weights_file, version.sha256):
        raise InferenceInputError(
            f"weights file of model {version} is missing or does not match its sha256; re-upload the weights"
        )
    model = inspect_weights(path, expected=NetworkConfig.from_dict(version.network_config))
    return model.to(device_name())


def register_model(local: Path, *, config: NetworkConfig, activate: bool, **fields) -> ModelVersion:
    """Store the weights file ``local`` and register it as a ModelVersion of architecture ``config`` (sha256,
    size and fingerprint computed here; ``fields`` are the other model fields). It becomes active with
    ``activate`` or when no model is active yet. A failure leaves no stored file behind."""
    stored = None
    try:
        stored, digest, size = store_weights(local)
        with transaction.atomic():
            version = ModelVersion.objects.create(
                weights_file=stored,
                sha256=digest,
                size_bytes=size,
                fingerprint=config_fingerprint(config),
                network_config=config.to_dict(),
                **fields,
            )
            if activate or not ModelVersion.objects.filter(is_active=True).exists():
                version.activate()
        return version
    except BaseException:
        if stored:
            volume_store.delete_file(stored)
        raise


def register_uploaded_weights(upload, *, name: str, notes: str, user, preset: str | None, activate: bool):
    """Validate an uploaded weights file and register it; a refused file leaves nothing stored."""
    if upload.size > MAX_WEIGHTS_BYTES:
        raise WeightsRejected(f"weights file of {upload.size} bytes exceeds the limit of {MAX_WEIGHTS_BYTES}")
    tmp_dir = Path(tempfile.mkdtemp(prefix="weights-", dir=settings.VAR_DIR))
    try:
        local = tmp_dir / "upload.pt"
        with open(local, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        expected = preset_config(preset) if preset else None
        model = inspect_weights(local, expected=expected)
        return register_model(
            local,
            config=model.config,
            activate=activate,
            name=name or Path(upload.name or "uploaded").stem[:120],
            source=ModelVersion.Source.UPLOADED,
            created_by=user,
            notes=notes,
            metrics={},
        )
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ training


def _cohort_entries(cohort: str, role: str) -> list[dict]:
    studies = list(Study.objects.filter(cohort=cohort).order_by("pseudonym"))
    if not studies:
        raise TrainingInputError(f"the {role} cohort {cohort!r} has no studies; assign studies to it first")
    entries, lacking, no_fill, grid = [], [], [], []
    for study in studies:
        version = newest_approved(study)
        if version is None:
            lacking.append(study.pseudonym)
            continue
        fill = study.volume(Volume.Role.FILL)
        if fill is None:
            no_fill.append(study.pseudonym)
            continue
        if list(fill.shape) != list(version.shape):
            grid.append(f"{study.pseudonym} (labels {version.shape}, fill {fill.shape})")
            continue
        entries.append(
            {
                "study": study.pk,
                "pseudonym": study.pseudonym,
                "patient": study.patient_pseudonym,
                "label_version": version.pk,
                "label_number": version.number,
                "counts": {int(k): int(v) for k, v in (version.counts or {}).items()},
            }
        )
    if no_fill:
        raise TrainingInputError(f"{role} studies without a fill volume: {', '.join(no_fill)}")
    if grid:
        raise TrainingInputError(f"{role} labels not on the fill volume's grid: {', '.join(grid)}")
    if not entries:
        raise TrainingInputError(
            f"no approved label versions in the {role} cohort {cohort!r}; studies lacking them: "
            f"{', '.join(lacking)} (commit labels and approve them in review first)"
        )
    missing = [CLASS_NAMES[c] for c in LABELED_CLASSES if not sum(e["counts"].get(c, 0) for e in entries)]
    if missing:
        raise TrainingInputError(
            f"the approved labels of the {role} cohort {cohort!r} have no voxels of class "
            f"{', '.join(missing)}; every class (vessel, bone, soft tissue) must be labelled"
        )
    for e in entries:
        e["skipped_lacking"] = lacking
    return entries


def training_plan(train_cohort: str = "train", validation_cohort: str | None = "validation") -> dict:
    """Check the cohorts and return ``{"train": [entry], "validation": [entry], "skipped": [pseudonym]}``.

    Raises TrainingInputError for: no approved labels, a class missing, studies without fill or with labels
    on another grid, the same cohort twice, or a training patient who also has studies in validation/test.
    Studies of the cohort without an approved version are skipped (listed in ``skipped``).
    """
    if validation_cohort == train_cohort:
        raise TrainingInputError("the validation cohort must differ from the training cohort")
    train_entries = _cohort_entries(train_cohort, "training")
    val_entries = _cohort_entries(validation_cohort, "validation") if validation_cohort else []
    train_patients = {e["patient"] for e in train_entries}
    held_out = [c for c in ("validation", "test") if c != train_cohort]
    overlap = (
        Study.objects.filter(patient_pseudonym__in=train_patients, cohort__in=held_out)
        .order_by("patient_pseudonym", "pseudonym")
        .values_list("patient_pseudonym", "pseudonym", "cohort")
    )
    overlap = list(overlap)
    if overlap:
        listed = "; ".join(f"patient {p}: study {s} in {c}" for p, s, c in overlap[:10])
        raise TrainingInputError(
            f"patients of the training cohort also have studies in {'/'.join(held_out)} ({listed}); "
            "a patient must be in one cohort only"
        )
    skipped = train_entries[0]["skipped_lacking"]
    for e in train_entries + val_entries:
        e.pop("skipped_lacking", None)
    return {"train": train_entries, "validation": val_entries, "skipped": skipped}


def _load_pairs(entries: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for e in entries:
        study = Study.objects.get(pk=e["study"])
        fill = np.asarray(study.volume(Volume.Role.FILL).array())
        labels = version_labels(LabelVersion.objects.get(pk=e["label_version"]))
        pairs.append((fill, labels))
    return pairs


def _fmt_s(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class _CurveRecorder:
    """on_progress/should_cancel callbacks for ``train``: progress + ETA to the TaskRun, curves to the
    TrainingRun (buffered, written at most every CURVE_WRITE_INTERVAL_S and at each validation)."""

    def __init__(self, record: TrainingRun, ctx, max_iterations: int, start_iteration: int):
        self.record, self.ctx = record, ctx
        self.max_iterations = max_iterations
        self.start_iteration = start_iteration
        self.t0 = time.monotonic()
        self.last_write = 0.0
        self.last_cancel_poll = 0.0
        self.cancelled = False
        self.pending_train: list = []
        self.pending_val: list = []
        n = len(record.train_curve)
        self.stride = 1
        if n > 1:
            span = record.train_curve[-1][0] - record.train_curve[0][0]
            while self.stride * 2 <= span / max(1, n - 1):
                self.stride *= 2
        self.iteration = start_iteration
        self.voxels_per_s = 0.0
        self.eta_s: float | None = None

    def __call__(self, iteration: int, metrics: dict) -> None:
        self.iteration = iteration
        self.voxels_per_s = float(metrics.get("voxels_per_s", 0.0))
        if iteration % self.stride == 0 or iteration == 1:
            self.pending_train.append([iteration, float(metrics["loss"]), float(metrics["lr"])])
        is_val = "val_error" in metrics
        if is_val:
            point = {"iteration": iteration, "epoch": float(metrics.get("epoch", 0.0))}
            point.update({k: float(v) for k, v in metrics.items() if k.startswith("val_")})
            self.pending_val.append(point)
        done = iteration - self.start_iteration
        elapsed = time.monotonic() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        self.eta_s = (self.max_iterations - iteration) / rate if rate > 0 else None
        now = time.monotonic()
        if is_val or now - self.last_write >= CURVE_WRITE_INTERVAL_S:
            self.flush()
        message = (
            f"iteration {iteration}/{self.max_iterations} · loss {metrics['loss']:.4f} · "
            f"{self.voxels_per_s:,.0f} vox/s · ETA {_fmt_s(self.eta_s)}"
        )
        try:
            self.ctx.progress(iteration / self.max_iterations, message)
        except TaskCancelled:
            self.cancelled = True  # the trainer sees it at its next should_cancel and checkpoints first

    def flush(self) -> None:
        self.last_write = time.monotonic()
        record = self.record
        record.train_curve = record.train_curve + self.pending_train
        while len(record.train_curve) > 2000:
            record.train_curve = thin_curve(record.train_curve)
            self.stride *= 2
        record.val_curve = thin_curve(record.val_curve + self.pending_val)
        self.pending_train, self.pending_val = [], []
        record.iteration = self.iteration
        record.voxels_per_s = self.voxels_per_s
        record.eta_s = self.eta_s
        record.save(
            update_fields=["train_curve", "val_curve", "iteration", "voxels_per_s", "eta_s", "updated_at"]
        )

    def should_cancel(self) -> bool:
        if self.cancelled:
            return True
        now = time.monotonic()
        if now - self.last_cancel_poll >= CANCEL_POLL_INTERVAL_S:
            self.last_cancel_poll = now
            self.cancelled = bool(self.ctx.should_cancel())
        return self.cancelled


def training_params_to_configs(params: dict) -> tuple[NetworkConfig, TrainConfig]:
    preset = params.get("preset", "cpu")
    net = NetworkConfig.from_dict(params["network"]) if params.get("network") else preset_config(preset)
    cfg = TrainConfig.from_dict({**params.get("train", {}), "preset": preset})
    return net, cfg


UNET_DEFAULTS = {"patch_px": 64, "base_filters": 16}


def plan_unet_for_cohorts(plan: dict, unet: dict | None) -> tuple[NetworkConfig, str]:
    """The 3D U-Net config (``dla.model.unet3d.plan_unet3d``) for the fill volumes of a training plan: planned for
    their voxel spacing, with a cubic patch of ``unet["patch_px"]`` voxels cut to the largest training volume's
    extent per axis. Returns (config, a sentence for the log). TrainingInputError when the training and validation
    volumes do not share one spacing (within the inference tolerance): a U-Net is planned for one."""
    from dla.model.unet3d import SPACING_TOLERANCE, plan_unet3d

    opts = {**UNET_DEFAULTS, **(unet or {})}
    shapes, spacings = [], []
    for e in plan["train"] + plan["validation"]:
        fill = Study.objects.get(pk=e["study"]).volume(Volume.Role.FILL)
        shapes.append((e, tuple(int(n) for n in fill.shape)))
        spacings.append((e["pseudonym"], tuple(float(v) for v in fill.spacing_mm)))
    ref = spacings[0][1]
    odd = [
        f"{p} ({', '.join(f'{v:g}' for v in sp)} mm)"
        for p, sp in spacings
        if any(not 1 / SPACING_TOLERANCE <= a / b <= SPACING_TOLERANCE for a, b in zip(sp, ref, strict=True))
    ]
    if odd:
        raise TrainingInputError(
            f"a 3D U-Net is planned for one voxel spacing; {spacings[0][0]} has ({', '.join(f'{v:g}' for v in ref)})"
            f" mm but {', '.join(odd)}: resample the studies to one spacing or train the voxel classifier"
        )
    extent = [max(s[a] for e, s in shapes if e in plan["train"]) for a in range(3)]
    patch = [min(int(opts["patch_px"]), n) for n in extent]
    config = plan_unet3d(ref, tuple(patch), base_filters=int(opts["base_filters"]))
    note = (
        f"3D U-Net planned for spacing ({', '.join(f'{v:g}' for v in ref)}) mm: patch "
        f"{'x'.join(map(str, config.unet_patch_zyx))}, {len(config.unet_filters)} stages, filters "
        f"{list(config.unet_filters)}"
        + (
            f" (patch {opts['patch_px']} cut to the training volumes' extent)"
            if patch != [opts["patch_px"]] * 3
            else ""
        )
    )
    return config, note


def run_training(
    ctx,
    *,
    name: str = "",
    preset: str = "cpu",
    architecture: str = "voxel",
    unet: dict | None = None,
    network: dict | None = None,
    train_config: dict | None = None,
    train_cohort: str = "train",
    validation_cohort: str | None = "validation",
    checkpoint_every: int = 500,
    activate: bool = False,
    notes: str = "",
    user_id: int | None = None,
) -> dict:
    """Train on the approved labels of ``train_cohort`` (validation monitored on ``validation_cohort``) and
    register the resulting ModelVersion: the weights of the best validation iteration (``dla.model.train`` keeps
    them unless the train config says ``keep_weights="last"``); the summary (task result and the model's
    metrics) gives the kept and the last iteration with their validation errors and any divergence warning.
    Idempotent: a rerun of a run that registered its model returns it; a rerun of an interrupted run resumes
    from its checkpoint. ``architecture="unet3d"`` trains a 3D U-Net instead of the ``preset`` voxel classifier,
    planned for the cohorts' spacing (``plan_unet_for_cohorts``; ``unet``: ``patch_px``, ``base_filters``); with
    several processes both architectures train through the DDP launcher (``dla.model.ddp``)."""
    done = ModelVersion.objects.filter(training_run_id=ctx.run_id).first()
    if done is not None:
        return {"model_version_id": done.pk, "name": done.name, **done.metrics.get("summary", {})}
    net_cfg, cfg = training_params_to_configs(
        {"preset": preset, "network": network, "train": train_config or {}}
    )
    ctx.progress(0.0, "checking cohorts and approved labels", force=True)
    plan = training_plan(train_cohort, validation_cohort)
    if architecture == "unet3d":
        net_cfg, unet_note = plan_unet_for_cohorts(plan, unet)
        cfg.preset = "unet3d"
        ctx.log(unet_note)
    record, _ = TrainingRun.objects.get_or_create(task_run_id=ctx.run_id)
    record.name = name
    record.max_iterations = cfg.max_iterations
    record.train_studies = _entry_summary(plan["train"])
    record.validation_studies = _entry_summary(plan["validation"])
    ckpt = checkpoint_path(ctx.run_id)
    record.checkpoint = str(ckpt)
    start_iteration = 0
    if ckpt.exists():
        start_iteration = int(load_checkpoint(ckpt)["state"]["iteration"])
        ctx.log(f"resuming from the checkpoint at iteration {start_iteration}")
    record.train_curve = [p for p in record.train_curve if p[0] <= start_iteration]
    record.val_curve = [p for p in record.val_curve if p["iteration"] <= start_iteration]
    record.iteration = start_iteration
    record.save()
    if plan["skipped"]:
        ctx.log(f"skipped (no approved labels): {', '.join(plan['skipped'])}")
    ctx.log(
        f"training on {len(plan['train'])} studies ({', '.join(e['pseudonym'] for e in plan['train'])}), "
        f"validation on {len(plan['validation'])}"
    )
    ctx.progress(0.0, f"loading {len(plan['train']) + len(plan['validation'])} volumes", force=True)
    train_pairs = _load_pairs(plan["train"])
    train_data = TrainingData(train_pairs, name=f"training cohort {train_cohort!r}")
    priors = class_priors_from_labels(train_pairs)
    if plan["validation"]:
        val_pairs = _load_pairs(plan["validation"])
        val_data = TrainingData(val_pairs, name=f"validation cohort {validation_cohort!r}")
    else:
        val_pairs, val_data = train_pairs, train_data
        ctx.log("no validation cohort: monitoring on the training data")
    device = device_name()
    processes = settings.DLA_TRAIN_PROCESSES or max(1, torch.cuda.device_count())
    ctx.log(
        f"network {config_fingerprint(net_cfg)}, {train_data.n_labeled:,} labelled training voxels, "
        f"mode {'3-D patches' if net_cfg.is_unet else cfg.mode}, device {device}"
        + (f", DDP over {processes} processes ({backend_and_devices(processes)[0]})" if processes > 1 else "")
    )
    amp_dtype = autocast_dtype(device, cfg.amp)
    if amp_dtype is not None:
        ctx.log(f"mixed precision: the forward pass in {precision_name(amp_dtype)}")
    elif cfg.amp:
        ctx.log("float32 training (this device has no native bf16 for mixed precision)")
    else:
        ctx.log("float32 training (mixed precision off)")
    if cfg.augments:
        low, high = cfg.augment_hu_scale
        ctx.log(
            f"augmentation of {100 * cfg.augment_probability:g}% of training slabs/patches: HU x [{low:g}, {high:g}], "
            f"extra blur sigma up to {cfg.augment_blur_sigma_voxels:g} voxels, "
            f"extra noise SD up to {cfg.augment_noise_hu:g} HU"
        )
    if cfg.augment_mirror:
        ctx.log("augmentation: half of the training slabs/patches mirrored left-right")
    recorder = _CurveRecorder(record, ctx, cfg.max_iterations, start_iteration)
    try:
        if processes > 1:
            result, model = train_distributed(
                processes,
                model_config=net_cfg.to_dict(),
                train_config=cfg.to_dict(),
                train_pairs=train_pairs,
                val_pairs=val_pairs,
                train_name=train_data.name,
                val_name=val_data.name,
                on_progress=recorder,
                should_cancel=recorder.should_cancel,
                checkpoint_path=ckpt,
                checkpoint_every=checkpoint_every,
                scratch_dir=settings.VAR_DIR,
            )
        else:
            torch.manual_seed(cfg.seed)
            model = build_model(net_cfg)
            result = train(
                model,
                train_data,
                val_data,
                cfg,
                device=device,
                on_progress=recorder,
                should_cancel=recorder.should_cancel,
                checkpoint_path=ckpt,
                checkpoint_every=checkpoint_every,
            )
    except TrainingCancelled as exc:
        recorder.flush()
        ctx.log(f"{exc}; checkpoint kept ({Path(ckpt).name})")
        raise TaskCancelled(str(exc)) from exc
    except TrainingDivergedError:
        recorder.flush()
        raise
    recorder.flush()
    summary = {
        "iterations": result.iterations,
        "stopped_reason": result.stopped_reason,
        "best_val_error": result.best_val_error,
        "best_iteration": result.best_iteration,
        # the registered weights: those of the best validation unless keep_weights="last" (dla.model.train)
        "kept_weights": result.kept_weights,
        "kept_iteration": result.kept_iteration,
        "kept_val_error": result.kept_val_error,
        "last_iteration": result.iterations,
        "last_val_error": result.last_val_error,
        "validation_warning": result.validation_warning,
        "elapsed_s": result.elapsed_s,
        "voxels_per_s": result.voxels_per_s,
        "device": device,
        "processes": processes,
        "precision": result.precision,
    }
    final = {k: v for k, v in result.final_metrics.items() if isinstance(v, int | float)}
    kept = next((h for h in result.history if h.get("iteration") == result.kept_iteration), None)
    kept = {k: v for k, v in (kept or final).items() if isinstance(v, int | float)}
    if result.validation_warning:
        ctx.log(result.validation_warning)
    tmp_dir = Path(tempfile.mkdtemp(prefix="weights-", dir=settings.VAR_DIR))
    try:
        local = tmp_dir / "weights.pt"
        save_weights(model, local)
        version = register_model(
            local,
            config=net_cfg,
            activate=activate,
            name=name or f"{'unet3d' if net_cfg.is_unet else preset} run {ctx.run_id}",
            train_config=cfg.to_dict(),
            training_run_id=ctx.run_id,
            metrics={
                "summary": summary,
                "final": final,
                "kept": kept,
                "history": result.history,
                "train_curve": record.train_curve,
                "train_studies": record.train_studies,
                "validation_studies": record.validation_studies,
                "class_priors": dict(zip(("vessel", "bone", "soft_tissue"), priors, strict=True)),
            },
            created_by_id=user_id,
            notes=notes,
        )
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    ckpt.unlink(missing_ok=True)
    ctx.log(
        f"registered model #{version.pk} {version.name}: weights of iteration {result.kept_iteration} "
        f"({result.kept_weights} validation, error {result.kept_val_error:.4f}); {result.iterations} iterations "
        f"({result.stopped_reason}), last validation error {result.last_val_error:.4f}"
    )
    return {"model_version_id": version.pk, "name": version.name, **summary}


def _entry_summary(entries: list[dict]) -> list[dict]:
    return [{k: e[k] for k in ("study", "pseudonym", "label_number")} for e in entries]


def create_training_record(run, *, params: dict, plan: dict) -> TrainingRun:
    """The TrainingRun row (curves for the live page) of TaskRun ``run``; call it in the transaction that
    created the run, so the worker never starts a run without its record."""
    return TrainingRun.objects.create(
        task_run=run,
        name=params.get("name", ""),
        max_iterations=params.get("train_config", {}).get("max_iterations", 0),
        train_studies=_entry_summary(plan["train"]),
        validation_studies=_entry_summary(plan["validation"]),
    )


# ------------------------------------------------------------------------------------------------ inference


def resolve_model(model_version_id: int | None) -> ModelVersion:
    if model_version_id is None:
        version = ModelVersion.active()
        if version is None:
            raise InferenceInputError("no active model; train or upload one and activate it")
        return version
    version = ModelVersion.objects.filter(pk=model_version_id).first()
    if version is None:
        raise InferenceInputError(f"model version {model_version_id} does not exist")
    return version


def inference_studies(*, study_ids: list[int] | None = None, cohort: str | None = None) -> list[Study]:
    """The studies to run on, every one checked for a fill volume (InferenceInputError names those without)."""
    if study_ids:
        studies = list(Study.objects.filter(pk__in=study_ids).order_by("pseudonym"))
        unknown = sorted(set(study_ids) - {s.pk for s in studies})
        if unknown:
            raise InferenceInputError(f"unknown study ids: {unknown}")
    elif cohort:
        studies = list(Study.objects.filter(cohort=cohort).order_by("pseudonym"))
        if not studies:
            raise InferenceInputError(f"the cohort {cohort!r} has no studies")
    else:
        raise InferenceInputError("give a study or a cohort to run inference on")
    without = [s.pseudonym for s in studies if s.volume(Volume.Role.FILL) is None]
    if without:
        raise InferenceInputError(
            f"studies without a fill volume (nothing to classify): {', '.join(without)}"
        )
    return studies


def vessel_prob_stats(vessel_prob_u8: np.ndarray) -> dict:
    """What a vessel probability volume keeps in ``Volume.stats``: its 256-bin histogram (the label-next ranking
    follows from it exactly, without reading the voxels again)."""
    return {"probability_histogram": probability_histogram(vessel_prob_u8).tolist()}


def _probability_histogram(volume: Volume) -> np.ndarray:
    hist = (volume.stats or {}).get("probability_histogram")
    if hist is None:  # predicted before the histogram was kept: computed once and saved
        volume.stats = {**(volume.stats or {}), **vessel_prob_stats(np.asarray(volume.array()))}
        volume.save(update_fields=["stats"])
        hist = volume.stats["probability_histogram"]
    return np.asarray(hist, dtype=np.int64)


def label_priorities(model_version_id: int | None = None) -> dict:
    """Which study to label next: the studies without an approved label version, most uncertain first.

    Uncertainty is the mean binary entropy (bits) of the model's vessel probability over its candidate voxels
    (``dla.stats.uncertainty``), from the newest prediction of ``model_version_id`` (default: the active model)
    on each study. Studies the model has not run on are listed apart (run inference on them to rank them).
    Raises InferenceInputError when there is no such model."""
    version = resolve_model(model_version_id)
    approved = LabelVersion.objects.filter(review_status=LabelVersion.Review.APPROVED).values("study_id")
    studies = Study.objects.exclude(pk__in=approved).order_by("pseudonym")
    ranked, unpredicted = [], []
    for study in studies:
        prob = (
            Volume.objects.filter(study=study, role=Volume.Role.VESSEL_PROB, model_version_id=version.pk)
            .order_by("-created_at")
            .first()
        )
        row = {"study_id": study.pk, "pseudonym": study.pseudonym, "cohort": study.cohort}
        if prob is None:
            unpredicted.append(row)
            continue
        summary = vessel_uncertainty(_probability_histogram(prob))
        voxel_mm3 = float(np.prod(prob.spacing_mm))
        ranked.append(
            {
                **row,
                **summary.to_dict(),
                "uncertain_mm3": summary.uncertain_voxels * voxel_mm3,
                "predicted_at": prob.created_at.isoformat(),
            }
        )
    ranked.sort(key=lambda r: (-(r["mean_entropy_bits"] or 0.0), r["pseudonym"]))
    return {
        "model_version": {"id": version.pk, "name": version.name},
        "ranked": ranked,
        "without_prediction": unpredicted,
        "measure": "mean binary entropy (bits, 0-1) of the vessel probability over the voxels the model did not "
        "rule out (probability >= 0.02); higher = the model is less sure",
    }


class _ThrottledCancel:
    def __init__(self, ctx):
        self.ctx, self.last, self.value = ctx, 0.0, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.value and now - self.last >= CANCEL_POLL_INTERVAL_S:
            self.last = now
            self.value = bool(self.ctx.should_cancel())
        return self.value


def run_inference(
    ctx,
    *,
    model_version_id: int,
    study_ids: list[int],
    candidate_min_hu: int | None = 100,
    user_id: int | None = None,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
    mirror: bool = DEFAULT_MIRROR,
    bone_prior_strength: float | None = None,
) -> dict:
    """Classify the fill volume of each study and store class_map, vessel_prob and dla volumes.

    ``prior_strength``: a model trained here records its training labels' class frequencies among the
    candidate voxels (``metrics["class_priors"]``); its balanced-training probabilities are re-weighted to them
    (``predict_volume(class_priors=...)``, ``tempered_priors``: 1 the full Bayes prior shift, which removes most
    of the vessel over-calling of balanced training; 0 none, the paper's plain argmax; the default
    ``DEFAULT_PRIOR_STRENGTH`` in between); it applies to the vessel : soft-tissue pair, ``bone_prior_strength``
    to the vessel : bone pair (None: ``prior_strength``, as runs recorded before it existed did). Uploaded
    weights carry no priors and are used as they are.
    ``mirror``: average the predictions of each volume and of its left-right mirror image (test-time
    augmentation, ``DEFAULT_MIRROR``); the voxel classifier only, a 3D U-Net predicts without it (logged).

    Idempotent per (run, study): volumes of this run (``source`` = ``infer-run-<id>``) are written in one
    transaction, so a rerun skips studies already done and redoes the others."""
    version = resolve_model(model_version_id)
    studies = inference_studies(study_ids=study_ids)
    ctx.progress(0.0, f"loading model {version.name}", force=True)
    model = load_model(version)
    recorded = (version.metrics or {}).get("class_priors")
    priors = None
    if recorded:
        frequencies = tuple(float(recorded[k]) for k in ("vessel", "bone", "soft_tissue"))
        priors = tempered_priors(frequencies, prior_strength, bone_prior_strength)
    if priors is not None:
        strengths = (
            f"strength {prior_strength:g}"
            if bone_prior_strength is None or bone_prior_strength == prior_strength
            else f"strength {prior_strength:g} against soft tissue, {bone_prior_strength:g} against bone"
        )
        ctx.log(
            f"prior correction ({strengths}) to the training labels' class frequencies: "
            + ", ".join(
                f"{k} {100 * v:.2f}%"
                for k, v in zip(("vessel", "bone", "soft tissue"), frequencies, strict=True)
            )
        )
    elif recorded:
        ctx.log(
            "prior correction off: the balanced-training probabilities are used as trained (plain argmax)"
        )
    if mirror and NetworkConfig.from_dict(version.network_config).is_unet:
        mirror = False
        ctx.log(
            "mirrored test-time augmentation is for the voxel classifier: this 3D U-Net predicts without it"
        )
    elif mirror:
        ctx.log("mirrored test-time augmentation: each volume is predicted as it is and mirrored left-right")
    source = f"infer-run-{ctx.run_id}"
    should_cancel = _ThrottledCancel(ctx)
    results = []
    n = len(studies)
    for i, study in enumerate(studies):
        done = {
            v.role: v.pk
            for v in Volume.objects.filter(study=study, model_version_id=version.pk, source=source)
        }
        if Volume.Role.DLA in done:
            results.append(
                {"study_id": study.pk, "pseudonym": study.pseudonym, "volumes": done, "reused": True}
            )
            continue
        peak_reset = reset_peak_rss()  # this study's peak: its volume, candidates, prediction and outputs
        fill = study.volume(Volume.Role.FILL)
        fill_hu = np.asarray(fill.array())
        candidates = intensity_candidates(fill_hu, candidate_min_hu) if candidate_min_hu is not None else None

        def progress(fraction, message, i=i, study=study):
            ctx.progress((i + fraction) / n, f"{study.pseudonym} ({i + 1}/{n}): {message}")

        try:
            prediction = predict_volume(
                model,
                fill_hu,
                candidate_mask=candidates,
                progress=progress,
                should_cancel=should_cancel,
                class_priors=priors,
                spacing_mm=tuple(fill.spacing_mm),
                mirror=mirror,
            )
        except InferenceCancelled as exc:
            raise TaskCancelled(str(exc)) from exc
        vessel_prob = np.round(prediction.vessel_prob.astype(np.float32) * 255.0).astype(np.uint8)
        outputs = (
            (Volume.Role.CLASS_MAP, prediction.class_map, "predicted class map", {}),
            (Volume.Role.VESSEL_PROB, vessel_prob, "vessel probability x255", vessel_prob_stats(vessel_prob)),
            (Volume.Role.DLA, dla_volume(fill_hu, prediction.class_map), "3D-DLA", {}),
        )
        created = {}
        with transaction.atomic():
            for role, array, label, stats in outputs:
                created[role] = Volume.create_from_array(
                    study=study,
                    role=role,
                    array=array,
                    spacing_mm=fill.spacing_mm,
                    affine_lps=fill.affine_lps,
                    source=source,
                    model_version_id=version.pk,
                    series_description=f"{label} ({version.name})"[:200],
                    created_by_id=user_id,
                    stats=stats,
                )
            created = {role: volume.pk for role, volume in created.items()}
        peak_gb = peak_rss_gb() if peak_reset else None
        ctx.log(
            f"{study.pseudonym}: {prediction.voxels_per_s:,.0f} voxels/s, {prediction.elapsed_s:.1f} s, "
            f"{prediction.network_voxels:,} voxels classified by the network"
            + (f", peak memory {peak_gb:.2f} GB" if peak_gb is not None else "")
        )
        results.append(
            {
                "study_id": study.pk,
                "pseudonym": study.pseudonym,
                "volumes": created,
                "voxels_per_s": prediction.voxels_per_s,
                "elapsed_s": prediction.elapsed_s,
                "network_voxels": prediction.network_voxels,
                "peak_rss_gb": peak_gb,
                "class_priors": list(priors) if priors else None,
            }
        )
        ctx.progress((i + 1) / n, f"{study.pseudonym} done ({i + 1}/{n})", force=True)
    return {"model_version_id": version.pk, "studies": results}


PRESET_NAMES = sorted(PRESETS)


def inference_request(
    *,
    user,
    version: ModelVersion,
    studies: list[Study],
    candidate_min_hu,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
    mirror: bool = DEFAULT_MIRROR,
    bone_prior_strength: float = DEFAULT_BONE_PRIOR_STRENGTH,
) -> dict:
    """Keyword arguments of ``infer_studies.enqueue``/``create_run`` for running ``version`` over ``studies``:
        the task's params, its message and its target (the study, or the model for several). ``prior_strength`` is
        recorded in the params (runs from before it existed used 1), and so is ``bone_prior_strength`` (the vessel : bone
    pair's; runs from before it existed used ``prior_strength``); out of [0, 1] raises InferenceError. ``mirror``
        (test-time augmentation) is recorded too (runs from before it existed used none)."""
    prior_strength = check_prior_strength(prior_strength)
    bone_prior_strength = check_prior_strength(bone_prior_strength)
    noun = "study" if len(studies) == 1 else "studies"
    params = {
        "model_version_id": version.pk,
        "study_ids": [s.pk for s in studies],
        "candidate_min_hu": candidate_min_hu,
        "user_id": user.pk if user else None,
        "prior_strength": prior_strength,
        "bone_prior_strength": bone_prior_strength,
        "mirror": bool(mirror),
    }
    return {
        "user": user,
        "target": studies[0] if len(studies) == 1 else version,
        "params": params,
        "message": f"inference of {len(studies)} {noun} with {version.name} queued",
    }
