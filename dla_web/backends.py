"""Authorization backend: the Admin role grants every model permission (so Django admin works for Admins
without per-permission bookkeeping). Authentication itself stays with ModelBackend."""

from .roles import is_admin


class AdminRoleBackend:
    def authenticate(self, request, **credentials):
        return None

    def has_perm(self, user_obj, perm, obj=None):
        return is_admin(user_obj)

    def has_module_perms(self, user_obj, app_label):
        return is_admin(user_obj)
