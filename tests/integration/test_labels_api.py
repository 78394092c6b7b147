"""Drafts and label versions through the API against PostgreSQL (and a real worker for the recipe): edit ops,
undo/redo, commit, 409 on a stale parent and rebase, two concurrent commits, diff, revert, review, samples, and
every refused request leaving the draft and the versions untouched."""

import io
import threading

import numpy as np
import pytest
from django.db import connection
from rest_framework.test import APIClient

from annotations.labels import draft_array, version_labels
from annotations.models import Draft, LabelVersion
from dla.classes import BONE, SOFT_TISSUE, VESSEL
from dla.labeling.edit_ops import VolumeContext, replay
from dla.labeling.recipe import RecipeParams, run_recipe
from dla_web.models import TaskRun
from tests.conftest import wait_for_run

BRUSH = {"op": "brush", "center_zyx": [20, 24, 24], "radius_mm": 8, "label": VESSEL, "shape": "sphere"}


def open_draft(client, study) -> dict:
    response = client.post("/api/drafts/", {"study": study.pk}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def apply(client, draft_id, op) -> dict:
    return client.post(f"/api/drafts/{draft_id}/ops/", {"op": op}, format="json")


@pytest.mark.django_db
def test_edit_undo_redo_commit_and_history(client_for, phantom_study):
    study = phantom_study(seed=1)
    client = client_for("annotator")
    draft = open_draft(client, study)
    assert draft["base_version"] is None and draft["counts"]["0"] == 40 * 48 * 48
    painted = apply(client, draft["id"], BRUSH)
    assert painted.status_code == 200, painted.content
    changed = painted.json()["result"]["changed_voxels"]
    assert changed > 0 and painted.json()["draft"]["counts"]["1"] == changed
    undone = client.post(f"/api/drafts/{draft['id']}/undo/").json()
    assert undone["counts"]["1"] == 0 and undone["can_redo"] and not undone["can_undo"]
    redone = client.post(f"/api/drafts/{draft['id']}/redo/").json()
    assert redone["counts"]["1"] == changed
    response = client.post(
        f"/api/drafts/{draft['id']}/commit/", {"message": "paint a test vessel"}, format="json"
    )
    assert response.status_code == 201, response.content
    version = response.json()
    assert version["number"] == 1 and version["parent"] is None and version["author"] == "annotator"
    assert version["counts"]["1"] == changed and version["ops"][0]["op"]["op"] == "brush"
    labels = version_labels(LabelVersion.objects.get(pk=version["id"]))
    assert int((labels == VESSEL).sum()) == changed
    assert version["stored_bytes"] < 0.03 * labels.size, "stored version over 3% of the raw uint8 size"
    history = client.get(f"/api/label-versions/?study={study.pk}").json()["results"]
    assert [v["number"] for v in history] == [1]
    assert client.get(f"/api/drafts/{draft['id']}/").json()["base_version"] == version["id"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "op, message",
    [
        ({"op": "teleport"}, "unknown op type"),
        ({**BRUSH, "center_zyx": [99, 0, 0]}, "outside"),
        ({**BRUSH, "radius_mm": 0}, "radius"),
        ({**BRUSH, "radius_mm": 500}, "radius"),
        ({**BRUSH, "label": 9}, "class"),
        ({"op": "remove_island", "at_zyx": [0, 0, 0]}, "no labeled island"),
        ({"op": "set_roi", "box_zyx": [5, 5, 0, 10, 0, 10]}, "empty"),
        ({"op": "recipe", "params": {"min_vessel_component_mm3": 1e8}}, "more than the whole volume"),
        ({"op": "recipe", "params": {"min_vessel_component_voxels": 10**7}}, "more than the whole volume"),
        ({"op": "recipe", "params": {"vessel_threshold_hu": 100}}, "vessel_threshold_hu"),
        ({"op": "recipe", "params": {"seeded_vessels_only": True}}, "seed_points_zyx is empty"),
        ({"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": 0}, "must be more than 0 mm"),
        ({"op": "margin", "label": VESSEL, "mode": "shrink", "size_mm": -3}, "must be more than 0 mm"),
        ({"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": 500}, "larger than the whole volume"),
        ({"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": 2}, "less than one voxel (4.5 mm)"),
        ({"op": "smooth", "label": VESSEL, "method": "median", "kernel_mm": 0}, "must be more than 0 mm"),
        (
            {"op": "smooth", "label": VESSEL, "method": "closing", "kernel_mm": 1e4},
            "larger than the whole volume",
        ),
        ({"op": "smooth", "label": VESSEL, "method": "blur", "kernel_mm": 9}, "smooth method must be one of"),
        ({"op": "remove_small", "label": VESSEL, "min_volume_mm3": -1}, "must be more than 0 mm³"),
        ({"op": "remove_small", "min_volume_mm3": 1e9}, "more than the whole volume"),
        ({"op": "split_island", "at_zyx": [20, 24, 24], "to_class": VESSEL}, "vessel already"),
    ],
)
def test_bad_ops_are_refused_and_change_nothing(client_for, phantom_study, op, message):
    study = phantom_study(seed=2)
    client = client_for("annotator")
    draft = open_draft(client, study)
    assert apply(client, draft["id"], BRUSH).status_code == 200
    before = Draft.objects.get(pk=draft["id"])
    response = apply(client, draft["id"], op)
    assert response.status_code == 400
    assert message in response.json()["detail"].lower(), response.json()
    after = Draft.objects.get(pk=draft["id"])
    assert (after.revision, after.counts, len(after.ops)) == (before.revision, before.counts, 1)
    assert not TaskRun.objects.filter(kind="recipe").exists(), "a refused recipe must not be queued"


@pytest.mark.django_db
def test_slicer_tools_and_a_whole_stroke_as_one_undo_step(client_for, phantom_study):
    """A brush drag sent as one op is one record and one undo step; islands, margin and smoothing apply through
    the API, and the draft's map is exactly the replay of its recorded ops."""
    study = phantom_study(seed=9)
    client = client_for("annotator")
    draft = open_draft(client, study)
    url = f"/api/drafts/{draft['id']}"
    stroke = [[20, 10 + i, 10 + i] for i in range(0, 24, 2)]  # a diagonal drag: 12 dabs
    op = {"op": "brush", "center_zyx": stroke[0], "stroke_zyx": stroke[1:], "radius_mm": 5, "label": VESSEL}
    painted = apply(client, draft["id"], op)
    assert painted.status_code == 200, painted.content
    after_stroke = painted.json()["draft"]
    assert len(after_stroke["ops"]) == 1 and after_stroke["counts"][str(VESSEL)] > 12
    undone = client.post(f"{url}/undo/").json()
    assert undone["counts"][str(VESSEL)] == 0 and not undone["can_undo"], "one undo reverts the whole stroke"
    assert client.post(f"{url}/redo/").json()["counts"] == after_stroke["counts"]
    # a separate speck of 1 voxel (91 mm^3 at 4.5 mm spacing), then islands
    speck = {"op": "brush", "center_zyx": [5, 40, 40], "radius_mm": 1, "label": VESSEL}
    assert apply(client, draft["id"], speck).status_code == 200
    for edit in (
        {"op": "split_island", "at_zyx": [5, 40, 40], "to_class": BONE},
        {"op": "remove_small", "label": BONE, "min_volume_mm3": 100},
        {"op": "margin", "label": VESSEL, "mode": "grow", "size_mm": 4.5},
        {"op": "smooth", "label": VESSEL, "method": "opening", "kernel_mm": 9},
        {"op": "keep_largest", "label": VESSEL},
    ):
        response = apply(client, draft["id"], edit)
        assert response.status_code == 200, (edit, response.content)
    row = Draft.objects.get(pk=draft["id"])
    assert [e["op"]["op"] for e in row.ops] == [
        "brush",
        "brush",
        "split_island",
        "remove_small",
        "margin",
        "smooth",
        "keep_largest",
    ]
    labels = np.asarray(draft_array(row))
    assert labels[5, 40, 40] == 0 and not (labels == BONE).any(), "the speck was split off, then removed"
    expected = replay(
        np.zeros_like(labels), [e["op"] for e in row.ops], VolumeContext(study.subject.spacing_mm)
    )
    np.testing.assert_array_equal(labels, expected)
    assert row.counts == {str(c): int((labels == c).sum()) for c in range(4)}


@pytest.mark.django_db
def test_edits_made_on_a_stale_revision_are_409_and_change_nothing(client_for, phantom_study):
    """Two tabs on one draft: an edit, undo or redo that names the revision it was made on is refused once
    the other tab has moved the draft on; without ``revision`` the edits apply one after the other."""
    study = phantom_study(seed=8)
    client = client_for("annotator")
    draft = open_draft(client, study)
    first = client.post(f"/api/drafts/{draft['id']}/ops/", {"op": BRUSH, "revision": 0}, format="json")
    assert first.status_code == 200 and first.json()["draft"]["revision"] == 1
    before = Draft.objects.get(pk=draft["id"])
    other_tab = {**BRUSH, "label": BONE}
    for path, body in (
        ("ops", {"op": other_tab, "revision": 0}),
        ("ops", {"op": {"op": "recipe", "params": {}}, "revision": 0}),
        ("undo", {"revision": 0}),
        ("redo", {"revision": 0}),
    ):
        response = client.post(f"/api/drafts/{draft['id']}/{path}/", body, format="json")
        assert response.status_code == 409, (path, response.content)
        assert "revision 0" in response.json()["detail"] and response.json()["draft"]["revision"] == 1
    bad = client.post(f"/api/drafts/{draft['id']}/undo/", {"revision": -1}, format="json")
    assert bad.status_code == 400 and bad.json()["detail"].startswith("revision:")
    after = Draft.objects.get(pk=draft["id"])
    assert (after.revision, after.counts, after.ops) == (before.revision, before.counts, before.ops)
    undone = client.post(f"/api/drafts/{draft['id']}/undo/", {"revision": 1}, format="json")
    assert undone.status_code == 200 and undone.json()["counts"][str(VESSEL)] == 0


@pytest.mark.django_db
def test_refused_commits_and_reviews(client_for, phantom_study, users):
    study = phantom_study(seed=3)
    annotator, admin = client_for("annotator"), client_for("admin")
    draft = open_draft(annotator, study)
    empty = annotator.post(f"/api/drafts/{draft['id']}/commit/", {"message": "nothing"}, format="json")
    assert empty.status_code == 400 and "no edits" in empty.json()["detail"]
    apply(annotator, draft["id"], BRUSH)
    no_message = annotator.post(f"/api/drafts/{draft['id']}/commit/", {"message": ""}, format="json")
    assert no_message.status_code == 400 and no_message.json()["detail"].startswith("message:")
    stolen = admin.post(f"/api/drafts/{draft['id']}/commit/", {"message": "mine now"}, format="json")
    assert stolen.status_code == 403 and "belongs to annotator" in stolen.json()["detail"]
    assert LabelVersion.objects.count() == 0
    version = annotator.post(f"/api/drafts/{draft['id']}/commit/", {"message": "v1"}, format="json").json()
    edit = admin.patch(f"/api/label-versions/{version['id']}/", {"message": "rewritten"}, format="json")
    assert edit.status_code == 405
    assert (
        annotator.post(f"/api/label-versions/{version['id']}/review/", {"status": "approved"}).status_code
        == 403
    )
    reject = admin.post(f"/api/label-versions/{version['id']}/review/", {"status": "rejected"}, format="json")
    assert reject.status_code == 400 and "needs a comment" in reject.json()["detail"]
    assert (
        annotator.post(f"/api/label-versions/{version['id']}/submit/").json()["review_status"] == "submitted"
    )
    ok = admin.post(
        f"/api/label-versions/{version['id']}/review/", {"status": "approved"}, format="json"
    ).json()
    assert ok["review_status"] == "approved" and ok["reviewed_by"] == "admin"
    again = admin.post(f"/api/label-versions/{version['id']}/review/", {"status": "approved"}, format="json")
    assert again.status_code == 400 and "was already approved by admin" in again.json()["detail"]
    withdrawn = admin.post(
        f"/api/label-versions/{version['id']}/review/",
        {"status": "rejected", "comment": "vessel tree cut at the siphon"},
        format="json",
    )
    assert withdrawn.status_code == 200 and withdrawn.json()["review_status"] == "rejected"
    reapprove = admin.post(
        f"/api/label-versions/{version['id']}/review/", {"status": "approved"}, format="json"
    )
    assert reapprove.status_code == 400 and "was already rejected" in reapprove.json()["detail"]
    assert LabelVersion.objects.get(pk=version["id"]).message == "v1"


@pytest.mark.django_db
def test_stale_parent_gets_409_and_rebase_keeps_both_edits(client_for, phantom_study, make_user):
    study = phantom_study(seed=4)
    first = client_for("annotator")
    second = APIClient()
    second.force_authenticate(make_user("annotator2", "Annotator"))
    draft_a, draft_b = open_draft(first, study), open_draft(second, study)
    apply(first, draft_a["id"], BRUSH)
    apply(second, draft_b["id"], {**BRUSH, "center_zyx": [10, 10, 10], "radius_mm": 5, "label": BONE})
    v1 = first.post(f"/api/drafts/{draft_a['id']}/commit/", {"message": "A"}, format="json")
    assert v1.status_code == 201
    stale = second.post(f"/api/drafts/{draft_b['id']}/commit/", {"message": "B"}, format="json")
    assert stale.status_code == 409
    body = stale.json()
    assert body["head"]["number"] == 1 and "rebase" in body["detail"] and body["actions"]["rebase"]
    assert len(Draft.objects.get(pk=draft_b["id"]).ops) == 1, "the loser's edits must survive the 409"
    rebased = second.post(f"/api/drafts/{draft_b['id']}/rebase/").json()
    assert rebased["base_number"] == 1
    v2 = second.post(f"/api/drafts/{draft_b['id']}/commit/", {"message": "B rebased"}, format="json").json()
    assert v2["number"] == 2 and v2["parent_number"] == 1
    labels = version_labels(LabelVersion.objects.get(pk=v2["id"]))
    assert (labels == VESSEL).any() and (labels == BONE).any()
    diff = first.get(f"/api/label-versions/{v2['id']}/diff/").json()
    assert diff["from"] == 1 and diff["to"] == 2 and diff["gained"][str(BONE)] > 0
    reverted = first.post(f"/api/label-versions/{v1.json()['id']}/revert/", {}, format="json").json()
    assert (
        reverted["number"] == 3
        and reverted["sha256"] == v1.json()["sha256"]
        and reverted["parent_number"] == 2
    )
    assert LabelVersion.objects.filter(study=study).count() == 3


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_commits_on_one_parent_exactly_one_wins(phantom_study, make_user):
    assert connection.vendor == "postgresql"
    study = phantom_study(seed=5)
    clients, drafts = [], []
    for index in range(2):
        client = APIClient()
        client.force_authenticate(make_user(f"racer{index}", "Annotator"))
        draft = open_draft(client, study)
        apply(client, draft["id"], {**BRUSH, "center_zyx": [10 + 15 * index, 20, 20], "radius_mm": 4})
        clients.append(client)
        drafts.append(draft)
    barrier = threading.Barrier(2)
    statuses = [None, None]

    def race(index):
        barrier.wait()
        try:
            statuses[index] = (
                clients[index]
                .post(
                    f"/api/drafts/{drafts[index]['id']}/commit/", {"message": f"racer {index}"}, format="json"
                )
                .status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201, 409]
    assert list(LabelVersion.objects.filter(study=study).values_list("number", flat=True)) == [1]
    loser = drafts[statuses.index(409)]
    assert len(Draft.objects.get(pk=loser["id"]).ops) == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_recipe_runs_as_a_task_and_samples_follow_the_paper(celery_worker, client_for, phantom_study):
    study = phantom_study(seed=6, motion=False, shape=(48, 64, 64), spacing_mm=(1.5, 1.5, 1.5))
    client = client_for("annotator")
    draft = open_draft(client, study)
    response = apply(
        client,
        draft["id"],
        {"op": "recipe", "params": {"vessel_threshold_hu": 400, "min_vessel_component_mm3": 30}},
    )
    assert response.status_code == 202
    run = wait_for_run(response.json()["id"], worker=celery_worker)
    assert run.state == "succeeded", run.error
    counts = client.get(f"/api/drafts/{draft['id']}/").json()["counts"]
    assert all(counts[str(c)] > 0 for c in (VESSEL, BONE, SOFT_TISSUE))
    report = run.result["report"]
    assert run.result["warnings"] == [] and report["vessel"]["voxels"] == counts[str(VESSEL)]
    assert run.message == f"done: {report['summary']}"[:500], "the run says what the recipe kept"
    assert report["vessel"]["mm3"] == pytest.approx(counts[str(VESSEL)] * 1.5**3)
    assert report["vessel"]["floor_voxels"] == 9 and report["vessel"]["components_kept"] >= 1
    assert report["classes"][str(BONE)]["voxels"] == counts[str(BONE)]
    empty = apply(client, draft["id"], {"op": "recipe", "params": {"min_vessel_component_mm3": 50_000}})
    run = wait_for_run(empty.json()["id"], worker=celery_worker)
    assert run.state == "succeeded", run.error
    assert run.result["warnings"] and run.result["warnings"][0].startswith("No vessel voxels")
    assert "50,000 mm^3" in run.result["warnings"][0]
    assert run.message.startswith("done, 1 warning(s): No vessel voxels"), "never a plain success"
    assert client.post(f"/api/drafts/{draft['id']}/undo/").status_code == 200
    version = client.post(f"/api/drafts/{draft['id']}/commit/", {"message": "recipe"}, format="json").json()
    assert version["recipe"]["vessel_threshold_hu"] == 400
    download = client.get(f"/api/label-versions/{version['id']}/samples/?seed=3")
    assert download.status_code == 200
    samples = np.load(io.BytesIO(download.content))["samples"]
    classes = dict(zip(*np.unique(samples[:, 3], return_counts=True), strict=True))
    n_vessel = counts[str(VESSEL)]
    assert classes[VESSEL] == n_vessel
    assert classes[BONE] == min(n_vessel, counts[str(BONE)]) and classes[SOFT_TISSUE] == min(
        n_vessel, counts[str(SOFT_TISSUE)]
    )
    again = np.load(io.BytesIO(client.get(f"/api/label-versions/{version['id']}/samples/?seed=3").content))[
        "samples"
    ]
    np.testing.assert_array_equal(samples, again)
    bad = client.get(f"/api/label-versions/{version['id']}/samples/?seed=abc")
    assert bad.status_code == 400 and "seed" in bad.json()["detail"]


@pytest.mark.django_db
def test_label_version_exports_as_dicom_seg_and_nifti(client_for, phantom_study, tmp_path):
    import shutil
    import subprocess
    import zipfile

    import nibabel as nib
    import pydicom

    study = phantom_study(seed=7, shape=(24, 48, 48), spacing_mm=(1.5, 1.5, 1.5))
    client = client_for("annotator")
    draft = open_draft(client, study)
    apply(client, draft["id"], {**BRUSH, "center_zyx": [12, 24, 24], "radius_mm": 6})
    apply(client, draft["id"], {**BRUSH, "center_zyx": [12, 10, 10], "radius_mm": 4, "label": BONE})
    version = client.post(
        f"/api/drafts/{draft['id']}/commit/", {"message": "for export"}, format="json"
    ).json()
    labels = version_labels(LabelVersion.objects.get(pk=version["id"]))
    nifti = client.get(f"/api/label-versions/{version['id']}/download/?as=nifti")
    (tmp_path / "l.nii.gz").write_bytes(b"".join(nifti.streaming_content))
    np.testing.assert_array_equal(
        np.asarray(nib.load(tmp_path / "l.nii.gz").dataobj).transpose(2, 1, 0), labels
    )
    seg_zip = client.get(f"/api/label-versions/{version['id']}/download/?as=seg")
    assert seg_zip.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(seg_zip.streaming_content))) as zf:
        zf.extractall(tmp_path / "seg")
    seg_path = next((tmp_path / "seg").rglob("seg.dcm"))
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and [s.SegmentLabel for s in seg.SegmentSequence] == ["vessel", "bone"]
    ct_uids = {pydicom.dcmread(p).SeriesInstanceUID for p in (tmp_path / "seg").rglob("slice_*.dcm")}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID in ct_uids
    if shutil.which("dciodvfy"):
        out = subprocess.run(["dciodvfy", str(seg_path)], capture_output=True, text=True)
        assert "Error" not in out.stdout + out.stderr, out.stderr[-2000:]
    bad = client.get(f"/api/label-versions/{version['id']}/download/?as=png")
    assert bad.status_code == 400 and "unknown format" in bad.json()["detail"]


