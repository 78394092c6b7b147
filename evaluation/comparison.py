"""Two evaluations side by side (``compare``, the API's and the compare page's numbers): paired per-patient
differences a - b of the Table 1 metrics per cohort, the truth-referenced paired differences of the 3D-DLA (Dice,
sensitivity, PPV, centreline sensitivity, Dice r >= 1 voxel and per radius bin) with residual-bone cases and a
Dice verdict, and each model's costs from what the workbench stored (architecture, parameters, training time of
its run, inference time per study of the runs that made the scored class maps, a whole-head estimate).
Raises ``EvaluationInputError`` (plain words) for evaluations that cannot be compared."""

from __future__ import annotations

import dataclasses
import functools
import json
import re

import numpy as np

from dla.stats.metrics import TABLE1_METRICS, MetricsError, format_frequency, paired_difference
from dla_web.models import TaskRun

from .models import Evaluation, StudyResult
from .services import (
    COHORTS,
    DATASET_NAMES,
    TRUTH_METRIC_LABELS,
    EvaluationInputError,
    _cohort,
    _listing,
    _truth_values,
)

WHOLE_HEAD_ZYX = (400, 512, 512)
"""The whole head of the per-head inference estimate: the paper's grid (bench/bench_full_head.py measures it)."""
ARCHITECTURE_NAMES = {"voxel": "voxel classifier", "unet3d": "3D U-Net"}
COMPARE_TRUTH_METRICS = ("dice", "sensitivity", "ppv", "centreline_sensitivity", "resolved_dice")
PEAK_MEMORY_NOTE = (
    "the peak resident memory of the inference worker during one study (the largest over the evaluated studies; "
    "recorded by inference runs since they measure it, Linux only); not recorded for class maps made by older "
    "runs or outside the workbench; training does not record it (bench/bench_full_head.py reports the peak RSS of one "
    "whole-head inference)"
)


def _difference(va, vb, ev: Evaluation) -> dict:
    """Paired difference a - b (``paired_difference``, the CI settings of ``ev``) with its text in pp."""
    if not any(x is not None and y is not None for x, y in zip(va, vb, strict=True)):
        return {
            "error": "undefined for every pair",
            "text": "n/a",
            "mean": None,
            "ci_low": None,
            "ci_high": None,
        }
    try:
        d = paired_difference(va, vb, ci=ev.ci_method, n_boot=ev.n_boot, seed=ev.seed)
    except MetricsError as exc:
        return {"error": str(exc), "text": "n/a", "mean": None, "ci_low": None, "ci_high": None}
    text = f"{100 * d.mean:+.2f} pp"
    if d.ci_low is not None:
        text += f" [{100 * d.ci_low:+.2f}, {100 * d.ci_high:+.2f}]"
    else:
        text += " [no CI]"
    return {**dataclasses.asdict(d), "text": text}


def dice_verdict(d: dict, what: str, name_a: str, name_b: str) -> str:
    """One sentence: which of a and b is better on ``what`` (a paired difference a - b), or that the 95% CI
    contains 0 (no significant difference), or that there are too few pairs for a CI."""
    if d.get("mean") is None:
        return f"{what}: no paired difference ({d.get('error') or 'no pairs'})."
    if d["ci_low"] is None:
        return (
            f"{what}: a - b = {d['text']} from {d['n']} pair(s), too few for a confidence interval, "
            "so neither can be called better."
        )
    if d["ci_low"] > 0:
        return f"{what}: {name_a} is better, a - b = {d['text']} (the 95% CI lies above 0)."
    if d["ci_high"] < 0:
        return f"{what}: {name_b} is better, a - b = {d['text']} (the 95% CI lies below 0)."
    return f"{what}: no significant difference, a - b = {d['text']} (the 95% CI contains 0)."


