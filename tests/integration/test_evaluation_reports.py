"""Evaluation downloads and the report page: the summary CSV carries exactly the Table 1 texts the page shows and
numbers that re-derive them, the per-study CSV equals scikit-learn on the same voxels, the JSON parses without
NaN, the HTML report is standalone (no scripts), and the PDF's first page renders to PNG with pdftoppm (saved to
test-artifacts/ for a look)."""

import csv
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from evaluation.models import Evaluation
from tests.integration.test_evaluation_api import (  # noqa: F401  (cohort is a fixture)
    ROI,
    cohort,
    launch,
    page_client,
    run_inline,
    sklearn_numbers,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished(cohort, client_for):  # noqa: F811
    response = launch(client_for("admin"), model_version=cohort["model"].pk, cohorts=["validation", "test"])
    assert response.status_code == 202, response.json()
    return run_inline(Evaluation.objects.get(pk=response.json()["id"]))


def page_cells(html: str) -> dict:
    """{(dataset, metric): text} of the Table 1 rows on the report page."""
    out = {}
    for dataset, row in re.findall(r'<tr class="ours" data-dataset="([^"]+)">(.*?)</tr>', html, re.S):
        for metric, text in re.findall(r'<td data-metric="([a-z]+)">([^<]*)</td>', row):
            out[(dataset, metric)] = text
    return out


def test_summary_csv_matches_the_report_page(finished, users, client_for):
    admin = client_for("admin")
    html = page_client(users["admin"]).get(f"/evaluations/{finished.pk}/").content.decode()
    cells = page_cells(html)
    assert len(cells) == 8
    response = admin.get(f"/api/evaluations/{finished.pk}/summary-csv/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    table1 = [r for r in rows if r["table"] == "table1"]
    assert {(r["dataset"], r["metric"]) for r in table1} == set(cells)
    for r in table1:
        assert r["text"] == cells[(r["dataset"], r["metric"])]
        # the numbers re-derive the text the page shows
        expected = f"{float(r['mean_pct']):.1f}%"
        if r["ci_low_pct"]:
            expected += f" [{float(r['ci_low_pct']):.1f}, {float(r['ci_high_pct']):.1f}]%"
        else:
            expected += " [no CI]"
        assert r["text"] == expected
        assert r["paper_text"] and r["paper_text"] in html
    assert any(r["table"] == "truth_table1" for r in rows)
    art = {(r["dataset"], r["metric"]): r for r in rows if r["table"] == "residual_bone"}
    assert art[("Testing", "dsa")]["text"] in html and art[("Testing", "dla")]["text"] in html
    assert "nan" not in response.content.decode().lower()


def test_studies_csv_equals_sklearn(finished, cohort, client_for):  # noqa: F811
    # a pseudonym that a spreadsheet would run as a formula (CSV injection, issue 16) is written as text
    formula = '=HYPERLINK("https://evil.example", "x")'
    first = cohort["studies"][0]
    finished.results.filter(study=first).update(pseudonym=formula)
    response = client_for("admin").get(f"/api/evaluations/{finished.pk}/studies-csv/")
    reader = csv.DictReader(io.StringIO(response.content.decode()))
    rows = {int(r["study_id"]): r for r in reader}
    assert reader.fieldnames[-1] == "undefined_metric_reasons" and "undefined" not in reader.fieldnames
    assert rows[first.pk]["pseudonym"] == "'" + formula
    assert not any(c.startswith(("=", "+", "@")) for r in rows.values() for c in r.values())
    assert set(rows) == {s.pk for s in cohort["studies"]}
    for study in cohort["studies"]:
        roi = ROI if study.cohort == "validation" else None
        expected = sklearn_numbers(cohort["labels"][study.pk], cohort["preds"][study.pk], roi)
        r = rows[study.pk]
        for key in ("tp", "fp", "fn", "tn"):
            assert int(r[key]) == expected[key]
        for key in ("accuracy", "sensitivity", "ppv", "dice"):
            assert float(r[f"{key}_pct"]) == pytest.approx(100 * expected[key], abs=1e-4)
        assert r["dsa_residual_bone"] in ("0", "1") and r["dla_residual_bone"] in ("0", "1")


def test_json_and_html_downloads(finished, client_for):
    admin = client_for("admin")
    text = admin.get(f"/api/evaluations/{finished.pk}/export-json/").content.decode()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["evaluation"]["id"] == finished.pk and len(data["studies"]) == 3
    assert data["summary"]["table1"][0]["dataset"] == "Validation"
    assert data["summary"]["table1"][0]["dice"]["ci_low"] is None
    response = admin.get(f"/api/evaluations/{finished.pk}/report-html/")
    html = response.content.decode()
    assert (
        response["Content-Type"].startswith("text/html") and "attachment" in response["Content-Disposition"]
    )
    assert "<script" not in html and html.count("<svg") == 3  # strip, scatter, Dice by radius vs the truth
    for row in finished.summary["table1"]:
        assert row["dice"]["text"] in html
    assert "97.6% [96.5, 98.6]%" in html  # the paper's testing PPV, side by side


def test_pdf_renders_and_its_first_page_is_saved(finished, client_for):
    response = client_for("admin").get(f"/api/evaluations/{finished.pk}/report-pdf/")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    pdf = response.content
    assert pdf.startswith(b"%PDF")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "evaluation-report.pdf"
    path.write_bytes(pdf)
    out = ARTIFACTS / "evaluation-report-page1"
    subprocess.run(
        ["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", str(path), str(out)], check=True
    )
    png = out.with_suffix(".png")
    from PIL import Image

    image = np.asarray(Image.open(png).convert("L"))
    assert image.shape[1] > image.shape[0]  # landscape A4
    assert (image < 128).mean() > 0.005  # text and tables were drawn
    text = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(path), "-"], capture_output=True, text=True)
    if text.returncode == 0:
        for row in finished.summary["table1"]:
            assert row["dice"]["text"] in text.stdout


def test_report_page_while_running_shows_progress(cohort, users, client_for):  # noqa: F811
    response = launch(client_for("admin"), model_version=cohort["model"].pk, cohorts=["test"])
    evaluation = Evaluation.objects.get(pk=response.json()["id"])
    html = page_client(users["admin"]).get(f"/evaluations/{evaluation.pk}/").content.decode()
    assert f'data-run="{evaluation.task_run_id}"' in html and "Table 1" not in html
    listing = page_client(users["admin"]).get("/evaluations/").content.decode()
    assert f'data-evaluation="{evaluation.pk}"' in listing


def test_evaluate_command_prints_table1_and_writes_the_pdf(cohort, tmp_path):  # noqa: F811
    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    pdf = tmp_path / "report.pdf"
    call_command(
        "evaluate",
        "--model",
        str(cohort["model"].pk),
        "--cohort",
        "test",
        "--pdf",
        str(pdf),
        stdout=out,
        stderr=io.StringIO(),
    )
    evaluation = Evaluation.objects.get()
    assert evaluation.is_done and pdf.read_bytes().startswith(b"%PDF")
    text = out.getvalue()
    assert evaluation.summary["table1"][0]["dice"]["text"] in text and "98.0% [97.4, 98.7]%" in text
    with pytest.raises(CommandError, match="the train cohort has no studies"):
        call_command(
            "evaluate", "--model", str(cohort["model"].pk), "--cohort", "train", stdout=io.StringIO()
        )
