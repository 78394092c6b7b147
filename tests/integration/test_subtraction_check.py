"""The subtraction check through the real import: two phantom heads written as DICOM and ingested (one with the
mask sweep moved, one aligned) carry the check in their metadata, a later import of a new subtracted volume
replaces it, and the admin's review queue shows it beside each submitted label version."""

import numpy as np
import pytest
from django.test import Client
from rest_framework.test import APIClient

from annotations.models import Volume
from annotations.phantom_import import import_subject
from annotations.subtraction import record_subtraction_check, subtraction_check
from dla.phantoms import make_subject

pytestmark = pytest.mark.django_db

SHAPE = (48, 80, 80)
MOVED = {"translation_mm": (1.5, 1.5, 0.0)}


def _submitted_version(annotator: APIClient, study) -> int:
    draft = annotator.post("/api/drafts/", {"study": study.pk}, format="json").json()
    op = {"op": "brush", "center_zyx": [20, 40, 40], "radius_mm": 6, "label": 1, "shape": "sphere"}
    assert annotator.post(f"/api/drafts/{draft['id']}/ops/", {"op": op}, format="json").status_code == 200
    version = annotator.post(f"/api/drafts/{draft['id']}/commit/", {"message": "v1"}, format="json").json()
    assert annotator.post(f"/api/label-versions/{version['id']}/submit/").status_code == 200
    return version["id"]


def test_import_records_the_check_and_the_review_queue_shows_it(client_for, users):
    moved = import_subject(
        make_subject(SHAPE, seed=3, spacing_mm=1.40625, motion=MOVED), subject_id="PH-MOVED"
    )
    still = import_subject(
        make_subject(SHAPE, seed=11, spacing_mm=1.40625, motion=False), subject_id="PH-STILL"
    )
    moved_check, still_check = subtraction_check(moved), subtraction_check(still)
    assert moved_check["motion_suspected"] and not still_check["motion_suspected"]
    assert moved_check["moved_bone_fraction"] > 5 * moved_check["max_moved_bone_fraction"]
    assert moved_check["subtracted_sha256"] == moved.volume(Volume.Role.SUBTRACTED).sha256
    assert "phantom" in moved.metadata, "the import's own metadata is kept beside the check"

    annotator = client_for("annotator")
    ids = {name: _submitted_version(annotator, s) for name, s in (("moved", moved), ("still", still))}
    browser = Client()
    browser.force_login(users["admin"])
    page = browser.get("/reviews/")
    assert page.status_code == 200
    html = page.content.decode()
    for name, study in (("moved", moved), ("still", still)):
        row = html.split(f'data-version-id="{ids[name]}"')[1].split("</tr>")[0]
        cell = row.split('data-testid="subtraction-check"')[1].split("</td>")[0]
        word = "motion" if name == "moved" else "aligned"
        assert f">{word}</span>" in cell and subtraction_check(study)["summary"] in cell


def test_a_new_subtracted_volume_replaces_the_check(phantom_study):
    study = phantom_study(seed=3, shape=SHAPE, spacing_mm=1.40625, motion=MOVED)
    first = record_subtraction_check(study)
    assert first["motion_suspected"]
    fill = np.asarray(study.volume(Volume.Role.FILL).array())
    mask = np.asarray(study.volume(Volume.Role.MASK).array())
    aligned_mask = make_subject(SHAPE, seed=3, spacing_mm=1.40625, motion=False).mask_hu
    fixed = (fill.astype(np.int32) - aligned_mask).clip(-32768, 32767).astype(np.int16)
    assert not np.array_equal(mask, aligned_mask)
    volume = Volume.create_from_array(
        study=study,
        role=Volume.Role.SUBTRACTED,
        array=fixed,
        spacing_mm=study.subject.spacing_mm,
        affine_lps=study.subject.affine_lps,
        source="re-registered",
    )
    second = record_subtraction_check(study)
    assert not second["motion_suspected"] and second["subtracted_sha256"] == volume.sha256
    assert subtraction_check(study) == second


def test_no_subtracted_volume_no_check(phantom_study):
    study = phantom_study(seed=4, shape=(32, 40, 40))
    study.volumes.filter(role=Volume.Role.SUBTRACTED).delete()
    assert record_subtraction_check(study) is None and subtraction_check(study) is None
