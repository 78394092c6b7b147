"""Read and write DICOM image series as int16 HU volumes (pure pydicom/numpy, no Django).

``read_dicom_series`` turns a set of files (single-frame slices, classic or enhanced multi-frame objects)
into one :class:`SeriesVolume` per SeriesInstanceUID: the voxels as an int16 ``[z, y, x]`` array in
Hounsfield units (RescaleSlope/RescaleIntercept applied, rounded, clipped to the int16 range), the spacing
``(dz, dy, dx)`` in mm and a 4x4 ``affine_lps`` mapping a voxel index ``(i=x, j=y, k=z, 1)`` to DICOM
patient (LPS) millimetres. Slices are sorted by the projection of ImagePositionPatient on the slice normal
(row x column direction); the series is validated (decodable transfer syntax, present and complete pixel
data, one matrix size, one pixel type, one orientation, unique and uniformly spaced positions) and every
problem raises :class:`IngestError` naming the file. ``write_dicom_series`` writes such a volume back as one
CT Image Storage file per slice (explicit VR little endian, signed 16-bit, slope 1 / intercept 0),
optionally as a DERIVED series referencing its source.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    generate_uid,
)

__all__ = [
    "IngestError",
    "NotDicomError",
    "NotAnImageError",
    "DicomWriteError",
    "SeriesVolume",
    "SeriesRef",
    "read_dicom_series",
    "write_dicom_series",
    "new_uid",
    "infer_role_hint",
    "series_label",
    "object_kind",
    "slice_order",
    "SliceOrder",
    "SLICE_SPACING_REL_TOL",
]

#: Relative tolerance on the slice-to-slice distance (1 %) before a series counts as non-uniformly spaced.
SLICE_SPACING_REL_TOL = 0.01
#: Absolute tolerance (mm) used together with the relative one, for positions written with few decimals.
SLICE_SPACING_ABS_TOL_MM = 0.01
#: Tolerance on direction cosines when comparing orientations between slices.
ORIENTATION_TOL = 1e-4

_INT16_MIN, _INT16_MAX = -32768, 32767
_NATIVE_LE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_UNCOMPRESSED = {
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
}


class IngestError(ValueError):
    """A DICOM input cannot be turned into a volume; the message names the problem and the file."""


class NotDicomError(IngestError):
    """A file is not DICOM at all (a sidecar, a README); folder imports skip and list these."""


class NotAnImageError(IngestError):
    """A DICOM object that is not an image volume (RT Plan, waveform, structured report, SEG, ...)."""


class DicomWriteError(ValueError):
    """The arguments given to :func:`write_dicom_series` are inconsistent."""


@dataclass
class SeriesVolume:
    """One image series as a volume.

    ``volume_hu``: int16 ``[z, y, x]`` Hounsfield units. ``spacing_mm``: ``(dz, dy, dx)`` in mm.
    ``affine_lps``: float64 4x4, ``(i=x, j=y, k=z, 1)`` -> LPS mm. ``header`` holds a few technical tags
    (never pixel data, never identifying values).
    ``role_hint`` is "fill", "mask", "subtracted", "dla" or None. ``series_number`` is SeriesNumber (or None);
    ``sop_instance_uids`` / ``frame_numbers`` name the source instance (and 1-based frame of a multi-frame
    object, else None) of each z slice, so derived series can reference them; ``sop_class_uid`` is the
    source's SOP class.
    """

    volume_hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine_lps: np.ndarray
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str | None
    series_description: str
    modality: str
    image_type: list[str]
    patient_id: str
    patient_name: str
    study_date: str
    source_files: list[str]
    role_hint: str | None
    header: dict = field(default_factory=dict)
    series_number: int | None = None
    sop_class_uid: str = ""
    sop_instance_uids: list[str] = field(default_factory=list)
    frame_numbers: list[int | None] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How messages name this series: number and description, never its UID."""
        return series_label(self.series_number, self.series_description)


@dataclass
class SeriesRef:
    """Reference to the series a derived series was computed from (for ReferencedSeriesSequence etc.).

    ``sop_instance_uids`` are the source slices in volume order (may be empty: then only the series is
    referenced, no SourceImageSequence); ``frame_numbers`` (1-based, or None per slice) where the source
    slices are frames of multi-frame objects.
    """

    series_uid: str
    study_uid: str
    sop_instance_uids: list[str] = field(default_factory=list)
    frame_numbers: list[int | None] = field(default_factory=list)
    sop_class_uid: str = CTImageStorage
    derivation_description: str = "Derived by DLA Workbench"


def new_uid() -> str:
    """A fresh globally unique DICOM UID (pydicom's ``generate_uid``)."""
    return str(generate_uid())


def series_label(series_number, series_description: str) -> str:
    """``series 3 '3D fill'``: how every message names a series (number and description, never its UID)."""
    number = "" if series_number in (None, "") else f" {series_number}"
    description = f" {str(series_description)!r}" if series_description else " (no description)"
    return f"series{number}{description}"


def _article(phrase: str) -> str:
    word = phrase.split()[0] if phrase.split() else phrase
    if len(word) > 1 and word.isupper():  # an acronym is read letter by letter: an RT Plan, an MR ..., a CT
        return "an" if word[0] in "AEFHILMNORSX" else "a"
    return "an" if word[:1].lower() in "aeiou" else "a"


