"""Data-parallel training in several processes (DDP), launched from the training task with torchrun.

``train_distributed`` writes the training volumes and a job description to a scratch folder and runs
``python -m torch.distributed.run --standalone --nproc-per-node N -m dla.model.ddp <folder>``: torchrun starts
``N`` ranks (1 or more), each memory-maps the volumes, builds the network of the job's config (a DLANet, or a UNet3D
for ``architecture="unet3d"``: ``dla.model.network.build_model``) and runs ``dla.model.train.train`` in
DistributedDataParallel inside one ``torch.distributed`` process group (NCCL with one GPU per rank when CUDA is
present, gloo on the CPU otherwise, the cores split between the ranks); ``train`` trains each architecture its own
way (slabs or patches for the voxel net; 3-D patches and sliding-window validation for the U-Net). torchrun tears
all ranks down when one fails. Rank 0 appends its per-iteration progress as JSON lines to a file that the caller
tails into ``on_progress`` (curves and the TaskRun, in the caller's process); the caller's ``should_cancel``
becomes a flag file every rank checks (the trainer all-reduces it, so all ranks stop at the same iteration after
rank 0 wrote the checkpoint; a cancelled rank then waits at a barrier and exits cleanly, so torchrun never tears
rank 0 down while it is still writing that checkpoint). A rank's TrainingCancelled, TrainingDivergedError,
TrainingDataError or IncompatibleWeightsError is raised again in the caller as the same type with the rank's
message, any other failure as ``DistributedTrainingError``. Returns rank 0's ``TrainResult`` and final model.
A subprocess rather than ``multiprocessing``: Celery's pool processes are daemonic and may not have children.
Pure torch, no Django.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dla.model.base import IncompatibleWeightsError, NetworkConfig
from dla.model.network import build_model, load_weights, save_weights
from dla.model.train import (
    TrainConfig,
    TrainingCancelled,
    TrainingData,
    TrainingDataError,
    TrainingDivergedError,
    TrainResult,
    train,
)

POLL_S = 0.2
REPO = Path(__file__).resolve().parents[1]
_RAISED_AGAIN = {
    cls.__name__: cls
    for cls in (TrainingCancelled, TrainingDivergedError, TrainingDataError, IncompatibleWeightsError)
}


class DistributedTrainingError(RuntimeError):
    """A training process failed (or died) for a reason other than the trainer's own errors."""


def backend_and_devices(world_size: int) -> tuple[str, list[str]]:
    """("nccl", ["cuda:0", ...]) when CUDA has at least ``world_size`` GPUs, ("gloo", ["cpu", ...]) without CUDA."""
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        if n < world_size:
            raise DistributedTrainingError(f"{world_size} training processes configured but {n} GPUs visible")
        return "nccl", [f"cuda:{rank}" for rank in range(world_size)]
    return "gloo", ["cpu"] * world_size


def _save_pairs(folder: Path, prefix: str, pairs) -> int:
    for i, (fill_hu, labels) in enumerate(pairs):
        np.save(folder / f"{prefix}{i}-fill.npy", np.asarray(fill_hu))
        np.save(folder / f"{prefix}{i}-labels.npy", np.asarray(labels))
    return len(pairs)


def _load_pairs(folder: Path, prefix: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (
            np.load(folder / f"{prefix}{i}-fill.npy", mmap_mode="r"),
            np.load(folder / f"{prefix}{i}-labels.npy", mmap_mode="r"),
        )
        for i in range(n)
    ]


