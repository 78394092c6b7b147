"""The subtraction check of a study: does its subtracted volume show inter-sweep motion?

``record_subtraction_check(study)`` runs ``dla.stats.artifacts.subtraction_motion`` on the study's newest fill
and subtracted volumes and keeps the result in ``Study.metadata["subtraction_check"]`` with the two volumes'
sha256 (so a later import of another volume replaces it, and a stale one is recognisable). Ingest calls it once
both volumes exist; the review queue shows it beside each submitted label version, because the recipe's labels
of a moved study carry residual bone edges and a rim around the vessels as vessel, and such versions are better
rejected than used for training. Reads the scans only, never labels or a phantom's truth.
"""

from __future__ import annotations

import numpy as np

from dla.stats.artifacts import subtraction_motion

from .models import Study, Volume

METADATA_KEY = "subtraction_check"


def record_subtraction_check(study: Study) -> dict | None:
    """Compute and store the check of ``study``; None (nothing stored) without both a fill and a subtracted
    volume on one grid."""
    fill, sub = study.volume(Volume.Role.FILL), study.volume(Volume.Role.SUBTRACTED)
    if fill is None or sub is None or list(fill.shape) != list(sub.shape):
        return None
    check = subtraction_motion(np.asarray(fill.array()), np.asarray(sub.array()))
    entry = {
        "motion_suspected": check.motion_suspected,
        "moved_bone_fraction": check.moved_bone_fraction,
        "max_moved_bone_fraction": check.max_moved_bone_fraction,
        "summary": check.summary,
        "fill_sha256": fill.sha256,
        "subtracted_sha256": sub.sha256,
    }
    study.refresh_from_db(fields=["metadata"])
    study.metadata = {**(study.metadata or {}), METADATA_KEY: entry}
    study.save(update_fields=["metadata"])
    return entry


def subtraction_check(study: Study) -> dict | None:
    """The stored check of ``study``, None when it was never run (a study imported before the check existed,
    or without a subtracted volume)."""
    return (study.metadata or {}).get(METADATA_KEY)
