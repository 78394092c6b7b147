"""`manage.py reproduce_paper` smoke run: 9 phantoms (cohort_plan(9) = 3 train / 1 validation / 5 test) at a tiny grid,
20 training iterations. Checks that every step ran through the real services (approved recipe labels with the
paper's ROI + balanced classes on validation/test, a registered model, stored predictions, two evaluations) and
that the reproduced Table 1 in results.json equals a per-patient Dice / sensitivity recomputed here with
scikit-learn from the stored class maps and approved labels; also the refusal to run next to foreign studies."""

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from scipy import ndimage as ndi
from scipy import stats
from sklearn.metrics import f1_score, recall_score

from annotations.labels import newest_approved, version_labels
from annotations.models import LabelVersion, Study, Volume
from dla.classes import VESSEL
from dla.model.base import DEFAULT_BONE_PRIOR_STRENGTH, DEFAULT_PRIOR_STRENGTH, tempered_priors
from dla.model.dense import intensity_candidates, predict_volume
from dla.phantoms import cohort_plan
from dla_web.models import TaskRun
from inference.models import ModelVersion
from inference.services import load_model

pytestmark = pytest.mark.django_db

SMOKE = dict(
    subjects=9, shape=[32, 64, 64], spacing=2.5, iterations=20, seed=0, simulated_artifact_removal=True
)


