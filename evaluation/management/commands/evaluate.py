"""``manage.py evaluate [--model ID] [--cohort validation --cohort test] [--reference approved|truth] [--ci t|bootstrap]
[--allow-missing] [--pdf FILE] [--json FILE]``: run an evaluation in this process (terminal progress bar), store it
like the API does, print Table 1 next to the paper's, the residual bone rates and, on phantoms, the
truth-referenced table (3D-DLA vs the DSA baseline against the truth), optionally write the PDF and
the JSON export (e.g. bench/results/evaluation.json for BENCHMARKS.md)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from dla.stats.metrics import TABLE1_METRICS
from dla_web.models import TaskRun
from dla_web.progress import TerminalProgress
from inference.models import ModelVersion

from ... import reports, services, tasks
from ...models import Evaluation
from .reproduce_paper import truth_lines, truth_results


class Command(BaseCommand):
    help = "Evaluate a model version on cohorts and print the paper's Table 1 with 95% CIs."

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, help="ModelVersion id (default: the active model)")
        parser.add_argument(
            "--cohort", action="append", dest="cohorts", help="repeatable; default validation+test"
        )
        parser.add_argument("--reference", default="approved", choices=["approved", "truth"])
        parser.add_argument("--ci", default="t", choices=["t", "bootstrap"])
        parser.add_argument("--allow-missing", action="store_true")
        parser.add_argument("--pdf", type=Path)
        parser.add_argument("--json", type=Path)

    def handle(self, *args, model, cohorts, reference, ci, allow_missing, pdf, json, **options):
        version = ModelVersion.objects.filter(pk=model).first() if model else ModelVersion.active()
        if version is None:
            raise CommandError(
                f"model version {model} does not exist" if model else "no model is active; give --model"
            )
        cohorts = cohorts or ["validation", "test"]
        try:
            evaluation = tasks.start_evaluation(
                user=None,
                in_process=True,
                model_version=version,
                cohorts=cohorts,
                reference=reference,
                ci_method=ci,
                allow_missing=allow_missing,
            )
        except services.EvaluationInputError as exc:
            raise CommandError(str(exc))
        run = tasks.evaluate.run_here(evaluation.task_run, terminal=TerminalProgress())
        if run.state != TaskRun.State.SUCCEEDED:
            raise CommandError(f"evaluation run {run.pk} {run.state}: {run.error or run.message}")
        evaluation = Evaluation.objects.select_related("task_run", "model_version").get(pk=evaluation.pk)
        labels = [services.METRIC_LABELS[m] for m in TABLE1_METRICS]
        self.stdout.write(f"Evaluation #{evaluation.pk} of {version} ({evaluation.get_reference_display()})")
        self.stdout.write(" | ".join(["Dataset", *labels]))
        for row in evaluation.summary["table1"]:
            self.stdout.write(
                " | ".join(
                    [
                        f"{row['dataset']} (n={row['n']})",
                        *((row[m] or {}).get("text", "n/a") for m in TABLE1_METRICS),
                    ]
                )
            )
            if row.get("paper"):
                self.stdout.write(
                    " | ".join(
                        [
                            f"  paper (n={row['paper']['n']})",
                            *(row["paper"][m]["text"] for m in TABLE1_METRICS),
                        ]
                    )
                )
        for dataset, sides in evaluation.summary["artifacts"].items():
            self.stdout.write(
                f"Residual bone, {dataset}: DSA {sides['dsa']['text']} vs DLA {sides['dla']['text']}"
            )
        for line in truth_lines(truth_results(evaluation.summary.get("truth_referenced"))):
            self.stdout.write(line)
        if pdf:
            pdf.write_bytes(reports.report_pdf(evaluation))
            self.stdout.write(f"PDF report: {pdf}")
        if json:
            json.parent.mkdir(parents=True, exist_ok=True)
            json.write_text(reports.export_json(evaluation))
            self.stdout.write(f"JSON: {json}")
