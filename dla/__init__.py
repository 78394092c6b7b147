"""DLA science package: deep learning angiography without Django.

Numpy/torch in, arrays and dataclasses out. Sub-packages: ``dla.io`` (DICOM, NIfTI, de-identification, safe
archives, DICOM SEG), ``dla.phantoms`` (synthetic head angiography subjects with exact truth), ``dla.labeling``
(components, the paper's recipe, edit ops, label codec, training samples), ``dla.render`` (slices, windows,
MIPs, PNG), ``dla.model`` (the voxel classifier, dense inference, training, DDP) and ``dla.stats`` (metrics with
CIs, residual bone, reader statistics). Class ids live in ``dla.classes``. Arrays are ``[z, y, x]`` with
``spacing_mm = (dz, dy, dx)``; image volumes are HU.
"""

__version__ = "0.2.0"