def object_kind(sop_class_uid: str) -> str | None:
    """What a DICOM object of this SOP class is, in words ("an RT Plan", "a waveform (12-lead ECG)",
    "a DICOM SEG (segmentation)"), or None for an unknown SOP class."""
    name = UID(str(sop_class_uid)).name
    if not sop_class_uid or name == str(sop_class_uid):
        return None
    base = name.removesuffix(" - Trial").removesuffix(" SOP Class").removesuffix(" Storage").strip()
    if "Segmentation" in base:
        return f"a DICOM SEG ({base.lower()})"
    if "Waveform" in base:
        detail = base.replace(" Waveform", "").strip()
        return f"a waveform ({detail})" if detail and detail != "Waveform" else "a waveform"
    if base.endswith(" SR") or " SR " in base or base.endswith("Document"):
        return f"a structured report ({base})"
    if "Presentation State" in base:
        return f"a presentation state ({base})"
    return f"{_article(base)} {base}"


def _is_image_class(sop_class_uid: str) -> bool:
    name = UID(str(sop_class_uid)).name
    return "Image" in name or name in ("RT Dose Storage", "Enhanced US Volume Storage")


# ----------------------------------------------------------------------------------------------------------
# Role hint
# ----------------------------------------------------------------------------------------------------------

_ROLE_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("dla", ("DLA", "DEEPLEARNING", "DEEP_LEARNING")),
    ("subtracted", ("SUB", "SUBTRACTED", "SUBTRACTION", "SUBTRACT", "DSA", "DIFF")),
    (
        "mask",
        ("MASK", "NATIVE", "NATIV", "PRE", "PRECONTRAST", "NONCONTRAST", "NONCON", "UNENHANCED", "PLAIN"),
    ),
    (
        "fill",
        ("FILL", "FILLED", "FILLING", "CONTRAST", "POST", "POSTCONTRAST", "ARTERIAL", "CTA", "ENHANCED"),
    ),
]


def infer_role_hint(series_description: str, image_type: Sequence[str] = ()) -> str | None:
    """Guess the acquisition role from SeriesDescription / ImageType keywords (whole words, case-insensitive).

    Returns "dla", "subtracted", "mask", "fill" (checked in that order) or None.
    """
    text = " ".join([series_description or "", *[str(v) for v in image_type]]).upper()
    text = re.sub(r"NON[\s\-_]+CONTRAST", "NONCONTRAST", text)
    text = re.sub(r"DEEP[\s\-_]+LEARNING", "DEEPLEARNING", text)
    tokens = set(re.split(r"[^A-Z0-9]+", text)) - {""}
    for role, words in _ROLE_RULES:
        if tokens.intersection(words):
            return role
    return None


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------

HEADER_KEYWORDS = (  # technical tags kept in SeriesVolume.header (never identifying)
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "Exposure",
    "ConvolutionKernel",
    "SliceThickness",
    "BodyPartExamined",
    "ContrastBolusAgent",
    "SeriesNumber",
    "SOPClassUID",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "WindowCenter",
    "WindowWidth",
    "PatientPosition",
    "AcquisitionNumber",
)


@dataclass
class _Frame:
    """One 2D image: a single-frame file or one frame of a multi-frame file."""

    path: Path
    ds: Dataset
    frame: int | None  # None: single-frame file; otherwise the 0-based frame index
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float
    rows: int
    cols: int
    pixel_type: tuple[int, int, int, int]  # BitsAllocated, BitsStored, PixelRepresentation, SamplesPerPixel


def _to_float_list(value) -> list[float] | None:
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes, int, float)):
            return [float(value)]
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _get(ds: Dataset | None, keyword: str, default=None):
    if ds is None:
        return default
    value = ds.get(keyword, default)
    return default if value is None or value == "" else value


def _first_item(ds: Dataset | None, seq_keyword: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(seq_keyword)
    if not seq:
        return None
    return seq[0]


def _functional(per_frame: Dataset | None, shared: Dataset | None, seq_keyword: str) -> Dataset | None:
    """Look up a functional group macro, per-frame first then shared."""
    return _first_item(per_frame, seq_keyword) or _first_item(shared, seq_keyword)


def _open(path: Path) -> Dataset:
    """Parse a file's header; pixel data stays on disk (deferred) until it is needed."""
    try:
        ds = pydicom.dcmread(path, defer_size="64 KB")
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, defer_size="64 KB", force=True)
        except Exception:
            raise NotDicomError(f"{path.name}: not a DICOM file")
        if "SOPClassUID" not in ds and "PixelData" not in ds:
            raise NotDicomError(f"{path.name}: not a DICOM file (no DICM prefix and no DICOM image header)")
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if ds.is_implicit_VR else ExplicitVRLittleEndian
            )
    except FileNotFoundError:
        raise IngestError(f"{path.name}: file not found")
    except IsADirectoryError:
        raise IngestError(f"{path.name}: is a directory, not a DICOM file")
    except Exception as exc:  # pydicom raises many types on damaged files
        raise IngestError(f"{path.name}: truncated or corrupt DICOM file ({type(exc).__name__}: {exc})")
    return ds