def test_reproduce_paper_smoke_run_produces_table1(tmp_path):
    out = io.StringIO()
    call_command("reproduce_paper", out=tmp_path, stdout=out, stderr=io.StringIO(), **SMOKE)
    text = out.getvalue()
    results = json.loads((tmp_path / "results.json").read_text())
    plan = cohort_plan(9, seed=0)
    split = {c: sum(1 for e in plan if e["split"] == c) for c in ("train", "validation", "test")}
    assert results["split"] == split
    for cohort, n in split.items():
        assert Study.objects.filter(cohort=cohort, pseudonym__startswith="RP0-").count() == n

    # labels: every study approved, artifacts erased (no vessel label more than one voxel from a truth
    # vessel); validation/test ROI-restricted with equal class counts
    for study in Study.objects.all():
        version = newest_approved(study)
        assert version is not None and version.review_status == LabelVersion.Review.APPROVED
        labels = version_labels(version)
        truth = np.asarray(study.volume(Volume.Role.TRUTH).array())
        near = ndi.binary_dilation(truth == VESSEL, np.ones((3, 3, 3), bool))
        assert not np.any((labels == VESSEL) & ~near)
        assert "artifact voxels erased" in version.message
        if study.cohort == "train":
            assert version.roi_box_zyx is None
        else:
            assert version.roi_box_zyx is not None
            counts = [int(np.count_nonzero(labels == c)) for c in (1, 2, 3)]
            nonempty = [n for n in counts if n]  # at this tiny grid a study may have no recipe vessel
            assert len(nonempty) >= 2 and max(nonempty) == min(nonempty)
            z0, z1, y0, y1, x0, x1 = version.roi_box_zyx
            outside = labels.copy()
            outside[z0:z1, y0:y1, x0:x1] = 0
            assert not outside.any()

    model = ModelVersion.objects.get(pk=results["model_version"]["id"])
    assert model.is_active and 1 <= results["training"]["iterations"] <= 20
    assert results["training"]["precision"] in ("bfloat16", "float32") and model.name.endswith(" amp")

    # Table 1 (approved labels inside the ROI) == an independent per-patient recomputation
    table = results["table1_vs_approved_labels"]
    assert set(table) == {"Validation", "Testing"}
    assert table["Testing"]["n"] == split["test"]
    dice, sens = [], []
    for study in Study.objects.filter(cohort="test").order_by("pseudonym"):
        version = newest_approved(study)
        ref = version_labels(version)
        pred = np.asarray(
            Volume.objects.filter(study=study, role="class_map", model_version_id=model.pk).get().array()
        )
        keep = ref != 0
        y_true, y_pred = ref[keep] == VESSEL, pred[keep] == VESSEL
        # undefined metrics (no vessel in reference and/or prediction) are left out of the mean, not zeros
        if y_true.any() or y_pred.any():
            dice.append(f1_score(y_true, y_pred))
        if y_true.any():
            sens.append(recall_score(y_true, y_pred))
    assert table["Testing"]["dice"]["mean"] == pytest.approx(np.mean(dice), abs=1e-9)
    assert table["Testing"]["sensitivity"]["mean"] == pytest.approx(np.mean(sens), abs=1e-9)
    half = stats.t.ppf(0.975, len(dice) - 1) * np.std(dice, ddof=1) / np.sqrt(len(dice))
    # the t interval, clipped to [0, 1] (a metric cannot leave it)
    assert table["Testing"]["dice"]["ci_low"] == pytest.approx(max(0.0, np.mean(dice) - half), abs=1e-9)
    assert table["Testing"]["dice"]["ci_high"] == pytest.approx(min(1.0, np.mean(dice) + half), abs=1e-9)

    # artifacts, label quality, paper numbers, reports, timings
    rates = results["residual_bone"]["Testing"]
    assert rates["dsa"]["N"] == rates["dla"]["N"] == split["test"]
    assert "/5 (" in rates["dsa"]["text"]
    quality = results["label_quality"]
    assert set(quality) == {"train", "validation", "test"}
    assert 0.0 <= quality["test"]["vessel_dice"] <= 1.0
    per_study = results["label_quality_per_study"]
    assert all(q["approved"] for q in per_study), (
        "without --reject-motion-train-labels every version is approved"
    )
    assert [q["motion_suspected"] for q in per_study] == [q["motion"] for q in per_study], (
        "the subtraction check recorded at import finds the phantoms' motion from the scans alone"
    )
    # Table 1 of the exact truth against the labels: its sensitivity is the labels' vessel precision in the ROI
    # (computed separately), so a model drawing the truth exactly cannot score more than that
    rows = [q for q in results["label_quality_per_study"] if q["cohort"] == "test"]
    assert all(q["truth_table1"] is not None for q in rows)
    for q in rows:
        if q["vessel_precision"] is not None:
            assert q["truth_table1"]["sensitivity"] == pytest.approx(q["vessel_precision"], abs=1e-12)
    ceiling = results["table1_of_the_truth"]["Testing"]
    assert ceiling["n"] == split["test"]
    assert ceiling["sensitivity"]["mean"] == pytest.approx(
        np.mean(
            [q["truth_table1"]["sensitivity"] for q in rows if q["truth_table1"]["sensitivity"] is not None]
        )
    )
    assert "The exact truth as the angiogram" in text
    assert results["paper_table1"]["Testing"]["n"] == 62
    for name in ("evaluation-approved.pdf", "evaluation-truth.pdf"):
        assert (tmp_path / name).read_bytes()[:4] == b"%PDF"
    assert set(results["wall_s"]) >= {"phantoms", "labels", "training", "inference", "evaluation", "total"}
    assert "98.5% [97.6, 99.3]%" in text and "Residual bone, Testing: DSA" in text

    # --reuse continues the same run without new studies, labels or model
    n_versions, n_models = LabelVersion.objects.count(), ModelVersion.objects.count()
    call_command(
        "reproduce_paper", out=tmp_path, reuse=True, stdout=io.StringIO(), stderr=io.StringIO(), **SMOKE
    )
    assert (LabelVersion.objects.count(), ModelVersion.objects.count()) == (n_versions, n_models)
    n_infer = TaskRun.objects.filter(kind="infer").count()

    # --reuse --prior-strength 0 predicts again (the stored predictions were made at the default strength), with the
    # plain argmax; a second such call reuses those
    def rerun_at_strength_0():
        call_command(
            "reproduce_paper",
            out=tmp_path,
            reuse=True,
            prior_strength=0.0,
            bone_prior_strength=0.0,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
            **SMOKE,
        )

    rerun_at_strength_0()
    runs = list(TaskRun.objects.filter(kind="infer").order_by("pk"))
    assert len(runs) == n_infer + 1 and runs[-1].params["prior_strength"] == 0.0
    assert runs[-1].params["bone_prior_strength"] == 0.0
    assert runs[-1].params["mirror"] is True  # reproduce_paper mirrors by default
    assert (
        "prior correction off" in runs[-1].log_tail and "mirrored test-time augmentation" in runs[-1].log_tail
    )
    study = Study.objects.filter(cohort="test").order_by("pseudonym").first()
    fill = np.asarray(study.volume(Volume.Role.FILL).array())
    maps = Volume.objects.filter(study=study, role="class_map", model_version_id=model.pk).order_by("pk")
    priors = model.metrics["class_priors"]
    for volume, class_priors in (
        (
            maps.first(),
            tempered_priors(
                tuple(priors[k] for k in ("vessel", "bone", "soft_tissue")),
                DEFAULT_PRIOR_STRENGTH,
                DEFAULT_BONE_PRIOR_STRENGTH,
            ),
        ),
        (maps.last(), None),
    ):
        expected = predict_volume(
            load_model(model),
            fill,
            candidate_mask=intensity_candidates(fill, 100),
            class_priors=class_priors,
            mirror=True,
        )
        assert (np.asarray(volume.array()) == expected.class_map).mean() > 0.999
    rerun_at_strength_0()
    assert TaskRun.objects.filter(kind="infer").count() == n_infer + 1
    with pytest.raises(CommandError, match="--reuse"):
        call_command("reproduce_paper", out=tmp_path, stdout=io.StringIO(), stderr=io.StringIO(), **SMOKE)


