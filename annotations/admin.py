"""Django admin for studies and volumes (volumes are read-only: their voxels are immutable), and read-only views
of label versions and drafts (they change only through the labeling rules: commit, review, edit ops)."""

from django.contrib import admin

from dla_web.admin import ReadOnlyForAdmins

from .models import Draft, LabelVersion, PseudonymMap, Study, Volume


class VolumeInline(admin.TabularInline):
    model = Volume
    fields = ["role", "shape", "spacing_mm", "hu_min", "hu_max", "sha256", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["pseudonym", "patient_pseudonym", "cohort", "injection_site", "source", "created_at"]
    list_filter = ["cohort", "injection_site", "source"]
    search_fields = ["pseudonym", "patient_pseudonym", "notes"]
    readonly_fields = [
        "pseudonym",
        "patient_pseudonym",
        "study_uid",
        "source",
        "metadata",
        "created_at",
        "created_by",
    ]
    inlines = [VolumeInline]


@admin.register(Volume)
class VolumeAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "role", "shape", "sha256", "created_at"]
    list_filter = ["role"]
    readonly_fields = [f.name for f in Volume._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PseudonymMap)
class PseudonymMapAdmin(admin.ModelAdmin):
    """Re-identification map (only filled when DLA_KEEP_PSEUDONYM_MAP is on); read-only."""

    list_display = ["study", "original_patient_id", "created_at"]
    search_fields = ["study__pseudonym", "original_patient_id"]
    readonly_fields = [
        "study",
        "original_patient_id",
        "original_patient_name",
        "original_study_uid",
        "created_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(LabelVersion)
class LabelVersionAdmin(ReadOnlyForAdmins):
    """Label versions with their review state; approve or reject them on the review page (/reviews/)."""

    list_display = [
        "id",
        "study",
        "number",
        "author",
        "review_status",
        "reviewed_by",
        "reviewed_at",
        "created_at",
    ]
    list_filter = ["review_status", "study__cohort"]
    search_fields = ["study__pseudonym", "message", "review_comment", "author__username"]
    list_select_related = ["study", "author", "reviewed_by"]
    date_hierarchy = "created_at"


@admin.register(Draft)
class DraftAdmin(ReadOnlyForAdmins):
    list_display = ["id", "study", "user", "base_version", "revision", "updated_at"]
    search_fields = ["study__pseudonym", "user__username"]
    list_select_related = ["study", "user", "base_version"]