def _check_transfer_syntax(path: Path, ds: Dataset) -> None:
    tsuid = UID(str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
    if tsuid in _UNCOMPRESSED:
        return
    label = f"{tsuid.name} ({tsuid})" if tsuid.name != tsuid else f"unknown transfer syntax {tsuid}"
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(tsuid)
    except (NotImplementedError, ValueError):
        raise IngestError(f"{path.name}: {label} is not supported")
    if not decoder.is_available:
        raise IngestError(f"{path.name}: {label} cannot be decoded: no pixel data handler installed")


def _check_complete(path: Path, ds: Dataset) -> None:
    """Refuse a file that ends inside its (still deferred) pixel data, before any geometry check: a truncated
    copy of a slice must be reported as truncated, not as a duplicate position of the intact one."""
    elem = ds.get_item("PixelData")
    tell = getattr(elem, "value_tell", None)
    length = getattr(elem, "length", None)
    if tell is None or length in (None, 0xFFFFFFFF):  # value already read, or encapsulated (undefined length)
        return
    try:
        size = path.stat().st_size
    except OSError:
        return
    if tell + length > size:
        raise IngestError(
            f"{path.name}: truncated pixel data: {max(size - tell, 0)} bytes, expected {length} "
            "(the file ends early)"
        )


def _frames_of(path: Path, ds: Dataset, *, metadata_only: bool = False) -> list[_Frame]:
    """Split a parsed file into frames with their geometry and rescale (no pixel data read). With
    ``metadata_only`` (instance metadata from a PACS, no pixel data) the pixel-data checks are skipped."""
    sop_class = str(_get(ds, "SOPClassUID", "") or _get(ds.file_meta, "MediaStorageSOPClassUID", "") or "")
    kind = object_kind(sop_class) if sop_class else None
    has_pixels = any(kw in ds for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    n_declared = int(_get(ds, "NumberOfFrames", 1) or 1)
    per_frame_items = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame_items is not None and len(per_frame_items) != n_declared:  # damaged before anything else
        raise IngestError(
            f"{path.name}: PerFrameFunctionalGroupsSequence has {len(per_frame_items)} items "
            f"for NumberOfFrames {n_declared}"
        )
    if kind is not None and "SEG" in kind:
        raise NotAnImageError(
            f"{path.name}: {kind}, not an image volume (a SEG labels another series; it is not imported as "
            "a volume)"
        )
    if not has_pixels and not metadata_only:
        if kind is not None and not _is_image_class(sop_class):
            raise NotAnImageError(f"{path.name}: missing pixel data - {kind}, not an image")
        if kind is not None:
            raise IngestError(
                f"{path.name}: missing pixel data (not an image or truncated file): {kind} object that ends "
                "before its pixel data, i.e. a truncated file"
            )
        raise IngestError(f"{path.name}: missing pixel data (not an image or truncated file)")
    if "PixelData" not in ds and not metadata_only:
        raise IngestError(f"{path.name}: float pixel data is not supported")
    for kw in ("Rows", "Columns", "BitsAllocated"):
        if _get(ds, kw) is None:
            raise IngestError(f"{path.name}: missing required image attribute {kw}")
    if not metadata_only:
        _check_transfer_syntax(path, ds)
        _check_complete(path, ds)
    spp = int(_get(ds, "SamplesPerPixel", 1))
    if spp != 1:
        raise IngestError(
            f"{path.name}: colour image ({spp} samples per pixel, "
            f"{_get(ds, 'PhotometricInterpretation', '?')}) is not supported; need greyscale"
        )
    rows, cols = int(ds.Rows), int(ds.Columns)
    bits_alloc = int(ds.BitsAllocated)
    pixel_type = (
        bits_alloc,
        int(_get(ds, "BitsStored", bits_alloc)),
        int(_get(ds, "PixelRepresentation", 0)),
        spp,
    )
    n_frames = int(_get(ds, "NumberOfFrames", 1) or 1)

    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence")
    frames: list[_Frame] = []

    if per_frame_seq is not None:  # enhanced multi-frame
        if len(per_frame_seq) != n_frames:
            raise IngestError(
                f"{path.name}: PerFrameFunctionalGroupsSequence has {len(per_frame_seq)} items "
                f"for NumberOfFrames {n_frames}"
            )
        for index, per_frame in enumerate(per_frame_seq):
            pos = _functional(per_frame, shared, "PlanePositionSequence")
            ori = _functional(per_frame, shared, "PlaneOrientationSequence")
            meas = _functional(per_frame, shared, "PixelMeasuresSequence")
            trans = _functional(per_frame, shared, "PixelValueTransformationSequence")
            ipp = _to_float_list(_get(pos, "ImagePositionPatient"))
            iop = _to_float_list(_get(ori, "ImageOrientationPatient")) or _to_float_list(
                _get(ds, "ImageOrientationPatient")
            )
            ps = _to_float_list(_get(meas, "PixelSpacing")) or _to_float_list(_get(ds, "PixelSpacing"))
            slope = float(_get(trans, "RescaleSlope", _get(ds, "RescaleSlope", 1.0)))
            intercept = float(_get(trans, "RescaleIntercept", _get(ds, "RescaleIntercept", 0.0)))
            frames.append(
                _Frame(
                    path, ds, index,
                    None if ipp is None else np.array(ipp[:3], dtype=np.float64),
                    None if iop is None else np.array(iop[:6], dtype=np.float64),
                    None if ps is None else (ps[0], ps[1]),
                    slope, intercept, rows, cols, pixel_type,
                )
            )  # fmt: skip
        return frames

    ipp = _to_float_list(_get(ds, "ImagePositionPatient"))
    iop = _to_float_list(_get(ds, "ImageOrientationPatient"))
    ps = _to_float_list(_get(ds, "PixelSpacing")) or _to_float_list(_get(ds, "ImagerPixelSpacing"))
    slope = float(_get(ds, "RescaleSlope", 1.0))
    intercept = float(_get(ds, "RescaleIntercept", 0.0))
    iop_arr = None if iop is None else np.array(iop[:6], dtype=np.float64)
    ipp_arr = None if ipp is None else np.array(ipp[:3], dtype=np.float64)
    ps_t = None if ps is None else (ps[0], ps[1])
    if n_frames == 1:
        return [_Frame(path, ds, None, ipp_arr, iop_arr, ps_t, slope, intercept, rows, cols, pixel_type)]

    # classic multi-frame: positions from GridFrameOffsetVector (RT dose) or SpacingBetweenSlices
    if ipp_arr is None or iop_arr is None:
        raise IngestError(
            f"{path.name}: multi-frame image ({n_frames} frames) without ImagePositionPatient/"
            "ImageOrientationPatient or per-frame functional groups: slice positions unknown"
        )
    normal = np.cross(iop_arr[:3], iop_arr[3:])
    offsets = _to_float_list(_get(ds, "GridFrameOffsetVector"))
    if offsets is None:
        step = _get(ds, "SpacingBetweenSlices")
        if step is None:
            raise IngestError(
                f"{path.name}: multi-frame image ({n_frames} frames) without GridFrameOffsetVector or "
                "SpacingBetweenSlices: slice positions unknown"
            )
        offsets = [i * float(step) for i in range(n_frames)]
    if len(offsets) != n_frames:
        raise IngestError(
            f"{path.name}: GridFrameOffsetVector has {len(offsets)} values for {n_frames} frames"
        )
    for index, off in enumerate(offsets):
        frames.append(
            _Frame(
                path,
                ds,
                index,
                ipp_arr + off * normal,
                iop_arr,
                ps_t,
                slope,
                intercept,
                rows,
                cols,
                pixel_type,
            )
        )
    return frames


def _series_key(ds: Dataset, path: Path) -> str:
    uid = _get(ds, "SeriesInstanceUID")
    return str(uid) if uid is not None else f"no-series-uid:{path}"


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _geometry(
    frames: list[_Frame], label: str
) -> tuple[list[_Frame], np.ndarray, tuple[float, float, float]]:
    """Validate a series' frames, sort them along the slice normal, return (sorted, affine_lps, spacing)."""
    first = frames[0]
    for fr in frames[1:]:
        if (fr.rows, fr.cols) != (first.rows, first.cols):
            raise IngestError(
                f"{label}: matrix size differs: {fr.path.name} is {fr.rows}x{fr.cols} "
                f"(rows x columns) but {first.path.name} is {first.rows}x{first.cols}"
            )
        if fr.pixel_type != first.pixel_type:
            raise IngestError(
                f"{label}: inconsistent pixel type: {fr.path.name} has (BitsAllocated, "
                f"BitsStored, PixelRepresentation, SamplesPerPixel)={fr.pixel_type} but {first.path.name} "
                f"has {first.pixel_type}"
            )
    if first.pixel_spacing is None:
        if len(frames) > 1:
            raise IngestError(f"{label}: {first.path.name} has no PixelSpacing")
        dy, dx = 1.0, 1.0
    else:
        dy, dx = first.pixel_spacing
    for fr in frames[1:]:
        if fr.pixel_spacing is None or not np.allclose(fr.pixel_spacing, (dy, dx), rtol=1e-4, atol=1e-5):
            raise IngestError(
                f"{label}: PixelSpacing differs: {fr.path.name} has {fr.pixel_spacing}, "
                f"{first.path.name} has {(dy, dx)}"
            )
    if dy <= 0 or dx <= 0:
        raise IngestError(f"{label}: {first.path.name} has non-positive PixelSpacing {(dy, dx)}")

    if len(frames) == 1 and (first.iop is None or first.ipp is None):
        iop = np.array([1.0, 0, 0, 0, 1.0, 0]) if first.iop is None else first.iop
        ipp = np.zeros(3) if first.ipp is None else first.ipp
    else:
        for fr in frames:
            if fr.iop is None or fr.ipp is None:
                missing = "ImageOrientationPatient" if fr.iop is None else "ImagePositionPatient"
                where = fr.path.name + ("" if fr.frame is None else f" frame {fr.frame + 1}")
                raise IngestError(f"{label}: {where} has no {missing}; cannot order slices")
        iop = first.iop
        ipp = first.ipp
    row_dir, col_dir = _unit(iop[:3]), _unit(iop[3:6])
    if (
        abs(float(np.dot(row_dir, col_dir))) > 1e-3
        or np.linalg.norm(iop[:3]) < 0.5
        or np.linalg.norm(iop[3:]) < 0.5
    ):
        raise IngestError(f"{label}: {first.path.name} has invalid ImageOrientationPatient {list(iop)}")
    for fr in frames[1:]:
        if fr.iop is not None and not np.allclose(fr.iop, iop, atol=ORIENTATION_TOL):
            raise IngestError(
                f"{label}: inconsistent orientation: {fr.path.name} has ImageOrientationPatient "
                f"{[round(v, 6) for v in fr.iop]} but {first.path.name} has {[round(v, 6) for v in iop]}"
            )
    normal = np.cross(row_dir, col_dir)

    def describe(fr: _Frame) -> str:
        return fr.path.name + ("" if fr.frame is None else f" frame {fr.frame + 1}")

    if len(frames) == 1:
        dz = float(_get(first.ds, "SpacingBetweenSlices", 0) or 0) or float(
            _get(first.ds, "SliceThickness", 0) or 0
        )
        if dz <= 0:
            dz = 1.0
        step = normal * dz
        ordered = frames
    else:
        proj = np.array([float(np.dot(fr.ipp, normal)) for fr in frames])
        order = np.argsort(proj, kind="stable")
        ordered = [frames[i] for i in order]
        proj = proj[order]
        diffs = np.diff(proj)
        for i, d in enumerate(diffs):
            if d < SLICE_SPACING_ABS_TOL_MM:
                raise IngestError(
                    f"{label}: duplicate slice position {proj[i]:.3f} mm along the slice normal: "
                    f"{describe(ordered[i])} and {describe(ordered[i + 1])}"
                )
        expected = float(np.median(diffs))
        tol = max(SLICE_SPACING_REL_TOL * expected, SLICE_SPACING_ABS_TOL_MM)
        bad = np.nonzero(np.abs(diffs - expected) > tol)[0]
        if bad.size:
            i = int(bad[0])
            n_missing = round(diffs[i] / expected) - 1
            hint = f" ({n_missing} slice(s) missing?)" if n_missing >= 1 else ""
            raise IngestError(
                f"{label}: non-uniform slice spacing: gap of {diffs[i]:.3f} mm between "
                f"{describe(ordered[i])} at {proj[i]:.3f} mm and {describe(ordered[i + 1])} at "
                f"{proj[i + 1]:.3f} mm "
                f"along the slice normal, expected {expected:.3f} mm (tolerance {SLICE_SPACING_REL_TOL:.0%})"
                f"{hint}; {bad.size} irregular gap(s) in total"
            )
        positions = np.array([fr.ipp for fr in ordered])
        step = (positions[-1] - positions[0]) / (len(ordered) - 1)
        # slices must be stacked along the normal (no gantry tilt / shear): in-plane drift within tolerance
        drift = positions - positions[0] - np.outer(proj - proj[0], normal)
        worst = float(np.max(np.linalg.norm(drift, axis=1)))
        if worst > max(0.05 * expected, 0.05):
            raise IngestError(
                f"{label}: slices are not stacked along the slice normal (in-plane shift up to "
                f"{worst:.3f} mm; gantry tilt or sheared series is not supported)"
            )
        ipp = ordered[0].ipp
        dz = float(np.linalg.norm(step))

    affine = np.eye(4, dtype=np.float64)
    affine[:3, 0] = row_dir * dx
    affine[:3, 1] = col_dir * dy
    affine[:3, 2] = step
    affine[:3, 3] = ipp
    return ordered, affine, (float(dz), float(dy), float(dx))


def _stored_dtype(pixel_type: tuple[int, int, int, int]) -> np.dtype | None:
    bits_alloc, _, pixel_rep, _ = pixel_type
    if bits_alloc == 8:
        return np.dtype("<i1" if pixel_rep else "<u1")
    if bits_alloc == 16:
        return np.dtype("<i2" if pixel_rep else "<u2")
    if bits_alloc == 32:
        return np.dtype("<i4" if pixel_rep else "<u4")
    return None


def _decode_file(path: Path, ds: Dataset, fr: _Frame) -> np.ndarray:
    """All frames of one file as an array ``[frames, rows, cols]`` of stored values."""
    n_frames = int(_get(ds, "NumberOfFrames", 1) or 1)
    tsuid = ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)
    dtype = _stored_dtype(fr.pixel_type)
    bits_alloc, bits_stored, pixel_rep, _ = fr.pixel_type
    try:
        if tsuid in _NATIVE_LE and dtype is not None:
            raw = ds.PixelData
            expected = fr.rows * fr.cols * n_frames * dtype.itemsize
            if len(raw) < expected:
                raise IngestError(
                    f"{path.name}: truncated pixel data: {len(raw)} bytes, expected {expected} "
                    f"({n_frames} frame(s) of {fr.rows}x{fr.cols}, {bits_alloc} bits)"
                )
            arr = np.frombuffer(raw, dtype=dtype, count=fr.rows * fr.cols * n_frames)
            arr = arr.reshape(n_frames, fr.rows, fr.cols)
            if bits_stored < bits_alloc:  # mask unused high bits, sign-extend if signed
                shift = bits_alloc - bits_stored
                if pixel_rep:
                    arr = (arr << shift) >> shift
                else:
                    arr = arr & np.array((1 << bits_stored) - 1, dtype=arr.dtype)
            return arr
        arr = ds.pixel_array
    except IngestError:
        raise
    except Exception as exc:
        raise IngestError(
            f"{path.name}: pixel data cannot be decoded ({UID(str(tsuid)).name}; {type(exc).__name__}: {exc})"
        )
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.shape != (n_frames, fr.rows, fr.cols):
        raise IngestError(
            f"{path.name}: decoded pixel data has shape {arr.shape}, expected {(n_frames, fr.rows, fr.cols)}"
        )
    return arr


def _rescale_into(out: np.ndarray, stored: np.ndarray, slope: float, intercept: float) -> None:
    """out (int16 [rows, cols]) = clip(round(stored * slope + intercept))."""
    if slope == 1.0 and float(intercept).is_integer():
        tmp = stored.astype(np.int32) if stored.dtype.itemsize < 4 else stored.astype(np.int64)
        tmp += int(intercept)
    else:
        tmp = np.rint(stored.astype(np.float64) * slope + intercept)
    np.clip(tmp, _INT16_MIN, _INT16_MAX, out=tmp)
    out[...] = tmp


def _json_value(value):
    if isinstance(value, (list, tuple)) or (
        hasattr(value, "__iter__") and not isinstance(value, (str, bytes))
    ):
        return [_json_value(v) for v in value]
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, pydicom.valuerep.DSfloat):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS):
        return int(value)
    return str(value)


