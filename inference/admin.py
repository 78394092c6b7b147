"""Django admin for the model registry and training runs (read-mostly; weights change only through the API)."""

from django.contrib import admin

from .models import ModelVersion, TrainingRun


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "is_active", "source", "fingerprint", "created_by", "created_at")
    list_filter = ("is_active", "source")
    search_fields = ("name", "notes", "sha256")
    readonly_fields = (
        "weights_file",
        "sha256",
        "size_bytes",
        "fingerprint",
        "network_config",
        "train_config",
        "training_run",
        "metrics",
        "source",
        "created_by",
        "created_at",
        "is_active",
    )


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("task_run", "name", "iteration", "max_iterations", "updated_at")
    readonly_fields = ("task_run", "train_curve", "val_curve", "train_studies", "validation_studies")
