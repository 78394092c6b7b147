"""File formats: DICOM series read/write (``dicom``), NIfTI (``nifti``), de-identification (``deidentify``),
safe zip extraction (``archive``) and DICOM SEG export of label maps (``seg``)."""
