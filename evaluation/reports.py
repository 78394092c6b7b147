"""Evaluation reports from stored results: the shared report context (``report_context``, also used by the report
page), CSV (per study, summary), JSON, a standalone HTML report and a PDF report (reportlab). Every format carries
the truth-referenced section next to Table 1 (``summary["truth_referenced"]``: 3D-DLA vs the 3D-DSA baseline
against the phantom truth, by vessel radius, residual bone by case), or its sentence saying why there is none.

Figures for the downloads are reportlab drawings (per-patient strip plots with mean and 95% CI per metric, Dice
vs vessel volume); the PDF embeds them as vectors and the HTML report as SVG rendered from the same drawings, so
both downloads show the same figures without a browser or plotly. The page itself draws interactive plotly
versions of the same data. Everything is generated synchronously: a 105-study report takes well under a second
(measured in tests/integration/test_evaluation_reports.py's timing log line, not asserted).
"""

from __future__ import annotations

import io
import json
import random
from xml.sax.saxutils import escape

from django.template.loader import render_to_string
from django.utils import timezone

from dla.stats.metrics import PAPER_TABLE1, TABLE1_METRICS
from dla_web import csv_export

from .models import Evaluation
from .services import DATASET_NAMES, METHODS, METRIC_LABELS, REGION_NAMES, TRUTH_METRIC_LABELS, TRUTH_METRICS

STUDY_METRICS = ("accuracy", "sensitivity", "ppv", "dice", "specificity")


def _pct(value, decimals: int = 2) -> str:
    return "" if value is None else f"{100.0 * value:.{decimals}f}"


def _side(result, side: str) -> dict:
    return (result.artifacts or {}).get(side) or {}


def study_rows(evaluation: Evaluation) -> list[dict]:
    """Per-study rows (fractions as floats, plus artifact flags), in cohort order then pseudonym."""
    order = {c: i for i, c in enumerate(evaluation.cohorts)}
    rows = []
    for r in sorted(evaluation.results.all(), key=lambda r: (order.get(r.cohort, 99), r.pseudonym)):
        dsa, dla = _side(r, "dsa"), _side(r, "dla")
        rows.append(
            {
                "study_id": r.study_id,
                "pseudonym": r.pseudonym,
                "cohort": r.cohort,
                "dataset": DATASET_NAMES.get(r.cohort, r.cohort),
                "label_version_id": r.label_version_id,
                "prediction_volume_id": r.prediction_id,
                "tp": r.tp,
                "fp": r.fp,
                "fn": r.fn,
                "tn": r.tn,
                **{m: getattr(r, m) for m in STUDY_METRICS},
                "vessel_volume_ml": r.vessel_volume_ml,
                "dsa_residual_bone": dsa.get("present") if "error" not in dsa else None,
                "dsa_bright_voxels": dsa.get("n_bright_voxels"),
                "dsa_largest_cluster": dsa.get("largest_cluster_voxels"),
                "dla_residual_bone": dla.get("present") if "error" not in dla else None,
                "dla_bright_voxels": dla.get("n_bright_voxels"),
                "dla_largest_cluster": dla.get("largest_cluster_voxels"),
                "truth_dice": (r.truth or {}).get("dice"),
                "truth_accuracy": (r.truth or {}).get("accuracy"),
                **_referenced_columns((r.truth or {}).get("referenced")),
                "reasons": "; ".join(f"{k}: {v}" for k, v in (r.reasons or {}).items()),
            }
        )
    return rows


REFERENCED_METRICS = ("dice", "sensitivity", "ppv", "centreline_sensitivity", "resolved_dice")


def _referenced_columns(t: dict | None) -> dict:
    """Flat per-study truth-referenced values (``truth_<side>_<metric>``, bone presence/size/distance)."""
    out: dict = {"truth_radius_source": (t or {}).get("radius_source", "")}
    for side in METHODS:
        side_d = (t or {}).get(side) or {}
        ok = bool(side_d) and "error" not in side_d
        values = {}
        if ok:
            wh, cl, res = side_d["whole_head"], side_d["centreline"], side_d["resolved"]
            values = {
                "dice": wh["dice"],
                "sensitivity": wh["sensitivity"],
                "ppv": wh["ppv"],
                "centreline_sensitivity": cl["sensitivity"],
                "resolved_dice": res["dice"],
            }
        for m in REFERENCED_METRICS:
            out[f"truth_{side}_{m}"] = values.get(m)
        rb = ((t or {}).get("residual_bone") or {}).get(side) or {}
        rb_ok = bool(rb) and "error" not in rb
        big = (rb.get("clusters") or [None])[0] if rb_ok else None
        out[f"truth_{side}_bone"] = rb.get("present") if rb_ok else None
        out[f"truth_{side}_bone_mm3"] = rb.get("largest_cluster_mm3") if rb_ok else None
        out[f"truth_{side}_bone_distance_mm"] = big["distance_mm"] if big else None
    return out


def _text(summary: dict | None) -> str:
    return summary["text"] if summary else "n/a"


def _cell(metric: str, text: str, p: str = "") -> dict:
    """A table cell: the full text (title, CSV, PDF), and its mean and CI parts for two-line display."""
    mean, sep, ci = text.partition(" [")
    return {"metric": metric, "text": text, "mean": mean, "ci": sep.strip() + ci if sep else "", "p": p}


