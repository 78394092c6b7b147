"""Synthetic head angiography phantoms with exact truth: one subject (``make_subject``), its static anatomy and
region masks alone (``make_anatomy``, ``anatomy_from_params``), its opacified vessels with their radii
(``vessel_radii_from_params``), the paper's cohort plan (``cohort_plan``,
``subject_from_plan``), shifted cohorts (``shift``: named overrides of noise, blur, contrast, skull, bone and
vessel tortuosity, ``SHIFT_OPTIONS``), and the simulated manual artifact removal (``review``).

Modules: ``grid`` (voxel grid, frame, argument checks), ``curves`` (polylines), ``anatomy`` (skull, brain,
skull base, otic capsules, sinuses, vertebrae, mandible; region masks), ``vessels`` (vessel tree, rasterization,
aneurysm and coil), ``physics`` (partial volume, blur, streaks, noise, int16), ``motion`` (inter-sweep motion),
``subject`` (``make_subject`` and its arguments), ``cohort`` (the cohort plan)."""

from dla.phantoms.anatomy import ANATOMY_REGION_NAMES
from dla.phantoms.cohort import cohort_plan, subject_from_plan
from dla.phantoms.grid import PhantomParameterError, default_spacing_mm
from dla.phantoms.shift import SHIFT_OPTIONS, check_shift, parse_shift_items
from dla.phantoms.subject import (
    REGION_NAMES,
    PhantomAnatomy,
    PhantomSubject,
    PhantomVesselRadii,
    anatomy_from_params,
    make_anatomy,
    make_subject,
    vessel_radii_from_params,
)

__all__ = [
    "ANATOMY_REGION_NAMES",
    "REGION_NAMES",
    "SHIFT_OPTIONS",
    "PhantomAnatomy",
    "PhantomParameterError",
    "PhantomSubject",
    "PhantomVesselRadii",
    "anatomy_from_params",
    "check_shift",
    "cohort_plan",
    "default_spacing_mm",
    "make_anatomy",
    "make_subject",
    "parse_shift_items",
    "subject_from_plan",
    "vessel_radii_from_params",
]
