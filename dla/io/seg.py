"""DICOM objects for label and probability maps, built with highdicom over the CT series they were computed on:
a binary SEG of a label map (one segment per tissue class present: vessel, bone, soft tissue; SNOMED CT codes)
and a Parametric Map of a vessel probability map (uint8 = round(255 P) with a real world value mapping to a
probability in [0, 1]). Neither is ever labelled HU. Pure: pydicom datasets and numpy in, a pydicom Dataset out;
the caller writes files. UIDs can be given, so the same map exported twice is the same DICOM object."""

import copy
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from dla.classes import BONE, CLASS_NAMES, LABELED_CLASSES, SOFT_TISSUE, VESSEL
from dla.io.dicom import new_uid

SEGMENT_TYPES = {VESSEL: codes.SCT.BloodVessel, BONE: codes.SCT.Bone, SOFT_TISSUE: codes.SCT.SoftTissue}
DERIVED_PIXEL_CONTRAST = "NONE"  # dciodvfy does not know QUANTITY yet
_MANUFACTURER = {
    "manufacturer": "DLA Workbench",
    "manufacturer_model_name": "DLA Workbench",
    "software_versions": "0.1",
    "device_serial_number": "0",
}


def _check_grid(array: np.ndarray, source_slices: Sequence[pydicom.Dataset], what: str) -> None:
    if array.ndim != 3 or array.shape[0] != len(source_slices):
        raise ValueError(f"{what} {array.shape} does not match a series of {len(source_slices)} slices")
    if (array.shape[1], array.shape[2]) != (int(source_slices[0].Rows), int(source_slices[0].Columns)):
        raise ValueError(f"{what} slices {array.shape[1:]} do not match the images' rows/columns")


def label_seg(
    labels: np.ndarray,
    source_slices: Sequence[pydicom.Dataset],
    *,
    series_description: str,
    content_label: str = "DLALABELS",
    algorithm_name: str = "DLA Workbench",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 300,
) -> pydicom.Dataset:
    """A binary DICOM SEG of ``labels`` (uint8 [z, y, x], class ids) over ``source_slices`` (the CT series'
    datasets in z order, one per label slice). Classes without voxels are left out; raises ValueError when the
    map is empty or does not match the series. ``series_instance_uid`` / ``sop_instance_uid`` default to new
    UIDs."""
    _check_grid(labels, source_slices, "label map")
    present = [c for c in LABELED_CLASSES if np.any(labels == c)]
    if not present:
        raise ValueError("the label map has no labeled voxels; there is nothing to export")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version="1", family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=index + 1,
            segment_label=CLASS_NAMES[class_id],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=SEGMENT_TYPES[class_id],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
        )
        for index, class_id in enumerate(present)
    ]
    pixel_array = np.stack([labels == class_id for class_id in present], axis=-1).astype(np.uint8)
    return hd.seg.Segmentation(
        source_images=list(source_slices),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or new_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or new_uid(),
        instance_number=1,
        series_description=series_description[:64],
        content_label=content_label,
        omit_empty_frames=True,
        **_MANUFACTURER,
    )


def probability_map(
    probability_u8: np.ndarray,
    source_slices: Sequence[pydicom.Dataset],
    *,
    series_description: str,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 310,
) -> pydicom.Dataset:
    """A DICOM Parametric Map of ``probability_u8`` (uint8 [z, y, x], round(255 P)) over ``source_slices``;
    the real world value mapping (slope 1/255) turns stored values into the probability P in [0, 1] (unit
    "1", dimensionless)."""
    _check_grid(probability_u8, source_slices, "probability map")
    if probability_u8.dtype != np.uint8:
        raise ValueError(f"a probability map must be uint8 = round(255 P), got {probability_u8.dtype}")
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="VESSELPROB",
        lut_explanation="vessel probability",
        unit=hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units"),
        value_range=(0, 255),
        slope=1.0 / 255.0,
        intercept=0.0,
    )
    pm = hd.pm.ParametricMap(
        source_images=list(source_slices),
        pixel_array=probability_u8.astype(np.uint16),  # Parametric Map integer pixels are 16 or 32 bits
        series_instance_uid=series_instance_uid or new_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or new_uid(),
        instance_number=1,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=127.5, window_width=255.0)],
        series_description=series_description[:64],
        content_label="VESSELPROB",
        derived_pixel_contrast=DERIVED_PIXEL_CONTRAST,
        **_MANUFACTURER,
    )
    body_part = source_slices[0].get("BodyPartExamined")
    if body_part:  # an unpaired body part (HEAD): General Series Laterality is then not required
        pm.BodyPartExamined = body_part
    return pm


def refer_to_frames(
    obj: pydicom.Dataset,
    sources: dict[str, tuple[str, int | None]],
    *,
    sop_class_uid: str,
) -> pydicom.Dataset:
    """Point the references of a SEG / Parametric Map built over single-frame stand-in slices at the frames of
    the multi-frame object(s) those slices came from. ``sources`` maps each stand-in SOPInstanceUID to
    ``(source SOPInstanceUID, 1-based frame number or None)``; ``sop_class_uid`` is the sources' SOP class.

    Per-frame references (``SourceImageSequence`` items) get the source instance and its
    ``ReferencedFrameNumber``; the series-level ``ReferencedInstanceSequence`` lists each source instance once.
    Raises ValueError when a reference names a stand-in missing from ``sources``. Changes ``obj`` in place and
    returns it."""

    def walk(ds: pydicom.Dataset) -> None:
        for element in list(ds):
            if element.VR != "SQ":
                continue
            items = [
                copy.deepcopy(item) for item in element.value
            ]  # highdicom shares items between sequences
            for item in items:
                uid = str(item.get("ReferencedSOPInstanceUID", ""))
                if uid:
                    if uid not in sources:
                        raise ValueError(
                            f"{element.keyword} references an image that is not a known source slice"
                        )
                    source_uid, frame = sources[uid]
                    item.ReferencedSOPInstanceUID = source_uid
                    item.ReferencedSOPClassUID = sop_class_uid
                    if element.keyword == "SourceImageSequence" and frame is not None:
                        item.ReferencedFrameNumber = int(frame)
                walk(item)
            if element.keyword == "ReferencedInstanceSequence":
                unique = {str(item.get("ReferencedSOPInstanceUID", "")): item for item in reversed(items)}
                items = list(reversed(unique.values()))
            element.value = pydicom.Sequence(items)

    walk(obj)
    return obj
