"""``manage.py infer``: run a model (default: the active one) on studies or a cohort, like the API, in this
process (default) or on a worker (``--worker``), with a terminal progress bar. Stores class map, vessel
probability and 3D-DLA volumes for every study."""

import argparse

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from annotations.models import Study
from dla.model.base import (
    DEFAULT_BONE_PRIOR_STRENGTH,
    DEFAULT_MIRROR,
    DEFAULT_PRIOR_STRENGTH,
    check_prior_strength,
)
from dla_web.models import TaskRun
from dla_web.progress import TerminalProgress
from inference import services, tasks

from ._follow import follow


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--study", nargs="+", help="study ids or pseudonyms")
        target.add_argument("--cohort", choices=[c for c in Study.Cohort.values])
        parser.add_argument("--model", type=int, default=None, help="model version id (default: active)")
        parser.add_argument(
            "--candidate-min-hu",
            default="100",
            help="run the network only where fill >= this HU; 'none' = all",
        )
        parser.add_argument(
            "--prior-strength",
            type=float,
            default=DEFAULT_PRIOR_STRENGTH,
            help="re-weight the balanced-training probabilities to the training labels' class frequencies: 1 the "
            f"full Bayes prior shift, 0 none (plain argmax, the paper's rule), default {DEFAULT_PRIOR_STRENGTH:g}; "
            "vessel against soft tissue",
        )
        parser.add_argument(
            "--bone-prior-strength",
            type=float,
            default=DEFAULT_BONE_PRIOR_STRENGTH,
            help=f"the same for vessel against bone, default {DEFAULT_BONE_PRIOR_STRENGTH:g} (both 0: plain argmax)",
        )
        parser.add_argument(
            "--mirror",
            action=argparse.BooleanOptionalAction,
            default=DEFAULT_MIRROR,
            help="average each volume's prediction with that of its left-right mirror image (test-time "
            "augmentation, twice the network time; voxel classifier only); default: one pass",
        )
        parser.add_argument("--user", default=None)
        parser.add_argument("--worker", action="store_true", help="queue on a Celery worker and follow it")

    def handle(self, *args, **opts):
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"no user {opts['user']!r}")
        min_hu = None if opts["candidate_min_hu"] == "none" else int(opts["candidate_min_hu"])
        try:
            version = services.resolve_model(opts["model"])
            study_ids = None
            if opts["study"]:
                ids = [int(s) for s in opts["study"] if s.isdigit()]
                names = [s for s in opts["study"] if not s.isdigit()]
                found = list(Study.objects.filter(Q(pk__in=ids) | Q(pseudonym__in=names)))
                missing = set(opts["study"]) - {str(s.pk) for s in found} - {s.pseudonym for s in found}
                if missing:
                    raise CommandError(f"unknown studies: {', '.join(sorted(missing))}")
                study_ids = [s.pk for s in found]
            studies = services.inference_studies(study_ids=study_ids, cohort=opts["cohort"])
            services.load_model(version)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        for option in ("prior_strength", "bone_prior_strength"):
            try:
                check_prior_strength(opts[option])
            except ValueError as exc:
                raise CommandError(f"--{option.replace('_', '-')}: {exc}") from exc
        run = tasks.start_inference(
            user=user,
            version=version,
            studies=studies,
            candidate_min_hu=min_hu,
            in_process=not opts["worker"],
            prior_strength=opts["prior_strength"],
            bone_prior_strength=opts["bone_prior_strength"],
            mirror=opts["mirror"],
        )
        self.stdout.write(
            f"inference run {run.pk}: model #{version.pk} {version.name} on {len(studies)} studies"
        )
        if opts["worker"]:
            run = follow(run, self.stderr)
        else:
            run = tasks.infer_studies.run_here(run, terminal=TerminalProgress(self.stderr))
        if run.state != TaskRun.State.SUCCEEDED:
            raise CommandError(f"inference run {run.pk} {run.state}: {run.error or run.message}")
        for s in run.result["studies"]:
            rate = (
                f"{s['voxels_per_s']:,.0f} voxels/s, {s['elapsed_s']:.1f} s"
                if "voxels_per_s" in s
                else "reused"
            )
            self.stdout.write(f"{s['pseudonym']}: volumes {s['volumes']} ({rate})")
        self.stdout.write(self.style.SUCCESS(f"done: {len(run.result['studies'])} studies"))
