"""Serializers of the evaluation API: launch request, list/detail of evaluations, per-study results."""

from rest_framework import serializers

from dla_web.serializers import TaskRunSerializer
from inference.models import ModelVersion

from .models import Evaluation, StudyResult
from .services import COHORTS


class EvaluationRequestSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(
        required=False, allow_null=True, help_text="ModelVersion id; default: the active model"
    )
    cohorts = serializers.ListField(
        child=serializers.ChoiceField(choices=list(COHORTS)),
        allow_empty=False,
        default=lambda: ["validation", "test"],
        help_text="one Table 1 row per cohort",
    )
    reference = serializers.ChoiceField(choices=Evaluation.Reference.values, default="approved")
    ci_method = serializers.ChoiceField(choices=Evaluation.CI.values, default="t")
    n_boot = serializers.IntegerField(min_value=100, max_value=200000, default=10000)
    seed = serializers.IntegerField(min_value=0, default=0)
    bright_hu = serializers.FloatField(min_value=-1024, max_value=4000, default=300.0)
    min_cluster_voxels = serializers.IntegerField(min_value=1, max_value=10_000_000, default=20)
    allow_missing = serializers.BooleanField(default=False)
    name = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")

    def validate_model_version(self, value):
        if value is None:
            version = ModelVersion.active()
            if version is None:
                raise serializers.ValidationError("no model is active; choose a model version")
            return version
        version = ModelVersion.objects.filter(pk=value).first()
        if version is None:
            raise serializers.ValidationError(f"model version {value} does not exist")
        return version

    def validate(self, attrs):
        if "model_version" not in attrs or attrs["model_version"] is None:
            attrs["model_version"] = self.validate_model_version(None)
        if len(set(attrs["cohorts"])) != len(attrs["cohorts"]):
            raise serializers.ValidationError({"cohorts": "a cohort is given twice"})
        return attrs


class EvaluationSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model_version.name", read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)
    state = serializers.CharField(read_only=True)
    task_run = TaskRunSerializer(read_only=True)
    table1 = serializers.SerializerMethodField()
    report_url = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "name",
            "model_version",
            "model_name",
            "cohorts",
            "reference",
            "ci_method",
            "n_boot",
            "seed",
            "bright_hu",
            "min_cluster_voxels",
            "allow_missing",
            "state",
            "task_run",
            "created_by",
            "created_at",
            "elapsed_s",
            "missing",
            "table1",
            "report_url",
        ]
        read_only_fields = fields

    def get_table1(self, obj) -> dict:
        rows = (obj.summary or {}).get("table1", [])
        return {
            row["dataset"]: {
                "n": row["n"],
                **{
                    m: (row.get(m) or {}).get("text", "n/a")
                    for m in ("sensitivity", "ppv", "dice", "accuracy")
                },
            }
            for row in rows
        }

    def get_report_url(self, obj) -> str:
        return f"/evaluations/{obj.pk}/"


class EvaluationDetailSerializer(EvaluationSerializer):
    summary = serializers.JSONField(read_only=True)

    class Meta(EvaluationSerializer.Meta):
        fields = EvaluationSerializer.Meta.fields + ["summary"]
        read_only_fields = fields


class StudyResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = StudyResult
        fields = [
            "id",
            "study",
            "pseudonym",
            "cohort",
            "label_version",
            "prediction",
            "tp",
            "fp",
            "fn",
            "tn",
            "accuracy",
            "sensitivity",
            "ppv",
            "dice",
            "specificity",
            "reasons",
            "class_confusion",
            "vessel_volume_ml",
            "roi_box_zyx",
            "artifacts",
            "truth",
        ]
        read_only_fields = fields
