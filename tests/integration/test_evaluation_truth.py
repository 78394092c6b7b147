"""The truth-referenced evaluation (issue 14.1) through the evaluate task and the report, on small phantom studies
whose predictions are built here from the truth (exact, two voxels too thick, thin vessels removed, eroded), so the
expected numbers are known independently: scikit-learn on the voxels, the labeling recipe's own vessel mask for the
DSA baseline, scipy's t interval for the cohort and paired rows, scipy's Euclidean distance transform for residual
bone. Cohorts without truth maps get a sentence instead of a failure."""

import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, stats
from sklearn.metrics import f1_score, precision_score, recall_score

from annotations.models import Volume
from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.labeling.recipe import RecipeParams, run_recipe
from dla.model.dense import dla_volume
from dla.phantoms import vessel_radii_from_params
from evaluation.models import Evaluation
from tests.integration.test_evaluation_api import (
    approve,
    launch,
    make_model,
    page_client,
    run_inline,
    with_phantom_params,
)

pytestmark = pytest.mark.django_db
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

SHAPE = (40, 64, 64)
SPACING = (2.0, 2.0, 2.0)  # one voxel = 2 mm: radius bins up to 2 mm are below one voxel
MOVED = {"rotation_deg": (0.0, 0.0, 0.0), "translation_mm": (5.0, 5.0, 0.0)}
SIX = ndimage.generate_binary_structure(3, 1)


def vessel_variant(study, kind: str) -> np.ndarray:
    """A predicted vessel mask made from the study's truth."""
    truth_vessel = np.asarray(study.volume("truth").array()) == VESSEL
    if kind == "exact":
        return truth_vessel
    if kind == "dilated":  # drawn two voxels too thick (city-block distance <= 2: within 4 mm)
        return ndimage.binary_dilation(truth_vessel, SIX, iterations=2)
    if kind == "eroded":
        return ndimage.binary_erosion(truth_vessel, SIX)
    if kind == "no_thin":  # vessels thinner than one voxel (radius < 2 mm) removed
        radius = vessel_radii_from_params(study.metadata["phantom"]["params"]).radius_mm
        return truth_vessel & (radius >= SPACING[0])
    raise ValueError(kind)


def store_prediction(study, model, vessel: np.ndarray) -> np.ndarray:
    """Class map = truth (unlabeled -> soft tissue) with the vessel class replaced by ``vessel``."""
    truth = np.asarray(study.volume("truth").array())
    pred = np.where(truth == UNLABELED, SOFT_TISSUE, truth).astype(np.uint8)
    pred[(pred == VESSEL) & ~vessel] = SOFT_TISSUE
    pred[vessel] = VESSEL
    t = study.volume("truth")
    Volume.create_from_array(
        study=study,
        role="class_map",
        array=pred,
        spacing_mm=t.spacing_mm,
        affine_lps=t.affine_lps,
        model_version_id=model.pk,
    )
    return pred


def overlap(truth_vessel, pred_vessel) -> dict:
    y_t, y_p = truth_vessel.ravel(), pred_vessel.ravel()
    return {
        "sensitivity": recall_score(y_t, y_p),
        "ppv": precision_score(y_t, y_p, zero_division=0),
        "dice": f1_score(y_t, y_p),
    }


@pytest.fixture
def truth_cohort(phantom_study, users):
    model = make_model("truth model")
    plan = [
        (91, "validation", False, "eroded"),
        (92, "test", False, "exact"),
        (93, "test", MOVED, "dilated"),
        (94, "test", False, "no_thin"),
    ]
    studies, preds = [], {}
    for seed, cohort, motion, kind in plan:
        study = with_phantom_params(
            phantom_study(seed=seed, shape=SHAPE, spacing_mm=SPACING, cohort=cohort, motion=motion)
        )
        approve(study, users["admin"])
        preds[study.pk] = vessel_variant(study, kind)
        store_prediction(study, model, preds[study.pk])
        study.kind = kind
        studies.append(study)
    return {"model": model, "studies": studies, "preds": preds}


@pytest.fixture
def finished(truth_cohort, client_for):
    response = launch(
        client_for("admin"), model_version=truth_cohort["model"].pk, cohorts=["validation", "test"]
    )
    assert response.status_code == 202, response.json()
    return run_inline(Evaluation.objects.get(pk=response.json()["id"]))


def referenced(evaluation) -> dict:
    return {r.study_id: r.truth["referenced"] for r in evaluation.results.all()}