def _scored_truth(result: StudyResult) -> dict | None:
    """The truth-referenced numbers of a stored result when its 3D-DLA side was scored, else None."""
    t = (result.truth or {}).get("referenced")
    if not t or "error" in t or "error" in (t.get("dla") or {"error": ""}):
        return None
    return t


def _bone_count(keys, refs: list[dict], res: dict) -> dict:
    """Cases with a residual-bone cluster in the 3D-DLA (count, text, pseudonyms)."""
    flags = [
        (res[k].pseudonym, (t.get("residual_bone") or {}).get("dla") or {})
        for k, t in zip(keys, refs, strict=True)
    ]
    ok = [(p, rb) for p, rb in flags if "error" not in rb and "present" in rb]
    cases = [p for p, rb in ok if rb["present"]]
    return {
        "n": len(cases),
        "N": len(ok),
        "text": format_frequency(len(cases), len(ok)) if ok else "not available",
        "cases": cases,
        "not_available": [p for p, rb in flags if "error" in rb or "present" not in rb],
    }


def truth_comparison(a: Evaluation, b: Evaluation, res_a: dict, res_b: dict) -> dict:
    """``compare(...)["truth"]``: per cohort, on the studies both scored against their phantom truth, the
    paired differences a - b of the 3D-DLA's truth metrics (whole head, centreline, r >= 1 voxel, Dice per
    vessel-radius bin that both have), the cohort means of a and b, and the cases with residual bone."""
    with_a = {k for k, r in res_a.items() if _scored_truth(r)}
    with_b = {k for k, r in res_b.items() if _scored_truth(r)}
    if not with_a or not with_b:
        missing = [f"#{ev.pk}" for ev, w in ((a, with_a), (b, with_b)) if not w]
        subject = (
            f"Evaluation {missing[0]} has"
            if len(missing) == 1
            else f"Evaluations {' and '.join(missing)} have"
        )
        return {
            "available": False,
            "note": f"{subject} no study scored against a phantom truth volume, so the two models cannot be "
            "compared against the truth; the paired rows above are against the reference labels only.",
        }
    common = with_a & with_b
    if not common:
        return {
            "available": False,
            "note": "The two evaluations have no study in common that both scored against its phantom truth.",
        }
    notes = []
    left_out = sorted(res_a[k].pseudonym for k in (with_a ^ with_b) if k in res_a and k in res_b)
    if left_out:
        notes.append(
            f"scored against the truth in only one of the two evaluations, left out: {_listing(left_out)}"
        )
    if (a.bright_hu, a.min_cluster_voxels) != (b.bright_hu, b.min_cluster_voxels):
        notes.append(
            f"the residual-bone settings differ (#{a.pk}: >= {a.bright_hu:g} HU, {a.min_cluster_voxels} voxels; "
            f"#{b.pk}: >= {b.bright_hu:g} HU, {b.min_cluster_voxels} voxels), so the bone counts are not like for like"
        )
    name_a, name_b = f"a (#{a.pk} {a.model_version.name})", f"b (#{b.pk} {b.model_version.name})"
    datasets = []
    for cohort in COHORTS:
        keys = sorted(k for k in common if k[0] == cohort)
        if not keys:
            continue
        ta = [_scored_truth(res_a[k]) for k in keys]
        tb = [_scored_truth(res_b[k]) for k in keys]
        va = [_truth_values(t["dla"]) for t in ta]
        vb = [_truth_values(t["dla"]) for t in tb]
        paired = {m: _difference([v[m] for v in va], [v[m] for v in vb], a) for m in COMPARE_TRUTH_METRICS}
        means = {
            side: {m: _cohort([v[m] for v in vals], a) for m in COMPARE_TRUTH_METRICS}
            for side, vals in (("a", va), ("b", vb))
        }
        bins_a = [{x["label"]: x for x in t["dla"]["by_radius"]} for t in ta]
        bins_b = [{x["label"]: x for x in t["dla"]["by_radius"]} for t in tb]
        labels = [x["label"] for x in ta[0]["dla"]["by_radius"]]
        by_radius = []
        for label in labels:
            da = [(ba.get(label) or {}).get("dice") for ba in bins_a]
            db = [(bb.get(label) or {}).get("dice") for bb in bins_b]
            if not any(x is not None and y is not None for x, y in zip(da, db, strict=True)):
                continue  # a bin without a vessel voxel in any common study
            first = next(ba[label] for ba in bins_a if label in ba)
            by_radius.append(
                {
                    "label": label,
                    "relation": first["relation"],
                    "below_voxel": first["below_voxel"],
                    "n": sum(1 for x, y in zip(da, db, strict=True) if x is not None and y is not None),
                    "a": _cohort(da, a),
                    "b": _cohort(db, a),
                    "paired_dice": _difference(da, db, a),
                }
            )
        datasets.append(
            {
                "dataset": DATASET_NAMES[cohort],
                "n": len(keys),
                "studies": [res_a[k].pseudonym for k in keys],
                "paired": paired,
                "means": means,
                "by_radius": by_radius,
                "residual_bone": {"a": _bone_count(keys, ta, res_a), "b": _bone_count(keys, tb, res_b)},
                "verdict": dice_verdict(
                    paired["dice"], f"{DATASET_NAMES[cohort]}, Dice against the truth", name_a, name_b
                ),
            }
        )
    return {
        "available": True,
        "note": "",
        "notes": notes,
        "metrics": [{"key": m, "label": TRUTH_METRIC_LABELS[m]} for m in COMPARE_TRUTH_METRICS],
        "side": "3D-DLA (the model's class map) of each evaluation against the phantom's exact truth vessels",
        "datasets": datasets,
    }