def truth_context(summary: dict) -> dict:
    """The truth-referenced section ready for templates and the PDF: texts per dataset, method and metric."""
    section = summary.get("truth_referenced")
    if not section:
        return {
            "available": False,
            "note": "This evaluation predates the truth-referenced section; run it again to see it.",
        }
    if not section.get("available"):
        return {"available": False, "note": section.get("note", "")}
    datasets = []
    for d in section["datasets"]:
        rows = [
            {
                "key": side,
                "method": f"{label} (n={d['n'] if side == 'dla' else d['n_dsa']})",
                "cells": [_cell(m, _text(d["rows"][side][m])) for m in TRUTH_METRICS],
            }
            for side, label in METHODS.items()
        ]
        rows.append(
            {
                "key": "paired",
                "method": "DLA - DSA, paired",
                "cells": [
                    _cell(
                        m,
                        d["paired"][m]["text"] if d["paired"][m] else "n/a",
                        d["paired"][m]["p_text"] if d["paired"][m] else "",
                    )
                    for m in TRUTH_METRICS
                ],
            }
        )
        mf = d["motion_free"]
        radius_rows = []
        for b in d["by_radius"]:
            radius_rows.append(
                {
                    "label": b["label"],
                    "relation": b["relation"],
                    "below_voxel": b["below_voxel"],
                    "n_studies": b["n_studies"],
                    "cells": [
                        _text(b[side][m])
                        for m in ("dice", "sensitivity", "centreline_sensitivity")
                        for side in METHODS
                    ],
                    "paired": b["paired_dice"]["text"] if b["paired_dice"] else "n/a",
                    "p": b["paired_dice"]["p_text"] if b["paired_dice"] else "",
                }
            )
        bone = d["residual_bone"]
        datasets.append(
            {
                "dataset": d["dataset"],
                "n": d["n"],
                "rows": rows,
                "motion_free": {
                    "n": mf["n"],
                    "dla": _text(mf["dla_sensitivity"]),
                    "dsa": _text(mf["dsa_sensitivity"]),
                    "paired": mf["paired_sensitivity"]["text"] if mf["paired_sensitivity"] else "n/a",
                    "p": mf["paired_sensitivity"]["p_text"] if mf["paired_sensitivity"] else "",
                    "dla_cl": _text(mf["dla_centreline_sensitivity"]),
                    "dsa_cl": _text(mf["dsa_centreline_sensitivity"]),
                },
                "radius_rows": radius_rows,
                "bone": {
                    "dsa": bone["dsa"]["text"],
                    "dla": bone["dla"]["text"],
                    "dsa_motion": bone["dsa"]["motion"]["text"],
                    "dsa_still": bone["dsa"]["still"]["text"],
                    "dla_motion": bone["dla"]["motion"]["text"],
                    "dla_still": bone["dla"]["still"]["text"],
                },
            }
        )
    cases = []
    for c in section["cases"]:
        row = {**c}
        for side in METHODS:
            mm3, dist = c[f"{side}_bone_mm3"], c[f"{side}_bone_distance_mm"]
            if c[f"{side}_bone_present"] is None:
                row[f"{side}_bone_text"] = "n/a"
            elif not mm3:
                row[f"{side}_bone_text"] = "none"
            else:
                where = ", ".join(r.replace("_", " ") for r in c[f"{side}_bone_regions"])
                row[f"{side}_bone_text"] = (
                    f"{'yes' if c[f'{side}_bone_present'] else 'below size'}: {mm3:,.0f} mm3"
                    + (f", {dist:.1f} mm from a vessel" if dist is not None else "")
                    + (f" ({where})" if where else "")
                )
        cases.append(row)
    return {
        "available": True,
        "note": "",
        "notes": section.get("notes", []),
        "metric_labels": [TRUTH_METRIC_LABELS[m] for m in TRUTH_METRICS],
        "dsa_baseline": section["dsa_baseline"],
        "residual_bone_rule": section["residual_bone_rule"],
        "voxel_mm": section["voxel_mm"],
        "near_mm": section["near_mm"],
        "datasets": datasets,
        "cases": cases,
    }


def truth_plot_data(evaluation: Evaluation) -> dict | None:
    """Data of the page's truth charts (Dice by vessel radius DLA vs DSA; residual bone by case), or None."""
    section = (evaluation.summary or {}).get("truth_referenced") or {}
    if not section.get("available"):
        return None

    def triple(s):
        return None if s is None else [s["mean"], s["ci_low"], s["ci_high"]]

    return {
        "bins": [
            {"label": b["label"], "below_voxel": b["below_voxel"], "relation": b["relation"]}
            for b in section["bins"]
        ],
        "voxel_mm": section["voxel_mm"],
        "datasets": [
            {
                "dataset": d["dataset"],
                "n": d["n"],
                **{side: [triple(b[side]["dice"]) for b in d["by_radius"]] for side in METHODS},
            }
            for d in section["datasets"]
        ],
        "methods": METHODS,
        "cases": section["cases"],
        "min_cluster_voxels": evaluation.min_cluster_voxels,
    }


def _model_info(evaluation: Evaluation) -> dict:
    mv = evaluation.model_version
    run = mv.training_run
    training = None
    if run is not None:
        record = getattr(run, "training", None)
        training = {
            "task_run": run.pk,
            "state": run.state,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "iterations": getattr(record, "iteration", None),
            "train_studies": len(getattr(record, "train_studies", []) or []),
            "validation_studies": len(getattr(record, "validation_studies", []) or []),
        }
    return {
        "id": mv.pk,
        "name": mv.name,
        "source": mv.source,
        "sha256": mv.sha256,
        "fingerprint": mv.fingerprint,
        "network_config": mv.network_config,
        "train_config": mv.train_config,
        "network_config_json": json.dumps(mv.network_config, indent=1, sort_keys=True),
        "train_config_json": json.dumps(mv.train_config, indent=1, sort_keys=True),
        "created_at": mv.created_at,
        "is_active": mv.is_active,
        "training": training,
    }


