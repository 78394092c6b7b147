"""Evaluation services: check that a model version x cohorts can be evaluated (``evaluation_plan``), run the
evaluation (``run_evaluation``, called by the ``evaluate`` task); two evaluations are compared in
``evaluation/comparison.py``.

All numbers come from ``dla.stats.metrics`` (2x2 tables, metrics, class confusion, cohort summaries, paired
differences, Table 1) and ``dla.stats.artifacts`` (residual bone); this module loads volumes, checks the
inputs, calls those functions and saves. Decisions:

* Reference: ``approved`` = the study's newest APPROVED label version (its ROI box, when set, limits the scored
  voxels); ``truth`` = the phantom's exact truth volume (no ROI). With ``approved``, phantom studies are also
  scored against their truth inside the same ROI and reported separately ("label quality" is then visible).
* Prediction: the newest ``class_map`` volume whose ``model_version_id`` is the model's pk. The 3D-DLA volume is
  the newest ``dla`` volume of that model; when inference did not store one it is derived exactly as inference
  does (``dla.model.dense.dla_volume``: fill HU where the class map says vessel, 0 HU (a DSA background) elsewhere).
* Residual bone: bright voxels of the DSA (``subtracted``) and of the 3D-DLA inside the reference's bone class
  (``dla.stats.artifacts.residual_bone`` with the evaluation's ``bright_hu`` / ``min_cluster_voxels``). The
  location breakdown (otic capsule, nasal cavity, skull base, vault) needs the phantom's region masks, which are
  not stored: only the anatomy (no vessels, noise or motion) is rebuilt from ``study.metadata["phantom"]["params"]``
  (``dla.phantoms.anatomy_from_params``), and used only when the stored anatomy numbers match the seed and the
  stored truth's bone lies inside the rebuilt bone. Real studies get no breakdown, and the report says so.
* Truth-referenced section (every study with a truth volume, whatever the reference): the 3D-DLA class map's
  vessels and the DSA baseline (``dla.stats.truth.dsa_baseline_vessels``: the subtracted volume >= 600 HU in
  26-connected components >= 20 mm^3, the recipe's threshold and floor, no growing, seed or clean-up) are scored against the
  truth's vessels over the whole volume, by vessel radius and along the centreline (``dla.stats.truth``); the
  radii are the phantom's own (``dla.phantoms.vessel_radii_from_params``, used only when the regenerated vessels
  equal the stored truth's voxel for voxel), else estimated from the mask and the report says so. Residual bone
  against the truth's bone, bright voxels within two voxels of a truth vessel attributed to the vessel, clusters
  with mm^3 and distance (``residual_bone_clusters``; the evaluation's ``min_cluster_voxels`` converted to mm^3
  on the study's grid). Stored in ``StudyResult.truth["referenced"]``; the cohort means with 95% CIs, paired DLA -
  DSA differences with paired t and Wilcoxon tests, counts and per-case rows in ``summary["truth_referenced"]``.
  Cohorts without truth volumes get ``{"available": false, "note": ...}`` there instead of an error.
* Comparison (``compare``): paired per-patient differences a - b (``paired_difference``, the CI settings of a) on
  the studies both evaluations scored: the Table 1 metrics, the 3D-DLA's truth metrics per cohort (whole head,
  centreline, r >= 1 voxel, Dice per radius bin both have; each side's cohort means; the cases with residual bone),
  one sentence per cohort on which is better on Dice (or that the 95% CI contains 0), and each model's costs from
  what is stored: architecture (``network_config``), parameters (counted from the architecture), training time
  (its training TaskRun, started to finished), iterations, inference time per study (the ``elapsed_s`` the
  inference TaskRun of each scored class map stored, found by the volume's source ``infer-run-<id>``). Peak memory
  is measured by neither task and is reported as not recorded.
* Bad input is refused before anything is queued (``EvaluationInputError``, a 400): studies without a
  prediction or reference are listed (``allow_missing`` evaluates the others and lists them in the report), a
  reference on another grid than the prediction and an empty ROI box always refuse. Problems found only when the
  voxels are read (no labeled voxel inside the ROI) fail the run naming the study; results are written in one
  transaction at the end, so nothing is half-written.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from django.db import transaction

from annotations.labels import newest_approved, version_labels
from annotations.models import Study, Volume
from dla.classes import BONE, VESSEL
from dla.labeling.recipe import DEFAULT_MIN_VESSEL_COMPONENT_MM3, RecipeParams
from dla.labeling.roi import RoiBoxError, box_mask, parse_box
from dla.model.dense import dla_volume
from dla.stats.artifacts import (
    ArtifactError,
    ResidualBone,
    cohort_artifact_rate,
    residual_bone,
    residual_bone_clusters,
)
from dla.stats.metrics import (
    CLASS_CONFUSION_ORDER,
    METRIC_NAMES,
    TABLE1_METRICS,
    Confusion,
    MetricsError,
    StudyMetrics,
    Summary,
    class_confusion,
    cohort_summary,
    format_frequency,
    format_paper_pct,
    format_pct,
    paired_difference,
    paired_tests,
    table1,
    vessel_confusion,
)
from dla.stats.truth import TruthError, TruthReference, dsa_baseline_vessels, estimate_radius_mm

from .models import Evaluation, StudyResult

COHORTS = (Study.Cohort.TRAIN, Study.Cohort.VALIDATION, Study.Cohort.TEST)
DATASET_NAMES = {"train": "Training", "validation": "Validation", "test": "Testing"}
"""Table 1 row names; "Validation" and "Testing" match the keys of dla.stats.metrics.PAPER_TABLE1."""
REGION_NAMES = ("otic_capsule", "nasal_cavity", "skull_base", "vault")
METRIC_LABELS = {
    "sensitivity": "Sensitivity (recall)",
    "ppv": "PPV (precision)",
    "dice": "DSC (F1-score)",
    "accuracy": "Accuracy",
    "specificity": "Specificity",
}


class EvaluationInputError(ValueError):
    """An evaluation that cannot be run as asked; the message names the problem (and lists the studies)."""


# ------------------------------------------------------------------------------------------------ plan


def prediction_volume(study: Study, model_version_id: int) -> Volume | None:
    """The newest class_map volume of ``study`` made by the model."""
    return (
        Volume.objects.filter(study=study, role=Volume.Role.CLASS_MAP, model_version_id=model_version_id)
        .order_by("-created_at", "-id")
        .first()
    )


def _listing(items: list[str], limit: int = 30) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_cohorts(cohorts) -> list[str]:
    if isinstance(cohorts, str):
        cohorts = [cohorts]
    if not isinstance(cohorts, list | tuple) or not cohorts:
        raise EvaluationInputError("give at least one cohort (train, validation or test)")
    out = []
    for cohort in cohorts:
        if cohort not in COHORTS:
            raise EvaluationInputError(f"unknown cohort {cohort!r}; use train, validation or test")
        if cohort in out:
            raise EvaluationInputError(f"cohort {cohort!r} is given twice")
        out.append(cohort)
    return out


def _roi_problem(box, shape) -> str | None:
    if box is None:
        return None
    try:
        parse_box(box, shape)
    except RoiBoxError as exc:
        return str(exc)
    return None


def evaluation_plan(*, model_version_id: int, cohorts, reference: str, allow_missing: bool = False) -> dict:
    """Check the inputs and return ``{"entries": [...], "missing": [...]}`` without reading voxels.

    entries: ``{study, pseudonym, cohort, prediction, label_version | None, truth | None, roi}`` in cohort and
    pseudonym order; missing: ``{study, pseudonym, cohort, reason}``. Raises EvaluationInputError: unknown
    cohort, a cohort without studies, studies lacking a prediction or reference (unless ``allow_missing``; a
    cohort with none left always), a reference grid differing from the prediction's, an empty ROI box.
    """
    cohorts = check_cohorts(cohorts)
    if reference not in Evaluation.Reference.values:
        raise EvaluationInputError(f"unknown reference {reference!r}; use 'approved' or 'truth'")
    entries, missing, grid, roi_errors, empty = [], [], [], [], []
    for cohort in cohorts:
        studies = list(Study.objects.filter(cohort=cohort).order_by("pseudonym"))
        if not studies:
            raise EvaluationInputError(f"the {cohort} cohort has no studies; assign studies to it first")
        kept = 0
        for study in studies:
            reasons = []
            prediction = prediction_volume(study, model_version_id)
            if prediction is None:
                reasons.append(f"no prediction (class map) of model #{model_version_id}: run inference")
            version = truth = None
            if reference == Evaluation.Reference.APPROVED:
                version = newest_approved(study)
                if version is None:
                    reasons.append("no approved label version")
            truth = study.volume(Volume.Role.TRUTH)
            if reference == Evaluation.Reference.TRUTH and truth is None:
                reasons.append("no truth volume (not a phantom)")
            if reasons:
                missing.append(
                    {
                        "study": study.pk,
                        "pseudonym": study.pseudonym,
                        "cohort": cohort,
                        "reason": "; ".join(reasons),
                    }
                )
                continue
            ref_shape = list(version.shape) if version is not None else list(truth.shape)
            if ref_shape != list(prediction.shape):
                what = f"labels v{version.number}" if version is not None else "truth"
                grid.append(f"{study.pseudonym} ({what} {ref_shape}, prediction {list(prediction.shape)})")
                continue
            roi = version.roi_box_zyx if version is not None else None
            problem = _roi_problem(roi, ref_shape)
            if problem:
                roi_errors.append(f"{study.pseudonym} ({problem})")
                continue
            if version is not None:
                labeled = sum(int(v) for k, v in (version.counts or {}).items() if str(k) != "0")
                if labeled == 0:
                    empty.append(f"{study.pseudonym} (labels v{version.number} have no labeled voxel)")
                    continue
            entries.append(
                {
                    "study": study.pk,
                    "pseudonym": study.pseudonym,
                    "cohort": cohort,
                    "prediction": prediction.pk,
                    "label_version": version.pk if version is not None else None,
                    "label_number": version.number if version is not None else None,
                    "truth": truth.pk if truth is not None and list(truth.shape) == ref_shape else None,
                    "roi": list(roi) if roi else None,
                }
            )
            kept += 1
        if kept == 0 and not grid and not roi_errors and not empty:
            lacking = [f"{m['pseudonym']} ({m['reason']})" for m in missing if m["cohort"] == cohort]
            raise EvaluationInputError(
                f"nothing to evaluate in the {cohort} cohort: every study lacks a prediction or a reference: "
                + _listing(lacking)
            )
    if grid:
        raise EvaluationInputError(
            "reference labels not on the prediction's grid (re-run inference on the study's fill volume or "
            "label the same grid): " + _listing(grid)
        )
    if roi_errors or empty:
        raise EvaluationInputError(
            "empty region of interest, nothing to score: " + _listing(roi_errors + empty)
        )
    if missing and not allow_missing:
        raise EvaluationInputError(
            f"{len(missing)} studies cannot be evaluated: "
            + _listing([f"{m['pseudonym']} ({m['reason']})" for m in missing])
            + "; fix them, or set allow_missing to evaluate the others and list these in the report"
        )
    return {"entries": entries, "missing": missing}


# ------------------------------------------------------------------------------------------------ running


def phantom_regions(study: Study, truth: np.ndarray | None, shape) -> tuple[dict | None, str]:
    """Anatomical region masks of a phantom study, rebuilt from its stored generation parameters (seed, grid,
    spacing; the anatomy alone, no vessels, image physics or motion), or (None, why).

    Used only when they fit the stored truth: every BONE voxel of the truth must be bone of the rebuilt anatomy
    (vessel lumens and metal only ever cut bone away), and the stored anatomy numbers must match the seed's."""
    params = ((study.metadata or {}).get("phantom") or {}).get("params") or {}
    if not params:
        return None, "no location breakdown: not a phantom with stored generation parameters"
    if truth is None:
        return None, "no location breakdown: the phantom's truth volume is missing"
    from dla.phantoms import PhantomParameterError, anatomy_from_params

    if list(params.get("shape_zyx", [])) != list(shape):
        return None, "no location breakdown: the stored phantom grid differs from the study's"
    try:
        anatomy = anatomy_from_params(params)
    except PhantomParameterError as exc:
        return None, f"no location breakdown: the phantom could not be regenerated ({exc})"
    truth = np.asarray(truth)
    if truth.shape != anatomy.truth.shape:
        return None, "no location breakdown: the phantom's truth volume is on another grid"
    if np.any((truth == BONE) & (anatomy.truth != BONE)):
        return None, "no location breakdown: the stored truth has bone outside the regenerated phantom's bone"
    return {name: anatomy.regions[name] for name in REGION_NAMES if name in anatomy.regions}, ""


