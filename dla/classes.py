"""Tissue class ids and the voxel convention, defined once for the whole product.

Arrays are indexed ``[z, y, x]`` (z = axial slice index) with ``spacing_mm = (dz, dy, dx)``; stored
image volumes are int16 Hounsfield units and label maps are uint8 class ids from this module.
Class 0 means unlabeled: training and evaluation ignore it.
"""

UNLABELED = 0
VESSEL = 1
BONE = 2
SOFT_TISSUE = 3

CLASS_NAMES = {UNLABELED: "unlabeled", VESSEL: "vessel", BONE: "bone", SOFT_TISSUE: "soft_tissue"}
LABELED_CLASSES = (VESSEL, BONE, SOFT_TISSUE)
NUM_NETWORK_CLASSES = 3  # network output channel c predicts class id c + 1
# Overlay colours of the labeled classes (RGBA, 0-255): the viewer gets them from the page, never repeats them.
CLASS_COLORS_RGBA = {VESSEL: (230, 50, 50, 255), BONE: (240, 230, 140, 255), SOFT_TISSUE: (80, 160, 255, 255)}