@pytest.mark.django_db
def test_drafts_and_versions_recorded_with_voxel_floors_replay_unchanged(client_for, phantom_study, users):
    """Recipe ops stored before floors were physical: one naming no floor (the old default, 500 voxels) and one
    with a floor in voxels. A draft holding them (no cache file: rebuilt by replay), its slices, its commit and
    the replay of the committed version's ops all give the old recipe's map; the same op sent today gets the
    mm^3 default."""
    study = phantom_study(seed=9, shape=(40, 64, 64), spacing_mm=(1.4, 1.4, 1.4), motion=False)
    subject = study.subject
    context = VolumeContext(subject.spacing_mm, fill_hu=subject.fill_hu, subtracted_hu=subject.subtracted_hu)
    client = client_for("annotator")
    off = {"vessel_low_threshold_hu": None, "vessel_edge_fraction": None}  # recorded before growing existed
    legacy = [
        ({"vessel_threshold_hu": 600}, RecipeParams(min_vessel_component_voxels=500, **off)),
        ({"vessel_threshold_hu": 550, "min_vessel_component_voxels": 30}, RecipeParams(550, 30, **off)),
    ]
    kept = []
    for params, old_meaning in legacy:
        expected = run_recipe(subject.fill_hu, subject.subtracted_hu, subject.spacing_mm, old_meaning).labels
        kept.append(int((expected == VESSEL).sum()))
        op = {"op": "recipe", "params": params}
        draft = Draft.objects.create(
            study=study, user=users["annotator"], ops=[{"op": op, "result": None, "undo": None}], revision=1
        )
        np.testing.assert_array_equal(draft_array(draft), expected)
        raw = client.get(f"/api/drafts/{draft.pk}/slice/?axis=z&index=20")
        assert raw.status_code == 200
        np.testing.assert_array_equal(np.frombuffer(raw.content, np.uint8).reshape(64, 64), expected[20])
        version = client.post(f"/api/drafts/{draft.pk}/commit/", {"message": "old recipe"}, format="json")
        assert version.status_code == 201, version.content
        stored = LabelVersion.objects.get(pk=version.json()["id"])
        np.testing.assert_array_equal(version_labels(stored), expected)
        replayed = replay(np.zeros_like(expected), [e["op"] for e in stored.ops], context)
        np.testing.assert_array_equal(replayed, expected)
        Draft.objects.filter(study=study).delete()
        LabelVersion.objects.filter(study=study).delete()
    today = run_recipe(subject.fill_hu, subject.subtracted_hu, subject.spacing_mm, RecipeParams()).labels
    assert kept[1] > 0 and kept[0] < int((today == VESSEL).sum()), f"{kept} vs {int((today == VESSEL).sum())}"