@functools.lru_cache(maxsize=64)
def _counted_parameters(config_json: str) -> int | None:
    from dla.model.network import NetworkConfig, build_model, count_parameters

    try:
        return count_parameters(build_model(NetworkConfig.from_dict(json.loads(config_json))))
    except Exception:  # noqa: BLE001 -- any unbuildable stored config means "unknown", said in plain words
        return None


def _parameter_count(version) -> tuple[int | None, str]:
    recorded = (version.metrics or {}).get("parameters")
    if isinstance(recorded, int):
        return recorded, "recorded with the model"
    counted = _counted_parameters(json.dumps(version.network_config or {}, sort_keys=True))
    if counted is None:
        return None, "unknown: the stored network configuration could not be rebuilt"
    return counted, "counted from the stored architecture"


INFER_SOURCE = re.compile(r"infer-run-(\d{1,18})")


def _inference_costs(results: list[StudyResult]) -> dict:
    """Inference time per study of the class maps ``results`` were scored on: the ``elapsed_s`` and
    ``voxels_per_s`` the inference TaskRun (volume source ``infer-run-<id>``) stored for each study."""
    run_of = {}
    for r in results:
        m = INFER_SOURCE.fullmatch(r.prediction.source if r.prediction else "")
        if m:
            run_of[r.pk] = int(m.group(1))
    runs = {run.pk: run for run in TaskRun.objects.filter(pk__in=set(run_of.values()))}
    timed, untimed = [], []
    for r in results:
        run = runs.get(run_of.get(r.pk))
        entry = next(
            (
                s
                for s in ((run.result or {}).get("studies") or [] if run else [])
                if s.get("study_id") == r.study_id and isinstance(s.get("elapsed_s"), int | float)
            ),
            None,
        )
        (timed if entry else untimed).append((r, entry))
    out = {
        "n_studies": len(results),
        "n_timed": len(timed),
        "runs": sorted({run_of[r.pk] for r, _ in timed}),
        "mean_s": None,
        "max_s": None,
        "voxels_per_s": None,
        "whole_head_s": None,
        "peak_rss_gb": None,
        "n_peak": 0,
        "note": "",
        "whole_head_note": "",
    }
    if not timed:
        out["note"] = (
            "not known: the evaluated class maps were not made by an inference run of the workbench "
            "(or the run's record is gone), so no inference time was recorded for them"
        )
        return out
    peaks = [float(e["peak_rss_gb"]) for _, e in timed if isinstance(e.get("peak_rss_gb"), int | float)]
    out["peak_rss_gb"] = max(peaks) if peaks else None
    out["n_peak"] = len(peaks)
    elapsed = [float(e["elapsed_s"]) for _, e in timed]
    rates = [float(e["voxels_per_s"]) for _, e in timed if isinstance(e.get("voxels_per_s"), int | float)]
    out["mean_s"], out["max_s"] = float(np.mean(elapsed)), float(np.max(elapsed))
    if rates:
        out["voxels_per_s"] = float(np.mean(rates))
        out["whole_head_s"] = float(np.prod(WHOLE_HEAD_ZYX)) / out["voxels_per_s"]
    if untimed:
        out["note"] = (
            f"timed for {len(timed)} of {len(results)} studies (no inference run record for "
            f"{_listing([r.pseudonym for r, _ in untimed])})"
        )
    if rates:
        out["whole_head_note"] = (
            "Per whole head: extrapolated from the mean voxels/s to a "
            + " x ".join(str(n) for n in WHOLE_HEAD_ZYX)
            + " head (the paper's grid); the voxel classifier only runs on intensity candidates, so its rate "
            "depends on a head's share of them (bench/bench_full_head.py measures a whole head end to end)."
        )
    return out


