"""Django admin for reader studies. Answers and their history are read-only here: history is append-only and
answers change only through the reading API (which records every change)."""

from django.contrib import admin

from .models import Answer, AnswerEvent, Assignment, Case, Question, Reader, ReaderStudy


class CaseInline(admin.TabularInline):
    model = Case
    fields = ["study", "dsa_volume", "dla_volume", "added_at"]
    readonly_fields = fields
    extra = 0


class QuestionInline(admin.TabularInline):
    model = Question
    fields = ["order", "key", "text", "type", "choices", "scale_min", "scale_max", "required"]
    extra = 0


class ReaderInline(admin.TabularInline):
    model = Reader
    fields = ["user", "added_at"]
    readonly_fields = ["added_at"]
    extra = 0


@admin.register(ReaderStudy)
class ReaderStudyAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "mode", "seed", "allow_edits", "created_at"]
    list_filter = ["status", "mode"]
    search_fields = ["title"]
    readonly_fields = ["created_by", "created_at", "opened_at", "closed_at"]
    inlines = [CaseInline, ReaderInline, QuestionInline]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["reader", "position", "case", "a_method", "b_method", "submitted_at", "time_spent_s"]
    list_filter = ["reader__reader_study"]
    readonly_fields = [f.name for f in Assignment._meta.fields]

    def has_add_permission(self, request):
        return False


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Answer)
class AnswerAdmin(_ReadOnly):
    list_display = ["assignment", "question", "image", "value", "updated_at"]
    list_filter = ["assignment__reader__reader_study"]


@admin.register(AnswerEvent)
class AnswerEventAdmin(_ReadOnly):
    list_display = ["assignment", "question", "image", "value", "kind", "user", "created_at"]
    list_filter = ["kind", "assignment__reader__reader_study"]
