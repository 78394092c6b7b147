"""bench/gpu_check.sh stays true: its --dry mode (the GPU check's code path on the CPU, tiny sizes) runs to the end
and writes the JSON the GPU run will send back; without CUDA and without --dry it refuses at once. Subprocesses
(the dry run launches torchrun once), no Django, no database."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"
TIMEOUT_S = 600  # the dry run takes under a minute on 2 idle cores; generous for a loaded machine

TRAIN_KEYS = {"architecture", "iterations", "train_s", "voxels_per_s", "loss_first", "loss_last", "val_error"}
INFER_KEYS = {"shape_zyx", "spacing_mm", "network_voxels", "voxels_per_s"}
DDP_KEYS = {"architecture", "backend", "ranks", "iterations", "train_s", "voxels_per_s", "val_error"}


def run_script(*args, env=None):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
    )


def test_dry_run_writes_every_step_with_positive_numbers(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = run_script("--dry", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["dry"] is True and report["device"] == "cpu" and report["gpus"] == 0
    assert report["all_ok"] is True and report["total_s"] > 0
    steps = {s["name"]: s for s in report["steps"]}
    assert set(steps) == {
        "train_voxel",
        "train_unet3d",
        "infer_voxel_head",
        "infer_unet3d_head",
        "ddp_unet3d",
    }
    for name, keys in (
        ("train_voxel", TRAIN_KEYS),
        ("train_unet3d", TRAIN_KEYS),
        ("infer_voxel_head", INFER_KEYS),
        ("infer_unet3d_head", INFER_KEYS),
        ("ddp_unet3d", DDP_KEYS),
    ):
        step = steps[name]
        assert step["ok"] is True, step
        assert keys <= set(step), (name, keys - set(step))
        assert step["seconds"] > 0 and step["voxels_per_s"] > 0, step
        assert step["peak_gpu_mem_gb"] is None, "no GPU memory on the CPU"
    assert (
        steps["train_voxel"]["architecture"] == "voxel" and steps["train_unet3d"]["architecture"] == "unet3d"
    )
    for name in ("train_voxel", "train_unet3d", "ddp_unet3d"):
        assert steps[name]["iterations"] >= 2 and 0 <= steps[name]["val_error"] <= 1
    assert steps["train_voxel"]["amp"] is False and steps["train_unet3d"]["amp"] is False
    assert steps["ddp_unet3d"]["backend"] == "gloo" and steps["ddp_unet3d"]["returned"] == "UNet3D"
    for name in ("infer_voxel_head", "infer_unet3d_head"):
        assert steps[name]["network_voxels"] > 0 and len(steps[name]["shape_zyx"]) == 3
    # the printed table names the device and every step
    assert "dry run" in proc.stdout and all(name in proc.stdout for name in steps)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the full check would run")
def test_without_cuda_the_full_check_refuses_in_plain_words(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = run_script("--out", str(out))
    assert proc.returncode == 2 and "no CUDA device: run with --dry for the CPU check" in proc.stderr
    assert not out.exists()
    # the Python part refuses the same way where the shell's quick look finds a driver but torch no device
    py = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert (
        py.returncode == 2 and "no CUDA device: run with --dry" in py.stderr and "Traceback" not in py.stderr
    )
    assert not out.exists()