def _residual_dict(result: ResidualBone | None, error: str = "") -> dict | None:
    if result is None:
        return {"error": error} if error else None
    return dataclasses.asdict(result)


def _metrics_dict(m: StudyMetrics) -> dict:
    return {
        "tp": m.confusion.tp,
        "fp": m.confusion.fp,
        "fn": m.confusion.fn,
        "tn": m.confusion.tn,
        **{name: getattr(m, name) for name in METRIC_NAMES},
        "reasons": dict(m.reasons),
    }


def _score(reference: np.ndarray, predicted: np.ndarray, roi: np.ndarray | None, pseudonym: str, what: str):
    try:
        confusion = vessel_confusion(reference, predicted, roi)
        return StudyMetrics.from_confusion(confusion), class_confusion(reference, predicted, roi)
    except MetricsError as exc:
        raise EvaluationInputError(f"{pseudonym} ({what}): {exc}")


def evaluate_study(evaluation: Evaluation, entry: dict) -> dict:
    """All numbers of one study (plain JSON-ready dict; nothing is saved)."""
    study = Study.objects.get(pk=entry["study"])
    prediction = Volume.objects.get(pk=entry["prediction"])
    predicted = np.asarray(prediction.array())
    truth_volume = Volume.objects.filter(pk=entry["truth"]).first() if entry.get("truth") else None
    truth = np.asarray(truth_volume.array()) if truth_volume is not None else None
    if entry["label_version"] is not None:
        from annotations.models import LabelVersion

        version = LabelVersion.objects.get(pk=entry["label_version"])
        reference = version_labels(version)
        what = f"labels v{version.number}"
    else:
        reference, what = truth, "truth"
    roi = box_mask(reference.shape, [entry["roi"]]) if entry["roi"] else None
    metrics, confusion3 = _score(reference, predicted, roi, study.pseudonym, what)
    scored = reference != 0 if roi is None else (reference != 0) & roi
    voxel_ml = float(np.prod(prediction.spacing_mm)) / 1000.0
    vessel_ml = float(np.count_nonzero(scored & (reference == VESSEL))) * voxel_ml
    truth_metrics = None
    if evaluation.reference == Evaluation.Reference.APPROVED and truth is not None:
        m_truth, c_truth = _score(truth, predicted, roi, study.pseudonym, "truth")
        truth_metrics = {**_metrics_dict(m_truth), "class_confusion": c_truth.tolist()}

    # residual bone: DSA vs 3D-DLA inside the reference's bone class
    bone = reference == BONE
    regions, region_note = phantom_regions(study, truth, reference.shape)
    artifacts: dict = {"region_note": region_note}
    params = {
        "bright_hu": evaluation.bright_hu,
        "min_cluster_voxels": evaluation.min_cluster_voxels,
        "regions": regions,
    }
    dsa_volume = study.volume(Volume.Role.SUBTRACTED)
    dsa_hu = None
    if dsa_volume is None:
        artifacts["dsa"] = {"error": "no subtracted (DSA) volume"}
    elif list(dsa_volume.shape) != list(reference.shape):
        artifacts["dsa"] = {"error": f"DSA grid {dsa_volume.shape} differs from the reference"}
    else:
        dsa_hu = np.asarray(dsa_volume.array())
        try:
            artifacts["dsa"] = _residual_dict(residual_bone(dsa_hu, bone, **params))
        except ArtifactError as exc:
            artifacts["dsa"] = {"error": str(exc)}
    dla = (
        Volume.objects.filter(study=study, role=Volume.Role.DLA, model_version_id=prediction.model_version_id)
        .order_by("-created_at", "-id")
        .first()
    )
    if dla is not None and list(dla.shape) == list(reference.shape):
        dla_hu, artifacts["dla_source"] = np.asarray(dla.array()), f"stored 3D-DLA volume #{dla.pk}"
    else:
        fill = study.volume(Volume.Role.FILL)
        if fill is not None and list(fill.shape) == list(reference.shape):
            dla_hu = dla_volume(np.asarray(fill.array()), predicted)
            artifacts["dla_source"] = "derived from the fill volume and the class map (no stored 3D-DLA)"
        else:
            dla_hu = None
            artifacts["dla"] = {"error": "no 3D-DLA volume and no fill volume on the prediction's grid"}
    if dla_hu is not None:
        try:
            artifacts["dla"] = _residual_dict(residual_bone(dla_hu, bone, **params))
        except ArtifactError as exc:
            artifacts["dla"] = {"error": str(exc)}
    if truth is not None:
        referenced = truth_referenced_study(
            evaluation, study, truth, predicted, dla_hu, dsa_hu, tuple(prediction.spacing_mm), regions
        )
        truth_metrics = {**(truth_metrics or {}), "referenced": referenced}
    return {
        "study": study,
        "pseudonym": study.pseudonym,
        "cohort": entry["cohort"],
        "label_version_id": entry["label_version"],
        "prediction": prediction,
        **_metrics_dict(metrics),
        "class_confusion": confusion3.tolist(),
        "vessel_volume_ml": vessel_ml,
        "roi_box_zyx": entry["roi"],
        "artifacts": artifacts,
        "truth": truth_metrics,
    }


