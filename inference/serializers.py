"""Serializers of the model registry, training runs and inference requests (ranges validated here, so a bad
hyper-parameter is a 400 naming the field, never a failed run)."""

from rest_framework import serializers

from annotations.models import Study
from dla.model.base import DEFAULT_BONE_PRIOR_STRENGTH, DEFAULT_MIRROR, DEFAULT_PRIOR_STRENGTH
from dla.model.network import ARCHITECTURES, PRESETS
from dla.model.train import InvalidTrainConfigError, TrainConfig
from dla_web.serializers import TaskRunSerializer

from .models import ModelVersion, TrainingRun

PAPER = TrainConfig()  # the paper's hyper-parameters are TrainConfig's defaults
COHORTS = [c for c in Study.Cohort.values if c != Study.Cohort.UNASSIGNED]

# Form defaults: the paper's optimiser settings; the run length is scaled for a CPU (the paper stopped at a
# plateau after 2e5 iterations on two GPUs).
FORM_DEFAULTS = {
    "architecture": "voxel",
    "unet_patch_px": 64,
    "unet_base_filters": 16,
    "preset": "cpu",
    "mode": PAPER.mode,
    "batch_size": PAPER.batch_size,
    "dense_output_px": PAPER.dense_output_px,
    "dense_slabs_per_batch": PAPER.dense_slabs_per_batch,
    "momentum": PAPER.momentum,
    "weight_decay": PAPER.weight_decay,
    "lr_values": list(PAPER.lr_values),
    "lr_boundaries_epochs": list(PAPER.lr_boundaries_epochs),
    "max_iterations": 2000,
    "val_every": 100,
    "val_samples_per_class": PAPER.val_samples_per_class,
    "early_stopping_patience": PAPER.early_stopping_patience,
    "early_stopping_min_delta": PAPER.early_stopping_min_delta,
    "seed": PAPER.seed,
    "checkpoint_every": 200,
    # training-batch augmentation (dla.model.train, issue 14.4): off by default, as in the paper
    "augment_noise_hu": PAPER.augment_noise_hu,
    "augment_blur_sigma_voxels": PAPER.augment_blur_sigma_voxels,
    "augment_hu_scale_low": PAPER.augment_hu_scale[0],
    "augment_hu_scale_high": PAPER.augment_hu_scale[1],
    "augment_probability": PAPER.augment_probability,
}

TRAIN_FIELDS = [
    "mode",
    "batch_size",
    "dense_output_px",
    "dense_slabs_per_batch",
    "momentum",
    "weight_decay",
    "lr_values",
    "lr_boundaries_epochs",
    "epoch_voxels",
    "max_iterations",
    "val_every",
    "val_samples_per_class",
    "early_stopping_patience",
    "early_stopping_min_delta",
    "seed",
    "amp",
    "augment_noise_hu",
    "augment_blur_sigma_voxels",
    "augment_probability",
    "augment_mirror",
]


class ModelVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(
        source="created_by.username", default=None, read_only=True, allow_null=True
    )
    summary = serializers.SerializerMethodField()
    final_metrics = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "notes",
            "is_active",
            "source",
            "sha256",
            "size_bytes",
            "fingerprint",
            "network_config",
            "train_config",
            "training_run",
            "summary",
            "final_metrics",
            "created_by",
            "created_at",
        ]
        read_only_fields = [f for f in fields if f not in ("name", "notes")]

    def get_summary(self, version) -> dict:
        return version.metrics.get("summary", {})

    def get_final_metrics(self, version) -> dict:
        return version.metrics.get("final", {})


class ModelVersionDetailSerializer(ModelVersionSerializer):
    class Meta(ModelVersionSerializer.Meta):
        fields = [*ModelVersionSerializer.Meta.fields, "metrics"]
        read_only_fields = [*ModelVersionSerializer.Meta.read_only_fields, "metrics"]


class WeightsUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="DLANet weights (.pt) as written by dla.model.network.save_weights"
    )
    name = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    notes = serializers.CharField(required=False, allow_blank=True, default="")
    preset = serializers.ChoiceField(
        choices=sorted(PRESETS),
        required=False,
        allow_null=True,
        default=None,
        help_text="if given, the weights must have exactly this preset's architecture",
    )
    activate = serializers.BooleanField(default=False)


def train_config(data: dict) -> dict:
    """The TrainConfig fields of a validated training request (the HU scale range from its two fields)."""
    return {
        **{k: data[k] for k in TRAIN_FIELDS},
        "augment_hu_scale": [data["augment_hu_scale_low"], data["augment_hu_scale_high"]],
    }


