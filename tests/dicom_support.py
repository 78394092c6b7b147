"""The one way tests write a small DICOM series: ``write_series(out_dir, volume, **fields)`` puts an int16
``[z, y, x]`` HU volume through the project's writer (``dla.io.dicom.write_dicom_series``) with fresh UIDs and a
made-up patient unless told otherwise. The ``dicom_series`` fixture of tests/conftest.py writes into the test's
``tmp_path``; module-scoped fixtures and support classes call ``write_series`` directly."""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from dla.io.dicom import new_uid, write_dicom_series

SPACING_MM = (2.5, 0.7, 0.45)  # (dz, dy, dx): anisotropic, so that axis mix-ups show
ORIGIN_LPS = (-40.0, 25.5, -13.25)  # mm, not at zero, so that a lost origin shows


class WrittenSeries(NamedTuple):
    volume: np.ndarray  # the int16 [z, y, x] HU volume written
    affine_lps: np.ndarray  # 4x4, voxel (x, y, z, 1) -> LPS mm
    paths: list[Path]  # one file per slice, in z order


def random_volume(shape=(6, 12, 10), seed: int = 0, low_hu: int = -1024, high_hu: int = 3072) -> np.ndarray:
    """Uniform random int16 HU in [low_hu, high_hu), ``shape`` = (z, y, x)."""
    return np.random.default_rng(seed).integers(low_hu, high_hu, shape).astype(np.int16)


def axis_affine(spacing_mm, origin_lps=ORIGIN_LPS) -> np.ndarray:
    """Axis-aligned 4x4 affine: voxel (x, y, z) -> LPS mm with ``spacing_mm`` = (dz, dy, dx) and that origin."""
    dz, dy, dx = spacing_mm
    affine = np.diag([dx, dy, dz, 1.0])
    affine[:3, 3] = origin_lps
    return affine


def write_series(
    out_dir: Path | str,
    volume: np.ndarray | None = None,
    *,
    spacing_mm=SPACING_MM,
    affine_lps: np.ndarray | None = None,
    origin_lps=ORIGIN_LPS,
    **fields,
) -> WrittenSeries:
    """Write ``volume`` (default: ``random_volume()``) as one CT series into ``out_dir``.

    ``affine_lps`` defaults to ``axis_affine(spacing_mm, origin_lps)``. ``fields`` go to ``write_dicom_series``
    and override the defaults: new study/series/frame-of-reference UIDs, series_description "fill run",
    series_number 3, patient_id "PID-7", patient_name "Doe^Jane"."""
    volume = random_volume() if volume is None else volume
    affine = axis_affine(spacing_mm, origin_lps) if affine_lps is None else np.asarray(affine_lps, float)
    args = dict(
        study_uid=new_uid(),
        series_uid=new_uid(),
        frame_of_reference_uid=new_uid(),
        series_description="fill run",
        series_number=3,
        patient_id="PID-7",
        patient_name="Doe^Jane",
    )
    args.update(fields)
    paths = write_dicom_series(volume, spacing_mm, affine, out_dir, **args)
    return WrittenSeries(volume, affine, paths)
