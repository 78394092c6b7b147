"""DICOM SEG export of a label map with highdicom: one binary segment per tissue class (vessel, bone, soft
tissue; SNOMED CT codes), referencing the CT series it was drawn on. Pure: pydicom datasets and numpy in,
a pydicom Dataset out; the caller writes files."""

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from dla.classes import BONE, CLASS_NAMES, LABELED_CLASSES, SOFT_TISSUE, VESSEL
from dla.io.dicom import new_uid

SEGMENT_TYPES = {VESSEL: codes.SCT.BloodVessel, BONE: codes.SCT.Bone, SOFT_TISSUE: codes.SCT.SoftTissue}


def label_seg(
    labels: np.ndarray,
    source_slices: Sequence[pydicom.Dataset],
    *,
    series_description: str,
    content_label: str = "DLALABELS",
    algorithm_name: str = "DLA Workbench",
) -> pydicom.Dataset:
    """A binary DICOM SEG of ``labels`` (uint8 [z, y, x], class ids) over ``source_slices`` (the CT series'
    datasets in z order, one per label slice). Classes without voxels are left out; raises ValueError when the
    map is empty or does not match the series."""
    if labels.ndim != 3 or labels.shape[0] != len(source_slices):
        raise ValueError(f"label map {labels.shape} does not match a series of {len(source_slices)} slices")
    if (labels.shape[1], labels.shape[2]) != (int(source_slices[0].Rows), int(source_slices[0].Columns)):
        raise ValueError(f"label slices {labels.shape[1:]} do not match the images' rows/columns")
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
        series_instance_uid=new_uid(),
        series_number=300,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer="DLA Workbench",
        manufacturer_model_name="DLA Workbench",
        software_versions="0.1",
        device_serial_number="0",
        series_description=series_description[:64],
        content_label=content_label,
        omit_empty_frames=True,
    )
