"""``manage.py seed_demo_studies``: a handful of phantom studies for the demo (called by ``createdemo``):
train, validation and test studies; train studies get recipe labels committed by the demo annotator and
approved by the demo admin, so every page has something to show. Skips studies that already exist."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from dla.phantoms import cohort_plan, subject_from_plan
from dla_web.progress import TerminalProgress

from ...labels import apply_draft_op, commit, get_or_create_draft, review, submit_for_review
from ...models import Study
from ...phantom_import import import_subject
from ...tasks import enqueue_cines, enqueue_label_cine

DEMO_SHAPE = (64, 96, 96)
DEMO_SPACING_MM = (1.4, 1.4, 1.4)
DEMO_RECIPE = {"vessel_threshold_hu": 600}  # the recipe's defaults: vessel floor 20 mm^3 (8 voxels of 1.4 mm)


class Command(BaseCommand):
    help = (
        "Create demo phantom studies: approved recipe labels for the train studies, recipe labels submitted for "
        "review for the validation study."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--per-cohort", type=int, nargs=3, default=[3, 1, 2], metavar=("TRAIN", "VAL", "TEST")
        )

    def handle(self, *args, per_cohort, **options):
        plan = cohort_plan(105, seed=0)
        wanted = dict(zip(("train", "validation", "test"), per_cohort, strict=True))
        chosen = []
        for entry in plan:
            if wanted.get(entry["split"], 0) > 0:
                wanted[entry["split"]] -= 1
                chosen.append(entry)
        User = get_user_model()
        annotator = User.objects.filter(username="annotator").first()
        admin = User.objects.filter(username="admin").first()
        progress = TerminalProgress(self.stderr)
        for index, entry in enumerate(chosen):
            progress(index / len(chosen), f"demo study {entry['subject_id']}")
            if Study.objects.filter(pseudonym=entry["subject_id"]).exists():
                continue
            subject = subject_from_plan(entry, DEMO_SHAPE, DEMO_SPACING_MM)
            study = import_subject(subject, subject_id=entry["subject_id"], cohort=entry["split"])
            enqueue_cines(study.volumes.all())
            if entry["split"] in ("train", "validation") and annotator and admin:
                draft = get_or_create_draft(study, annotator)
                apply_draft_op(draft.pk, {"op": "recipe", "params": DEMO_RECIPE})
                version = commit(draft.pk, annotator, "Recipe labels (demo seed)")
                enqueue_label_cine(version, user=annotator)
                if entry["split"] == "train":
                    review(version, admin, "approved", "demo: approved")
                else:  # waits in the admin's review queue: approve it there, then train with the form's defaults
                    submit_for_review(version)
        progress(1.0, f"{len(chosen)} demo studies ready")