def _header(ds: Dataset, n_files: int, n_slices: int) -> dict:
    out: dict = {}
    for kw in HEADER_KEYWORDS:
        value = _get(ds, kw)
        if value is not None:
            try:
                out[kw] = _json_value(value)
            except Exception:
                out[kw] = str(value)
    out["TransferSyntaxUID"] = str(ds.file_meta.get("TransferSyntaxUID", ""))
    out["n_files"] = n_files
    out["n_slices"] = n_slices
    return out


def _frames_label(frames: list[_Frame]) -> str:
    ds0 = frames[0].ds
    return series_label(_get(ds0, "SeriesNumber"), str(_get(ds0, "SeriesDescription", "")))


def _build_volume(frames: list[_Frame]) -> SeriesVolume:
    ordered, affine, spacing = _geometry(frames, _frames_label(frames))
    rows, cols = ordered[0].rows, ordered[0].cols
    volume = np.empty((len(ordered), rows, cols), dtype=np.int16)
    slots: dict[Path, list[tuple[int, _Frame]]] = {}
    for z, fr in enumerate(ordered):
        slots.setdefault(fr.path, []).append((z, fr))
    for path, items in slots.items():
        stored = _decode_file(path, items[0][1].ds, items[0][1])
        for z, fr in items:
            _rescale_into(volume[z], stored[fr.frame or 0], fr.slope, fr.intercept)
        del stored
        ds = items[0][1].ds
        if "PixelData" in ds:
            del ds.PixelData  # free memory early; datasets stay referenced until return
    ds0 = ordered[0].ds
    image_type = [str(v) for v in (_get(ds0, "ImageType", []) or [])]
    if isinstance(_get(ds0, "ImageType"), str):
        image_type = [str(ds0.ImageType)]
    description = str(_get(ds0, "SeriesDescription", ""))
    source_files = list(dict.fromkeys(str(fr.path) for fr in ordered))
    return SeriesVolume(
        volume_hu=volume,
        spacing_mm=spacing,
        affine_lps=affine,
        series_uid=str(_get(ds0, "SeriesInstanceUID", "")),
        study_uid=str(_get(ds0, "StudyInstanceUID", "")),
        frame_of_reference_uid=None
        if _get(ds0, "FrameOfReferenceUID") is None
        else str(ds0.FrameOfReferenceUID),
        series_description=description,
        modality=str(_get(ds0, "Modality", "")),
        image_type=image_type,
        patient_id=str(_get(ds0, "PatientID", "")),
        patient_name=str(_get(ds0, "PatientName", "")),
        study_date=str(_get(ds0, "StudyDate", "")),
        source_files=source_files,
        role_hint=infer_role_hint(description, image_type),
        header=_header(ds0, len(source_files), len(ordered)),
        series_number=_series_number(ds0),
        sop_class_uid=str(_get(ds0, "SOPClassUID", "")),
        sop_instance_uids=[str(_get(fr.ds, "SOPInstanceUID", "")) for fr in ordered],
        frame_numbers=[None if fr.frame is None else fr.frame + 1 for fr in ordered],
    )


