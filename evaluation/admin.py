"""Django admin for evaluations (read-mostly; runs are launched from the evaluations page or the API)."""

from django.contrib import admin

from .models import Evaluation, StudyResult


class StudyResultInline(admin.TabularInline):
    model = StudyResult
    extra = 0
    fields = ["pseudonym", "cohort", "tp", "fp", "fn", "tn", "accuracy", "sensitivity", "ppv", "dice"]
    readonly_fields = fields
    can_delete = False


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ["id", "model_version", "cohorts", "reference", "ci_method", "created_by", "created_at"]
    list_filter = ["reference", "ci_method"]
    readonly_fields = ["summary", "missing", "task_run", "elapsed_s"]
    inlines = [StudyResultInline]