def test_per_study_numbers_match_independent_computations(finished, truth_cohort):
    ref = referenced(finished)
    for study in truth_cohort["studies"]:
        t = ref[study.pk]
        truth = np.asarray(study.volume("truth").array())
        tv = truth == VESSEL
        assert t["radius_exact"] and t["radius_source"] == "the phantom's own vessel radii"
        expected = overlap(tv, truth_cohort["preds"][study.pk])
        for key in ("sensitivity", "ppv", "dice"):
            assert t["dla"]["whole_head"][key] == pytest.approx(expected[key], abs=1e-12), (study.kind, key)
        # the DSA baseline is the recipe's vessel mask at its threshold and floor, without growing
        fill = np.asarray(study.volume("fill").array())
        sub = np.asarray(study.volume("subtracted").array())
        threshold_only = RecipeParams(vessel_low_threshold_hu=None, vessel_edge_fraction=None)
        recipe_vessel = run_recipe(fill, sub, SPACING, threshold_only).labels == VESSEL
        expected_dsa = overlap(tv, recipe_vessel)
        for key in ("sensitivity", "ppv", "dice"):
            assert t["dsa"]["whole_head"][key] == pytest.approx(expected_dsa[key], abs=1e-12), key
        bins = t["dla"]["by_radius"]
        assert sum(b["truth_voxels"] for b in bins) == int(tv.sum())
        assert [b["below_voxel"] for b in bins] == [True, True, True, True, False]
        if study.kind == "exact":
            assert t["dla"]["centreline"]["cldice"] == 1.0 and t["dla"]["resolved"]["dice"] == 1.0
            assert all(b["dice"] in (1.0, None) for b in bins)
        if study.kind == "no_thin":
            for b in bins[:4]:  # every truth voxel of radius < one voxel is missed ...
                assert b["sensitivity"] in (0.0, None) and b["centreline_sensitivity"] in (0.0, None)
            assert bins[0]["sensitivity"] is None  # no phantom vessel below 0.5 mm survives at 2 mm voxels
            resolved = t["dla"]["resolved"]  # ... and every one of at least one voxel is found, nothing added
            assert resolved["dice"] == 1.0 and resolved["centreline_sensitivity"] == 1.0
            assert t["dla"]["whole_head"]["ppv"] == 1.0
        if study.kind == "dilated":
            shell = int((truth_cohort["preds"][study.pk] & ~tv).sum())
            assert t["dla"]["remote_fp"] == 0  # every added voxel is next to its vessel
            assert sum(b["fp"] for b in bins) == shell == t["dla"]["whole_head"]["fp"]
            assert all(b["sensitivity"] in (1.0, None) for b in bins)


def test_residual_bone_against_the_truth(finished, truth_cohort):
    ref = referenced(finished)
    moved = next(s for s in truth_cohort["studies"] if s.kind == "dilated")
    truth = np.asarray(moved.volume("truth").array())
    tv, bone = truth == VESSEL, truth == BONE
    eroded = ndimage.binary_erosion(bone, SIX, border_value=1)
    dist = ndimage.distance_transform_edt(~tv, sampling=SPACING)  # an independent distance computation
    margin = 2 * SPACING[0]
    voxel_mm3 = float(np.prod(SPACING))
    fill = np.asarray(moved.volume("fill").array())
    angiograms = {
        "dsa": np.asarray(moved.volume("subtracted").array()),
        "dla": dla_volume(
            fill, np.where(truth_cohort["preds"][moved.pk], VESSEL, SOFT_TISSUE).astype(np.uint8)
        ),
    }
    for side, hu in angiograms.items():
        got = ref[moved.pk]["residual_bone"][side]
        bright = eroded & (hu >= finished.bright_hu)
        far = bright & (dist > margin)
        assert got["n_bright_voxels"] == int(bright.sum())
        assert got["n_near_vessel_voxels"] == int((bright & ~far).sum())
        labels, n = ndimage.label(far, np.ones((3, 3, 3), bool))
        largest = int(np.bincount(labels.ravel())[1:].max()) if n else 0
        assert got["largest_cluster_mm3"] == pytest.approx(largest * voxel_mm3)
        assert got["present"] == (largest >= finished.min_cluster_voxels)
        if got["clusters"]:
            biggest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
            assert got["clusters"][0]["distance_mm"] == pytest.approx(dist[biggest].min())
    # the moved DSA shows residual bone; the DLA drawn two voxels too thick does not (its rim is the vessel's)
    assert ref[moved.pk]["residual_bone"]["dsa"]["present"]
    assert not ref[moved.pk]["residual_bone"]["dla"]["present"]
    assert ref[moved.pk]["residual_bone"]["dla"]["n_near_vessel_voxels"] > 0
    rb = {d["dataset"]: d for d in finished.summary["truth_referenced"]["datasets"]}["Testing"][
        "residual_bone"
    ]
    n_dsa = sum(
        ref[s.pk]["residual_bone"]["dsa"]["present"] for s in truth_cohort["studies"] if s.cohort == "test"
    )
    assert rb["dsa"]["text"] == f"{n_dsa}/3 ({100 * n_dsa / 3:.1f}%)"
    assert rb["dsa"]["motion"]["text"] == "1/1 (100.0%)" and rb["dla"]["N"] == 3