def _table_for_display(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        cells = []
        for metric in TABLE1_METRICS:
            s = row.get(metric)
            paper = (row.get("paper") or {}).get(metric)
            cells.append(
                {
                    "metric": metric,
                    "label": METRIC_LABELS[metric],
                    "text": s["text"] if s else "n/a",
                    "summary": s,
                    "paper": paper["text"] if paper else "",
                }
            )
        out.append({**row, "cells": cells})
    return out


def report_context(evaluation: Evaluation) -> dict:
    """Everything the page and the downloads show (plain data; datetimes stay datetimes for templates)."""
    summary = evaluation.summary or {}
    artifacts = []
    for dataset, sides in (summary.get("artifacts") or {}).items():
        regions = []
        for name in REGION_NAMES:
            dsa_r = sides["dsa"].get("by_region", {}).get(name) if sides.get("dsa") else None
            dla_r = sides["dla"].get("by_region", {}).get(name) if sides.get("dla") else None
            if dsa_r or dla_r:
                regions.append(
                    {
                        "name": name.replace("_", " "),
                        "dsa": dsa_r["text"] if dsa_r else "n/a",
                        "dla": dla_r["text"] if dla_r else "n/a",
                    }
                )
        artifacts.append(
            {"dataset": dataset, "dsa": sides.get("dsa"), "dla": sides.get("dla"), "regions": regions}
        )
    return {
        "evaluation": evaluation,
        "summary": summary,
        "table1": _table_for_display(summary.get("table1", [])),
        "truth_table1": _table_for_display(summary.get("truth_table1", [])),
        "truth": truth_context(summary),
        "truth_plot": truth_plot_data(evaluation),
        "paper_rows": [
            {
                "dataset": name,
                "n": entry["n"],
                "cells": [
                    f"{entry[m][0]:.1f}% [{entry[m][1]:.1f}, {entry[m][2]:.1f}]%" for m in TABLE1_METRICS
                ],
            }
            for name, entry in PAPER_TABLE1.items()
        ],
        "metric_labels": [METRIC_LABELS[m] for m in TABLE1_METRICS],
        "artifacts": artifacts,
        "studies": study_rows(evaluation),
        "model": _model_info(evaluation),
        "missing": evaluation.missing or [],
        "generated_at": timezone.now(),
        "params": {
            "cohorts": ", ".join(evaluation.cohorts),
            "reference": evaluation.get_reference_display(),
            "ci": summary.get("ci_method", evaluation.get_ci_method_display()),
            "bright_hu": evaluation.bright_hu,
            "min_cluster_voxels": evaluation.min_cluster_voxels,
        },
    }


# ------------------------------------------------------------------------------------------------ CSV / JSON

STUDY_COLUMNS = [
    "study_id",
    "pseudonym",
    "cohort",
    "label_version_id",
    "prediction_volume_id",
    "tp",
    "fp",
    "fn",
    "tn",
    *(f"{m}_pct" for m in STUDY_METRICS),
    "vessel_volume_ml",
    "dsa_residual_bone",
    "dsa_bright_voxels",
    "dsa_largest_cluster",
    "dla_residual_bone",
    "dla_bright_voxels",
    "dla_largest_cluster",
    "truth_dice_pct",
    "truth_accuracy_pct",
    *(f"truth_{side}_{m}_pct" for side in METHODS for m in REFERENCED_METRICS),
    *(f"truth_{side}_{k}" for side in METHODS for k in ("bone", "bone_mm3", "bone_distance_mm")),
    "truth_radius_source",
    "undefined_metric_reasons",
]


def _plain(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def studies_csv(evaluation: Evaluation) -> str:
    """One row per evaluated study; metrics in percent with 4 decimals, empty when undefined (the last column,
    ``undefined_metric_reasons``, says why: "ppv: no predicted vessel voxels; ..."). Cells are formula-safe
    (``dla_web.csv_export``)."""
    out = io.StringIO()
    writer = csv_export.writer(out)
    writer.writerow(STUDY_COLUMNS)
    for row in study_rows(evaluation):
        writer.writerow(
            [
                row["study_id"],
                row["pseudonym"],
                row["cohort"],
                row["label_version_id"] or "",
                row["prediction_volume_id"] or "",
                row["tp"],
                row["fp"],
                row["fn"],
                row["tn"],
                *(_pct(row[m], 4) for m in STUDY_METRICS),
                f"{row['vessel_volume_ml']:.4f}",
                "" if row["dsa_residual_bone"] is None else int(row["dsa_residual_bone"]),
                "" if row["dsa_bright_voxels"] is None else row["dsa_bright_voxels"],
                "" if row["dsa_largest_cluster"] is None else row["dsa_largest_cluster"],
                "" if row["dla_residual_bone"] is None else int(row["dla_residual_bone"]),
                "" if row["dla_bright_voxels"] is None else row["dla_bright_voxels"],
                "" if row["dla_largest_cluster"] is None else row["dla_largest_cluster"],
                _pct(row["truth_dice"], 4),
                _pct(row["truth_accuracy"], 4),
                *(_pct(row[f"truth_{side}_{m}"], 4) for side in METHODS for m in REFERENCED_METRICS),
                *(
                    _plain(row[f"truth_{side}_{k}"])
                    for side in METHODS
                    for k in ("bone", "bone_mm3", "bone_distance_mm")
                ),
                row["truth_radius_source"],
                row["reasons"],
            ]
        )
    return out.getvalue()


SUMMARY_COLUMNS = [
    "table",
    "dataset",
    "n",
    "metric",
    "mean_pct",
    "ci_low_pct",
    "ci_high_pct",
    "sd_pct",
    "ci_method",
    "text",
    "note",
    "paper_n",
    "paper_text",
]


def summary_csv(evaluation: Evaluation) -> str:
    """Table 1 (and the truth table on phantoms) in long form, plus the artifact rates; ``text`` is exactly what
    the report page shows."""
    summary = evaluation.summary or {}
    out = io.StringIO()
    writer = csv_export.writer(out)
    writer.writerow(SUMMARY_COLUMNS)
    for table in ("table1", "truth_table1"):
        for row in summary.get(table, []):
            paper = row.get("paper") or {}
            for metric in TABLE1_METRICS:
                s = row.get(metric)
                writer.writerow(
                    [
                        table,
                        row["dataset"],
                        row["n"],
                        metric,
                        _pct(s["mean"], 4) if s else "",
                        _pct(s["ci_low"], 4) if s else "",
                        _pct(s["ci_high"], 4) if s else "",
                        _pct(s["sd"], 4) if s else "",
                        s["method"] if s else "",
                        s["text"] if s else "n/a",
                        s["note"] if s else "undefined for every patient",
                        paper.get("n", ""),
                        (paper.get(metric) or {}).get("text", ""),
                    ]
                )
    _truth_summary_rows(writer, summary.get("truth_referenced") or {})
    for dataset, sides in (summary.get("artifacts") or {}).items():
        for side in ("dsa", "dla"):
            a = sides.get(side) or {}
            writer.writerow(
                [
                    "residual_bone",
                    dataset,
                    a.get("N", ""),
                    side,
                    "" if a.get("pct") is None else f"{a['pct']:.4f}",
                    "",
                    "",
                    "",
                    "",
                    a.get("text", ""),
                    f"threshold {evaluation.bright_hu:g} HU, cluster >= {evaluation.min_cluster_voxels} voxels",
                    "",
                    "",
                ]
            )
    return out.getvalue()


def _summary_row(writer, table, dataset, n, metric, s, note=""):
    writer.writerow(
        [
            table,
            dataset,
            n,
            metric,
            _pct(s["mean"], 4) if s else "",
            _pct(s["ci_low"], 4) if s else "",
            _pct(s["ci_high"], 4) if s else "",
            _pct(s["sd"], 4) if s else "",
            s["method"] if s else "",
            s["text"] if s else "n/a",
            "; ".join(x for x in ((s or {}).get("note", ""), note) if x) if s else note or "undefined",
            "",
            "",
        ]
    )


def _truth_summary_rows(writer, section: dict) -> None:
    """Long-form rows of the truth-referenced section: ``truth_referenced`` (per method and metric, paired rows as
    ``dla-dsa <metric>`` in percentage points with the p-values in ``note``), ``truth_by_radius`` and
    ``truth_residual_bone``; one ``truth_referenced`` row with the reason when there is no truth."""
    if not section.get("available"):
        writer.writerow(
            ["truth_referenced", "", "", "", "", "", "", "", "", "n/a", section.get("note", ""), "", ""]
        )
        return
    for d in section["datasets"]:
        for side in METHODS:
            for m in TRUTH_METRICS:
                _summary_row(
                    writer, "truth_referenced", d["dataset"], d["n"], f"{side} {m}", d["rows"][side][m]
                )
        for m in TRUTH_METRICS:
            p = d["paired"][m]
            _summary_row(
                writer, "truth_referenced", d["dataset"], d["n"], f"dla-dsa {m}", p, p["p_text"] if p else ""
            )
        for b in d["by_radius"]:
            for side in METHODS:
                for m in ("dice", "sensitivity", "centreline_sensitivity"):
                    _summary_row(
                        writer,
                        "truth_by_radius",
                        d["dataset"],
                        b["n_studies"],
                        f"{side} {m} {b['label']}",
                        b[side][m],
                        b["relation"],
                    )
        for side in METHODS:
            for group in ("all", "motion", "still"):
                r = d["residual_bone"][side] if group == "all" else d["residual_bone"][side][group]
                writer.writerow(
                    [
                        "truth_residual_bone",
                        d["dataset"],
                        r["N"],
                        side if group == "all" else f"{side} {group}",
                        "" if not r["N"] else f"{100 * r['n'] / r['N']:.4f}",
                        "",
                        "",
                        "",
                        "",
                        r["text"],
                        section["residual_bone_rule"],
                        "",
                        "",
                    ]
                )


def _jsonable(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def export_json(evaluation: Evaluation) -> str:
    ctx = report_context(evaluation)
    model = {k: v for k, v in ctx["model"].items() if not k.endswith("_json")}
    data = {
        "evaluation": {
            "id": evaluation.pk,
            "model_version": evaluation.model_version_id,
            "cohorts": evaluation.cohorts,
            "reference": evaluation.reference,
            "ci_method": evaluation.ci_method,
            "n_boot": evaluation.n_boot,
            "seed": evaluation.seed,
            "bright_hu": evaluation.bright_hu,
            "min_cluster_voxels": evaluation.min_cluster_voxels,
            "created_at": evaluation.created_at,
            "state": evaluation.state,
        },
        "model": model,
        "summary": evaluation.summary,
        "studies": ctx["studies"],
        "missing": evaluation.missing,
        "paper_table1": {k: {m: v for m, v in e.items()} for k, e in PAPER_TABLE1.items()},
    }
    return json.dumps(data, indent=1, default=_jsonable)


# ------------------------------------------------------------------------------------------------ figures

FIG_COLORS = {"validation": "#1f77b4", "test": "#d62728", "train": "#2ca02c"}


def _figure_rows(evaluation: Evaluation) -> list[dict]:
    return study_rows(evaluation)


def _percent_axis(values: list[float]) -> tuple[float, float]:
    """(low, step) of a percent axis ending at 100 with at most 6 round ticks that shows ``values``."""
    low_value = min(values + [95.0])
    for step in (1.0, 2.0, 5.0, 10.0, 20.0):
        low = max(0.0, step * (low_value // step))
        if (100.0 - low) / step <= 6:
            return low, step
    return 0.0, 20.0


def strip_drawing(evaluation: Evaluation, width: float = 480, height: float = 220):
    """Per-patient values of the Table 1 metrics (percent), one column per metric and cohort, with the cohort
    mean and 95% CI as a bar (reportlab Drawing)."""
    from reportlab.graphics.shapes import Circle, Drawing, Line, String
    from reportlab.lib import colors

    rows = _figure_rows(evaluation)
    summary = {row["dataset"]: row for row in (evaluation.summary or {}).get("table1", [])}
    values = [100 * r[m] for r in rows for m in TABLE1_METRICS if r[m] is not None]
    lo, step = _percent_axis(values)
    hi = 100.0
    d = Drawing(width, height)
    left, bottom, top = 40, 30, height - 24
    plot_w = width - left - 10

    def y_of(v):
        v = min(max(v, lo), hi)  # CI ends beyond the axis are drawn to its edge
        return bottom + (v - lo) / (hi - lo) * (top - bottom)

    ticks = int(round((hi - lo) / step))
    for i in range(ticks + 1):
        v = lo + step * i
        y = y_of(v)
        d.add(Line(left, y, left + plot_w, y, strokeColor=colors.HexColor("#dddddd"), strokeWidth=0.4))
        d.add(String(left - 4, y - 3, f"{v:.0f}%", fontSize=7, textAnchor="end"))
    cohorts = [c for c in evaluation.cohorts if any(r["cohort"] == c for r in rows)]
    groups = max(1, len(TABLE1_METRICS))
    group_w = plot_w / groups
    rng = random.Random(0)
    for gi, metric in enumerate(TABLE1_METRICS):
        x0 = left + gi * group_w
        d.add(
            String(
                x0 + group_w / 2,
                bottom - 14,
                METRIC_LABELS[metric].split(" (")[0],
                fontSize=8,
                textAnchor="middle",
            )
        )
        for ci, cohort in enumerate(cohorts):
            cx = x0 + group_w * (ci + 1) / (len(cohorts) + 1)
            color = colors.HexColor(FIG_COLORS.get(cohort, "#555555"))
            for r in rows:
                if r["cohort"] == cohort and r[metric] is not None:
                    jitter = rng.uniform(-group_w * 0.08, group_w * 0.08)
                    d.add(Circle(cx + jitter, y_of(100 * r[metric]), 1.6, fillColor=color, strokeColor=None))
            s = (summary.get(DATASET_NAMES[cohort]) or {}).get(metric)
            if s:
                ym = y_of(100 * s["mean"])
                d.add(
                    Line(
                        cx + group_w * 0.12,
                        ym,
                        cx + group_w * 0.22,
                        ym,
                        strokeColor=colors.black,
                        strokeWidth=1.2,
                    )
                )
                if s["ci_low"] is not None:
                    xm = cx + group_w * 0.17
                    d.add(
                        Line(
                            xm,
                            y_of(100 * s["ci_low"]),
                            xm,
                            y_of(100 * s["ci_high"]),
                            strokeColor=colors.black,
                            strokeWidth=0.8,
                        )
                    )
    for ci, cohort in enumerate(cohorts):
        lx = left + 8 + ci * 90
        d.add(
            Circle(
                lx,
                top + 12,
                2.5,
                fillColor=colors.HexColor(FIG_COLORS.get(cohort, "#555555")),
                strokeColor=None,
            )
        )
        d.add(String(lx + 6, top + 9, DATASET_NAMES[cohort], fontSize=8))
    d.add(
        String(
            left + plot_w,
            top + 9,
            "bar: cohort mean, line: 95% CI (clipped to the axis)",
            fontSize=7,
            textAnchor="end",
        )
    )
    return d


def scatter_drawing(evaluation: Evaluation, width: float = 480, height: float = 200):
    """Dice (percent) vs reference vessel volume (mL) per patient (reportlab Drawing)."""
    from reportlab.graphics.shapes import Circle, Drawing, Line, String
    from reportlab.lib import colors

    rows = [r for r in _figure_rows(evaluation) if r["dice"] is not None]
    d = Drawing(width, height)
    left, bottom, right, top = 40, 30, width - 10, height - 12
    if not rows:
        d.add(String(width / 2, height / 2, "no Dice values", fontSize=9, textAnchor="middle"))
        return d
    xs = [r["vessel_volume_ml"] for r in rows]
    ys = [100 * r["dice"] for r in rows]
    x_lo, x_hi = 0.0, max(xs) * 1.05 or 1.0
    y_lo, y_step = _percent_axis(ys)
    y_hi = 100.0

    def px(v):
        return left + (v - x_lo) / (x_hi - x_lo) * (right - left)

    def py(v):
        return bottom + (v - y_lo) / (y_hi - y_lo) * (top - bottom)

    for i in range(int(round((y_hi - y_lo) / y_step)) + 1):
        v = y_lo + y_step * i
        d.add(Line(left, py(v), right, py(v), strokeColor=colors.HexColor("#dddddd"), strokeWidth=0.4))
        d.add(String(left - 4, py(v) - 3, f"{v:.0f}%", fontSize=7, textAnchor="end"))
    for i in range(6):
        xv = x_lo + (x_hi - x_lo) * i / 5
        d.add(String(px(xv), bottom - 10, f"{xv:.2g}", fontSize=7, textAnchor="middle"))
    d.add(
        String(
            (left + right) / 2, bottom - 22, "reference vessel volume (mL)", fontSize=8, textAnchor="middle"
        )
    )
    d.add(String(left, top + 2, "Dice (%)", fontSize=8))
    for r, x, y in zip(rows, xs, ys, strict=True):
        color = colors.HexColor(FIG_COLORS.get(r["cohort"], "#555555"))
        d.add(Circle(px(x), py(y), 2.0, fillColor=color, strokeColor=None))
    return d


TRUTH_COLORS = {("dla", 0): "#9ecae1", ("dsa", 0): "#fdd0a2", ("dla", 1): "#1f77b4", ("dsa", 1): "#e6550d"}


def truth_radius_drawing(evaluation: Evaluation, width: float = 480, height: float = 220):
    """Cohort mean Dice (percent, 95% CI line) against the truth by vessel radius, 3D-DLA vs the DSA baseline, one
    bar per dataset and method; bins below one voxel shaded (reportlab Drawing), or None without truth."""
    from reportlab.graphics.shapes import Drawing, Line, Rect, String
    from reportlab.lib import colors

    data = truth_plot_data(evaluation)
    if data is None:
        return None
    d = Drawing(width, height)
    left, bottom, top = 40, 30, height - 26
    plot_w = width - left - 10
    n_bins = max(1, len(data["bins"]))
    group_w = plot_w / n_bins

    def y_of(v):
        return bottom + max(0.0, min(100.0, v)) / 100.0 * (top - bottom)

    for gi, b in enumerate(data["bins"]):
        x0 = left + gi * group_w
        if b["below_voxel"]:
            d.add(
                Rect(
                    x0, bottom, group_w, top - bottom, fillColor=colors.HexColor("#f0f0f0"), strokeColor=None
                )
            )
        d.add(String(x0 + group_w / 2, bottom - 12, b["label"], fontSize=7, textAnchor="middle"))
    for v in range(0, 101, 20):
        d.add(
            Line(
                left, y_of(v), left + plot_w, y_of(v), strokeColor=colors.HexColor("#dddddd"), strokeWidth=0.4
            )
        )
        d.add(String(left - 4, y_of(v) - 3, f"{v}%", fontSize=7, textAnchor="end"))
    series = [(di, side) for di in range(len(data["datasets"])) for side in METHODS]
    bar_w = group_w * 0.8 / max(1, len(series))
    for si, (di, side) in enumerate(series):
        ds = data["datasets"][di]
        color = colors.HexColor(
            TRUTH_COLORS.get((side, min(di, 1) if len(data["datasets"]) > 1 else 1), "#777777")
        )
        for gi, value in enumerate(ds[side]):
            if value is None:
                continue
            mean, low, high = value
            x = left + gi * group_w + group_w * 0.1 + si * bar_w
            d.add(Rect(x, bottom, bar_w * 0.9, y_of(100 * mean) - bottom, fillColor=color, strokeColor=None))
            if low is not None:
                xm = x + bar_w * 0.45
                d.add(
                    Line(xm, y_of(100 * low), xm, y_of(100 * high), strokeColor=colors.black, strokeWidth=0.7)
                )
        lx = left + si * 110
        d.add(Rect(lx, top + 10, 6, 6, fillColor=color, strokeColor=None))
        d.add(String(lx + 9, top + 10, f"{METHODS[side]}, {ds['dataset']}", fontSize=7))
    d.add(
        String(
            left,
            bottom - 24,
            f"vessel radius (shaded: below one voxel, {data['voxel_mm']:.3g} mm)",
            fontSize=7,
        )
    )
    return d


def drawing_svg(drawing) -> str:
    from reportlab.graphics import renderSVG

    svg = renderSVG.drawToString(drawing)
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


# ------------------------------------------------------------------------------------------------ HTML / PDF


def report_html(evaluation: Evaluation) -> str:
    """A standalone HTML report (no scripts, CSS inline, figures as inline SVG)."""
    ctx = report_context(evaluation)
    ctx["strip_svg"] = drawing_svg(strip_drawing(evaluation))
    ctx["scatter_svg"] = drawing_svg(scatter_drawing(evaluation))
    truth_drawing = truth_radius_drawing(evaluation)
    ctx["truth_svg"] = drawing_svg(truth_drawing) if truth_drawing is not None else ""
    return render_to_string("evaluation/report_download.html", ctx)


def _truth_pdf(truth: dict, evaluation: Evaluation, styles, small, grid) -> list:
    """PDF flowables of the truth-referenced section (tables, Dice by radius, residual bone by case)."""
    from reportlab.lib.units import mm
    from reportlab.platypus import CondPageBreak, KeepTogether, Paragraph, Spacer, Table

    title = Paragraph("Against the exact phantom truth: 3D-DLA vs the 3D-DSA baseline", styles["Heading3"])
    if not truth["available"]:
        return [Spacer(1, 3 * mm), title, Paragraph(escape(truth["note"]), small)]
    out = [CondPageBreak(60 * mm), Spacer(1, 3 * mm), title]
    out.append(
        Paragraph(
            escape(
                f"Whole head (every voxel), mean and 95% CI over patients. {truth['dsa_baseline']}. Radius >= 1 "
                f"voxel = {truth['voxel_mm']:.3g} mm; centreline sensitivity and clDice from 3-D skeletons."
            ),
            small,
        )
    )

    def two(text: str) -> str:  # mean over its CI: the wide tables fit the page
        return text.replace(" [", "\n[", 1)

    header = ["Dataset", "Method", *(label.replace(", ", ",\n") for label in truth["metric_labels"])]
    data = [header]
    for d in truth["datasets"]:
        for row in d["rows"]:
            data.append(
                [d["dataset"], row["method"].replace(", ", ",\n"), *(two(c["text"]) for c in row["cells"])]
            )
    t = Table(data, hAlign="LEFT", repeatRows=1)
    t.setStyle(grid)
    out.append(t)
    for d in truth["datasets"]:
        mf = d["motion_free"]
        out.append(
            Paragraph(
                escape(
                    f"{d['dataset']}, motion-free cases (n={mf['n']}): sensitivity 3D-DLA {mf['dla']} vs DSA "
                    f"{mf['dsa']}, paired {mf['paired']} ({mf['p']})."
                ),
                small,
            )
        )
    rdata = [
        [
            "Dataset",
            "Radius",
            "vs voxel",
            "Studies",
            "Dice DLA",
            "Dice DSA",
            "Sens. DLA",
            "Sens. DSA",
            "Centreline\nDLA",
            "Centreline\nDSA",
            "Dice\nDLA - DSA",
        ]
    ]
    for d in truth["datasets"]:
        for r in d["radius_rows"]:
            rdata.append(
                [
                    d["dataset"],
                    r["label"],
                    r["relation"].replace(" one", "\none"),
                    r["n_studies"],
                    *(two(c) for c in r["cells"]),
                    two(r["paired"]),
                ]
            )
    t = Table(rdata, hAlign="LEFT", repeatRows=1)
    t.setStyle(grid)
    drawing = truth_radius_drawing(evaluation, 720, 220)
    out += [
        Spacer(1, 2 * mm),
        KeepTogether([Paragraph("By vessel radius", styles["Heading4"]), t]),
        drawing,
    ]
    bdata = [
        ["Dataset", "3D-DSA", "3D-DLA", "DSA, motion", "DSA, no motion", "DLA, motion", "DLA, no motion"]
    ]
    for d in truth["datasets"]:
        b = d["bone"]
        bdata.append(
            [
                d["dataset"],
                b["dsa"],
                b["dla"],
                b["dsa_motion"],
                b["dsa_still"],
                b["dla_motion"],
                b["dla_still"],
            ]
        )
    t = Table(bdata, hAlign="LEFT")
    t.setStyle(grid)
    out += [
        KeepTogether(
            [
                Paragraph("Residual bone against the truth's bone", styles["Heading4"]),
                t,
                Paragraph(escape(truth["residual_bone_rule"]) + ".", small),
            ]
        )
    ]
    cdata = [
        ["Study", "Cohort", "Motion", "Dice DLA", "Dice DSA", "Residual bone 3D-DLA", "Residual bone 3D-DSA"]
    ]
    for c in truth["cases"]:
        cdata.append(
            [
                c["pseudonym"],
                c["cohort"],
                {True: "yes", False: "no", None: "n/a"}[c["motion"]],
                _pct(c["dla_dice"]) or "n/a",
                _pct(c["dsa_dice"]) or "n/a",
                c["dla_bone_text"],
                c["dsa_bone_text"],
            ]
        )
    t = Table(cdata, hAlign="LEFT", repeatRows=1)
    t.setStyle(grid)
    out += [
        Spacer(1, 2 * mm),
        Paragraph("Truth-referenced results by case (Dice in percent)", styles["Heading4"]),
        t,
    ]
    for note in truth["notes"]:
        out.append(Paragraph(f"Note: {escape(note)}", small))
    return out


def report_pdf(evaluation: Evaluation) -> bytes:
    """The report as PDF (A4): parameters, Table 1 next to the paper's, artifact table, figures, per-study table,
    worst cases, model configuration."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        CondPageBreak,
        KeepTogether,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    ctx = report_context(evaluation)
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=landscape(A4),
        leftMargin=14 * mm,
        rightMargin=14 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=f"DLA evaluation #{evaluation.pk}",
        author="DLA Workbench",
    )
    grid = TableStyle(
        [
            ("FONTSIZE", (0, 0), (-1, -1), 8),
            ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#999999")),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ]
    )
    m = ctx["model"]
    story = [
        Paragraph(
            f"DLA evaluation #{evaluation.pk}: {escape(m['name'])} (model #{m['id']})", styles["Title"]
        ),
        Paragraph(
            f"Cohorts: {ctx['params']['cohorts']} &middot; reference: {ctx['params']['reference']} &middot; "
            f"95% CI: {ctx['params']['ci']} &middot; generated {ctx['generated_at']:%Y-%m-%d %H:%M} UTC",
            small,
        ),
        Spacer(1, 4 * mm),
        Paragraph("Table 1. Vessel classification per patient: mean and 95% CI", styles["Heading3"]),
    ]
    header = ["Dataset", *ctx["metric_labels"]]
    data = [header]
    for row in ctx["table1"]:
        data.append([f"{row['dataset']} (n={row['n']})", *(c["text"] for c in row["cells"])])
        if row.get("paper"):
            data.append([f"  paper (n={row['paper']['n']})", *(c["paper"] for c in row["cells"])])
    table = Table(data, hAlign="LEFT")
    style = TableStyle(grid.getCommands())
    for i, r in enumerate(data):
        if i and r[0].startswith("  paper"):
            style.add("TEXTCOLOR", (0, i), (-1, i), colors.HexColor("#555555"))
            style.add("FONTNAME", (0, i), (-1, i), "Helvetica-Oblique")
    table.setStyle(style)
    story.append(table)
    notes = [f"{row['dataset']}: {n}" for row in ctx["table1"] for n in row.get("notes", [])]
    for note in notes + ctx["summary"].get("notes", []):
        story.append(Paragraph(f"Note: {escape(note)}", small))
    if ctx["truth_table1"]:
        story += [
            Spacer(1, 3 * mm),
            Paragraph("Against the exact phantom truth (same ROI)", styles["Heading4"]),
        ]
        tdata = [header] + [
            [f"{row['dataset']} (n={row['n']})", *(c["text"] for c in row["cells"])]
            for row in ctx["truth_table1"]
        ]
        t = Table(tdata, hAlign="LEFT")
        t.setStyle(grid)
        story.append(t)
    story += _truth_pdf(ctx["truth"], evaluation, styles, small, grid)
    artifact_block = [
        Spacer(1, 3 * mm),
        Paragraph("Residual bone artifacts: DSA vs 3D-DLA", styles["Heading3"]),
    ]
    adata = [["Dataset", "3D-DSA", "3D-DLA"]]
    for a in ctx["artifacts"]:
        adata.append([a["dataset"], (a["dsa"] or {}).get("text", "n/a"), (a["dla"] or {}).get("text", "n/a")])
        for region in a["regions"]:
            adata.append([f"  {region['name']}", region["dsa"], region["dla"]])
    t = Table(adata, hAlign="LEFT")
    t.setStyle(grid)
    artifact_block.append(t)
    artifact_block.append(
        Paragraph(
            f"A case has residual bone when a 26-connected cluster of at least {evaluation.min_cluster_voxels} voxels "
            f"&ge; {evaluation.bright_hu:g} HU lies inside the (1-voxel eroded) reference bone class. "
            + escape(" ".join(ctx["summary"].get("artifact_region_notes", []))),
            small,
        )
    )
    story.append(KeepTogether(artifact_block))
    story += [
        CondPageBreak(90 * mm),
        KeepTogether(
            [Paragraph("Per-patient metrics", styles["Heading3"]), strip_drawing(evaluation, 720, 230)]
        ),
    ]
    story += [
        Paragraph("Dice vs reference vessel volume", styles["Heading3"]),
        scatter_drawing(evaluation, 720, 200),
    ]
    worst = ctx["summary"].get("worst_cases", [])
    if worst:
        story.append(
            Paragraph(
                "Worst cases by Dice: "
                + escape(", ".join(f"{w['pseudonym']} ({100 * w['dice']:.1f}%)" for w in worst)),
                small,
            )
        )
    story += [PageBreak(), Paragraph("Per-study results (percent)", styles["Heading3"])]
    sdata = [
        [
            "Study",
            "Cohort",
            "TP",
            "FP",
            "FN",
            "TN",
            "Acc",
            "Sens",
            "PPV",
            "Dice",
            "Spec",
            "Vessel mL",
            "DSA bone",
            "DLA bone",
        ]
    ]
    for r in ctx["studies"]:
        sdata.append(
            [
                r["pseudonym"],
                r["cohort"],
                r["tp"],
                r["fp"],
                r["fn"],
                r["tn"],
                *(_pct(r[k]) or "n/a" for k in ("accuracy", "sensitivity", "ppv", "dice", "specificity")),
                f"{r['vessel_volume_ml']:.2f}",
                {True: "yes", False: "no", None: "n/a"}[r["dsa_residual_bone"]],
                {True: "yes", False: "no", None: "n/a"}[r["dla_residual_bone"]],
            ]
        )
    t = Table(sdata, hAlign="LEFT", repeatRows=1)
    t.setStyle(grid)
    story.append(t)
    if ctx["missing"]:
        story += [Spacer(1, 3 * mm), Paragraph("Not evaluated", styles["Heading4"])]
        for item in ctx["missing"]:
            story.append(
                Paragraph(escape(f"{item['pseudonym']} ({item['cohort']}): {item['reason']}"), small)
            )
    story += [Spacer(1, 4 * mm), Paragraph("Model", styles["Heading3"])]
    story.append(
        Paragraph(
            f"{escape(m['name'])} &middot; source {m['source']} &middot; sha256 {m['sha256'][:16]}&hellip; &middot; "
            f"fingerprint {escape(m['fingerprint'])}",
            small,
        )
    )
    if m["training"]:
        tr = m["training"]
        story.append(
            Paragraph(
                f"Training run #{tr['task_run']} ({tr['state']}), {tr['iterations']} iterations, "
                f"{tr['train_studies']} training / {tr['validation_studies']} validation studies",
                small,
            )
        )
    story.append(Paragraph("Network: " + escape(json.dumps(m["network_config"], sort_keys=True)), small))
    if m["train_config"]:
        story.append(Paragraph("Training: " + escape(json.dumps(m["train_config"], sort_keys=True)), small))
    doc.build(story)
    return buf.getvalue()
