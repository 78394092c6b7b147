"""Synthetic head angiography phantoms with exact truth: one subject (``make_subject``), the paper's cohort plan
(``cohort_plan``, ``subject_from_plan``), and the simulated manual artifact removal (``review``)."""

from dla.phantoms.phantom import (
    PhantomParameterError,
    PhantomSubject,
    cohort_plan,
    default_spacing_mm,
    make_subject,
    subject_from_plan,
)

__all__ = [
    "PhantomParameterError",
    "PhantomSubject",
    "cohort_plan",
    "default_spacing_mm",
    "make_subject",
    "subject_from_plan",
]