def _series_number(ds: Dataset) -> int | None:
    try:
        value = _get(ds, "SeriesNumber")
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def read_dicom_series(
    paths: Iterable[Path | str], *, skipped: list[tuple[str, str]] | None = None
) -> list[SeriesVolume]:
    """Read DICOM files into one :class:`SeriesVolume` per SeriesInstanceUID (in order of first appearance).

    Accepts single-frame files, classic multi-frame (GridFrameOffsetVector / SpacingBetweenSlices) and
    enhanced multi-frame files (functional groups). DICOMDIR files are skipped. Several series in ``paths``
    are returned as several volumes (not an error). Every file is parsed once; pixel data is read
    once, straight into a preallocated int16 ``[z, y, x]`` array of HU (stored * RescaleSlope +
    RescaleIntercept, rounded, clipped to [-32768, 32767]). Modality LUT sequences and VOI transforms
    are ignored.
    Raises :class:`IngestError` on the first invalid file or inconsistent series; messages name files and
    series (by number and description), never a UID. With a ``skipped`` list (folder imports), files that are
    not DICOM (:class:`NotDicomError`) and DICOM objects that are not images (:class:`NotAnImageError`: RT
    Plan, waveform, SR, SEG, ...) are appended to it as ``(file name, reason)`` instead of raising; the read
    fails only when no image remains.
    """
    series: dict[str, list[_Frame]] = {}
    seen_any = False
    local_skips: list[tuple[str, str]] = []
    for p in paths:
        path = Path(p)
        seen_any = True
        try:
            ds = _open(path)
            if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MediaStorageDirectoryStorage:
                continue
            frames = _frames_of(path, ds)
            series.setdefault(_series_key(ds, path), []).extend(frames)
        except (NotDicomError, NotAnImageError) as exc:
            if skipped is None:
                raise
            local_skips.append((path.name, str(exc)))
        except IngestError:
            raise
        except Exception as exc:  # a damaged value pydicom cannot interpret (bad VR, non-numeric DS, ...)
            raise IngestError(f"{path.name}: damaged DICOM header ({type(exc).__name__}: {exc})") from exc
    if skipped is not None:
        skipped.extend(local_skips)
    if not seen_any:
        raise IngestError("no files given")
    if not series:
        if local_skips:
            reasons = "; ".join(reason for _, reason in local_skips[:5])
            more = f" (and {len(local_skips) - 5} more)" if len(local_skips) > 5 else ""
            raise NotAnImageError(f"nothing importable: {reasons}{more}")
        raise IngestError("no DICOM image files found (only DICOMDIR)")
    volumes = []
    for frames in series.values():
        try:
            volumes.append(_build_volume(frames))
        except IngestError:
            raise
        except Exception as exc:
            first = frames[0].path.name
            raise IngestError(
                f"{_frames_label(frames)} ({first}, ...): damaged geometry or pixel tags "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    return volumes


@dataclass
class SliceOrder:
    """The instances of a series in volume (z) order, from their metadata alone: ``sop_instance_uids`` and
    1-based ``frame_numbers`` (None for single-frame instances), the ``affine_lps``, ``spacing_mm`` and shape
    ``(z, rows, columns)`` the reader would give, the ``sop_class_uid`` and ``frame_of_reference_uid``."""

    sop_instance_uids: list[str]
    frame_numbers: list[int | None]
    affine_lps: np.ndarray
    spacing_mm: tuple[float, float, float]
    shape: tuple[int, int, int]
    sop_class_uid: str
    frame_of_reference_uid: str


def slice_order(datasets: Sequence[Dataset]) -> SliceOrder:
    """Order the instances of one series (datasets without pixel data, e.g. DICOMweb metadata) exactly as
    :func:`read_dicom_series` orders their slices, with the same geometry checks (IngestError naming the series
    by number and description)."""
    if not datasets:
        raise IngestError("no instances given")
    frames: list[_Frame] = []
    for index, ds in enumerate(datasets):
        if not hasattr(ds, "file_meta"):
            ds.file_meta = FileMetaDataset()
        frames.extend(_frames_of(Path(f"instance {index + 1}"), ds, metadata_only=True))
    ordered, affine, spacing = _geometry(frames, _frames_label(frames))
    ds0 = ordered[0].ds
    return SliceOrder(
        sop_instance_uids=[str(_get(fr.ds, "SOPInstanceUID", "")) for fr in ordered],
        frame_numbers=[None if fr.frame is None else fr.frame + 1 for fr in ordered],
        affine_lps=affine,
        spacing_mm=spacing,
        shape=(len(ordered), ordered[0].rows, ordered[0].cols),
        sop_class_uid=str(_get(ds0, "SOPClassUID", "")),
        frame_of_reference_uid=str(_get(ds0, "FrameOfReferenceUID", "") or ""),
    )


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------


def _ds_str(v: float) -> str:
    """Format a float for a DS element (max 16 characters)."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    if len(s) > 16:
        s = f"{v:.9g}"
    return s


def write_dicom_series(
    volume_hu: np.ndarray,
    spacing_mm: Sequence[float],
    affine_lps: np.ndarray,
    out_dir: Path | str,
    *,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    series_description: str,
    series_number: int,
    patient_id: str,
    patient_name: str,
    study_date: str = "20260101",
    modality: str = "CT",
    derived_from: SeriesRef | None = None,
    image_type: Sequence[str] | None = None,
    window_center_width: tuple[float, float] = (200.0, 800.0),
    manufacturer: str = "DLA Workbench",
    sop_instance_uids: Sequence[str] | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    rescale_type: str = "HU",
    study_id: str = "1",
    deidentified: bool = False,
) -> list[Path]:
    """Write an int16 ``[z, y, x]`` HU volume as CT Image Storage files, one per slice, into ``out_dir``.

    ``spacing_mm`` = (dz, dy, dx) must match the column norms of ``affine_lps`` (voxel (x, y, z) -> LPS
    mm); the slice axis must be parallel to the slice normal (row x column direction; no shear). Files are
    explicit VR little endian, signed 16-bit (PixelRepresentation 1), RescaleSlope 1, RescaleIntercept 0,
    named ``slice_00000.dcm`` ... in z order; SOPInstanceUIDs are ``sop_instance_uids`` (one per slice, so the
    same volume written twice gives the same instances) or new. ``rescale_*`` label what the stored values mean
    (default HU; e.g. a probability map stored as 0..255 is slope 100/255, RescaleType PCT; class ids are
    RescaleType US); ``study_id`` is StudyID (SH, 16 characters); ``deidentified`` marks the patient module
    (PatientIdentityRemoved YES with a DeidentificationMethod). With ``derived_from``: ImageType
    DERIVED\\SECONDARY and DerivationDescription; when its source instance UIDs are given, also a per-slice
    SourceImageSequence and ReferencedSeriesSequence (or StudiesContainingOtherReferencedInstancesSequence
    for a source in another study). Returns the written paths in z order.
    """
    vol = np.asarray(volume_hu)
    if vol.ndim != 3 or vol.shape[0] < 1:
        raise DicomWriteError(f"volume must be 3D [z, y, x], got shape {vol.shape}")
    if vol.dtype != np.int16:
        if not np.issubdtype(vol.dtype, np.integer):
            raise DicomWriteError(f"volume must be an int16 HU array, got {vol.dtype}")
        if vol.size and (vol.min() < _INT16_MIN or vol.max() > _INT16_MAX):
            raise DicomWriteError("volume values exceed the int16 range")
        vol = vol.astype(np.int16)
    affine = np.asarray(affine_lps, dtype=np.float64)
    if affine.shape != (4, 4):
        raise DicomWriteError(f"affine_lps must be 4x4, got {affine.shape}")
    dz, dy, dx = (float(v) for v in spacing_mm)
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.allclose(norms, (dx, dy, dz), rtol=1e-4, atol=1e-6):
        raise DicomWriteError(
            f"spacing_mm (dz, dy, dx)={(dz, dy, dx)} does not match the affine column norms "
            f"(x, y, z)={tuple(norms)}"
        )
    row_dir, col_dir, slice_dir = (affine[:3, i] / norms[i] for i in range(3))
    normal = np.cross(row_dir, col_dir)
    if abs(float(np.dot(row_dir, col_dir))) > 1e-4 or float(np.dot(normal, slice_dir)) < 1 - 1e-4:
        raise DicomWriteError(
            "affine_lps must have orthogonal row/column axes and a slice axis along +(row x column) "
            "(no shear, right-handed)"
        )
    if len(study_date) != 8 or not study_date.isdigit():
        raise DicomWriteError(f"study_date must be YYYYMMDD, got {study_date!r}")
    if sop_instance_uids is not None and len(sop_instance_uids) != vol.shape[0]:
        raise DicomWriteError(
            f"{len(sop_instance_uids)} SOP instance UIDs given for a volume of {vol.shape[0]} slices"
        )
    if rescale_slope == 0 or not np.isfinite(rescale_slope) or not np.isfinite(rescale_intercept):
        raise DicomWriteError(f"rescale slope/intercept must be finite, slope non-zero: {rescale_slope}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now()
    if image_type is None:
        itype = ["DERIVED", "SECONDARY", "AXIAL"] if derived_from else ["ORIGINAL", "PRIMARY", "AXIAL"]
    else:
        itype = [str(v).upper() for v in image_type]
        if derived_from:
            itype = ["DERIVED", "SECONDARY", *itype[2:]] if len(itype) >= 2 else ["DERIVED", "SECONDARY"]
    if len(itype) < 3 and modality == "CT":
        itype = [*itype, "AXIAL"][:3] if len(itype) == 2 else itype

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DLA_WB_1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = itype
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = "000000"
    ds.SeriesTime = "000000"
    ds.ContentTime = "000000"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = ""
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = "DLA Workbench"
    ds.SoftwareVersions = "1"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.KVP = ""
    ds.SliceThickness = _ds_str(dz)
    ds.SpacingBetweenSlices = _ds_str(dz)
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "HEAD"  # unpaired body part: Laterality (type 2C) not required
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = str(study_id)[:16]
    ds.SeriesNumber = int(series_number)
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [_ds_str(v) for v in (*row_dir, *col_dir)]
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(vol.shape[1]), int(vol.shape[2])
    ds.PixelSpacing = [_ds_str(dy), _ds_str(dx)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = _ds_str(window_center_width[0])
    ds.WindowWidth = _ds_str(window_center_width[1])
    ds.RescaleIntercept = _ds_str(rescale_intercept)
    ds.RescaleSlope = _ds_str(rescale_slope)
    ds.RescaleType = rescale_type
    ds.BurnedInAnnotation = "NO"
    if deidentified:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = ["DLA Workbench pseudonymized export"]
    if derived_from is not None:
        ds.DerivationDescription = derived_from.derivation_description[:1024]
    src_uids = list(derived_from.sop_instance_uids) if derived_from is not None else []
    src_frames = list(derived_from.frame_numbers) if derived_from is not None else []

    n = vol.shape[0]
    paths: list[Path] = []
    for k in range(n):
        sop_uid = str(sop_instance_uids[k]) if sop_instance_uids is not None else generate_uid()
        meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        pos = affine @ np.array([0.0, 0.0, float(k), 1.0])
        ds.ImagePositionPatient = [_ds_str(v) for v in pos[:3]]
        ds.SliceLocation = _ds_str(float(np.dot(pos[:3], normal)))
        if src_uids:
            j = 0 if n == 1 or len(src_uids) == 1 else round(k * (len(src_uids) - 1) / (n - 1))
            src = Dataset()
            src.ReferencedSOPClassUID = derived_from.sop_class_uid
            src.ReferencedSOPInstanceUID = src_uids[j]
            if j < len(src_frames) and src_frames[j] is not None:
                src.ReferencedFrameNumber = int(src_frames[j])
            purpose = Dataset()
            purpose.CodeValue = "121322"
            purpose.CodingSchemeDesignator = "DCM"
            purpose.CodeMeaning = "Source image for image processing operation"
            src.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
            ds.SourceImageSequence = DicomSequence([src])
            # Common Instance Reference module: series (and other study) of each referenced instance
            inst = Dataset()
            inst.ReferencedSOPClassUID = derived_from.sop_class_uid
            inst.ReferencedSOPInstanceUID = src_uids[j]
            ref_series = Dataset()
            ref_series.SeriesInstanceUID = derived_from.series_uid
            ref_series.ReferencedInstanceSequence = DicomSequence([inst])
            if derived_from.study_uid == study_uid:
                ds.ReferencedSeriesSequence = DicomSequence([ref_series])
            else:
                other = Dataset()
                other.StudyInstanceUID = derived_from.study_uid
                other.ReferencedSeriesSequence = DicomSequence([ref_series])
                ds.StudiesContainingOtherReferencedInstancesSequence = DicomSequence([other])
        ds.PixelData = np.ascontiguousarray(vol[k]).astype("<i2", copy=False).tobytes()
        path = out / f"slice_{k:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