def _run_rank(folder: Path) -> None:
    """One rank under torchrun (RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous come from its environment)."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    job = json.loads((folder / "job.json").read_text())
    try:
        backend, devices = backend_and_devices(world_size)
        device = torch.device(devices[int(os.environ.get("LOCAL_RANK", rank))])
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        dist.init_process_group(backend)
        config = TrainConfig.from_dict(job["train_config"])
        torch.manual_seed(config.seed)
        model = build_model(NetworkConfig.from_dict(job["model_config"]))
        train_data = TrainingData(_load_pairs(folder, "train", job["n_train"]), name=job["train_name"])
        val_data = TrainingData(_load_pairs(folder, "val", job["n_val"]), name=job["val_name"])
        progress = open(folder / "progress.jsonl", "a") if rank == 0 else None

        def report(iteration: int, metrics: dict) -> None:
            progress.write(json.dumps([iteration, metrics]) + "\n")
            progress.flush()

        cancel_flag = folder / "cancel"
        result = train(
            model,
            train_data,
            val_data,
            config,
            device=device,
            on_progress=report if rank == 0 else None,
            should_cancel=cancel_flag.exists,
            checkpoint_path=job["checkpoint_path"],
            checkpoint_every=job["checkpoint_every"],
        )
        if rank == 0:
            save_weights(model, folder / "final-weights.pt")
            (folder / "result.json").write_text(json.dumps(asdict(result)))
        dist.barrier()  # no rank tears its gloo connections down while another still uses them
    except TrainingCancelled as exc:
        # every rank stopped at the same iteration (the trainer all-reduces the flag); rank 0 is writing the
        # checkpoint. A clean exit after the barrier: a failing rank would make torchrun kill rank 0 mid-write
        (folder / f"error-{rank}.json").write_text(json.dumps([type(exc).__name__, str(exc)]))
        dist.barrier()
    except BaseException as exc:
        (folder / f"error-{rank}.json").write_text(json.dumps([type(exc).__name__, str(exc)]))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train_distributed(
    world_size: int,
    *,
    model_config: dict,
    train_config: dict,
    train_pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    val_pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    train_name: str = "training",
    val_name: str = "validation",
    on_progress: Callable[[int, dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    scratch_dir: str | os.PathLike | None = None,
) -> tuple[TrainResult, nn.Module]:
    """Train the network of ``model_config`` (a NetworkConfig dict: voxel classifier or 3D U-Net) on ``world_size``
    (>= 1) processes; see the module docstring.

    train_pairs / val_pairs: (fill_hu int16 [z, y, x], labels uint8 [z, y, x]) volumes. Returns rank 0's
    TrainResult and its final model (CPU, eval mode; a DLANet or a UNet3D). A checkpoint at ``checkpoint_path`` is
    resumed as in ``train``.
    """
    if world_size < 1:
        raise ValueError(f"train_distributed needs at least 1 process, got {world_size}")
    backend_and_devices(world_size)  # fail before launching when GPUs are missing
    with tempfile.TemporaryDirectory(prefix="dla-ddp-", dir=scratch_dir) as folder:
        folder = Path(folder)
        job = {
            "model_config": model_config,
            "train_config": train_config,
            "n_train": _save_pairs(folder, "train", train_pairs),
            "n_val": _save_pairs(folder, "val", val_pairs),
            "train_name": train_name,
            "val_name": val_name,
            "checkpoint_path": str(checkpoint_path) if checkpoint_path else None,
            "checkpoint_every": checkpoint_every,
        }
        (folder / "job.json").write_text(json.dumps(job))
        (folder / "progress.jsonl").touch()
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={world_size}",
        ]
        log = open(folder / "torchrun.log", "wb")
        launcher = subprocess.Popen(
            [*argv, "-m", "dla.model.ddp", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // world_size)),
            },
        )
        try:
            with open(folder / "progress.jsonl", "rb") as progress:
                pending = [b""]  # the tail of a line rank 0 is still writing

                def drain() -> None:
                    *lines, pending[0] = (pending[0] + progress.read()).split(b"\n")
                    for line in lines:
                        if line and on_progress is not None:
                            on_progress(*json.loads(line))

                while launcher.poll() is None:
                    drain()
                    if should_cancel is not None and should_cancel():
                        (folder / "cancel").touch()
                    time.sleep(POLL_S)
                drain()
        finally:
            if launcher.poll() is None:
                launcher.terminate()
                launcher.wait()
            log.close()
        errors = sorted(folder.glob("error-*.json"))
        if errors:
            kind, message = json.loads(errors[0].read_text())
            rank = errors[0].stem.split("-")[1]
            if kind in _RAISED_AGAIN:
                raise _RAISED_AGAIN[kind](message)
            raise DistributedTrainingError(f"training process {rank} failed: {kind}: {message}")
        if launcher.returncode != 0 or not (folder / "result.json").exists():
            tail = (folder / "torchrun.log").read_text(errors="replace")[-2000:]
            raise DistributedTrainingError(f"torchrun exited with code {launcher.returncode}: {tail}")
        result = TrainResult(**json.loads((folder / "result.json").read_text()))
        return result, load_weights(folder / "final-weights.pt", NetworkConfig.from_dict(model_config))


if __name__ == "__main__":
    _run_rank(Path(sys.argv[1]))