class TrainRequestSerializer(serializers.Serializer):
    """Start a training run. Defaults: the paper's optimiser (SGD momentum 0.9, batch 512, lr 1e-3 -> 1e-4
    after 1 epoch -> 1e-5 after 1.5 epochs), the cpu network preset and a CPU-sized run length."""

    name = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    notes = serializers.CharField(required=False, allow_blank=True, default="")
    preset = serializers.ChoiceField(choices=sorted(PRESETS), default=FORM_DEFAULTS["preset"])
    architecture = serializers.ChoiceField(
        choices=list(ARCHITECTURES),
        default=FORM_DEFAULTS["architecture"],
        help_text="voxel: the DLA voxel classifier of `preset`; unet3d: a 3D U-Net (MONAI DynUNet) planned like "
        "nnU-Net for the cohort's voxel spacing, trained on 3-D patches (preset and patch-mode fields unused)",
    )
    unet_patch_px = serializers.IntegerField(
        min_value=8,
        max_value=256,
        default=FORM_DEFAULTS["unet_patch_px"],
        help_text="3D U-Net: cubic training / sliding-window patch (voxels; cut to the volumes' extent)",
    )
    unet_base_filters = serializers.IntegerField(
        min_value=4,
        max_value=64,
        default=FORM_DEFAULTS["unet_base_filters"],
        help_text="3D U-Net: first-stage filters",
    )
    train_cohort = serializers.ChoiceField(choices=COHORTS, default="train")
    validation_cohort = serializers.ChoiceField(
        choices=COHORTS, default="validation", allow_null=True, help_text="null: monitor on training data"
    )
    mode = serializers.ChoiceField(choices=["dense", "patch"], default=FORM_DEFAULTS["mode"])
    batch_size = serializers.IntegerField(min_value=1, max_value=65536, default=FORM_DEFAULTS["batch_size"])
    dense_output_px = serializers.IntegerField(
        min_value=1, max_value=512, default=FORM_DEFAULTS["dense_output_px"]
    )
    dense_slabs_per_batch = serializers.IntegerField(
        min_value=1, max_value=1024, default=FORM_DEFAULTS["dense_slabs_per_batch"]
    )
    momentum = serializers.FloatField(min_value=0.0, max_value=0.999, default=FORM_DEFAULTS["momentum"])
    weight_decay = serializers.FloatField(min_value=0.0, max_value=0.1, default=FORM_DEFAULTS["weight_decay"])
    lr_values = serializers.ListField(
        child=serializers.FloatField(min_value=1e-8, max_value=1.0),
        min_length=1,
        max_length=8,
        default=FORM_DEFAULTS["lr_values"],
    )
    lr_boundaries_epochs = serializers.ListField(
        child=serializers.FloatField(min_value=0.0, max_value=1e6),
        max_length=7,
        default=FORM_DEFAULTS["lr_boundaries_epochs"],
    )
    epoch_voxels = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    max_iterations = serializers.IntegerField(
        min_value=1, max_value=10_000_000, default=FORM_DEFAULTS["max_iterations"]
    )
    val_every = serializers.IntegerField(min_value=1, max_value=1_000_000, default=FORM_DEFAULTS["val_every"])
    val_samples_per_class = serializers.IntegerField(
        min_value=10, max_value=1_000_000, default=FORM_DEFAULTS["val_samples_per_class"]
    )
    early_stopping_patience = serializers.IntegerField(
        min_value=1, max_value=10_000, default=FORM_DEFAULTS["early_stopping_patience"]
    )
    early_stopping_min_delta = serializers.FloatField(
        min_value=0.0, max_value=1.0, default=FORM_DEFAULTS["early_stopping_min_delta"]
    )
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=FORM_DEFAULTS["seed"])
    amp = serializers.BooleanField(default=True)
    checkpoint_every = serializers.IntegerField(
        min_value=1, max_value=10_000_000, default=FORM_DEFAULTS["checkpoint_every"]
    )
    activate = serializers.BooleanField(default=False, help_text="activate the model when training succeeds")
    augment_noise_hu = serializers.FloatField(
        min_value=0.0,
        max_value=500.0,
        default=FORM_DEFAULTS["augment_noise_hu"],
        help_text="augmentation: extra gaussian noise, SD drawn in [0, this] HU per slab/patch (0 = off)",
    )
    augment_blur_sigma_voxels = serializers.FloatField(
        min_value=0.0,
        max_value=3.0,
        default=FORM_DEFAULTS["augment_blur_sigma_voxels"],
        help_text="augmentation: extra 3-D gaussian blur, sigma drawn in [0, this] voxels (0 = off)",
    )
    augment_hu_scale_low = serializers.FloatField(
        min_value=0.25,
        max_value=4.0,
        default=FORM_DEFAULTS["augment_hu_scale_low"],
        help_text="augmentation: HU multiplied by a factor drawn in [low, high] (1, 1 = off)",
    )
    augment_hu_scale_high = serializers.FloatField(
        min_value=0.25, max_value=4.0, default=FORM_DEFAULTS["augment_hu_scale_high"]
    )
    augment_probability = serializers.FloatField(
        min_value=0.0,
        max_value=1.0,
        default=FORM_DEFAULTS["augment_probability"],
        help_text="augmentation: chance that a slab/patch is augmented",
    )
    augment_mirror = serializers.BooleanField(
        default=False,
        help_text="augmentation: mirror half of the slabs/patches left-right (heads are symmetric)",
    )

    def validate(self, data):
        if data["validation_cohort"] == data["train_cohort"]:
            raise serializers.ValidationError({"validation_cohort": "must differ from the training cohort"})
        if data["architecture"] == "unet3d" and data["mode"] == "patch":
            raise serializers.ValidationError(
                {"mode": "a 3D U-Net trains on dense 3-D patches; choose dense sampling"}
            )
        if data["augment_hu_scale_low"] > data["augment_hu_scale_high"]:
            raise serializers.ValidationError(
                {"augment_hu_scale_high": "the HU scale range must not end below its start"}
            )
        if data["val_every"] > data["max_iterations"]:
            raise serializers.ValidationError(
                {"val_every": "must not exceed max_iterations (no validation would ever run)"}
            )
        try:
            TrainConfig.from_dict({"preset": data["preset"], **train_config(data)})
        except InvalidTrainConfigError as exc:
            raise serializers.ValidationError({"lr_boundaries_epochs": str(exc)}) from exc
        return data

    def task_params(self, user) -> dict:
        data = self.validated_data
        return {
            "name": data["name"],
            "notes": data["notes"],
            "preset": data["preset"],
            "architecture": data["architecture"],
            **(
                {"unet": {"patch_px": data["unet_patch_px"], "base_filters": data["unet_base_filters"]}}
                if data["architecture"] == "unet3d"
                else {}
            ),
            "train_config": train_config(data),
            "train_cohort": data["train_cohort"],
            "validation_cohort": data["validation_cohort"],
            "checkpoint_every": data["checkpoint_every"],
            "activate": data["activate"],
            "user_id": user.pk if user else None,
        }


