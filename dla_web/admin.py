"""Django admin: open to the Admin role (not only to staff flags), with task runs and audit events read-only.

``ReadOnlyForAdmins`` is the base of every read-only model admin (here and in the apps' ``admin.py``): users
of the Admin role may look (no Django model permission needed), nobody adds, changes or deletes there.
Users: the last active admin cannot lose the Admin role, the superuser flag or the active flag, nor be deleted
(``roles.check_keeps_an_admin``); the role groups cannot be renamed or deleted (roles are found by name).
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import Group
from django.shortcuts import redirect
from django.urls import reverse

from .models import AuditEvent, TaskRun
from .roles import ROLES, LastAdminError, check_keeps_an_admin, is_admin, is_last_active_admin


def _admin_site_has_permission(request):
    return request.user.is_active and is_admin(request.user)


admin.site.has_permission = _admin_site_has_permission
admin.site.site_header = "DLA Workbench administration"


class ReadOnlyForAdmins(admin.ModelAdmin):
    """Visible to the Admin role, changed by nobody: the rows are written by the application only."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_module_permission(self, request):
        return is_admin(request.user)

    def has_view_permission(self, request, obj=None):
        return is_admin(request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TaskRun)
class TaskRunAdmin(ReadOnlyForAdmins):
    list_display = [
        "id",
        "kind",
        "state",
        "progress",
        "target_type",
        "target_id",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    ]
    list_filter = ["state", "kind", "queue"]
    search_fields = ["kind", "message", "error", "target_id"]
    date_hierarchy = "created_at"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyForAdmins):
    list_display = ["at", "username", "action", "object_type", "object_repr", "ip"]
    list_filter = ["action"]
    search_fields = ["username", "action", "object_repr", "object_id"]


# ------------------------------------------------------------------------------------------- users and roles

User = get_user_model()


class KeepsAnAdminChangeForm(UserChangeForm):
    """The user change form, refusing to take the Admin role, superuser or active flag from the last admin."""

    def clean(self):
        cleaned = super().clean()
        user = self.instance

        def value(field):
            return cleaned[field] if field in cleaned else getattr(user, field)

        groups = cleaned["groups"] if "groups" in cleaned else user.groups.all()
        try:
            check_keeps_an_admin(
                user,
                is_active=value("is_active"),
                is_superuser=value("is_superuser"),
                roles=[g.name for g in groups],
            )
        except LastAdminError as exc:
            raise forms.ValidationError(str(exc), code="last_admin") from None
        return cleaned


class WorkbenchUserAdmin(UserAdmin):
    form = KeepsAnAdminChangeForm

    def has_delete_permission(self, request, obj=None):
        if obj is not None and is_last_active_admin(obj):
            return False  # also stops the "delete selected" action for a selection holding the last admin
        return super().has_delete_permission(request, obj)

    def delete_view(self, request, object_id, extra_context=None):
        user = self.get_object(request, object_id)
        if user is not None and is_last_active_admin(user):
            self.message_user(
                request,
                f"{user.username} is the last active admin and cannot be deleted: give another active user "
                "the Admin role first.",
                messages.ERROR,
            )
            return redirect(reverse("admin:auth_user_change", args=[user.pk]))
        return super().delete_view(request, object_id, extra_context)


class RoleGroupAdmin(GroupAdmin):
    """The role groups (Annotator, Reader, Admin) keep their names and cannot be deleted."""

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "name"] if obj is not None and obj.name in ROLES else fields

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.name in ROLES:
            return False
        return super().has_delete_permission(request, obj)


for _model, _admin in ((User, WorkbenchUserAdmin), (Group, RoleGroupAdmin)):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _admin)
