"""Model-assisted labeling (issue 14.2) after a real inference run: the studies without approved labels ranked
by the model's vessel uncertainty (checked against the entropy computed voxel by voxel from the stored probability
volumes; approved studies left out, unpredicted ones listed apart), and the "accept the model's vessels" draft op
(checked against the stored class map; another study's or a non-class-map volume refused, draft unchanged)."""

import numpy as np
import pytest

from annotations.labels import apply_draft_op, commit, draft_array, get_or_create_draft, review
from annotations.models import Draft, LabelVersion, Volume
from dla.classes import BONE, SOFT_TISSUE, VESSEL
from tests.conftest import wait_for_run
from tests.integration.test_inference_api import SHAPE, register_tiny
from tests.integration.test_labels_api import apply, open_draft


def entropy_bits(prob_u8):
    p = prob_u8.astype(np.float64) / 255.0
    p = p[p >= 0.02]
    q = np.clip(p, 1e-12, 1 - 1e-12)
    h = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    h[(p <= 0) | (p >= 1)] = 0.0
    return float(h.mean()) if h.size else None


@pytest.mark.django_db(transaction=True)
def test_unlabeled_studies_ranked_by_the_models_uncertainty(client_for, users, phantom_study, celery_worker):
    admin, annotator = client_for("admin"), client_for("annotator")
    assert annotator.get("/api/label-priorities/").json()["detail"].startswith("no active model")
    model = register_tiny(admin)
    studies = [phantom_study(seed=s, shape=SHAPE, cohort="train") for s in (41, 42, 43)]
    unpredicted = phantom_study(seed=44, shape=SHAPE, cohort="train")
    for study in studies:
        started = annotator.post("/api/inference/", {"study": study.pk}, format="json").json()
        run = wait_for_run(started["id"], timeout_s=60, worker=celery_worker)
        assert run.state == "succeeded", run.error
    # the first study gets approved labels: it no longer needs labelling
    draft = get_or_create_draft(studies[0], users["annotator"])
    for c, z in ((VESSEL, 5), (BONE, 10), (SOFT_TISSUE, 15)):
        apply_draft_op(draft.pk, {"op": "brush", "center_zyx": [z, 24, 24], "radius_mm": 3, "label": c})
    version = commit(draft.pk, users["annotator"], "labels")
    review(version, users["admin"], LabelVersion.Review.APPROVED, "ok")

    response = annotator.get("/api/label-priorities/")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["model_version"]["id"] == model["id"]
    expected = {}
    for study in studies[1:]:
        prob = Volume.objects.get(study=study, role="vessel_prob", model_version_id=model["id"])
        expected[study.pseudonym] = entropy_bits(np.asarray(prob.array()))
    ranked = [(r["pseudonym"], r["mean_entropy_bits"]) for r in data["ranked"]]
    assert [name for name, _ in ranked] == sorted(expected, key=lambda k: -expected[k])
    for name, value in ranked:
        assert value == pytest.approx(expected[name], rel=1e-9)
    assert [r["pseudonym"] for r in data["without_prediction"]] == [unpredicted.pseudonym]

    # a prediction stored before the histogram was kept: computed once from the voxels, then saved
    Volume.objects.filter(role="vessel_prob").update(stats={})
    again = annotator.get("/api/label-priorities/").json()
    assert [(r["pseudonym"], r["mean_entropy_bits"]) for r in again["ranked"]] == ranked
    ranked_probs = Volume.objects.filter(role="vessel_prob", study__in=studies[1:])
    assert all(v.stats.get("probability_histogram") for v in ranked_probs)

    assert client_for("reader").get("/api/label-priorities/").status_code == 403
    bad = annotator.get("/api/label-priorities/?model_version=abc")
    assert bad.status_code == 400 and "model_version must be a positive integer" in bad.json()["detail"]
    missing = annotator.get("/api/label-priorities/?model_version=999999")
    assert missing.status_code == 400 and "does not exist" in missing.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_accepting_the_models_vessels_is_a_replayable_draft_op(client_for, phantom_study, celery_worker):
    admin, annotator = client_for("admin"), client_for("annotator")
    register_tiny(admin, seed=3)
    study, other = (phantom_study(seed=s, shape=SHAPE, cohort="train") for s in (51, 52))
    for s in (study, other):
        started = annotator.post("/api/inference/", {"study": s.pk}, format="json").json()
        assert wait_for_run(started["id"], timeout_s=60, worker=celery_worker).state == "succeeded"
    class_map = Volume.objects.get(study=study, role="class_map")
    predicted = np.asarray(class_map.array())
    assert (predicted == VESSEL).any()
    draft = open_draft(annotator, study)
    bone_at = [4, 10, 10]
    assert (
        apply(
            annotator, draft["id"], {"op": "brush", "center_zyx": bone_at, "radius_mm": 6, "label": BONE}
        ).status_code
        == 200
    )

    def labels():
        return np.array(draft_array(Draft.objects.get(pk=draft["id"])))

    before = labels()
    box = [0, SHAPE[0], 0, SHAPE[1], 0, SHAPE[2] // 2]
    response = apply(
        annotator,
        draft["id"],
        {"op": "model_vessels", "volume_id": class_map.pk, "box_zyx": box, "only_class": 0},
    )
    assert response.status_code == 200, response.content
    after = labels()
    inside = np.zeros(SHAPE, bool)
    inside[:, :, : SHAPE[2] // 2] = True
    expected = before.copy()
    expected[inside & (predicted == VESSEL) & (before == 0)] = VESSEL
    np.testing.assert_array_equal(after, expected)
    assert (after[before == BONE] == BONE).all()  # only over unlabeled: the painted bone stays
    # one undo takes it back
    assert annotator.post(f"/api/drafts/{draft['id']}/undo/").status_code == 200
    np.testing.assert_array_equal(labels(), before)

    foreign = Volume.objects.get(study=other, role="class_map")
    dla = Volume.objects.get(study=study, role="dla")
    for volume_id in (foreign.pk, dla.pk):
        bad = apply(annotator, draft["id"], {"op": "model_vessels", "volume_id": volume_id})
        assert bad.status_code == 400 and "is not a predicted class map of study" in bad.json()["detail"]
    np.testing.assert_array_equal(labels(), before)