class TrainingRunSerializer(serializers.ModelSerializer):
    """A training run: its TaskRun (state, progress, message, log tail) plus the live curves."""

    id = serializers.IntegerField(source="task_run_id", read_only=True)
    run = TaskRunSerializer(source="task_run", read_only=True)
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "name",
            "run",
            "max_iterations",
            "iteration",
            "voxels_per_s",
            "eta_s",
            "train_studies",
            "validation_studies",
            "train_curve",
            "val_curve",
            "model_version",
            "updated_at",
        ]
        read_only_fields = fields

    def get_model_version(self, record) -> int | None:
        version = ModelVersion.objects.filter(training_run_id=record.task_run_id).only("pk").first()
        return version.pk if version else None


class TrainingRunListSerializer(TrainingRunSerializer):
    class Meta(TrainingRunSerializer.Meta):
        fields = [f for f in TrainingRunSerializer.Meta.fields if f not in ("train_curve", "val_curve")]
        read_only_fields = fields


def _strength_field(default: float, help_text: str) -> serializers.FloatField:
    """An optional prior strength of the inference request (a number from 0 to 1)."""
    return serializers.FloatField(
        min_value=0.0, max_value=1.0, required=False, default=default, help_text=help_text
    )


class InferenceRequestSerializer(serializers.Serializer):
    """Run a model (default: the active one) on one study, a list of studies or a whole cohort."""

    model_version = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, allow_null=True, default=None
    )
    study = serializers.PrimaryKeyRelatedField(queryset=Study.objects.all(), required=False, allow_null=True)
    studies = serializers.PrimaryKeyRelatedField(queryset=Study.objects.all(), many=True, required=False)
    cohort = serializers.ChoiceField(choices=Study.Cohort.values, required=False, allow_null=True)
    candidate_min_hu = serializers.IntegerField(
        min_value=-1024,
        max_value=4000,
        required=False,
        allow_null=True,
        default=100,
        help_text="run the network only where fill >= this HU (dilated by 1 voxel); null = every voxel",
    )
    prior_strength = _strength_field(
        DEFAULT_PRIOR_STRENGTH,
        "re-weight the balanced-training probabilities towards the training labels' class frequencies "
        "(vessel against soft tissue): 1 the full Bayes prior shift, 0 none (plain argmax, the paper's rule); "
        "models without recorded frequencies are used as trained",
    )
    bone_prior_strength = _strength_field(
        DEFAULT_BONE_PRIOR_STRENGTH,
        "the same re-weighting for vessel against bone (a vessel in its bony canal is lost to bone under the "
        "full shift); set both strengths to 0 for the plain argmax",
    )

    mirror = serializers.BooleanField(
        required=False,
        default=DEFAULT_MIRROR,
        help_text="average each volume's prediction with that of its left-right mirror image (test-time "
        "augmentation, twice the network time; the voxel classifier only)",
    )

    def validate(self, data):
        given = [k for k in ("study", "studies", "cohort") if data.get(k)]
        if len(given) != 1:
            raise serializers.ValidationError({"study": "give exactly one of study, studies or cohort"})
        return data
