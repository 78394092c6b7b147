"""``manage.py make_phantoms``: write synthetic angiography subjects as DICOM + NIfTI (and optionally import
them). ``--cohort`` follows the paper's 105 subjects split 35/8/62 (``--count`` takes the first N of the plan).
``--shift KEY=VALUE ...`` makes a shifted cohort (``dla.phantoms.shift.SHIFT_OPTIONS``: noise, blur, contrast,
skull thickness, bone density, vessel tortuosity; docs/REPRODUCTION.md "Shifted cohorts")."""

import csv
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from dla.phantoms import (
    SHIFT_OPTIONS,
    PhantomParameterError,
    cohort_plan,
    make_subject,
    parse_shift_items,
    subject_from_plan,
)
from dla_web.progress import TerminalProgress

from ...phantom_import import import_subject, write_subject
from ...tasks import enqueue_cines

SPLIT_TO_COHORT = {"train": "train", "validation": "validation", "test": "test"}


class Command(BaseCommand):
    help = "Generate angiography phantoms (fill, mask, subtracted DSA, truth) as DICOM series and NIfTI."

    def add_arguments(self, parser):
        parser.add_argument(
            "--count", type=int, default=None, help="number of subjects (default 1, or 105 with --cohort)"
        )
        parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 64], metavar=("Z", "Y", "X"))
        parser.add_argument(
            "--spacing",
            type=float,
            nargs=3,
            default=None,
            metavar=("DZ", "DY", "DX"),
            help="voxel spacing in mm (default: 0.46 mm for >= 256^3, else the head fits the grid)",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", type=Path, help="output folder for DICOM + NIfTI")
        parser.add_argument(
            "--cohort", action="store_true", help="the paper's 105-subject cohort plan (35/8/62)"
        )
        parser.add_argument("--ingest", action="store_true", help="also import each subject as a study")
        parser.add_argument(
            "--shift",
            nargs="+",
            default=None,
            metavar="KEY=VALUE",
            help="shifted cohort: override drawn settings after the random draws, e.g. noise_scale=2 "
            "contrast_scale=0.7; keys: " + ", ".join(SHIFT_OPTIONS),
        )

    def handle(self, *args, count, shape, spacing, seed, out, cohort, ingest, shift=None, **options):
        if out is None and not ingest:
            raise CommandError("give --out DIR and/or --ingest")
        try:
            shift = parse_shift_items(shift) or None
        except PhantomParameterError as exc:
            raise CommandError(str(exc))
        if cohort:
            plan = cohort_plan(105, seed=seed)[: count or 105]
        else:
            plan = [
                {"subject_id": f"PH-{seed + i:03d}", "split": None, "seed": seed + i}
                for i in range(count or 1)
            ]
        rows = []
        progress = TerminalProgress(self.stderr)
        for index, entry in enumerate(plan):
            try:
                if "make_subject_kwargs" in entry:
                    subject = subject_from_plan(
                        entry, tuple(shape), tuple(spacing) if spacing else None, shift=shift
                    )
                else:
                    subject = make_subject(
                        tuple(shape), tuple(spacing) if spacing else None, seed=entry["seed"], shift=shift
                    )
            except PhantomParameterError as exc:
                raise CommandError(str(exc))
            subject_id = entry["subject_id"]
            split = entry.get("split")
            if out is not None:
                write_subject(subject, out, subject_id=subject_id, extra_meta={"split": split})
            if ingest:
                study = import_subject(
                    subject, subject_id=subject_id, cohort=SPLIT_TO_COHORT.get(split, "unassigned")
                )
                enqueue_cines(study.volumes.all())
            rows.append(
                {
                    "subject_id": subject_id,
                    "split": split or "",
                    "injection": subject.injection,
                    "motion": bool(subject.motion.get("enabled")),
                }
            )
            progress((index + 1) / len(plan), f"{subject_id} written")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "subjects.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        self.stdout.write(
            self.style.SUCCESS(f"{len(rows)} phantom subject(s)" + (f" in {out}" if out else ""))
        )
