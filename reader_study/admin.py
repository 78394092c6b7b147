"""Django admin for reader studies.

The design follows the same rules as the API: only a draft study's settings, readers and questions can be
changed here (cases are added through the API, which resolves their DSA and DLA volumes); once a study leaves
the draft state every field and inline is read-only and nothing can be added or deleted (the models refuse it
too). The status changes only through open/close in the API. Readers must have only the Reader role. The
randomization seed is shown (read-only) only after the study closes. Every change made here is written to the
audit log with before and after (``reader_study.admin.*``; ``dla_web.audit.record`` names the acting admin
from the current request). Assignments, answers and their history are read-only: answers change only through
the reading API, which records every change.
"""

from django import forms
from django.contrib import admin

from dla_web.audit import record

from . import design, services
from .design import QUESTION_FIELDS, STUDY_FIELDS, question_snapshot, study_fields
from .models import Answer, AnswerEvent, Assignment, Case, Question, Reader, ReaderStudy


def _frozen(rs) -> bool:
    return rs is not None and rs.pk is not None and rs.status != ReaderStudy.Status.DRAFT


def snapshot(obj) -> dict | None:
    """The audited content of a reader study, case, reader or question (JSON; never a seed)."""
    if obj is None:
        return None
    if isinstance(obj, ReaderStudy):
        return study_fields(obj)
    if isinstance(obj, Question):
        return question_snapshot(obj)
    if isinstance(obj, Reader):
        return {"id": obj.pk, "user": obj.user_id, "username": obj.user.username if obj.user_id else ""}
    if isinstance(obj, Case):
        return {
            "id": obj.pk,
            "study": obj.study_id,
            "dsa_volume": obj.dsa_volume_id,
            "dla_volume": obj.dla_volume_id,
        }
    raise TypeError(f"no audit snapshot for {type(obj).__name__}")


def _stored(obj) -> dict | None:
    """The snapshot of ``obj`` as it is in the database (before this request's change)."""
    if obj.pk is None:
        return None
    return snapshot(type(obj).objects.filter(pk=obj.pk).first())


def _audit(request, rs, what: str, action: str, before, after) -> None:
    record(
        f"reader_study.admin.{what}.{action}",
        request=request,
        obj=rs,
        detail={"before": before, "after": after, "via": "django admin"},
    )


class ReaderForm(forms.ModelForm):
    def clean_user(self):
        user = self.cleaned_data["user"]
        refusal = services.reader_refusal(user)
        if refusal:
            raise forms.ValidationError(refusal)
        return user


class QuestionForm(forms.ModelForm):
    def clean(self):
        cleaned = super().clean()
        try:
            services.validate_question_spec(
                {k: cleaned.get(k) for k in ("type", "choices", "scale_min", "scale_max")}
            )
        except services.ReaderStudyError as exc:
            raise forms.ValidationError(str(exc)) from exc
        try:
            cleaned["show_if"] = design.check_show_if_shape(cleaned.get("show_if"))
        except design.DesignError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned


class QuestionFormSet(forms.BaseInlineFormSet):
    """The study's questions as the inline will leave them (kept and added forms, deleted ones gone) must have
    conditions that hold (``design.check_conditions``): no condition may point at a deleted or renamed question."""

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        specs = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or (self.can_delete and self._should_delete_form(form)):
                continue
            specs.append(
                {f: data.get(f) for f in ("key", "type", "choices", "scale_min", "scale_max", "show_if")}
            )
        try:
            design.check_conditions(specs)
        except design.DesignError as exc:
            raise forms.ValidationError(str(exc)) from exc


class _DesignInline(admin.TabularInline):
    """Editable only while the parent study is a draft; read-only (no add, change or delete) afterwards."""

    extra = 0

    def has_add_permission(self, request, obj=None):
        return not _frozen(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return not _frozen(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not _frozen(obj) and super().has_delete_permission(request, obj)


class CaseInline(_DesignInline):
    model = Case
    fields = ["study", "dsa_volume", "dla_volume", "display_floor_hu", "added_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False  # cases are added through the API, which checks and fixes their two volumes


class ReaderInline(_DesignInline):
    model = Reader
    form = ReaderForm
    fields = ["user", "added_at"]
    readonly_fields = ["added_at"]


class QuestionInline(_DesignInline):
    model = Question
    form = QuestionForm
    formset = QuestionFormSet
    fields = list(QUESTION_FIELDS)


@admin.register(ReaderStudy)
class ReaderStudyAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "mode", "allow_edits", "created_at"]
    list_filter = ["status", "mode"]
    search_fields = ["title"]
    inlines = [CaseInline, ReaderInline, QuestionInline]

    def get_fields(self, request, obj=None):
        fields = [*STUDY_FIELDS, "created_by", "created_at", "opened_at", "closed_at"]
        if obj is not None and obj.status == ReaderStudy.Status.CLOSED:
            fields.append("closed_seed")
        return fields

    def get_readonly_fields(self, request, obj=None):
        always = ["status", "created_by", "created_at", "opened_at", "closed_at", "closed_seed"]
        if _frozen(obj):
            return [*STUDY_FIELDS, *always]
        return always

    @admin.display(description="randomization seed")
    def closed_seed(self, obj):
        return obj.seed_if_closed() or "-"

    def has_change_permission(self, request, obj=None):
        return not _frozen(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not _frozen(obj) and super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        before = _stored(obj) if change else None
        if obj.created_by_id is None and not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        after = snapshot(obj)
        if before != after:
            _audit(request, obj, "study", "change" if change else "add", before, after)

    def delete_model(self, request, obj):
        before = snapshot(obj)
        _audit(request, obj, "study", "delete", before, None)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for rs in queryset:
            services.require_draft(rs, "a reader study can be deleted")
            _audit(request, rs, "study", "delete", snapshot(rs), None)
        super().delete_queryset(request, queryset)

    def save_formset(self, request, form, formset, change):
        rs = form.instance
        what = {Case: "case", Reader: "reader", Question: "question"}[formset.model]
        before = {f.instance.pk: _stored(f.instance) for f in formset.forms if f.instance.pk is not None}
        instances = formset.save(commit=False)
        for obj in formset.deleted_objects:
            _audit(request, rs, what, "delete", before.get(obj.pk) or snapshot(obj), None)
            obj.delete()
        for obj in instances:
            old = before.get(obj.pk)
            obj.save()
            _audit(request, rs, what, "change" if old is not None else "add", old, snapshot(obj))
        formset.save_m2m()


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["reader", "position", "case", "a_method", "b_method", "submitted_at", "time_spent_s"]
    list_filter = ["reader__reader_study"]
    readonly_fields = [f.name for f in Assignment._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
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
