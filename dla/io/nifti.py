"""Read and write NIfTI volumes (nibabel) in the project's ``[z, y, x]`` / LPS convention.

NIfTI stores voxels as ``(i, j, k)`` = (x, y, z) with an affine to RAS millimetres; this module
transposes to ``[z, y, x]`` and converts RAS <-> LPS by negating the first two rows of the affine
(``diag(-1, -1, 1, 1)``).
:func:`read_nifti` returns a :class:`~dla.io.dicom.SeriesVolume` whose DICOM fields are empty and
whose ``series_uid`` is a ``2.25.`` UID derived from the SHA-256 of the file bytes (same file -> same UID).
Float data (or scaled integers) are rounded to the nearest integer and clipped to the int16 range; 4D images
are refused. :func:`write_nifti` writes an int16 HU volume or a uint8 label map with the RAS affine in both
qform and sform (code 1, scanner) and millimetre units.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np

from dla.io.dicom import IngestError, SeriesVolume, infer_role_hint

__all__ = ["read_nifti", "write_nifti", "LPS_FROM_RAS", "NiftiWriteError"]

#: Multiplying an affine by this on the left converts RAS <-> LPS (it is its own inverse).
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}


class NiftiWriteError(ValueError):
    """Arguments given to :func:`write_nifti` are invalid (shape, dtype, spacing/affine mismatch)."""


def _uid_from_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "2.25." + str(int.from_bytes(h.digest()[:16], "big"))


def read_nifti(path: Path | str, *, as_labels: bool = False) -> SeriesVolume:
    """Read a 3D NIfTI-1/2 file (``.nii`` or ``.nii.gz``).

    Returns a SeriesVolume with ``volume_hu`` int16 ``[z, y, x]`` (rounded and clipped to [-32768, 32767]
    when the stored data are float or scaled), or, with ``as_labels=True``, uint8 class ids (values must be
    integers in 0..255). ``affine_lps`` maps (x, y, z, 1) -> LPS mm; ``spacing_mm`` = (dz, dy, dx) are the
    affine's column norms. A trailing singleton 4th axis is dropped; real 4D data raise IngestError.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise IngestError(f"{path}: file not found")
    except Exception as exc:
        raise IngestError(f"{path.name}: not a readable NIfTI file ({type(exc).__name__}: {exc})")
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise IngestError(f"{path.name}: not a NIfTI image ({type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise IngestError(
            f"{path.name}: {len(img.shape)}D NIfTI of shape {tuple(img.shape)} is not supported; "
            "need a 3D volume"
        )
    try:
        data = np.asanyarray(img.dataobj).reshape(shape)
    except Exception as exc:
        raise IngestError(f"{path.name}: truncated or unreadable NIfTI data ({type(exc).__name__}: {exc})")
    if data.dtype.kind == "c" or data.dtype.fields is not None:
        raise IngestError(f"{path.name}: NIfTI data type {data.dtype} is not supported")

    zyx = data.transpose(2, 1, 0)
    if as_labels:
        if data.dtype.kind == "f" and not np.all(np.isfinite(zyx)):
            raise IngestError(f"{path.name}: label map contains NaN or infinite values")
        if zyx.size and (zyx.min() < 0 or zyx.max() > 255 or (data.dtype.kind == "f" and np.any(zyx % 1))):
            raise IngestError(f"{path.name}: label map values must be integers in 0..255")
        volume = np.ascontiguousarray(zyx, dtype=np.uint8)
    elif data.dtype.kind == "f":
        volume = np.empty(zyx.shape, dtype=np.int16)
        tmp = np.nan_to_num(np.rint(zyx), nan=0.0, posinf=32767, neginf=-32768)
        np.clip(tmp, -32768, 32767, out=tmp)
        volume[...] = tmp
    elif data.dtype == np.int16:
        volume = np.ascontiguousarray(zyx)
    else:
        volume = np.ascontiguousarray(np.clip(zyx, -32768, 32767).astype(np.int16))

    space_unit = img.header.get_xyzt_units()[0]
    scale = _UNIT_TO_MM.get(space_unit, 1.0)
    affine_ras = np.array(img.affine, dtype=np.float64)
    affine_ras[:3, :] *= scale
    affine_lps = LPS_FROM_RAS @ affine_ras
    norms = np.linalg.norm(affine_lps[:3, :3], axis=0)
    spacing = (float(norms[2]), float(norms[1]), float(norms[0]))
    header = {
        "format": "NIfTI-2" if isinstance(img, nib.Nifti2Image) else "NIfTI-1",
        "datatype": str(img.get_data_dtype()),
        "qform_code": int(img.header["qform_code"]),
        "sform_code": int(img.header["sform_code"]),
        "space_unit": space_unit,
        "shape_xyz": list(shape),
    }
    return SeriesVolume(
        volume_hu=volume,
        spacing_mm=spacing,
        affine_lps=affine_lps,
        series_uid=_uid_from_file(path),
        study_uid="",
        frame_of_reference_uid=None,
        series_description=path.name,
        modality="",
        image_type=[],
        patient_id="",
        patient_name="",
        study_date="",
        source_files=[str(path)],
        role_hint=infer_role_hint(path.name.replace(".", " ")),
        header=header,
    )


def write_nifti(
    volume: np.ndarray, spacing_mm: tuple[float, float, float], affine_lps: np.ndarray, path: Path | str
) -> Path:
    """Write an int16 HU volume or uint8 label map ``[z, y, x]`` to NIfTI-1 (``.nii`` or ``.nii.gz``).

    ``affine_lps`` (x, y, z, 1) -> LPS mm must have column norms equal to ``spacing_mm`` = (dz, dy, dx); the
    file gets the RAS affine (first two rows negated) as qform and sform (code 1) and mm units.
    Bool arrays are written as uint8. Returns the path written.
    """
    path = Path(path)
    vol = np.asarray(volume)
    if vol.dtype == np.bool_:
        vol = vol.astype(np.uint8)
    if vol.ndim != 3:
        raise NiftiWriteError(f"volume must be 3D [z, y, x], got shape {vol.shape}")
    if vol.dtype not in (np.int16, np.uint8):
        raise NiftiWriteError(f"volume must be int16 (HU) or uint8 (labels), got {vol.dtype}")
    affine = np.asarray(affine_lps, dtype=np.float64)
    if affine.shape != (4, 4):
        raise NiftiWriteError(f"affine_lps must be 4x4, got {affine.shape}")
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    dz, dy, dx = (float(v) for v in spacing_mm)
    if not np.allclose(norms, (dx, dy, dz), rtol=1e-4, atol=1e-6):
        raise NiftiWriteError(
            f"spacing_mm (dz, dy, dx)={(dz, dy, dx)} does not match the affine column norms "
            f"(x, y, z)={tuple(norms)}"
        )
    affine_ras = LPS_FROM_RAS @ affine
    img = nib.Nifti1Image(vol.transpose(2, 1, 0), affine_ras)
    img.set_qform(affine_ras, code=1)
    img.set_sform(affine_ras, code=1)
    img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(vol.dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path
