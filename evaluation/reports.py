"""Evaluation reports from stored results: the shared report context (``report_context``, also used by the report
page), CSV (per study, summary), JSON, a standalone HTML report and a PDF report (reportlab).

Figures for the downloads are reportlab drawings (per-patient strip plots with mean and 95% CI per metric, Dice
vs vessel volume); the PDF embeds them as vectors and the HTML report as SVG rendered from the same drawings, so
both downloads show the same figures without a browser or plotly. The page itself draws interactive plotly
versions of the same data. Everything is generated synchronously: a 105-study report takes well under a second
(measured in tests/integration/test_evaluation_reports.py's timing log line, not asserted).
"""

from __future__ import annotations

import csv
import io
import json
import random
from xml.sax.saxutils import escape

from django.template.loader import render_to_string
from django.utils import timezone

from dla.stats.metrics import PAPER_TABLE1, TABLE1_METRICS

from .models import Evaluation
from .services import DATASET_NAMES, METRIC_LABELS, REGION_NAMES

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
                "reasons": "; ".join(f"{k}: {v}" for k, v in (r.reasons or {}).items()),
            }
        )
    return rows


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
    "undefined",
]


def studies_csv(evaluation: Evaluation) -> str:
    """One row per evaluated study; metrics in percent with 4 decimals, empty when undefined."""
    out = io.StringIO()
    writer = csv.writer(out)
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
    writer = csv.writer(out)
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
    return render_to_string("evaluation/report_download.html", ctx)


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
