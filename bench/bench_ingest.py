"""Benchmark DICOM export/ingest and NIfTI write/read of a 400-slice 512x512 synthetic int16 series.

Writes the series with ``write_dicom_series`` (export time), reads it back in shuffled file order with
``read_dicom_series`` (ingest time; target < 10 s on 2 cores), then ``write_nifti`` / ``read_nifti``
(.nii.gz). Prints a table and saves bench/results/ingest.json. Usage: ``.venv/bin/python bench/bench_ingest.py
[--slices N] [--size N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dla.io.dicom import new_uid, read_dicom_series, write_dicom_series  # noqa: E402
from dla.io.nifti import read_nifti, write_nifti  # noqa: E402


def _phantom(n_slices: int, size: int) -> np.ndarray:
    """int16 [z, y, x] HU phantom: air, a water cylinder, a bone ring and bright 'vessels', plus noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2)
    sl = np.full((size, size), -1000, np.int16)
    sl[r < 0.85] = 1500
    sl[r < 0.78] = 40
    vol = np.repeat(sl[None], n_slices, axis=0)
    for _ in range(20):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        vol[:, cy - 2 : cy + 3, cx - 2 : cx + 3] = 400
    vol += rng.integers(-20, 21, vol.shape, dtype=np.int16)
    return vol


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=400)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "ingest.json"))
    args = ap.parse_args()

    vol = _phantom(args.slices, args.size)
    spacing = (0.5, 0.45, 0.45)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    affine[:3, 3] = (-115.0, -115.0, -100.0)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = write_dicom_series(
            vol, spacing, affine, tmp / "dcm",
            study_uid=new_uid(), series_uid=new_uid(), frame_of_reference_uid=new_uid(),
            series_description="bench fill", series_number=1,
            patient_id="BENCH", patient_name="Bench^Phantom",
        )  # fmt: skip
        results["dicom_export_s"] = time.perf_counter() - t0
        results["dicom_bytes"] = sum(p.stat().st_size for p in paths)
        random.Random(0).shuffle(paths)
        # drop the page cache is not possible without root; files were just written, so reads are warm
        t0 = time.perf_counter()
        [sv] = read_dicom_series(paths)
        results["dicom_ingest_s"] = time.perf_counter() - t0
        assert np.array_equal(sv.volume_hu, vol) and np.allclose(sv.affine_lps, affine, atol=1e-5)

        t0 = time.perf_counter()
        nii = write_nifti(sv.volume_hu, sv.spacing_mm, sv.affine_lps, tmp / "vol.nii.gz")
        results["nifti_gz_write_s"] = time.perf_counter() - t0
        results["nifti_gz_bytes"] = nii.stat().st_size
        t0 = time.perf_counter()
        nv = read_nifti(nii)
        results["nifti_gz_read_s"] = time.perf_counter() - t0
        assert np.array_equal(nv.volume_hu, vol)

        t0 = time.perf_counter()
        nii = write_nifti(sv.volume_hu, sv.spacing_mm, sv.affine_lps, tmp / "vol.nii")
        results["nifti_write_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        read_nifti(nii)
        results["nifti_read_s"] = time.perf_counter() - t0

    results.update(
        shape_zyx=list(vol.shape),
        n_files=len(paths),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        machine=platform.machine(),
        ingest_target_s=10.0,
        ingest_target_met=results["dicom_ingest_s"] < 10.0,
    )
    print(f"{'step':<22}{'seconds':>10}")
    for key in (
        "dicom_export_s",
        "dicom_ingest_s",
        "nifti_gz_write_s",
        "nifti_gz_read_s",
        "nifti_write_s",
        "nifti_read_s",
    ):
        print(f"{key:<22}{results[key]:>10.2f}")
    mb_dcm, mb_nii = results["dicom_bytes"] / 1e6, results["nifti_gz_bytes"] / 1e6
    print(f"shape {vol.shape}, {mb_dcm:.0f} MB DICOM, {mb_nii:.0f} MB nii.gz")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