def test_cohort_means_and_paired_dla_vs_dsa(finished, truth_cohort):
    section = finished.summary["truth_referenced"]
    assert section["available"] and section["voxel_mm"] == pytest.approx(2.0)
    assert [b["label"] for b in section["bins"]] == [
        "0-0.5 mm",
        "0.5-1 mm",
        "1-1.5 mm",
        "1.5-2 mm",
        ">= 2 mm",
    ]
    testing = {d["dataset"]: d for d in section["datasets"]}["Testing"]
    ref = referenced(finished)
    ids = [s.pk for s in truth_cohort["studies"] if s.cohort == "test"]
    dla = np.array([ref[pk]["dla"]["whole_head"]["dice"] for pk in ids])
    dsa = np.array([ref[pk]["dsa"]["whole_head"]["dice"] for pk in ids])
    s = testing["rows"]["dla"]["dice"]
    low, high = stats.t.interval(0.95, 2, loc=dla.mean(), scale=stats.sem(dla))
    assert s["mean"] == pytest.approx(dla.mean()) and s["n"] == 3
    assert s["ci_low"] == pytest.approx(max(low, 0.0)) and s["ci_high"] == pytest.approx(min(high, 1.0))
    d = dla - dsa
    paired = testing["paired"]["dice"]
    low, high = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    assert paired["mean"] == pytest.approx(d.mean())
    assert paired["ci_low"] == pytest.approx(low) and paired["ci_high"] == pytest.approx(high)
    assert paired["tests"]["t_p"] == pytest.approx(stats.ttest_rel(dla, dsa).pvalue)
    assert paired["text"].startswith(f"{100 * d.mean():+.1f} pp")
    assert testing["n_still"] == 2 and testing["motion_free"]["n"] == 2
    still = [
        pk for pk, study in zip(ids, truth_cohort["studies"][1:], strict=True) if study.kind != "dilated"
    ]
    sens = [ref[pk]["dla"]["whole_head"]["sensitivity"] for pk in still]
    assert testing["motion_free"]["dla_sensitivity"]["mean"] == pytest.approx(np.mean(sens))
    # by radius: the bin means are the means of the per-study bin values that are defined
    for i, b in enumerate(testing["by_radius"]):
        values = [ref[pk]["dla"]["by_radius"][i]["dice"] for pk in ids]
        values = [v for v in values if v is not None]
        if values:
            assert b["dla"]["dice"]["mean"] == pytest.approx(np.mean(values))
        else:
            assert b["dla"]["dice"] is None
    cases = {c["study"]: c for c in section["cases"]}
    assert set(cases) == {s.pk for s in truth_cohort["studies"]}
    assert cases[ids[0]]["dla_dice"] == 1.0


def test_report_page_and_downloads_show_the_truth_section(finished, users, client_for):
    html = page_client(users["admin"]).get(f"/evaluations/{finished.pk}/").content.decode()
    testing = {d["dataset"]: d for d in finished.summary["truth_referenced"]["datasets"]}["Testing"]
    assert 'id="truth-card"' in html and 'id="truth-table"' in html
    assert testing["rows"]["dla"]["dice"]["text"] in html and testing["rows"]["dsa"]["dice"]["text"] in html
    assert testing["paired"]["dice"]["text"] in html
    assert 'id="truth-radius-table"' in html and "below one voxel" in html
    assert 'id="plot-truth-radius"' in html and 'id="plot-truth-bone"' in html and "truth-plot-data" in html
    admin = client_for("admin")
    rows = list(
        csv.DictReader(
            io.StringIO(admin.get(f"/api/evaluations/{finished.pk}/summary-csv/").content.decode())
        )
    )
    truth_rows = [r for r in rows if r["table"] == "truth_referenced"]
    assert {(r["dataset"], r["metric"]) for r in truth_rows} >= {
        ("Testing", "dla dice"),
        ("Testing", "dsa dice"),
    }
    by_key = {(r["dataset"], r["metric"]): r for r in truth_rows}
    assert by_key[("Testing", "dla dice")]["text"] == testing["rows"]["dla"]["dice"]["text"]
    assert any(r["table"] == "truth_by_radius" for r in rows) and any(
        r["table"] == "truth_residual_bone" for r in rows
    )
    studies = list(
        csv.DictReader(
            io.StringIO(admin.get(f"/api/evaluations/{finished.pk}/studies-csv/").content.decode())
        )
    )
    assert all(r["truth_dla_dice_pct"] != "" and r["truth_dsa_dice_pct"] != "" for r in studies)
    data = json.loads(admin.get(f"/api/evaluations/{finished.pk}/export-json/").content.decode())
    assert data["summary"]["truth_referenced"]["available"] is True
    report = admin.get(f"/api/evaluations/{finished.pk}/report-html/").content.decode()
    assert 'id="truth-table"' in report and "<script" not in report
    pdf = admin.get(f"/api/evaluations/{finished.pk}/report-pdf/")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "evaluation-truth-report.pdf"
    path.write_bytes(pdf.content)  # for a look (pdftoppm renders its pages)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True)
    if text.returncode == 0:
        flat = " ".join(text.stdout.split())
        assert "Against the exact phantom truth" in flat and "By vessel radius" in flat
        assert testing["rows"]["dla"]["dice"]["text"] in flat


