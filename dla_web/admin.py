"""Django admin: open to the Admin role (not only to staff flags), with task runs and audit events read-only.

``ReadOnlyForAdmins`` is the base of every read-only model admin (here and in the apps' ``admin.py``): users
of the Admin role may look (no Django model permission needed), nobody adds, changes or deletes there.
"""

from django.contrib import admin

from .models import AuditEvent, TaskRun
from .roles import is_admin


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
