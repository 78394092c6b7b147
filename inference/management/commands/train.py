"""``manage.py train``: start a DLA training run like the training page does, in this process (default) or on
a worker (``--worker``), with a terminal progress bar. ``--resume RUN`` continues an interrupted run from its
checkpoint. Options are validated by the same serializer as the API (paper defaults)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from dla.model.network import ARCHITECTURES
from dla_web.models import TaskRun
from dla_web.progress import TerminalProgress
from inference import services, tasks
from inference.serializers import FORM_DEFAULTS, TrainRequestSerializer

from ._follow import follow


def floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--name", default="")
        parser.add_argument("--notes", default="")
        parser.add_argument("--preset", default=FORM_DEFAULTS["preset"])
        parser.add_argument(
            "--architecture",
            default=FORM_DEFAULTS["architecture"],
            choices=sorted(ARCHITECTURES),
            help="voxel: the DLA voxel classifier of --preset; unet3d: a 3D U-Net planned for the cohort's spacing",
        )
        parser.add_argument("--unet-patch-px", type=int, default=FORM_DEFAULTS["unet_patch_px"])
        parser.add_argument("--unet-base-filters", type=int, default=FORM_DEFAULTS["unet_base_filters"])
        parser.add_argument("--train-cohort", default="train")
        parser.add_argument("--validation-cohort", default="validation", help="'none': monitor training data")
        parser.add_argument("--mode", default=FORM_DEFAULTS["mode"], choices=["dense", "patch"])
        parser.add_argument("--batch-size", type=int, default=FORM_DEFAULTS["batch_size"])
        parser.add_argument(
            "--lr", type=floats, default=FORM_DEFAULTS["lr_values"], help="e.g. 1e-3,1e-4,1e-5"
        )
        parser.add_argument("--lr-boundaries", type=floats, default=FORM_DEFAULTS["lr_boundaries_epochs"])
        parser.add_argument("--momentum", type=float, default=FORM_DEFAULTS["momentum"])
        parser.add_argument("--weight-decay", type=float, default=FORM_DEFAULTS["weight_decay"])
        parser.add_argument("--max-iterations", type=int, default=FORM_DEFAULTS["max_iterations"])
        parser.add_argument("--val-every", type=int, default=FORM_DEFAULTS["val_every"])
        parser.add_argument(
            "--val-samples-per-class", type=int, default=FORM_DEFAULTS["val_samples_per_class"]
        )
        parser.add_argument("--patience", type=int, default=FORM_DEFAULTS["early_stopping_patience"])
        parser.add_argument("--slabs-per-batch", type=int, default=FORM_DEFAULTS["dense_slabs_per_batch"])
        parser.add_argument("--slab-px", type=int, default=FORM_DEFAULTS["dense_output_px"])
        parser.add_argument("--epoch-voxels", type=int, default=None)
        parser.add_argument("--checkpoint-every", type=int, default=FORM_DEFAULTS["checkpoint_every"])
        parser.add_argument("--seed", type=int, default=FORM_DEFAULTS["seed"])
        parser.add_argument(
            "--augment-noise-hu",
            type=float,
            default=FORM_DEFAULTS["augment_noise_hu"],
            help="max extra noise SD",
        )
        parser.add_argument(
            "--augment-blur-sigma-voxels", type=float, default=FORM_DEFAULTS["augment_blur_sigma_voxels"]
        )
        parser.add_argument(
            "--augment-hu-scale",
            type=floats,
            default=[FORM_DEFAULTS["augment_hu_scale_low"], FORM_DEFAULTS["augment_hu_scale_high"]],
            help="LOW,HIGH: HU multiplied by a factor drawn in this range (1,1 = off)",
        )
        parser.add_argument("--augment-probability", type=float, default=FORM_DEFAULTS["augment_probability"])
        parser.add_argument(
            "--activate", action="store_true", help="activate the model when training succeeds"
        )
        parser.add_argument("--user", default=None, help="username recorded as the run's creator")
        parser.add_argument("--worker", action="store_true", help="queue on a Celery worker and follow it")
        parser.add_argument(
            "--resume", type=int, default=None, metavar="RUN", help="continue training run RUN"
        )

    def handle(self, *args, **opts):
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"no user {opts['user']!r}")
        if opts["resume"] is not None:
            run = TaskRun.objects.filter(pk=opts["resume"], kind="train").first()
            if run is None:
                raise CommandError(f"no training run {opts['resume']}")
            if run.state == TaskRun.State.SUCCEEDED:
                raise CommandError(f"training run {run.pk} already succeeded")
            TaskRun.objects.filter(pk=run.pk).update(
                cancel_requested=False, error="", state=TaskRun.State.QUEUED, finished_at=None
            )
            run.refresh_from_db()
            return self.run_here(run)
        if len(opts["augment_hu_scale"]) != 2:
            raise CommandError("--augment-hu-scale takes two numbers, LOW,HIGH (e.g. 0.8,1.2)")
        form = TrainRequestSerializer(
            data={
                "name": opts["name"],
                "notes": opts["notes"],
                "preset": opts["preset"],
                "architecture": opts["architecture"],
                "unet_patch_px": opts["unet_patch_px"],
                "unet_base_filters": opts["unet_base_filters"],
                "augment_noise_hu": opts["augment_noise_hu"],
                "augment_blur_sigma_voxels": opts["augment_blur_sigma_voxels"],
                "augment_hu_scale_low": opts["augment_hu_scale"][0],
                "augment_hu_scale_high": opts["augment_hu_scale"][1],
                "augment_probability": opts["augment_probability"],
                "train_cohort": opts["train_cohort"],
                "validation_cohort": None
                if opts["validation_cohort"] == "none"
                else opts["validation_cohort"],
                "mode": opts["mode"],
                "batch_size": opts["batch_size"],
                "lr_values": opts["lr"],
                "lr_boundaries_epochs": opts["lr_boundaries"],
                "momentum": opts["momentum"],
                "weight_decay": opts["weight_decay"],
                "max_iterations": opts["max_iterations"],
                "val_every": opts["val_every"],
                "val_samples_per_class": opts["val_samples_per_class"],
                "early_stopping_patience": opts["patience"],
                "dense_slabs_per_batch": opts["slabs_per_batch"],
                "dense_output_px": opts["slab_px"],
                "epoch_voxels": opts["epoch_voxels"],
                "checkpoint_every": opts["checkpoint_every"],
                "seed": opts["seed"],
                "activate": opts["activate"],
            }
        )
        if not form.is_valid():
            raise CommandError("; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items()))
        data = form.validated_data
        try:
            plan = services.training_plan(data["train_cohort"], data["validation_cohort"])
        except services.TrainingInputError as exc:
            raise CommandError(str(exc)) from exc
        params = form.task_params(user)
        run, _ = tasks.start_training(user=user, params=params, plan=plan, in_process=not opts["worker"])
        self.stdout.write(
            f"training run {run.pk}: {len(plan['train'])} training / "
            f"{len(plan['validation'])} validation studies"
        )
        if opts["worker"]:
            run = follow(run, self.stderr)
            return self.report(run)
        return self.run_here(run)

    def run_here(self, run):
        try:
            run = tasks.train_model.run_here(run, terminal=TerminalProgress(self.stderr))
        except KeyboardInterrupt:
            raise CommandError(
                f"interrupted; the last checkpoint is kept, resume with --resume {run.pk}"
            ) from None
        finally:
            self.stderr.write("\n")
        if run.state == TaskRun.State.CANCELLED:
            raise CommandError(f"training run {run.pk} cancelled; resume with --resume {run.pk}")
        return self.report(run)

    def report(self, run):
        if run.state != TaskRun.State.SUCCEEDED:
            raise CommandError(f"training run {run.pk} {run.state}: {run.error or run.message}")
        r = run.result
        self.stdout.write(
            self.style.SUCCESS(
                f"model #{r['model_version_id']} {r['name']}: {r['iterations']} iterations ({r['stopped_reason']}), "
                f"best validation error {r['best_val_error']:.4f}, {r['voxels_per_s']:,.0f} voxels/s, "
                f"{r['elapsed_s']:.1f} s"
            )
        )