def _number(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def model_costs(ev: Evaluation, results: list[StudyResult]) -> dict:
    """``compare(...)["models"][side]``: what the model of ``ev`` is and what it cost, from what is stored: the
    architecture (network_config), parameters, training time (its training TaskRun), iterations, best
    validation iteration, inference time and peak memory per study of the evaluated class maps; None with a reason
    otherwise."""
    version = ev.model_version
    architecture = (version.network_config or {}).get("architecture", "voxel")
    metrics = version.metrics or {}
    summary = metrics.get("summary") or {}
    parameters, parameters_note = _parameter_count(version)
    inference = _inference_costs(results)
    run = version.training_run
    training_s, training_note = None, ""
    if version.source == version.Source.UPLOADED:
        training_note = "uploaded weights: trained elsewhere, no training time recorded here"
    elif run is not None and run.started_at and run.finished_at:
        training_s = (run.finished_at - run.started_at).total_seconds()
        training_note = f"training run #{run.pk}, started to finished (queue wait excluded)"
    elif isinstance(summary.get("elapsed_s"), int | float):
        training_s = float(summary["elapsed_s"])
        training_note = "the training loop's own time (the training run's record is gone)"
    else:
        training_note = "not known: no finished training run is recorded for this model"
    return {
        "evaluation": ev.pk,
        "model_version": version.pk,
        "name": version.name,
        "architecture": architecture,
        "architecture_label": ARCHITECTURE_NAMES.get(architecture, architecture),
        "source": version.source,
        "parameters": parameters,
        "parameters_note": parameters_note,
        "training_s": training_s,
        "training_note": training_note,
        "training_loop_s": _number(summary.get("elapsed_s")),
        "training_run": run.pk if run else None,
        "training_device": summary.get("device") or None,
        "iterations": _number(summary.get("iterations")),
        "max_iterations": _number((version.train_config or {}).get("max_iterations")),
        "best_iteration": _number(summary.get("best_iteration")),
        "kept_iteration": _number(summary.get("kept_iteration")),
        "training_voxels_per_s": _number(summary.get("voxels_per_s")),
        "train_studies": len(metrics.get("train_studies") or []) or None,
        "inference": inference,
        "peak_memory": (
            f"{inference['peak_rss_gb']:.2f} GB in one study (largest of {inference['n_peak']})"
            if inference["peak_rss_gb"] is not None
            else None
        ),
        "peak_memory_note": PEAK_MEMORY_NOTE,
    }


def compare_id_problem(key: str, value: str) -> str:
    """Why ``value`` (the query parameter ``key``) is not an evaluation id, in plain words; "" when it is one."""
    if not value.strip():
        return f"give two evaluation ids as ?a=<id>&b=<id> ({key} is missing)"
    if not re.fullmatch(r"[0-9]+", value.strip()):
        return f"the id of evaluation {key} must be a whole number, not {value[:40]!r}"
    if len(value.strip()) > 18:
        return f"evaluation {value.strip()[:30]} does not exist"
    return ""


def compare(a: Evaluation, b: Evaluation) -> dict:
    """Paired differences a - b of the per-patient metrics on the studies both evaluations scored.

    Both must be finished and use the same reference; rows per cohort both cover. Raises EvaluationInputError.
    ``rows``: Table 1 metrics per cohort (with a Dice ``verdict``); ``truth``: ``truth_comparison``; ``models``:
    ``model_costs`` of a and b on the shared studies.
    """
    for ev in (a, b):
        if not ev.is_done:
            raise EvaluationInputError(f"evaluation #{ev.pk} has no results yet (state {ev.state})")
    if a.pk == b.pk:
        raise EvaluationInputError("compare two different evaluations")
    if a.reference != b.reference:
        raise EvaluationInputError(
            f"evaluations #{a.pk} and #{b.pk} use different references ({a.reference} vs {b.reference})"
        )
    ci = a.ci_method
    rows, notes = [], []
    name_a, name_b = f"a (#{a.pk} {a.model_version.name})", f"b (#{b.pk} {b.model_version.name})"
    res_a = {(r.cohort, r.study_id): r for r in a.results.select_related("prediction") if r.study_id}
    res_b = {(r.cohort, r.study_id): r for r in b.results.select_related("prediction") if r.study_id}
    for cohort in COHORTS:
        keys = sorted(k for k in res_a if k[0] == cohort and k in res_b)
        only = [res_a[k].pseudonym for k in res_a if k[0] == cohort and k not in res_b] + [
            res_b[k].pseudonym for k in res_b if k[0] == cohort and k not in res_a
        ]
        if only:
            notes.append(
                f"{DATASET_NAMES[cohort]}: not in both evaluations, left out: {_listing(sorted(only))}"
            )
        if not keys:
            continue
        row = {
            "dataset": DATASET_NAMES[cohort],
            "n": len(keys),
            "studies": [res_a[k].pseudonym for k in keys],
        }
        for metric in TABLE1_METRICS + ("specificity",):
            va = [getattr(res_a[k], metric) for k in keys]
            vb = [getattr(res_b[k], metric) for k in keys]
            row[metric] = _difference(va, vb, a)
        row["verdict"] = dice_verdict(row["dice"], f"{DATASET_NAMES[cohort]}, Dice (Table 1)", name_a, name_b)
        rows.append(row)
    if not rows:
        raise EvaluationInputError(f"evaluations #{a.pk} and #{b.pk} share no evaluated study")
    shared = [k for k in res_a if k in res_b and k[0] in COHORTS]
    if (a.ci_method, a.n_boot, a.seed) != (b.ci_method, b.n_boot, b.seed):
        notes.append(f"the CIs use the settings of evaluation a (#{a.pk}: {a.get_ci_method_display()})")
    return {
        "a": {"id": a.pk, "model_version": a.model_version_id, "model_name": a.model_version.name},
        "b": {"id": b.pk, "model_version": b.model_version_id, "model_name": b.model_version.name},
        "reference": a.reference,
        "ci_method": ci,
        "rows": rows,
        "notes": notes,
        "unit": "percentage points (a - b), mean and 95% CI of the per-patient differences",
        "truth": truth_comparison(a, b, res_a, res_b),
        "models": {
            side: model_costs(ev, [res[k] for k in sorted(shared)])
            for side, ev, res in (("a", a, res_a), ("b", b, res_b))
        },
    }