def test_cohort_without_truth_maps_says_so(phantom_study, users, client_for):
    model = make_model("no truth")
    for seed in (95, 96):
        study = phantom_study(seed=seed, shape=(24, 48, 48), spacing_mm=3.0, cohort="test")
        approve(study, users["admin"])
        store_prediction(study, model, np.asarray(study.volume("truth").array()) == VESSEL)
        Volume.objects.filter(study=study, role="truth").delete()  # a real (non-phantom) study has none
    response = launch(client_for("admin"), model_version=model.pk, cohorts=["test"])
    assert response.status_code == 202, response.json()
    evaluation = run_inline(Evaluation.objects.get(pk=response.json()["id"]))
    section = evaluation.summary["truth_referenced"]
    assert section["available"] is False and "No evaluated study has a truth volume" in section["note"]
    assert all(r.truth is None for r in evaluation.results.all())
    html = page_client(users["admin"]).get(f"/evaluations/{evaluation.pk}/").content.decode()
    assert 'id="truth-card"' in html and "No evaluated study has a truth volume" in html
    assert 'id="truth-table"' not in html
    assert client_for("admin").get(f"/api/evaluations/{evaluation.pk}/report-pdf/").status_code == 200


def test_truth_without_phantom_parameters_uses_estimated_radii(phantom_study, users, client_for):
    model = make_model("estimated radii")
    study = phantom_study(seed=97, shape=(24, 48, 48), spacing_mm=3.0, cohort="test")  # no stored params
    approve(study, users["admin"])
    store_prediction(study, model, np.asarray(study.volume("truth").array()) == VESSEL)
    response = launch(client_for("admin"), model_version=model.pk, cohorts=["test"], reference="truth")
    evaluation = run_inline(Evaluation.objects.get(pk=response.json()["id"]))
    t = evaluation.results.get().truth["referenced"]
    assert t["radius_exact"] is False and t["radius_source"].startswith("estimated from the truth mask")
    assert t["motion"] is None and t["dla"]["whole_head"]["dice"] == 1.0
    notes = evaluation.summary["truth_referenced"]["notes"]
    assert any("vessel radii estimated" in n for n in notes)


def test_reproduce_paper_and_evaluate_print_the_truth_table(finished, truth_cohort):
    from django.core.management import call_command

    from evaluation.management.commands.reproduce_paper import truth_lines, truth_results

    truth = truth_results(finished.summary["truth_referenced"])
    json.dumps(truth)  # results.json material
    testing = truth["datasets"]["Testing"]
    section = {d["dataset"]: d for d in finished.summary["truth_referenced"]["datasets"]}["Testing"]
    assert testing["dla"]["dice"]["mean"] == section["rows"]["dla"]["dice"]["mean"]
    assert testing["dla_minus_dsa"]["dice"]["wilcoxon_p"] == section["paired"]["dice"]["tests"]["wilcoxon_p"]
    assert testing["residual_bone"]["dsa"]["text"] == section["residual_bone"]["dsa"]["text"]
    assert len(truth["cases"]) == 4
    text = "\n".join(truth_lines(truth))
    assert section["rows"]["dla"]["dice"]["text"] in text and section["rows"]["dsa"]["ppv"]["text"] in text
    assert "residual bone vs the truth's bone: DSA " + section["residual_bone"]["dsa"]["text"] in text
    assert "below one voxel" in text
    assert truth_lines(truth_results({"available": False, "note": "No truth here."})) == [
        "Against the phantom truth: No truth here."
    ]
    out = io.StringIO()
    call_command(
        "evaluate",
        "--model",
        str(truth_cohort["model"].pk),
        "--cohort",
        "test",
        stdout=out,
        stderr=io.StringIO(),
    )
    assert "Against the exact phantom truth" in out.getvalue() and "3D-DSA baseline" in out.getvalue()
