"""Django admin: open to the Admin role (not only to staff flags), with task runs read-only."""

from django.contrib import admin

from .models import AuditEvent, TaskRun
from .roles import is_admin


def _admin_site_has_permission(request):
    return request.user.is_active and is_admin(request.user)


admin.site.has_permission = _admin_site_has_permission
admin.site.site_header = "DLA Workbench administration"


@admin.register(TaskRun)
class TaskRunAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "state", "progress", "created_by", "created_at", "finished_at"]
    list_filter = ["state", "kind"]
    search_fields = ["kind", "message", "error"]
    readonly_fields = [f.name for f in TaskRun._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "username", "action", "object_type", "object_repr", "ip"]
    list_filter = ["action"]
    search_fields = ["username", "action", "object_repr", "object_id"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