def test_reproduce_paper_refuses_foreign_cohort_studies(phantom_study, tmp_path):
    phantom_study(seed=3, cohort="train", pseudonym="SOMEONE-ELSE")
    with pytest.raises(CommandError, match="SOMEONE-ELSE"):
        call_command("reproduce_paper", out=tmp_path, stdout=io.StringIO(), stderr=io.StringIO(), **SMOKE)


@pytest.mark.parametrize("cohort", ["train", "test"])
def test_no_click_keeps_every_vessel_tree_the_click_would_drop(cohort):
    """--no-clicked-tree-only: no seed, every vessel component above the recipe's mm^3 floor is kept (a superset
    of the clicked tree), and the validation/test ROI box holds all of them."""
    from dla.labeling.recipe import DEFAULT_VESSEL_EDGE_FRACTION, RecipeParams, run_recipe
    from dla.phantoms import default_spacing_mm, make_subject
    from evaluation.management.commands.reproduce_paper import Command

    shape = (96, 96, 96)  # vessels not connected to the clicked tree appear from about this grid on
    spacing = default_spacing_mm(shape)
    subject = make_subject(shape, seed=0)
    command = Command()
    kept = {}
    for clicked in (True, False):
        command.o = dict(
            label_growing=True,
            vessel_edge_fraction=DEFAULT_VESSEL_EDGE_FRACTION,
            clicked_tree_only=clicked,
            vessel_threshold_hu=600.0,
            bone_threshold_hu=550.0,
            roi_margin_mm=10.0,
        )
        params, box = command.recipe_params(
            subject.fill_hu, subject.subtracted_hu, subject.truth, spacing, cohort
        )
        assert params["seeded_vessels_only"] is clicked and bool(params["seed_points_zyx"]) is clicked
        assert (box is None) == (cohort == "train")
        labels = run_recipe(
            subject.fill_hu, subject.subtracted_hu, spacing, RecipeParams.from_dict(params)
        ).labels
        kept[clicked] = labels == VESSEL
        if box is not None:
            z0, z1, y0, y1, x0, x1 = box
            inside = np.zeros(shape, bool)
            inside[z0:z1, y0:y1, x0:x1] = True
            assert kept[clicked].any() and not (kept[clicked] & ~inside).any()
    assert not (kept[True] & ~kept[False]).any()
    assert (
        ndi.label(kept[False], np.ones((3, 3, 3), bool))[1]
        > ndi.label(kept[True], np.ones((3, 3, 3), bool))[1]
    )


@pytest.mark.parametrize(
    "option, message",
    [
        ({"prior_strength": 2.0}, "--prior-strength must be from 0 to 1, got 2"),
        ({"bone_prior_strength": -0.5}, "--bone-prior-strength must be from 0 to 1, got -0.5"),
        ({"vessel_edge_fraction": 1.5}, "--vessel-edge-fraction: vessel_edge_fraction=1.5 is outside"),
    ],
)
def test_reproduce_paper_refuses_bad_options_before_making_anything(tmp_path, option, message):
    with pytest.raises(CommandError, match=message):
        call_command(
            "reproduce_paper", out=tmp_path, stdout=io.StringIO(), stderr=io.StringIO(), **{**SMOKE, **option}
        )
    assert not Study.objects.exists()