# ------------------------------------------------------------------------------------------------ truth section

DSA_BASELINE = {
    "vessel_threshold_hu": RecipeParams().vessel_threshold_hu,
    "min_vessel_component_mm3": DEFAULT_MIN_VESSEL_COMPONENT_MM3,
}
"""The DSA baseline: the recipe's vessel threshold and component floor (its defaults), nothing else."""
TRUTH_METRICS = (
    "dice",
    "sensitivity",
    "ppv",
    "centreline_sensitivity",
    "cldice",
    "resolved_dice",
    "resolved_centreline_sensitivity",
)
TRUTH_METRIC_LABELS = {
    "dice": "Dice",
    "sensitivity": "Sensitivity",
    "ppv": "PPV",
    "centreline_sensitivity": "Centreline sensitivity",
    "cldice": "clDice",
    "resolved_dice": "Dice, r >= 1 voxel",
    "resolved_centreline_sensitivity": "Centreline sens., r >= 1 voxel",
}
BIN_METRICS = ("dice", "sensitivity", "centreline_sensitivity")
METHODS = {"dla": "3D-DLA", "dsa": "3D-DSA baseline"}


def _phantom_params(study: Study) -> dict:
    return ((study.metadata or {}).get("phantom") or {}).get("params") or {}


def phantom_vessel_radii(study: Study, truth_vessel: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The phantom's own vessel radii (float32 mm [z, y, x]) rebuilt from its stored parameters, or (None, why);
    used only when the rebuilt vessels equal ``truth_vessel`` voxel for voxel."""
    params = _phantom_params(study)
    if not params:
        return None, "not a phantom with stored generation parameters"
    from dla.phantoms import PhantomParameterError, vessel_radii_from_params

    try:
        radii = vessel_radii_from_params(params)
    except PhantomParameterError as exc:
        return None, f"the phantom's vessels could not be regenerated ({exc})"
    if radii.vessel.shape != truth_vessel.shape or not np.array_equal(radii.vessel, truth_vessel):
        return None, "the regenerated phantom vessels differ from the stored truth"
    return radii.radius_mm, ""


def truth_referenced_study(
    evaluation: Evaluation, study: Study, truth, predicted, dla_hu, dsa_hu, spacing_mm, regions
) -> dict:
    """The truth-referenced numbers of one study (JSON-ready; see the module docstring). Problems of one side
    (no DSA, bad input) become ``{"error": ...}`` for that side, never a failed run."""
    truth = np.asarray(truth)
    truth_vessel = truth == VESSEL
    params = _phantom_params(study)
    motion = (params.get("motion") or {}).get("enabled") if params else None
    radius, why = phantom_vessel_radii(study, truth_vessel)
    out: dict = {"motion": None if motion is None else bool(motion)}
    if radius is None:
        radius = estimate_radius_mm(truth_vessel, spacing_mm)
        out["radius_source"] = f"estimated from the truth mask ({why})"
        out["radius_exact"] = False
    else:
        out["radius_source"] = "the phantom's own vessel radii"
        out["radius_exact"] = True
    try:
        ref = TruthReference(truth_vessel, radius, spacing_mm)
    except TruthError as exc:
        return {**out, "error": str(exc)}
    out["dla"] = ref.score(np.asarray(predicted) == VESSEL).to_dict()
    if dsa_hu is None:
        out["dsa"] = {"error": "no subtracted (DSA) volume on the prediction's grid"}
    else:
        try:
            out["dsa"] = ref.score(dsa_baseline_vessels(dsa_hu, spacing_mm, **DSA_BASELINE)).to_dict()
        except TruthError as exc:
            out["dsa"] = {"error": str(exc)}
    voxel_mm3 = float(np.prod(spacing_mm))
    bone = truth == BONE
    residual = {}
    for side, hu in (("dla", dla_hu), ("dsa", dsa_hu)):
        if hu is None:
            residual[side] = {"error": f"no {METHODS[side]} volume on the truth's grid"}
            continue
        try:
            residual[side] = residual_bone_clusters(
                hu,
                bone,
                truth_vessel,
                spacing_mm,
                bright_hu=evaluation.bright_hu,
                min_cluster_mm3=evaluation.min_cluster_voxels * voxel_mm3,
                regions=regions,
            ).to_dict()
        except ArtifactError as exc:
            residual[side] = {"error": str(exc)}
    out["residual_bone"] = residual
    out["dsa_baseline"] = dict(DSA_BASELINE)
    return out


def _truth_values(side: dict) -> dict:
    """Per-study values of TRUTH_METRICS (fractions or None) from a stored ``TruthVesselMetrics`` dict."""
    wh, cl, res = side["whole_head"], side["centreline"], side["resolved"]
    return {
        "dice": wh["dice"],
        "sensitivity": wh["sensitivity"],
        "ppv": wh["ppv"],
        "centreline_sensitivity": cl["sensitivity"],
        "cldice": cl["cldice"],
        "resolved_dice": res["dice"],
        "resolved_centreline_sensitivity": res["centreline_sensitivity"],
    }


def _pp_text(d: Summary) -> str:
    text = f"{100 * d.mean:+.1f} pp"
    return text + (
        f" [{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}]" if d.ci_low is not None else " [no CI]"
    )


def _p_text(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _cohort(values, evaluation: Evaluation) -> dict | None:
    if not any(v is not None for v in values):
        return None
    return _summary_dict(
        cohort_summary(
            values, ci=evaluation.ci_method, n_boot=evaluation.n_boot, seed=evaluation.seed, bounds=(0.0, 1.0)
        )
    )


def _paired(a, b, evaluation: Evaluation) -> dict | None:
    """DLA - DSA per-patient differences (mean, CI, text in percentage points) and the paired tests."""
    if not any(x is not None and y is not None for x, y in zip(a, b, strict=True)):
        return None
    d = paired_difference(a, b, ci=evaluation.ci_method, n_boot=evaluation.n_boot, seed=evaluation.seed)
    t = paired_tests(a, b)
    return {
        **dataclasses.asdict(d),
        "text": _pp_text(d),
        "tests": dataclasses.asdict(t),
        "p_text": f"p = {_p_text(t.wilcoxon_p)} (Wilcoxon), {_p_text(t.t_p)} (paired t)",
    }


def _rate(flags: list[bool]) -> dict:
    if not flags:
        return {"n": 0, "N": 0, "text": "n/a"}
    n = sum(1 for f in flags if f)
    return {"n": n, "N": len(flags), "text": format_frequency(n, len(flags))}


def truth_summary(evaluation: Evaluation, results: list[dict]) -> dict:
    """``summary["truth_referenced"]``: per dataset the DLA and DSA cohort means with 95% CIs, the paired DLA - DSA
    differences and tests (all patients and motion-free ones), the same by vessel radius, residual bone counts,
    and one row per case for the charts. ``available`` is False (with a note) when no study has a truth map."""
    with_truth = [r for r in results if (r.get("truth") or {}).get("referenced")]
    without = [r["pseudonym"] for r in results if r not in with_truth]
    rule = (
        f"The DSA baseline's vessels: subtracted volume >= {DSA_BASELINE['vessel_threshold_hu']:g} HU in "
        f"26-connected components >= {DSA_BASELINE['min_vessel_component_mm3']:g} mm^3 (the recipe's threshold and floor; no hysteresis growing, "
        "no seed point, no manual clean-up)"
    )
    if not with_truth:
        return {
            "available": False,
            "note": "No evaluated study has a truth volume (a phantom's exact truth map), so there is no "
            "truth-referenced evaluation for these cohorts; Table 1 above is against the reference labels only.",
        }
    notes = []
    if without:
        notes.append(
            f"{len(without)} studies without a truth volume are not in this section: {_listing(without)}"
        )
    errors = [
        f"{r['pseudonym']}: {r['truth']['referenced']['error']}"
        for r in with_truth
        if "error" in r["truth"]["referenced"]
    ]
    if errors:
        notes.append("not scored: " + "; ".join(errors))
    scored = [r for r in with_truth if "error" not in r["truth"]["referenced"]]
    estimated = [r["pseudonym"] for r in scored if not r["truth"]["referenced"]["radius_exact"]]
    if estimated:
        notes.append(
            f"vessel radii estimated from the truth mask (no phantom radii) for {len(estimated)} studies: "
            + _listing(estimated)
        )
    first = scored[0]["truth"]["referenced"]["dla"] if scored else None
    voxel_sizes = sorted({round(r["truth"]["referenced"]["dla"]["voxel_mm"], 4) for r in scored})
    if len(voxel_sizes) > 1:
        notes.append(
            "the studies have different voxel sizes "
            + ", ".join(f"{v:g}" for v in voxel_sizes)
            + " mm; bins are marked below/at least one voxel for the first"
        )
    bins = (
        [
            {k: b[k] for k in ("label", "low_mm", "high_mm", "relation", "below_voxel")}
            for b in first["by_radius"]
        ]
        if first
        else []
    )
    by_cohort: dict[str, list[dict]] = {}
    for r in scored:
        by_cohort.setdefault(r["cohort"], []).append(r)
    datasets = []
    for cohort in [c for c in evaluation.cohorts if c in by_cohort]:
        rows = by_cohort[cohort]
        refs = [r["truth"]["referenced"] for r in rows]
        vals = {
            side: [_truth_values(t[side]) if "error" not in t[side] else None for t in refs]
            for side in METHODS
        }

        def series(side, metric, keep=None, _vals=vals):
            return [
                None if v is None or (keep is not None and not keep[i]) else v[metric]
                for i, v in enumerate(_vals[side])
            ]

        still = [t.get("motion") is False for t in refs]
        entry = {
            "dataset": DATASET_NAMES[cohort],
            "n": len(rows),
            "n_dsa": sum(1 for v in vals["dsa"] if v is not None),
            "n_motion": sum(1 for t in refs if t.get("motion")),
            "n_still": sum(still),
            "rows": {
                side: {m: _cohort(series(side, m), evaluation) for m in TRUTH_METRICS} for side in METHODS
            },
            "paired": {m: _paired(series("dla", m), series("dsa", m), evaluation) for m in TRUTH_METRICS},
            "motion_free": {
                "n": sum(still),
                **{
                    f"{side}_{m}": _cohort(series(side, m, still), evaluation)
                    for side in METHODS
                    for m in ("sensitivity", "centreline_sensitivity")
                },
                "paired_sensitivity": _paired(
                    series("dla", "sensitivity", still), series("dsa", "sensitivity", still), evaluation
                ),
                "paired_centreline_sensitivity": _paired(
                    series("dla", "centreline_sensitivity", still),
                    series("dsa", "centreline_sensitivity", still),
                    evaluation,
                ),
            },
        }
        by_radius = []
        for i, b in enumerate(bins):
            per = {
                side: [None if "error" in t[side] else t[side]["by_radius"][i] for t in refs]
                for side in METHODS
            }
            item = {**b, "n_studies": sum(1 for x in per["dla"] if x and x["truth_voxels"] > 0)}
            for side in METHODS:
                item[side] = {
                    m: _cohort([None if x is None else x[m] for x in per[side]], evaluation)
                    for m in BIN_METRICS
                }
            item["paired_dice"] = _paired(
                [None if x is None else x["dice"] for x in per["dla"]],
                [None if x is None else x["dice"] for x in per["dsa"]],
                evaluation,
            )
            by_radius.append(item)
        entry["by_radius"] = by_radius
        bone = {}
        for side in METHODS:
            flags = [(t["residual_bone"].get(side) or {}) for t in refs]
            ok = [(f, t.get("motion")) for f, t in zip(flags, refs, strict=True) if "error" not in f]
            bone[side] = {
                **_rate([f["present"] for f, _ in ok]),
                "motion": _rate([f["present"] for f, m in ok if m]),
                "still": _rate([f["present"] for f, m in ok if m is False]),
            }
        entry["residual_bone"] = bone
        datasets.append(entry)
    cases = []
    for r in scored:
        t = r["truth"]["referenced"]
        case = {
            "study": r["study"].pk,
            "pseudonym": r["pseudonym"],
            "cohort": r["cohort"],
            "motion": t.get("motion"),
            "radius_exact": t["radius_exact"],
            "bone_min_mm3": next(
                (rb["min_cluster_mm3"] for rb in t["residual_bone"].values() if "error" not in rb), None
            ),
        }
        for side in METHODS:
            v = _truth_values(t[side]) if "error" not in t[side] else {}
            for m in ("dice", "sensitivity", "ppv", "centreline_sensitivity", "resolved_dice"):
                case[f"{side}_{m}"] = v.get(m)
            rb = t["residual_bone"].get(side) or {}
            case[f"{side}_bone_present"] = rb.get("present") if "error" not in rb else None
            case[f"{side}_bone_mm3"] = rb.get("largest_cluster_mm3") if "error" not in rb else None
            case[f"{side}_bone_clusters"] = rb.get("n_present_clusters") if "error" not in rb else None
            big = (rb.get("clusters") or [None])[0]
            case[f"{side}_bone_distance_mm"] = big["distance_mm"] if big else None
            case[f"{side}_bone_regions"] = big["regions"] if big else []
        cases.append(case)
    margins = sorted(
        {
            side["vessel_margin_mm"]
            for r in scored
            for side in r["truth"]["referenced"]["residual_bone"].values()
            if "error" not in side
        }
    )
    return {
        "available": bool(scored),
        "note": "" if scored else "no study could be scored against its truth",
        "notes": notes,
        "metrics": [{"key": m, "label": TRUTH_METRIC_LABELS[m]} for m in TRUTH_METRICS],
        "bins": bins,
        "voxel_mm": first["voxel_mm"] if first else None,
        "near_mm": first["near_mm"] if first else None,
        "dsa_baseline": rule,
        "residual_bone_rule": (
            f"Residual bone: a 26-connected cluster of voxels >= {evaluation.bright_hu:g} HU inside the truth's "
            f"bone (eroded by one voxel) of at least {evaluation.min_cluster_voxels} voxels' volume, after "
            "dropping bright voxels within "
            + (" or ".join(f"{m:.3g} mm" for m in margins) or "two voxels")
            + " (two voxels) of a truth vessel (a vessel drawn too thick is not bone)"
        ),
        "datasets": datasets,
        "cases": cases,
    }


def _summary_dict(summary: Summary | None) -> dict | None:
    if summary is None:
        return None
    return {**dataclasses.asdict(summary), "text": format_pct(summary)}


def _table_rows(rows_by_dataset: dict[str, list[StudyMetrics]], evaluation: Evaluation) -> list[dict]:
    rows = table1(rows_by_dataset, ci=evaluation.ci_method, n_boot=evaluation.n_boot, seed=evaluation.seed)
    out = []
    for row in rows:
        entry = {"dataset": row["dataset"], "n": row["n"]}
        notes = []
        for metric in TABLE1_METRICS:
            s = row[metric]
            entry[metric] = _summary_dict(s)
            if s is None:
                notes.append(f"{metric}: undefined for every patient")
            elif s.note:
                for part in s.note.split("; "):
                    notes.append(part if part.startswith("one patient") else f"{metric}: {part}")
        if "paper" in row:
            paper = row["paper"]
            entry["paper"] = {
                "n": paper["n"],
                **{
                    m: {
                        "mean": paper[m][0],
                        "ci_low": paper[m][1],
                        "ci_high": paper[m][2],
                        "text": format_paper_pct(paper[m]),
                    }
                    for m in TABLE1_METRICS
                },
            }
        entry["notes"] = sorted(set(notes), key=notes.index)
        out.append(entry)
    return out


def _artifact_summary(results: list[dict]) -> dict:
    out = {}
    for side in ("dsa", "dla"):
        done = [
            ResidualBone(**{k: v for k, v in r["artifacts"][side].items()})
            for r in results
            if r["artifacts"].get(side) and "error" not in r["artifacts"][side]
        ]
        errors = [r["pseudonym"] for r in results if (r["artifacts"].get(side) or {}).get("error")]
        if not done:
            out[side] = {"n": 0, "N": 0, "pct": None, "text": "not available", "unavailable": errors}
            continue
        n, total, pct, text = cohort_artifact_rate(done)
        by_region = {}
        with_regions = [r for r in done if r.by_region]
        for name in REGION_NAMES:
            if with_regions:
                hits = sum(1 for r in with_regions if r.present and r.by_region.get(name, 0) > 0)
                by_region[name] = {
                    "n": hits,
                    "N": len(with_regions),
                    "text": format_frequency(hits, len(with_regions)),
                }
        out[side] = {
            "n": n,
            "N": total,
            "pct": pct,
            "text": text,
            "by_region": by_region,
            "unavailable": errors,
        }
    return out


def build_summary(evaluation: Evaluation, results: list[dict], missing: list[dict]) -> dict:
    by_cohort: dict[str, list[dict]] = {}
    for r in results:
        by_cohort.setdefault(r["cohort"], []).append(r)
    order = [c for c in evaluation.cohorts if c in by_cohort]

    def as_metrics(r: dict) -> StudyMetrics:
        return StudyMetrics.from_confusion(Confusion(r["tp"], r["fp"], r["fn"], r["tn"]))

    table = _table_rows({DATASET_NAMES[c]: [as_metrics(r) for r in by_cohort[c]] for c in order}, evaluation)
    truth_table = []
    truth_cohorts = {c: [r for r in by_cohort[c] if r["truth"] and "tp" in r["truth"]] for c in order}
    if any(truth_cohorts.values()):
        truth_table = _table_rows(
            {
                DATASET_NAMES[c]: [
                    StudyMetrics.from_confusion(Confusion(*(r["truth"][k] for k in ("tp", "fp", "fn", "tn"))))
                    for r in rows
                ]
                for c, rows in truth_cohorts.items()
                if rows
            },
            evaluation,
        )
        for row in truth_table:
            row.pop("paper", None)
    pooled = {}
    specificity = {}
    for c in order:
        conf = Confusion(0, 0, 0, 0)
        for r in by_cohort[c]:
            conf = conf + Confusion(r["tp"], r["fp"], r["fn"], r["tn"])
        pooled[DATASET_NAMES[c]] = dataclasses.asdict(conf)
        values = [r["specificity"] for r in by_cohort[c]]
        specificity[DATASET_NAMES[c]] = (
            _summary_dict(
                cohort_summary(
                    values,
                    ci=evaluation.ci_method,
                    n_boot=evaluation.n_boot,
                    seed=evaluation.seed,
                    bounds=(0.0, 1.0),
                )
            )
            if any(v is not None for v in values)
            else None
        )
    artifacts = {DATASET_NAMES[c]: _artifact_summary(by_cohort[c]) for c in order}
    region_notes = sorted({r["artifacts"].get("region_note", "") for r in results} - {""})
    worst = sorted((r for r in results if r["dice"] is not None), key=lambda r: (r["dice"], r["pseudonym"]))[
        :5
    ]
    ci_text = (
        "Student t interval over patients (mean +/- t(0.975, n-1) SD/sqrt(n))"
        if evaluation.ci_method == "t"
        else f"percentile bootstrap over patients ({evaluation.n_boot} resamples, seed {evaluation.seed})"
    )
    notes = []
    if missing:
        notes.append(f"{len(missing)} studies were not evaluated (listed under 'Not evaluated').")
    return {
        "table1": table,
        "truth_table1": truth_table,
        "truth_referenced": truth_summary(evaluation, results),
        "pooled_confusion": pooled,
        "specificity": specificity,
        "artifacts": artifacts,
        "artifact_region_notes": region_notes,
        "worst_cases": [
            {"study": r["study"].pk, "pseudonym": r["pseudonym"], "cohort": r["cohort"], "dice": r["dice"]}
            for r in worst
        ],
        "n_studies": len(results),
        "ci_method": ci_text,
        "reference": evaluation.get_reference_display(),
        "class_order": [int(c) for c in CLASS_CONFUSION_ORDER],
        "notes": notes,
    }


def run_evaluation(ctx, *, evaluation_id: int) -> dict:
    """Evaluate and store the results of ``evaluation_id`` (idempotent: a rerun replaces its rows)."""
    started = time.monotonic()
    evaluation = Evaluation.objects.select_related("model_version").get(pk=evaluation_id)
    ctx.progress(0.0, "checking studies", force=True)
    plan = evaluation_plan(
        model_version_id=evaluation.model_version_id,
        cohorts=evaluation.cohorts,
        reference=evaluation.reference,
        allow_missing=evaluation.allow_missing,
    )
    entries = plan["entries"]
    results = []
    for i, entry in enumerate(entries):
        ctx.progress(i / len(entries), f"{entry['pseudonym']} ({i + 1}/{len(entries)})")
        results.append(evaluate_study(evaluation, entry))
    ctx.progress(0.97, "summarizing", force=True)
    summary = build_summary(evaluation, results, plan["missing"])
    with transaction.atomic():
        evaluation = Evaluation.objects.select_for_update().get(pk=evaluation_id)
        evaluation.results.all().delete()
        StudyResult.objects.bulk_create(
            [
                StudyResult(
                    evaluation=evaluation,
                    study=r["study"],
                    pseudonym=r["pseudonym"],
                    cohort=r["cohort"],
                    label_version_id=r["label_version_id"],
                    prediction=r["prediction"],
                    tp=r["tp"],
                    fp=r["fp"],
                    fn=r["fn"],
                    tn=r["tn"],
                    **{name: r[name] for name in METRIC_NAMES},
                    reasons=r["reasons"],
                    class_confusion=r["class_confusion"],
                    vessel_volume_ml=r["vessel_volume_ml"],
                    roi_box_zyx=r["roi_box_zyx"],
                    artifacts=r["artifacts"],
                    truth=r["truth"],
                )
                for r in results
            ]
        )
        evaluation.summary = summary
        evaluation.missing = plan["missing"]
        evaluation.elapsed_s = time.monotonic() - started
        evaluation.save(update_fields=["summary", "missing", "elapsed_s"])
    return {
        "evaluation_id": evaluation_id,
        "studies": len(results),
        "missing": len(plan["missing"]),
        "table1": {
            row["dataset"]: {m: (row[m] or {}).get("text") for m in TABLE1_METRICS}
            for row in summary["table1"]
        },
    }


def create_evaluation(
    *, user, model_version, cohorts, reference, ci_method, allow_missing, **options
) -> tuple[Evaluation, int]:
    """Check the plan (raises EvaluationInputError) and create the Evaluation row; returns it and the number of
    studies it will score. The caller attaches the task run (``evaluation.tasks.start_evaluation``)."""
    cohorts = check_cohorts(cohorts)
    plan = evaluation_plan(
        model_version_id=model_version.pk, cohorts=cohorts, reference=reference, allow_missing=allow_missing
    )
    evaluation = Evaluation.objects.create(
        model_version=model_version,
        cohorts=cohorts,
        reference=reference,
        ci_method=ci_method,
        allow_missing=allow_missing,
        created_by=user,
        missing=plan["missing"],
        **options,
    )
    return evaluation, len(plan["entries"])
